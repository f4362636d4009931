//! `berth pull` against the real Debian `docker-registry` on 127.0.0.1, with images pushed
//! by skopeo: gzip and zstd layers, an index, pinned digests, basic auth (flags and the
//! Docker auth file), concurrent pulls, rmi and prune, and registry-side corruption.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::process::Stdio;

use berth_integration::registry::{free_port, Registry};
use common::{fixtures, Overlay, Root};

fn registry_with_images(creds: Option<(&str, &str)>) -> (Registry, String) {
    let reg = Registry::start(creds).expect("starting docker-registry");
    let fx = fixtures();
    let repo = reg
        .push(&fx.join("multilayer-oci"), "latest", "multi:gz", &[])
        .expect("push gz");
    reg.push(&fx.join("multilayer-zstd-oci"), "latest", "multi:zstd", &[])
        .expect("push zstd");
    reg.push(&fx.join("busybox-oci"), "latest", "busybox:latest", &[])
        .expect("push busybox");
    reg.push(
        &fx.join("multiarch-oci"),
        "latest",
        "multiarch:latest",
        &["--all"],
    )
    .expect("push index");
    let host = repo.split('/').next().unwrap_or_default().to_string();
    (reg, host)
}

#[test]
fn pulls_gzip_zstd_plain_index_and_digest_references() {
    let root = Root::new();
    let (_reg, host) = registry_with_images(None);
    let out = root.ok(&["pull", &format!("{host}/multi:gz")]);
    assert!(out.contains(&format!("{host}/multi:gz")), "{out}");
    let mnt = Overlay::mount(&root.lowerdirs(&format!("{host}/multi:gz")));
    assert!(!mnt.path().join("data/b.txt").exists());
    assert_eq!(
        std::fs::read_to_string(mnt.path().join("data/a.txt")).unwrap(),
        "alpha\n"
    );
    drop(mnt);

    // Second pull: nothing is fetched again.
    let again = root.run(&["pull", &format!("{host}/multi:gz")]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        again.status.success() && stderr.matches("already present").count() == 3,
        "{stderr}"
    );

    root.ok(&["pull", &format!("{host}/multi:zstd")]);
    let images = root.images_json();
    let zstd = images
        .iter()
        .find(|i| i["reference"].as_str().unwrap().ends_with(":zstd"))
        .unwrap();
    assert!(zstd["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["media_type"].as_str().unwrap().ends_with("+zstd")));
    // Same diff ids as the gzip image: the snapshots are shared, not unpacked twice.
    assert_eq!(root.snapshot_dirs().len(), 3);

    // Uncompressed layers: the blob digest is the diff id. skopeo always compresses on
    // push, so this image is served by the fake registry, which serves a layout verbatim.
    let fake = berth_integration::fake_registry::FakeRegistry::start(None).unwrap();
    fake.serve_layout(&fixtures().join("multilayer-plain-oci"), "multi")
        .unwrap();
    let plain = Root::new();
    let host_plain = fake.host();
    plain.ok(&["pull", &format!("{host_plain}/multi:latest")]);
    let layers = plain.images_json()[0]["layers"].clone();
    for layer in layers.as_array().unwrap() {
        assert_eq!(
            layer["media_type"],
            "application/vnd.oci.image.layer.v1.tar"
        );
        assert_eq!(layer["digest"], layer["diff_id"]);
    }
    let mnt = Overlay::mount(&plain.lowerdirs(&format!("{host_plain}/multi:latest")));
    assert_eq!(
        std::fs::read_to_string(mnt.path().join("etc/motd")).unwrap(),
        "layer three\n"
    );
    drop(mnt);

    root.ok(&["pull", &format!("{host}/multiarch")]);
    let images = root.images_json();
    let idx = images
        .iter()
        .find(|i| i["reference"].as_str().unwrap().contains("multiarch"))
        .unwrap();
    assert_eq!(idx["platform"], "linux/amd64");
    assert_ne!(
        idx["digest"], idx["manifest"],
        "an index resolves to a platform manifest"
    );

    let digest = idx["digest"].as_str().unwrap();
    let pinned = format!("{host}/multiarch@{digest}");
    root.ok(&["pull", &pinned]);
    assert!(root.ok(&["images"]).contains(&format!("{host}/multiarch")));
    assert!(root.leftovers().is_empty());
    let pulled = common::events_json(&root, "type=image,event=pulled");
    assert!(
        pulled.iter().any(|e| e["id"] == format!("{host}/multi:gz")),
        "{pulled:?}"
    );

    // `pod run` fetches what the agent lacks; with `--pull never` the spec is refused.
    let spec = common::write_spec(
        &root,
        "pulled",
        &format!("name: pulled\ncontainers: [{{name: c, image: '{host}/busybox', command: [sleep, '100']}}]\n"),
    );
    let err = root.fails(&["pod", "run", "--pull", "never", &spec]);
    assert!(err.contains("containers[0].image: no such image"), "{err}");
    root.ok(&["pod", "run", &spec]);
    assert_eq!(common::pod_json(&root, "pulled")["phase"], "running");
    root.ok(&["pod", "rm", "-f", "pulled"]);
}

#[test]
fn basic_auth_from_flags_and_docker_config() {
    let root = Root::new();
    let (_reg, host) = registry_with_images(Some(("berth", "s3cret")));
    let image = format!("{host}/busybox");
    let err = root.fails(&["pull", &image]);
    assert!(err.contains("401") && err.contains(&image), "{err}");
    let err = root.fails(&["pull", "--creds", "berth:wrong", &image]);
    assert!(err.contains("401"), "{err}");
    root.ok(&["pull", "--creds", "berth:s3cret", &image]);

    // ~/.docker/config.json style auth, located through DOCKER_CONFIG.
    let other = Root::new();
    let docker = other.path().join("docker-config");
    std::fs::create_dir_all(&docker).unwrap();
    let auth = "YmVydGg6czNjcmV0"; // base64("berth:s3cret")
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    let out = other
        .cmd(&["pull", &image])
        .env("DOCKER_CONFIG", &docker)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn concurrent_pulls_of_one_image_do_the_work_once() {
    let root = Root::new();
    let (_reg, host) = registry_with_images(None);
    let image = format!("{host}/multi:gz");
    let children: Vec<_> = (0..4)
        .map(|_| {
            root.cmd(&["pull", &image])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut pulled = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        pulled += stderr.matches(": done").count();
    }
    // One pull in the agent (joined; counted by blob fetches in
    // `ten_concurrent_runs_of_a_missing_image_pull_it_once`), its progress seen by each.
    assert!(pulled >= 3, "every layer reported done: {pulled}");
    assert_eq!(root.snapshot_dirs().len(), 3);
    assert_eq!(root.images_json().len(), 1);
    assert!(root.leftovers().is_empty());
}

#[test]
fn rmi_and_prune_keep_what_other_images_use() {
    let root = Root::new();
    let (_reg, host) = registry_with_images(None);
    root.ok(&["pull", &format!("{host}/busybox")]);
    root.ok(&["pull", &format!("{host}/multi:gz")]);
    assert_eq!(root.snapshot_dirs().len(), 3);
    root.ok(&["rmi", &format!("{host}/multi:gz")]);
    assert_eq!(
        root.snapshot_dirs().len(),
        1,
        "busybox's layer stays: the busybox image uses it"
    );
    let pruned: serde_json::Value =
        serde_json::from_str(&root.ok(&["image", "prune", "--json"])).unwrap();
    assert_eq!(pruned["snapshots_removed"].as_array().unwrap().len(), 0);
    assert!(
        std::path::Path::new(&root.lowerdirs(&format!("{host}/busybox"))[0])
            .join("bin/busybox")
            .is_file()
    );
    let id = root.images_json()[0]["id"].as_str().unwrap()[7..19].to_string();
    root.ok(&["rmi", &id]);
    assert_eq!(root.snapshot_dirs().len(), 0);
    assert_eq!(root.blob_count(), 0);
    let err = root.fails(&["rmi", "nosuchimage"]);
    assert!(err.contains("no such image"), "{err}");
}

#[test]
fn registry_errors_are_distinct_and_leave_the_store_intact() {
    let root = Root::new();
    let (reg, host) = registry_with_images(None);
    root.ok(&["pull", &format!("{host}/busybox")]);
    let before = root.images_json();

    let err = root.fails(&["pull", &format!("{host}/busybox:nosuchtag")]);
    assert!(
        err.contains("not found") && err.contains("nosuchtag"),
        "{err}"
    );
    let err = root.fails(&["pull", &format!("{host}/nosuchrepo")]);
    assert!(
        err.contains("not found") && err.contains("nosuchrepo"),
        "{err}"
    );
    let closed = free_port().unwrap();
    let err = root.fails(&["pull", &format!("127.0.0.1:{closed}/busybox")]);
    assert!(
        err.contains("cannot reach registry") && err.contains(&closed.to_string()),
        "{err}"
    );
    let err = root.fails(&["pull", "Not A Reference"]);
    assert!(err.contains("invalid image reference"), "{err}");

    // Corrupt the data layer of multi:gz (busybox's layer is already stored) inside the registry's storage: same length,
    // one byte flipped. The pull must notice and name the layer.
    let images = {
        let probe = Root::new();
        probe.ok(&["pull", &format!("{host}/multi:gz")]);
        probe.images_json()
    };
    let layer = images[0]["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let data = reg.blob_data_path(&layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0x55;
    std::fs::write(&data, &bytes).unwrap();
    let err = root.fails(&["pull", &format!("{host}/multi:gz")]);
    assert!(
        err.contains("digest mismatch") && err.contains(&layer),
        "{err}"
    );

    // Truncated: the registry now serves fewer bytes than the manifest announces.
    std::fs::write(&data, &bytes[..bytes.len() / 2]).unwrap();
    let err = root.fails(&["pull", &format!("{host}/multi:gz")]);
    assert!(
        err.contains(&layer)
            && (err.contains("size mismatch")
                || err.contains("truncated")
                || err.contains("corrupt")),
        "{err}"
    );

    assert!(root.leftovers().is_empty(), "{:?}", root.leftovers());
    assert_eq!(root.images_json(), before, "the store is unchanged");
    // Layers that did verify are kept for the next try (as Docker does); GC removes them
    // while no image uses them.
    root.ok(&["image", "prune"]);
    assert_eq!(root.snapshot_dirs().len(), 1);
    let lower = std::path::PathBuf::from(&root.lowerdirs(&format!("{host}/busybox"))[0]);
    assert!(
        lower.join("bin/busybox").is_file(),
        "the stored image is intact"
    );
}

/// `berth run` of an image the agent lacks pulls it (README: "pulls if missing"), and ten
/// such runs at once fetch each blob once: the agent joins pulls of the same image.
#[test]
fn ten_concurrent_runs_of_a_missing_image_pull_it_once() {
    use berth_integration::fake_registry::FakeRegistry;
    let reg = FakeRegistry::start(None).unwrap();
    reg.serve_layout(&fixtures().join("busybox-oci"), "library/busybox")
        .unwrap();
    let image = format!("{}/library/busybox:latest", reg.host());
    let root = Root::new();
    let runs: Vec<_> = (0..10)
        .map(|i| {
            root.cmd(&["run", "--rm", &image, "echo", &format!("run{i}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in runs.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "run {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("run{i}\n"));
    }
    let log = reg.log.lock().unwrap().clone();
    let blobs: Vec<&String> = log.iter().filter(|l| l.contains("/blobs/")).collect();
    let mut unique = blobs.clone();
    unique.sort();
    unique.dedup();
    assert!(!unique.is_empty(), "{log:?}");
    assert_eq!(blobs.len(), unique.len(), "a blob fetched twice: {log:#?}");

    // `--pull never` refuses with the agent's typed answer; the image is there now, so
    // remove it first.
    root.ok(&["rmi", &image]);
    let out = root
        .cmd(&["run", "--rm", "--pull", "never", &image, "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no such image"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
