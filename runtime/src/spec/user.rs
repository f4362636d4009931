//! `USER`/`-u` resolved as Docker does: through the image's own `/etc/passwd` and
//! `/etc/group`, read through [`crate::image_file`]: a symlinked `/etc/passwd` cannot make the agent
//! read a host file, a FIFO or device in its place cannot make it wait.

use std::path::Path;

use super::SpecError;

/// The identity a container process runs as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (from `/etc/group` membership).
    pub additional_gids: Vec<u32>,
    /// Home directory, for `HOME` when the image does not set it.
    pub home: String,
}

/// Reads a file of the image's rootfs through [`crate::image_file::read`] as text; `None` if
/// it does not exist. A FIFO, device, directory or oversized file is an error, never a wait.
pub fn read_in_root(root: &Path, path: &str) -> Result<Option<String>, SpecError> {
    let bytes = crate::image_file::read(root, path, crate::image_file::MAX_IMAGE_FILE_BYTES)?;
    Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn groups(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

/// Resolves `user` (`""`, `name`, `uid`, `name:group`, `uid:gid`, ...) against the rootfs.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<ResolvedUser, SpecError> {
    let passwd_text = read_in_root(rootfs, "etc/passwd")?.unwrap_or_default();
    let group_text = read_in_root(rootfs, "etc/group")?.unwrap_or_default();
    resolve_from(&passwd_text, &group_text, user)
}

fn resolve_from(
    passwd_text: &str,
    group_text: &str,
    user: &str,
) -> Result<ResolvedUser, SpecError> {
    let users = passwd(passwd_text);
    let all_groups = groups(group_text);
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let not_found = |what: &str| SpecError::User {
        user: user.to_string(),
        reason: format!("{what} not found in the image's /etc/passwd or /etc/group"),
    };
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => users.iter().find(|e| e.uid == uid),
        Err(_) => Some(
            users
                .iter()
                .find(|e| e.name == user_part)
                .ok_or_else(|| not_found(&format!("user {user_part:?}")))?,
        ),
    };
    let uid = match entry {
        Some(e) => e.uid,
        None => user_part.parse().unwrap_or(0),
    };
    let mut gid = entry.map(|e| e.gid).unwrap_or(0);
    if let Some(g) = group_part {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                all_groups
                    .iter()
                    .find(|e| e.name == g)
                    .ok_or_else(|| not_found(&format!("group {g:?}")))?
                    .gid
            }
        };
    }
    let mut additional_gids = Vec::new();
    if let (Some(e), None) = (entry, group_part) {
        for g in &all_groups {
            if g.members.iter().any(|m| m == &e.name) && g.gid != gid {
                additional_gids.push(g.gid);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home: entry.map(|e| e.home.clone()).unwrap_or_else(|| "/".into()),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\nstaff:x:50:www\n";

    #[test]
    fn names_numbers_and_groups() {
        let r = resolve_from(PASSWD, GROUP, "").unwrap();
        assert_eq!((r.uid, r.gid, r.home.as_str()), (0, 0, "/root"));
        let w = resolve_from(PASSWD, GROUP, "www").unwrap();
        assert_eq!(
            (w.uid, w.gid, w.additional_gids.clone()),
            (33, 33, vec![50])
        );
        let n = resolve_from(PASSWD, GROUP, "1234:5").unwrap();
        assert_eq!((n.uid, n.gid), (1234, 5));
        let g = resolve_from(PASSWD, GROUP, "33:staff").unwrap();
        assert_eq!((g.uid, g.gid), (33, 50));
        assert!(resolve_from(PASSWD, GROUP, "nobody").is_err());
        assert!(resolve_from(PASSWD, GROUP, "www:nogroup").is_err());
    }

    #[test]
    fn symlinked_passwd_stays_in_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", dir.path().join("etc/passwd")).unwrap();
        // Resolved inside the root: /etc/shadow of the rootfs, which does not exist.
        assert!(read_in_root(dir.path(), "/etc/passwd").unwrap().is_none());
    }
}
