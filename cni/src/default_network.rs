//! Berth's default network, so `berth run -p 8080:80` works on a fresh host: a Linux bridge
//! (`berth0`) acting as gateway with masquerading, host-local IPAM on a private /16 that no
//! host route or other CNI network uses, port mappings through `portmap`, the `firewall`
//! plugin (so a host whose FORWARD policy is DROP still forwards pod traffic) and
//! `loopback`. It is written once as `<conf dir>/10-<name>.conflist`; from then on the file
//! is the operator's to change.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::config::NetworkConfigList;
use crate::CniError;

/// What the default network is made of.
#[derive(Debug, Clone)]
pub struct DefaultNetwork {
    /// Network name (`berth`).
    pub name: String,
    /// Bridge device (`berth0`).
    pub bridge: String,
    /// IPv4 subnet in CIDR form; `None`: pick a free /16.
    pub subnet: Option<String>,
    /// host-local's lease dir.
    pub ipam_dir: PathBuf,
}

/// An IPv4 network: address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    /// Network address.
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl Ipv4Net {
    /// Parses `a.b.c.d/n` (host bits must be zero).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected an IPv4 subnet like 10.77.0.0/16"))?;
        let addr: Ipv4Addr = a.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("{s:?}: the prefix must be 8 to 30"))?;
        let net = Self { addr, prefix };
        if u32::from(addr) & !net.mask() != 0 {
            return Err(format!("{s:?}: host bits are set"));
        }
        Ok(net)
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// Whether the two networks share any address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        let mask = self.mask() & other.mask();
        u32::from(self.addr) & mask == u32::from(other.addr) & mask
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The host's IPv4 routes (`/proc/net/route`): every subnet reachable some way already.
/// The default route (0.0.0.0/0) is left out: it overlaps everything.
pub fn host_routes() -> Vec<Ipv4Net> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // The kernel prints the network-order word as a native integer.
            let (dest, mask) = (u32::from_be(dest), u32::from_be(mask));
            (mask != 0).then(|| Ipv4Net {
                addr: Ipv4Addr::from(dest),
                prefix: mask.count_ones() as u8,
            })
        })
        .collect()
}

/// Subnets the networks' host-local IPAM sections hand out.
pub fn subnets_of(networks: &[NetworkConfigList]) -> Vec<Ipv4Net> {
    let mut found = Vec::new();
    for n in networks {
        for p in &n.plugins {
            let Some(ipam) = p.get("ipam") else { continue };
            if let Some(s) = ipam.get("subnet").and_then(Value::as_str) {
                found.extend(Ipv4Net::parse(s).ok());
            }
            for range in ipam
                .get("ranges")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_array)
                .flatten()
            {
                if let Some(s) = range.get("subnet").and_then(Value::as_str) {
                    found.extend(Ipv4Net::parse(s).ok());
                }
            }
        }
    }
    found
}

/// The first of 10.77.0.0/16 … 10.99.0.0/16 overlapping nothing in `taken` (10.88 is
/// podman's default and is skipped).
pub fn pick_subnet(taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    (77u8..=99)
        .filter(|b| *b != 88)
        .map(|b| Ipv4Net {
            addr: Ipv4Addr::new(10, b, 0, 0),
            prefix: 16,
        })
        .find(|c| !taken.iter().any(|t| t.overlaps(c)))
}

/// The default network's configuration list.
pub fn conflist(d: &DefaultNetwork, subnet: Ipv4Net) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": d.name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": d.bridge,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": d.ipam_dir,
                    "ranges": [[{ "subnet": subnet.to_string() }]],
                    "routes": [{ "dst": "0.0.0.0/0" }]
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true }, "snat": true },
            { "type": "firewall" },
            { "type": "loopback" }
        ]
    })
}

/// Writes the default network into `conf_dir` unless a network of that name is there.
/// Returns the file written, or `None` when one existed.
pub fn install(
    conf_dir: &Path,
    d: &DefaultNetwork,
    existing: &[NetworkConfigList],
) -> Result<Option<PathBuf>, CniError> {
    if existing.iter().any(|n| n.name == d.name) {
        return Ok(None);
    }
    let path = conf_dir.join(format!("10-{}.conflist", d.name));
    let bad = |reason: String| CniError::Config {
        path: path.clone(),
        reason,
    };
    let subnet = match &d.subnet {
        Some(s) => Ipv4Net::parse(s).map_err(bad)?,
        None => {
            let mut taken = host_routes();
            taken.extend(subnets_of(existing));
            pick_subnet(&taken)
                .ok_or_else(|| bad("no free subnet in 10.77.0.0 - 10.99.0.0/16; set one".into()))?
        }
    };
    std::fs::create_dir_all(conf_dir).map_err(CniError::io("creating", conf_dir))?;
    let bytes = serde_json::to_vec_pretty(&conflist(d, subnet)).map_err(|e| bad(e.to_string()))?;
    berth_fsutil::atomic::write_atomic(&path, &bytes, 0o644).map_err(|e| bad(e.to_string()))?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_and_overlap() {
        let a = Ipv4Net::parse("10.77.0.0/16").unwrap();
        assert!(a.overlaps(&Ipv4Net::parse("10.77.5.0/24").unwrap()));
        assert!(!a.overlaps(&Ipv4Net::parse("10.78.0.0/16").unwrap()));
        assert!(a.overlaps(&Ipv4Net::parse("10.0.0.0/8").unwrap()));
        for bad in [
            "10.77.0.1/16",
            "10.77.0.0",
            "10.77.0.0/4",
            "x/16",
            "10.77.0.0/31",
        ] {
            assert!(Ipv4Net::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn picks_the_first_free_subnet() {
        let taken = [
            Ipv4Net::parse("10.77.3.0/24").unwrap(),
            Ipv4Net::parse("10.78.0.0/15").unwrap(),
        ];
        assert_eq!(pick_subnet(&taken).unwrap().to_string(), "10.80.0.0/16");
        let all = [Ipv4Net::parse("10.0.0.0/8").unwrap()];
        assert!(pick_subnet(&all).is_none());
        // Whatever this host routes, the pick avoids it.
        let routes = host_routes();
        if let Some(p) = pick_subnet(&routes) {
            assert!(!routes.iter().any(|r| r.overlaps(&p)));
        }
    }

    #[test]
    fn installs_once_and_the_file_is_a_valid_network() {
        let dir = tempfile::tempdir().unwrap();
        let d = DefaultNetwork {
            name: "berth".into(),
            bridge: "berth0".into(),
            subnet: None,
            ipam_dir: dir.path().join("ipam"),
        };
        let other = crate::config::parse(
            br#"{"cniVersion":"0.4.0","name":"o","plugins":[{"type":"bridge","ipam":{"type":"host-local","ranges":[[{"subnet":"10.77.0.0/16"}]]}}]}"#,
            Path::new("/o"),
        )
        .unwrap();
        let path = install(dir.path(), &d, std::slice::from_ref(&other))
            .unwrap()
            .unwrap();
        let loaded = crate::config::load_dir(dir.path());
        let net = loaded.get("berth", dir.path()).unwrap();
        assert_eq!(net.source, path);
        assert_eq!(net.plugin_type(0), "bridge");
        assert_eq!(net.plugin_type(1), "portmap");
        let subnets = subnets_of(&loaded.networks);
        assert_ne!(subnets[0].to_string(), "10.77.0.0/16");
        assert!(install(dir.path(), &d, &loaded.networks).unwrap().is_none());
        let fixed = DefaultNetwork {
            subnet: Some("10.1.2.3/16".into()),
            name: "x".into(),
            ..d
        };
        let e = install(dir.path(), &fixed, &[]).unwrap_err().to_string();
        assert!(e.contains("host bits"), "{e}");
    }
}
