//! The supervisor's socket protocol (`shim.sock`), spoken by the agent and — through the
//! agent's attach endpoint, byte for byte — by the CLI.
//!
//! A stream of frames both ways: `type: u8`, `length: u32` big-endian, `payload`. Hand-rolled
//! because it is 5 bytes of header over a Unix socket that a single-threaded, poll-driven
//! process must parse incrementally; no framing crate fits that without a runtime.
//!
//! Client → supervisor: [`STDIN`] data, [`STDIN_CLOSE`], [`RESIZE`] (rows u16, cols u16),
//! [`START`]. Supervisor → client: [`STDOUT`], [`STDERR`], [`STARTED`] (JSON `{"pid": N}`),
//! [`EXIT`] (JSON `ExitRecord`), [`ERROR`] (text). Every connection is attached to the
//! output from the moment it connects; [`EXIT`] is the last frame.

use std::io::{Read, Write};

/// Input for the process.
pub const STDIN: u8 = 1;
/// No more input.
pub const STDIN_CLOSE: u8 = 2;
/// Terminal size: rows, cols as u16 big-endian.
pub const RESIZE: u8 = 3;
/// Start the created container / exec process.
pub const START: u8 = 4;

/// Standard output (or terminal output).
pub const STDOUT: u8 = 1;
/// Standard error.
pub const STDERR: u8 = 2;
/// The process started.
pub const STARTED: u8 = 3;
/// The process ended; last frame.
pub const EXIT: u8 = 4;
/// A request failed.
pub const ERROR: u8 = 5;

/// Largest payload accepted (bigger frames close the connection).
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Encodes one frame.
pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Takes one complete frame off the front of `buf`, if there is one. `Err` for a frame
/// larger than [`MAX_PAYLOAD`].
pub fn decode(buf: &mut Vec<u8>) -> Result<Option<(u8, Vec<u8>)>, usize> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(len);
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    let kind = buf[0];
    let payload = buf[5..5 + len].to_vec();
    buf.drain(..5 + len);
    Ok(Some((kind, payload)))
}

/// Writes one frame (blocking).
pub fn write_frame(w: &mut impl Write, kind: u8, payload: &[u8]) -> std::io::Result<()> {
    w.write_all(&encode(kind, payload))
}

/// Reads one frame (blocking); `None` at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    let mut payload = vec![0; len];
    r.read_exact(&mut payload)?;
    Ok(Some((head[0], payload)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn frames_round_trip_incrementally() {
        let mut wire = encode(STDIN, b"hello");
        wire.extend(encode(START, b""));
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for b in wire {
            buf.push(b);
            while let Some(f) = decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, [(STDIN, b"hello".to_vec()), (START, vec![])]);
        let mut huge = vec![STDIN];
        huge.extend_from_slice(&(u32::MAX).to_be_bytes());
        assert!(decode(&mut huge).is_err());
        let mut r = std::io::Cursor::new(encode(EXIT, b"{}"));
        assert_eq!(read_frame(&mut r).unwrap(), Some((EXIT, b"{}".to_vec())));
        assert_eq!(read_frame(&mut r).unwrap(), None);
    }
}
