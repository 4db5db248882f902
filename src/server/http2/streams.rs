//! The stream table: what a stream is ([`Stream`], [`StreamState`], its pooled request
//! buffers [`Work`]), finding, opening buffers for, closing and removing streams, and the
//! closed-stream rule (a stream reset while its handler runs stays until the handler
//! finishes; its answer is then dropped).

use std::time::Instant;

use super::{BODY_KEEP_BYTES, CONCURRENT_STREAMS_MAX, H2, HEAD_KEEP_BYTES};
use crate::api::settings::CoreSettings;
use crate::api::{self, ApiError, Peer};
use crate::http2::{frame, ErrorCode};
use crate::server::stream::{wipe, wipe_and_shrink, BUFFER_KEEP_BYTES_MAX};

/// What a stream is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StreamState {
    /// Receiving the request body (END_STREAM not yet seen).
    Body,
    /// The handler runs.
    Running,
    /// Answer headers sent; body bytes left waiting for flow-control credit.
    Sending,
    /// A log stream (`/v1/log/*`): DATA frames until the client leaves.
    Log,
    /// Answered while the client was still sending: what it sends is dropped (window
    /// replenished) until its END_STREAM, for at most [`LINGER`] and [`LINGER_BYTES_MAX`],
    /// so that clients which only read the answer after sending (curl) get it.
    ///
    /// [`LINGER`]: crate::server::stream::LINGER
    /// [`LINGER_BYTES_MAX`]: crate::server::stream::LINGER_BYTES_MAX
    Draining,
}

/// The routing decision, detached from the borrowed path.
#[derive(Clone, Copy, Debug)]
pub(super) enum Target {
    Route(usize),
    Redirect,
    WrongMethod(usize),
    NotFound,
}

/// Per-request buffers, pooled per connection so that a request allocates nothing once the
/// connection is warm.
#[derive(Default)]
pub(super) struct Work {
    pub(super) path: String,
    pub(super) query: String,
    /// `:authority` (or `host`) as sent, for `/version`.
    pub(super) host: String,
    /// `content-type` or `accept` is exactly `application/octet-stream`.
    pub(super) binary: bool,
    pub(super) method_raw: String,
    pub(super) body: Vec<u8>,
    pub(super) out: Vec<u8>,
    pub(super) scratch: api::Scratch,
    /// Connection window held by `body`, credited back when the body is released.
    pub(super) held: u32,
}

impl Work {
    fn wipe(&mut self) {
        self.release_body();
        wipe_and_shrink(&mut self.out, 0);
        self.scratch.wipe_and_shrink(BUFFER_KEEP_BYTES_MAX);
        self.release_head();
    }

    /// Wipes the body (freeing a large buffer); returns the connection window it held.
    pub(super) fn release_body(&mut self) -> u32 {
        wipe(&mut self.body);
        if self.body.capacity() > BODY_KEEP_BYTES {
            self.body = Vec::new();
        }
        std::mem::take(&mut self.held)
    }

    /// Clears the decoded request head, freeing strings a long head grew.
    pub(super) fn release_head(&mut self) {
        self.binary = false;
        for s in [
            &mut self.path,
            &mut self.query,
            &mut self.method_raw,
            &mut self.host,
        ] {
            s.clear();
            if s.capacity() > HEAD_KEEP_BYTES {
                *s = String::new();
            }
        }
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        wipe(&mut self.body);
        wipe(&mut self.out);
        self.scratch.wipe();
    }
}

pub(super) struct Stream {
    pub(super) id: u32,
    pub(super) state: StreamState,
    pub(super) target: Target,
    /// The authorisation decision for a route, taken from the header block.
    pub(super) authorized: Result<(), ApiError>,
    pub(super) peer: Peer,
    /// The client's address for logs (the TCP peer, or a proxy's X-Forwarded-For).
    pub(super) ip: Option<std::net::IpAddr>,
    /// The route's body limit when the body is kept; `None`: DATA is dropped.
    pub(super) body_limit: Option<usize>,
    /// `content-length` of the request, checked against the DATA received.
    pub(super) content_length: Option<u64>,
    pub(super) received: u64,
    /// The client ended its side.
    pub(super) remote_closed: bool,
    pub(super) send_window: i64,
    /// Bytes of `work.out` already sent as DATA (state `Sending`).
    pub(super) sent: usize,
    pub(super) started_at: Instant,
    /// Since when the answer waits for flow-control credit — the start of the current
    /// progress window, not moved by a trickle of credit — or since when it drains (state
    /// `Draining`).
    pub(super) stalled_since: Option<Instant>,
    /// Bytes of the answer sent when the current progress window started.
    pub(super) progress_mark: usize,
    pub(super) work: Work,
    pub(super) settings: CoreSettings,
    pub(super) log: Option<crate::log::Subscription>,
}

impl H2 {
    pub(super) fn stream_mut(&mut self, id: u32) -> Option<&mut Stream> {
        self.streams.iter_mut().find(|s| s.id == id)
    }

    pub(super) fn stream_index(&self, id: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.id == id)
    }

    pub(super) fn take_work(&mut self) -> Work {
        self.pool.pop().unwrap_or_default()
    }

    pub(super) fn give_back(&mut self, mut work: Work) {
        self.recv_consumed += work.release_body();
        work.wipe();
        if self.pool.len() < CONCURRENT_STREAMS_MAX as usize {
            self.pool.push(work);
        }
    }

    pub(super) fn remove_stream(&mut self, index: usize) {
        let stream = self.streams.swap_remove(index);
        self.give_back(stream.work);
    }

    /// Closes stream `index` (reset by either side). A stream whose handler still runs stays,
    /// counted against [`CONCURRENT_STREAMS_MAX`], until the handler finishes; its answer is
    /// then dropped.
    pub(super) fn close_stream(&mut self, index: usize) {
        let s = &mut self.streams[index];
        if s.state == StreamState::Running {
            s.remote_closed = true;
            s.sent = usize::MAX; // nothing is to be sent
        } else {
            self.remove_stream(index);
        }
    }

    /// True while every open stream waits only on the client: its answer held back by the
    /// client's flow-control windows, or the client still sending after it (draining).
    pub(super) fn waits_only_on_client(&self) -> bool {
        self.streams.iter().all(|s| match s.state {
            StreamState::Sending => s.stalled_since.is_some(),
            StreamState::Draining => true,
            StreamState::Body | StreamState::Running | StreamState::Log => false,
        })
    }
}

/// Ends stream `index` with RST_STREAM(`code`) (see [`H2::close_stream`]).
pub(super) fn reset_stream(h2: &mut H2, out: &mut Vec<u8>, index: usize, code: ErrorCode) {
    frame::write_rst_stream(out, h2.streams[index].id, code);
    h2.close_stream(index);
}
