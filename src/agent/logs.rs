//! `GET /v1/containers/{id}/logs`: the stored records (or the last `tail`), then with
//! `follow` whatever the supervisor appends until the container exits or the client
//! leaves. The owner resolves the container and starts the stream; the stream is a task the
//! owner holds ([`Node::streams`]), so it ends with the agent, and its file reads run on the
//! blocking pool.

use std::time::Duration;

use tokio::sync::mpsc;

use super::node::{Node, Reply};
use crate::api::LogsQuery;

/// How often a follower looks for new records between exits.
const POLL: Duration = Duration::from_millis(100);

/// Starts streaming container `key`'s logs; the caller gets the chunks' receiver.
pub fn stream(node: &mut Node, key: &str, q: LogsQuery, reply: Reply<mpsc::Receiver<Vec<u8>>>) {
    let c = match node.resolve(key) {
        Ok(c) => c,
        Err(e) => {
            let _ = reply.send(Err(e));
            return;
        }
    };
    let dir = c.dir.logs();
    let mut exit = c.exit.subscribe();
    let (out, rx) = mpsc::channel::<Vec<u8>>(16);
    if reply.send(Ok(rx)).is_err() {
        return;
    }
    node.streams.spawn(async move {
        let d = dir.clone();
        let first = tokio::task::spawn_blocking(move || {
            let all = berth_runtime::logs::read_all(&d, q.tail);
            (all, berth_runtime::logs::LogFollower::at_end(&d))
        })
        .await;
        let Ok((Ok(all), mut follower)) = first else {
            return;
        };
        if !all.is_empty() && out.send(all).await.is_err() {
            return;
        }
        if !q.follow {
            return;
        }
        loop {
            // Read after the exit is known: the supervisor wrote the last record before it.
            let exited = exit.borrow().is_some();
            let Ok((f, chunk)) = tokio::task::spawn_blocking(move || {
                let c = follower.poll();
                (follower, c)
            })
            .await
            else {
                return;
            };
            follower = f;
            if let Ok(chunk) = chunk {
                if !chunk.is_empty() && out.send(chunk).await.is_err() {
                    return;
                }
            }
            if exited {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = exit.changed() => {}
                _ = out.closed() => return,
            }
        }
    });
}
