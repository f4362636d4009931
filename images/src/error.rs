use crate::{digest, gc, import, manifest, pull, reference, registry, store, unpack};

/// Any error of the images crate; each variant wraps one module's error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An image reference could not be parsed.
    #[error(transparent)]
    Reference(#[from] reference::ReferenceError),
    /// A digest was malformed or did not match.
    #[error(transparent)]
    Digest(#[from] digest::DigestError),
    /// A manifest, index or config was unusable.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    /// The registry refused or failed a request.
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    /// The on-disk store failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// A layer could not be unpacked.
    #[error(transparent)]
    Unpack(#[from] unpack::UnpackError),
    /// A pull failed.
    #[error(transparent)]
    Pull(#[from] pull::PullError),
    /// An import failed.
    #[error(transparent)]
    Import(#[from] import::ImportError),
    /// Garbage collection failed.
    #[error(transparent)]
    Gc(#[from] gc::GcError),
}
