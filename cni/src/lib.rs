//! Berth CNI: the runtime side of the Container Network Interface
//! (<https://github.com/containernetworking/cni/blob/main/SPEC.md>), driving plugin binaries
//! such as the reference plugins in `/usr/lib/cni`. Configuration versions 0.3.x, 0.4.0 and
//! 1.0.0 (CHECK, and prevResult on DEL, from 0.4.0 on).
//!
//! The flow: [`config::load_dir`] finds a network's `.conflist`, [`chain::add`] runs its
//! plugins in order (each gets the previous one's result as `prevResult`), caching the
//! exact arguments first so [`chain::del`] can undo it later (even after an agent crash)
//! from the cache alone; [`chain::check`] asks every plugin whether the network is still
//! as it was set up.

/// The on-disk cache of what an ADD was given, so a DEL repeats the same arguments.
pub mod cache;
/// ADD, CHECK and DEL of a whole plugin chain.
pub mod chain;
/// Network configuration lists (`.conflist`, and single-plugin `.conf`): loading and checks.
pub mod config;
/// Berth's default bridge network: its `.conflist` and a private subnet free on the host.
pub mod default_network;
/// Running one plugin binary: environment, stdin, timeout, result or CNI error.
pub mod plugin;
/// The result of an ADD (interfaces, IPs, routes, DNS), from 0.4.0 and 1.0.0 plugins.
pub mod result;
/// Known bugs of Debian's reference plugins, worked around.
pub mod workarounds;

pub use chain::{Attachment, Cni, PortMapping};
pub use config::NetworkConfigList;
pub use result::CniResult;

/// Something in CNI handling failed.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// A configuration file is unreadable or invalid.
    #[error("network config {path}: {reason}")]
    Config {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No configuration defines the network.
    #[error("no network named {name:?} in {dir}{skipped}")]
    NoSuchNetwork {
        /// Network name.
        name: String,
        /// Config dir searched.
        dir: std::path::PathBuf,
        /// Files that could not be read, with why (they may have meant it).
        skipped: String,
    },
    /// The plugin binary is in none of the plugin dirs.
    #[error("plugin {plugin:?} not found in {dirs}")]
    PluginNotFound {
        /// Plugin type.
        plugin: String,
        /// The search path.
        dirs: String,
    },
    /// The plugin answered with a CNI error.
    #[error("plugin {plugin} {command}: {msg}{details} (CNI error {code})")]
    Plugin {
        /// Plugin type.
        plugin: String,
        /// ADD, CHECK, DEL.
        command: &'static str,
        /// CNI error code.
        code: u32,
        /// Its message.
        msg: String,
        /// `: details` or empty.
        details: String,
    },
    /// The plugin ran past the timeout and was killed.
    #[error("plugin {plugin} {command}: timed out after {seconds}s")]
    Timeout {
        /// Plugin type.
        plugin: String,
        /// ADD, CHECK, DEL.
        command: &'static str,
        /// The limit.
        seconds: f64,
    },
    /// The plugin failed without a CNI error on stdout, or printed nonsense.
    #[error("plugin {plugin} {command}: {reason}")]
    Failed {
        /// Plugin type.
        plugin: String,
        /// ADD, CHECK, DEL.
        command: &'static str,
        /// Exit status, stderr or parse error.
        reason: String,
    },
    /// Reading or writing a cache file or running a binary.
    #[error("{what} {path}: {source}")]
    Io {
        /// The step.
        what: &'static str,
        /// Path involved.
        path: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

impl CniError {
    pub(crate) fn io<'a>(
        what: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> CniError + 'a {
        move |source| CniError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}
