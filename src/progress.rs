//! Pull progress for people: one bar per layer on a terminal (indicatif), plain lines
//! otherwise (logs, CI), nothing with `--quiet`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use berth_api::image::short_digest;
use berth_api::image::ProgressEvent as Event;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Draws the progress events of a pull or import stream.
pub trait Progress: Send + Sync {
    /// Draws one event.
    fn event(&self, event: Event);
}

/// Draws nothing (`--quiet`).
struct Quiet;

impl Progress for Quiet {
    fn event(&self, _: Event) {}
}

pub fn for_terminal(quiet: bool) -> Arc<dyn Progress> {
    if quiet {
        Arc::new(Quiet)
    } else if std::io::stderr().is_terminal() {
        Arc::new(Bars::default())
    } else {
        Arc::new(Lines)
    }
}

/// Plain lines on stderr, one per layer state change.
struct Lines;

impl Progress for Lines {
    fn event(&self, event: Event) {
        match event {
            Event::Resolved {
                reference,
                manifest,
                layers,
            } => {
                eprintln!("{reference}: resolved to {manifest} ({layers} layers)")
            }
            Event::LayerStarted {
                digest,
                size,
                from_store,
            } => {
                let verb = if from_store { "unpacking" } else { "pulling" };
                eprintln!("{}: {verb} ({size} bytes)", short_digest(&digest))
            }
            Event::LayerCached { digest } => {
                eprintln!("{}: already present", short_digest(&digest))
            }
            Event::LayerDone { digest } => eprintln!("{}: done", short_digest(&digest)),
            Event::LayerFailed { digest } => eprintln!("{}: failed", short_digest(&digest)),
            Event::LayerRetrying {
                digest,
                attempt,
                error,
            } => {
                eprintln!(
                    "{}: attempt {attempt} failed ({error}); retrying",
                    short_digest(&digest)
                )
            }
            Event::LayerProgress { .. } => {}
        }
    }
}

#[derive(Default)]
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn bar(&self, key: &str, size: u64) -> ProgressBar {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        bars.entry(key.to_string())
            .or_insert_with(|| {
                self.multi.set_draw_target(ProgressDrawTarget::stderr());
                let bar = self.multi.add(ProgressBar::new(size));
                let style = ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {bytes:>10}/{total_bytes:<10} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_prefix(key.to_string());
                bar
            })
            .clone()
    }
}

impl Progress for Bars {
    fn event(&self, event: Event) {
        match event {
            Event::Resolved {
                reference,
                manifest,
                ..
            } => {
                let _ = self
                    .multi
                    .println(format!("{reference}: resolved to {manifest}"));
            }
            Event::LayerStarted {
                digest,
                size,
                from_store,
            } => {
                let bar = self.bar(short_digest(&digest), size);
                if from_store {
                    bar.set_message("unpacking");
                } else {
                    bar.set_message("pulling");
                }
            }
            Event::LayerProgress { digest, done } => {
                self.bar(short_digest(&digest), 0).set_position(done)
            }
            Event::LayerCached { digest } => {
                self.bar(short_digest(&digest), 0)
                    .finish_with_message("already present");
            }
            Event::LayerDone { digest } => {
                let bar = self.bar(short_digest(&digest), 0);
                bar.set_position(bar.length().unwrap_or(0));
                bar.finish_with_message("done");
            }
            Event::LayerFailed { digest } => self
                .bar(short_digest(&digest), 0)
                .abandon_with_message("failed"),
            Event::LayerRetrying {
                digest, attempt, ..
            } => {
                let bar = self.bar(short_digest(&digest), 0);
                bar.set_position(0);
                bar.set_message(format!("retrying ({attempt} failed)"));
            }
        }
    }
}
