//! A 3-member etcd cluster of this test's own: loopback ports, data dirs in a temp dir,
//! every member killed (by pid) and its data removed at drop.

use std::process::{Child, Command, Stdio};

use super::net::free_port;
use super::poll_until;

pub struct Member {
    pub name: String,
    pub client: u16,
    pub peer: u16,
    child: Option<Child>,
}

pub struct Etcd {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
    token: String,
}

impl Etcd {
    /// Starts `n` members and waits until the cluster answers a write.
    pub fn start(n: usize) -> Self {
        super::require_root();
        let dir = tempfile::Builder::new()
            .prefix("berth-test-etcd-")
            .tempdir()
            .expect("temp dir");
        let members = (1..=n)
            .map(|i| Member {
                name: format!("e{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let token = dir
            .path()
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut e = Self {
            dir,
            members,
            token,
        };
        for i in 0..n {
            e.run(i);
        }
        e.wait_writable();
        e
    }

    /// `http://127.0.0.1:PORT,…` of every member.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts member `i` (again: its data dir is kept, so it rejoins).
    pub fn run(&mut self, i: usize) {
        let cluster: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect();
        let m = &self.members[i];
        let data = self.dir.path().join(&m.name);
        let state = if data.exists() { "existing" } else { "new" };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", m.name)))
            .expect("etcd log");
        let child = Command::new("etcd")
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", m.client),
            ])
            .args([
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{}", m.client),
            ])
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
            ])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
            ])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            // Fast elections on loopback (the defaults are for networks: 100 ms / 1 s).
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd (Debian etcd-server; scripts/setup.sh installs it)");
        self.members[i].child = Some(child);
    }

    /// Kills member `i` (SIGKILL, by pid) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `etcdctl put` through every endpoint works (a quorum).
    pub fn writable(&self) -> bool {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoints(), "--command-timeout", "2s"])
            .args(["put", "/berth-test/probe", "x"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    pub fn wait_writable(&self) {
        assert!(
            poll_until(|| self.writable()),
            "etcd did not form a cluster: {}",
            self.logs()
        );
    }

    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let text = std::fs::read_to_string(self.dir.path().join(format!("{}.log", m.name)))
                    .unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(10).collect();
                format!(
                    "== {}\n{}",
                    m.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
