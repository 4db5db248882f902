//! The small blocking HTTP/1.1 client the network keystores use (Vault, AWS, GCP, Azure, the
//! HSM stores) and their credential sources (token endpoints, cloud metadata servers).
//!
//! One connection per call (`Connection: close`), HTTPS through rustls (a configured CA file,
//! else the system CA bundle) or plain HTTP (loopback test servers and the link-local metadata
//! servers), a connect timeout (shorter than the read/write timeout where a host that does not
//! answer at all must fail fast, as a metadata server off its cloud), a cap on the response
//! size, and [`retrying`] for calls that may be repeated on 5xx answers and throttling, with
//! exponential backoff bounded in count and total time.
//!
//! It runs on the caller's thread: keystores are only called from the blocking pool, never
//! from an executor core, so no second async runtime is involved. Request bytes are built in a
//! zeroizing buffer because bodies and headers carry secrets (records, tokens, signatures).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::StoreError;
use crate::secret::SecretVec;

/// Largest response read from a keystore service.
pub const RESPONSE_BYTES_MAX: usize = 4 << 20;
/// Longest one exchange may take in all (connect, TLS handshake, request, the whole answer),
/// whatever each read's and write's own timeout: a service that trickles its answer a byte
/// every few seconds must not hold a blocking-pool thread for ever. Longer than every route
/// timeout (10–15 s), so a slow answer a request still waits for is not cut short.
pub const EXCHANGE_DEADLINE: Duration = Duration::from_secs(20);

/// Client TLS settings for an `https://` endpoint.
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    /// CA certificate PEM file (or directory); `None` = the system CA bundle.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (mutual TLS), both or neither.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Where a keystore service listens and how to talk to it.
pub struct Endpoint {
    /// For error messages: "Vault", "AWS Secrets Manager".
    service: &'static str,
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Read and write timeout.
    timeout: Duration,
    /// TCP connect timeout (`timeout` unless [`Endpoint::with_connect_timeout`] set one).
    connect_timeout: Duration,
    /// The whole exchange ([`EXCHANGE_DEADLINE`] unless [`Endpoint::with_deadline`] set one).
    deadline: Duration,
}

/// Most response header fields kept in a [`Reply`].
pub const REPLY_HEADERS_MAX: usize = 48;

/// A response: status, header fields (names as sent) and body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) fn unreachable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unreachable(e.to_string())
}

pub(crate) fn other(msg: String) -> StoreError {
    StoreError::Io(std::io::Error::other(msg))
}

impl Endpoint {
    /// Parses `https://host[:port][/…]`, `http://host[:port]` or a bare `host[:port]` (HTTPS).
    /// `field` names the config field in errors.
    pub fn parse(
        service: &'static str,
        field: &str,
        url: &str,
        tls: &TlsFiles,
        timeout: Duration,
    ) -> Result<Endpoint, String> {
        let (tls_wanted, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            (true, url)
        };
        let authority = rest.split('/').next().unwrap_or(rest);
        if authority.is_empty() {
            return Err(format!("{field}: no host in '{url}'"));
        }
        let default_port = if tls_wanted { 443 } else { 80 };
        let bad_port = || format!("{field}: bad port in '{url}'");
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            // An IPv6 literal: `[addr]` or `[addr]:port`.
            let (h, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("{field}: unclosed '[' in '{url}'"))?;
            let port = match after {
                "" => default_port,
                p => p
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(bad_port)?,
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad_port())?),
                None => (authority.to_string(), default_port),
            }
        };
        let tls = if tls_wanted {
            let credentials = match (&tls.cert, &tls.key) {
                (Some(cert), Some(key)) => Some(crate::client::Credentials::Files {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            };
            let cfg = crate::client::ClientConfig {
                endpoints: Vec::new(),
                credentials,
                insecure: false,
                ca_file: tls.ca.clone(),
                timeout,
            };
            Some(crate::client::rustls_config(&cfg).map_err(|e| format!("{field}: TLS: {e}"))?)
        } else {
            None
        };
        Ok(Endpoint {
            service,
            host,
            port,
            tls,
            timeout,
            connect_timeout: timeout,
            deadline: EXCHANGE_DEADLINE,
        })
    }

    /// The same endpoint with a TCP connect timeout of its own.
    pub fn with_connect_timeout(mut self, connect_timeout: Duration) -> Endpoint {
        self.connect_timeout = connect_timeout;
        self
    }

    /// The same endpoint with an overall deadline of its own for each exchange.
    pub fn with_deadline(mut self, deadline: Duration) -> Endpoint {
        self.deadline = deadline;
        self
    }

    /// The `Host` header value: `host:port`, without the port when it is the scheme's
    /// default (as HTTP clients and AWS's signers write it); IPv6 literals in brackets.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.tls.is_some() { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The host alone (no port).
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// One HTTP exchange on a fresh connection. `headers` are sent as given after `Host` and
    /// `Connection: close`; `Content-Length` is added. Network failures are `Unreachable`.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Reply, StoreError> {
        let deadline = Instant::now() + self.deadline;
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(unreachable)?
            .next()
            .ok_or_else(|| unreachable(format!("cannot resolve {}", self.host)))?;
        let tcp = TcpStream::connect_timeout(&addr, self.connect_timeout.min(self.deadline))
            .map_err(|e| unreachable(format!("{} at {}: {e}", self.service, self.host_header())))?;
        let tcp = Deadlined {
            tcp,
            timeout: self.timeout,
            deadline,
        };
        let failed = |e: std::io::Error| self.io_failure(e, deadline);
        // Headers carry tokens: the buffer is sized for the whole request up front, and
        // grows (should the size be off) through `SecretVec::extend_from_slice`, which
        // wipes the allocation it leaves, never through the `Vec` (which would not).
        let host = self.host_header();
        let content_length = format!("Content-Length: {}\r\n\r\n", body.len());
        let size = method.len()
            + path.len()
            + host.len()
            + headers
                .iter()
                .map(|(name, value)| name.len() + value.len() + 4)
                .sum::<usize>()
            + content_length.len()
            + body.len()
            + 64;
        let mut bytes = SecretVec::with_capacity(size);
        for piece in [
            method.as_bytes(),
            b" ",
            path.as_bytes(),
            b" HTTP/1.1\r\nHost: ",
        ] {
            bytes.extend_from_slice(piece);
        }
        bytes.extend_from_slice(host.as_bytes());
        bytes.extend_from_slice(b"\r\nConnection: close\r\n");
        for (name, value) in headers {
            for piece in [name.as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
                bytes.extend_from_slice(piece);
            }
        }
        bytes.extend_from_slice(content_length.as_bytes());
        bytes.extend_from_slice(body);
        let mut raw = SecretVec::with_capacity(4096);
        match &self.tls {
            None => {
                let mut s = tcp;
                s.write_all(bytes.expose()).map_err(failed)?;
                self.read_all(&mut s, &mut raw)
                    .map_err(|e| e.into_store(failed))?;
            }
            Some(config) => {
                let name = match self.host.parse::<std::net::IpAddr>() {
                    Ok(ip) => rustls_pki_types::ServerName::IpAddress(ip.into()),
                    Err(_) => {
                        rustls_pki_types::ServerName::try_from(self.host.clone()).map_err(|_| {
                            other(format!("bad {} host name '{}'", self.service, self.host))
                        })?
                    }
                };
                let conn = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(|e| other(format!("TLS: {e}")))?;
                let mut s = rustls::StreamOwned::new(conn, tcp);
                s.write_all(bytes.expose()).map_err(failed)?;
                self.read_all(&mut s, &mut raw)
                    .map_err(|e| e.into_store(failed))?;
            }
        }
        self.parse_reply(raw.expose())
    }

    /// Why an exchange failed on the network: past its deadline, the deadline says so.
    fn io_failure(&self, e: std::io::Error, deadline: Instant) -> StoreError {
        if Instant::now() >= deadline {
            unreachable(format!(
                "{} at {}: no complete answer within {} s",
                self.service,
                self.host_header(),
                self.deadline.as_secs_f32()
            ))
        } else {
            unreachable(e)
        }
    }

    /// Reads the answer to its end. `out` grows without leaving copies behind (it carries
    /// records and tokens), and so is the read buffer.
    fn read_all<R: Read>(&self, r: &mut R, out: &mut SecretVec) -> Result<(), ReadFailed> {
        let mut tmp = SecretVec::new(vec![0u8; 8192]);
        let tmp = tmp.as_mut_vec();
        loop {
            match r.read(tmp) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    if out.len() + n > RESPONSE_BYTES_MAX {
                        return Err(ReadFailed::TooLarge(self.service));
                    }
                    out.extend_from_slice(&tmp[..n]);
                }
                // Servers close TLS connections without close_notify after Connection: close.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(ReadFailed::Io(e)),
            }
        }
    }

    fn parse_reply(&self, raw: &[u8]) -> Result<Reply, StoreError> {
        let mut headers = [httparse::EMPTY_HEADER; REPLY_HEADERS_MAX];
        let mut resp = httparse::Response::new(&mut headers);
        let head = match resp.parse(raw) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => {
                return Err(unreachable(format!(
                    "malformed or truncated response from {}",
                    self.service
                )))
            }
        };
        let status = resp.code.unwrap_or(0);
        let fields = resp
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let chunked = resp.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("transfer-encoding")
                && h.value.eq_ignore_ascii_case(b"chunked")
        });
        let body = if chunked {
            // The payload is never longer than its chunked form: decoded into a buffer of
            // that size, it never moves (no unwiped copy), and it is wiped on an error.
            let mut decoder = crate::http::ChunkedDecoder::default();
            let mut body = SecretVec::with_capacity(raw.len() - head);
            decoder
                .decode(&raw[head..], body.as_mut_vec(), RESPONSE_BYTES_MAX)
                .map_err(|_| {
                    unreachable(format!("malformed chunked response from {}", self.service))
                })?;
            std::mem::take(body.as_mut_vec())
        } else {
            raw[head..].to_vec()
        };
        Ok(Reply {
            status,
            headers: fields,
            body,
        })
    }
}

/// Why reading an answer stopped early.
enum ReadFailed {
    TooLarge(&'static str),
    Io(std::io::Error),
}

impl ReadFailed {
    fn into_store(self, io: impl FnOnce(std::io::Error) -> StoreError) -> StoreError {
        match self {
            ReadFailed::TooLarge(service) => other(format!("{service} response too large")),
            ReadFailed::Io(e) => io(e),
        }
    }
}

/// The socket of one exchange: every read and write waits at most the endpoint's timeout
/// and never past the exchange's deadline ([`EXCHANGE_DEADLINE`]), so a peer that sends (or
/// reads) a byte every few seconds cannot stretch the exchange.
struct Deadlined {
    tcp: TcpStream,
    timeout: Duration,
    deadline: Instant,
}

impl Deadlined {
    /// The wait allowed to the next read or write; `TimedOut` once the deadline passed.
    fn wait(&self) -> std::io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        Ok(left.min(self.timeout))
    }
}

impl Read for Deadlined {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.tcp.set_read_timeout(Some(self.wait()?))?;
        self.tcp.read(buf)
    }
}

impl Write for Deadlined {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tcp.set_write_timeout(Some(self.wait()?))?;
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

/// How often, and for how long, a call is repeated.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// Delay before the first retry; doubled for each further one (plus up to 50 % jitter).
    pub base: Duration,
    /// No retry starts later than this after the first attempt.
    pub total: Duration,
}

impl Retry {
    /// No retries.
    pub const NONE: Retry = Retry {
        attempts: 1,
        base: Duration::ZERO,
        total: Duration::ZERO,
    };
    /// The keystore default: up to 4 attempts, 100 ms → 200 ms → 400 ms (+ jitter), all
    /// retries starting within 5 s.
    pub const DEFAULT: Retry = Retry {
        attempts: 4,
        base: Duration::from_millis(100),
        total: Duration::from_secs(5),
    };

    fn delay(&self, retry: u32) -> Duration {
        let d = self.base.saturating_mul(1u32 << retry.min(16));
        let mut b = [0u8; 2];
        let jitter =
            if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_ok() {
                u16::from_le_bytes(b) as u32
            } else {
                0
            };
        d + d.mul_f64(jitter as f64 / 131_070.0)
    }
}

/// 5xx and 429 answers are worth repeating.
pub fn retryable_status(reply: &Reply) -> bool {
    reply.status >= 500 || reply.status == 429
}

/// Runs `attempt` until it returns a reply that `retry_on` does not want repeated, an error,
/// or the policy is used up (then the last reply is returned). Network errors are not
/// retried: an unreachable service must be reported quickly (the keystore is then offline).
pub fn retrying(
    policy: &Retry,
    retry_on: impl Fn(&Reply) -> bool,
    mut attempt: impl FnMut() -> Result<Reply, StoreError>,
) -> Result<Reply, StoreError> {
    let started = Instant::now();
    let mut n = 1;
    loop {
        let reply = attempt()?;
        if n >= policy.attempts || !retry_on(&reply) {
            return Ok(reply);
        }
        let delay = policy.delay(n - 1);
        if started.elapsed() + delay > policy.total {
            return Ok(reply);
        }
        std::thread::sleep(delay);
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn endpoints_parse() {
        let t = TlsFiles::default();
        let d = Duration::from_secs(1);
        let e = Endpoint::parse("X", "f", "http://127.0.0.1:8200", &t, d).unwrap();
        assert_eq!((e.host(), e.port, e.is_tls()), ("127.0.0.1", 8200, false));
        assert_eq!(e.host_header(), "127.0.0.1:8200");
        let e = Endpoint::parse("X", "f", "http://[::1]:9/x", &t, d).unwrap();
        assert_eq!((e.host(), e.port), ("::1", 9));
        assert_eq!(e.host_header(), "[::1]:9");
        let e = Endpoint::parse("X", "f", "http://[fd00:ec2::254]", &t, d).unwrap();
        assert_eq!((e.host(), e.port), ("fd00:ec2::254", 80));
        assert_eq!(e.host_header(), "[fd00:ec2::254]");
        assert!(Endpoint::parse("X", "f", "http://[::1", &t, d).is_err());
        assert!(Endpoint::parse("X", "f", "http://[::1]x", &t, d).is_err());
        let e = Endpoint::parse("X", "f", "http://example.com", &t, d).unwrap();
        assert_eq!((e.port, e.host_header().as_str()), (80, "example.com"));
        let e = Endpoint::parse("X", "f", "secretsmanager.us-east-1.amazonaws.com", &t, d);
        let e = e.unwrap();
        assert_eq!((e.port, e.is_tls()), (443, true));
        assert!(Endpoint::parse("X", "f", "http://h:port", &t, d).is_err());
        assert!(Endpoint::parse("X", "f", "http://", &t, d).is_err());
    }

    fn reply(status: u16) -> Result<Reply, StoreError> {
        Ok(Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        })
    }

    #[test]
    fn retries_5xx_and_429_within_bounds() {
        let fast = Retry {
            attempts: 4,
            base: Duration::from_millis(1),
            total: Duration::from_secs(1),
        };
        let calls = Cell::new(0);
        let r = retrying(&fast, retryable_status, || {
            calls.set(calls.get() + 1);
            reply(if calls.get() < 3 { 503 } else { 200 })
        })
        .unwrap();
        assert_eq!((r.status, calls.get()), (200, 3));

        calls.set(0);
        let r = retrying(&fast, retryable_status, || {
            calls.set(calls.get() + 1);
            reply(429)
        })
        .unwrap();
        assert_eq!((r.status, calls.get()), (429, 4), "bounded count");

        calls.set(0);
        let r = retrying(&fast, retryable_status, || {
            calls.set(calls.get() + 1);
            reply(404)
        })
        .unwrap();
        assert_eq!((r.status, calls.get()), (404, 1), "4xx is final");

        calls.set(0);
        let e = retrying(&fast, retryable_status, || {
            calls.set(calls.get() + 1);
            Err(unreachable("refused"))
        });
        assert!(matches!(e, Err(StoreError::Unreachable(_))));
        assert_eq!(calls.get(), 1, "network errors are reported at once");

        // The total time bounds the retries too.
        let slow = Retry {
            attempts: 100,
            base: Duration::from_millis(20),
            total: Duration::from_millis(100),
        };
        calls.set(0);
        let started = Instant::now();
        retrying(&slow, retryable_status, || {
            calls.set(calls.get() + 1);
            reply(500)
        })
        .unwrap();
        assert!(calls.get() <= 4, "{}", calls.get());
        assert!(started.elapsed() < Duration::from_millis(150));

        calls.set(0);
        retrying(&Retry::NONE, retryable_status, || {
            calls.set(calls.get() + 1);
            reply(500)
        })
        .unwrap();
        assert_eq!(calls.get(), 1);
    }

    /// A listener whose accept queue is full drops new SYNs, so a connect to it hangs like one
    /// to a host that is not there (a metadata server off its cloud): the connect timeout, not
    /// the read timeout, bounds it.
    #[test]
    fn the_connect_timeout_bounds_a_host_that_does_not_answer() {
        // SAFETY: plain socket calls on descriptors this test owns and closes.
        let (fd, port) = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0);
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            assert_eq!(
                libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len),
                0
            );
            assert_eq!(libc::listen(fd, 0), 0);
            let mut len = len;
            libc::getsockname(fd, &mut addr as *mut _ as *mut libc::sockaddr, &mut len);
            (fd, u16::from_be(addr.sin_port))
        };
        // Fill the accept queue (nobody accepts); keep the connections open.
        let target: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut fillers = Vec::new();
        for _ in 0..4 {
            if let Ok(c) = TcpStream::connect_timeout(&target, Duration::from_millis(200)) {
                fillers.push(c);
            }
        }
        assert!(!fillers.is_empty());
        let e = Endpoint::parse(
            "Metadata",
            "f",
            &format!("http://127.0.0.1:{port}"),
            &TlsFiles::default(),
            Duration::from_secs(30),
        )
        .unwrap()
        .with_connect_timeout(Duration::from_millis(300));
        let started = Instant::now();
        let err = e.send("GET", "/", &[], b"").err().unwrap();
        let took = started.elapsed();
        // SAFETY: closes the listener this test opened.
        unsafe { libc::close(fd) };
        assert!(matches!(err, StoreError::Unreachable(_)), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("Metadata at 127.0.0.1:{port}")),
            "{err}"
        );
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }

    /// Issue 20 #8: a service that sends its answer a byte a second, each byte well within
    /// the read timeout, is given up at the exchange's deadline, not when it stops sending.
    #[test]
    fn a_trickling_answer_fails_at_the_deadline() {
        use std::net::TcpListener;
        const TRICKLE_BYTES: usize = 30; // one a second: the server ends within ~30 s
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {TRICKLE_BYTES}\r\n\r\n");
            if s.write_all(head.as_bytes()).is_err() {
                return;
            }
            for _ in 0..TRICKLE_BYTES {
                std::thread::sleep(Duration::from_secs(1));
                if s.write_all(b"x").is_err() {
                    return; // the client gave up
                }
            }
        });
        let e = Endpoint::parse(
            "Trickle",
            "f",
            &format!("http://127.0.0.1:{port}"),
            &TlsFiles::default(),
            Duration::from_secs(5),
        )
        .unwrap()
        .with_deadline(Duration::from_secs(3));
        let started = Instant::now();
        let result = e.send("GET", "/", &[], b"");
        let took = started.elapsed();
        let err = match result {
            Ok(r) => panic!(
                "the trickled answer was waited for to its end ({} bytes, {took:?})",
                r.body.len()
            ),
            Err(err) => err,
        };
        assert!(matches!(err, StoreError::Unreachable(_)), "{err}");
        assert!(
            err.to_string().contains(&format!(
                "Trickle at 127.0.0.1:{port}: no complete answer within 3 s"
            )),
            "{err}"
        );
        assert!(took < Duration::from_secs(20), "{took:?}");
        server.join().unwrap();
    }

    #[test]
    fn a_loopback_exchange_and_the_size_cap() {
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for big in [false, true] {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                if big {
                    let body = vec![b'x'; RESPONSE_BYTES_MAX + 10];
                    let _ = s.write_all(
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                            .as_bytes(),
                    );
                    let _ = s.write_all(&body);
                } else {
                    s.write_all(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n").unwrap();
                }
                drop(s);
                if !big {
                    assert!(req.starts_with("POST /p HTTP/1.1\r\n"), "{req}");
                    assert!(
                        req.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
                        "{req}"
                    );
                    assert!(req.contains("X-A: b\r\n"), "{req}");
                    assert!(req.ends_with("Content-Length: 2\r\n\r\nhi"), "{req}");
                }
            }
        });
        let e = Endpoint::parse(
            "Test",
            "f",
            &format!("http://127.0.0.1:{port}"),
            &TlsFiles::default(),
            Duration::from_secs(5),
        )
        .unwrap();
        let r = e.send("POST", "/p", &[("X-A", "b")], b"hi").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (201, &b"abc"[..]));
        let err = e.send("GET", "/", &[], b"").err().unwrap();
        assert!(err.to_string().contains("Test response too large"), "{err}");
        server.join().unwrap();
        // Nothing listens any more: unreachable.
        let err = e.send("GET", "/", &[], b"").err().unwrap();
        assert!(matches!(err, StoreError::Unreachable(_)), "{err}");
    }
}
