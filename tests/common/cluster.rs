//! A master of this test's own (data root, loopback port) and agents joined to it; at drop
//! every job is removed, the agents' assigned pods are waited out, and the master stopped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{poll_until, Root};

/// What `master init` printed.
#[derive(Debug, Clone)]
pub struct Join {
    pub url: String,
    pub token: String,
    pub ca_hash: String,
}

pub struct Master {
    pub dir: tempfile::TempDir,
    pub listen: String,
    pub join: Join,
    pub child: Option<Child>,
    args: Vec<String>,
}

/// A free loopback port (bound, then released for the master to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn berth() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.env_remove("BERTH_CLUSTER").env_remove("BERTH_ROOT");
    c
}

impl Master {
    /// `master init` and `master` with `args` (e.g. a short `--node-timeout`).
    pub fn start(args: &[&str]) -> Self {
        Self::start_with(&[], args)
    }

    /// `master init INIT…` and `master ARGS…` (with etcd: the same `--etcd-endpoints` in both).
    pub fn start_with(init: &[&str], args: &[&str]) -> Self {
        let m = Self::init_only(init, args);
        let mut m = m;
        m.run();
        m
    }

    /// `master init INIT…`; `run` starts it with `args`.
    pub fn init_only(init: &[&str], args: &[&str]) -> Self {
        super::require_root();
        let dir = tempfile::Builder::new()
            .prefix("berth-test-master-")
            .tempdir()
            .expect("temp dir");
        let listen = format!("127.0.0.1:{}", free_port());
        let out = berth()
            .arg("--root")
            .arg(dir.path())
            .args(["master", "init", "--listen", &listen])
            .args(init)
            .output()
            .expect("master init");
        assert!(
            out.status.success(),
            "master init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text
            .lines()
            .find(|l| l.contains("--join-token"))
            .unwrap_or_else(|| panic!("no join line in {text}"));
        let word = |flag: &str| -> String {
            let mut it = line.split_whitespace();
            it.find(|w| *w == flag);
            it.next().unwrap_or_default().to_string()
        };
        let join = Join {
            url: word("--master"),
            token: word("--join-token"),
            ca_hash: word("--ca-cert-hash"),
        };
        Self {
            dir,
            listen,
            join,
            child: None,
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The flags of the next `run`.
    pub fn set_args(&mut self, args: &[&str]) {
        self.args = args.iter().map(|s| s.to_string()).collect();
    }

    /// Serves another root from the next `run` (the old one is removed).
    pub fn move_root(&mut self, dir: tempfile::TempDir) {
        self.dir = dir;
    }

    /// `https://…` of this master.
    pub fn url(&self) -> String {
        format!("https://{}", self.listen)
    }

    /// The pid of the running master.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Sends `signal` without reaping (SIGSTOP, SIGCONT).
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// Starts the master process and waits until it answers the admin.
    pub fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join("master.log"))
            .expect("master log");
        let child = berth()
            .arg("--root")
            .arg(self.path())
            .args(["master", "--listen", &self.listen])
            .args(&self.args)
            .env("BERTH_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting the master");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.cluster(&["nodes", "--json"]).status.success() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("the master exited ({status}): {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the master did not answer: {}", self.log());
    }

    /// Stops the master with `signal` and reaps it.
    pub fn stop(&mut self, signal: i32) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
            let _ = child.wait();
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn admin(&self) -> PathBuf {
        self.path().join("admin.json")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("master.log")).unwrap_or_default()
    }

    /// `berth --config admin.json cluster ARGS…`.
    pub fn cluster(&self, args: &[&str]) -> Output {
        berth()
            .arg("--config")
            .arg(self.admin())
            .arg("cluster")
            .args(args)
            .output()
            .expect("berth cluster")
    }

    /// `cluster ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cluster(args);
        assert!(
            out.status.success(),
            "cluster {args:?}: {}\nmaster log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `cluster ARGS`, which must fail; its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cluster(args);
        assert!(!out.status.success(), "cluster {args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).expect("json")
    }

    /// The agent flags that join this cluster as `name`.
    pub fn agent_args(&self, name: &str) -> Vec<String> {
        vec![
            "--master".into(),
            self.join.url.clone(),
            "--join-token".into(),
            self.join.token.clone(),
            "--ca-cert-hash".into(),
            self.join.ca_hash.clone(),
            "--node-name".into(),
            name.into(),
        ]
    }

    /// An agent joined as `name`, with `extra` flags, the fixtures imported, registered.
    pub fn agent(&self, name: &str, extra: &[&str]) -> Root {
        let mut args = self.agent_args(name);
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let root = Root::with_agent_args(&refs);
        super::import(&root);
        assert!(
            poll_until(|| self.node_state(name).as_deref() == Some("ready")),
            "{name} did not register: {}",
            root.agent_log()
        );
        root
    }

    /// A node's state as the master shows it.
    pub fn node_state(&self, name: &str) -> Option<String> {
        let out = self.cluster(&["nodes", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?
            .iter()
            .find(|n| n["registration"]["node_name"] == name)
            .and_then(|n| n["state"].as_str().map(String::from))
    }

    /// Removes every job and waits until `agents` run no assigned pod: cleanup before the
    /// agents' own (a member would otherwise put back what the agent's cleanup removes).
    pub fn clear(&mut self, agents: &[&Root]) {
        if self.child.is_none() {
            self.run();
        }
        let jobs: serde_json::Value =
            serde_json::from_slice(&self.cluster(&["ls", "--json"]).stdout).unwrap_or_default();
        for j in jobs.as_array().into_iter().flatten() {
            if let Some(name) = j["name"].as_str() {
                let _ = self.cluster(&["rm", name]);
            }
        }
        for a in agents {
            if a.agent.is_none() {
                continue;
            }
            poll_until(|| assigned_pods(a).is_empty());
        }
    }
}

/// Names of an agent's pods that carry an instance label.
pub fn assigned_pods(root: &Root) -> Vec<String> {
    let out = root.run(&["pod", "ls", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["spec"]["labels"]["berth.io/instance"].is_string())
        .filter_map(|p| p["name"].as_str().map(String::from))
        .collect()
}

impl Drop for Master {
    fn drop(&mut self) {
        self.stop(libc::SIGTERM);
    }
}
