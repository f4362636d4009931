//! The log record format `GET /v1/containers/{id}/logs` streams: the kubelet's CRI format,
//! one record per line, `<RFC 3339 nanosecond time> <stdout|stderr> <F|P> <content>`, where
//! `P` marks a partial line continued by the next record of the same stream.

use serde::{Deserialize, Serialize};

/// Longest record content; longer output is split into partial records.
pub const MAX_LINE: usize = 16 * 1024;

/// Which output stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output (and a tty's output).
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`, as the log line spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// RFC 3339 time.
    pub time: String,
    /// Stream.
    pub stream: Stream,
    /// Continued by the next record.
    pub partial: bool,
    /// Content without the newline.
    pub content: Vec<u8>,
}

/// Parses one log line (without its newline); `None` for a malformed line.
pub fn parse_record(line: &[u8]) -> Option<Record> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"F" => false,
        b"P" => true,
        _ => return None,
    };
    Some(Record {
        time,
        stream,
        partial,
        content: parts.next().unwrap_or_default().to_vec(),
    })
}
