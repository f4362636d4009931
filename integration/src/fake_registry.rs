//! A small HTTP/1.1 registry serving an OCI layout, for the cases a real registry will not
//! produce: Docker Hub-style bearer tokens (a token endpoint that wants basic credentials),
//! 5xx answers, manifests that are not JSON, blobs that are not what they claim.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;
use base64_lite::encode as b64;

/// A canned answer.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    /// Announce this many bytes but send `body` only (a truncated transfer).
    pub claimed_length: Option<usize>,
    /// Send this many bytes of `body`, then hang (a stalled transfer, to kill a client
    /// mid-download).
    pub stall_after: Option<usize>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type: content_type.into(),
            body: body.into(),
            claimed_length: None,
            stall_after: None,
        }
    }
}

/// Routes are exact request paths (`/v2/<repo>/manifests/<tag>`, `/v2/<repo>/blobs/<digest>`).
#[derive(Debug)]
pub struct FakeRegistry {
    port: u16,
    routes: Arc<Mutex<HashMap<String, Vec<Response>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Requests seen, for assertions.
    pub log: Arc<Mutex<Vec<String>>>,
}

/// Bearer auth: the token endpoint wants these basic credentials (or none, with
/// `anonymous`, as Docker Hub for public images) and hands out `token`.
#[derive(Clone, Debug)]
pub struct BearerAuth {
    pub user: String,
    pub password: String,
    pub token: String,
    pub anonymous: bool,
}

mod base64_lite {
    pub fn encode(input: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

impl FakeRegistry {
    pub fn start(auth: Option<BearerAuth>) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let routes: Arc<Mutex<HashMap<String, Vec<Response>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, s, l) = (routes.clone(), stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (r, l, a) = (r.clone(), l.clone(), auth.clone());
                        std::thread::spawn(move || {
                            let _ = serve(stream, &r, &l, a.as_ref(), port);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self {
            port,
            routes,
            stop,
            thread: Some(thread),
            log,
        })
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn route(&self, path: &str, response: Response) {
        self.route_sequence(path, vec![response]);
    }

    /// Answers `path` with each response in turn; the last one then stays.
    pub fn route_sequence(&self, path: &str, responses: Vec<Response>) {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_string(), responses);
    }

    /// Serves every manifest and blob of the OCI layout at `layout` under `repo`, the
    /// index.json entries by their ref.name tag.
    pub fn serve_layout(&self, layout: &Path, repo: &str) -> Result<()> {
        for entry in std::fs::read_dir(layout.join("blobs/sha256"))? {
            let entry = entry?;
            let hex = entry.file_name().to_string_lossy().into_owned();
            let body = std::fs::read(entry.path())?;
            let media_type = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    v.get("mediaType")
                        .and_then(|m| m.as_str())
                        .map(String::from)
                });
            if let Some(mt) = &media_type {
                self.route(
                    &format!("/v2/{repo}/manifests/sha256:{hex}"),
                    Response::new(200, mt, body.clone()),
                );
            }
            self.route(
                &format!("/v2/{repo}/blobs/sha256:{hex}"),
                Response::new(200, "application/octet-stream", body),
            );
        }
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
        for m in index["manifests"].as_array().cloned().unwrap_or_default() {
            let (Some(tag), Some(digest)) = (
                m["annotations"]["org.opencontainers.image.ref.name"].as_str(),
                m["digest"].as_str(),
            ) else {
                continue;
            };
            let hex = digest.trim_start_matches("sha256:");
            let body = std::fs::read(layout.join("blobs/sha256").join(hex))?;
            let mt = m["mediaType"]
                .as_str()
                .unwrap_or("application/vnd.oci.image.manifest.v1+json");
            self.route(
                &format!("/v2/{repo}/manifests/{tag}"),
                Response::new(200, mt, body),
            );
        }
        Ok(())
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    stream: TcpStream,
    routes: &Mutex<HashMap<String, Vec<Response>>>,
    log: &Mutex<Vec<String>>,
    auth: Option<&BearerAuth>,
    port: u16,
) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("/").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        if let Some(len) = headers
            .get("content-length")
            .and_then(|l| l.parse::<usize>().ok())
        {
            let mut body = vec![0; len];
            reader.read_exact(&mut body)?;
        }
        log.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{method} {target}"));
        let path = target.split('?').next().unwrap_or("").to_string();
        let response = respond(&path, &target, &headers, routes, auth, port);
        write_response(&mut stream, &method, &response)?;
        if response.claimed_length.is_some() {
            return Ok(()); // close mid-body
        }
    }
}

fn respond(
    path: &str,
    target: &str,
    headers: &HashMap<String, String>,
    routes: &Mutex<HashMap<String, Vec<Response>>>,
    auth: Option<&BearerAuth>,
    port: u16,
) -> Response {
    if let Some(auth) = auth {
        if path == "/token" {
            let want = format!(
                "Basic {}",
                b64(format!("{}:{}", auth.user, auth.password).as_bytes())
            );
            let creds_ok = headers.get("authorization") == Some(&want)
                || (auth.anonymous && !headers.contains_key("authorization"));
            if !creds_ok || !target.contains("scope=") {
                return Response::new(401, "application/json", r#"{"details":"bad credentials"}"#);
            }
            return Response::new(
                200,
                "application/json",
                format!(r#"{{"token":"{}","expires_in":300}}"#, auth.token),
            );
        }
        if headers.get("authorization") != Some(&format!("Bearer {}", auth.token)) {
            let mut r = Response::new(
                401,
                "application/json",
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            );
            r.content_type = format!(
                "application/json\r\nWww-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake\""
            );
            return r;
        }
    }
    if path == "/v2/" || path == "/v2" {
        return Response::new(200, "application/json", "{}");
    }
    let mut routes = routes.lock().unwrap_or_else(|p| p.into_inner());
    let next = routes.get_mut(path).and_then(|seq| {
        if seq.len() > 1 {
            Some(seq.remove(0))
        } else {
            seq.first().cloned()
        }
    });
    next.unwrap_or_else(|| {
        Response::new(
            404,
            "application/json",
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}"#,
        )
    })
}

fn write_response(stream: &mut TcpStream, method: &str, r: &Response) -> Result<()> {
    let len = r.claimed_length.unwrap_or(r.body.len());
    let mut head = format!(
        "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {len}\r\n",
        r.status, r.content_type
    );
    if r.status == 200 && !r.body.is_empty() {
        head.push_str(&format!(
            "Docker-Content-Digest: sha256:{}\r\n",
            crate::layout::sha256_hex(&r.body)
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if method != "HEAD" {
        if let Some(n) = r.stall_after {
            stream.write_all(&r.body[..n.min(r.body.len())])?;
            stream.flush()?;
            std::thread::sleep(Duration::from_secs(30));
            return Ok(());
        }
        stream.write_all(&r.body)?;
    }
    stream.flush()?;
    Ok(())
}
