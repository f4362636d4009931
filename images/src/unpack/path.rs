use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Normalises a tar entry name to a path relative to the snapshot root, lexically: `/` and
/// `.` are dropped (absolute names are taken as relative to the root, as Docker does), `..`
/// pops a component. Returns `None` when `..` would climb above the root.
pub fn normalize(raw: &[u8]) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in Path::new(OsStr::from_bytes(raw)).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(name) => out.push(name),
            Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Normalises a symlink target resolved from directory `base` the way the kernel does
/// under `RESOLVE_IN_ROOT`: an absolute target starts at the root, and `..` at the root
/// stays at the root.
pub fn resolve_in_root(base: &Path, target: &[u8]) -> PathBuf {
    let target = Path::new(OsStr::from_bytes(target));
    let mut out = if target.is_absolute() {
        PathBuf::new()
    } else {
        base.to_path_buf()
    };
    for component in target.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Splits a normalised, non-empty path into its parent and its last component.
pub fn split(path: &Path) -> Option<(&Path, &OsStr)> {
    Some((path.parent()?, path.file_name()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_names() {
        let n = |s: &str| normalize(s.as_bytes()).map(|p| p.display().to_string());
        assert_eq!(n("./usr/bin/"), Some("usr/bin".into()));
        assert_eq!(n("/etc/passwd"), Some("etc/passwd".into()));
        assert_eq!(n("a/../b"), Some("b".into()));
        assert_eq!(n("./"), Some("".into()));
        assert_eq!(n("../x"), None);
        assert_eq!(n("a/../../x"), None);
        let r = |b: &str, t: &str| {
            resolve_in_root(Path::new(b), t.as_bytes())
                .display()
                .to_string()
        };
        assert_eq!(r("a/b", "../../../../etc"), "etc");
        assert_eq!(r("a", "/tmp/x"), "tmp/x");
        assert_eq!(r("a", "c/./d"), "a/c/d");
    }
}
