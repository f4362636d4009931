//! Berth's cluster client: what an agent (and the CLI, and the simulator) needs to talk to
//! `berth master` over HTTPS. The wire types are `berth_api::cluster`; this crate adds the
//! transport and the agent side of the protocol, kept apart from `berth-api` so that crate
//! stays free of TLS and HTTP.

/// HTTPS requests to the master with the pinned CA and an optional client certificate;
/// error answers decoded into their code and message.
pub mod client;
/// The agent side: join once (token, CA pinned by hash), register, then heartbeat the usage
/// and pod report and converge on the desired set, level-triggered.
pub mod member;
/// rustls configurations: the cluster CA as the only root, the CA hash (`sha256:…`), the
/// one unverified fetch of the CA that the hash then checks.
pub mod tls;

pub use client::{Client, ClientError};
