//! Container logs in the kubelet's CRI format, size-rotated: the readers. The writer lives
//! in the monitor (`berth_monitor::logs`), the only process that writes a container's log;
//! the file layout is documented there.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub use berth_api::logs::{parse_record, Record, Stream, MAX_LINE};
pub use berth_monitor::logs::{LogWriter, Rotation, LOG_FILE};

/// The log files oldest first.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut numbered: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let n = name.strip_prefix(&format!("{LOG_FILE}."))?.parse().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    numbered.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut out: Vec<PathBuf> = numbered.into_iter().map(|(_, p)| p).collect();
    let current = dir.join(LOG_FILE);
    if current.exists() {
        out.push(current);
    }
    out
}

/// The raw records of all files, only the last `tail` records if given.
pub fn read_all(dir: &Path, tail: Option<usize>) -> std::io::Result<Vec<u8>> {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for f in files(dir) {
        let reader = BufReader::new(File::open(&f)?);
        for line in reader.split(b'\n') {
            lines.push(line?);
        }
    }
    // Records, not logical lines: a partial record counts as one, as `tail -n` would.
    let start = tail.map_or(0, |n| lines.len().saturating_sub(n));
    let mut out = Vec::new();
    for l in &lines[start..] {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    Ok(out)
}

/// Follows `container.log` across rotations: each call returns the whole records appended
/// since the last one.
#[derive(Debug)]
pub struct LogFollower {
    dir: PathBuf,
    file: Option<File>,
    inode: u64,
    pending: Vec<u8>,
}

impl LogFollower {
    /// Starts at the current end of the log (what [`read_all`] returned is not repeated).
    pub fn at_end(dir: &Path) -> Self {
        let mut f = LogFollower {
            dir: dir.to_path_buf(),
            file: None,
            inode: 0,
            pending: Vec::new(),
        };
        if let Ok(mut file) = File::open(dir.join(LOG_FILE)) {
            if let (Ok(m), Ok(_)) = (file.metadata(), file.seek(SeekFrom::End(0))) {
                f.inode = m.ino();
                f.file = Some(file);
            }
        }
        f
    }

    /// New complete records.
    pub fn poll(&mut self) -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        if let Some(file) = self.file.as_mut() {
            file.read_to_end(&mut buf)?;
        }
        // Rotated (or created): the old file is complete now; continue with the new one.
        if let Ok(m) = std::fs::metadata(self.dir.join(LOG_FILE)) {
            if m.ino() != self.inode || self.file.is_none() {
                if let Ok(mut file) = File::open(self.dir.join(LOG_FILE)) {
                    if let Some(old) = self.file.as_mut() {
                        old.read_to_end(&mut buf)?;
                    }
                    file.read_to_end(&mut buf)?;
                    self.inode = file.metadata()?.ino();
                    self.file = Some(file);
                }
            }
        }
        self.pending.extend_from_slice(&buf);
        let cut = self
            .pending
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        Ok(self.pending.drain(..cut).collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn contents(raw: &[u8]) -> Vec<String> {
        raw.split(|&b| b == b'\n')
            .filter_map(parse_record)
            .map(|r| String::from_utf8(r.content).unwrap())
            .collect()
    }

    #[test]
    fn lines_partials_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(dir.path(), Rotation::default()).unwrap();
        w.write(Stream::Stdout, b"one\ntwo\nthr").unwrap();
        w.write(Stream::Stderr, b"err\n").unwrap();
        let all = read_all(dir.path(), None).unwrap();
        assert_eq!(contents(&all), ["one", "two", "thr", "err"]);
        let recs: Vec<Record> = all
            .split(|&b| b == b'\n')
            .filter_map(parse_record)
            .collect();
        assert!(recs[2].partial);
        assert_eq!(recs[3].stream, Stream::Stderr);
        assert_eq!(contents(&read_all(dir.path(), Some(1)).unwrap()), ["err"]);
        assert_eq!(
            contents(&read_all(dir.path(), Some(2)).unwrap()),
            ["thr", "err"]
        );
    }

    #[test]
    fn rotation_keeps_n_files_and_follower_sees_everything() {
        let dir = tempfile::tempdir().unwrap();
        let rotation = Rotation {
            max_bytes: 200,
            max_files: 3,
        };
        let mut w = LogWriter::open(dir.path(), rotation).unwrap();
        let mut follower = LogFollower::at_end(dir.path());
        let mut followed = Vec::new();
        for i in 0..40 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
            if i % 3 == 0 {
                followed.extend(follower.poll().unwrap());
            }
        }
        followed.extend(follower.poll().unwrap());
        let expect: Vec<String> = (0..40).map(|i| format!("line {i}")).collect();
        assert_eq!(contents(&followed), expect);
        assert_eq!(files(dir.path()).len(), 3);
        for f in files(dir.path()) {
            assert!(std::fs::metadata(f).unwrap().len() <= 200);
        }
        let kept = contents(&read_all(dir.path(), None).unwrap());
        assert_eq!(kept.last().unwrap(), "line 39");
        assert!(kept.len() < 40);
    }
}
