//! Network configuration lists as the CNI spec defines them: a JSON object with `cniVersion`,
//! `name` and `plugins` (each with a `type` naming the plugin binary). Single-plugin `.conf`
//! files (the pre-list format) are read as a list of one. Files in a config dir are read in
//! lexical order and the first one defining a name wins, as libcni and the kubelet do.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::CniError;

/// Configuration versions Berth runs (0.1.0/0.2.0 results have another shape).
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// One network: its plugin chain and where it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    /// Network name (unique on the host).
    pub name: String,
    /// The `cniVersion` every plugin is called with.
    pub cni_version: String,
    /// `disableCheck`: CHECK is skipped for this network.
    pub disable_check: bool,
    /// Plugin configurations, in chain order, as written.
    pub plugins: Vec<Map<String, Value>>,
    /// The file it came from.
    pub source: PathBuf,
}

impl NetworkConfigList {
    /// The `type` of plugin `i`.
    pub fn plugin_type(&self, i: usize) -> &str {
        self.plugins
            .get(i)
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// `cniVersion` at or above `version` (both `a.b.c`).
    pub fn version_at_least(&self, version: &str) -> bool {
        parse_version(&self.cni_version) >= parse_version(version)
    }

    /// The list as JSON (what the cache keeps, to run DEL with the same config).
    pub fn to_json(&self) -> Value {
        let mut list = Map::new();
        list.insert("cniVersion".into(), self.cni_version.clone().into());
        list.insert("name".into(), self.name.clone().into());
        if self.disable_check {
            list.insert("disableCheck".into(), true.into());
        }
        list.insert(
            "plugins".into(),
            Value::Array(self.plugins.iter().cloned().map(Value::Object).collect()),
        );
        Value::Object(list)
    }
}

fn parse_version(v: &str) -> (u32, u32, u32) {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

fn bad(path: &Path, reason: impl Into<String>) -> CniError {
    CniError::Config {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Parses and checks one file's bytes (`.conflist`, or a single-plugin `.conf`).
pub fn parse(bytes: &[u8], path: &Path) -> Result<NetworkConfigList, CniError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| bad(path, e.to_string()))?;
    let Value::Object(mut obj) = value else {
        return Err(bad(path, "not a JSON object"));
    };
    let name = match obj.get("name") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(bad(path, "name: not a string")),
        None => return Err(bad(path, "name: missing")),
    };
    check_name(&name).map_err(|r| bad(path, format!("name {name:?}: {r}")))?;
    let cni_version = match obj.get("cniVersion") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(bad(path, "cniVersion: not a string")),
        None => return Err(bad(path, "cniVersion: missing")),
    };
    if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
        return Err(bad(
            path,
            format!(
                "cniVersion {cni_version:?} is not supported (supported: {})",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    let disable_check = match obj.get("disableCheck") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s == "true" || s == "false" => s == "true",
        Some(_) => return Err(bad(path, "disableCheck: expected true or false")),
    };
    let plugins = match obj.remove("plugins") {
        Some(Value::Array(list)) => list,
        Some(_) => return Err(bad(path, "plugins: not a list")),
        // A single-plugin `.conf`: the object is the plugin.
        None if obj.contains_key("type") => vec![Value::Object(obj.clone())],
        None => return Err(bad(path, "plugins: missing")),
    };
    if plugins.is_empty() {
        return Err(bad(path, "plugins: empty"));
    }
    let mut checked = Vec::with_capacity(plugins.len());
    for (i, p) in plugins.into_iter().enumerate() {
        let Value::Object(p) = p else {
            return Err(bad(path, format!("plugins[{i}]: not a JSON object")));
        };
        match p.get("type") {
            Some(Value::String(t)) => {
                check_type(t).map_err(|r| bad(path, format!("plugins[{i}].type {t:?}: {r}")))?
            }
            Some(_) => return Err(bad(path, format!("plugins[{i}].type: not a string"))),
            None => return Err(bad(path, format!("plugins[{i}].type: missing"))),
        }
        checked.push(p);
    }
    Ok(NetworkConfigList {
        name,
        cni_version,
        disable_check,
        plugins: checked,
        source: path.to_path_buf(),
    })
}

/// Network names as the 1.0 spec allows them: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    let mut chars = name.chars();
    match chars.next() {
        None => Err("empty"),
        Some(c) if !c.is_ascii_alphanumeric() => Err("must start with a letter or digit"),
        _ if chars.any(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(c))) => {
            Err("only letters, digits, '_', '.' and '-' are allowed")
        }
        _ => Ok(()),
    }
}

/// A plugin type names a file in a plugin dir: never a path.
fn check_type(t: &str) -> Result<(), &'static str> {
    if t.is_empty() || t == "." || t == ".." || t.contains('/') || t.contains('\0') {
        return Err("must be a plain file name");
    }
    Ok(())
}

/// Every network of a config dir, with the files that could not be used.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Valid networks, in file order.
    pub networks: Vec<NetworkConfigList>,
    /// Files skipped, and why.
    pub errors: Vec<CniError>,
}

impl Loaded {
    /// The first network called `name`.
    pub fn find(&self, name: &str) -> Option<&NetworkConfigList> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// The network called `name`, or an error that also names the unreadable files.
    pub fn get(&self, name: &str, dir: &Path) -> Result<NetworkConfigList, CniError> {
        if let Some(n) = self.find(name) {
            return Ok(n.clone());
        }
        let skipped = if self.errors.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = self.errors.iter().map(|e| e.to_string()).collect();
            format!("; unreadable: {}", list.join("; "))
        };
        Err(CniError::NoSuchNetwork {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            skipped,
        })
    }
}

/// Reads `.conflist`, `.conf` and `.json` files of `dir` in lexical order. A missing dir
/// holds no networks.
pub fn load_dir(dir: &Path) -> Loaded {
    let mut loaded = Loaded::default();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "conflist" || e == "conf" || e == "json")
            })
            .collect(),
        Err(_) => return loaded,
    };
    files.sort();
    for path in files {
        let parsed = std::fs::read(&path)
            .map_err(CniError::io("reading", &path))
            .and_then(|bytes| parse(&bytes, &path));
        match parsed {
            Ok(n) if loaded.find(&n.name).is_some() => {
                tracing::debug!(file = %path.display(), name = n.name, "network defined twice; first wins");
            }
            Ok(n) => loaded.networks.push(n),
            Err(e) => loaded.errors.push(e),
        }
    }
    loaded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<NetworkConfigList, String> {
        parse(s.as_bytes(), Path::new("/x.conflist")).map_err(|e| e.to_string())
    }

    #[test]
    fn lists_and_single_plugin_files() {
        let l = p(r#"{"cniVersion":"1.0.0","name":"n1","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#).unwrap();
        assert_eq!(l.plugins.len(), 2);
        assert_eq!(l.plugin_type(1), "portmap");
        assert!(l.version_at_least("0.4.0"));
        let c = p(r#"{"cniVersion":"0.4.0","name":"n2","type":"bridge","bridge":"b0"}"#).unwrap();
        assert_eq!(c.plugin_type(0), "bridge");
        assert_eq!(c.plugins[0]["bridge"], "b0");
        assert!(!c.version_at_least("1.0.0"));
        let back = parse(
            serde_json::to_vec(&l.to_json()).unwrap().as_slice(),
            Path::new("/y"),
        )
        .unwrap();
        assert_eq!(back.plugins, l.plugins);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        for (text, want) in [
            ("{", "EOF"),
            ("[]", "not a JSON object"),
            (r#"{"cniVersion":"1.0.0","plugins":[]}"#, "name: missing"),
            (
                r#"{"cniVersion":"1.0.0","name":"-x","plugins":[{"type":"a"}]}"#,
                "must start",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"a b","plugins":[{"type":"a"}]}"#,
                "only letters",
            ),
            (
                r#"{"name":"n","plugins":[{"type":"a"}]}"#,
                "cniVersion: missing",
            ),
            (
                r#"{"cniVersion":"0.2.0","name":"n","plugins":[{"type":"a"}]}"#,
                "not supported",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
                "plugins: empty",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":{}}"#,
                "not a list",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{}]}"#,
                "plugins[0].type: missing",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../../bin/sh"}]}"#,
                "plain file name",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":".."}]}"#,
                "plain file name",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","disableCheck":3,"plugins":[{"type":"a"}]}"#,
                "disableCheck",
            ),
        ] {
            let e = p(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
            assert!(e.starts_with("network config /x.conflist: "), "{e}");
        }
    }

    #[test]
    fn a_dir_in_order_with_errors_kept() {
        let dir = tempfile::tempdir().unwrap();
        let w = |n: &str, t: &str| std::fs::write(dir.path().join(n), t).unwrap();
        w(
            "20-b.conflist",
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"second"}]}"#,
        );
        w(
            "10-a.conflist",
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"first"}]}"#,
        );
        w("30-bad.conflist", "{nope");
        w("README", "not a config");
        let loaded = load_dir(dir.path());
        assert_eq!(loaded.networks.len(), 1);
        assert_eq!(loaded.get("a", dir.path()).unwrap().plugin_type(0), "first");
        assert_eq!(loaded.errors.len(), 1);
        let e = loaded.get("zz", dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("no network named \"zz\"") && e.contains("30-bad.conflist"),
            "{e}"
        );
        assert!(load_dir(&dir.path().join("missing")).networks.is_empty());
    }
}
