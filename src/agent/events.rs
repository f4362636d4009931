//! The events journal: lifecycle events (pulled, created, started, exited, oom, restarted,
//! health status, evicted, pod and image events) appended to `<root>/events.jsonl`, one JSON
//! object per line, and broadcast to `berth events` followers.
//!
//! Layout: `events.jsonl` is appended to; past `max_bytes` it is renamed to
//! `events.jsonl.1` (replacing the older one), so the journal holds between one and two
//! files' worth of history. Each line carries a sequence number that continues across
//! restarts (read back from the last line at start); a torn last line from a crash is
//! skipped on read. Appends are not fsynced: an agent crash loses nothing written, a power
//! loss may lose the last events, which the agent re-derives (exits) from state files.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use tokio::sync::broadcast;

pub use berth_api::Event;

/// The journal file and the live broadcast.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Option<std::fs::File>,
    size: u64,
    max_bytes: u64,
    next_seq: u64,
    tx: broadcast::Sender<Event>,
}

impl Journal {
    /// Opens (creates) the journal under `root`.
    pub fn open(root: &Path, max_bytes: u64) -> Self {
        let path = root.join("events.jsonl");
        let last = read_all(&path).last().map(|e| e.seq);
        let next_seq = last.map_or(1, |s| s + 1);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| tracing::error!(path = %path.display(), error = %e, "events journal"))
            .ok();
        let mut size = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        // A torn last line (a crash mid-write) is ended, so the next event starts clean.
        let torn = std::fs::read(&path)
            .ok()
            .is_some_and(|b| b.last().is_some_and(|c| *c != b'\n'));
        if let (true, Some(mut f)) = (torn, file.as_ref()) {
            if f.write_all(b"\n").is_ok() {
                size += 1;
            }
        }
        let (tx, _) = broadcast::channel(1024);
        Journal {
            path,
            file,
            size,
            max_bytes: max_bytes.max(4096),
            next_seq,
            tx,
        }
    }

    /// Appends and broadcasts.
    pub fn emit(&mut self, mut event: Event) {
        event.seq = self.next_seq;
        self.next_seq += 1;
        tracing::debug!(kind = %event.kind, action = %event.action, id = %event.id, "event");
        if let Ok(mut line) = serde_json::to_vec(&event) {
            line.push(b'\n');
            if self.size + line.len() as u64 > self.max_bytes {
                self.rotate();
            }
            if let Some(f) = self.file.as_mut() {
                if f.write_all(&line).is_ok() {
                    self.size += line.len() as u64;
                }
            }
        }
        let _ = self.tx.send(event);
    }

    fn rotate(&mut self) {
        self.file = None;
        let old = self.path.with_extension("jsonl.1");
        if let Err(e) = std::fs::rename(&self.path, &old) {
            tracing::error!(error = %e, "rotating the events journal");
        }
        self.file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .ok();
        self.size = 0;
    }

    /// A receiver of events emitted from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Everything on disk, oldest first.
    pub fn history(&self) -> Vec<Event> {
        read_all(&self.path)
    }
}

/// Both files of a journal, oldest first; unreadable lines (a torn write) are skipped.
fn read_all(path: &Path) -> Vec<Event> {
    let mut out = Vec::new();
    for p in [path.with_extension("jsonl.1"), path.to_path_buf()] {
        let Ok(f) = std::fs::File::open(&p) else {
            continue;
        };
        for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
            if let Ok(e) = serde_json::from_str::<Event>(&line) {
                out.push(e);
            }
        }
    }
    out
}

/// Parses `key=value,key=value`.
pub fn parse_filters(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("invalid filter {kv:?}: want key=value"))?;
            const KEYS: [&str; 8] = [
                "type",
                "event",
                "action",
                "container",
                "pod",
                "image",
                "id",
                "name",
            ];
            if !KEYS.contains(&k) {
                return Err(format!(
                    "invalid filter key {k:?}: want one of {}",
                    KEYS.join(", ")
                ));
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn journal_rotates_and_continues_its_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), 4096);
        for i in 0..100 {
            j.emit(Event::new("container", "started", &format!("{i:064}"), "c"));
        }
        let h = j.history();
        assert!(h.len() < 100 && h.len() > 10, "{}", h.len());
        assert!(h.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
        assert_eq!(h.last().unwrap().seq, 100);
        drop(j);
        // A torn line at the end is skipped; the sequence continues.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("events.jsonl"))
            .unwrap();
        f.write_all(b"{\"seq\": 10").unwrap();
        let mut j = Journal::open(dir.path(), 4096);
        j.emit(Event::new("pod", "created", "p", "p"));
        assert_eq!(j.history().last().unwrap().seq, 101);
    }

    #[test]
    fn filters() {
        let e = Event::new("container", "exited", "abcdef", "web_app").with("pod", "web");
        let f = |s: &str| parse_filters(s).unwrap();
        assert!(e.matches(&f("type=container,event=exited")));
        assert!(e.matches(&f("pod=web")));
        assert!(e.matches(&f("container=abc")));
        assert!(e.matches(&f("event=started,event=exited")));
        assert!(!e.matches(&f("event=started")));
        assert!(!e.matches(&f("type=image")));
        assert!(parse_filters("bogus=1").is_err());
        assert!(parse_filters("type").is_err());
    }
}
