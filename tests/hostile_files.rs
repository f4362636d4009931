//! Files the agent reads from an image — `/etc/passwd`, `/etc/group`, the command — replaced
//! by a FIFO, a device node, a symlink to a device, a directory or an oversized file: each
//! is a clear error (or, for a symlink leading out of the root, the documented fallback of
//! a missing file), never a wait, and the API keeps answering. The same for a running
//! container that swaps its own files before `berth exec -u`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::time::{Duration, Instant};

use berth_integration::layout::{write_oci_layout, Image};
use berth_integration::tarball::{Compression, Meta, TarBuilder};
use common::{import, run_code as run, run_detached, Root};

/// How the file is replaced, and what the error must say (`None`: treated as missing).
const KINDS: &[(&str, Option<&str>)] = &[
    ("fifo", Some("is a fifo")),
    ("chardev", Some("is a character device")),
    ("symlink-to-device", Some("is a character device")),
    ("symlink-out", None),
    ("directory", Some("is a directory")),
    ("huge", Some("more than the 4194304 bytes allowed")),
];

fn hostile_layer(file: &str, kind: &str) -> Vec<u8> {
    let mut t = TarBuilder::new();
    t.dir("etc", Meta::DIR).unwrap();
    t.dir("dev", Meta::DIR).unwrap();
    match kind {
        "fifo" => {
            t.fifo(file, Meta::FILE).unwrap();
        }
        "chardev" => {
            // 1:5 is /dev/zero on the host: the agent must not open it.
            t.char_device(file, 1, 5, Meta::FILE).unwrap();
        }
        "symlink-to-device" => {
            t.char_device("dev/zero", 1, 5, Meta::FILE).unwrap();
            t.symlink(file, "/dev/zero").unwrap();
        }
        "symlink-out" => {
            t.symlink(file, "../../../../../../etc/hostname").unwrap();
        }
        "directory" => {
            t.dir(file, Meta::DIR).unwrap();
        }
        "huge" => {
            t.file(file, &vec![b'#'; 5 << 20], Meta::FILE).unwrap();
        }
        other => panic!("unknown kind {other}"),
    }
    t.finish().unwrap()
}

/// Every (file, kind) as image `hostile/<file>-<kind>`, in one OCI layout imported once.
fn import_hostile(root: &Root) -> Vec<(String, &'static str, Option<&'static str>)> {
    let busybox = berth_integration::fixtures::busybox_layer().unwrap();
    let config = berth_integration::fixtures::busybox_config();
    let mut images = Vec::new();
    for file in ["etc/passwd", "etc/group"] {
        for (kind, expect) in KINDS {
            let name = format!("hostile/{}-{kind}:latest", file.replace('/', "-"));
            let image = Image::new(
                vec![busybox.clone(), hostile_layer(file, kind)],
                config.clone(),
            );
            images.push((name, file, *expect, image));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let refs: Vec<(&str, &Image)> = images.iter().map(|(n, _, _, i)| (n.as_str(), i)).collect();
    write_oci_layout(dir.path(), &refs, Compression::Gzip).unwrap();
    root.ok(&["import", dir.path().to_str().unwrap()]);
    images.into_iter().map(|(n, f, e, _)| (n, f, e)).collect()
}

/// Waits for a CLI child, failing (not hanging) past a generous deadline: a hang here is
/// the bug under test.
fn finish(mut child: std::process::Child, what: &str) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end: the agent waits on an image file");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn spawn(root: &Root, args: &[&str]) -> std::process::Child {
    root.cmd(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `args` while `ps` is asked to answer; the run's exit code and stderr.
fn run_while_ps_answers(root: &Root, args: &[&str]) -> (i32, String) {
    let child = spawn(root, args);
    // The API answers meanwhile (it did not before: the owner waited on the FIFO).
    let ps = finish(spawn(root, &["ps"]), "ps");
    assert!(ps.status.success(), "ps failed while {args:?} ran");
    let out = finish(child, &format!("{args:?}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn hostile_image_files_are_refused_never_waited_on() {
    let root = Root::new();
    let images = import_hostile(&root);
    for (image, file, expect) in &images {
        // The default user reads both files; `-u nobody` too; a numeric user as well.
        for user in [None, Some("nobody"), Some("1000:1000")] {
            let mut args = vec!["run", "--rm"];
            if let Some(u) = user {
                args.extend_from_slice(&["-u", u]);
            }
            args.extend_from_slice(&[image.as_str(), "true"]);
            let (code, err) = run_while_ps_answers(&root, &args);
            match expect {
                Some(text) => {
                    assert_eq!(code, 125, "{image} {user:?}: {err}");
                    assert!(
                        err.contains(text) && err.contains(file),
                        "{image} {user:?}: {err}"
                    );
                }
                // A symlink out of the root reads the root's own (missing) file: numeric
                // and default users run, a name that needs the file is not found.
                None if user == Some("nobody") && *file == "etc/passwd" => {
                    assert_eq!(code, 125, "{image} {user:?}: {err}");
                    assert!(err.contains("unable to find user"), "{image}: {err}");
                }
                None => assert_eq!(code, 0, "{image} {user:?}: {err}"),
            }
        }
    }
    assert_eq!(
        common::containers_dir_entries(&root),
        0,
        "a failed create left state"
    );
}

#[test]
fn a_container_swapping_its_files_cannot_stall_exec() {
    let root = Root::new();
    import(&root);
    let id = run_detached(&root, &["busybox", "sleep", "1000"]);
    let cases = [
        ("mkfifo /tmp/f && mv /tmp/f /etc/passwd", "is a fifo"),
        ("rm /etc/passwd && mkdir /etc/passwd", "is a directory"),
        (
            "rm -rf /etc/passwd && truncate -s 5G /etc/passwd",
            "more than the 4194304 bytes allowed",
        ),
        (
            "rm -rf /etc/passwd && mknod /etc/passwd c 1 5",
            "is a character device",
        ),
    ];
    for (swap, expect) in cases {
        root.ok(&["exec", &id, "sh", "-c", swap]);
        let (code, err) = run_while_ps_answers(&root, &["exec", "-u", "nobody", &id, "id"]);
        assert_eq!(code, 126, "{swap}: {err}");
        assert!(
            err.contains(expect) && err.contains("etc/passwd"),
            "{swap}: {err}"
        );
        // Without a user to resolve, exec does not read the file at all (and nothing
        // here may read it either: busybox `id` would wait on the FIFO itself).
        let (code, out, _) = run(&root, &["exec", &id, "echo", "ok"]);
        assert_eq!((code, out.as_str()), (0, "ok\n"), "{swap}");
    }
    root.ok(&["rm", "-f", &id]);
}
