//! Progress of a pull or import, reported per layer. The library only emits events; the
//! binary draws them (a bar per layer on a terminal, plain lines otherwise).

use crate::digest::Digest;

/// One thing that happened during a pull or import (serialized on the agent's API as
/// `{"event": "layer_started", ...}`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The reference resolved to a manifest with this many layers.
    Resolved {
        /// Canonical reference.
        reference: String,
        /// Manifest digest for this platform.
        manifest: Digest,
        /// Layer count.
        layers: usize,
    },
    /// A layer started downloading, or unpacking from a stored blob.
    LayerStarted {
        /// Blob digest.
        digest: Digest,
        /// Blob size.
        size: u64,
        /// True when the blob is already stored and only unpacked.
        from_store: bool,
    },
    /// Bytes of a layer received so far.
    LayerProgress {
        /// Blob digest.
        digest: Digest,
        /// Bytes so far.
        done: u64,
    },
    /// A layer was already stored and unpacked.
    LayerCached {
        /// Blob digest.
        digest: Digest,
    },
    /// A layer is stored, verified and unpacked.
    LayerDone {
        /// Blob digest.
        digest: Digest,
    },
    /// A layer download failed in a way worth another try, which is starting.
    LayerRetrying {
        /// Blob digest.
        digest: Digest,
        /// The attempt that failed (1-based).
        attempt: u32,
        /// Why it failed.
        error: String,
    },
    /// A layer failed.
    LayerFailed {
        /// Blob digest.
        digest: Digest,
    },
}

/// Receives events; called from several tasks at once.
pub trait Progress: Send + Sync {
    /// Handles one event.
    fn event(&self, event: Event);
}

/// Discards events.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _: Event) {}
}
