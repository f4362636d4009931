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

impl Error {
    /// Whether this error comes from a full disk (ENOSPC) or an exhausted quota (EDQUOT)
    /// anywhere down its chain: never the registry's fault, never worth a retry.
    pub fn is_no_space(&self) -> bool {
        is_no_space(self)
    }
}

/// [`Error::is_no_space`] for any error chain.
pub fn is_no_space(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
                || io.kind() == std::io::ErrorKind::StorageFull
            {
                return true;
            }
            // An io::Error wrapping another error (io::Error::other) hides it from source().
            if let Some(inner) = io.get_ref() {
                if is_no_space(inner) {
                    return true;
                }
            }
        }
        cur = e.source();
    }
    false
}
