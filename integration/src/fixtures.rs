use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::layout::Image;
use crate::tarball::{Meta, TarBuilder};

/// Where Debian's `busybox-static` puts the binary.
pub const BUSYBOX: &str = "/bin/busybox";

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
berth:x:1000:1000:berth:/home/berth:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nberth:x:1000:\nnogroup:x:65534:\n";

fn busybox_bytes() -> Result<Vec<u8>> {
    let bytes = std::fs::read(BUSYBOX)
        .with_context(|| format!("reading {BUSYBOX}: install Debian's busybox-static"))?;
    Ok(bytes)
}

fn applets() -> Result<Vec<String>> {
    let out = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .context("running busybox --list")?;
    if !out.status.success() {
        bail!("busybox --list failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|a| a != "busybox")
        .collect())
}

/// The root layer: static busybox with an applet symlink in /bin for each command, a
/// passwd/group with root, berth (1000) and nobody, and the usual directories.
pub fn busybox_layer() -> Result<Vec<u8>> {
    let mut t = TarBuilder::new();
    for dir in ["bin", "etc", "dev", "proc", "sys", "var", "usr", "usr/bin"] {
        t.dir(dir, Meta::DIR)?;
    }
    t.dir("tmp", Meta::DIR.mode(0o1777))?;
    t.dir("root", Meta::DIR.mode(0o700))?;
    t.dir("home", Meta::DIR)?;
    t.dir("home/berth", Meta::DIR.owner(1000, 1000))?;
    t.file("bin/busybox", &busybox_bytes()?, Meta::FILE.mode(0o755))?;
    for applet in applets()? {
        t.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    t.file("etc/passwd", PASSWD.as_bytes(), Meta::FILE)?;
    t.file("etc/group", GROUP.as_bytes(), Meta::FILE)?;
    t.finish()
}

/// The busybox image config (PATH, `sh`, `/`).
pub fn busybox_config() -> serde_json::Value {
    json!({
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["sh"],
        "WorkingDir": "/",
    })
}

/// One-layer busybox image.
pub fn busybox_image() -> Result<Image> {
    Ok(Image::new(vec![busybox_layer()?], busybox_config()))
}

/// busybox with an application-style config: Entrypoint, Cmd, Env, a non-root User and a
/// WorkingDir, an exposed port, a HEALTHCHECK — what `berth run` must honour.
pub fn app_image() -> Result<Image> {
    let config = json!({
        "Env": [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "APP_MODE=fixture"
        ],
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo default-cmd; id -u; id -g; pwd; echo $APP_MODE"],
        "User": "berth",
        "WorkingDir": "/home/berth",
        "ExposedPorts": {"8080/tcp": {}},
        "Healthcheck": {"Test": ["CMD-SHELL", "test -f /tmp/healthy"], "Interval": 300_000_000u64, "Retries": 1},
    });
    Ok(Image::new(vec![busybox_layer()?], config))
}

/// Layer 2 of the multi-layer image: files, a hard link, relative and absolute symlinks,
/// a fifo, a character device, setuid and owned files, an xattr, and directories that
/// layer 3 deletes or makes opaque.
pub fn data_layer() -> Result<Vec<u8>> {
    let mut t = TarBuilder::new();
    t.dir("data", Meta::DIR)?;
    t.file("data/a.txt", b"alpha\n", Meta::FILE.owner(1000, 1000))?;
    t.file("data/b.txt", b"bravo\n", Meta::FILE)?;
    t.hardlink("data/c.txt", "data/a.txt")?;
    t.symlink("data/d.link", "a.txt")?;
    t.symlink("data/abs.link", "/data/a.txt")?;
    t.fifo("data/fifo", Meta::FILE.mode(0o600))?;
    t.char_device("data/null", 1, 3, Meta::FILE.mode(0o666))?;
    t.file("data/setuid", b"#!/bin/sh\n", Meta::FILE.mode(0o4755))?;
    t.file_with_pax(
        "data/xattr.txt",
        b"x\n",
        Meta::FILE,
        &[("SCHILY.xattr.user.berth", b"hello")],
    )?;
    t.dir("data/opaque", Meta::DIR)?;
    t.file("data/opaque/old1", b"old\n", Meta::FILE)?;
    t.file("data/opaque/old2", b"old\n", Meta::FILE)?;
    t.dir("data/gone", Meta::DIR)?;
    t.file("data/gone/inside", b"gone\n", Meta::FILE)?;
    t.dir("data/keep", Meta::DIR.mode(0o750))?;
    t.file("data/keep/x", b"x\n", Meta::FILE)?;
    t.file("etc/motd", b"layer two\n", Meta::FILE)?;
    t.finish()
}

/// Layer 3: deletes data/b.txt and data/gone, makes data/opaque opaque with new content,
/// replaces etc/motd, adds data/new.txt.
pub fn delete_layer() -> Result<Vec<u8>> {
    let mut t = TarBuilder::new();
    t.dir("data", Meta::DIR)?;
    t.file("data/.wh.b.txt", b"", Meta::FILE)?;
    t.file("data/.wh.gone", b"", Meta::FILE)?;
    t.dir("data/opaque", Meta::DIR)?;
    t.file("data/opaque/.wh..wh..opq", b"", Meta::FILE)?;
    t.file("data/opaque/new1", b"new\n", Meta::FILE)?;
    t.file("data/new.txt", b"new\n", Meta::FILE)?;
    t.file("etc/motd", b"layer three\n", Meta::FILE)?;
    t.finish()
}

/// Three layers: busybox, [`data_layer`], [`delete_layer`].
pub fn multilayer_image() -> Result<Image> {
    let mut config = busybox_config();
    config["WorkingDir"] = json!("/data");
    config["Env"] = json!([
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        "BERTH_FIXTURE=multilayer"
    ]);
    Ok(Image::new(
        vec![busybox_layer()?, data_layer()?, delete_layer()?],
        config,
    ))
}

/// Writes every fixture under `out`: OCI layouts (gzip, zstd, plain tar layers), their tars, docker-save
/// archives, and a two-platform index.
pub fn write_all(out: &Path) -> Result<()> {
    use crate::layout::*;
    use crate::tarball::Compression;
    std::fs::create_dir_all(out)?;
    let busybox = busybox_image()?;
    let multi = multilayer_image()?;
    write_oci_layout(
        &out.join("busybox-oci"),
        &[("latest", &busybox)],
        Compression::Gzip,
    )?;
    tar_directory(&out.join("busybox-oci"), &out.join("busybox-oci.tar"))?;
    write_oci_layout(
        &out.join("app-oci"),
        &[("latest", &app_image()?)],
        Compression::Gzip,
    )?;
    write_docker_archive(
        &out.join("busybox-docker.tar"),
        &[("berth.test/busybox:latest", &busybox)],
    )?;
    write_oci_layout(
        &out.join("multilayer-oci"),
        &[("latest", &multi)],
        Compression::Gzip,
    )?;
    write_oci_layout(
        &out.join("multilayer-plain-oci"),
        &[("latest", &multi)],
        Compression::None,
    )?;
    write_oci_layout(
        &out.join("multilayer-zstd-oci"),
        &[("latest", &multi)],
        Compression::Zstd,
    )?;
    write_docker_archive(
        &out.join("multilayer-docker.tar"),
        &[("berth.test/multilayer:latest", &multi)],
    )?;
    let mut arm = busybox.clone();
    arm.architecture = "arm64".into();
    write_oci_multiarch(
        &out.join("multiarch-oci"),
        "latest",
        &[arm, busybox],
        Compression::Gzip,
    )?;
    Ok(())
}
