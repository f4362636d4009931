//! The registry side of a pull, on top of `oci-client` (which speaks the distribution API,
//! follows bearer-token challenges and caches tokens). This module adds what a node agent
//! needs around it: Docker's rules for which registries are plain HTTP, credentials from
//! `~/.docker/config.json` or flags, and errors that say what failed for which reference.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use futures_util::stream::BoxStream;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};
use oci_spec::image::Descriptor;

use crate::digest::Digest;
use crate::manifest::ACCEPTED_MANIFESTS;
use crate::reference::ImageRef;

/// Errors talking to a registry. Each names the reference (or registry) it concerns.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// 401, or the token service refused the credentials.
    #[error("registry refused access to {reference} (401 unauthorized): give credentials with --creds or in {authfile}")]
    Unauthorized {
        /// What was being fetched.
        reference: String,
        /// Where credentials are looked up.
        authfile: String,
    },
    /// 404: no such repository, tag, manifest or blob.
    #[error("{what} not found in registry: {reference}")]
    NotFound {
        /// `manifest` or `blob sha256:…`.
        what: String,
        /// What was being fetched.
        reference: String,
    },
    /// Another HTTP error status (5xx, 403, 429…).
    #[error("registry answered {status} for {reference}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// What was being fetched.
        reference: String,
        /// The body or error envelope, shortened.
        message: String,
    },
    /// A 4xx answer with an error envelope other than "unknown" (DENIED, TOOMANYREQUESTS,
    /// NAME_INVALID, …); the envelope carries the registry's own words.
    #[error("registry rejected the request for {reference}: {message}")]
    Rejected {
        /// What was being fetched.
        reference: String,
        /// The envelope's messages and the URL.
        message: String,
    },
    /// No connection (refused, DNS, TLS, timeout).
    #[error("cannot reach registry {registry}: {detail}")]
    Connect {
        /// Registry host.
        registry: String,
        /// The error chain.
        detail: String,
    },
    /// The registry broke the protocol (bad digest header, bad token JSON, …).
    #[error("registry protocol error for {reference}: {detail}")]
    Protocol {
        /// What was being fetched.
        reference: String,
        /// The error chain.
        detail: String,
    },
    /// The auth file could not be read.
    #[error("cannot use auth file {path}: {reason}")]
    AuthFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries (`host[:port]`) spoken to over plain HTTP. Like Docker, loopback hosts
    /// (`localhost`, `127.0.0.0/8`, `::1`) are always plain HTTP.
    pub insecure: BTreeSet<String>,
    /// Explicit credentials (`--creds user:pass`), used for every registry of this pull.
    pub credentials: Option<(String, String)>,
    /// The Docker auth file; default `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
    pub authfile: Option<PathBuf>,
}

impl RegistryOptions {
    fn authfile(&self) -> PathBuf {
        if let Some(p) = &self.authfile {
            return p.clone();
        }
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
            return Path::new(&dir).join("config.json");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
        Path::new(&home).join(".docker/config.json")
    }

    /// True when `registry` is spoken to over plain HTTP.
    pub fn is_insecure(&self, registry: &str) -> bool {
        if self.insecure.contains(registry) {
            return true;
        }
        let host = match registry.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => registry,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost" || host.starts_with("127.") || host == "::1"
    }

    fn auth_for(&self, registry: &str) -> Result<RegistryAuth, RegistryError> {
        if let Some((user, pass)) = &self.credentials {
            return Ok(RegistryAuth::Basic(user.clone(), pass.clone()));
        }
        let path = self.authfile();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(RegistryAuth::Anonymous)
            }
            Err(e) => {
                return Err(RegistryError::AuthFile {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        docker_config_auth(&bytes, registry)
            .map_err(|reason| RegistryError::AuthFile { path, reason })
    }
}

/// Finds the credentials for `registry` in the bytes of a Docker `config.json`. Credential
/// helpers (`credsStore`, `credHelpers`) are not run: a root daemon does not execute
/// per-user helper programs.
pub fn docker_config_auth(bytes: &[u8], registry: &str) -> Result<RegistryAuth, String> {
    let config: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
        return Ok(RegistryAuth::Anonymous);
    };
    let mut keys = vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
    ];
    if registry == "docker.io" || registry == "index.docker.io" {
        keys.extend([
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "docker.io".into(),
        ]);
    }
    for key in keys {
        let Some(entry) = auths.get(&key).or_else(|| auths.get(&format!("{key}/"))) else {
            continue;
        };
        if let Some(auth) = entry
            .get("auth")
            .and_then(|a| a.as_str())
            .filter(|a| !a.is_empty())
        {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| format!("auth for {key}: {e}"))?;
            let text = String::from_utf8(decoded).map_err(|e| format!("auth for {key}: {e}"))?;
            let (user, pass) = text
                .split_once(':')
                .ok_or(format!("auth for {key} is not user:password"))?;
            return Ok(RegistryAuth::Basic(user.to_string(), pass.to_string()));
        }
        let user = entry.get("username").and_then(|u| u.as_str());
        let pass = entry.get("password").and_then(|p| p.as_str());
        if let (Some(u), Some(p)) = (user, pass) {
            return Ok(RegistryAuth::Basic(u.to_string(), p.to_string()));
        }
    }
    Ok(RegistryAuth::Anonymous)
}

/// A connection to one registry for one repository: a configured client and its auth.
pub struct Session {
    client: Client,
    auth: RegistryAuth,
    reference: ImageRef,
    authfile: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("reference", &self.reference)
            .finish()
    }
}

impl Session {
    /// Opens a session for `reference`: builds the client and authenticates (which is also
    /// where an unreachable registry is first noticed).
    pub async fn open(
        options: &RegistryOptions,
        reference: &ImageRef,
    ) -> Result<Self, RegistryError> {
        static PROVIDER: std::sync::Once = std::sync::Once::new();
        PROVIDER.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let registry = reference.registry().to_string();
        let protocol = if options.is_insecure(&registry) {
            ClientProtocol::HttpsExcept(vec![
                registry.clone(),
                reference.as_oci().resolve_registry().to_string(),
            ])
        } else {
            ClientProtocol::Https
        };
        let client = Client::new(ClientConfig {
            protocol,
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(15)),
            read_timeout: Some(Duration::from_secs(120)),
            user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        });
        let auth = options.auth_for(&registry)?;
        let session = Self {
            client,
            auth,
            reference: reference.clone(),
            authfile: options.authfile().display().to_string(),
        };
        session
            .client
            .auth(reference.as_oci(), &session.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| session.map_err(e, "manifest"))?;
        Ok(session)
    }

    /// Fetches the manifest or index `reference` names; returns its bytes and digest. When
    /// the reference pins a digest, the bytes are checked against it.
    pub async fn fetch_manifest(
        &self,
        reference: &ImageRef,
    ) -> Result<(Vec<u8>, Digest), RegistryError> {
        let (bytes, digest) = self
            .client
            .pull_manifest_raw(reference.as_oci(), &self.auth, ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| self.map_err(e, "manifest"))?;
        let actual = Digest::of(&bytes);
        if let Some(pinned) = reference.digest() {
            if *pinned != actual {
                return Err(RegistryError::Protocol {
                    reference: reference.to_string(),
                    detail: format!("manifest hashes to {actual}, not the pinned {pinned}"),
                });
            }
        }
        tracing::debug!(%reference, %actual, header = %digest, "fetched manifest");
        Ok((bytes.to_vec(), actual))
    }

    /// Fetches a blob as a stream of chunks.
    pub async fn blob_stream(
        &self,
        desc: &Descriptor,
    ) -> Result<BoxStream<'static, Result<bytes::Bytes, std::io::Error>>, RegistryError> {
        let what = format!("blob {}", desc.digest());
        let digest = desc.digest().to_string();
        // Foreign-layer URLs are not followed: a manifest must not make a root daemon
        // fetch from arbitrary hosts.
        let layer = oci_client::client::LayerDescriptor {
            digest: &digest,
            urls: &None,
        };
        let stream = self
            .client
            .pull_blob_stream(self.reference.as_oci(), &layer)
            .await
            .map_err(|e| self.map_err(e, &what))?;
        Ok(stream.stream)
    }

    fn map_err(&self, err: OciDistributionError, what: &str) -> RegistryError {
        let reference = format!("{} ({what})", self.reference);
        let chain = |e: &dyn std::error::Error| {
            let mut s = e.to_string();
            let mut src = e.source();
            while let Some(inner) = src {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                src = inner.source();
            }
            s
        };
        match err {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => RegistryError::Unauthorized {
                reference,
                authfile: self.authfile.clone(),
            },
            OciDistributionError::ImageManifestNotFoundError(_) => RegistryError::NotFound {
                what: what.to_string(),
                reference: self.reference.to_string(),
            },
            OciDistributionError::RegistryError { envelope, url } => {
                use oci_client::errors::OciErrorCode as Code;
                // The distribution spec's "not there" codes; a 4xx envelope carries no status.
                let unknown = envelope.errors.iter().any(|e| {
                    matches!(
                        e.code,
                        Code::BlobUnknown
                            | Code::ManifestUnknown
                            | Code::ManifestBlobUnknown
                            | Code::NameUnknown
                            | Code::NotFound
                    )
                });
                if unknown {
                    RegistryError::NotFound {
                        what: what.to_string(),
                        reference: self.reference.to_string(),
                    }
                } else {
                    let message: Vec<String> =
                        envelope.errors.iter().map(|e| e.message.clone()).collect();
                    RegistryError::Rejected {
                        reference,
                        message: format!("{} ({url})", message.join("; ")),
                    }
                }
            }
            OciDistributionError::ServerError { code: 404, .. } => RegistryError::NotFound {
                what: what.to_string(),
                reference: self.reference.to_string(),
            },
            OciDistributionError::ServerError { code, message, .. } => {
                let mut message = message.trim().to_string();
                message.truncate(200);
                RegistryError::Status {
                    status: code,
                    reference,
                    message,
                }
            }
            OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
                RegistryError::Connect {
                    registry: self.reference.registry().to_string(),
                    detail: chain(&e),
                }
            }
            other => RegistryError::Protocol {
                reference,
                detail: chain(&other),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(auth: RegistryAuth) -> Option<(String, String)> {
        match auth {
            RegistryAuth::Basic(u, p) => Some((u, p)),
            _ => None,
        }
    }

    #[test]
    fn docker_config_lookup() {
        let config = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "aHViOmh1YnB3"},
            "registry.lan:5000": {"username": "lan", "password": "lanpw"},
            "broken.example": {"auth": "!!!"}
        }, "credsStore": "desktop"}"#;
        let hub = docker_config_auth(config, "docker.io").ok().and_then(basic);
        assert_eq!(hub, Some(("hub".into(), "hubpw".into())));
        let lan = docker_config_auth(config, "registry.lan:5000")
            .ok()
            .and_then(basic);
        assert_eq!(lan, Some(("lan".into(), "lanpw".into())));
        let none = docker_config_auth(config, "other.example").ok();
        assert!(matches!(none, Some(RegistryAuth::Anonymous)));
        assert!(docker_config_auth(config, "broken.example").is_err());
        assert!(docker_config_auth(b"not json", "x").is_err());
    }

    #[test]
    fn loopback_is_plain_http() {
        let options = RegistryOptions {
            insecure: ["registry.lan:5000".to_string()].into(),
            ..Default::default()
        };
        for host in [
            "localhost:5000",
            "127.0.0.1:8080",
            "127.1.2.3",
            "[::1]:5000",
            "registry.lan:5000",
        ] {
            assert!(options.is_insecure(host), "{host}");
        }
        for host in [
            "docker.io",
            "registry.lan",
            "10.0.0.1:5000",
            "localhost.example.com",
        ] {
            assert!(!options.is_insecure(host), "{host}");
        }
    }
}
