//! `berth master migrate`: copies the cluster's records between the embedded store and
//! etcd, both ways, with the identity, so a cluster grows past one master (or back)
//! without being rebuilt: agents keep their certificates and pods, and report to the
//! master(s) on the new store as after a master restart.
//!
//! The source must be quiet (the embedded store is locked by a running master; on etcd no
//! leader key may exist) and the target must hold no records: a copy never merges.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use berth_api::cluster::AdminConfig;
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};

use super::etcd::{Etcd, EtcdOptions};
use super::pki::{self, Paths, Shared};
use super::store::{Embedded, Store, Write, DATA_PREFIXES};

const PKI_FILES: [&str; 4] = ["ca.pem", "ca.key", "token", "admin.json"];

/// The identity in etcd, if a master put it there.
pub async fn download_identity(client: &Client, o: &EtcdOptions) -> Result<Option<Shared>> {
    let mut client = client.clone();
    let r = client
        .get(o.key("pki/"), Some(GetOptions::new().with_prefix()))
        .await
        .context("reading the cluster identity from etcd")?;
    let get = |name: &str| {
        r.kvs()
            .iter()
            .find(|k| k.key() == o.key(&format!("pki/{name}")).as_bytes())
            .map(|k| String::from_utf8_lossy(k.value()).into_owned())
    };
    let (Some(ca_pem), Some(ca_key_pem), Some(token), Some(admin)) = (
        get("ca.pem"),
        get("ca.key"),
        get("token"),
        get("admin.json"),
    ) else {
        return Ok(None);
    };
    let admin: AdminConfig =
        serde_json::from_str(&admin).context("the admin credential in etcd")?;
    Ok(Some(Shared {
        ca_pem,
        ca_key_pem,
        token,
        admin,
    }))
}

/// Puts `root`'s identity in etcd, unless one is there already (two first inits at once:
/// one wins, the other is told).
pub async fn upload_identity(client: &Client, o: &EtcdOptions, root: &Path) -> Result<()> {
    let paths = Paths::new(root);
    let read = |p: std::path::PathBuf| {
        std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
    };
    let values = [
        read(paths.ca())?,
        read(paths.ca_key())?,
        read(paths.token())?,
        read(paths.admin())?,
    ];
    let ops: Vec<TxnOp> = PKI_FILES
        .iter()
        .zip(values)
        .map(|(name, v)| TxnOp::put(o.key(&format!("pki/{name}")), v, None))
        .collect();
    let txn = Txn::new()
        .when(vec![Compare::create_revision(
            o.key("pki/ca.pem"),
            CompareOp::Equal,
            0,
        )])
        .and_then(ops);
    let r = client
        .clone()
        .txn(txn)
        .await
        .context("writing the identity to etcd")?;
    if !r.succeeded() {
        bail!(
            "another master initialised the cluster under {} meanwhile: remove {} and run init again",
            o.prefix,
            root.display()
        );
    }
    Ok(())
}

/// After another master's init: the admin credential in etcd names this master too, so the
/// next master's `admin.json` lists them all.
pub async fn share_admin_urls(client: &Client, o: &EtcdOptions, root: &Path) -> Result<()> {
    let here: AdminConfig = serde_json::from_slice(
        &std::fs::read(Paths::new(root).admin()).context("reading admin.json")?,
    )?;
    let key = o.key("pki/admin.json");
    let mut c = client.clone();
    let r = c.get(key.as_str(), None).await?;
    let Some(kv) = r.kvs().first() else {
        return Ok(());
    };
    let mut there: AdminConfig = serde_json::from_slice(kv.value())?;
    let mut urls: Vec<String> = there.master.split(',').map(str::to_string).collect();
    for u in here.master.split(',') {
        if !urls.iter().any(|x| x == u) {
            urls.push(u.to_string());
        }
    }
    there.master = urls.join(",");
    // Compare-and-swap: two inits at once each add their own URL.
    let txn = Txn::new()
        .when(vec![Compare::mod_revision(
            key.as_str(),
            CompareOp::Equal,
            kv.mod_revision(),
        )])
        .and_then(vec![TxnOp::put(
            key.as_str(),
            serde_json::to_vec_pretty(&there)?,
            None,
        )]);
    if !c.txn(txn).await?.succeeded() {
        tracing::warn!(
            "the shared admin credential changed meanwhile; its URL list is left as it is"
        );
    }
    Ok(())
}

/// Which way `migrate` copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Embedded → etcd.
    ToEtcd,
    /// etcd → embedded.
    FromEtcd,
}

/// Copies every record (and the identity) from one store to the other; returns how many.
pub async fn migrate(root: &Path, o: &EtcdOptions, way: Direction, listen: &str) -> Result<usize> {
    let etcd = Arc::new(Etcd::open(o.clone()).await?);
    let client = etcd.client();
    let path = super::store_path(root);
    match way {
        Direction::ToEtcd => {
            if !Paths::new(root).ca().exists() {
                bail!("{} holds no cluster (no pki/ca.pem)", root.display());
            }
            if let Some(there) = download_identity(&client, o).await? {
                let here = std::fs::read_to_string(Paths::new(root).ca())?;
                if there.ca_pem != here {
                    bail!("etcd under {} holds another cluster's identity", o.prefix);
                }
            } else {
                upload_identity(&client, o, root).await?;
            }
            let from = Embedded::open(&path)
                .context("opening the embedded store (stop the master that uses it first)")?;
            let to = etcd.clone();
            tokio::task::spawn_blocking(move || copy(&from, to.as_ref(), "etcd")).await?
        }
        Direction::FromEtcd => {
            let mut kv = client.clone();
            let leader = kv.get(o.key("leader"), None).await?;
            if !leader.kvs().is_empty() {
                bail!(
                    "a master leads on etcd ({}): stop every master first",
                    String::from_utf8_lossy(leader.kvs()[0].value())
                );
            }
            let Some(shared) = download_identity(&client, o).await? else {
                bail!("etcd under {} holds no cluster identity", o.prefix);
            };
            let paths = Paths::new(root);
            if paths.ca().exists() {
                if std::fs::read_to_string(paths.ca())? != shared.ca_pem {
                    bail!("{} holds another cluster's identity", root.display());
                }
            } else {
                pki::init(root, listen, &[], Some(shared))?;
            }
            let to = Embedded::open(&path)?;
            let from = etcd.clone();
            tokio::task::spawn_blocking(move || copy(from.as_ref(), &to, "the embedded store"))
                .await?
        }
    }
}

/// Blocks.
fn copy(from: &dyn Store, to: &dyn Store, target: &str) -> Result<usize> {
    for p in DATA_PREFIXES {
        if !to.list(p)?.is_empty() {
            bail!("{target} holds cluster records already ({p}…): a copy never merges");
        }
    }
    let mut writes = Vec::new();
    for p in DATA_PREFIXES {
        writes.extend(
            from.list(p)?
                .into_iter()
                .map(|e| Write::Put(e.key, e.value)),
        );
    }
    let n = writes.len();
    if n > 0 {
        to.commit(&[], writes)?;
    }
    Ok(n)
}
