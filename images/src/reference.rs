use std::fmt;
use std::str::FromStr;

use oci_spec::distribution::Reference;

use crate::digest::Digest;

/// Errors about image references.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// The reference does not follow the distribution grammar.
    #[error("invalid image reference {reference:?}: {reason}")]
    Invalid {
        /// The rejected text.
        reference: String,
        /// What the parser disliked.
        reason: String,
    },
}

/// A normalised image reference: registry, repository, and a tag and/or digest.
///
/// Parsing follows Docker: a missing registry is `docker.io`, a one-part Docker Hub name
/// gets `library/`, a missing tag (and no digest) is `latest`. The display form is the
/// full canonical one, which is also the key of the image in the store.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    inner: Reference,
    digest: Option<Digest>,
}

impl ImageRef {
    /// Parses and normalises `text`.
    pub fn parse(text: &str) -> Result<Self, ReferenceError> {
        let invalid = |reason: String| ReferenceError::Invalid {
            reference: text.to_string(),
            reason,
        };
        if text.is_empty() || text.len() > 4096 || text.trim() != text {
            return Err(invalid("empty, too long, or surrounded by spaces".into()));
        }
        let inner = grammar::parse(text).map_err(|e| invalid(e.to_string()))?;
        if inner.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid("repository name must be lowercase".into()));
        }
        let digest = match inner.digest() {
            Some(d) => Some(d.parse::<Digest>().map_err(|e| invalid(e.to_string()))?),
            None => None,
        };
        Ok(Self { inner, digest })
    }

    /// The registry host as written (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The repository path (`library/busybox`).
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag, if any (`latest` is filled in when neither tag nor digest is given).
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The pinned digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The same repository pinned to `digest` (used to fetch a platform's manifest).
    pub fn with_digest(&self, digest: &Digest) -> Self {
        Self {
            inner: Reference::with_digest(
                self.registry().to_string(),
                self.repository().to_string(),
                digest.to_string(),
            ),
            digest: Some(digest.clone()),
        }
    }

    /// `registry/repository`, without tag or digest (Docker's REPOSITORY column).
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// The reference in `oci-client`'s own type.
    pub fn as_oci(&self) -> &Reference {
        &self.inner
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.whole())
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageRef({self})")
    }
}

/// The distribution reference grammar, checked by hand.
///
/// oci-spec's `Reference::from_str` matches one regular expression with Unicode classes and
/// bounded repetition; compiling it costs ~12 MiB that a long-running agent then keeps for
/// good (most of an idle agent's memory). The grammar is small enough to walk directly:
///
/// ```text
/// reference := name [ ":" tag ] [ "@" digest ]
/// name      := [ domain "/" ] path-component { "/" path-component }
/// domain    := domain-component { "." domain-component } [ ":" port ]
/// domain-component := [A-Za-z0-9] | [A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]
/// path-component   := [a-z0-9]+ { ( "." | "_" | "__" | "-"* ) [a-z0-9]+ }
/// tag       := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
/// digest    := algorithm ":" hex{32,}   (sha256/384/512 with their exact lengths)
/// ```
/// then Docker's normalisation (`docker.io`, `library/`, `latest`), as oci-spec does.
mod grammar {
    use oci_spec::distribution::{ParseError, Reference};

    fn alnum_lower(b: u8) -> bool {
        b.is_ascii_lowercase() || b.is_ascii_digit()
    }

    fn path_component(c: &str) -> bool {
        let b = c.as_bytes();
        if b.is_empty() || !alnum_lower(b[0]) || !alnum_lower(b[b.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            if alnum_lower(b[i]) {
                i += 1;
                continue;
            }
            // A separator run: ".", "_", "__" or any number of "-".
            let start = i;
            while i < b.len() && !alnum_lower(b[i]) {
                i += 1;
            }
            let sep = &c[start..i];
            let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
            if !ok {
                return false;
            }
        }
        true
    }

    fn domain_component(c: &str) -> bool {
        let b = c.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
    }

    fn domain(d: &str) -> bool {
        let (host, port) = match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        };
        if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|x| x.is_ascii_digit())) {
            return false;
        }
        host.split('.').all(domain_component)
    }

    fn tag(t: &str) -> bool {
        let b = t.as_bytes();
        let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
        !b.is_empty()
            && b.len() <= 128
            && word(b[0])
            && b[1..].iter().all(|x| word(*x) || *x == b'.' || *x == b'-')
    }

    fn digest(d: &str) -> Result<(), ParseError> {
        let (algo, hex) = d
            .split_once(':')
            .ok_or(ParseError::ReferenceInvalidFormat)?;
        let algo_ok = !algo.is_empty()
            && algo.split(['-', '_', '+', '.']).all(|part| {
                part.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
                    && part.bytes().all(|x| x.is_ascii_alphanumeric())
            });
        if !algo_ok || hex.len() < 32 || !hex.bytes().all(|x| x.is_ascii_hexdigit()) {
            return Err(ParseError::ReferenceInvalidFormat);
        }
        let want = match algo {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => return Err(ParseError::DigestUnsupported),
        };
        if hex.len() != want {
            return Err(ParseError::DigestInvalidLength);
        }
        Ok(())
    }

    /// Docker's split of a name into registry and repository.
    fn split_domain(name: &str) -> (String, String) {
        let (mut domain, mut rest) = match name.split_once('/') {
            Some((left, right))
                if left.contains('.') || left.contains(':') || left == "localhost" =>
            {
                (left.to_string(), right.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        if domain == "index.docker.io" {
            domain = "docker.io".into();
        }
        if domain == "docker.io" && !rest.contains('/') {
            rest = format!("library/{rest}");
        }
        (domain, rest)
    }

    pub fn parse(text: &str) -> Result<Reference, ParseError> {
        if text.is_empty() {
            return Err(ParseError::NameEmpty);
        }
        let (rest, digest_text) = match text.split_once('@') {
            Some((r, d)) => (r, Some(d)),
            None => (text, None),
        };
        // A tag's ":" comes after the last "/" (a registry port's comes before it).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag_text) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        let parts: Vec<&str> = name.split('/').collect();
        let as_path = parts.iter().all(|c| path_component(c));
        let as_domain =
            parts.len() > 1 && domain(parts[0]) && parts[1..].iter().all(|c| path_component(c));
        if !(as_path || as_domain) || tag_text.is_some_and(|t| !tag(t)) {
            return Err(ParseError::ReferenceInvalidFormat);
        }
        if let Some(d) = digest_text {
            digest(d)?;
        }
        let (registry, repository) = split_domain(name);
        if repository.len() > 255 {
            return Err(ParseError::NameTooLong);
        }
        Ok(match (tag_text, digest_text) {
            (Some(t), Some(d)) => {
                Reference::with_tag_and_digest(registry, repository, t.into(), d.into())
            }
            (None, Some(d)) => Reference::with_digest(registry, repository, d.into()),
            (t, None) => Reference::with_tag(registry, repository, t.unwrap_or("latest").into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written grammar agrees with oci-spec's regular expression.
    #[test]
    fn agrees_with_the_regex_parser() {
        let hex = "0123456789abcdef".repeat(4);
        let cases = [
            "busybox".to_string(),
            "busybox:1.36".into(),
            "user/app".into(),
            "127.0.0.1:5000/a/b:v1".into(),
            "localhost/app".into(),
            "localhost:5000/app:tag".into(),
            "test.com:tag".into(),
            "test.com:5000".into(),
            "test.com/repo:tag".into(),
            "test:5000/repo".into(),
            "index.docker.io/library/alpine".into(),
            "docker.io/library/alpine:3".into(),
            "a/b/c/d/e".into(),
            "a__b/c.d/e-f/g---h".into(),
            "a___b".into(),
            "a..b".into(),
            "a-/b".into(),
            "-a/b".into(),
            "a/b:".into(),
            "a/b:-tag".into(),
            "a/b:_tag.x-y".into(),
            format!("a/b:{}", "t".repeat(128)),
            format!("a/b:{}", "t".repeat(129)),
            format!("a/b@sha256:{hex}"),
            format!("a/b:tag@sha256:{hex}"),
            format!("a/b@sha256:{}", &hex[..40]),
            format!("a/b@sha512:{hex}"),
            format!("a/b@md5:{hex}"),
            format!("a/b@sha256:{}", hex.to_uppercase()),
            "a/b@".into(),
            "Upper.Host.com/app".into(),
            "UPPER/case".into(),
            "host-.com/app".into(),
            "host.com:/app".into(),
            "host.com:12a/app".into(),
            "a:b:c:d".into(),
            "::".into(),
            "a b".into(),
            "a/b/".into(),
            "/a".into(),
            "a//b".into(),
            format!("x/{}", "a".repeat(260)),
        ];
        for c in &cases {
            let mine = grammar::parse(c).map(|r| r.whole());
            let theirs = Reference::from_str(c).map(|r| r.whole());
            assert_eq!(mine, theirs, "{c:?}");
        }
        // And on pseudo-random strings over the grammar's alphabet (a fixed xorshift seed).
        let alphabet = b"ab9Z.-_/:@";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut text = String::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 1 + (x % 14) as usize;
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                text.push(alphabet[(x % alphabet.len() as u64) as usize] as char);
            }
            let mine = grammar::parse(&text).map(|r| r.whole());
            let theirs = Reference::from_str(&text).map(|r| r.whole());
            assert_eq!(mine, theirs, "{text:?}");
        }
    }

    #[test]
    fn normalises_like_docker() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("user/app", "docker.io/user/app:latest"),
            ("127.0.0.1:5000/a/b:v1", "127.0.0.1:5000/a/b:v1"),
            ("localhost/app", "localhost/app:latest"),
        ];
        for (input, want) in cases {
            assert_eq!(
                ImageRef::parse(input)
                    .map(|r| r.to_string())
                    .ok()
                    .as_deref(),
                Some(want)
            );
        }
        let hex = "a".repeat(64);
        let r = ImageRef::parse(&format!("host:5000/repo@sha256:{hex}")).ok();
        let r = r.as_ref();
        assert_eq!(r.map(|r| r.registry()), Some("host:5000"));
        assert_eq!(r.and_then(|r| r.tag()), None);
        assert_eq!(
            r.and_then(|r| r.digest()).map(|d| d.hex().to_string()),
            Some(hex)
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            " busybox",
            "UPPER/case",
            "a@sha256:12",
            "a:b:c:d",
            "repo@sha512:00",
            "::",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
