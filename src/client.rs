//! The CLI's side of the agent API: HTTP/1.1 over the agent's Unix socket (hyper), JSON
//! bodies, NDJSON and raw streams, and the upgraded attach connection.

use std::path::PathBuf;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::{ErrorBody, ErrorCode};

/// The agent answered with an error.
#[derive(Debug)]
pub struct ApiFailure {
    /// The agent's error code.
    pub code: ErrorCode,
    /// What the error is about (an id, name, image reference or path).
    pub about: Option<String>,
    /// The agent's message.
    pub message: String,
    /// Exit code the CLI should use (run/exec).
    pub exit_code: Option<i32>,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiFailure {}

/// A connection factory for the agent's socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

/// An upgraded attach connection.
pub type Attached = TokioIo<hyper::upgrade::Upgraded>;

impl Client {
    /// Talks to the agent at `socket`.
    pub fn new(socket: PathBuf) -> Self {
        Client { socket }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        upgrade: bool,
    ) -> Result<Response<Incoming>> {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.with_context(|| {
            format!(
                "cannot reach the berth agent at {} (is `berth agent` running? set --socket or BERTH_SOCKET)",
                self.socket.display()
            )
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("talking to the agent")?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "berth");
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        if upgrade {
            req = req
                .header(header::CONNECTION, "upgrade")
                .header(header::UPGRADE, "berth-attach");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let resp = sender
            .send_request(req)
            .await
            .context("talking to the agent")?;
        check(resp).await
    }

    /// GET with a JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.send(Method::GET, path, None, false).await?;
        json(resp).await
    }

    /// POST of a JSON body with a JSON answer.
    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let resp = self
            .send(Method::POST, path, Some(serde_json::to_vec(body)?), false)
            .await?;
        json(resp).await
    }

    /// POST without body or answer.
    pub async fn post_empty(&self, path: &str) -> Result<()> {
        self.send(Method::POST, path, None, false).await?;
        Ok(())
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.send(Method::DELETE, path, None, false).await?;
        Ok(())
    }

    /// A streamed answer (NDJSON or raw).
    pub async fn stream(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Lines> {
        let resp = self.send(method, path, body, false).await?;
        Ok(Lines {
            body: resp.into_body(),
            buf: Vec::new(),
            done: false,
        })
    }

    /// Upgrades to the raw supervisor protocol.
    pub async fn upgrade(&self, path: &str) -> Result<Attached> {
        let resp = self.send(Method::POST, path, None, true).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            anyhow::bail!("the agent did not switch protocols ({})", resp.status());
        }
        let upgraded = hyper::upgrade::on(resp).await.context("attaching")?;
        Ok(TokioIo::new(upgraded))
    }
}

async fn check(resp: Response<Incoming>) -> Result<Response<Incoming>> {
    let status = resp.status();
    if status.is_success() || status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(resp);
    }
    let bytes = resp.into_body().collect().await?.to_bytes();
    let body: ErrorBody = serde_json::from_slice(&bytes).unwrap_or(ErrorBody {
        code: ErrorCode::Unknown,
        message: String::from_utf8_lossy(&bytes).into_owned(),
        exit_code: None,
        about: None,
    });
    Err(ApiFailure {
        code: body.code,
        message: body.message,
        exit_code: body.exit_code,
        about: body.about,
    }
    .into())
}

async fn json<T: DeserializeOwned>(resp: Response<Incoming>) -> Result<T> {
    let bytes = resp.into_body().collect().await?.to_bytes();
    let bytes = if bytes.is_empty() {
        Bytes::from_static(b"null")
    } else {
        bytes
    };
    serde_json::from_slice(&bytes).context("reading the agent's answer")
}

/// A streamed body, read as lines or chunks.
#[derive(Debug)]
pub struct Lines {
    body: Incoming,
    buf: Vec<u8>,
    done: bool,
}

impl Lines {
    /// The next chunk of bytes, `None` at the end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            match self.body.frame().await {
                None => return Ok(None),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// The next line without its newline, `None` at the end.
    pub async fn line(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(Some(line[..line.len() - 1].to_vec()));
            }
            if self.done {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(std::mem::take(&mut self.buf)));
            }
            match self.chunk().await? {
                Some(data) => self.buf.extend_from_slice(&data),
                None => self.done = true,
            }
        }
    }
}
