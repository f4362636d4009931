use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;

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

/// HTTPS to the masters, keep-alive connections pooled. With several (`https://a,https://b`)
/// requests go to the one that answered last; one that does not answer, or answers that
/// no master leads, is passed over for the next; a follower's redirect to the leader is
/// followed, and the leader is asked first from then on.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    bases: Arc<Mutex<Vec<String>>>,
    current: Arc<AtomicUsize>,
    timeout: Duration,
}

/// `scheme://host:port` of a URL.
fn origin(url: &reqwest::Url) -> String {
    match url.port() {
        Some(p) => format!("{}://{}:{p}", url.scheme(), url.host_str().unwrap_or("")),
        None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or("")),
    }
}

/// Whether another master may answer what this one did not.
fn try_next(e: &ClientError) -> bool {
    matches!(e, ClientError::Transport { .. }) || e.code() == Some(ErrorCode::Unavailable)
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
        let bases: Vec<String> = base
            .split(',')
            .map(|b| b.trim().trim_end_matches('/').to_string())
            .filter(|b| !b.is_empty())
            .collect();
        Ok(Self {
            http,
            bases: Arc::new(Mutex::new(bases)),
            current: Arc::default(),
            timeout,
        })
    }

    /// The master asked first now (the leader, once one answered).
    pub fn base(&self) -> String {
        let bases = self.bases();
        let i = self.current.load(Ordering::Relaxed);
        bases.get(i).or(bases.first()).cloned().unwrap_or_default()
    }

    /// Every master it knows.
    pub fn bases(&self) -> Vec<String> {
        self.bases.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// `GET path`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(Method::GET, path, None, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(Method::POST, path, Some(encode(body)?), None)
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
        self.send(Method::POST, path, Some(encode(body)?), Some(hold))
            .await
    }

    /// `DELETE path`.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(Method::DELETE, path, None, None).await
    }

    /// Asks the current master, then each other one in turn while they cannot answer.
    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        hold: Option<Duration>,
    ) -> Result<T, ClientError> {
        let bases = self.bases();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for k in 0..bases.len().max(1) {
            let i = (start + k) % bases.len().max(1);
            let base = bases.get(i).cloned().unwrap_or_default();
            match self
                .once(&base, method.clone(), path, body.clone(), hold)
                .await
            {
                Ok((answered_by, v)) => {
                    self.remember(i, &base, &answered_by);
                    return Ok(v);
                }
                Err(e) if bases.len() > 1 && try_next(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Transport {
            url: path.to_string(),
            reason: "no master URL".into(),
        }))
    }

    /// The master that answered is asked first next time; one a redirect named is added.
    fn remember(&self, i: usize, base: &str, answered_by: &str) {
        if answered_by == base {
            self.current.store(i, Ordering::Relaxed);
            return;
        }
        if let Ok(mut bases) = self.bases.lock() {
            let j = match bases.iter().position(|b| b == answered_by) {
                Some(j) => j,
                None => {
                    bases.push(answered_by.to_string());
                    bases.len() - 1
                }
            };
            self.current.store(j, Ordering::Relaxed);
        }
    }

    async fn once<T: DeserializeOwned>(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        hold: Option<Duration>,
    ) -> Result<(String, T), ClientError> {
        let url = format!("{base}{path}");
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        if let Some(h) = hold {
            req = req.timeout(self.timeout + h);
        }
        let resp = req.send().await.map_err(|e| ClientError::Transport {
            url: url.clone(),
            reason: chain(&e),
        })?;
        let answered_by = origin(resp.url());
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
        serde_json::from_slice(body)
            .map(|v| (answered_by, v))
            .map_err(|e| ClientError::Decode {
                url,
                reason: e.to_string(),
            })
    }
}

fn encode<B: Serialize + ?Sized>(body: &B) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(body).map_err(|e| ClientError::Decode {
        url: String::new(),
        reason: format!("encoding the request: {e}"),
    })
}
