//! Berth images: everything between an image reference and a set of unpacked layer
//! snapshots ready to become a container's rootfs.
//!
//! The flow of a pull: [`reference`] normalises the name, [`registry`] talks the
//! distribution protocol (through `oci-client`), [`manifest`] parses and resolves the
//! platform, [`pull`] streams every layer into the [`store::content`] store while
//! [`unpack`] writes it into its own [`store::snapshots`] directory, and
//! [`store::metadata`] records the image. [`import`] does the same from a local archive,
//! [`gc`] removes what no image references.

/// Digests (`sha256:<hex>`) and the hashing reader/writer used to verify content.
pub mod digest;
/// Garbage collection of blobs and snapshots no image or lease references.
pub mod gc;
/// `docker save` archives and OCI image layouts (directory or tar) into the store.
pub mod import;
/// Manifest, index and config parsing; media types; platform selection.
pub mod manifest;
/// Progress events of a pull or import, for a terminal bar or plain lines.
pub mod progress;
/// Pulling an image from a registry: manifests, config and streamed layers.
pub mod pull;
/// Image references, normalised like Docker's (`busybox` → `docker.io/library/busybox:latest`).
pub mod reference;
/// The registry client (`oci-client`), its auth (basic, bearer, `~/.docker/config.json`)
/// and its errors.
pub mod registry;
/// The on-disk store: content-addressed blobs, layer snapshots, image records, locks.
pub mod store;
/// Layer unpacking: decompression, tar entries written safely below a snapshot root,
/// whiteouts converted to overlayfs form (the flattening copy fallback is in `berth-fsutil`).
pub mod unpack;

/// Entry points for the cargo-fuzz targets, also run as a smoke test by the test suite.
pub mod fuzzing;

mod error;
pub use error::Error;
