//! The argument grammar shared by `berth-monitor` and `berth shim`, parsed by hand: building
//! clap's command tree would touch and keep memory in each of dozens of long-lived monitors.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;

/// Arguments without a value.
const FLAGS: &[&str] = &[
    "--tty",
    "--stdin",
    "--network-none",
    "--share-pid",
    "--host-network",
    "--net-only",
];

/// `--key value` pairs and bare flags.
#[derive(Debug)]
pub struct Parsed {
    values: HashMap<String, OsString>,
    flags: Vec<String>,
}

impl Parsed {
    /// Parses `args`.
    pub fn new(args: &[OsString]) -> Result<Self, String> {
        let mut values = HashMap::new();
        let mut flags = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let key = a.to_string_lossy().into_owned();
            if FLAGS.contains(&key.as_str()) {
                flags.push(key);
            } else if key.starts_with("--") {
                let v = it.next().ok_or(format!("{key} needs a value"))?;
                values.insert(key, v.clone());
            } else {
                return Err(format!("unexpected argument {key:?}"));
            }
        }
        Ok(Parsed { values, flags })
    }
    /// A value as given.
    pub fn os(&self, key: &str) -> Result<OsString, String> {
        self.values
            .get(key)
            .cloned()
            .ok_or(format!("{key} is required"))
    }
    /// A value as text.
    pub fn text(&self, key: &str) -> Result<String, String> {
        Ok(self.os(key)?.to_string_lossy().into_owned())
    }
    /// A value as a path.
    pub fn path(&self, key: &str) -> Result<PathBuf, String> {
        self.os(key).map(PathBuf::from)
    }
    /// A value as a number.
    pub fn num<T: std::str::FromStr>(&self, key: &str) -> Result<T, String> {
        self.text(key)?
            .parse()
            .map_err(|_| format!("{key} wants a number"))
    }
    /// Whether a flag was given.
    pub fn flag(&self, key: &str) -> bool {
        self.flags.iter().any(|f| f == key)
    }
}
