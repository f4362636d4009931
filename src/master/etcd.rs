//! The etcd store (`berth master --etcd-endpoints`): the same keys and records as the
//! embedded store, below a prefix (`/berth` by default), through `etcd-client`.
//!
//! ```text
//! <prefix>/nodes/… jobs/… placements/… identities/…   the store's records (store.rs)
//! <prefix>/leader                  the leader's key: {"name","url","since"}, on its lease
//! <prefix>/masters/<name>          every running master: {"name","url","started"}, on its lease
//! <prefix>/pki/ca.pem ca.key token admin.json   the cluster identity, shared by every master
//! ```
//!
//! A commit is one etcd transaction whose comparisons are the caller's expectations (a
//! key's `mod_revision`; 0 for absent, as etcd compares a missing key) and, on a leader,
//! the fence: the leader key's `mod_revision` is still the one it was elected at. A leader
//! paused past its lease finds its key gone or re-created by another master: its commit
//! fails as [`Fenced`] and changes nothing.
//!
//! etcd bounds a transaction (`--max-txn-ops`, 128 by default; `--max-request-bytes`,
//! 1.5 MiB). A commit larger than that is split: the first part carries the expectations,
//! every part carries the fence, the parts apply in order (a job's record before its
//! placements), except that a run of parts holding only placements is sent up to eight at
//! a time (etcd batches them into fewer raft rounds). A leader lost between two parts
//! leaves some of the writes, each record whole and none before what it depends on; the
//! next leader loads what is there.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, TlsOptions, Txn,
    TxnOp,
};
use futures_util::StreamExt;

use super::store::{Conflict, Entry, Store, Unavailable, Write};

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// `http://HOST:PORT` or `https://…`, one per member.
    pub endpoints: Vec<String>,
    /// Key prefix, no trailing `/`.
    pub prefix: String,
    /// CA that signed the members' certificates (`https` endpoints).
    pub ca: Option<PathBuf>,
    /// Client certificate and key, if etcd asks for one.
    pub cert: Option<PathBuf>,
    /// Its key.
    pub key: Option<PathBuf>,
    /// etcd user (`--etcd-user NAME:PASSWORD`).
    pub user: Option<(String, String)>,
    /// Most writes in one transaction.
    pub max_txn_ops: usize,
}

/// Longest wait for one etcd request: a lost quorum answers nothing, and a master must
/// refuse writes with an error rather than hang.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest payload of one transaction (etcd refuses requests above 1.5 MiB by default).
const MAX_TXN_BYTES: usize = 1 << 20;

/// Keys per page when listing (a page stays far below gRPC's 4 MiB message limit).
const PAGE: i64 = 2000;

impl EtcdOptions {
    /// A client of `endpoints` (dialled lazily, on first use).
    async fn connect_to(&self, endpoints: &[String]) -> Result<Client> {
        let mut o = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        if let Some((user, password)) = &self.user {
            o = o.with_user(user.clone(), password.clone());
        }
        if self.endpoints.iter().any(|e| e.starts_with("https://")) {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.ca {
                let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            if let (Some(c), Some(k)) = (&self.cert, &self.key) {
                let cert = std::fs::read(c).with_context(|| format!("reading {}", c.display()))?;
                let key = std::fs::read(k).with_context(|| format!("reading {}", k.display()))?;
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            o = o.with_tls(tls);
        }
        let client = tokio::time::timeout(REQUEST_TIMEOUT, Client::connect(endpoints, Some(o)))
            .await
            .map_err(|_| unavailable(endpoints, "connecting timed out"))?
            .map_err(|e| unavailable(endpoints, e))?;
        Ok(client)
    }

    /// `<prefix>/<key>`.
    pub fn key(&self, key: &str) -> String {
        format!("{}/{key}", self.prefix)
    }
}

fn unavailable(endpoints: &[String], e: impl std::fmt::Display) -> anyhow::Error {
    Unavailable {
        store: format!("etcd {}", endpoints.join(",")),
        reason: e.to_string(),
    }
    .into()
}

/// A leader's commit after it lost its lease.
#[derive(Debug, thiserror::Error)]
#[error("fenced: {key} is no longer at revision {revision} (another master leads)")]
pub struct Fenced {
    /// The leader key.
    pub key: String,
    /// The revision this master was elected at.
    pub revision: i64,
}

/// A runtime of the store's own: its connections are driven by its thread, never by the
/// master's async workers, which may all be waiting for the state's lock that a commit
/// holds while etcd answers (a deadlock found by the quorum-loss test).
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        // Dropping a runtime inside another one's context panics; this one may go anywhere.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The store on etcd. Its methods block (the cluster state's lock is held across a
/// commit, as with the embedded store): they run on the blocking pool or a plain thread.
pub struct Etcd {
    /// One client per member: a request that one member cannot answer (it is down, or
    /// cut off from the quorum) is asked of the next, as etcd's own Go client does. A
    /// balanced channel over all members kept sending requests to a killed one.
    clients: Vec<Client>,
    /// The member that answered last.
    current: std::sync::atomic::AtomicUsize,
    /// Kept for its thread, which drives the client's connections.
    _rt: OwnRuntime,
    handle: tokio::runtime::Handle,
    options: EtcdOptions,
    /// The leader key and the revision this master was elected at, while it leads.
    fence: Mutex<Option<(String, i64)>>,
    /// Set when a commit failed its fence: the election loop steps down.
    fenced: AtomicBool,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.options.endpoints)
            .field("prefix", &self.options.prefix)
            .finish()
    }
}

impl Etcd {
    /// Connects on a runtime of its own (one thread).
    pub async fn open(options: EtcdOptions) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("berth-etcd")
            .enable_all()
            .build()
            .context("the etcd client's runtime")?;
        let handle = rt.handle().clone();
        let rt = OwnRuntime(Some(rt));
        let o = options.clone();
        let clients = handle
            .spawn(async move {
                let mut clients = Vec::new();
                for e in &o.endpoints {
                    clients.push(o.connect_to(std::slice::from_ref(e)).await?);
                }
                anyhow::Ok(clients)
            })
            .await
            .context("connecting to etcd")??;
        Ok(Self {
            clients,
            current: Default::default(),
            _rt: rt,
            handle,
            options,
            fence: Mutex::new(None),
            fenced: AtomicBool::new(false),
        })
    }

    /// The client of the member that answered last (for one-off requests).
    pub fn client(&self) -> Client {
        let i = self.current.load(Ordering::Relaxed) % self.clients.len().max(1);
        self.clients[i].clone()
    }

    /// `f` on the member that answered last, then on each other one while they fail or
    /// do not answer within a share of [`REQUEST_TIMEOUT`].
    pub async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.clients.len().max(1);
        let each = (REQUEST_TIMEOUT / n as u32).max(Duration::from_millis(500));
        let start = self.current.load(Ordering::Relaxed);
        let mut why = String::from("no endpoint");
        for k in 0..n {
            let i = (start + k) % n;
            let Some(c) = self.clients.get(i) else { break };
            match tokio::time::timeout(each, f(c.clone())).await {
                Ok(Ok(v)) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(v);
                }
                Ok(Err(e)) => why = format!("{}: {e}", self.options.endpoints[i]),
                Err(_) => why = format!("{}: no answer within {each:?}", self.options.endpoints[i]),
            }
        }
        Err(unavailable(
            &self.options.endpoints,
            format!("{what}: no member answered (quorum lost?); last: {why}"),
        ))
    }

    /// The options it was made with.
    pub fn options(&self) -> &EtcdOptions {
        &self.options
    }

    /// Fences every later commit on `key` staying at `revision` (None: no fence).
    pub fn set_fence(&self, fence: Option<(String, i64)>) {
        if let Ok(mut f) = self.fence.lock() {
            *f = fence;
        }
        self.fenced.store(false, Ordering::SeqCst);
    }

    /// Whether a commit failed its fence since the fence was set.
    pub fn was_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    /// [`Etcd::call`], blocking.
    fn run<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        self.handle.block_on(self.call(what, f))
    }

    /// Why a transaction's comparisons failed: the fence, else the first expectation.
    fn why_failed(&self, fence: &Option<(String, i64)>, expect: &[(String, u64)]) -> anyhow::Error {
        if let Some((key, revision)) = fence {
            let now = self
                .run("reading the leader key", |c| async move {
                    c.kv_client().get(key.as_str(), None).await
                })
                .map(|r| r.kvs().first().map(|k| k.mod_revision()).unwrap_or(0));
            // Unreadable (etcd slow or cut off): unknown, not fenced. The commit changed
            // nothing either way, every later one still carries the fence, and the election
            // loop steps down if the key really moved; taking a slow read for a lost
            // leadership stepped a leader down under load for nothing.
            let now = match now {
                Ok(now) => now,
                Err(e) => return e,
            };
            if now != *revision {
                self.fenced.store(true, Ordering::SeqCst);
                return Fenced {
                    key: key.clone(),
                    revision: *revision,
                }
                .into();
            }
        }
        for (key, expected) in expect {
            let full = self.options.key(key);
            let found = self
                .run("reading a key", |c| {
                    let full = full.clone();
                    async move { c.kv_client().get(full, None).await }
                })
                .map(|r| r.kvs().first().map(|k| k.mod_revision()).unwrap_or(0))
                .unwrap_or(-1);
            if found != *expected as i64 {
                return Conflict {
                    key: key.clone(),
                    found: found.max(0) as u64,
                    expected: *expected,
                }
                .into();
            }
        }
        anyhow::anyhow!("an etcd transaction failed its comparisons")
    }
}

/// The writes of one commit cut to etcd's limits.
fn parts(writes: Vec<Write>, max_ops: usize) -> Vec<Vec<Write>> {
    let mut out: Vec<Vec<Write>> = vec![Vec::new()];
    let mut bytes = 0;
    for w in writes {
        let size = match &w {
            Write::Put(k, v) => k.len() + v.len(),
            Write::Delete(k) => k.len(),
        };
        let last = out.last().map_or(0, Vec::len);
        if last > 0 && (last >= max_ops.max(1) || bytes + size > MAX_TXN_BYTES) {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(p) = out.last_mut() {
            p.push(w);
        }
    }
    out
}

/// Transactions of one commit in flight at once (placements only, see [`in_flight_groups`]).
const PIPELINE: usize = 8;

/// The parts of a commit (numbered), grouped into what is sent together: the first part
/// alone (it carries the expectations), then each part in order, except that consecutive
/// parts of placements only go together, up to [`PIPELINE`] at a time. Every such part is
/// fenced, and each placement is a whole record of an instance whose job record an earlier
/// part (or commit) holds, so any of them landing without the others is a state the next
/// leader loads; the records placements depend on still land before them. Waiting for
/// each of 98 transactions of a 100k-placement commit in turn (a raft round and WAL fsyncs
/// each) was what held etcd to a third of the embedded store's placements/s.
fn in_flight_groups(parts: Vec<Vec<Write>>) -> Vec<Vec<(usize, Vec<Write>)>> {
    let placements_only = |part: &[Write]| {
        part.iter()
            .all(|w| matches!(w, Write::Put(k, _) if k.starts_with("placements/")))
    };
    let mut groups: Vec<Vec<(usize, Vec<Write>)>> = Vec::new();
    let mut open = false;
    for (n, part) in parts.into_iter().enumerate() {
        let together = n > 0 && placements_only(&part);
        match groups.last_mut() {
            Some(g) if open && together => g.push((n, part)),
            _ => groups.push(vec![(n, part)]),
        }
        open = together;
    }
    groups
}

/// The first key after every key that starts with `prefix` (etcd's range end of a prefix).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Store for Etcd {
    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        let full = self.options.key(prefix);
        let strip = self.options.prefix.len() + 1;
        let end = prefix_end(&full);
        let mut start = full.clone().into_bytes();
        let mut at = 0;
        let mut out = Vec::new();
        loop {
            let mut o = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if at > 0 {
                // Every page from the first page's snapshot.
                o = o.with_revision(at);
            }
            let r = self.run("listing", |c| {
                let (from, o) = (start.clone(), o.clone());
                async move {
                    c.kv_client()
                        .max_decoding_message_size(64 << 20)
                        .get(from, Some(o))
                        .await
                }
            })?;
            if at == 0 {
                at = r.header().map_or(0, |h| h.revision());
            }
            for k in r.kvs() {
                out.push(Entry {
                    key: String::from_utf8_lossy(&k.key()[strip.min(k.key().len())..]).into_owned(),
                    value: k.value().to_vec(),
                    revision: k.mod_revision().max(0) as u64,
                });
            }
            match r.kvs().last() {
                Some(last) if r.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok(out)
    }

    fn commit(&self, expect: &[(String, u64)], writes: Vec<Write>) -> Result<u64> {
        let fence = self.fence.lock().map(|f| f.clone()).unwrap_or(None);
        let fence_cmp = fence
            .as_ref()
            .map(|(k, r)| Compare::mod_revision(k.as_str(), CompareOp::Equal, *r));
        let mut revision = 0;
        for group in in_flight_groups(parts(writes, self.options.max_txn_ops)) {
            let first = group.first().map_or(1, |(n, _)| *n);
            let txns: Vec<Txn> = group
                .into_iter()
                .map(|(n, part)| {
                    let mut when: Vec<Compare> = fence_cmp.iter().cloned().collect();
                    if n == 0 {
                        when.extend(expect.iter().map(|(k, r)| {
                            Compare::mod_revision(self.options.key(k), CompareOp::Equal, *r as i64)
                        }));
                    }
                    let ops: Vec<TxnOp> = part
                        .into_iter()
                        .map(|w| match w {
                            Write::Put(k, v) => TxnOp::put(self.options.key(&k), v, None),
                            Write::Delete(k) => TxnOp::delete(self.options.key(&k), None),
                        })
                        .collect();
                    Txn::new().when(when).and_then(ops)
                })
                .collect();
            let answers = self.handle.block_on(
                futures_util::stream::iter(txns.into_iter().map(|txn| {
                    self.call("committing", move |c| {
                        let txn = txn.clone();
                        async move { c.kv_client().txn(txn).await }
                    })
                }))
                .buffer_unordered(PIPELINE)
                .collect::<Vec<_>>(),
            );
            for r in answers {
                let r = r?;
                if !r.succeeded() {
                    return Err(self.why_failed(&fence, if first == 0 { expect } else { &[] }));
                }
                revision = revision.max(r.header().map_or(0, |h| h.revision()).max(0) as u64);
            }
        }
        Ok(revision)
    }

    fn revision(&self) -> Result<u64> {
        let key = self.options.key("leader");
        let r = self.run("reading the revision", |c| {
            let key = key.clone();
            async move {
                c.kv_client()
                    .get(key, Some(GetOptions::new().with_count_only()))
                    .await
            }
        })?;
        Ok(r.header().map_or(0, |h| h.revision()).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn large_commits_split_at_the_limits_in_order() {
        let w: Vec<Write> = (0..300)
            .map(|i| Write::Put(format!("k{i}"), vec![0; 10]))
            .collect();
        let p = parts(w, 128);
        assert_eq!(p.iter().map(Vec::len).collect::<Vec<_>>(), [128, 128, 44]);
        let big: Vec<Write> = (0..3)
            .map(|i| Write::Put(format!("k{i}"), vec![0; 600 << 10]))
            .collect();
        assert_eq!(parts(big, 128).len(), 3);
        assert_eq!(parts(Vec::new(), 128).len(), 1);
        assert_eq!(prefix_end("/berth/"), b"/berth0");
    }

    #[test]
    fn only_runs_of_placements_after_the_first_part_go_together() {
        let put = |k: &str| Write::Put(k.to_string(), Vec::new());
        let parts = vec![
            vec![put("placements/a/000000")],
            vec![put("placements/a/000001")],
            vec![put("placements/a/000002")],
            vec![put("jobs/b"), put("placements/b/000000")],
            vec![put("placements/b/000001")],
            vec![Write::Delete("placements/b/000002".into())],
            vec![put("placements/b/000003")],
        ];
        let groups: Vec<Vec<usize>> = in_flight_groups(parts)
            .into_iter()
            .map(|g| g.into_iter().map(|(n, _)| n).collect())
            .collect();
        assert_eq!(
            groups,
            [vec![0], vec![1, 2], vec![3], vec![4], vec![5], vec![6]]
        );
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap()
    }

    /// A one-member etcd of the test's own, killed at drop.
    struct OneEtcd(std::process::Child, #[allow(dead_code)] tempfile::TempDir);

    impl Drop for OneEtcd {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// The fence, against a real etcd: a leader whose key was taken over can write nothing,
    /// not even the later parts of a split commit, and a placement the new leader made stays.
    #[test]
    fn a_deposed_leaders_commit_is_fenced_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (c, p) = (free_port(), free_port());
        let child = std::process::Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(dir.path().join("d"))
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{c}")])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{c}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{p}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{p}"),
            ])
            .args(["--initial-cluster", &format!("t=http://127.0.0.1:{p}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("etcd (Debian etcd-server; scripts/setup.sh installs it)");
        let _etcd = OneEtcd(child, dir);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let o = EtcdOptions {
            endpoints: vec![format!("http://127.0.0.1:{c}")],
            prefix: "/t".into(),
            ca: None,
            cert: None,
            key: None,
            user: None,
            max_txn_ops: 2,
        };
        let open = |o: &EtcdOptions| -> Etcd {
            let o = o.clone();
            rt.block_on(async move {
                for _ in 0..200 {
                    if let Ok(e) = Etcd::open(o.clone()).await {
                        if e.client().put("/t/probe", "x", None).await.is_ok() {
                            return e;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                panic!("etcd did not start");
            })
        };
        let old = open(&o);
        let client = old.client();
        let leader = |value: &str| -> i64 {
            let mut cl = client.clone();
            rt.block_on(async {
                cl.delete("/t/leader", None).await.unwrap();
                let r = cl.put("/t/leader", value, None).await.unwrap();
                r.header().unwrap().revision()
            })
        };
        old.set_fence(Some(("/t/leader".into(), leader("old"))));
        old.commit(
            &[],
            vec![Write::Put("placements/j/000000".into(), b"old".to_vec())],
        )
        .unwrap();
        // Another master is elected; it places the instance again.
        let new = open(&o);
        new.set_fence(Some(("/t/leader".into(), leader("new"))));
        new.commit(
            &[],
            vec![Write::Put("placements/j/000000".into(), b"new".to_vec())],
        )
        .unwrap();
        // The old leader wakes and writes three keys (two transactions at 2 ops each).
        let e = old
            .commit(
                &[],
                vec![
                    Write::Put("jobs/x".into(), b"stale".to_vec()),
                    Write::Put("placements/j/000000".into(), b"stale".to_vec()),
                    Write::Put("placements/x/000000".into(), b"stale".to_vec()),
                ],
            )
            .unwrap_err();
        assert!(e.downcast_ref::<Fenced>().is_some(), "{e:#}");
        assert!(old.was_fenced());
        let placements = new.list("placements/").unwrap();
        assert_eq!(placements.len(), 1);
        assert_eq!(placements[0].value, b"new");
        assert!(new.list("jobs/").unwrap().is_empty());
        // Expectations are compare-and-swap, as in the embedded store.
        let rev = placements[0].revision;
        let e = new
            .commit(
                &[("placements/j/000000".into(), rev - 1)],
                vec![Write::Delete("placements/j/000000".into())],
            )
            .unwrap_err();
        assert!(e.downcast_ref::<Conflict>().is_some(), "{e:#}");
        new.commit(
            &[("placements/j/000000".into(), rev)],
            vec![Write::Delete("placements/j/000000".into())],
        )
        .unwrap();
        assert!(new.list("placements/").unwrap().is_empty());
        // Parts of placements only go together (9 writes at 2 per transaction: one part,
        // then four in flight at once): every one lands, the revision returned is the last.
        let placed: Vec<Write> = (0..9)
            .map(|i| Write::Put(format!("placements/p/{i:06}"), b"{}".to_vec()))
            .collect();
        let rev = new.commit(&[], placed).unwrap();
        assert_eq!(new.list("placements/p/").unwrap().len(), 9);
        assert_eq!(rev, new.revision().unwrap());
        // Paged listing: more keys than a page.
        let many: Vec<Write> = (0..(PAGE as usize + 5))
            .map(|i| Write::Put(format!("nodes/n{i:05}"), b"{}".to_vec()))
            .collect();
        let big = open(&EtcdOptions {
            max_txn_ops: 128,
            ..o.clone()
        });
        big.commit(&[], many).unwrap();
        let nodes = big.list("nodes/").unwrap();
        assert_eq!(nodes.len(), PAGE as usize + 5);
        assert_eq!(nodes[0].key, "nodes/n00000");
        drop((old, new, big));
        drop(rt);
    }
}
