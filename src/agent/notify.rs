//! `sd_notify(3)` by hand: one datagram to `$NOTIFY_SOCKET` (a path, or `@name` for the
//! abstract namespace). libsystemd would be a C dependency for twenty lines.
//!
//! The variable is taken out of the environment in `main` before any thread exists, so the
//! supervisors the agent starts do not inherit it (systemd would take their messages for
//! the agent's).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;

static SOCKET: OnceLock<Option<std::ffi::OsString>> = OnceLock::new();

/// Takes `NOTIFY_SOCKET` out of the environment. Call before any thread exists.
pub fn take_socket_from_env() {
    let value = std::env::var_os("NOTIFY_SOCKET");
    if value.is_some() {
        std::env::remove_var("NOTIFY_SOCKET");
    }
    let _ = SOCKET.set(value);
}

/// Sends `state` (`READY=1`, `STOPPING=1`, `STATUS=…`) to the service manager, if one
/// asked for it; failures are logged, never fatal.
pub fn send(state: &str) {
    let Some(Some(path)) = SOCKET.get() else {
        return;
    };
    let result = (|| {
        let socket = UnixDatagram::unbound()?;
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None => SocketAddr::from_pathname(path)?,
        };
        socket.send_to_addr(state.as_bytes(), &addr)
    })();
    if let Err(e) = result {
        tracing::warn!(socket = ?path, error = %e, "notifying the service manager");
    }
}
