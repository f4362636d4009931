//! Lifecycle events: what `GET /v1/events` streams (NDJSON) and each line of the agent's
//! events journal (`events.jsonl`) holds — the same object, so a journal read back after a
//! restart replays as it was streamed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Sequence number, increasing.
    pub seq: u64,
    /// RFC 3339 time of what happened (for a missed exit: when it exited).
    pub time: String,
    /// `container`, `pod` or `image`.
    #[serde(rename = "type")]
    pub kind: String,
    /// What happened: `created`, `started`, `exited`, `oom`, `restarted`, `health_status`...
    pub action: String,
    /// Container or pod id, or image reference.
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Details: `exitCode`, `reason`, `pod`, `health`...
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl Event {
    /// A new event of now; `seq` is set by the journal.
    pub fn new(kind: &str, action: &str, id: &str, name: &str) -> Self {
        Event {
            seq: 0,
            time: now(),
            kind: kind.into(),
            action: action.into(),
            id: id.into(),
            name: name.into(),
            attributes: BTreeMap::new(),
        }
    }

    /// Adds an attribute.
    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.attributes.insert(key.into(), value.to_string());
        self
    }

    /// Whether it passes `key=value` filters (`type`, `event`, `container`, `pod`, `image`,
    /// `id`, `name`); several values of one key are alternatives.
    pub fn matches(&self, filters: &[(String, String)]) -> bool {
        let mut keys: BTreeMap<&str, bool> = BTreeMap::new();
        for (k, v) in filters {
            let hit = match k.as_str() {
                "type" => &self.kind == v,
                "event" | "action" => &self.action == v,
                "container" => {
                    self.kind == "container" && (self.name == *v || self.id.starts_with(v.as_str()))
                }
                "pod" => {
                    (self.kind == "pod" && (self.name == *v || self.id.starts_with(v.as_str())))
                        || self.attributes.get("pod") == Some(v)
                }
                "image" => self.kind == "image" && self.id == *v,
                "id" => self.id.starts_with(v.as_str()),
                "name" => &self.name == v,
                _ => false,
            };
            *keys.entry(k.as_str()).or_insert(false) |= hit;
        }
        keys.values().all(|h| *h)
    }
}

/// Current time, RFC 3339 with nanoseconds (UTC), as every time on the wire.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}
