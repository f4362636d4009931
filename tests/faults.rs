//! Registry behaviour a real registry will not produce on demand, served by the in-test
//! fake registry: Docker Hub-style bearer tokens, 5xx, garbage and unsupported manifests,
//! missing and truncated blobs, corrupt compression. Each failure has its own message
//! naming the reference or digest, and leaves nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use berth_integration::fake_registry::{BearerAuth, FakeRegistry, Response};
use berth_integration::layout::{self, Image, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};
use berth_integration::tarball::{Compression, Meta, TarBuilder};
use common::{fixtures, Root};
use serde_json::json;

fn assert_clean(root: &Root) {
    assert!(
        root.leftovers().is_empty(),
        "ingest leftovers: {:?}",
        root.leftovers()
    );
    assert!(root.images_json().is_empty());
}

#[test]
fn bearer_token_auth_like_docker_hub() {
    let auth = BearerAuth {
        user: "hub".into(),
        password: "pw".into(),
        token: "tok-123".into(),
        anonymous: false,
    };
    let reg = FakeRegistry::start(Some(auth)).unwrap();
    reg.serve_layout(&fixtures().join("busybox-oci"), "library/busybox")
        .unwrap();
    let image = format!("{}/library/busybox:latest", reg.host());
    let root = Root::new();
    let err = root.fails(&["pull", &image]);
    assert!(err.contains("401") && err.contains(&image), "{err}");
    let err = root.fails(&["pull", "--creds", "hub:nope", &image]);
    assert!(err.contains("401"), "{err}");
    root.ok(&["pull", "--creds", "hub:pw", &image]);
    assert_eq!(root.images_json().len(), 1);
    let log = reg.log.lock().unwrap().join("\n");
    assert!(
        log.contains("GET /token?"),
        "the token endpoint was used:\n{log}"
    );

    // Public images on Docker Hub: an anonymous token, no credentials at all.
    let public = BearerAuth {
        user: String::new(),
        password: String::new(),
        token: "anon".into(),
        anonymous: true,
    };
    let reg = FakeRegistry::start(Some(public)).unwrap();
    reg.serve_layout(&fixtures().join("busybox-oci"), "library/busybox")
        .unwrap();
    let anon = Root::new();
    anon.ok(&["pull", &format!("{}/library/busybox", reg.host())]);
    assert_eq!(anon.images_json().len(), 1);
}

/// A layout with one image whose manifest is edited by `edit`; returns the layout dir
/// and the manifest digest.
fn custom_layout(
    dir: &std::path::Path,
    layer: Vec<u8>,
    media_type: &str,
    diff_id: &str,
) -> serde_json::Value {
    let mut image = Image::new(vec![], json!({"Cmd": ["sh"]}));
    image.layers = vec![];
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let config =
        layout::write_blob(dir, OCI_CONFIG, &serde_json::to_vec(&config).unwrap()).unwrap();
    let layer = layout::write_blob(dir, media_type, &layer).unwrap();
    let manifest =
        json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]});
    let mut desc =
        layout::write_blob(dir, OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap()).unwrap();
    desc["annotations"] = json!({"org.opencontainers.image.ref.name": "latest"});
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [desc]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    layer
}

fn small_tar() -> Vec<u8> {
    let mut t = TarBuilder::new();
    t.file("hello.txt", b"hello\n", Meta::FILE).unwrap();
    t.finish().unwrap()
}

#[test]
fn server_errors_and_bad_manifests() {
    let reg = FakeRegistry::start(None).unwrap();
    let root = Root::new();
    let host = reg.host();

    reg.route(
        "/v2/five/manifests/latest",
        Response::new(503, "text/plain", "maintenance"),
    );
    let err = root.fails(&["pull", &format!("{host}/five")]);
    assert!(err.contains("503") && err.contains("five"), "{err}");

    reg.route(
        "/v2/garbage/manifests/latest",
        Response::new(200, OCI_MANIFEST, "<html>not json</html>"),
    );
    let err = root.fails(&["pull", &format!("{host}/garbage")]);
    assert!(
        err.contains("is not valid") && err.contains("sha256:"),
        "{err}"
    );

    reg.route(
        "/v2/v1/manifests/latest",
        Response::new(
            200,
            "application/json",
            r#"{"schemaVersion":1,"fsLayers":[]}"#,
        ),
    );
    let err = root.fails(&["pull", &format!("{host}/v1")]);
    assert!(err.contains("schema 1"), "{err}");

    // Only arm64 in the index.
    let dir = tempfile::tempdir().unwrap();
    let mut arm = fixtures_busybox();
    arm.architecture = "arm64".into();
    layout::write_oci_multiarch(dir.path(), "latest", &[arm], Compression::Gzip).unwrap();
    reg.serve_layout(dir.path(), "armonly").unwrap();
    let err = root.fails(&["pull", &format!("{host}/armonly")]);
    assert!(
        err.contains("no manifest for linux/amd64") && err.contains("linux/arm64"),
        "{err}"
    );

    // A layer media type nobody unpacks.
    let dir = tempfile::tempdir().unwrap();
    let tar = small_tar();
    let diff = format!("sha256:{}", layout::sha256_hex(&tar));
    custom_layout(dir.path(), tar, "application/x-not-a-layer", &diff);
    reg.serve_layout(dir.path(), "weird").unwrap();
    let err = root.fails(&["pull", &format!("{host}/weird")]);
    assert!(
        err.contains("unsupported media type") && err.contains("application/x-not-a-layer"),
        "{err}"
    );
    assert_clean(&root);
}

fn fixtures_busybox() -> Image {
    let _ = fixtures();
    berth_integration::fixtures::busybox_image().unwrap()
}

#[test]
fn missing_truncated_and_corrupt_blobs() {
    let reg = FakeRegistry::start(None).unwrap();
    let root = Root::new();
    let host = reg.host();

    // The manifest names a layer the registry does not have.
    let dir = tempfile::tempdir().unwrap();
    let tar = small_tar();
    let diff = format!("sha256:{}", layout::sha256_hex(&tar));
    let layer = custom_layout(
        dir.path(),
        Compression::Gzip.compress(&tar).unwrap(),
        Compression::Gzip.oci_media_type(),
        &diff,
    );
    reg.serve_layout(dir.path(), "missing").unwrap();
    let digest = layer["digest"].as_str().unwrap().to_string();
    reg.route(
        &format!("/v2/missing/blobs/{digest}"),
        Response::new(
            404,
            "application/json",
            r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}"#,
        ),
    );
    let err = root.fails(&["pull", &format!("{host}/missing")]);
    assert!(err.contains("not found") && err.contains(&digest), "{err}");

    // The registry announces the full length and then closes the connection half way.
    reg.serve_layout(dir.path(), "truncated").unwrap();
    let bytes = std::fs::read(
        dir.path()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap();
    let mut cut = Response::new(
        200,
        "application/octet-stream",
        bytes[..bytes.len() / 2].to_vec(),
    );
    cut.claimed_length = Some(bytes.len());
    reg.route(&format!("/v2/truncated/blobs/{digest}"), cut);
    let err = root.fails(&["pull", &format!("{host}/truncated")]);
    assert!(err.contains(&digest), "{err}");

    // More bytes than the manifest announces (an endless blob would be cut off the same way).
    reg.serve_layout(dir.path(), "padded").unwrap();
    let mut padded = bytes.clone();
    padded.extend(std::iter::repeat_n(0u8, 1 << 20));
    reg.route(
        &format!("/v2/padded/blobs/{digest}"),
        Response::new(200, "application/octet-stream", padded),
    );
    let err = root.fails(&["pull", &format!("{host}/padded")]);
    assert!(
        err.contains("size mismatch") && err.contains(&digest),
        "{err}"
    );

    // Correct digest, but the bytes are not gzip at all.
    let dir = tempfile::tempdir().unwrap();
    custom_layout(
        dir.path(),
        b"definitely not gzip data, just text".to_vec(),
        Compression::Gzip.oci_media_type(),
        &diff,
    );
    reg.serve_layout(dir.path(), "badgzip").unwrap();
    let err = root.fails(&["pull", &format!("{host}/badgzip")]);
    assert!(err.contains("corrupt gzip stream"), "{err}");

    // zstd that is not zstd.
    let dir = tempfile::tempdir().unwrap();
    custom_layout(
        dir.path(),
        b"\x28\xb5\x2f\xfd garbage garbage garbage".to_vec(),
        Compression::Zstd.oci_media_type(),
        &diff,
    );
    reg.serve_layout(dir.path(), "badzstd").unwrap();
    let err = root.fails(&["pull", &format!("{host}/badzstd")]);
    assert!(
        err.contains("corrupt zstd stream") || err.contains("zstd"),
        "{err}"
    );

    // A layer whose content does not match the config's diff id.
    let dir = tempfile::tempdir().unwrap();
    let wrong = format!("sha256:{}", "0".repeat(64));
    custom_layout(
        dir.path(),
        Compression::Gzip.compress(&tar).unwrap(),
        Compression::Gzip.oci_media_type(),
        &wrong,
    );
    reg.serve_layout(dir.path(), "diffid").unwrap();
    let err = root.fails(&["pull", &format!("{host}/diffid")]);
    assert!(
        err.contains("the image config says") && err.contains(&wrong),
        "{err}"
    );

    assert_clean(&root);
    assert!(
        root.snapshot_dirs().is_empty(),
        "{:?}",
        root.snapshot_dirs()
    );
}

#[test]
fn transient_blob_failures_are_retried() {
    let reg = FakeRegistry::start(None).unwrap();
    let root = Root::new();
    let dir = tempfile::tempdir().unwrap();
    let tar = small_tar();
    let diff = format!("sha256:{}", layout::sha256_hex(&tar));
    let gz = Compression::Gzip.compress(&tar).unwrap();
    let layer = custom_layout(
        dir.path(),
        gz.clone(),
        Compression::Gzip.oci_media_type(),
        &diff,
    );
    reg.serve_layout(dir.path(), "flaky").unwrap();
    let digest = layer["digest"].as_str().unwrap().to_string();
    let path = format!("/v2/flaky/blobs/{digest}");
    let mut cut = Response::new(200, "application/octet-stream", gz[..gz.len() / 2].to_vec());
    cut.claimed_length = Some(gz.len());
    let whole = Response::new(200, "application/octet-stream", gz);
    reg.route_sequence(
        &path,
        vec![Response::new(503, "text/plain", "busy"), cut, whole],
    );
    let out = root.run(&["pull", &format!("{}/flaky", reg.host())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("retrying").count(), 2, "{stderr}");
    let gets = reg
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.ends_with(&path))
        .count();
    assert_eq!(gets, 3, "503, then a cut transfer, then the whole blob");
    assert!(root.leftovers().is_empty());
}

#[test]
fn killed_pull_loses_nothing_and_gc_cleans_up() {
    let reg = FakeRegistry::start(None).unwrap();
    let mut root = Root::new();
    // An image stored before the crash.
    let small = tempfile::tempdir().unwrap();
    let tar = small_tar();
    let diff = format!("sha256:{}", layout::sha256_hex(&tar));
    custom_layout(
        small.path(),
        Compression::Gzip.compress(&tar).unwrap(),
        Compression::Gzip.oci_media_type(),
        &diff,
    );
    reg.serve_layout(small.path(), "small").unwrap();
    root.ok(&["pull", &format!("{}/small", reg.host())]);
    let before = root.images_json();

    // The busybox layer stalls half way; the agent doing the pull is killed with SIGKILL.
    let layout_dir = fixtures().join("busybox-oci");
    reg.serve_layout(&layout_dir, "bb").unwrap();
    let (blob, bytes) = std::fs::read_dir(layout_dir.join("blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .max_by_key(|(_, b)| b.len())
        .unwrap();
    let path = format!("/v2/bb/blobs/sha256:{blob}");
    let mut stall = Response::new(200, "application/octet-stream", bytes.clone());
    stall.stall_after = Some(bytes.len() / 2);
    reg.route(&path, stall);
    let mut child = root
        .cmd(&["pull", &format!("{}/bb", reg.host())])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while root.leftovers().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the pull never started writing"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    root.stop_agent(libc::SIGKILL);
    assert!(
        !child.wait().unwrap().success(),
        "the client sees the pull fail"
    );
    root.start_agent(&[]);
    assert_eq!(
        root.images_json(),
        before,
        "a killed pull changes no record"
    );

    // The next pull succeeds despite the dead writer's leftovers; GC removes them.
    reg.route(&path, Response::new(200, "application/octet-stream", bytes));
    root.ok(&["pull", &format!("{}/bb", reg.host())]);
    assert_eq!(root.images_json().len(), 2);
    assert!(
        !root.leftovers().is_empty(),
        "the dead writer's files are still there"
    );
    root.ok(&["image", "prune"]);
    assert!(root.leftovers().is_empty(), "{:?}", root.leftovers());
    assert_eq!(root.snapshot_dirs().len(), 2);
}
