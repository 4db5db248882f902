//! HTTP/1.1 over a connection's byte stream ([`TlsStream`]): request heads read in order
//! (keep-alive and pipelining), each routed and authorised from its head alone, a body read
//! only for an authorised request to a route that takes one, then the handler, the answer
//! queued behind earlier ones, and the audit/error records.
//!
//! Bodies nobody will use (unauthorised requests, 301/404/405 answers, body-less routes) are
//! never buffered: up to [`DISCARD_BODY_BYTES_MAX`] is read and dropped as it arrives, so the
//! connection stays usable; a larger one is answered with `Connection: close`, and the
//! connection lingers, dropping what still arrives, so the client reads the answer.

use std::time::{Duration, Instant};

use super::audit::record;
use super::error::ConnError;
use super::log_stream::stream_log;
use super::proxy;
use super::slots::{Phase, Slot};
use super::stream::{wipe, wipe_and_release, wipe_and_shrink, TlsStream, BUFFER_KEEP_BYTES_MAX};
use super::timeouts::Timeouts;
use crate::api::{self, ApiError, Core, Peer, Reply, Request, Routed, ROUTES};
use crate::auth::identity::IdentityError;
use crate::http::{self, Framing, HttpError, ParseOptions, RequestHead};

/// Bodies that are not used are read and dropped up to this size so the connection stays
/// usable; a larger one closes the connection after the answer.
pub const DISCARD_BODY_BYTES_MAX: usize = 64 * 1024;
/// Responses are flushed once this much output is pending, even mid-pipeline.
const FLUSH_BYTES: usize = 64 * 1024;
/// A connection that has waited this long for its next request gives back its buffers
/// (once; after that it sleeps until a request, its idle timeout or the shutdown).
pub(super) const IDLE_SHRINK_AFTER: Duration = Duration::from_millis(500);
/// Default capacity of the per-request body and output buffers.
const REQUEST_BUFFER_BYTES: usize = 1024;

/// Per-connection request state, reused across requests.
pub struct Http1 {
    head: RequestHead,
    scratch: crate::api::Scratch,
    body: Vec<u8>,
    out: Vec<u8>,
    chunked: http::ChunkedDecoder,
}

impl Default for Http1 {
    fn default() -> Self {
        Http1 {
            head: RequestHead::default(),
            scratch: Default::default(),
            body: Vec::with_capacity(REQUEST_BUFFER_BYTES),
            out: Vec::with_capacity(REQUEST_BUFFER_BYTES),
            chunked: http::ChunkedDecoder::default(),
        }
    }
}

impl Drop for Http1 {
    fn drop(&mut self) {
        wipe(&mut self.body);
        wipe(&mut self.out);
        self.scratch.wipe();
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

/// How an unused body ended.
enum Discarded {
    /// Read and dropped entirely: the connection can serve the next request.
    Complete,
    /// Too large (or held back behind `Expect: 100-continue`): answer, then close.
    Abandoned,
}

impl Http1 {
    /// Serves requests until the client leaves, a limit is hit or a timeout fires.
    /// `ready_at` is when the handshake completed: the first request's head must be complete
    /// within the header timeout of it.
    pub async fn serve(
        &mut self,
        core: &Core,
        io: &mut TlsStream,
        peer: Peer,
        timeouts: Timeouts,
        slot: &Slot,
        ready_at: Instant,
    ) -> Result<(), ConnError> {
        let mut served: u64 = 0;
        loop {
            let settings = core.settings.get(&core.shared.settings);
            // Only connections from a configured TLS proxy may forward a client certificate.
            let from_proxy = matches!(peer, Peer::Identified(id) if settings.proxies.contains(&id));
            let options = ParseOptions {
                limits: http::Limits::default(),
                cert_header: from_proxy.then(|| proxy::cert_header(&settings)),
            };

            // 1. The request head. Before its first byte: the header timeout for the first
            //    request, the idle timeout between requests; after it: the header timeout.
            let mut started: Option<Instant> = None;
            let mut idle_since: Option<Instant> = None;
            let mut shrunk = false;
            let head_len = loop {
                if !io.unread().is_empty() && started.is_none() {
                    started = Some(crate::rt::now());
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
                let now = crate::rt::now();
                let limit = match started {
                    Some(t) => t + timeouts.header,
                    None if served == 0 => ready_at + timeouts.header,
                    None => {
                        slot.set_phase(Phase::Idle, now);
                        *idle_since.get_or_insert(now) + timeouts.idle
                    }
                };
                // Between requests a shutdown ends the wait at once; the first wait is cut
                // short once to give back the buffers of an idle connection.
                let deadline = match started {
                    None if !shrunk => limit.min(now + IDLE_SHRINK_AFTER),
                    _ => limit,
                };
                let read = if started.is_none() {
                    futures_lite::future::or(async { Some(io.read_more(deadline).await) }, async {
                        core.shared.shutdown.wait().await;
                        None
                    })
                    .await
                } else {
                    Some(io.read_more(deadline).await)
                };
                let Some(read) = read else {
                    return Ok(()); // shutting down, between requests
                };
                match read {
                    Ok(()) => {}
                    Err(ConnError::Timeout) if crate::rt::now() < limit => {
                        if started.is_none() && !shrunk {
                            // Idle: give back what earlier requests grew.
                            self.release_buffers();
                            io.shrink_idle();
                            shrunk = true;
                        }
                        continue;
                    }
                    Err(ConnError::Timeout) if started.is_some() => {
                        http::write_response(io.queue(), 408, None, &[], b"", true);
                        return Err(ConnError::Timeout);
                    }
                    Err(e) => return Err(e),
                }
            };
            io.consume(head_len);
            slot.set_busy();
            served += 1;
            // The request is authorised with the settings current now that it has arrived,
            // not those of when the connection went idle: a reload (a revoked policy) applies
            // to the very next request on every keep-alive connection.
            let settings = core.settings.get(&core.shared.settings);
            let from_proxy = matches!(peer, Peer::Identified(id) if settings.proxies.contains(&id));
            let (peer, proxy_error) = if from_proxy {
                match proxy::forwarded_identity(&self.head, settings.client_verifier.as_ref()) {
                    Ok(identity) => (Peer::Identified(identity), None),
                    Err(e) => (Peer::Unidentified(IdentityError::NoCertificate), Some(e)),
                }
            } else {
                (peer, None)
            };

            // 2. Route and authorise from the head alone.
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
            let authorized = match (&cleaned, routed) {
                (None, Target::Route(index)) => Some(match proxy_error.clone() {
                    Some(e) => Err(e),
                    None => api::authorize_head(&settings, index, peer, &self.head.path),
                }),
                _ => None,
            };
            let keep_body = match (routed, &authorized) {
                (Target::Route(index), Some(Ok(()))) if ROUTES[index].body_bytes_max > 0 => {
                    Some(ROUTES[index].body_bytes_max)
                }
                _ => None,
            };
            let route_timeout = match routed {
                Target::Route(index) => settings.routes.timeout[index],
                _ => Duration::ZERO,
            };
            // The route timeout covers reading the body and running the handler.
            let started_at = crate::rt::now();
            let body_deadline = started_at
                + if route_timeout.is_zero() {
                    Duration::from_secs(15)
                } else {
                    route_timeout
                };

            // 3. The body: read for an authorised request that uses it, dropped otherwise.
            let mut abandon = false;
            match keep_body {
                Some(limit) => {
                    if let Err(e) = self.read_body(io, limit, body_deadline).await {
                        return match e {
                            BodyFailure::Http(e) => self.fail(io, e).await,
                            BodyFailure::Conn(e) => Err(e),
                        };
                    }
                }
                None => match self.discard_body(io, body_deadline).await {
                    Ok(Discarded::Complete) => {}
                    Ok(Discarded::Abandoned) => abandon = true,
                    Err(BodyFailure::Http(e)) => return self.fail(io, e).await,
                    Err(BodyFailure::Conn(e)) => return Err(e),
                },
            }

            // 4. Answer.
            let keep_alive = self.head.keep_alive && !abandon && !core.shared.shutting_down();
            let close = !keep_alive;
            match (&cleaned, routed) {
                (Some(clean), _) => self.redirect(io, clean, close),
                (None, Target::AddSlash) => {
                    let mut path = std::mem::take(&mut self.head.path);
                    path.push('/');
                    self.redirect(io, &path, close);
                    path.clear();
                    self.head.path = path;
                }
                (None, Target::NotFound) => {
                    http::write_response(
                        io.queue(),
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
                        io.queue(),
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
                    let argument = route.argument_of(&path);
                    let mut req = Request {
                        settings: &settings,
                        route,
                        argument,
                        path: &path,
                        peer,
                        body: &mut self.body,
                        scratch: &mut self.scratch,
                        binary: self.head.binary,
                        host: &self.head.host,
                    };
                    self.out.clear();
                    let authorized = authorized.unwrap_or(Err(ApiError::NOT_AUTHORIZED));
                    let authenticated = authorized.is_ok();
                    let reply = match authorized {
                        Err(e) => api::refusal(index, self.head.binary, e, &mut self.out),
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
                                match crate::rt::timeout(
                                    remaining.max(Duration::from_millis(1)),
                                    work,
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
                                        write_reply(io.queue(), Reply::Error(e), &mut body, true);
                                        return Err(ConnError::Timeout);
                                    }
                                }
                            }
                        }
                    };
                    wipe_and_shrink(&mut self.body, REQUEST_BUFFER_BYTES);
                    self.scratch.wipe_and_shrink(BUFFER_KEEP_BYTES_MAX);
                    if let Reply::Stream(which) = reply {
                        self.head.path = path;
                        return stream_log(core, io, which).await;
                    }
                    let status = reply.status();
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
                        proxy::client_ip(&self.head, from_proxy, io.peer_addr),
                        index,
                        &reply,
                        elapsed,
                    );
                    write_reply(io.queue(), reply, &mut self.out, close);
                    wipe_and_shrink(&mut self.out, REQUEST_BUFFER_BYTES);
                    self.head.path = path; // hand the buffer back for reuse
                }
            }
            if abandon {
                return io.close_and_linger().await;
            }
            if close {
                return Ok(());
            }
            if io.queued_bytes() >= FLUSH_BYTES {
                io.flush().await?;
            }
            io.shrink_after_request();
        }
    }

    /// A 301 to `path` plus the request's query ([`http::path::redirect_location`]: no
    /// request byte reaches the header raw).
    fn redirect(&mut self, io: &mut TlsStream, path: &str, close: bool) {
        let location = http::path::redirect_location(path, &self.head.query);
        http::write_response(
            io.queue(),
            301,
            None,
            &[("Location", &location)],
            b"",
            close,
        );
    }

    /// Gives back buffers while the connection is idle.
    fn release_buffers(&mut self) {
        wipe_and_release(&mut self.body);
        wipe_and_release(&mut self.out);
        self.scratch.wipe_and_shrink(0);
    }

    /// Reads the body per the head's framing into `self.body`, at most `limit` bytes. Bytes
    /// are moved out of the stream as they arrive, so only the body itself is buffered.
    async fn read_body(
        &mut self,
        io: &mut TlsStream,
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
                self.body.reserve(n);
                loop {
                    let take = io.unread().len().min(n - self.body.len());
                    self.body.extend_from_slice(&io.unread()[..take]);
                    io.consume(take);
                    if self.body.len() == n {
                        return Ok(());
                    }
                    if io.eof {
                        return Err(BodyFailure::Conn(ConnError::Closed));
                    }
                    io.read_more(deadline).await.map_err(BodyFailure::Conn)?;
                }
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

    /// Reads and drops a body nobody uses, up to [`DISCARD_BODY_BYTES_MAX`], without keeping
    /// more than one read of it in memory.
    async fn discard_body(
        &mut self,
        io: &mut TlsStream,
        deadline: Instant,
    ) -> Result<Discarded, BodyFailure> {
        let budget = DISCARD_BODY_BYTES_MAX;
        match self.head.framing {
            Framing::Empty => Ok(Discarded::Complete),
            _ if self.head.expect_continue && io.unread().is_empty() => {
                // The client waits for 100 Continue before sending: never ask for it.
                Ok(Discarded::Abandoned)
            }
            Framing::Length(n) if n > budget as u64 => Ok(Discarded::Abandoned),
            Framing::Length(n) => {
                let mut left = n as usize;
                loop {
                    let take = io.unread().len().min(left);
                    io.consume(take);
                    left -= take;
                    if left == 0 {
                        return Ok(Discarded::Complete);
                    }
                    if io.eof {
                        return Err(BodyFailure::Conn(ConnError::Closed));
                    }
                    io.read_more(deadline).await.map_err(BodyFailure::Conn)?;
                }
            }
            Framing::Chunked => {
                self.chunked.reset();
                let mut dropped = 0usize;
                loop {
                    self.body.clear();
                    let result = self
                        .chunked
                        .decode(io.unread(), &mut self.body, budget - dropped);
                    let (used, done) = match result {
                        Ok(r) => r,
                        Err(HttpError::BodyTooLarge) => return Ok(Discarded::Abandoned),
                        Err(e) => return Err(BodyFailure::Http(e)),
                    };
                    dropped += self.body.len();
                    wipe(&mut self.body);
                    io.consume(used);
                    if done {
                        return Ok(Discarded::Complete);
                    }
                    if io.eof {
                        return Err(BodyFailure::Conn(ConnError::Closed));
                    }
                    io.read_more(deadline).await.map_err(BodyFailure::Conn)?;
                }
            }
        }
    }

    async fn continue_if_expected(&mut self, io: &mut TlsStream) -> Result<(), BodyFailure> {
        if self.head.expect_continue && io.unread().is_empty() {
            http::write_continue(io.queue());
            io.flush().await.map_err(BodyFailure::Conn)?;
        }
        Ok(())
    }

    /// Answers a framing error (400, 413, 431, 501, 505) and closes the connection,
    /// lingering so that the client reads the answer even while it is still sending.
    async fn fail(&mut self, io: &mut TlsStream, e: HttpError) -> Result<(), ConnError> {
        self.out.clear();
        api::json::write_error_body(&mut self.out, e.message());
        http::write_response(
            io.queue(),
            e.status(),
            Some("application/json"),
            &[],
            &self.out,
            true,
        );
        io.close_and_linger().await
    }
}

/// Serialises a handler's reply into the output queue.
fn write_reply(queue: &mut Vec<u8>, reply: Reply, body: &mut Vec<u8>, close: bool) {
    match reply {
        Reply::Empty => http::write_response(queue, 200, None, &[], b"", close),
        Reply::Json => http::write_response(queue, 200, Some("application/json"), &[], body, close),
        Reply::Content(ct) => http::write_response(queue, 200, Some(ct), &[], body, close),
        Reply::Binary(status) => http::write_response(
            queue,
            status,
            Some("application/octet-stream"),
            &[],
            body,
            close,
        ),
        // Streams are answered by `stream_log` before this point; never reached.
        Reply::Stream(_) => http::write_response(queue, 500, None, &[], b"", true),
        Reply::Error(e) => {
            wipe(body);
            api::json::write_error_body(body, &e.message);
            http::write_response(queue, e.status, Some("application/json"), &[], body, close);
        }
    }
}
