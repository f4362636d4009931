//! Container logs in the kubelet's CRI format, size-rotated.
//!
//! `logs/container.log` (newest), `container.log.1`, … `container.log.<N-1>` (oldest). Each
//! line: `<RFC 3339 nanosecond time> <stdout|stderr> <F|P> <content>\n`; `P` marks a partial
//! line (output without a newline yet, or longer than [`MAX_LINE`]) continued by the next
//! record of the same stream. Written only by the container's monitor; the file is renamed
//! away before a new one is opened, so a reader holding the old file reads it to its end.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Name of the current log file.
pub const LOG_FILE: &str = "container.log";

/// Rotation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// Bytes per file before it is rotated.
    pub max_bytes: u64,
    /// Files kept, the current one included.
    pub max_files: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: 10 << 20,
            max_files: 3,
        }
    }
}

use berth_api::logs::{Stream, MAX_LINE};

/// Appends records and rotates.
#[derive(Debug)]
pub struct LogWriter {
    dir: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
}

impl LogWriter {
    /// Opens (appending to) `dir/container.log`.
    pub fn open(dir: &Path, rotation: Rotation) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(LOG_FILE))?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            file,
            size,
            rotation,
        })
    }

    /// Writes one chunk of output: complete lines as `F` records, the rest as `P`.
    pub fn write(&mut self, stream: Stream, mut data: &[u8]) -> std::io::Result<()> {
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        while !data.is_empty() {
            let (content, tag, rest) = match data.iter().position(|&b| b == b'\n') {
                Some(i) if i <= MAX_LINE => (&data[..i], 'F', &data[i + 1..]),
                _ if data.len() > MAX_LINE => (&data[..MAX_LINE], 'P', &data[MAX_LINE..]),
                _ => (data, 'P', &data[data.len()..]),
            };
            let mut record = Vec::with_capacity(content.len() + 48);
            record.extend_from_slice(time.as_bytes());
            record.push(b' ');
            record.extend_from_slice(stream.as_str().as_bytes());
            record.extend_from_slice(if tag == 'F' { b" F " } else { b" P " });
            record.extend_from_slice(content);
            record.push(b'\n');
            self.append(&record)?;
            data = rest;
        }
        Ok(())
    }

    fn append(&mut self, record: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + record.len() as u64 > self.rotation.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(record)?;
        self.size += record.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let keep = self.rotation.max_files.max(1);
        let name = |i: u32| self.dir.join(format!("{LOG_FILE}.{i}"));
        if keep == 1 {
            std::fs::remove_file(self.dir.join(LOG_FILE))?;
        } else {
            let _ = std::fs::remove_file(name(keep - 1));
            for i in (1..keep - 1).rev() {
                if name(i).exists() {
                    std::fs::rename(name(i), name(i + 1))?;
                }
            }
            std::fs::rename(self.dir.join(LOG_FILE), name(1))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(LOG_FILE))?;
        self.size = 0;
        Ok(())
    }
}
