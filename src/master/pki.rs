//! The cluster's identity, made by `berth master init` (rcgen, ECDSA P-256):
//!
//! ```text
//! <root>/pki/ca.pem, ca.key          the cluster CA (10 years)
//! <root>/pki/master.pem, master.key  the master's server certificate (2 years; SANs: the
//!                                    listen address, localhost, 127.0.0.1, the host name,
//!                                    each --san)
//! <root>/join-token                  the token agents join with
//! <root>/admin.json                  master URL, CA, the admin client certificate and key
//! ```
//!
//! Keys and the token are mode 0600, every file written atomically. Node certificates
//! (CN `node:<name>`) are issued at join; the master knows every certificate it issued by
//! its fingerprint (the store's `identities/`), so a request is authorised by a lookup, not
//! by parsing the certificate's names.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use berth_api::cluster::AdminConfig;
use chrono::Datelike;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Files of the identity below the master's root.
#[derive(Debug, Clone)]
pub struct Paths {
    root: PathBuf,
}

impl Paths {
    /// Below `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }
    fn pki(&self, name: &str) -> PathBuf {
        self.root.join("pki").join(name)
    }
    /// The CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.pki("ca.pem")
    }
    /// The CA's key.
    pub fn ca_key(&self) -> PathBuf {
        self.pki("ca.key")
    }
    /// The master's certificate.
    pub fn cert(&self) -> PathBuf {
        self.pki("master.pem")
    }
    /// Its key.
    pub fn key(&self) -> PathBuf {
        self.pki("master.key")
    }
    /// The join token.
    pub fn token(&self) -> PathBuf {
        self.root.join("join-token")
    }
    /// The admin's config.
    pub fn admin(&self) -> PathBuf {
        self.root.join("admin.json")
    }
}

/// What `init` made, for its printout and the store.
#[derive(Debug)]
pub struct Initialised {
    /// `https://…`.
    pub url: String,
    /// The token.
    pub token: String,
    /// `sha256:…` of the CA.
    pub ca_hash: String,
    /// Fingerprint of the admin certificate.
    pub admin_fingerprint: String,
}

/// Writes `bytes` to `path` atomically with `mode`.
pub fn write_secret(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    berth_fsutil::atomic::write_atomic(path, bytes, mode)
        .with_context(|| format!("writing {}", path.display()))
}

fn validity(params: &mut CertificateParams, years: i32) {
    let now = chrono::Utc::now() - chrono::Duration::days(1);
    let (y, m, d) = (now.year(), now.month() as u8, now.day().min(28) as u8);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    params.not_after = rcgen::date_time_ymd(y + years, m, d);
}

/// The CA's parameters: the same every time, so a loaded CA key issues certificates whose
/// issuer is the CA certificate's subject.
fn ca_params() -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name
        .push(DnType::CommonName, "berth cluster CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

/// The CA, loaded to issue certificates.
#[derive(Debug)]
pub struct Authority {
    params: CertificateParams,
    key: KeyPair,
}

impl Authority {
    /// Loads the CA key from `paths`.
    pub fn load(paths: &Paths) -> Result<Self> {
        let pem = std::fs::read_to_string(paths.ca_key())
            .with_context(|| format!("reading {}", paths.ca_key().display()))?;
        Ok(Self {
            params: ca_params()?,
            key: KeyPair::from_pem(&pem).context("the CA key")?,
        })
    }

    /// A client certificate and its key (PEM) for `common_name`.
    pub fn issue_client(&self, common_name: &str) -> Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, common_name);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut p, 2);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = p.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// A cluster identity another master made (from etcd): the CA with its key, the token and
/// the admin credential.
#[derive(Debug, Clone)]
pub struct Shared {
    /// CA certificate, PEM.
    pub ca_pem: String,
    /// Its key, PEM.
    pub ca_key_pem: String,
    /// The join token.
    pub token: String,
    /// `admin.json`.
    pub admin: AdminConfig,
}

/// `berth master init`: the CA, the master's certificate for `listen` (and `sans`), the
/// admin credential and the join token — or, given `shared`, that identity and a
/// certificate of this master's own. Refuses to overwrite an existing identity.
pub fn init(
    root: &Path,
    listen: &str,
    sans: &[String],
    shared: Option<Shared>,
) -> Result<Initialised> {
    let paths = Paths::new(root);
    if paths.ca().exists() {
        anyhow::bail!(
            "{} holds a cluster identity already (remove the dir to start over)",
            root.display()
        );
    }
    std::fs::create_dir_all(root.join("pki"))
        .with_context(|| format!("creating {}", root.display()))?;
    let (ca_key, ca) = match &shared {
        Some(s) => (
            KeyPair::from_pem(&s.ca_key_pem).context("the cluster CA key")?,
            ca_params()?,
        ),
        None => {
            let mut ca = ca_params()?;
            validity(&mut ca, 10);
            (KeyPair::generate()?, ca)
        }
    };
    let ca_cert_pem = match &shared {
        Some(s) => s.ca_pem.clone(),
        None => ca.self_signed(&ca_key)?.pem(),
    };

    let host = listen
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']))
        .unwrap_or(listen);
    let mut names: Vec<SanType> = vec![
        SanType::DnsName("localhost".try_into()?),
        SanType::IpAddress(IpAddr::from([127, 0, 0, 1])),
    ];
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty());
    for n in std::iter::once(host.to_string())
        .chain(hostname)
        .chain(sans.iter().cloned())
    {
        let san = match n.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                n.as_str()
                    .try_into()
                    .with_context(|| format!("--san {n}"))?,
            ),
        };
        if !names.contains(&san) {
            names.push(san);
        }
    }
    let master_key = KeyPair::generate()?;
    let mut mp = CertificateParams::new(Vec::<String>::new())?;
    mp.distinguished_name
        .push(DnType::CommonName, "berth master");
    mp.subject_alt_names = names;
    mp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    mp.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut mp, 2);
    let issuer = Issuer::from_params(&ca, &ca_key);
    let master_cert = mp.signed_by(&master_key, &issuer)?;

    write_secret(&paths.ca_key(), ca_key.serialize_pem().as_bytes(), 0o600)?;
    write_secret(&paths.ca(), ca_cert_pem.as_bytes(), 0o644)?;
    write_secret(&paths.key(), master_key.serialize_pem().as_bytes(), 0o600)?;
    write_secret(&paths.cert(), master_cert.pem().as_bytes(), 0o644)?;

    let token = match &shared {
        Some(s) => s.token.clone(),
        None => random_hex(16)?,
    };
    write_secret(&paths.token(), token.as_bytes(), 0o600)?;

    let authority = Authority {
        params: ca,
        key: ca_key,
    };
    let url = format!("https://{listen}");
    let admin = match shared {
        Some(s) => {
            // Every master's URL, this one first: `berth cluster` tries them in order.
            let mut urls = vec![url.clone()];
            urls.extend(
                s.admin
                    .master
                    .split(',')
                    .map(str::to_string)
                    .filter(|u| *u != url),
            );
            AdminConfig {
                master: urls.join(","),
                ..s.admin
            }
        }
        None => {
            let (cert_pem, key_pem) = authority.issue_client("admin")?;
            AdminConfig {
                version: 1,
                master: url.clone(),
                ca_pem: ca_cert_pem.clone(),
                cert_pem,
                key_pem,
            }
        }
    };
    let der = berth_cluster::tls::certs("admin certificate", &admin.cert_pem)?;
    let admin_fingerprint = berth_cluster::tls::fingerprint(&der[0]);
    write_secret(&paths.admin(), &serde_json::to_vec_pretty(&admin)?, 0o600)?;
    let ca_der = berth_cluster::tls::certs("CA certificate", &ca_cert_pem)?;
    Ok(Initialised {
        url: admin.master.clone(),
        token,
        ca_hash: berth_cluster::tls::fingerprint(&ca_der[0]),
        admin_fingerprint,
    })
}

/// `n` random bytes from the kernel, hex.
pub fn random_hex(n: usize) -> Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(hex::encode(buf))
}
