//! A request's handler: started once its request is complete ([`begin`]: answered at once
//! when it needs no handler), run with its own buffers ([`run_handler`]) in a reusable heap
//! slot of the connection ([`Handlers`]), and finished into metrics, audit and the answer
//! ([`finish`]).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::send::answer;
use super::streams::{StreamState, Target, Work};
use super::H2;
use crate::api::settings::CoreSettings;
use crate::api::{self, ApiError, Core, LogStream, Peer, Reply, Request, ROUTES};
use crate::http;
use crate::http2::frame;
use crate::server::audit::record;

/// A finished handler: which stream, its buffers back, and the reply.
pub(super) struct Done {
    stream_id: u32,
    work: Work,
    reply: Reply,
    route_index: usize,
    elapsed: Duration,
}

/// Handler slots: each future lives in its own heap slot from creation to drop, so it can be
/// polled in place; slots are reused, so a connection allocates one only when more handlers
/// wait at once than ever before on it.
pub(super) struct Handlers<F> {
    slots: Vec<Box<Option<F>>>,
    free: Vec<usize>,
    /// Slots with a parked handler.
    active: Vec<usize>,
}

impl<F: Future<Output = Done>> Handlers<F> {
    pub(super) fn new() -> Self {
        Handlers {
            slots: Vec::new(),
            free: Vec::new(),
            active: Vec::new(),
        }
    }

    /// Places `fut` in a slot and polls it once: `Some(done)` if it finished on that poll
    /// (the slot is free again), `None` if it is parked.
    pub(super) fn start(&mut self, fut: F, cx: &mut Context<'_>) -> Option<Done> {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Box::new(None));
                self.slots.len() - 1
            }
        };
        *self.slots[index] = Some(fut);
        match self.poll_slot(index, cx) {
            Poll::Ready(done) => Some(done),
            Poll::Pending => {
                self.active.push(index);
                None
            }
        }
    }

    fn poll_slot(&mut self, index: usize, cx: &mut Context<'_>) -> Poll<Done> {
        let slot = &mut *self.slots[index];
        let Some(fut) = slot.as_mut() else {
            return Poll::Pending;
        };
        // SAFETY: the future sits inside a heap slot (`Box<Option<F>>`) that is never moved
        // out of or reallocated while it holds the future: it is only ever dropped in place
        // (`*slot = None`). Moving the `Box` pointer within `slots` does not move the value.
        let pinned = unsafe { Pin::new_unchecked(fut) };
        match pinned.poll(cx) {
            Poll::Ready(done) => {
                *slot = None;
                self.free.push(index);
                Poll::Ready(done)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Polls every parked handler; finished ones go to `done`.
    pub(super) fn poll_active(&mut self, cx: &mut Context<'_>, done: &mut Vec<Done>) {
        let mut i = 0;
        while i < self.active.len() {
            let index = self.active[i];
            match self.poll_slot(index, cx) {
                Poll::Ready(d) => {
                    done.push(d);
                    self.active.swap_remove(i);
                }
                Poll::Pending => i += 1,
            }
        }
    }

    pub(super) fn parked(&self) -> usize {
        self.active.len()
    }

    /// With no handler parked: gives back every slot.
    pub(super) fn release_idle(&mut self) {
        if self.active.is_empty() {
            *self = Handlers::new();
        }
    }
}

/// The closure that starts a stream's handler in a slot of `Handlers` (a macro, because the
/// handler future's type can only be inferred, not named).
macro_rules! starter {
    ($core:expr) => {
        |handlers: &mut Handlers<_>, st: Start, cx: &mut Context<'_>| {
            handlers.start(run_handler($core.clone(), st), cx)
        }
    };
}

/// What starting a handler needs.
pub(super) struct Start {
    route_index: usize,
    stream_id: u32,
    work: Work,
    settings: CoreSettings,
    peer: Peer,
    started_at: Instant,
}

/// Where a batch starts handlers: the connection's slots, the starter, the finished handlers
/// of this batch and the connection task's context.
pub(super) struct Runner<'a, 'w, F, S> {
    pub(super) handlers: &'a mut Handlers<F>,
    pub(super) start: &'a S,
    pub(super) done: &'a mut Vec<Done>,
    pub(super) cx: &'a mut Context<'w>,
}

/// Starts a stream's handler; a handler that finishes at once lands in the batch's done list.
pub(super) trait StartHandler {
    fn start(&mut self, st: Start);
}

impl<F, S> StartHandler for Runner<'_, '_, F, S>
where
    F: Future<Output = Done>,
    S: Fn(&mut Handlers<F>, Start, &mut Context<'_>) -> Option<Done>,
{
    fn start(&mut self, st: Start) {
        if let Some(d) = (self.start)(self.handlers, st, self.cx) {
            self.done.push(d);
        }
    }
}

/// Runs one request's handler with the route timeout; owns everything it needs.
pub(super) async fn run_handler(core: Rc<Core>, start: Start) -> Done {
    let Start {
        route_index,
        stream_id,
        mut work,
        settings,
        peer,
        started_at,
    } = start;
    let route = &ROUTES[route_index];
    let route_timeout = settings.routes.timeout[route_index];
    let reply = {
        let Work {
            path,
            body,
            out,
            scratch,
            host,
            binary,
            ..
        } = &mut work;
        let argument = route.argument_of(path);
        let mut req = Request {
            settings: &settings,
            route,
            argument,
            path,
            peer,
            body,
            scratch,
            binary: *binary,
            host,
        };
        out.clear();
        let mut handler = std::pin::pin!(api::dispatch(&core, &mut req, out));
        match futures_lite::future::poll_once(&mut handler).await {
            Some(reply) => reply,
            None if route_timeout.is_zero() => handler.await,
            None => {
                let remaining = route_timeout.saturating_sub(started_at.elapsed());
                match crate::rt::timeout(remaining.max(Duration::from_millis(1)), handler).await {
                    Ok(reply) => reply,
                    Err(_) => Reply::Error(ApiError {
                        status: 503,
                        message: "request timeout exceeded".into(),
                    }),
                }
            }
        }
    };
    Done {
        stream_id,
        work,
        reply,
        route_index,
        elapsed: started_at.elapsed(),
    }
}

/// The request is complete (or its body is not used): answer it, or run its handler.
pub(super) fn begin(h2: &mut H2, run: &mut impl StartHandler, out: &mut Vec<u8>, index: usize) {
    let s = &mut h2.streams[index];
    s.work.out.clear();
    match s.target {
        Target::Redirect => {
            let location = http::path::redirect_location(&s.work.path, &s.work.query);
            answer(h2, out, index, 301, None, &[("location", &location)]);
        }
        Target::NotFound => {
            s.work.out.extend_from_slice(b"404 page not found\n");
            answer(
                h2,
                out,
                index,
                404,
                Some("text/plain; charset=utf-8"),
                &[("x-content-type-options", "nosniff")],
            );
        }
        Target::WrongMethod(route) => {
            let want = ROUTES[route].method.as_str();
            let err = ApiError::wrong_method(&s.work.method_raw, want);
            api::json::write_error_body(&mut s.work.out, &err.message);
            answer(
                h2,
                out,
                index,
                405,
                Some("application/json"),
                &[("accept", want), ("allow", want)],
            );
        }
        Target::Route(route_index) => {
            if let Err(e) = s.authorized.clone() {
                let now_elapsed = s.started_at.elapsed();
                let mut work = std::mem::take(&mut s.work);
                let reply = api::refusal(route_index, work.binary, e, &mut work.out);
                let d = Done {
                    stream_id: s.id,
                    work,
                    reply,
                    route_index,
                    elapsed: now_elapsed,
                };
                h2.core.metrics.request_finished(
                    route_index,
                    d.reply.status(),
                    d.elapsed.as_nanos() as u64,
                    false,
                );
                finish_recorded(h2, out, d);
                return;
            }
            h2.core.metrics.request_started(route_index);
            s.state = StreamState::Running;
            let st = Start {
                route_index,
                stream_id: s.id,
                work: std::mem::take(&mut s.work),
                settings: s.settings.clone(),
                peer: s.peer,
                started_at: s.started_at,
            };
            run.start(st);
        }
    }
}

/// A handler finished: metrics, audit, and the answer (unless the stream was reset).
pub(super) fn finish(h2: &mut H2, out: &mut Vec<u8>, d: Done) {
    let status = d.reply.status();
    h2.core
        .metrics
        .request_finished(d.route_index, status, d.elapsed.as_nanos() as u64, true);
    finish_recorded(h2, out, d);
}

fn finish_recorded(h2: &mut H2, out: &mut Vec<u8>, mut d: Done) {
    // The handler is done with the body: its connection credit comes back.
    h2.recv_consumed += d.work.release_body();
    let Some(index) = h2.stream_index(d.stream_id) else {
        h2.give_back(d.work);
        return;
    };
    let s = &mut h2.streams[index];
    record(
        &h2.core,
        &s.settings,
        &d.work.method_raw,
        &d.work.path,
        s.peer,
        s.ip,
        d.route_index,
        &d.reply,
        d.elapsed,
    );
    if s.sent == usize::MAX {
        // Reset by the client while the handler ran.
        h2.give_back(d.work);
        h2.streams.swap_remove(index);
        return;
    }
    match std::mem::replace(&mut d.reply, Reply::Empty) {
        Reply::Stream(which) => {
            let logs = &h2.core.shared.logs;
            s.log = Some(match which {
                LogStream::Audit => logs.subscribe_audit(),
                LogStream::Error => logs.subscribe_error(),
            });
            s.state = StreamState::Log;
            s.work = d.work;
            let mark = frame::begin_headers(out);
            h2.encoder.begin_block(out);
            h2.encoder.encode_status(out, 200);
            h2.encoder
                .encode_field(out, b"content-type", b"application/x-ndjson");
            frame::finish_headers(out, mark, s.id, false, h2.peer_max_frame as u32);
        }
        reply => {
            s.work = d.work;
            let (status, content_type) = match &reply {
                Reply::Empty => (200, None),
                Reply::Json => (200, Some("application/json")),
                Reply::Content(ct) => (200, Some(*ct)),
                Reply::Binary(status) => (*status, Some("application/octet-stream")),
                Reply::Error(e) => {
                    s.work.out.clear();
                    api::json::write_error_body(&mut s.work.out, &e.message);
                    (e.status, Some("application/json"))
                }
                Reply::Stream(_) => (500, None),
            };
            answer(h2, out, index, status, content_type, &[]);
        }
    }
}
