//! HTTP/2 (RFC 9113) over a connection's byte stream ([`TlsStream`]), for clients that
//! negotiate `h2` with ALPN (MinIO's kms-go client does).
//!
//! One connection task owns every stream of the connection. Frames are read in batches: all
//! complete frames in the input are handled before anything is written, and the answers of
//! every stream that finished meanwhile go out together, so many requests share each read,
//! each TLS record and each write. A request is routed and authorised from its header block
//! alone, before any DATA is kept; its handler is polled once right away — a cache hit
//! answers on that poll without allocating — and one that has to wait (the keystore) is
//! parked in a per-connection pool of handler slots and polled again when it wakes, while
//! the other streams go on.
//!
//! Limits against the known HTTP/2 attacks are named constants below: concurrent streams,
//! resets per second (rapid reset, CVE-2023-44487), header block bytes before decoding
//! (CONTINUATION floods), the HPACK table and decoded header list (HPACK bombs), control
//! frames per second and queued output (SETTINGS/PING floods), flow-control stalls, and the
//! header and idle timeouts of HTTP/1.1.
//!
//! The request path, file by file: [`serve`] here (the loop: read, handle every frame, write
//! the answers, wait) → `recv.rs` (the frames of a read, each by type; DATA within the
//! connection's receive window) → `headers.rs` (a complete header block: decoded, validated,
//! routed and authorised, a stream opened) → `handlers.rs` (the answer given at once, or the
//! handler started in a slot; finished into metrics, audit and the answer) → `send.rs`
//! (HEADERS, then DATA within the client's windows). Beside the path: `streams.rs` (the
//! stream table, stream state, closing and removing streams), `flow.rs` (receive credit
//! given back, stream deadlines and the send-progress window) and `window.rs` (the flood
//! limits' counters).

use std::future::Future;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::error::ConnError;
use super::http1::IDLE_SHRINK_AFTER;
use super::log_stream::LOG_STREAM_POLL;
use super::slots::{Phase, Slot};
use super::stream::{wipe_and_release, TlsStream};
use super::timeouts::Timeouts;
use crate::api::{Core, Peer};
use crate::http::RequestHead;
use crate::http2::frame;
use crate::http2::{hpack, ErrorCode, PREFACE};

mod flow;
#[macro_use]
mod handlers;
mod headers;
mod recv;
mod send;
mod streams;
mod window;

use flow::check_deadlines;
use handlers::{finish, run_handler, Done, Handlers, Runner, Start};
use recv::process_input;
use send::pump_logs;
use streams::{Stream, StreamState, Work};
use window::WindowCounter;

/// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS; Go's default).
pub const CONCURRENT_STREAMS_MAX: u32 = 250;
/// Bytes of one header block (HEADERS + CONTINUATION), checked before decoding.
pub const HEADER_BLOCK_BYTES_MAX: usize = 16 * 1024;
/// Decoded header list size (SETTINGS_MAX_HEADER_LIST_SIZE; name + value + 32 per field).
pub const HEADER_LIST_BYTES_MAX: u32 = 16 * 1024;
/// Our HPACK dynamic table (SETTINGS_HEADER_TABLE_SIZE, the default).
pub const HPACK_TABLE_BYTES: usize = 4096;
/// Largest frame payload we accept (SETTINGS_MAX_FRAME_SIZE, the default).
pub const FRAME_BYTES_MAX: u32 = 16_384;
/// Receive window of every stream (SETTINGS_INITIAL_WINDOW_SIZE): a whole request body of
/// the largest route limit fits, so bodies need no stream WINDOW_UPDATE.
pub const STREAM_WINDOW_BYTES: u32 = 1 << 20;
/// Request body bytes one connection may hold at once (DATA kept for its streams): the
/// connection's receive window. Credit for a kept body comes back only once the body is
/// released (its handler finished, or the stream ended); DATA that is dropped is credited at
/// once. A client that sends beyond its window gets FLOW_CONTROL_ERROR.
pub const CONNECTION_BODY_BYTES_MAX: u32 = 4 << 20;
/// A pooled request's body buffer keeps at most this capacity (larger ones are freed).
const BODY_KEEP_BYTES: usize = 4 * 1024;
/// A stream's decoded `:path`, query and method keep at most this capacity once its answer
/// is written (a longer path is freed then, not pooled).
const HEAD_KEEP_BYTES: usize = 256;
/// Streams the client may reset (or get refused) per [`RESET_WINDOW`] before the
/// connection is closed with ENHANCE_YOUR_CALM (rapid reset).
pub const RESETS_PER_WINDOW_MAX: u32 = 200;
pub const RESET_WINDOW: Duration = Duration::from_secs(1);
/// SETTINGS, PING, WINDOW_UPDATE, PRIORITY, empty DATA and unknown frames the client may send
/// per [`CONTROL_WINDOW`] (SETTINGS/PING floods).
pub const CONTROL_FRAMES_PER_WINDOW_MAX: u32 = 20_000;
pub const CONTROL_WINDOW: Duration = Duration::from_secs(1);
/// Output queued and not yet written beyond which the client is not reading.
pub const QUEUED_OUTPUT_BYTES_MAX: usize = 4 << 20;
/// An answer held back by the client's flow-control windows must get at least this many
/// bytes out (or all it has left) per write timeout (`Timeouts::write`), else its stream is
/// reset: a client that hands out a byte of credit now and then does not keep it alive.
pub const SEND_PROGRESS_BYTES_MIN: usize = 16 * 1024;
/// A connection with streams open wakes this often to check their deadlines.
const POLL_PERIOD: Duration = Duration::from_millis(500);
/// A connection idle this long gives back the stream table, pooled buffers, handler slots,
/// socket and TLS buffers and the HPACK table's spare room (as long as HTTP/1.1 waits).
const IDLE_RELEASE_AFTER: Duration = IDLE_SHRINK_AFTER;

/// Why the connection ends with a GOAWAY.
#[derive(Debug, Clone, Copy)]
struct ConnectionError(ErrorCode);

/// The connection's HTTP/2 state apart from the handlers.
struct H2 {
    core: Rc<Core>,
    /// How long an answer may wait for flow-control credit before its stream is reset.
    write_timeout: Duration,
    peer: Peer,
    peer_addr: Option<std::net::SocketAddr>,
    streams: Vec<Stream>,
    pool: Vec<Work>,
    decoder: hpack::Decoder,
    encoder: hpack::Encoder,
    /// Highest client stream id seen.
    last_stream_id: u32,
    /// A header block in progress: the stream id, END_STREAM of its HEADERS, the bytes.
    continuation: Option<(u32, bool)>,
    /// When the open header block's HEADERS frame arrived (the header timeout runs from it).
    block_started: Instant,
    block: Vec<u8>,
    /// Peer settings.
    peer_initial_window: i64,
    peer_max_frame: usize,
    /// Flow control of the connection: what we may send; what the client may still send;
    /// credit due back to it (dropped DATA, released bodies) and not yet sent.
    send_window: i64,
    recv_window: i64,
    recv_consumed: u32,
    /// The flood limits: streams reset or refused, and control frames.
    resets: WindowCounter,
    control_frames: WindowCounter,
    goaway_sent: bool,
    requests: u64,
    /// Scratch for one decoded header block.
    head: RequestHead,
}

impl H2 {
    fn new(core: Rc<Core>, peer: Peer, peer_addr: Option<std::net::SocketAddr>) -> H2 {
        let now = crate::rt::now();
        H2 {
            write_timeout: super::stream::WRITE_TIMEOUT,
            core,
            peer,
            peer_addr,
            streams: Vec::new(),
            pool: Vec::new(),
            decoder: hpack::Decoder::new(HPACK_TABLE_BYTES, HEADER_LIST_BYTES_MAX as usize),
            encoder: hpack::Encoder::new(),
            last_stream_id: 0,
            continuation: None,
            block_started: now,
            block: Vec::new(),
            peer_initial_window: 65_535,
            peer_max_frame: 16_384,
            send_window: 65_535,
            recv_window: i64::from(CONNECTION_BODY_BYTES_MAX),
            recv_consumed: 0,
            resets: WindowCounter::new(RESETS_PER_WINDOW_MAX, RESET_WINDOW, now),
            control_frames: WindowCounter::new(CONTROL_FRAMES_PER_WINDOW_MAX, CONTROL_WINDOW, now),
            goaway_sent: false,
            requests: 0,
            head: RequestHead::default(),
        }
    }

    /// While idle (no stream open, no header block open): gives back what a burst of
    /// streams grew, down to the HPACK table's live entries (they are connection state).
    fn release_idle(&mut self) {
        if self.streams.is_empty() && self.continuation.is_none() {
            self.streams = Vec::new();
            self.pool = Vec::new(); // each `Work` wipes its buffers on drop
            wipe_and_release(&mut self.block);
            self.head = RequestHead::default();
            self.decoder.shrink_while_idle();
        }
    }
}

/// Serves an HTTP/2 connection until the client leaves, an error or a timeout ends it, or
/// the server shuts down (GOAWAY, in-flight streams finish).
pub async fn serve(
    core: Rc<Core>,
    io: &mut TlsStream,
    peer: Peer,
    timeouts: Timeouts,
    slot: &Slot,
    ready_at: Instant,
) -> Result<(), ConnError> {
    let mut h2 = H2::new(core.clone(), peer, io.peer_addr);
    h2.write_timeout = timeouts.write;
    let mut handlers = Handlers::new();
    let mut done: Vec<Done> = Vec::new();
    let starter = starter!(core);

    // Our SETTINGS, and the connection window opened wide.
    frame::write_settings(
        io.queue(),
        &[
            (
                crate::http2::SETTINGS_MAX_CONCURRENT_STREAMS,
                CONCURRENT_STREAMS_MAX,
            ),
            (
                crate::http2::SETTINGS_INITIAL_WINDOW_SIZE,
                STREAM_WINDOW_BYTES,
            ),
            (
                crate::http2::SETTINGS_MAX_HEADER_LIST_SIZE,
                HEADER_LIST_BYTES_MAX,
            ),
        ],
    );
    frame::write_window_update(io.queue(), 0, CONNECTION_BODY_BYTES_MAX - 65_535);
    io.flush().await?;

    // The client preface, within the header timeout.
    let deadline = ready_at + timeouts.header;
    while io.unread().len() < PREFACE.len() {
        if io.eof {
            return Ok(());
        }
        io.read_more(deadline).await?;
    }
    if &io.unread()[..PREFACE.len()] != PREFACE {
        return goaway_and_close(io, &h2, ErrorCode::ProtocolError).await;
    }
    io.consume(PREFACE.len());

    let mut idle_since = crate::rt::now();
    // Whether what bursts of streams grew was given back since the connection went idle.
    let mut released = true;
    // Requests seen so far: one answered within a single turn never makes the connection
    // look busy, but it may still have grown buffers.
    let mut requests_seen = 0;
    let mut log_lines: Vec<String> = Vec::new();
    // The connection task's waker, for handlers polled inline.
    let waker = futures_lite::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
    loop {
        // 1. Every complete frame in the input, with one clock reading for the batch.
        let mut cx = Context::from_waker(&waker);
        let now = crate::rt::now();
        let (input, queue) = io.input_and_queue();
        let (consumed, result) = process_input(
            &mut h2,
            &mut Runner {
                handlers: &mut handlers,
                start: &starter,
                done: &mut done,
                cx: &mut cx,
            },
            input,
            queue,
            now,
        );
        io.consume(consumed);
        if let Err(ConnectionError(code)) = result {
            return goaway_and_close(io, &h2, code).await;
        }

        // 2. Answers of handlers that finished, log lines, stalled streams, deadlines.
        for d in done.drain(..) {
            finish(&mut h2, io.queue(), d);
        }
        pump_logs(&mut h2, io.queue(), &mut log_lines);
        check_deadlines(&mut h2, io.queue(), now);
        h2.flush_credit(io.queue());
        if core.shared.shutting_down() && !h2.goaway_sent {
            frame::write_goaway(io.queue(), h2.last_stream_id, ErrorCode::NoError, b"");
            h2.goaway_sent = true;
            for s in h2
                .streams
                .iter_mut()
                .filter(|s| s.state == StreamState::Log)
            {
                frame::write_data(io.queue(), s.id, b"", true);
                s.remote_closed = true;
                s.log = None;
            }
            h2.streams.retain(|s| s.state != StreamState::Log);
        }
        io.flush().await?;
        io.shrink_after_request();

        // 3. Done?
        let busy = !h2.streams.is_empty() || handlers.parked() > 0;
        if h2.requests != requests_seen {
            requests_seen = h2.requests;
            idle_since = now;
            released = false;
        }
        if h2.goaway_sent && !busy {
            return Ok(());
        }
        if io.eof {
            return Ok(());
        }
        if busy {
            if handlers.parked() == 0 && h2.waits_only_on_client() {
                slot.set_phase(Phase::Stalled, now);
            } else {
                slot.set_busy();
            }
            idle_since = now;
            released = false;
        } else {
            if !released && now >= idle_since + IDLE_RELEASE_AFTER {
                h2.release_idle();
                handlers.release_idle();
                if done.is_empty() {
                    done = Vec::new();
                }
                if log_lines.is_empty() {
                    log_lines = Vec::new();
                }
                io.shrink_idle();
                released = true;
            }
            slot.set_phase(
                if h2.requests == 0 {
                    Phase::Fresh
                } else {
                    Phase::Idle
                },
                now,
            );
        }

        // 4. Wait for input, a parked handler or a timer.
        let limit = if h2.continuation.is_some() {
            h2.block_started + timeouts.header
        } else if busy {
            now + POLL_PERIOD
        } else if h2.requests == 0 {
            ready_at + timeouts.header
        } else {
            idle_since + timeouts.idle
        };
        let has_logs = h2.streams.iter().any(|s| s.state == StreamState::Log);
        // Streams have deadlines to check; an idle connection sleeps until input, its
        // timeout or the shutdown.
        let mut wake = if busy {
            limit.min(now + POLL_PERIOD)
        } else if !released {
            limit.min(idle_since + IDLE_RELEASE_AFTER)
        } else {
            limit
        };
        if has_logs {
            wake = wake.min(now + LOG_STREAM_POLL);
        }
        let event = {
            let read = io.read_more(wake);
            let mut read = std::pin::pin!(read);
            let shutdown = core.shared.shutdown.wait();
            let mut shutdown = std::pin::pin!(shutdown);
            let watch_shutdown = !h2.goaway_sent;
            futures_lite::future::poll_fn(|cx| {
                handlers.poll_active(cx, &mut done);
                if !done.is_empty() {
                    return Poll::Ready(Event::Handlers);
                }
                match read.as_mut().poll(cx) {
                    Poll::Ready(Ok(())) => return Poll::Ready(Event::Input),
                    Poll::Ready(Err(ConnError::Timeout)) => return Poll::Ready(Event::Timer),
                    Poll::Ready(Err(e)) => return Poll::Ready(Event::Failed(e)),
                    Poll::Pending => {}
                }
                if watch_shutdown && shutdown.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Timer);
                }
                Poll::Pending
            })
            .await
        };
        match event {
            Event::Input | Event::Handlers => {}
            Event::Failed(e) => return Err(e),
            Event::Timer => {
                if crate::rt::now() >= limit && !busy {
                    // Idle (or no request within the header timeout): say goodbye.
                    return goaway_and_close(io, &h2, ErrorCode::NoError).await;
                }
                if crate::rt::now() >= limit && h2.continuation.is_some() {
                    return goaway_and_close(io, &h2, ErrorCode::ProtocolError).await;
                }
            }
        }
    }
}

/// Drives the HTTP/2 request path without a socket or TLS: each batch is handled as if it
/// had been read at once, handlers that wait are awaited, and `on_output` sees what would
/// have been written after each batch. For tests of the frame-to-handler path (allocation
/// counting in `tests/alloc.rs`); the connection preface is expected in the first batch.
#[doc(hidden)]
pub async fn drive_in_memory(
    core: Rc<Core>,
    peer: Peer,
    batches: &[&[u8]],
    mut on_output: impl FnMut(usize, &[u8]),
) {
    let mut h2 = H2::new(core.clone(), peer, None);
    let mut handlers = Handlers::new();
    let mut done: Vec<Done> = Vec::new();
    let starter = starter!(core);
    let waker = futures_lite::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
    let mut out = Vec::new();
    for (i, batch) in batches.iter().enumerate() {
        let input = batch.strip_prefix(&PREFACE[..]).unwrap_or(batch);
        let mut cx = Context::from_waker(&waker);
        let (_, result) = process_input(
            &mut h2,
            &mut Runner {
                handlers: &mut handlers,
                start: &starter,
                done: &mut done,
                cx: &mut cx,
            },
            input,
            &mut out,
            Instant::now(),
        );
        if let Err(ConnectionError(code)) = result {
            frame::write_goaway(&mut out, h2.last_stream_id, code, b"");
        }
        while handlers.parked() > 0 {
            futures_lite::future::poll_fn(|cx| {
                handlers.poll_active(cx, &mut done);
                if done.is_empty() {
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
            .await;
            for d in done.drain(..) {
                finish(&mut h2, &mut out, d);
            }
        }
        for d in done.drain(..) {
            finish(&mut h2, &mut out, d);
        }
        h2.flush_credit(&mut out);
        on_output(i, &out);
        out.clear();
    }
}

enum Event {
    Input,
    Handlers,
    Timer,
    Failed(ConnError),
}

async fn goaway_and_close(io: &mut TlsStream, h2: &H2, code: ErrorCode) -> Result<(), ConnError> {
    if code != ErrorCode::NoError {
        h2.core
            .metrics
            .inc(&h2.core.metrics.http2_connection_errors);
    }
    frame::write_goaway(io.queue(), h2.last_stream_id, code, b"");
    io.flush().await?;
    if code == ErrorCode::NoError {
        Ok(())
    } else {
        io.close_and_linger().await
    }
}
