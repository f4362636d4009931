//! Manifests, indexes and configs: parsing (with `oci-spec`'s types, which read Docker
//! schema2 as well as OCI), media types, and choosing this host's platform from an index.

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use serde::Deserialize;

use crate::digest::Digest;
use crate::unpack::Compression;

/// Docker schema2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker plain tar layer (as in `docker save` archives).
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// Most layers an image may have: overlayfs stacks about 128 lower directories at most
/// (Docker refuses more than 125), and each layer costs a lock, a download and a thread.
pub const MAX_LAYERS: usize = 128;

/// Media types sent in `Accept` when fetching a manifest by reference.
pub const ACCEPTED_MANIFESTS: &[&str] = &[
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
];

/// Errors about manifests, indexes and configs.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("{what} {digest} is not valid: {reason}")]
    Invalid {
        /// `manifest`, `index` or `config`.
        what: &'static str,
        /// Its digest.
        digest: Digest,
        /// The parser's complaint.
        reason: String,
    },
    /// A media type Berth does not handle.
    #[error("{what} {digest} has unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        /// `manifest`, `layer` or `config`.
        what: &'static str,
        /// Its digest.
        digest: Digest,
        /// The media type.
        media_type: String,
    },
    /// Docker schema1 manifests (deprecated, unsigned content) are refused.
    #[error("manifest {digest} is docker schema {version}; only schema 2 and OCI are supported")]
    UnsupportedSchema {
        /// Its digest.
        digest: Digest,
        /// The schemaVersion found.
        version: u32,
    },
    /// No entry of the index matches this host.
    #[error("index {digest} has no manifest for {wanted} (available: {available})")]
    NoMatchingPlatform {
        /// The index digest.
        digest: Digest,
        /// This host's platform.
        wanted: String,
        /// What the index offers.
        available: String,
    },
    /// The config's layer list does not match the manifest's.
    #[error(
        "config {digest} lists {diff_ids} layer diff ids but the manifest has {layers} layers"
    )]
    LayerCountMismatch {
        /// The config digest.
        digest: Digest,
        /// Entries in rootfs.diff_ids.
        diff_ids: usize,
        /// Entries in the manifest.
        layers: usize,
    },
    /// An image whose config says another OS or architecture.
    #[error("image config {digest} is for {found}, this host runs {wanted}")]
    WrongPlatform {
        /// The config digest.
        digest: Digest,
        /// What the config says.
        found: String,
        /// This host.
        wanted: String,
    },
    /// More layers than a rootfs can stack.
    #[error("manifest {digest} has {layers} layers; at most {MAX_LAYERS} are supported")]
    TooManyLayers {
        /// The manifest digest.
        digest: Digest,
        /// Its layer count.
        layers: usize,
    },
    /// A descriptor with a malformed digest.
    #[error("descriptor in {parent} has a bad digest: {source}")]
    BadDescriptor {
        /// The document holding the descriptor.
        parent: Digest,
        /// Why the digest is bad.
        source: crate::digest::DigestError,
    },
}

/// A fetched top-level document: a manifest for one platform, or an index of several.
#[derive(Debug)]
pub enum Document {
    /// An image index or Docker manifest list.
    Index(Box<ImageIndex>),
    /// An image manifest.
    Manifest(Box<ImageManifest>),
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u32>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    layers: Option<serde_json::Value>,
}

/// Parses a manifest or index. `content_type` is the registry's header, when there is one.
pub fn parse_document(
    bytes: &[u8],
    digest: &Digest,
    content_type: Option<&str>,
) -> Result<Document, ManifestError> {
    let invalid = |reason: String| ManifestError::Invalid {
        what: "manifest",
        digest: digest.clone(),
        reason,
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    if let Some(v) = probe.schema_version {
        if v != 2 {
            return Err(ManifestError::UnsupportedSchema {
                digest: digest.clone(),
                version: v,
            });
        }
    }
    let media_type = probe
        .media_type
        .or_else(|| content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_string()))
        .filter(|m| m != "application/json" && m != "text/plain" && !m.is_empty());
    let is_index = match media_type.as_deref() {
        Some(OCI_INDEX | DOCKER_MANIFEST_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        Some(other) => {
            return Err(ManifestError::UnsupportedMediaType {
                what: "manifest",
                digest: digest.clone(),
                media_type: other.to_string(),
            })
        }
        None if probe.manifests.is_some() => true,
        None if probe.layers.is_some() => false,
        None => {
            return Err(invalid(
                "neither a manifest (no \"layers\") nor an index (no \"manifests\")".into(),
            ))
        }
    };
    if is_index {
        serde_json::from_slice(bytes)
            .map(|i| Document::Index(Box::new(i)))
            .map_err(|e| ManifestError::Invalid {
                what: "index",
                digest: digest.clone(),
                reason: e.to_string(),
            })
    } else {
        serde_json::from_slice(bytes)
            .map(|m| Document::Manifest(Box::new(m)))
            .map_err(|e| invalid(e.to_string()))
    }
}

/// Parses an image config.
pub fn parse_config(bytes: &[u8], digest: &Digest) -> Result<ImageConfiguration, ManifestError> {
    serde_json::from_slice(bytes).map_err(|e| ManifestError::Invalid {
        what: "config",
        digest: digest.clone(),
        reason: e.to_string(),
    })
}

/// A descriptor's digest, parsed.
pub fn descriptor_digest(desc: &Descriptor, parent: &Digest) -> Result<Digest, ManifestError> {
    desc.digest()
        .to_string()
        .parse()
        .map_err(|source| ManifestError::BadDescriptor {
            parent: parent.clone(),
            source,
        })
}

/// How a layer of `media_type` is compressed; `None` when the type is not a layer type
/// Berth can unpack.
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | DOCKER_LAYER_TAR => Some(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | DOCKER_LAYER_GZIP
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

/// Checks the manifest's config and layer media types.
pub fn check_manifest(manifest: &ImageManifest, digest: &Digest) -> Result<(), ManifestError> {
    if manifest.layers().len() > MAX_LAYERS {
        return Err(ManifestError::TooManyLayers {
            digest: digest.clone(),
            layers: manifest.layers().len(),
        });
    }
    let config_type = manifest.config().media_type().to_string();
    if config_type != OCI_CONFIG && config_type != DOCKER_CONFIG {
        return Err(ManifestError::UnsupportedMediaType {
            what: "config",
            digest: descriptor_digest(manifest.config(), digest)?,
            media_type: config_type,
        });
    }
    for layer in manifest.layers() {
        let media_type = layer.media_type().to_string();
        if layer_compression(&media_type).is_none() {
            return Err(ManifestError::UnsupportedMediaType {
                what: "layer",
                digest: descriptor_digest(layer, digest)?,
                media_type,
            });
        }
    }
    Ok(())
}

/// An `os/arch[/variant]` platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// GOARCH spelling: `amd64`, `arm64`, …
    pub architecture: String,
    /// `v8`, `v7`, … or none.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this host, in GOARCH spelling.
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            other => (other, None),
        };
        Self {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(String::from),
        }
    }

    /// Variants this host runs, best first. An absent variant always matches.
    fn variant_rank(&self, variant: Option<&str>) -> Option<usize> {
        let Some(v) = variant.filter(|v| !v.is_empty()) else {
            return Some(0);
        };
        let accepted: &[&str] = match self.architecture.as_str() {
            "amd64" => &["v1", "v2", "v3"],
            "arm64" => &["v8"],
            "arm" => &["v7", "v6", "v5"],
            _ => &[],
        };
        accepted.iter().position(|a| *a == v).map(|p| p + 1)
    }
}

impl std::str::FromStr for Platform {
    type Err = String;
    /// Parses `os/arch[/variant]` (`linux/arm64/v8`, `linux/amd64`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.split('/').collect();
        let valid =
            |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        match parts.as_slice() {
            [os, arch] | [os, arch, _] if parts.iter().all(valid) => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: parts.get(2).map(|v| v.to_string()),
            }),
            _ => Err(format!(
                "invalid platform {text:?}: want os/arch[/variant], e.g. linux/arm64/v8"
            )),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Picks the manifest of `wanted` from an index: same OS and architecture, the best
/// variant (none, then the lowest compatible), skipping attestations (`unknown/unknown`).
pub fn select_platform(
    index: &ImageIndex,
    digest: &Digest,
    wanted: &Platform,
) -> Result<Descriptor, ManifestError> {
    let mut best: Option<(usize, &Descriptor)> = None;
    let mut available = Vec::new();
    for desc in index.manifests() {
        let Some(p) = desc.platform() else {
            available.push("(no platform)".to_string());
            continue;
        };
        let os = p.os().to_string();
        let arch = p.architecture().to_string();
        let variant = p.variant().as_deref();
        available.push(match variant {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        });
        if os != wanted.os || arch != wanted.architecture {
            continue;
        }
        if let Some(rank) = wanted.variant_rank(variant) {
            if best.is_none_or(|(r, _)| rank < r) {
                best = Some((rank, desc));
            }
        }
    }
    best.map(|(_, d)| d.clone())
        .ok_or_else(|| ManifestError::NoMatchingPlatform {
            digest: digest.clone(),
            wanted: wanted.to_string(),
            available: if available.is_empty() {
                "nothing".into()
            } else {
                available.join(", ")
            },
        })
}

/// Checks that a config is for this host and matches the manifest's layer count.
pub fn check_config(
    config: &ImageConfiguration,
    digest: &Digest,
    layers: usize,
    wanted: &Platform,
) -> Result<(), ManifestError> {
    let os = config.os().to_string();
    let arch = config.architecture().to_string();
    if os != wanted.os || arch != wanted.architecture {
        return Err(ManifestError::WrongPlatform {
            digest: digest.clone(),
            found: format!("{os}/{arch}"),
            wanted: wanted.to_string(),
        });
    }
    let diff_ids = config.rootfs().diff_ids().len();
    if diff_ids != layers {
        return Err(ManifestError::LayerCountMismatch {
            digest: digest.clone(),
            diff_ids,
            layers,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Digest {
        Digest::of(b"x")
    }

    #[test]
    fn refuses_bad_documents() {
        assert!(matches!(
            parse_document(b"not json", &d(), None),
            Err(ManifestError::Invalid { .. })
        ));
        assert!(matches!(
            parse_document(br#"{"schemaVersion":1,"fsLayers":[]}"#, &d(), None),
            Err(ManifestError::UnsupportedSchema { version: 1, .. })
        ));
        assert!(matches!(
            parse_document(
                br#"{"schemaVersion":2,"mediaType":"text/html"}"#,
                &d(),
                None
            ),
            Err(ManifestError::UnsupportedMediaType { .. })
        ));
        assert!(matches!(
            parse_document(br#"{"schemaVersion":2}"#, &d(), None),
            Err(ManifestError::Invalid { .. })
        ));
    }

    #[test]
    fn refuses_too_many_layers() -> Result<(), Box<dyn std::error::Error>> {
        let hex = "a".repeat(64);
        let layer = format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{hex}","size":1}}"#
        );
        let layers = vec![layer; MAX_LAYERS + 1].join(",");
        let text = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"sha256:{hex}","size":1}},"layers":[{layers}]}}"#
        );
        let Document::Manifest(m) = parse_document(text.as_bytes(), &d(), None)? else {
            return Err("not a manifest".into());
        };
        assert!(matches!(
            check_manifest(&m, &d()),
            Err(ManifestError::TooManyLayers { .. })
        ));
        Ok(())
    }

    #[test]
    fn picks_platform() -> Result<(), Box<dyn std::error::Error>> {
        let hex = |c: char| c.to_string().repeat(64);
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{}","size":1,"platform":{{"os":"linux","architecture":"amd64","variant":"v3"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{}","size":1,"platform":{{"os":"unknown","architecture":"unknown"}}}}]}}"#,
            hex('a'),
            hex('b'),
            hex('c'),
            hex('d')
        );
        let Document::Index(index) = parse_document(index.as_bytes(), &d(), None)? else {
            return Err("not an index".into());
        };
        let amd64 = Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        };
        let got = select_platform(&index, &d(), &amd64)?;
        assert_eq!(got.digest().to_string(), format!("sha256:{}", hex('c')));
        let s390 = Platform {
            os: "linux".into(),
            architecture: "s390x".into(),
            variant: None,
        };
        let err = select_platform(&index, &d(), &s390)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("linux/s390x") && err.contains("linux/arm64/v8"),
            "{err}"
        );
        Ok(())
    }
}
