//! The event loop that drives the load: each load thread owns a set of non-blocking
//! connections and moves every one of them through connect → TLS handshake → request →
//! response, in one loop, without a thread per connection.
//!
//! Why not a blocking thread per connection (the first version of this tool): on loopback
//! the server's `send` runs the client's TCP receive path and wakes the client thread that
//! sleeps in `recv`, on the server's CPU. With 32 sleeping threads every response cost the
//! server a cross-CPU wake-up (a reschedule IPI, a VM exit on a virtual machine): a fifth of
//! the server's CPU in its profile, a cost that a server whose clients are on other hosts
//! does not pay. One event loop per load thread is busy while answers arrive, so it rarely
//! sleeps: `Idle::Poll` (the default) sleeps in poll(2) only when nothing is ready;
//! `Idle::Spin` never sleeps, for comparison.
//!
//! With a [`Pool`] (`--client-model kms-go`) a slot is a request in flight, not a
//! connection: it takes the most recently idled connection from a pool shared by every load
//! thread or dials a new one, and when the answer is in, puts the connection back if the pool
//! has room or closes it (close_notify): Go's `http.Transport` with `MaxIdleConnsPerHost`.
//! Its requests are sent the way Go sends them: the TLS handshake first, then the head in one
//! write and a chunked body in the next (separate TLS records, separate syscalls).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// What a load thread does when no connection can make progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    /// Sleep in poll(2) until a socket is readable (or the next open-loop slot).
    Poll,
    /// Keep polling the sockets (non-blocking reads); the thread never sleeps.
    Spin,
}

/// How to reach the server: address, TLS config (None: plain HTTP), server name.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls_pki_types::ServerName<'static>,
    )>,
}

/// Where a connection's answers go: counters and histograms shared with the reporter.
pub struct Sink {
    pub stop: Arc<AtomicBool>,
    pub done: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    /// Connections opened (TCP connect + TLS handshake started).
    pub dialed: Arc<AtomicU64>,
    /// Connections whose TLS handshake resumed a session.
    pub resumed: Arc<AtomicU64>,
    pub hist: Arc<Mutex<Histogram<u64>>>,
    pub errors: Arc<Mutex<std::collections::BTreeMap<String, u64>>>,
    /// HTTP/2: the smallest SETTINGS_MAX_CONCURRENT_STREAMS a server sent (u64::MAX: none).
    pub streams_max: Arc<AtomicU64>,
}

impl Sink {
    pub(crate) fn error(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(what)
            .or_default() += 1;
    }
}

/// Produces the next request (a batch of one or more, sent in order) for a connection.
pub trait Source {
    fn next_batch(&mut self, out: &mut Vec<Arc<[u8]>>);

    /// What a 2xx answer's body must be (None: not checked).
    fn expect(&self) -> Option<Expect> {
        None
    }
}

/// A 2xx answer that must be one MinKMS frame: this command, and a message of exactly this
/// length (`--op kms-generate`, `--op kms-decrypt`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    pub command: u16,
    pub length: u32,
}

impl Expect {
    /// The error kind of a body of `len` bytes that starts with `first` (at most the
    /// frame header), or None when it is the expected frame.
    pub fn check(&self, first: &[u8], len: usize) -> Option<&'static str> {
        if first.len() < crate::kms::FRAME_HEADER_BYTES {
            return Some("kms answer: no frame");
        }
        if u16::from_be_bytes([first[0], first[1]]) != self.command {
            return Some("kms answer: wrong command");
        }
        let length = u32::from_be_bytes([first[2], first[3], first[4], first[5]]);
        if length != self.length || len != crate::kms::FRAME_HEADER_BYTES + length as usize {
            return Some("kms answer: wrong length");
        }
        None
    }
}

/// One non-blocking connection, TLS or plain.
pub(crate) enum Wire {
    Tls(Box<rustls::ClientConnection>, TcpStream),
    Plain(TcpStream, Vec<u8>),
}

impl Wire {
    pub(crate) fn open(ep: &Endpoint, sink: &Sink) -> Result<Wire, String> {
        sink.dialed.fetch_add(1, Ordering::Relaxed);
        let tcp = TcpStream::connect_timeout(&ep.addr, Duration::from_secs(5))
            .map_err(|e| format!("cannot connect to {}: {e}", ep.addr))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
        Ok(match &ep.tls {
            None => Wire::Plain(tcp, Vec::new()),
            Some((config, name)) => {
                let conn = rustls::ClientConnection::new(config.clone(), name.clone())
                    .map_err(|e| format!("TLS: {e}"))?;
                Wire::Tls(Box::new(conn), tcp)
            }
        })
    }

    /// The protocol ALPN chose (None while handshaking, or without TLS or ALPN).
    pub(crate) fn alpn(&self) -> Option<&[u8]> {
        match self {
            Wire::Tls(c, _) => c.alpn_protocol(),
            Wire::Plain(..) => None,
        }
    }

    /// Lets rustls queue any amount of plaintext (HTTP/2 writes a whole batch of requests
    /// at once; the default 64 KiB limit would turn a large batch into a short write).
    pub(crate) fn unbounded(&mut self) {
        if let Wire::Tls(c, _) = self {
            c.set_buffer_limit(None);
        }
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        match self {
            Wire::Tls(c, _) => c.is_handshaking(),
            Wire::Plain(..) => false,
        }
    }

    pub(crate) fn resumed(&self) -> bool {
        match self {
            Wire::Tls(c, _) => c.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
            Wire::Plain(..) => false,
        }
    }

    /// Ends the connection the way Go's `tls.Conn.Close` does: a close_notify alert (best
    /// effort, no waiting for the peer's), then the TCP close.
    pub(crate) fn close(mut self) {
        if let Wire::Tls(c, s) = &mut self {
            c.send_close_notify();
            while c.wants_write() {
                if c.write_tls(s).is_err() {
                    break;
                }
            }
        }
    }

    pub(crate) fn fd(&self) -> i32 {
        match self {
            Wire::Tls(_, s) | Wire::Plain(s, _) => s.as_raw_fd(),
        }
    }

    /// Queues `req` (rustls holds it until the handshake is done) and writes what it can.
    pub(crate) fn send(&mut self, req: &[u8]) -> io::Result<()> {
        match self {
            Wire::Tls(c, _) => c.writer().write_all(req)?,
            Wire::Plain(_, out) => out.extend_from_slice(req),
        }
        self.pump_write()
    }

    pub(crate) fn wants_write(&self) -> bool {
        match self {
            Wire::Tls(c, _) => c.wants_write(),
            Wire::Plain(_, out) => !out.is_empty(),
        }
    }

    pub(crate) fn pump_write(&mut self) -> io::Result<()> {
        match self {
            Wire::Tls(c, s) => {
                while c.wants_write() {
                    match c.write_tls(s) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
            }
            Wire::Plain(s, out) => {
                while !out.is_empty() {
                    match s.write(out) {
                        Ok(n) => {
                            out.drain(..n);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads what the socket has, appending plaintext to `buf`. `Ok(false)`: the peer
    /// closed the connection.
    pub(crate) fn pump_read(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        match self {
            Wire::Tls(c, s) => loop {
                match c.read_tls(s) {
                    Ok(0) => return Ok(false),
                    Ok(_) => {
                        let state = c
                            .process_new_packets()
                            .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
                        let n = state.plaintext_bytes_to_read();
                        if n > 0 {
                            let start = buf.len();
                            buf.resize(start + n, 0);
                            c.reader().read_exact(&mut buf[start..])?;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                    Err(e) => return Err(e),
                }
            },
            Wire::Plain(s, _) => {
                let mut tmp = [0u8; 16 * 1024];
                loop {
                    match s.read(&mut tmp) {
                        Ok(0) => return Ok(false),
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
}

/// A complete response at the start of `buf`: (status, head length, total length).
pub fn parse_response(buf: &[u8]) -> Result<Option<(u16, usize, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(head)) => {
            let status = resp.code.unwrap_or(0);
            let len = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .ok_or("response without Content-Length")?;
            Ok((buf.len() >= head + len).then_some((status, head, head + len)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(format!("bad response: {e}")),
    }
}

/// Idle connections shared by the load threads (`--client-model kms-go`): at most `max`;
/// the most recently idled is reused first, as in Go's `http.Transport`.
pub struct Pool {
    max: usize,
    idle: Mutex<Vec<Wire>>,
}

impl Pool {
    pub fn new(max: usize) -> Pool {
        Pool {
            max,
            idle: Mutex::new(Vec::with_capacity(max)),
        }
    }

    /// An idle connection the server has not closed meanwhile, if any.
    fn take(&self, scratch: &mut Vec<u8>) -> Option<Wire> {
        loop {
            let mut wire = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            // Go's persistConn notices a server-side close of an idle connection (its read
            // loop sees EOF) and drops the connection from the pool; check for that here.
            scratch.clear();
            match wire.pump_read(scratch) {
                Ok(true) if scratch.is_empty() => return Some(wire),
                _ => wire.close(),
            }
        }
    }

    /// Back to the pool if it has room, else closed.
    fn put(&self, wire: Wire) {
        let extra = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < self.max {
                idle.push(wire);
                None
            } else {
                Some(wire)
            }
        };
        if let Some(wire) = extra {
            wire.close();
        }
    }
}

/// Where the head ends in a request (just after the blank line), if it has a body after it.
fn body_start(req: &[u8]) -> Option<usize> {
    let end = req.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    (end < req.len()).then_some(end)
}

/// One connection's place in the load.
struct Slot<S> {
    wire: Option<Wire>,
    /// The wire has not answered a request yet (its handshake kind is still to be counted).
    fresh: bool,
    /// Pool mode: the request not yet handed to the wire, and how much of it was.
    pending: Option<(Arc<[u8]>, usize)>,
    source: S,
    /// Requests of the current batch not yet sent (reversed: pop from the end).
    batch: Vec<Arc<[u8]>>,
    /// The request on the wire and its intended send time.
    in_flight: Option<Instant>,
    buf: Vec<u8>,
    /// Open loop: index of this connection's next send slot.
    sent: u64,
    offset: Duration,
}

/// Load-thread settings.
pub struct Plan {
    pub endpoint: Endpoint,
    pub new_connection: bool,
    /// `--client-model kms-go`: slots are requests that share these idle connections.
    pub pool: Option<Pool>,
    pub idle: Idle,
    /// Open loop: the interval between one connection's requests.
    pub interval: Option<Duration>,
    pub started: Instant,
}

/// Drives `sources.len()` connections until `sink.stop` is set.
pub fn drive<S: Source>(plan: &Plan, sources: Vec<S>, sink: &Sink) -> Result<(), String> {
    let n = sources.len().max(1);
    let mut slots: Vec<Slot<S>> = sources
        .into_iter()
        .enumerate()
        .map(|(i, source)| Slot {
            wire: None,
            fresh: false,
            pending: None,
            source,
            batch: Vec::new(),
            in_flight: None,
            buf: Vec::with_capacity(4096),
            sent: 0,
            offset: plan
                .interval
                .map(|iv| iv.mul_f64(i as f64 / n as f64))
                .unwrap_or_default(),
        })
        .collect();
    let mut local =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| e.to_string())?;
    let mut last_merge = Instant::now();
    let mut pollfds: Vec<libc::pollfd> = Vec::with_capacity(slots.len());
    while !sink.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let mut progressed = false;
        let mut next_slot: Option<Instant> = None;
        for slot in slots.iter_mut() {
            // Start the next request when the connection is free (and its slot is due).
            if slot.in_flight.is_none() {
                let intended = match plan.interval {
                    Some(iv) => {
                        let at = plan.started + slot.offset + iv.mul_f64(slot.sent as f64);
                        if at > now {
                            next_slot = Some(next_slot.map_or(at, |t: Instant| t.min(at)));
                            continue;
                        }
                        at
                    }
                    None => now,
                };
                if slot.batch.is_empty() {
                    slot.source.next_batch(&mut slot.batch);
                    slot.batch.reverse();
                }
                let Some(req) = slot.batch.pop() else {
                    continue;
                };
                slot.sent += 1;
                if let Some(pool) = &plan.pool {
                    // Go: the most recently idled connection, else a new one.
                    slot.wire = pool.take(&mut slot.buf);
                }
                if slot.wire.is_none() {
                    match Wire::open(&plan.endpoint, sink) {
                        Ok(w) => {
                            slot.wire = Some(w);
                            slot.fresh = true;
                        }
                        Err(e) => {
                            sink.error(format!("connect: {e}"));
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                    }
                }
                if plan.pool.is_some() {
                    // Sent once the handshake is done (below).
                    slot.pending = Some((req, 0));
                } else {
                    let Some(wire) = slot.wire.as_mut() else {
                        continue;
                    };
                    if let Err(e) = wire.send(&req) {
                        sink.error(format!("io: {e}"));
                        slot.wire = None;
                        continue;
                    }
                }
                slot.buf.clear();
                slot.in_flight = Some(intended);
                progressed = true;
            }
            // Read what has arrived; finish the response when complete.
            let Some(intended) = slot.in_flight else {
                continue;
            };
            let Some(wire) = slot.wire.as_mut() else {
                continue;
            };
            let before = slot.buf.len();
            let open = match wire.pump_read(&mut slot.buf).and_then(|open| {
                wire.pump_write()?;
                // Pool mode: the head once the handshake is done, the body once the head is
                // on the socket, each in its own write.
                while let Some((req, at)) = &slot.pending {
                    if wire.is_handshaking() || wire.wants_write() {
                        break;
                    }
                    let end = match *at {
                        0 => body_start(req).unwrap_or(req.len()),
                        _ => req.len(),
                    };
                    wire.send(&req[*at..end])?;
                    slot.pending = (end < req.len()).then(|| (req.clone(), end));
                    progressed = true;
                }
                Ok(open)
            }) {
                Ok(open) => open,
                Err(e) => {
                    sink.error(format!("io: {e}"));
                    slot.wire = None;
                    slot.pending = None;
                    slot.in_flight = None;
                    continue;
                }
            };
            if slot.buf.len() > before {
                progressed = true;
            }
            match parse_response(&slot.buf) {
                Ok(Some((status, head, total))) => {
                    let ns = intended.elapsed().as_nanos() as u64;
                    let _ = local.record(ns.max(1));
                    sink.done.fetch_add(1, Ordering::Relaxed);
                    if !(200..300).contains(&status) {
                        sink.error(status.to_string());
                    } else if let Some(expect) = slot.source.expect() {
                        let body = &slot.buf[head..total];
                        let first = &body[..body.len().min(crate::kms::FRAME_HEADER_BYTES)];
                        if let Some(kind) = expect.check(first, body.len()) {
                            sink.error(kind.into());
                        }
                    }
                    slot.in_flight = None;
                    if slot.fresh {
                        slot.fresh = false;
                        if wire.resumed() {
                            sink.resumed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if let Some(pool) = &plan.pool {
                        if let Some(wire) = slot.wire.take() {
                            pool.put(wire);
                        }
                    } else if plan.new_connection {
                        slot.wire = None;
                    }
                }
                Ok(None) if !open => {
                    sink.error("io: connection closed by the server".into());
                    slot.wire = None;
                    slot.pending = None;
                    slot.in_flight = None;
                }
                Ok(None) => {}
                Err(e) => {
                    sink.error(e);
                    slot.wire = None;
                    slot.pending = None;
                    slot.in_flight = None;
                }
            }
        }
        if last_merge.elapsed() >= Duration::from_millis(100) {
            let _ = sink
                .hist
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .add(&local);
            local.reset();
            last_merge = Instant::now();
        }
        if progressed {
            continue;
        }
        match plan.idle {
            Idle::Spin => std::hint::spin_loop(),
            Idle::Poll => {
                pollfds.clear();
                for slot in &slots {
                    if let (Some(_), Some(w)) = (slot.in_flight, slot.wire.as_ref()) {
                        let mut events = libc::POLLIN;
                        if w.wants_write() {
                            events |= libc::POLLOUT;
                        }
                        pollfds.push(libc::pollfd {
                            fd: w.fd(),
                            events,
                            revents: 0,
                        });
                    }
                }
                let wait_ms = match next_slot {
                    Some(at) => at.saturating_duration_since(Instant::now()).as_millis() as i32,
                    None => 100,
                }
                .clamp(0, 100);
                // SAFETY: `pollfds` is a valid array of `pollfd` of the given length.
                unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, wait_ms) };
            }
        }
    }
    let _ = sink
        .hist
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .add(&local);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_complete_and_partial_responses() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(
            parse_response(full).unwrap(),
            Some((200, full.len() - 2, full.len()))
        );
        assert_eq!(parse_response(&full[..full.len() - 1]).unwrap(), None);
        assert_eq!(parse_response(b"HTTP/1.1 404 Not").unwrap(), None);
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn expect_checks_one_frame() {
        let e = Expect {
            command: 207,
            length: 3,
        };
        assert_eq!(e.check(&[0, 207, 0, 0, 0, 3], 9), None);
        assert_eq!(e.check(&[0, 207, 0, 0], 4), Some("kms answer: no frame"));
        assert_eq!(
            e.check(&[0, 206, 0, 0, 0, 3], 9),
            Some("kms answer: wrong command")
        );
        assert_eq!(
            e.check(&[0, 207, 0, 0, 0, 4], 10),
            Some("kms answer: wrong length")
        );
        assert_eq!(
            e.check(&[0, 207, 0, 0, 0, 3], 10),
            Some("kms answer: wrong length")
        );
    }

    #[test]
    fn splits_head_from_body() {
        let req = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        let at = body_start(req).unwrap();
        assert!(req[..at].ends_with(b"chunked\r\n\r\n"));
        assert_eq!(&req[at..], b"2\r\n{}\r\n0\r\n\r\n");
        assert_eq!(body_start(b"GET / HTTP/1.1\r\nHost: kes\r\n\r\n"), None);
    }
}
