//! Images on the wire: pull, import, remove and prune requests and answers, the progress
//! stream of a pull or import, and the image view `images` lists.

use serde::{Deserialize, Serialize};

/// `POST /v1/images/pull`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PullRequest {
    /// Image reference.
    pub reference: String,
    /// `os/arch[/variant]`.
    #[serde(default)]
    pub platform: Option<String>,
    /// Registries spoken to over plain HTTP.
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    /// `USER:PASSWORD`.
    #[serde(default)]
    pub creds: Option<String>,
    /// Docker config file with `auths`.
    #[serde(default)]
    pub authfile: Option<std::path::PathBuf>,
    /// Unpack limit per layer, bytes.
    #[serde(default)]
    pub max_layer_bytes: Option<u64>,
}

/// `POST /v1/images/import` (query string). The archive is the request body, or `path`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImportQuery {
    /// A path the agent reads (directory or archive); absent = the body is the archive.
    #[serde(default)]
    pub path: Option<String>,
    /// Name to give the image.
    #[serde(default)]
    pub tag: Option<String>,
    /// Platform to pick from an index.
    #[serde(default)]
    pub platform: Option<String>,
    /// Unpack limit per layer, bytes.
    #[serde(default)]
    pub max_layer_bytes: Option<u64>,
}

/// One line of the NDJSON stream of a pull or import.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressLine {
    /// A progress event.
    Progress(ProgressEvent),
    /// An image was stored (the last line of a pull; one per image of an import).
    Image(Box<ImageView>),
    /// The operation failed (last line).
    Error(String),
}

/// `POST /v1/images/remove`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveImageRequest {
    /// Reference or id prefix.
    pub name: String,
    /// Remove an id that several references share.
    #[serde(default)]
    pub force: bool,
}

/// Answer of an image removal.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RemoveImageResponse {
    /// References removed.
    pub untagged: Vec<String>,
    /// Blobs deleted because nothing else used them.
    pub deleted: Vec<String>,
}

/// `POST /v1/images/rootfs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootfsRequest {
    /// Image.
    pub image: String,
    /// Existing empty directory.
    pub dest: std::path::PathBuf,
}

/// One thing that happened during a pull or import (serialized on the agent's API as
/// `{"event": "layer_started", ...}`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ProgressEvent {
    /// The reference resolved to a manifest with this many layers.
    Resolved {
        /// Canonical reference.
        reference: String,
        /// Manifest digest for this platform.
        manifest: String,
        /// Layer count.
        layers: usize,
    },
    /// A layer started downloading, or unpacking from a stored blob.
    LayerStarted {
        /// Blob digest.
        digest: String,
        /// Blob size.
        size: u64,
        /// True when the blob is already stored and only unpacked.
        from_store: bool,
    },
    /// Bytes of a layer received so far.
    LayerProgress {
        /// Blob digest.
        digest: String,
        /// Bytes so far.
        done: u64,
    },
    /// A layer was already stored and unpacked.
    LayerCached {
        /// Blob digest.
        digest: String,
    },
    /// A layer is stored, verified and unpacked.
    LayerDone {
        /// Blob digest.
        digest: String,
    },
    /// A layer download failed in a way worth another try, which is starting.
    LayerRetrying {
        /// Blob digest.
        digest: String,
        /// The attempt that failed (1-based).
        attempt: u32,
        /// Why it failed.
        error: String,
    },
    /// A layer failed.
    LayerFailed {
        /// Blob digest.
        digest: String,
    },
}

/// An image as `images` lists it (`GET /v1/images`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageView {
    /// Canonical reference.
    pub reference: String,
    /// The reference without tag or digest (`docker.io/library/busybox`).
    pub repository: String,
    /// Its tag, if it has one.
    #[serde(default)]
    pub tag: Option<String>,
    /// What the reference resolved to: index or manifest digest (Docker's RepoDigest).
    pub digest: String,
    /// The platform manifest's digest.
    pub manifest: String,
    /// The config blob's digest: the image id.
    pub id: String,
    /// `os/arch[/variant]`.
    pub platform: String,
    /// Layers, bottom first.
    pub layers: Vec<LayerView>,
    /// Unpacked bytes of all layers.
    pub size: u64,
    /// Creation time from the config.
    #[serde(default)]
    pub created: Option<String>,
    /// When it was stored, seconds since the epoch.
    pub stored_at: u64,
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerView {
    /// Digest of the blob as stored (compressed).
    pub digest: String,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    /// Media type of the blob.
    pub media_type: String,
    /// Blob size in bytes.
    pub size: u64,
    /// Uncompressed size in bytes.
    pub unpacked_size: u64,
}

/// `GET /v1/images` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListImagesQuery {
    /// Only this reference; a bare repository (`busybox`) matches all its tags, as
    /// `docker images busybox` does.
    #[serde(default)]
    pub reference: Option<String>,
}

/// Answer of `POST /v1/images/prune`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneView {
    /// Blobs removed.
    pub blobs_removed: Vec<String>,
    /// Snapshots removed (by diff id).
    pub snapshots_removed: Vec<String>,
    /// Leftover ingest files and directories removed.
    pub ingests_removed: usize,
    /// Bytes of blobs freed.
    pub bytes_freed: u64,
}

/// The 12 hex digits a table shows of a digest (`sha256:abc…` or bare hex).
pub fn short_digest(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.get(..12).unwrap_or(hex)
}
