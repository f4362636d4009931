//! Test fixtures and harness pieces for Berth's integration tests, benchmarks and demo.
//!
//! Everything is built here from what Debian ships (`busybox-static`, `docker-registry`,
//! `skopeo`): no image is ever downloaded.

/// An in-process HTTP registry with bearer-token auth and fault injection, for what a
/// real registry cannot be made to do (5xx, garbage manifests, a token server).
pub mod fake_registry;
/// Busybox images: a one-layer image and a multi-layer one with deletions, hard links,
/// symlinks, special files and xattrs.
pub mod fixtures;
/// OCI image layouts and `docker save` archives written from layer tars.
pub mod layout;
/// The real `docker-registry` on 127.0.0.1, and pushes into it with `skopeo`.
pub mod registry;
/// Building tar streams, including malformed and hostile entries.
pub mod tarball;

/// Fails loudly unless running as root: the suite's root tests must never pass by
/// skipping.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (CI runs as root); refusing to skip silently"
    );
}
