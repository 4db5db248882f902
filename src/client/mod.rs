//! A small blocking HTTPS/1.1 client for the `kes` CLI commands (storage-and-config §6.3):
//! mutual TLS with an API key or a certificate/key pair, keep-alive connections, failover
//! between several endpoints.

mod http;
#[cfg(test)]
mod tests;
mod tls;

pub use tls::build as rustls_config;
pub use tls::AcceptAnyServerCert;

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConnection, StreamOwned};
use rustls_pki_types::ServerName;

use crate::auth::apikey::ApiKey;

pub use http::MAX_RESPONSE;

/// Environment variables naming the server endpoint(s), first set one wins.
pub const SERVER_ENV: &[&str] = &["MINIO_KES_SERVER", "KES_SERVER", "MINIO_KMS_KES_ENDPOINT"];
/// Environment variables holding the API key.
pub const API_KEY_ENV: &[&str] = &["MINIO_KES_API_KEY", "KES_API_KEY", "MINIO_KMS_KES_API_KEY"];
/// Environment variables naming the client private key file.
pub const KEY_FILE_ENV: &[&str] = &[
    "MINIO_KES_KEY_FILE",
    "KES_CLIENT_KEY",
    "MINIO_KES_CLIENT_KEY",
];
/// Environment variables naming the client certificate file.
pub const CERT_FILE_ENV: &[&str] = &[
    "MINIO_KES_CERT_FILE",
    "KES_CLIENT_CERT",
    "MINIO_KES_CLIENT_CERT",
];
/// Endpoint used when no server is configured.
pub const DEFAULT_SERVER: &str = "127.0.0.1:7373";

/// The value of the first variable in `names` that is set, even if it is empty.
pub fn first_env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(std::env::var_os)
        .map(|v| v.to_string_lossy().into_owned())
}

/// How the client authenticates.
#[derive(Clone, Debug)]
pub enum Credentials {
    ApiKey(ApiKey),
    Files { cert: PathBuf, key: PathBuf },
}

impl Credentials {
    /// Applies the CLI credential rules (storage-and-config §6.3) to already resolved values;
    /// empty strings count as absent: API key XOR (key file + cert file).
    pub fn resolve(
        api_key: Option<&str>,
        key_file: Option<&str>,
        cert_file: Option<&str>,
    ) -> Result<Credentials, ClientError> {
        fn nonempty(v: Option<&str>) -> Option<&str> {
            v.filter(|s| !s.is_empty())
        }
        match (nonempty(api_key), nonempty(key_file), nonempty(cert_file)) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(ClientError::Config(
                "ambiguous credentials: both an API key and a client certificate/key are specified"
                    .into(),
            )),
            (Some(k), None, None) => ApiKey::parse(k)
                .map(Credentials::ApiKey)
                .map_err(|e| ClientError::Config(e.to_string())),
            (None, Some(key), Some(cert)) => Ok(Credentials::Files {
                cert: cert.into(),
                key: key.into(),
            }),
            (None, Some(_), None) => Err(ClientError::Config(
                "no client certificate specified. Consider setting KES_CLIENT_CERT (or MINIO_KES_CERT_FILE)".into(),
            )),
            (None, None, Some(_)) => Err(ClientError::Config(
                "no client private key specified. Consider setting KES_CLIENT_KEY (or MINIO_KES_KEY_FILE)".into(),
            )),
            (None, None, None) => Err(ClientError::Config(
                "no API key specified. Consider setting KES_API_KEY (or MINIO_KES_API_KEY)".into(),
            )),
        }
    }

    /// `resolve` with the values of the environment variables.
    pub fn from_env() -> Result<Credentials, ClientError> {
        Credentials::resolve(
            first_env(API_KEY_ENV).as_deref(),
            first_env(KEY_FILE_ENV).as_deref(),
            first_env(CERT_FILE_ENV).as_deref(),
        )
    }
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Normalised `https://host:port` endpoints (see [`normalize_endpoints`]).
    pub endpoints: Vec<String>,
    pub credentials: Option<Credentials>,
    /// Skip server certificate verification (handshake signatures are still checked).
    pub insecure: bool,
    /// CA certificate PEM file (or directory of them); `None` → system CA bundle.
    pub ca_file: Option<PathBuf>,
    /// Connect, read and write timeout; zero disables it (connect then uses the OS default).
    pub timeout: Duration,
}

/// Splits on `,`, trims, strips a leading `http://`, prepends `https://` if missing, drops
/// empty entries.
pub fn normalize_endpoints(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .filter_map(|e| {
            let e = e.strip_prefix("http://").unwrap_or(e);
            if e.is_empty() {
                None
            } else if e.starts_with("https://") {
                Some(e.to_string())
            } else {
                Some(format!("https://{e}"))
            }
        })
        .collect()
}

/// A complete HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Client failures. `Display` never includes key material.
#[derive(Debug)]
pub enum ClientError {
    /// TCP connect (or the connection breaking during the TLS handshake) failed.
    Connect {
        endpoint: String,
        source: io::Error,
    },
    /// TLS failure (handshake, certificate verification, alert from the peer).
    Tls(String),
    /// Malformed or oversized response, or the connection broke mid-exchange.
    Protocol(String),
    Timeout,
    /// Invalid configuration or request.
    Config(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect { endpoint, source } => {
                write!(f, "failed to connect to {endpoint}: {source}")
            }
            ClientError::Tls(e) => write!(f, "tls: {e}"),
            ClientError::Protocol(e) => write!(f, "http: {e}"),
            ClientError::Timeout => f.write_str("request timed out"),
            ClientError::Config(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Connect { source, .. } => Some(source),
            _ => None,
        }
    }
}

struct Endpoint {
    /// `https://authority` as configured, for error messages.
    url: String,
    /// `host:port` as written, for the Host header.
    authority: String,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Endpoint, ClientError> {
        let bad = |why: &str| ClientError::Config(format!("invalid endpoint {url:?}: {why}"));
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let rest = rest.strip_prefix("https://").unwrap_or(rest);
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("no host"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            match after {
                "" => (host, None),
                p => (
                    host,
                    Some(p.strip_prefix(':').ok_or_else(|| bad("bad port"))?),
                ),
            }
        } else if authority.matches(':').count() > 1 {
            (authority, None) // a bare IPv6 address
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad("bad port"))?,
            None => 443,
        };
        let server_name = match host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.to_string()).map_err(|_| bad("bad host name"))?,
        };
        let authority = if host.contains(':') && !authority.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            authority.to_string()
        };
        Ok(Endpoint {
            url: format!("https://{authority}"),
            authority,
            host: host.to_string(),
            port,
            server_name,
        })
    }
}

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

struct Conn {
    stream: TlsStream,
    /// Bytes read but not yet consumed.
    rbuf: Vec<u8>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        http::wipe(&mut self.rbuf);
    }
}

/// Why one exchange on one connection failed.
enum ExchangeError {
    /// The connection was closed before any response byte: resend on a fresh connection.
    Retryable,
    Fatal(ClientError),
}

/// Classifies an I/O error raised after the TCP connection was established.
fn io_error(endpoint: &str, e: io::Error) -> ClientError {
    if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        return ClientError::Timeout;
    }
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return ClientError::Tls(with_hint(tls));
    }
    ClientError::Protocol(format!("{endpoint}: {e}"))
}

/// A TLS failure, with what to do where the cause is the usual one.
fn with_hint(e: &rustls::Error) -> String {
    use rustls::{CertificateError, Error};
    match e {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "{e}: the server's certificate is not signed by a CA this client trusts; for a \
             self-signed certificate (such as `kes server --dev`'s) use -k / --insecure, or \
             set SSL_CERT_FILE to the CA certificate file"
        ),
        Error::InvalidCertificate(CertificateError::NotValidForName) => format!(
            "{e}: the server's certificate does not name the host in the endpoint; use the \
             host or IP it was issued for, or -k / --insecure"
        ),
        _ => e.to_string(),
    }
}

/// A blocking HTTPS/1.1 client with one kept-alive connection per endpoint.
pub struct Client {
    tls: Arc<rustls::ClientConfig>,
    endpoints: Vec<Endpoint>,
    conns: Vec<Option<Conn>>,
    timeout: Option<Duration>,
    /// The endpoint tried first: the last one that answered.
    current: usize,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<&str> = self.endpoints.iter().map(|e| e.url.as_str()).collect();
        f.debug_struct("Client").field("endpoints", &urls).finish()
    }
}

impl Client {
    pub fn new(cfg: ClientConfig) -> Result<Client, ClientError> {
        if cfg.endpoints.is_empty() {
            return Err(ClientError::Config("no server endpoint specified".into()));
        }
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|e| Endpoint::parse(e))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = tls::build(&cfg)?;
        let conns = endpoints.iter().map(|_| None).collect();
        Ok(Client {
            tls,
            endpoints,
            conns,
            timeout: (!cfg.timeout.is_zero()).then_some(cfg.timeout),
            current: 0,
        })
    }

    /// GETs a streaming ND-JSON route (`/v1/log/*`) on a dedicated connection and calls
    /// `on_line` for every line until the server ends the stream or the connection breaks.
    pub fn stream(
        &mut self,
        path: &str,
        on_line: &mut dyn FnMut(&[u8]),
    ) -> Result<(), ClientError> {
        let i = self.current;
        let url = self.endpoints[i].url.clone();
        let mut conn = self.connect(i)?;
        let _ = conn.stream.sock.set_read_timeout(None);
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.endpoints[i].authority
        );
        conn.stream
            .write_all(req.as_bytes())
            .and_then(|()| conn.stream.flush())
            .map_err(|e| io_error(&url, e))?;
        let mut buf = Vec::new();
        let mut tmp = [0u8; 8192];
        // The head.
        let body_start = loop {
            let n = conn.stream.read(&mut tmp).map_err(|e| io_error(&url, e))?;
            if n == 0 {
                return Err(ClientError::Protocol(format!("{url}: connection closed")));
            }
            buf.extend_from_slice(&tmp[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = resp.code.unwrap_or(0);
                    if status != 200 {
                        let text = String::from_utf8_lossy(&buf[len..]).into_owned();
                        return Err(ClientError::Protocol(format!(
                            "{url}: {status} {}",
                            text.trim()
                        )));
                    }
                    break len;
                }
                Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => continue,
                _ => return Err(ClientError::Protocol(format!("{url}: malformed response"))),
            }
        };
        buf.drain(..body_start);
        let mut decoder = crate::http::ChunkedDecoder::default();
        let mut body = Vec::new();
        loop {
            let (used, done) = decoder
                .decode(&buf, &mut body, MAX_RESPONSE)
                .map_err(|e| ClientError::Protocol(format!("{url}: {}", e.message())))?;
            buf.drain(..used);
            while let Some(end) = body.iter().position(|&b| b == b'\n') {
                on_line(&body[..end]);
                body.drain(..=end);
            }
            if done {
                return Ok(());
            }
            let n = match conn.stream.read(&mut tmp) {
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => n,
            };
            buf.extend_from_slice(&tmp[..n]);
        }
    }

    /// The configured endpoints (`https://host:port`).
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.iter().map(|e| e.url.clone()).collect()
    }

    /// Sends one request with keep-alive; reconnects once if a kept-alive connection turns out
    /// closed before any response byte. With several endpoints: on a connect error or a 5xx
    /// response other than 501, tries the next endpoint (the last answer or error is returned).
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        extra_headers: &[(&str, &str)],
    ) -> Result<Response, ClientError> {
        let n = self.endpoints.len();
        for k in 0..n {
            let i = (self.current + k) % n;
            let last = k + 1 == n;
            match self.request_on(i, method, path, body, extra_headers) {
                Ok(resp) if resp.status >= 500 && resp.status != 501 && !last => continue,
                Ok(resp) => {
                    self.current = i;
                    return Ok(resp);
                }
                Err(ClientError::Connect { .. }) if !last => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Config("no server endpoint specified".into()))
    }

    fn request_on(
        &mut self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        extra_headers: &[(&str, &str)],
    ) -> Result<Response, ClientError> {
        let req = http::build_request(
            method,
            &self.endpoints[i].authority,
            path,
            body,
            extra_headers,
        )
        .map_err(ClientError::Config)?;
        let head = method.eq_ignore_ascii_case("HEAD");
        let reused = self.conns[i].is_some();
        if !reused {
            self.conns[i] = Some(self.connect(i)?);
        }
        match self.exchange(i, req.expose(), head) {
            Ok(resp) => Ok(resp),
            Err(ExchangeError::Retryable) if reused => {
                self.conns[i] = Some(self.connect(i)?);
                self.exchange(i, req.expose(), head).map_err(|e| match e {
                    ExchangeError::Retryable => ClientError::Protocol(format!(
                        "{}: connection closed before a response arrived",
                        self.endpoints[i].url
                    )),
                    ExchangeError::Fatal(e) => e,
                })
            }
            Err(ExchangeError::Retryable) => Err(ClientError::Protocol(format!(
                "{}: connection closed before a response arrived",
                self.endpoints[i].url
            ))),
            Err(ExchangeError::Fatal(e)) => Err(e),
        }
    }

    /// Writes `req` on the connection of endpoint `i` and reads the response. The connection
    /// is dropped on any error and when the response does not allow reuse.
    fn exchange(&mut self, i: usize, req: &[u8], head: bool) -> Result<Response, ExchangeError> {
        let Some(mut conn) = self.conns[i].take() else {
            return Err(ExchangeError::Retryable);
        };
        let url = &self.endpoints[i].url;
        if let Err(e) = conn
            .stream
            .write_all(req)
            .and_then(|()| conn.stream.flush())
        {
            return Err(match e.kind() {
                io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted => ExchangeError::Retryable,
                _ => ExchangeError::Fatal(io_error(url, e)),
            });
        }
        match http::read_response(&mut conn.stream, &mut conn.rbuf, head) {
            Ok((resp, keep_alive)) => {
                if keep_alive {
                    self.conns[i] = Some(conn);
                }
                Ok(resp)
            }
            Err(http::ReadError::ClosedBeforeResponse) => Err(ExchangeError::Retryable),
            Err(http::ReadError::Timeout) => Err(ExchangeError::Fatal(ClientError::Timeout)),
            Err(http::ReadError::Io(e)) => Err(ExchangeError::Fatal(io_error(url, e))),
            Err(http::ReadError::Protocol(msg)) => Err(ExchangeError::Fatal(
                ClientError::Protocol(format!("{url}: {msg}")),
            )),
        }
    }

    /// Opens a TCP connection to endpoint `i` and completes the TLS handshake.
    fn connect(&self, i: usize) -> Result<Conn, ClientError> {
        let ep = &self.endpoints[i];
        let connect_err = |source: io::Error| ClientError::Connect {
            endpoint: ep.url.clone(),
            source,
        };
        let addrs: Vec<SocketAddr> = (ep.host.as_str(), ep.port)
            .to_socket_addrs()
            .map_err(connect_err)?
            .collect();
        let mut last_err =
            io::Error::new(io::ErrorKind::NotFound, "host name resolved to no address");
        let mut sock = None;
        for addr in addrs {
            let res = match self.timeout {
                Some(t) => TcpStream::connect_timeout(&addr, t),
                None => TcpStream::connect(addr),
            };
            match res {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) => last_err = e,
            }
        }
        let sock = sock.ok_or_else(|| connect_err(last_err))?;
        sock.set_nodelay(true).map_err(connect_err)?;
        sock.set_read_timeout(self.timeout).map_err(connect_err)?;
        sock.set_write_timeout(self.timeout).map_err(connect_err)?;

        let conn = ClientConnection::new(self.tls.clone(), ep.server_name.clone())
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let mut stream = StreamOwned::new(conn, sock);
        while stream.conn.is_handshaking() {
            if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
                // A plain I/O failure during the handshake counts as a connect error, so that
                // the next endpoint is tried.
                let tls_or_timeout =
                    matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) || e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>());
                return Err(if tls_or_timeout {
                    io_error(&ep.url, e)
                } else {
                    connect_err(e)
                });
            }
        }
        Ok(Conn {
            stream,
            rbuf: Vec::with_capacity(16 << 10),
        })
    }

    /// Test helper for pipelining: opens a fresh connection to the current endpoint, writes
    /// `raw` as is, and returns everything read until the server closes the connection or the
    /// read times out (at most [`MAX_RESPONSE`] bytes).
    pub fn send_raw(&mut self, raw: &[u8]) -> Result<Vec<u8>, ClientError> {
        let i = self.current;
        let mut conn = self.connect(i)?;
        let url = self.endpoints[i].url.clone();
        conn.stream
            .write_all(raw)
            .and_then(|()| conn.stream.flush())
            .map_err(|e| io_error(&url, e))?;
        let mut out = Vec::new();
        let mut chunk = [0u8; 16 << 10];
        loop {
            match conn.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    if out.len() + n > MAX_RESPONSE {
                        return Err(ClientError::Protocol("response too large".into()));
                    }
                    out.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted => break,
                    _ => return Err(io_error(&url, e)),
                },
            }
        }
        Ok(out)
    }
}
