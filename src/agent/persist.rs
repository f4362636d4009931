//! The state writer: every fsync'd write of a container or pod record, off the owner.
//!
//! The owner changes a record in memory and hands its bytes here, so an fsync (milliseconds
//! on a busy disk) never holds up `ps` or another client. One thread writes in the order the
//! writes came, so a newer state of a file never loses to an older one; when several writes
//! of one file wait, only the newest is written and all of them hear its result. A failure
//! is logged and journaled as an `error` event on the owner, and is the result of the
//! [`Written`] a caller may wait on before answering its client: an answered change is on
//! disk, or the client was told it is not.

use std::collections::HashMap;
use std::path::PathBuf;

use tokio::sync::{mpsc, oneshot};

use super::actions::Action;
use super::error::ApiError;
use super::events::Event;
use super::node::Then;

/// What a write is about: named in the log, the `error` event and the caller's error.
#[derive(Debug, Clone)]
pub struct Subject {
    /// `container` or `pod`.
    pub kind: &'static str,
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The change being recorded ("recording an operator's stop").
    pub what: String,
}

struct Job {
    /// `None`: a barrier ([`StateWriter::flush`]).
    write: Option<(PathBuf, Vec<u8>, Subject)>,
    done: oneshot::Sender<Result<(), String>>,
}

/// The handle the owner (and its tasks) queue writes on.
#[derive(Debug, Clone)]
pub struct StateWriter {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").finish_non_exhaustive()
    }
}

impl StateWriter {
    /// Starts the writer thread; failures are reported to the owner through `owner`.
    pub fn start(owner: mpsc::Sender<Action>) -> std::io::Result<Self> {
        let (jobs, queue) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("berth-state-writer".into())
            .spawn(move || run(&queue, &owner))?;
        Ok(Self { jobs })
    }

    /// Queues `value` to be written to `path` atomically.
    pub fn write<T: serde::Serialize>(
        &self,
        path: PathBuf,
        value: &T,
        subject: Subject,
    ) -> Written {
        let (done, rx) = oneshot::channel();
        let bytes = match serde_json::to_vec_pretty(value) {
            Ok(b) => b,
            Err(e) => {
                let _ = done.send(Err(format!("serializing: {e}")));
                return Written { rx, subject };
            }
        };
        let job = Job {
            write: Some((path, bytes, subject.clone())),
            done,
        };
        if let Err(std::sync::mpsc::SendError(job)) = self.jobs.send(job) {
            let _ = job.done.send(Err("the state writer has stopped".into()));
        }
        Written { rx, subject }
    }

    /// Waits until every write queued before it is on disk (at shutdown).
    pub async fn flush(&self) {
        let (done, rx) = oneshot::channel();
        if self.jobs.send(Job { write: None, done }).is_ok() {
            let _ = rx.await;
        }
    }
}

/// A queued write. Wait on it with [`Written::result`] before answering a client, or
/// leave it with [`Written::reported`]: a failure is journaled and logged either way.
#[must_use = "wait for the write with .result(), or leave it to the journal with .reported()"]
#[derive(Debug)]
pub struct Written {
    rx: oneshot::Receiver<Result<(), String>>,
    subject: Subject,
}

impl Written {
    /// Nothing to write: a success at once.
    pub fn nothing(subject: Subject) -> Self {
        let (done, rx) = oneshot::channel();
        let _ = done.send(Ok(()));
        Self { rx, subject }
    }

    /// The write's outcome, as an error for the caller.
    pub async fn result(self) -> Result<(), ApiError> {
        let outcome = self
            .rx
            .await
            .unwrap_or_else(|_| Err("the state writer has stopped".into()));
        outcome.map_err(|e| caller_error(&self.subject, &e))
    }

    /// Nobody waits: the journal and the log carry a failure.
    pub fn reported(self) {}
}

fn caller_error(s: &Subject, error: &str) -> ApiError {
    ApiError::internal(format!(
        "{} {}: {}: the record could not be written ({error}); the agent goes on, but a \
         restart would find the older record",
        s.kind, s.name, s.what
    ))
    .about(&s.name)
}

/// The writer thread: takes what is queued, keeps the newest bytes of each file (written
/// where its last write stood in the queue), writes them, answers every waiter.
fn run(queue: &std::sync::mpsc::Receiver<Job>, owner: &mpsc::Sender<Action>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        let mut order: Vec<PathBuf> = Vec::new();
        let mut newest: HashMap<PathBuf, (Vec<u8>, Subject)> = HashMap::new();
        let mut waiters: HashMap<PathBuf, Vec<oneshot::Sender<Result<(), String>>>> =
            HashMap::new();
        let mut barriers = Vec::new();
        for job in batch {
            match job.write {
                Some((path, bytes, subject)) => {
                    order.retain(|p| p != &path);
                    order.push(path.clone());
                    newest.insert(path.clone(), (bytes, subject));
                    waiters.entry(path).or_default().push(job.done);
                }
                None => barriers.push(job.done),
            }
        }
        for path in order {
            let Some((bytes, subject)) = newest.remove(&path) else {
                continue;
            };
            let result =
                berth_fsutil::atomic::write_atomic(&path, &bytes, 0o600).map_err(|e| e.to_string());
            if let Err(e) = &result {
                report(owner, subject, e.clone());
            }
            for done in waiters.remove(&path).unwrap_or_default() {
                let _ = done.send(result.clone());
            }
        }
        for done in barriers {
            let _ = done.send(Ok(()));
        }
    }
}

/// A failed write, logged and journaled on the owner.
fn report(owner: &mpsc::Sender<Action>, s: Subject, error: String) {
    tracing::error!(kind = s.kind, id = %s.id, error = %error, "{}", s.what);
    let then = Then(Box::new(move |node| {
        node.emit(
            Event::new(s.kind, "error", &s.id, &s.name)
                .with("message", format!("{}: {error}", s.what)),
        );
    }));
    // Gone only when the agent stops; the log has it.
    let _ = owner.blocking_send(Action::Continue("journaling a failed state write", then));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn subject() -> Subject {
        Subject {
            kind: "container",
            id: "c1".into(),
            name: "web".into(),
            what: "recording a test".into(),
        }
    }

    #[tokio::test]
    async fn the_newest_write_wins_and_a_failure_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let writer = StateWriter::start(tx).unwrap();
        let path = dir.path().join("container.json");
        let writes: Vec<Written> = (0..20)
            .map(|n| writer.write(path.clone(), &n, subject()))
            .collect();
        for w in writes {
            w.result().await.unwrap();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "19");

        // A directory in the file's place: the rename fails.
        let broken = dir.path().join("pod.json");
        std::fs::create_dir(&broken).unwrap();
        let err = writer
            .write(broken, &1, subject())
            .result()
            .await
            .unwrap_err();
        assert!(err.message.contains("recording a test"), "{}", err.message);
        assert!(
            err.message.contains("could not be written"),
            "{}",
            err.message
        );
        assert!(matches!(rx.recv().await, Some(Action::Continue(..))));
        writer.flush().await;
    }
}
