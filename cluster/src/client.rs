use std::time::Duration;

use berth_api::{ErrorBody, ErrorCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A failed request to the master.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer: connection refused, TLS handshake failed (a wrong CA), a timeout.
    #[error("{url}: {reason}")]
    Transport {
        /// The request's URL.
        url: String,
        /// Why, with its causes.
        reason: String,
    },
    /// The master answered with an error.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Machine-readable code.
        code: ErrorCode,
        /// The master's message.
        message: String,
    },
    /// The answer was not what the API says.
    #[error("{url}: unreadable answer: {reason}")]
    Decode {
        /// The request's URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

impl ClientError {
    /// The master's error code, if it answered.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The error and its sources, joined: reqwest hides the useful part in its sources.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// HTTPS to one master, keep-alive connections pooled.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
}

impl Client {
    /// A client of `base` (`https://HOST:PORT`) with a TLS configuration from [`crate::tls`].
    pub fn new(
        base: &str,
        tls: rustls::ClientConfig,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .http1_only()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| ClientError::Transport {
                url: base.to_string(),
                reason: chain(&e),
            })?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            timeout,
        })
    }

    /// The master's URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.http.get(self.url(path)), path).await
    }

    /// `POST path` with a JSON body.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(self.http.post(self.url(path)).json(body), path)
            .await
    }

    /// `POST path` whose answer the master may hold up to `hold` (a heartbeat): the
    /// request's timeout is the client's plus `hold`.
    pub async fn post_waiting<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        hold: Duration,
    ) -> Result<T, ClientError> {
        let req = self
            .http
            .post(self.url(path))
            .json(body)
            .timeout(self.timeout + hold);
        self.send(req, path).await
    }

    /// `DELETE path`.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.http.delete(self.url(path)), path).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let resp = req.send().await.map_err(|e| ClientError::Transport {
            url: url.clone(),
            reason: chain(&e),
        })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| ClientError::Transport {
            url: url.clone(),
            reason: chain(&e),
        })?;
        if !status.is_success() {
            let parsed: Option<ErrorBody> = serde_json::from_slice(&body).ok();
            return Err(match parsed {
                Some(b) => ClientError::Api {
                    status: status.as_u16(),
                    code: b.code,
                    message: b.message,
                },
                None => ClientError::Api {
                    status: status.as_u16(),
                    code: ErrorCode::Unknown,
                    message: format!("{status}: {}", String::from_utf8_lossy(&body)),
                },
            });
        }
        let body = if body.is_empty() {
            &b"null"[..]
        } else {
            &body[..]
        };
        serde_json::from_slice(body).map_err(|e| ClientError::Decode {
            url,
            reason: e.to_string(),
        })
    }
}
