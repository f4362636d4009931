//! The client end of an attached container or exec: output frames to stdout/stderr, stdin
//! and terminal size to the process, the exit record at the end.

use std::io::Write;
use std::os::fd::AsRawFd;

use anyhow::Result;
use berth_api::attach as protocol;
use berth_api::ExitView;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::client::Attached;

/// Puts the local terminal in raw mode until dropped.
struct RawMode {
    saved: Option<nix::sys::termios::Termios>,
}

impl RawMode {
    fn enable() -> Self {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(&stdin) else {
            return RawMode { saved: None };
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

fn window_size() -> Option<[u8; 4]> {
    // SAFETY: winsize is plain old data; all-zero is valid.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into the valid pointer we pass.
    let r = unsafe { libc::ioctl(std::io::stdout().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    if r != 0 || ws.ws_row == 0 {
        return None;
    }
    let [r0, r1] = ws.ws_row.to_be_bytes();
    let [c0, c1] = ws.ws_col.to_be_bytes();
    Some([r0, r1, c0, c1])
}

/// Relays until the EXIT frame (returned) or the connection ends (`None`).
pub async fn relay(conn: Attached, stdin: bool, tty: bool) -> Result<Option<ExitView>> {
    let (mut reader, mut writer) = tokio::io::split(conn);
    let (frames, mut outgoing) = mpsc::channel::<Vec<u8>>(16);
    // Raw mode only when keystrokes go to the container (`-it`), as the Docker CLI does.
    let local_tty = tty && stdin && std::io::IsTerminal::is_terminal(&std::io::stdin());
    let _raw = local_tty.then(RawMode::enable);
    let writer_task = tokio::spawn(async move {
        while let Some(f) = outgoing.recv().await {
            if writer.write_all(&f).await.is_err() {
                break;
            }
        }
    });
    if tty {
        if let Some(size) = window_size() {
            let _ = frames.send(protocol::encode(protocol::RESIZE, &size)).await;
        }
        let tx = frames.clone();
        tokio::spawn(async move {
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some(size) = window_size() {
                    if tx
                        .send(protocol::encode(protocol::RESIZE, &size))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        });
    }
    if stdin {
        let tx = frames.clone();
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match input.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(protocol::encode(protocol::STDIN_CLOSE, b"")).await;
                        break;
                    }
                    Ok(n) => {
                        if tx
                            .send(protocol::encode(protocol::STDIN, &buf[..n]))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        });
    }
    drop(frames);
    let mut exit = None;
    loop {
        let mut head = [0u8; 5];
        if reader.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > protocol::MAX_PAYLOAD {
            break;
        }
        let mut payload = vec![0u8; len];
        if reader.read_exact(&mut payload).await.is_err() {
            break;
        }
        match head[0] {
            protocol::STDOUT => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&payload);
                let _ = out.flush();
            }
            protocol::STDERR => {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(&payload);
                let _ = err.flush();
            }
            protocol::EXIT => {
                exit = serde_json::from_slice(&payload).ok();
                break;
            }
            protocol::ERROR => {
                eprintln!("berth: error: {}", String::from_utf8_lossy(&payload));
            }
            _ => {}
        }
    }
    writer_task.abort();
    Ok(exit)
}
