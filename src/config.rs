//! The configuration file (`/etc/berth/config.json`, `--config`, `BERTH_CONFIG`):
//!
//! ```text
//! { "version": 1,
//!   "insecure_registries": ["registry.lan:5000"],   plain HTTP (loopback always is)
//!   "max_layer_bytes": 34359738368 }                 decompression-bomb limit per layer
//! ```
//! A missing file means defaults; an unreadable or malformed one is an error.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub version: Option<u32>,
    #[serde(default)]
    pub insecure_registries: BTreeSet<String>,
    #[serde(default)]
    pub max_layer_bytes: Option<u64>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("reading config {}", path.display())),
        };
        let config: Self = serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing config {}", path.display()))?;
        if let Some(v) = config.version.filter(|v| *v != 1) {
            bail!(
                "config {} has version {v}; this berth reads version 1",
                path.display()
            );
        }
        Ok(config)
    }
}

/// Parses a size: plain bytes or with a k/m/g/t suffix (powers of 1024, as docker's
/// `--memory`), optionally followed by `b`.
pub fn parse_size(text: &str) -> Result<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (digits, shift) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 10),
        Some('m') => (&lower[..lower.len() - 1], 20),
        Some('g') => (&lower[..lower.len() - 1], 30),
        Some('t') => (&lower[..lower.len() - 1], 40),
        _ => (lower, 0),
    };
    let n: u64 = digits.parse().with_context(|| {
        format!("invalid size {text:?}: want a number with an optional k, m, g or t suffix")
    })?;
    n.checked_mul(1u64 << shift)
        .with_context(|| format!("size {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512").ok(), Some(512));
        assert_eq!(parse_size("4k").ok(), Some(4096));
        assert_eq!(parse_size("1G").ok(), Some(1 << 30));
        assert_eq!(parse_size("2mb").ok(), Some(2 << 20));
        assert!(parse_size("12x").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999t").is_err());
    }
}
