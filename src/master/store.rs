//! The master's store: keys to JSON values with a revision, behind a trait shaped for a
//! distributed engine (etcd, next): commits are compare-and-swap (each expected key at the
//! revision it was read at, 0 for absent), and the store's revision only grows, so a
//! generation taken from it is never reused, across restarts too. A leader's writes will be
//! fenced the same way (its leader key's revision among the expectations).
//!
//! The embedded store is `redb` (`<root>/cluster.redb`): one table `kv` (key → 8-byte
//! little-endian revision + the JSON value) and one table `meta` (`revision`). Every commit
//! is one redb write transaction, fsynced before it returns (redb's `Immediate`).
//!
//! Keys: `nodes/<name>` (a registration), `identities/<fingerprint>` (who a certificate
//! is), `jobs/<name>` (a job), `placements/<job>/<index>` (an instance's node and
//! incarnation). Values are versioned JSON records (`"version": 1`).

use std::path::Path;

use anyhow::{Context, Result};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// One key's value and the revision that wrote it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Key.
    pub key: String,
    /// JSON value.
    pub value: Vec<u8>,
    /// Revision of its last write.
    pub revision: u64,
}

/// One write of a commit.
#[derive(Debug, Clone)]
pub enum Write {
    /// Sets a key.
    Put(String, Vec<u8>),
    /// Removes a key (absent: nothing).
    Delete(String),
}

/// A commit whose expectation no longer held.
#[derive(Debug, thiserror::Error)]
#[error("{key} changed (revision {found}, expected {expected})")]
pub struct Conflict {
    /// The key.
    pub key: String,
    /// Its revision now.
    pub found: u64,
    /// What the caller read.
    pub expected: u64,
}

/// The store did not answer (etcd without quorum, unreachable): writes are refused with
/// this, never half-done on the master's side.
#[derive(Debug, thiserror::Error)]
#[error("the store ({store}) is unavailable: {reason}")]
pub struct Unavailable {
    /// Which store.
    pub store: String,
    /// Why.
    pub reason: String,
}

/// The prefixes of the cluster's records: what `berth master migrate` copies.
pub const DATA_PREFIXES: [&str; 4] = ["identities/", "nodes/", "jobs/", "placements/"];

/// What the master needs of a store.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Every entry whose key starts with `prefix`, in key order.
    fn list(&self, prefix: &str) -> Result<Vec<Entry>>;
    /// Applies `writes` at once if every `(key, revision)` of `expect` holds (0: absent);
    /// returns the new revision. A failed expectation is a [`Conflict`] in the error.
    fn commit(&self, expect: &[(String, u64)], writes: Vec<Write>) -> Result<u64>;
    /// The latest revision.
    fn revision(&self) -> Result<u64>;
}

/// The embedded store's page cache.
const STORE_CACHE: usize = 16 << 20;

/// The embedded store.
#[derive(Debug)]
pub struct Embedded {
    db: redb::Database,
}

impl Embedded {
    /// Opens (or creates) `path`.
    pub fn open(path: &Path) -> Result<Self> {
        // redb caches up to 1 GiB of pages by default; the master reads the store only when
        // it starts (the state lives in memory), so a small cache serves its commits.
        let db = redb::Builder::new()
            .set_cache_size(STORE_CACHE)
            .create(path)
            .with_context(|| format!("opening the store {}", path.display()))?;
        let tx = db.begin_write()?;
        tx.open_table(KV)?;
        tx.open_table(META)?;
        tx.commit()?;
        Ok(Self { db })
    }
}

fn split(raw: &[u8]) -> (u64, &[u8]) {
    let (rev, value) = raw.split_at(8.min(raw.len()));
    let mut b = [0u8; 8];
    b[..rev.len()].copy_from_slice(rev);
    (u64::from_le_bytes(b), value)
}

impl Store for Embedded {
    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        let tx = self.db.begin_read()?;
        let kv = tx.open_table(KV)?;
        let mut out = Vec::new();
        for item in kv.range(prefix..)? {
            let (k, v) = item?;
            if !k.value().starts_with(prefix) {
                break;
            }
            let (revision, value) = split(v.value());
            out.push(Entry {
                key: k.value().to_string(),
                value: value.to_vec(),
                revision,
            });
        }
        Ok(out)
    }

    fn commit(&self, expect: &[(String, u64)], writes: Vec<Write>) -> Result<u64> {
        let tx = self.db.begin_write()?;
        let revision = {
            let mut meta = tx.open_table(META)?;
            let mut kv = tx.open_table(KV)?;
            for (key, expected) in expect {
                let found = kv
                    .get(key.as_str())?
                    .map(|v| split(v.value()).0)
                    .unwrap_or(0);
                if found != *expected {
                    return Err(Conflict {
                        key: key.clone(),
                        found,
                        expected: *expected,
                    }
                    .into());
                }
            }
            let revision = meta.get("revision")?.map(|v| v.value()).unwrap_or(0) + 1;
            for w in writes {
                match w {
                    Write::Put(key, value) => {
                        let mut raw = revision.to_le_bytes().to_vec();
                        raw.extend_from_slice(&value);
                        kv.insert(key.as_str(), raw.as_slice())?;
                    }
                    Write::Delete(key) => {
                        kv.remove(key.as_str())?;
                    }
                }
            }
            meta.insert("revision", revision)?;
            revision
        };
        tx.commit()?;
        Ok(revision)
    }

    fn revision(&self) -> Result<u64> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        let revision = meta.get("revision")?.map(|v| v.value()).unwrap_or(0);
        Ok(revision)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn commits_compare_and_swap_and_revisions_only_grow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let s = Embedded::open(&path).unwrap();
        let r1 = s
            .commit(
                &[("jobs/a".into(), 0)],
                vec![Write::Put("jobs/a".into(), b"1".to_vec())],
            )
            .unwrap();
        assert_eq!(r1, 1);
        // A second create of the same key fails: it is no longer absent.
        let e = s.commit(
            &[("jobs/a".into(), 0)],
            vec![Write::Put("jobs/a".into(), b"2".to_vec())],
        );
        assert!(e.unwrap_err().downcast_ref::<Conflict>().is_some());
        let r2 = s
            .commit(
                &[("jobs/a".into(), r1)],
                vec![
                    Write::Put("jobs/a".into(), b"2".to_vec()),
                    Write::Put("jobs/b".into(), b"3".to_vec()),
                ],
            )
            .unwrap();
        assert_eq!(r2, 2);
        s.commit(
            &[],
            vec![
                Write::Delete("jobs/b".into()),
                Write::Put("nodes/x".into(), b"4".to_vec()),
            ],
        )
        .unwrap();
        drop(s);
        let s = Embedded::open(&path).unwrap();
        let jobs = s.list("jobs/").unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].value, b"2");
        assert_eq!(jobs[0].revision, 2);
        assert_eq!(s.revision().unwrap(), 3);
    }
}
