//! One client connection, start to finish: the TLS handshake, then HTTP/1.1 requests read,
//! routed, authorised, handled and answered in order (keep-alive and pipelining), until the
//! client leaves, a limit is hit or a timeout fires.
//!
//! The connection drives rustls by hand over glommio's socket: bytes from the socket go into
//! rustls, plaintext comes out into `plain_in`; responses are appended to `plain_out` and
//! handed to rustls in one write, so pipelined responses share TLS records and syscalls.
//! Buffers live as long as the connection and are wiped (zeroized) after use, since they
//! carry DEKs and plaintexts.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

use crate::api::{self, ApiError, Core, Peer, Reply, Request, Routed, ROUTES};
use crate::auth::identity::{identity_from_chain, IdentityError};
use crate::http::{self, Framing, HttpError, ParseOptions, RequestHead};

/// Socket read size: one maximal TLS record plus header and tag.
const NET_READ_BYTES: usize = 16 * 1024 + 512;
/// Bodies sent to body-less routes (and to 301/404/405 answers) are read and dropped up to
/// this size so the connection stays usable; larger ones get 413.
pub const DISCARD_BODY_BYTES_MAX: usize = 64 * 1024;
/// Responses are flushed once this much output is pending, even mid-pipeline.
const FLUSH_BYTES: usize = 64 * 1024;

/// Time limits of one connection.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Bounds the TLS handshake and, per request, reading the request head.
    pub header: Duration,
    /// How long a kept-alive connection may sit without a new request.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header: Duration::from_secs(5),
            idle: Duration::from_secs(90),
        }
    }
}

/// Why a connection ended early. Only used for logging and tests; never sent to the peer.
#[derive(Debug)]
pub enum ConnError {
    Io(std::io::Error),
    Tls(rustls::Error),
    Timeout,
    Closed,
}

impl<T> From<glommio::GlommioError<T>> for ConnError {
    fn from(e: glommio::GlommioError<T>) -> Self {
        ConnError::Io(std::io::Error::other(e.to_string()))
    }
}

impl From<std::io::Error> for ConnError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::TimedOut {
            ConnError::Timeout
        } else {
            ConnError::Io(e)
        }
    }
}

/// An idle connection checks for shutdown this often.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// How long one write of queued TLS records may take (clients that stop reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

/// Reads from the socket, giving up at `deadline`. glommio's per-socket read timeouts are not
/// used: a timer armed by an earlier read could fire during a later one.
async fn read_until(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<usize, ConnError> {
    let remaining = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or(ConnError::Timeout)?;
    match glommio::timer::timeout(remaining, async {
        stream.read(buf).await.map_err(Into::into)
    })
    .await
    {
        Ok(n) => Ok(n),
        Err(glommio::GlommioError::TimedOut(_)) => Err(ConnError::Timeout),
        Err(e) => Err(e.into()),
    }
}

/// Overwrites a buffer's contents with zeros and empties it.
fn wipe(buf: &mut Vec<u8>) {
    // SAFETY: zeroing the initialised part of our own buffer.
    unsafe { memsec::memzero(buf.as_mut_ptr(), buf.len()) };
    buf.clear();
}

/// Socket + rustls state + the plaintext buffers.
struct TlsIo {
    stream: TcpStream,
    tls: ServerConnection,
    net_in: Vec<u8>,
    net_out: Vec<u8>,
    /// Decrypted bytes; `plain_pos..` is not yet consumed.
    plain_in: Vec<u8>,
    plain_pos: usize,
    plain_out: Vec<u8>,
    /// The peer sent close_notify or closed the socket.
    eof: bool,
    peer_addr: Option<SocketAddr>,
}

impl TlsIo {
    fn unread(&self) -> &[u8] {
        &self.plain_in[self.plain_pos..]
    }

    fn consume(&mut self, n: usize) {
        self.plain_pos += n;
        debug_assert!(self.plain_pos <= self.plain_in.len());
    }

    /// Moves unconsumed plaintext to the front, wiping what was consumed.
    fn compact(&mut self) {
        if self.plain_pos == 0 {
            return;
        }
        let len = self.plain_in.len();
        self.plain_in.copy_within(self.plain_pos..len, 0);
        let keep = len - self.plain_pos;
        // SAFETY: zero the now-unused tail of our own buffer.
        unsafe { memsec::memzero(self.plain_in.as_mut_ptr().add(keep), len - keep) };
        self.plain_in.truncate(keep);
        self.plain_pos = 0;
    }

    /// Reads from the socket until at least one new plaintext byte is available, the peer
    /// closes (`eof`), or `deadline` passes. Handshake and alert output is flushed as needed.
    async fn read_more(&mut self, deadline: Instant) -> Result<(), ConnError> {
        self.compact();
        let before = self.plain_in.len();
        loop {
            self.read_once(deadline).await?;
            if self.eof || self.plain_in.len() > before {
                return Ok(());
            }
        }
    }

    /// One socket read fed through rustls (handshake messages, alerts or application data).
    async fn read_once(&mut self, deadline: Instant) -> Result<(), ConnError> {
        if self.tls.wants_write() {
            self.flush_tls().await?;
        }
        self.net_in.resize(NET_READ_BYTES, 0);
        let n = read_until(&mut self.stream, &mut self.net_in, deadline).await?;
        if n == 0 {
            self.eof = true;
            return Ok(());
        }
        self.feed(n).await
    }

    /// Hands the first `n` bytes of `net_in` to rustls and collects any plaintext; on a TLS
    /// error the queued alert is sent before giving up.
    async fn feed(&mut self, n: usize) -> Result<(), ConnError> {
        let mut pos = 0;
        while pos < n {
            let k = self.tls.read_tls(&mut &self.net_in[pos..n])?;
            pos += k;
            if let Err(e) = self.tls.process_new_packets() {
                let _ = self.flush_tls().await;
                return Err(ConnError::Tls(e));
            }
            self.drain_plaintext()?;
            if k == 0 {
                break;
            }
        }
        Ok(())
    }

    fn drain_plaintext(&mut self) -> Result<(), ConnError> {
        use std::io::BufRead;
        loop {
            let mut reader = self.tls.reader();
            match reader.fill_buf() {
                Ok([]) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(bytes) => {
                    let n = bytes.len();
                    self.plain_in.extend_from_slice(bytes);
                    reader.consume(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(ConnError::Io(e)),
            }
        }
    }

    /// Writes all TLS records rustls has queued to the socket.
    async fn flush_tls(&mut self) -> Result<(), ConnError> {
        while self.tls.wants_write() {
            self.net_out.clear();
            self.tls.write_tls(&mut self.net_out)?;
            let mut write = std::pin::pin!(self.stream.write_all(&self.net_out));
            // Almost every write fits the socket buffer and completes on its first poll:
            // only a write that has to wait (a client that stopped reading) gets the timer,
            // which saves a timer insert and removal and two clock reads per response.
            match futures_lite::future::poll_once(&mut write).await {
                Some(result) => result?,
                None => match glommio::timer::timeout(WRITE_TIMEOUT, async {
                    write.await.map_err(Into::into)
                })
                .await
                {
                    Ok(()) => {}
                    Err(glommio::GlommioError::TimedOut(_)) => return Err(ConnError::Timeout),
                    Err(e) => return Err(e.into()),
                },
            }
        }
        Ok(())
    }

    /// Encrypts and sends every pending response, then wipes the plaintext copy. rustls
    /// buffers a bounded amount of plaintext, so large responses go out in several rounds.
    async fn flush(&mut self) -> Result<(), ConnError> {
        let mut pos = 0;
        let mut result = Ok(());
        while pos < self.plain_out.len() {
            match self.tls.writer().write(&self.plain_out[pos..]) {
                Ok(n) => pos += n,
                Err(e) => {
                    result = Err(ConnError::Io(e));
                    break;
                }
            }
            if let Err(e) = self.flush_tls().await {
                result = Err(e);
                break;
            }
        }
        wipe(&mut self.plain_out);
        result?;
        self.flush_tls().await
    }
}

impl Drop for TlsIo {
    fn drop(&mut self) {
        wipe(&mut self.plain_in);
        wipe(&mut self.plain_out);
    }
}

/// The raw answer Go gives to plain HTTP on a TLS port.
const PLAIN_HTTP_ANSWER: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// Serves one accepted connection until it ends.
pub async fn serve(
    core: Rc<Core>,
    config: Arc<ServerConfig>,
    stream: TcpStream,
    timeouts: Timeouts,
) -> Result<(), ConnError> {
    let _ = stream.set_nodelay(true);
    let peer_addr = stream.peer_addr().ok();
    let tls = ServerConnection::new(config).map_err(ConnError::Tls)?;
    let mut io = TlsIo {
        stream,
        tls,
        net_in: Vec::with_capacity(NET_READ_BYTES),
        net_out: Vec::with_capacity(NET_READ_BYTES),
        plain_in: Vec::with_capacity(8 * 1024),
        plain_pos: 0,
        plain_out: Vec::with_capacity(4 * 1024),
        eof: false,
        peer_addr,
    };

    if let Err(e) = handshake(&mut io, Instant::now() + timeouts.header).await {
        core.metrics.inc(&core.metrics.handshakes_failed);
        return Err(e);
    }
    match io.tls.handshake_kind() {
        Some(rustls::HandshakeKind::Resumed) => core.metrics.inc(&core.metrics.handshakes_resumed),
        _ => core.metrics.inc(&core.metrics.handshakes_full),
    }
    let peer = peer_identity(&io.tls);
    let mut conn = Conn {
        head: RequestHead::default(),
        scratch: Default::default(),
        body: Vec::with_capacity(1024),
        out: Vec::with_capacity(1024),
        chunked: http::ChunkedDecoder::default(),
    };
    core.metrics.inc(&core.metrics.connections_open);
    let result = conn.serve_requests(&core, &mut io, peer, timeouts).await;
    core.metrics.dec(&core.metrics.connections_open);
    wipe(&mut conn.body);
    wipe(&mut conn.out);
    conn.scratch.wipe();
    let _ = io.flush().await;
    result
}

async fn handshake(io: &mut TlsIo, deadline: Instant) -> Result<(), ConnError> {
    let mut first = true;
    while io.tls.is_handshaking() {
        if first {
            // Peek at the first bytes: plain HTTP gets Go's plain-text answer.
            io.net_in.resize(NET_READ_BYTES, 0);
            let n = read_until(&mut io.stream, &mut io.net_in, deadline).await?;
            if n == 0 {
                return Err(ConnError::Closed);
            }
            if io.net_in[0].is_ascii_uppercase() {
                let _ = io.stream.write_all(PLAIN_HTTP_ANSWER).await;
                return Err(ConnError::Closed);
            }
            first = false;
            io.feed(n).await?;
            continue;
        }
        if io.tls.wants_write() {
            io.flush_tls().await?;
            continue;
        }
        io.read_once(deadline).await?;
        if io.eof && io.tls.is_handshaking() {
            return Err(ConnError::Closed);
        }
    }
    io.flush_tls().await
}

fn peer_identity(tls: &ServerConnection) -> Peer {
    let Some(chain) = tls.peer_certificates() else {
        return Peer::Unidentified(IdentityError::NoCertificate);
    };
    let ders: Vec<&[u8]> = chain.iter().map(|c| c.as_ref()).collect();
    match identity_from_chain(&ders) {
        Ok(identity) => Peer::Identified(identity),
        Err(e) => Peer::Unidentified(e),
    }
}

/// The header a TLS proxy forwards client certificates in (legacy `tls.proxy.header.cert`).
fn proxy_header(settings: &crate::api::settings::Settings) -> &str {
    if settings.proxy_cert_header.is_empty() {
        "X-Tls-Client-Cert"
    } else {
        &settings.proxy_cert_header
    }
}

/// The identity of the client certificate a TLS proxy forwarded: URL-escaped PEM in one
/// header (auth-and-policy.md §7).
fn forwarded_identity(head: &RequestHead) -> Result<crate::auth::Identity, ApiError> {
    let bad = |m: &'static str| ApiError {
        status: 400,
        message: m.into(),
    };
    let value = match (head.cert_header_count, head.forwarded_cert.as_deref()) {
        (0, _) | (_, None) => return Err(bad("no client certificate is present")),
        (1, Some(v)) => v,
        _ => return Err(bad("too many client certificates are present")),
    };
    let pem = query_unescape(value).ok_or_else(|| bad("invalid client certificate"))?;
    let der = crate::auth::identity::first_pem_certificate(&pem)
        .ok_or_else(|| bad("invalid client certificate"))?;
    crate::auth::identity::identity_of_cert_der(&der).map_err(|_| bad("invalid client certificate"))
}

/// Go's `url.QueryUnescape`: `%XX` escapes and `+` as space.
fn query_unescape(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Per-connection request state, reused across requests.
struct Conn {
    head: RequestHead,
    scratch: crate::api::Scratch,
    body: Vec<u8>,
    out: Vec<u8>,
    chunked: http::ChunkedDecoder,
}

/// What to do with the request body before answering.
enum BodyPlan {
    Keep(usize),
    Discard,
}

impl Conn {
    async fn serve_requests(
        &mut self,
        core: &Core,
        io: &mut TlsIo,
        peer: Peer,
        timeouts: Timeouts,
    ) -> Result<(), ConnError> {
        loop {
            let settings = core.settings.get(&core.shared.settings);
            // Only connections from a configured TLS proxy may forward a client certificate.
            let from_proxy = matches!(peer, Peer::Identified(id) if settings.proxies.contains(&id));
            let options = ParseOptions {
                limits: http::Limits::default(),
                cert_header: from_proxy.then(|| proxy_header(&settings)),
            };
            // 1. The request head: idle timeout while nothing arrived, header timeout after.
            let mut started: Option<Instant> = None;
            let mut idle_since: Option<Instant> = None;
            let head_len = loop {
                if !io.unread().is_empty() && started.is_none() {
                    started = Some(Instant::now());
                }
                match http::parse_head(io.unread(), &options, &mut self.head) {
                    Ok(Some(n)) => break n,
                    Ok(None) => {}
                    Err(e) => return self.fail(io, e).await,
                }
                if io.eof || (started.is_none() && core.shared.shutting_down()) {
                    return Ok(());
                }
                io.flush().await?;
                let now = Instant::now();
                let deadline = match started {
                    Some(t) => t + timeouts.header,
                    // While idle, wake up now and then to notice a shutdown.
                    None if core.shared.shutting_down() => return Ok(()),
                    None => now + timeouts.idle.min(IDLE_POLL),
                };
                let idle_until = *idle_since.get_or_insert(now) + timeouts.idle;
                match io.read_more(deadline).await {
                    Ok(()) => {}
                    Err(ConnError::Timeout) if started.is_none() && Instant::now() < idle_until => {
                        continue
                    }
                    Err(ConnError::Timeout) if started.is_some() => {
                        let mut out = Vec::new();
                        http::write_response(&mut out, 408, None, &[], b"", true);
                        io.plain_out.extend_from_slice(&out);
                        return Err(ConnError::Timeout);
                    }
                    Err(e) => return Err(e),
                }
            };
            io.consume(head_len);
            // The request is authorized with the settings current now that it has arrived,
            // not those of when the connection went idle: a reload (a revoked policy) applies
            // to the very next request on every keep-alive connection.
            let settings = core.settings.get(&core.shared.settings);
            let (peer, proxy_error) = if from_proxy {
                match forwarded_identity(&self.head) {
                    Ok(identity) => (Peer::Identified(identity), None),
                    Err(e) => (Peer::Unidentified(IdentityError::NoCertificate), Some(e)),
                }
            } else {
                (peer, None)
            };

            // 2. Route; decide what the body may be.
            let cleaned = http::clean_path(&self.head.path);
            let routed = match cleaned {
                Some(_) => Target::NotFound,
                None => match api::router::route_request(self.head.method, &self.head.path) {
                    Routed::Route { index, .. } => Target::Route(index),
                    Routed::RedirectAddSlash => Target::AddSlash,
                    Routed::WrongMethod { index } => Target::WrongMethod(index),
                    Routed::NotFound => Target::NotFound,
                },
            };
            let plan = match (&cleaned, &routed) {
                (None, Target::Route(index)) if ROUTES[*index].body_bytes_max > 0 => {
                    BodyPlan::Keep(ROUTES[*index].body_bytes_max)
                }
                _ => BodyPlan::Discard,
            };
            let route_timeout = match routed {
                Target::Route(index) => settings.routes.timeout[index],
                _ => Duration::ZERO,
            };
            // The route timeout covers reading the body and running the handler.
            let started_at = Instant::now();
            let body_deadline = started_at
                + if route_timeout.is_zero() {
                    Duration::from_secs(15)
                } else {
                    route_timeout
                };

            // 3. The body.
            let limit = match plan {
                BodyPlan::Keep(n) => n,
                BodyPlan::Discard => DISCARD_BODY_BYTES_MAX,
            };
            if let Err(e) = self.read_body(io, limit, body_deadline).await {
                return match e {
                    BodyFailure::Http(e) => self.fail(io, e).await,
                    BodyFailure::Conn(e) => Err(e),
                };
            }
            if matches!(plan, BodyPlan::Discard) {
                wipe(&mut self.body);
            }

            // 4. Answer.
            let keep_alive = self.head.keep_alive && !core.shared.shutting_down();
            let close = !keep_alive;
            match (&cleaned, routed) {
                (Some(clean), _) => {
                    let mut location = clean.clone();
                    if !self.head.query.is_empty() {
                        location.push('?');
                        location.push_str(&self.head.query);
                    }
                    http::write_response(
                        &mut io.plain_out,
                        301,
                        None,
                        &[("Location", &location)],
                        b"",
                        close,
                    );
                }
                (None, Target::AddSlash) => {
                    let mut location = self.head.path.clone();
                    location.push('/');
                    if !self.head.query.is_empty() {
                        location.push('?');
                        location.push_str(&self.head.query);
                    }
                    http::write_response(
                        &mut io.plain_out,
                        301,
                        None,
                        &[("Location", &location)],
                        b"",
                        close,
                    );
                }
                (None, Target::NotFound) => {
                    http::write_response(
                        &mut io.plain_out,
                        404,
                        Some("text/plain; charset=utf-8"),
                        &[("X-Content-Type-Options", "nosniff")],
                        b"404 page not found\n",
                        close,
                    );
                }
                (None, Target::WrongMethod(index)) => {
                    let want = ROUTES[index].method.as_str();
                    let err = ApiError::wrong_method(&self.head.method_raw, want);
                    self.out.clear();
                    api::json::write_error_body(&mut self.out, &err.message);
                    http::write_response(
                        &mut io.plain_out,
                        405,
                        Some("application/json"),
                        &[("Accept", want), ("Allow", want)],
                        &self.out,
                        close,
                    );
                }
                (None, Target::Route(index)) => {
                    let route = &ROUTES[index];
                    let path = std::mem::take(&mut self.head.path);
                    let argument = if route.has_argument {
                        &path[route.path.len()..]
                    } else {
                        ""
                    };
                    let mut req = Request {
                        settings: &settings,
                        route,
                        argument,
                        path: &path,
                        peer,
                        body: &mut self.body,
                        scratch: &mut self.scratch,
                    };
                    self.out.clear();
                    let authorized = match proxy_error {
                        Some(e) => Err(e),
                        None => api::authorize(index, &req),
                    };
                    let authenticated = authorized.is_ok();
                    let reply = match authorized {
                        Err(e) => Reply::Error(e),
                        Ok(()) => {
                            core.metrics.request_started(index);
                            let mut work =
                                std::pin::pin!(api::dispatch(core, &mut req, &mut self.out));
                            // Most requests (cache hits) finish on their first poll: only arm
                            // the route timer for those that have to wait (keystore calls).
                            let first = futures_lite::future::poll_once(&mut work).await;
                            if let Some(reply) = first {
                                reply
                            } else if route_timeout.is_zero() {
                                work.await
                            } else {
                                let remaining = route_timeout.saturating_sub(started_at.elapsed());
                                match glommio::timer::timeout(
                                    remaining.max(Duration::from_millis(1)),
                                    async { Ok(work.await) },
                                )
                                .await
                                {
                                    Ok(reply) => reply,
                                    Err(_) => {
                                        let e = ApiError {
                                            status: 503,
                                            message: "request timeout exceeded".into(),
                                        };
                                        let elapsed = started_at.elapsed();
                                        core.metrics.request_finished(
                                            index,
                                            503,
                                            elapsed.as_nanos() as u64,
                                            true,
                                        );
                                        // The handler still borrows `self.out`: a separate buffer.
                                        let mut body = Vec::new();
                                        write_reply(
                                            &mut io.plain_out,
                                            Reply::Error(e),
                                            &mut body,
                                            true,
                                        );
                                        return Err(ConnError::Timeout);
                                    }
                                }
                            }
                        }
                    };
                    wipe(&mut self.body);
                    self.scratch.wipe();
                    if let Reply::Stream(which) = reply {
                        self.head.path = path;
                        return stream_log(core, io, which).await;
                    }
                    let status = match &reply {
                        Reply::Error(e) => e.status,
                        _ => 200,
                    };
                    let elapsed = started_at.elapsed();
                    core.metrics.request_finished(
                        index,
                        status,
                        elapsed.as_nanos() as u64,
                        authenticated,
                    );
                    record(
                        core,
                        &settings,
                        &self.head.method_raw,
                        &path,
                        peer,
                        client_ip(&self.head, from_proxy, io),
                        index,
                        &reply,
                        elapsed,
                    );
                    write_reply(&mut io.plain_out, reply, &mut self.out, close);
                    wipe(&mut self.out);
                    self.head.path = path; // hand the buffer back for reuse
                }
            }
            if close {
                return Ok(());
            }
            if io.plain_out.len() >= FLUSH_BYTES {
                io.flush().await?;
            }
        }
    }

    /// Reads the body per the head's framing into `self.body`, at most `limit` bytes.
    async fn read_body(
        &mut self,
        io: &mut TlsIo,
        limit: usize,
        deadline: Instant,
    ) -> Result<(), BodyFailure> {
        self.body.clear();
        match self.head.framing {
            Framing::Empty => Ok(()),
            Framing::Length(n) => {
                if n > limit as u64 {
                    return Err(BodyFailure::Http(HttpError::BodyTooLarge));
                }
                let n = n as usize;
                self.continue_if_expected(io).await?;
                while io.unread().len() < n {
                    if io.eof {
                        return Err(BodyFailure::Conn(ConnError::Closed));
                    }
                    io.read_more(deadline).await.map_err(BodyFailure::Conn)?;
                }
                self.body.extend_from_slice(&io.unread()[..n]);
                io.consume(n);
                Ok(())
            }
            Framing::Chunked => {
                self.continue_if_expected(io).await?;
                self.chunked.reset();
                loop {
                    let (used, done) = self
                        .chunked
                        .decode(io.unread(), &mut self.body, limit)
                        .map_err(BodyFailure::Http)?;
                    io.consume(used);
                    if done {
                        return Ok(());
                    }
                    if io.eof {
                        return Err(BodyFailure::Conn(ConnError::Closed));
                    }
                    io.read_more(deadline).await.map_err(BodyFailure::Conn)?;
                }
            }
        }
    }

    async fn continue_if_expected(&mut self, io: &mut TlsIo) -> Result<(), BodyFailure> {
        if self.head.expect_continue && io.unread().is_empty() {
            http::write_continue(&mut io.plain_out);
            io.flush().await.map_err(BodyFailure::Conn)?;
        }
        Ok(())
    }

    /// Answers a framing error and closes the connection.
    async fn fail(&mut self, io: &mut TlsIo, e: HttpError) -> Result<(), ConnError> {
        self.out.clear();
        api::json::write_error_body(&mut self.out, e.message());
        http::write_response(
            &mut io.plain_out,
            e.status(),
            Some("application/json"),
            &[],
            &self.out,
            true,
        );
        io.flush().await?;
        Ok(())
    }
}

/// The routing decision, detached from the borrowed path.
#[derive(Clone, Copy)]
enum Target {
    Route(usize),
    AddSlash,
    WrongMethod(usize),
    NotFound,
}

enum BodyFailure {
    Http(HttpError),
    Conn(ConnError),
}

/// Serialises a handler's reply into `plain_out`.
fn write_reply(plain_out: &mut Vec<u8>, reply: Reply, body: &mut Vec<u8>, close: bool) {
    match reply {
        Reply::Empty => http::write_response(plain_out, 200, None, &[], b"", close),
        Reply::Json => {
            http::write_response(plain_out, 200, Some("application/json"), &[], body, close)
        }
        Reply::Content(ct) => http::write_response(plain_out, 200, Some(ct), &[], body, close),
        // Streams are answered by `stream_log` before this point; never reached.
        Reply::Stream(_) => http::write_response(plain_out, 500, None, &[], b"", true),
        Reply::Error(e) => {
            wipe(body);
            api::json::write_error_body(body, &e.message);
            http::write_response(
                plain_out,
                e.status,
                Some("application/json"),
                &[],
                body,
                close,
            );
        }
    }
}

/// The client's IP for logs: the TCP peer, or for a TLS proxy the first `X-Forwarded-For`.
fn client_ip(head: &RequestHead, from_proxy: bool, io: &TlsIo) -> Option<IpAddr> {
    if from_proxy {
        if let Some(ip) = head.forwarded_for.as_deref().and_then(parse_forwarded_ip) {
            return Some(ip);
        }
    }
    io.peer_addr.map(|a| a.ip())
}

/// An `X-Forwarded-For` element: an IP, optionally with a port; `unknown` is ignored.
fn parse_forwarded_ip(v: &str) -> Option<IpAddr> {
    let v = v.trim();
    v.parse::<IpAddr>()
        .ok()
        .or_else(|| v.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// Audit and error-log records for one answered request.
#[allow(clippy::too_many_arguments)]
fn record(
    core: &Core,
    settings: &crate::api::settings::Settings,
    method: &str,
    path: &str,
    peer: Peer,
    ip: Option<IpAddr>,
    route_index: usize,
    reply: &Reply,
    elapsed: Duration,
) {
    use crate::api::RouteId;
    let status = match reply {
        Reply::Error(e) => e.status,
        _ => 200,
    };
    let route = &ROUTES[route_index];
    let audited = settings.audit_all
        || (status == 200
            && matches!(
                route.id,
                RouteId::KeyCreate | RouteId::KeyImport | RouteId::KeyDelete
            ));
    if !audited && !matches!(reply, Reply::Error(_)) {
        return; // the hot path: nothing to log, nothing to allocate
    }
    let identity = match peer {
        Peer::Identified(id) => Some(id.to_hex()),
        Peer::Unidentified(_) => None,
    };
    let logs = &core.shared.logs;
    if let Reply::Error(e) = reply {
        let level = if e.status >= 500 {
            crate::log::Level::ERROR
        } else {
            crate::log::Level::DEBUG
        };
        logs.error(
            level,
            &e.message,
            Some((method, path, ip, identity.as_deref())),
        );
    }
    let name = &path[route.path.len().min(path.len())..];
    let message = match (route.id, status) {
        (RouteId::KeyCreate | RouteId::KeyImport, 200) => format!("secret key '{name}' created"),
        (RouteId::KeyDelete, 200) => format!("secret key '{name}' deleted"),
        _ if settings.audit_all => format!("{method} {path}"),
        _ => return,
    };
    logs.audit(&crate::log::AuditEvent {
        message: &message,
        method,
        path,
        ip,
        identity: identity.as_deref(),
        status,
        elapsed,
    });
}

/// Streams one log as ND-JSON (chunked) until the client leaves or the server stops.
async fn stream_log(
    core: &Core,
    io: &mut TlsIo,
    which: crate::api::LogStream,
) -> Result<(), ConnError> {
    let logs = &core.shared.logs;
    let sub = match which {
        crate::api::LogStream::Audit => logs.subscribe_audit(),
        crate::api::LogStream::Error => logs.subscribe_error(),
    };
    io.plain_out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    io.flush().await?;
    let mut lines = Vec::new();
    loop {
        if core.shared.shutting_down() {
            break;
        }
        // Wait a little; a read that returns means the client closed (or broke protocol).
        let poll = Instant::now() + LOG_STREAM_POLL;
        match io.read_once(poll).await {
            Err(ConnError::Timeout) => {}
            Ok(()) if io.eof => break,
            Ok(()) => {}
            Err(e) => return Err(e),
        }
        lines.clear();
        if sub.drain(&mut lines).is_none() {
            break; // fell behind: dropped
        }
        if lines.is_empty() {
            continue;
        }
        for line in &lines {
            let _ = write!(&mut io.plain_out, "{:x}\r\n", line.len());
            io.plain_out.extend_from_slice(line.as_bytes());
            io.plain_out.extend_from_slice(b"\r\n");
        }
        io.flush().await?;
    }
    io.plain_out.extend_from_slice(b"0\r\n\r\n");
    io.flush().await
}

/// How often a log stream looks for new lines.
const LOG_STREAM_POLL: Duration = Duration::from_millis(100);
