//! Fuzz entry points. The cargo-fuzz targets in `fuzz/` call these; the test suite runs
//! them over seeds and pseudo-random mutations so they are exercised on every CI run.
//! Each must return (never panic) for any input.

use crate::digest::Digest;

/// Parses `data` as an image reference and, when it parses, re-parses its display form,
/// which must give the same reference.
pub fn reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = crate::reference::ImageRef::parse(text) {
        let again = crate::reference::ImageRef::parse(&r.to_string());
        assert!(
            again.is_ok_and(|a| a == r),
            "reference {text:?} does not round-trip"
        );
    }
}

/// Parses `data` as a manifest/index/config and runs the checks a pull would.
pub fn manifest(data: &[u8]) {
    let digest = Digest::of(data);
    if let Ok(crate::manifest::Document::Manifest(m)) =
        crate::manifest::parse_document(data, &digest, None)
    {
        let _ = crate::manifest::check_manifest(&m, &digest);
    }
    if let Ok(crate::manifest::Document::Index(i)) =
        crate::manifest::parse_document(data, &digest, None)
    {
        let _ = crate::manifest::select_platform(&i, &digest, &crate::manifest::Platform::host());
    }
    if let Ok(c) = crate::manifest::parse_config(data, &digest) {
        let _ = crate::manifest::check_config(&c, &digest, 1, &crate::manifest::Platform::host());
    }
}

/// Unpacks `data` as a layer into a fresh directory under `scratch` with a small size
/// limit, then checks nothing appeared outside it. Errors are fine; escapes are not.
pub fn unpack(data: &[u8], scratch: &std::path::Path) {
    let Ok(dir) = std::fs::create_dir_all(scratch).and_then(|_| tempdir_in(scratch)) else {
        return;
    };
    let dest = dir.join("root");
    let sentinel = dir.join("outside");
    if std::fs::create_dir(&dest).is_err() || std::fs::write(&sentinel, b"keep").is_err() {
        return;
    }
    let options = crate::unpack::UnpackOptions { max_bytes: 8 << 20 };
    let _ = crate::unpack::unpack_layer(data, crate::unpack::Compression::Detect, &dest, &options);
    let outside: Vec<_> = std::fs::read_dir(&dir)
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    let intact = std::fs::read(&sentinel).is_ok_and(|b| b == b"keep");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        intact && outside.len() == 2,
        "layer wrote outside its root: {outside:?}"
    );
}

fn tempdir_in(parent: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    let dir = parent.join(crate::store::fsutil::unique_name("fuzz-"));
    std::fs::create_dir(&dir)?;
    Ok(dir)
}
