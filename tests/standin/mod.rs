//! A minimal HTTP/1.1 server on loopback for stand-ins of keystore services that have no
//! emulator to run here: one thread accepts, one thread per connection, one request per
//! connection, answers with `Content-Length` and `Connection: close`.
#![allow(dead_code)]

pub mod fortanix;
pub mod upstream;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Request {
    pub method: String,
    pub path: String,
    /// After `?`, "" when none.
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The request target as sent: the path, and `?query` when there is one.
    pub fn target(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as a JSON object, or `None`.
    pub fn json(&self) -> Option<simd_json::OwnedValue> {
        let mut b = self.body.clone();
        let v = simd_json::to_owned_value(&mut b).ok()?;
        use simd_json::prelude::*;
        v.as_object()?;
        Some(v)
    }
}

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Other header lines (`Name: value`).
    pub headers: Vec<String>,
}

impl Response {
    pub fn json(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: body.into().into_bytes(),
            headers: Vec::new(),
        }
    }

    /// Adds a header line (`Name: value`).
    pub fn with_header(mut self, line: impl Into<String>) -> Response {
        self.headers.push(line.into());
        self
    }
    pub fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain",
            body: body.as_bytes().to_vec(),
            headers: Vec::new(),
        }
    }
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            content_type: "",
            body: Vec::new(),
            headers: Vec::new(),
        }
    }
}

pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

pub struct StandIn {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StandIn {
    pub fn start(handler: Handler) -> StandIn {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in l.incoming() {
                if s.load(Ordering::SeqCst) {
                    return; // drops the listener: connections are refused from now on
                }
                let Ok(conn) = conn else { continue };
                let h = handler.clone();
                std::thread::spawn(move || serve(conn, h));
            }
        });
        StandIn {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Like [`StandIn::start`], over TLS with a fresh self-signed certificate for
    /// 127.0.0.1, whose PEM (the CA a client must trust) is returned.
    pub fn start_tls(handler: Handler) -> (StandIn, String) {
        let (cert, key, cert_pem) =
            kes::auth::cert::self_signed_server_cert(&["127.0.0.1".parse().unwrap()], &[]).unwrap();
        let config = Arc::new(
            rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .unwrap(),
        );
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in l.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let h = handler.clone();
                let config = config.clone();
                std::thread::spawn(move || {
                    let tls = rustls::ServerConnection::new(config).unwrap();
                    serve(rustls::StreamOwned::new(tls, conn), h)
                });
            }
        });
        (
            StandIn {
                port,
                stop,
                thread: Some(thread),
            },
            cert_pem,
        )
    }

    pub fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops listening (the service is "down").
    pub fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(("127.0.0.1", self.port));
            let _ = t.join();
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve<S: Read + Write + Timeout>(mut conn: S, handler: Handler) {
    conn.set_timeout(Duration::from_secs(10));
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let (req, head) = loop {
        let n = match conn.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&tmp[..n]);
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Request::new(&mut hs);
        if let Ok(httparse::Status::Complete(head)) = r.parse(&buf) {
            let target = r.path.unwrap_or("").to_string();
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p.to_string(), q.to_string()),
                None => (target, String::new()),
            };
            let req = Request {
                method: r.method.unwrap_or("").to_string(),
                path,
                query,
                headers: r
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).to_string(),
                        )
                    })
                    .collect(),
                body: Vec::new(),
            };
            break (req, head);
        }
    };
    let mut req = req;
    let len: usize = req
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head + len {
        match conn.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    req.body = buf[head..head + len].to_vec();
    let resp = handler(&req);
    let mut out = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", resp.status);
    if !resp.content_type.is_empty() {
        out.push_str(&format!("Content-Type: {}\r\n", resp.content_type));
    }
    for line in &resp.headers {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", resp.body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&resp.body);
    let _ = conn.write_all(&bytes);
    let _ = conn.flush();
    conn.close();
}

/// Read timeouts and an orderly end, for plain and TLS connections alike.
trait Timeout {
    fn set_timeout(&mut self, t: Duration);
    fn close(&mut self) {}
}

impl Timeout for TcpStream {
    fn set_timeout(&mut self, t: Duration) {
        let _ = self.set_read_timeout(Some(t));
    }
}

impl Timeout for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn set_timeout(&mut self, t: Duration) {
        let _ = self.sock.set_read_timeout(Some(t));
    }
    fn close(&mut self) {
        self.conn.send_close_notify();
        let _ = self.conn.complete_io(&mut self.sock);
    }
}

/// Random hex (tokens, ids).
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
    hex::encode(b)
}

/// `a=1&b=2` → pairs.
pub fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

/// The JSON string escaping of `s`, quotes included.
pub fn q(s: &str) -> String {
    let mut out = Vec::new();
    kes::api::json::write_string(&mut out, s);
    String::from_utf8(out).unwrap()
}

/// Whether the request's token (header `header`, less its `scheme` prefix such as
/// `"Bearer "`) is one of `tokens` and unexpired; if not, the request is recorded in
/// `rejected` as "no live token".
pub fn token_is_live(
    req: &Request,
    header: &str,
    scheme: &str,
    tokens: &HashMap<String, Instant>,
    rejected: &mut Vec<String>,
) -> bool {
    let live = req
        .header(header)
        .and_then(|v| v.strip_prefix(scheme))
        .and_then(|t| tokens.get(t))
        .is_some_and(|exp| Instant::now() < *exp);
    if !live {
        rejected.push(format!("{} {}: no live token", req.method, req.path));
    }
    live
}

/// A fresh token (`prefix` and `bytes` random bytes in hex), live for `ttl`, added to
/// `tokens`.
pub fn issue_token(
    tokens: &mut HashMap<String, Instant>,
    ttl: Duration,
    prefix: &str,
    bytes: usize,
) -> String {
    let token = format!("{prefix}{}", random_hex(bytes));
    tokens.insert(token.clone(), Instant::now() + ttl);
    token
}

/// [`token_is_live`] for `Authorization: Bearer <token>`.
pub fn bearer_is_live(
    req: &Request,
    tokens: &HashMap<String, Instant>,
    rejected: &mut Vec<String>,
) -> bool {
    token_is_live(req, "authorization", "Bearer ", tokens, rejected)
}

/// Through a kes node started with a wrong login credential (`secret`): create and read
/// answer 502, and the secret never reaches its log. Shared by the login-based keystores.
pub fn wrong_credentials_answer_502(node: &crate::common::BinServer, api_key: &str, secret: &str) {
    let mut c = crate::common::client_for(&format!("https://{}", node.addr), api_key);
    crate::common::assert_error(
        &c.request("POST", "/v1/key/create/x", None, &[]).unwrap(),
        502,
        "failed to create key",
    );
    crate::common::assert_error(
        &c.request("POST", "/v1/key/generate/x", None, &[]).unwrap(),
        502,
        "failed to read key",
    );
    assert!(!node.stderr_text().contains(secret), "the secret leaked");
}

/// A store over `handler` served with TLS: `open(url, Some(ca))` (the block's CA) creates,
/// reads and lists; without the CA the server's certificate is refused.
pub fn trusts_only_the_blocks_ca(
    handler: Handler,
    open: impl Fn(String, Option<std::path::PathBuf>) -> Box<dyn kes::keystore::KeyStore>,
) {
    let (standin, ca_pem) = StandIn::start_tls(handler);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let trusted = open(standin.https_url(), Some(ca));
    trusted.create("tls-key", b"v").unwrap();
    assert_eq!(trusted.get("tls-key").unwrap().expose(), b"v");
    assert_eq!(trusted.list("tls").unwrap(), vec!["tls-key".to_string()]);
    let err = open(standin.https_url(), None)
        .get("tls-key")
        .unwrap_err()
        .to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

/// The end of a login-based keystore's lifecycle through `node`: revoked tokens (`revoke`)
/// make kes log in again and carry on, and only that one call was refused (`rejected`);
/// then the stand-in goes away (`stop`) and clients see the outage as
/// [`crate::common::lifecycle::outage_behaviour`] says; `secret` never reaches the log.
#[allow(clippy::too_many_arguments)]
pub fn relogin_then_outage(
    node: &crate::common::BinServer,
    api_key: &str,
    revoke: impl Fn(),
    logins: impl Fn() -> usize,
    rejected: impl Fn() -> Vec<String>,
    stop: impl FnOnce(),
    secret: &str,
) {
    let endpoint = format!("https://{}", node.addr);
    crate::common::lifecycle::relogin_after_revocation(&endpoint, api_key, revoke, logins);
    let rejected = rejected();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0].contains("no live token"), "{rejected:?}");
    crate::common::lifecycle::outage_behaviour(
        &endpoint,
        api_key,
        "upstream-key",
        "page-000",
        stop,
    );
    assert!(
        !node.stderr_text().contains(secret),
        "the credential leaked into the log"
    );
}

/// `k` = `v` created through `store`, a second create refused as existing, and read back.
pub fn created_once_and_read(store: &dyn kes::keystore::KeyStore) {
    store.create("k", b"v").unwrap();
    assert!(matches!(
        store.create("k", b"v"),
        Err(kes::keystore::StoreError::AlreadyExists)
    ));
    assert_eq!(store.get("k").unwrap().expose(), b"v");
}

/// `k` (the only key) listed, deleted, and then missing.
pub fn listed_then_deleted(store: &dyn kes::keystore::KeyStore) {
    assert_eq!(store.list("").unwrap(), vec!["k".to_string()]);
    store.delete("k").unwrap();
    assert!(matches!(
        store.get("k"),
        Err(kes::keystore::StoreError::NotFound)
    ));
}
