//! Shared helpers of the integration tests: a private data root per test, the built
//! `berth` binary, and the busybox fixtures (built once per test binary).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use berth_integration::require_root;

pub mod cluster;
pub mod etcd;
pub mod net;
use net::{bridge_ports, unique_bridge};

/// A private agent: its own data root, socket and cgroup root (below this test process's
/// own cgroup). At drop every container is removed, the agent stopped, its cgroups removed,
/// and the test fails if a mount or cgroup of it is left.
pub struct Root {
    pub dir: tempfile::TempDir,
    pub agent: Option<Child>,
    pub cgroup_root: PathBuf,
    /// With [`Root::with_bridge`]: the default network's bridge and subnet, private to
    /// this test. Otherwise the agent's default network is `none`.
    pub bridge: Option<(String, String)>,
}

/// The test process's own cgroup (the deepest of its v1 controller paths, or the v2 one).
pub fn own_cgroup() -> PathBuf {
    let text = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
    text.lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .map(PathBuf::from)
        .max_by_key(|p| p.components().count())
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Every cgroupfs directory of `path` (one per mounted hierarchy that has it).
pub fn cgroup_dirs(path: &Path) -> Vec<PathBuf> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let mut out = Vec::new();
    let mounts: Vec<PathBuf> = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        vec![PathBuf::from("/sys/fs/cgroup")]
    } else {
        std::fs::read_dir("/sys/fs/cgroup")
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    for m in mounts {
        let p = m.join(rel);
        if p.is_dir() {
            out.push(p);
        }
    }
    out
}

impl Root {
    pub fn new() -> Self {
        Self::with_agent_args(&[])
    }

    pub fn with_agent_args(extra: &[&str]) -> Self {
        Self::make(extra, None)
    }

    /// An agent whose default network is Berth's bridge network, on a bridge and subnet
    /// of this test's own.
    pub fn with_bridge(extra: &[&str]) -> Self {
        Self::make(extra, Some(unique_bridge()))
    }

    fn make(extra: &[&str], bridge: Option<(String, String)>) -> Self {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("berth-test-root-")
            .tempdir()
            .expect("temp dir");
        let name = dir
            .path()
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let cgroup_root = own_cgroup().join(name);
        let mut root = Self {
            dir,
            agent: None,
            cgroup_root,
            bridge,
        };
        root.start_agent(extra);
        root
    }

    /// Starts (or restarts) the agent and waits for its socket.
    pub fn start_agent(&mut self, extra: &[&str]) {
        self.start_agent_from(Path::new(env!("CARGO_BIN_EXE_berth")), extra);
    }

    /// [`Root::start_agent`] with another `berth` executable (an upgrade).
    pub fn start_agent_from(&mut self, exe: &Path, extra: &[&str]) {
        self.start_agent_with(exe, extra, &[]);
    }

    /// [`Root::start_agent_from`] with more environment for the agent.
    pub fn start_agent_with(&mut self, exe: &Path, extra: &[&str], env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join("agent.log"))
            .expect("agent log");
        let mut net: Vec<String> = Vec::new();
        if !extra.contains(&"--cni-conf-dir") {
            net.push("--cni-conf-dir".into());
            net.push(self.path().join("net.d").display().to_string());
        }
        match &self.bridge {
            Some((name, subnet)) => {
                net.extend(["--bridge-name".into(), name.clone()]);
                net.extend(["--bridge-subnet".into(), subnet.clone()]);
            }
            None if !extra.contains(&"--default-network") => {
                net.extend(["--default-network".into(), "none".into()]);
            }
            None => {}
        }
        let child = self
            .cmd_of(exe, &["agent", "--cgroup-root"])
            .arg(&self.cgroup_root)
            .args(&net)
            .args(extra)
            .env("BERTH_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting the agent");
        self.agent = Some(child);
        // Ready is an answer, not a connect: the socket is bound before recovery, and
        // `/v1/version` is answered by the owner only once recovery's work is applied.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.answers() {
                return;
            }
            if let Some(Ok(Some(status))) = self.agent.as_mut().map(|c| c.try_wait()) {
                panic!("the agent exited ({status}): {}", self.agent_log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the agent did not answer: {}", self.agent_log());
    }

    /// The agent answers `GET /v1/version` with 200.
    pub fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(self.socket()) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        if s.write_all(b"GET /v1/version HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut head = [0u8; 12];
        s.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 200"
    }

    /// Stops the agent with `signal` (SIGTERM or SIGKILL) and reaps it.
    pub fn stop_agent(&mut self, signal: i32) {
        if let Some(mut child) = self.agent.take() {
            // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
            let _ = child.wait();
        }
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.path().join("agent.log")).unwrap_or_default()
    }

    pub fn socket(&self) -> PathBuf {
        self.path().join("agent.sock")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `berth --root <root> --socket <sock> --config <none> ARGS…`, with no docker auth file
    /// and no tty.
    pub fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_of(Path::new(env!("CARGO_BIN_EXE_berth")), args)
    }

    /// [`Root::cmd`] running another `berth` executable.
    pub fn cmd_of(&self, exe: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(exe);
        cmd.arg("--root")
            .arg(self.path())
            .arg("--socket")
            .arg(self.socket())
            .arg("--config")
            .arg(self.path().join("no-config.json"))
            .env("DOCKER_CONFIG", self.path().join("no-docker-config"))
            .env_remove("BERTH_REGISTRY_CREDS")
            .env_remove("BERTH_SOCKET")
            .env_remove("BERTH_ROOT")
            .args(args);
        cmd
    }

    /// Pids of `berth shim` processes whose command line names this test's data root.
    pub fn own_supervisors(&self) -> Vec<i32> {
        let root = format!("{}/", self.path().display());
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd);
                (cmd.contains("shim\0") || cmd.contains("berth-monitor\0")) && cmd.contains(&root)
            })
            .collect()
    }

    /// Processes in this test's cgroup tree (containers a failed test left running).
    fn cgroup_processes(&self) -> Vec<i32> {
        let mut out = Vec::new();
        for d in cgroup_dirs(&self.cgroup_root) {
            for dir in subdirs(&d).into_iter().chain([d.clone()]) {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                out.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Mount points below the data root.
    pub fn mounts(&self) -> Vec<String> {
        let want = self.path().display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&want))
            .map(String::from)
            .collect()
    }

    /// Pod and container cgroups left below the agent's cgroup root (the QoS class dirs
    /// the agent keeps are not counted; what is below them is).
    pub fn container_cgroups(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for d in cgroup_dirs(&self.cgroup_root) {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if !p.is_dir() {
                    continue;
                }
                let qos = ["guaranteed", "burstable", "besteffort", "revocable"]
                    .iter()
                    .any(|q| e.file_name() == *q);
                if qos {
                    out.extend(subdirs(&p));
                } else {
                    out.push(p);
                }
            }
        }
        out
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("running berth")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "berth {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and asserts failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "berth {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn images_json(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["images", "--json"])).expect("images --json is JSON")
    }

    /// Files left in the ingest directories (there must be none after any command).
    pub fn leftovers(&self) -> Vec<PathBuf> {
        ["content/ingest", "snapshots/ingest"]
            .iter()
            .flat_map(|d| {
                std::fs::read_dir(self.path().join(d))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
            })
            .collect()
    }

    pub fn blob_count(&self) -> usize {
        std::fs::read_dir(self.path().join("content/blobs/sha256"))
            .map(|r| r.count())
            .unwrap_or(0)
    }

    pub fn snapshot_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.path().join("snapshots/sha256"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect()
    }

    /// The overlay lower dirs of an image, top first.
    pub fn lowerdirs(&self, image: &str) -> Vec<String> {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(&["image", "inspect", image])).expect("inspect JSON");
        v[0]["Rootfs"]["LowerDirs"]
            .as_array()
            .expect("LowerDirs")
            .iter()
            .map(|s| s.as_str().unwrap_or("").to_string())
            .collect()
    }
}

/// Removes the empty directories above `path` that lie strictly below this process's own
/// cgroup of each hierarchy: libcontainer creates them (one path serves all v1 hierarchies)
/// in hierarchies where this process sits higher up.
fn remove_created_parents(path: &Path) {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, own) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, Path::new(c)),
            _ => continue,
        };
        let mount = if ctrls.is_empty() {
            if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                PathBuf::from("/sys/fs/cgroup")
            } else {
                PathBuf::from("/sys/fs/cgroup/unified")
            }
        } else {
            Path::new("/sys/fs/cgroup").join(ctrls.trim_start_matches("name="))
        };
        let mut p = path.to_path_buf();
        while p.pop() && p.starts_with(own) && p != own {
            let full = mount.join(p.strip_prefix("/").unwrap_or(&p));
            if full.is_dir() && std::fs::remove_dir(&full).is_err() {
                break;
            }
        }
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if self.agent.is_some() {
            if let Ok(out) = self.cmd(&["pod", "ls", "-q"]).output() {
                for id in String::from_utf8_lossy(&out.stdout).lines() {
                    let _ = self.cmd(&["pod", "rm", "-f", id]).output();
                }
            }
            if let Ok(out) = self.cmd(&["ps", "-q", "--no-trunc"]).output() {
                for id in String::from_utf8_lossy(&out.stdout).lines() {
                    let _ = self.cmd(&["rm", "-f", id]).output();
                }
            }
        }
        self.stop_agent(libc::SIGTERM);
        // Monitors, helpers and pod inits this test's agent started and nobody removed (a
        // test that failed half-way, a create still in flight): killed by pid, found by
        // their state dir; then what still runs in this test's own cgroups.
        for pid in self.own_supervisors() {
            // SAFETY: kill(2) on a supervisor whose command line names this test's root.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        for pid in self.cgroup_processes() {
            // SAFETY: kill(2) on a process in a cgroup this test created.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.cgroup_processes().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let leftover_mounts = self.mounts();
        for m in &leftover_mounts {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        let leftover_cgroups = self.container_cgroups();
        // Remove our cgroup root (children first) in every hierarchy; then its parents
        // that are empty and below our own cgroup (other tests may still use them).
        for d in cgroup_dirs(&self.cgroup_root) {
            remove_tree(&d);
        }
        remove_created_parents(&self.cgroup_root);
        let mut leftover_net = Vec::new();
        if let Some((bridge, _)) = &self.bridge {
            leftover_net.extend(bridge_ports(bridge));
            let _ = Command::new("ip")
                .args(["link", "del", bridge])
                .stderr(Stdio::null())
                .status();
        }
        for dir in ["cni/cache", "netns"] {
            for e in std::fs::read_dir(self.path().join(dir))
                .into_iter()
                .flatten()
                .flatten()
            {
                leftover_net.push(e.path().display().to_string());
            }
        }
        if !std::thread::panicking() {
            assert!(
                leftover_net.is_empty(),
                "network state left behind: {leftover_net:?}"
            );
            assert!(
                leftover_mounts.is_empty(),
                "mounts left behind: {leftover_mounts:?}"
            );
            assert!(
                leftover_cgroups.is_empty(),
                "cgroups left behind: {leftover_cgroups:?}\nagent log:\n{}",
                self.agent_log()
            );
        }
    }
}

/// Directories below `dir`, deepest first.
pub fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(subdirs(&p));
            out.push(p);
        }
    }
    out
}

/// Removes a cgroup and everything below it (cgroupfs dirs go with `rmdir`, children first).
fn remove_tree(dir: &Path) {
    for d in subdirs(dir) {
        let _ = std::fs::remove_dir(d);
    }
    let _ = std::fs::remove_dir(dir);
}

/// The busybox fixtures (see `berth_integration::fixtures::write_all`), built once and
/// kept in cargo's test scratch directory (inside `target/`, so nothing is left in /tmp).
/// Keyed by the busybox binary and a format version; built in a private directory and
/// renamed into place, so test binaries running at the same time never see half of it.
pub fn fixtures() -> &'static Path {
    const FORMAT: u32 = 4;
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let busybox = std::fs::read(berth_integration::fixtures::BUSYBOX)
            .expect("reading /bin/busybox: install busybox-static");
        let key = &berth_integration::layout::sha256_hex(&busybox)[..12];
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = base.join(format!("fixtures-{key}-v{FORMAT}"));
        if !dir.is_dir() {
            let tmp = tempfile::Builder::new()
                .prefix(".fixtures-")
                .tempdir_in(base)
                .expect("temp dir");
            berth_integration::fixtures::write_all(tmp.path())
                .expect("building fixtures from busybox-static");
            // Another test binary may have won the race; its copy is identical.
            let built = tmp.keep();
            if std::fs::rename(&built, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&built);
            }
        }
        dir
    })
}

/// A read-only overlay mount of the given lower dirs; unmounted at drop.
pub struct Overlay {
    pub dir: tempfile::TempDir,
}

impl Overlay {
    pub fn mount(lowers: &[String]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-mnt-")
            .tempdir()
            .expect("temp dir");
        let status = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!("lowerdir={},ro", lowers.join(":")))
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting overlay failed");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A sorted listing of a tree: path, type, mode, uid, gid, size, symlink target.
pub fn listing(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let path = entry.path();
            let m = std::fs::symlink_metadata(&path).expect("stat");
            let rel = path
                .strip_prefix(root)
                .expect("prefix")
                .display()
                .to_string();
            let target = std::fs::read_link(&path)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            let size = if m.is_dir() { 0 } else { m.size() };
            out.push(format!(
                "{rel} {:o} {}:{} {size} {target}",
                m.mode(),
                m.uid(),
                m.gid()
            ));
            if m.is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

// ---- helpers of the container tests ----

/// Imports the busybox and app fixtures as `busybox` and `app`.
pub fn import(root: &Root) {
    let fx = fixtures();
    root.ok(&[
        "import",
        "--tag",
        "busybox",
        fx.join("busybox-oci.tar").to_str().unwrap(),
    ]);
    root.ok(&[
        "import",
        "--tag",
        "app",
        fx.join("app-oci").to_str().unwrap(),
    ]);
}

/// `berth run -d ARGS…`: the new container's id.
pub fn run_detached(root: &Root, args: &[&str]) -> String {
    let mut all = vec!["run", "-d"];
    all.extend_from_slice(args);
    root.ok(&all).trim().to_string()
}

/// (exit code, stdout, stderr)
pub fn run_code(root: &Root, args: &[&str]) -> (i32, String, String) {
    let out = root.run(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `berth ARGS` (space-separated) with a terminal of its own (`script`); its output
/// without carriage returns.
pub fn in_terminal(root: &Root, args: &str) -> String {
    let cmd = format!(
        "{} --socket {} {args}",
        env!("CARGO_BIN_EXE_berth"),
        root.socket().display()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("script (bsdutils)");
    String::from_utf8_lossy(&out.stdout).replace('\r', "")
}

pub fn state(root: &Root, id: &str) -> serde_json::Value {
    serde_json::from_str(&root.ok(&["state", id])).unwrap()
}

pub fn wait_for(what: &str, f: impl FnMut() -> bool) {
    assert!(poll_until(f), "timed out waiting for {what}");
}

/// Polls `f` every 50 ms for up to 20 s; whether it became true.
pub fn poll_until(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

pub fn containers_dir_entries(root: &Root) -> usize {
    std::fs::read_dir(root.path().join("containers"))
        .map(|d| d.count())
        .unwrap_or(0)
}

// ---- helpers of the pod tests ----

/// Writes a pod spec into the test's root; its path.
pub fn write_spec(root: &Root, name: &str, yaml: &str) -> String {
    let path = root.path().join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

/// `berth pod inspect` as JSON.
pub fn pod_json(root: &Root, pod: &str) -> serde_json::Value {
    serde_json::from_str(&root.ok(&["pod", "inspect", pod])).unwrap()
}

/// Id of the current container of slot `name`.
pub fn member(root: &Root, pod: &str, name: &str) -> String {
    pod_json(root, pod)["members"][name]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn pods_dir_entries(root: &Root) -> usize {
    std::fs::read_dir(root.path().join("pods"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The journal so far (`events --until now --json`) through `filter`.
pub fn events_json(root: &Root, filter: &str) -> Vec<serde_json::Value> {
    root.ok(&["events", "--until", "0s", "--json", "--filter", filter])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
