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
        let inner = Reference::from_str(text).map_err(|e| invalid(e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
