//! HTTP/2 load (`--http2`): `-c` request slots multiplexed as streams over a few TLS
//! connections (ALPN h2), closed loop: a slot sends its next request when its answer is in.
//!
//! Same event-loop style as [`crate::engine`]: non-blocking sockets, one loop per load
//! thread, poll(2) only when nothing is ready. Per pass and connection, every complete frame
//! read is handled, then every slot that is ready opens a stream, and everything queued for
//! the connection (requests, SETTINGS and PING ACKs, WINDOW_UPDATEs) goes out in one TLS
//! write.
//!
//! Requests are built once ([`request`]): a HEADERS frame whose header block holds only
//! static-table indices and literals without indexing (no dynamic table, so the block is
//! valid on every connection and at any time), then the body's DATA frames; sending copies
//! the frames and patches the stream id into their headers.
//!
//! The server's SETTINGS are respected: no stream opens before they arrived, no more than
//! SETTINGS_MAX_CONCURRENT_STREAMS are open per connection (slots beyond it wait in FIFO
//! order, and that wait counts towards their latency), a body is sent only when the
//! connection's send window (and the stream's, SETTINGS_INITIAL_WINDOW_SIZE) holds it, and
//! our frames never exceed 16 384 octets (every server's minimum SETTINGS_MAX_FRAME_SIZE).
//! We advertise a 1 MiB stream window and open the connection window to 16 MiB, and give
//! received DATA back with WINDOW_UPDATE once half a window was consumed (one per few
//! thousand small answers, far below any server's control-frame flood limit).
//!
//! Errors are counted per request: `h2 RST_STREAM <code>` (the server reset the stream),
//! `h2 GOAWAY <code>` (once per GOAWAY; streams above its last stream id are failed, the
//! connection is replaced once its other streams are done), a non-2xx status, and
//! `h2 connection: …` for each request in flight on a connection lost to an I/O, TLS or
//! protocol error.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kes::http2::frame::{self, flag, kind, FrameError, FrameHeader, FRAME_HEADER_BYTES};
use kes::http2::{hpack, ErrorCode, MAX_WINDOW_BYTES, PREFACE};

use crate::engine::{Endpoint, Idle, Sink, Source, Wire};

/// Our receive window per stream (SETTINGS_INITIAL_WINDOW_SIZE).
pub const STREAM_WINDOW_BYTES: u32 = 1 << 20;
/// Our connection receive window, opened with a WINDOW_UPDATE after the preface.
pub const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;
/// The default initial windows (RFC 9113 §6.9.2).
const DEFAULT_WINDOW_BYTES: u32 = 65_535;
/// Largest frame payload we accept: we keep the default SETTINGS_MAX_FRAME_SIZE, and our own
/// frames never exceed it either (every server accepts it).
const FRAME_BYTES_MAX: u32 = 16_384;
/// Largest response header block (HEADERS + CONTINUATION) and decoded header list.
const HEADER_BLOCK_BYTES_MAX: usize = 64 * 1024;
/// Highest stream id; a connection that used them all is replaced.
const STREAM_ID_MAX: u32 = (1 << 31) - 1;
/// HPACK table we let the server use (the default; kes never inserts into it).
const HPACK_TABLE_BYTES: usize = 4096;
/// Wait before dialling again after a failed connect.
const RECONNECT_DELAY: Duration = Duration::from_millis(50);

/// A request as HTTP/2 frames with stream id 0 in each frame header: HEADERS (`:method`,
/// `:scheme https`, `:path`, `:authority`, the `extra` header lines lowercased, and for a
/// body or a non-GET `content-type` and `content-length`, as the HTTP/1.1 requests carry),
/// then the body in DATA frames of at most 16 384 octets. Same signature as the HTTP/1.1
/// builders, so the request sets are built by the same code.
pub fn request(method: &str, path: &str, body: &[u8], extra: &str) -> Vec<u8> {
    request_typed(method, path, body, extra, "application/json")
}

/// [`request`] with this `content-type`.
pub fn request_typed(
    method: &str,
    path: &str,
    body: &[u8],
    extra: &str,
    content_type: &str,
) -> Vec<u8> {
    let enc = hpack::Encoder::new();
    let mut block = Vec::with_capacity(64 + path.len() + extra.len());
    // Indexed fields from the static table (RFC 7541 Appendix A): 2 GET, 3 POST, 7 https.
    match method {
        "GET" => block.push(0x82),
        "POST" => block.push(0x83),
        other => enc.encode_field(&mut block, b":method", other.as_bytes()),
    }
    block.push(0x87);
    enc.encode_field(&mut block, b":path", path.as_bytes());
    enc.encode_field(&mut block, b":authority", b"kes");
    for line in extra.split("\r\n").filter(|l| !l.is_empty()) {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            enc.encode_field(&mut block, name.as_bytes(), value.trim().as_bytes());
        }
    }
    if !body.is_empty() || method != "GET" {
        enc.encode_field(&mut block, b"content-type", content_type.as_bytes());
        enc.encode_field(
            &mut block,
            b"content-length",
            body.len().to_string().as_bytes(),
        );
    }
    let mut out = Vec::with_capacity(block.len() + body.len() + 3 * FRAME_HEADER_BYTES);
    frame::write_headers(&mut out, 0, &block, body.is_empty(), FRAME_BYTES_MAX);
    let chunks = body.len().div_ceil(FRAME_BYTES_MAX as usize);
    for (i, chunk) in body.chunks(FRAME_BYTES_MAX as usize).enumerate() {
        frame::write_data(&mut out, 0, chunk, i + 1 == chunks);
    }
    out
}

/// The frames of a prebuilt request: (header, offset of the payload).
fn frames_of(req: &[u8]) -> impl Iterator<Item = (FrameHeader, usize)> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let h = FrameHeader::parse(req.get(at..)?)?;
        let payload = at + FRAME_HEADER_BYTES;
        at = payload + h.length as usize;
        Some((h, payload))
    })
}

/// DATA octets of a prebuilt request (what flow control counts).
fn body_bytes(req: &[u8]) -> u32 {
    frames_of(req)
        .filter(|(h, _)| h.kind == kind::DATA)
        .map(|(h, _)| h.length)
        .sum()
}

/// Appends a prebuilt request's frames with `stream_id` patched in. `size_update`: start
/// the header block with a dynamic table size update to 0, which RFC 7541 §4.2 asks for
/// after the peer's SETTINGS_HEADER_TABLE_SIZE (our table stays empty anyway).
fn put_frames(out: &mut Vec<u8>, req: &[u8], stream_id: u32, size_update: bool) {
    let id = stream_id.to_be_bytes();
    for (i, (h, payload)) in frames_of(req).enumerate() {
        let start = out.len();
        let end = payload + h.length as usize;
        if i == 0 && size_update && h.kind == kind::HEADERS {
            FrameHeader {
                length: h.length + 1,
                ..h
            }
            .write(out);
            out.push(0x20);
            out.extend_from_slice(&req[payload..end]);
        } else {
            out.extend_from_slice(&req[payload - FRAME_HEADER_BYTES..end]);
        }
        out[start + 5..start + FRAME_HEADER_BYTES].copy_from_slice(&id);
    }
}

fn code_name(code: u32) -> String {
    match ErrorCode::from_code(code) {
        Some(c) => {
            let name = format!("{c:?}");
            // NoError -> NO_ERROR, as RFC 9113 spells them.
            let mut upper = String::with_capacity(name.len() + 4);
            for (i, ch) in name.chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    upper.push('_');
                }
                upper.push(ch.to_ascii_uppercase());
            }
            upper
        }
        None => format!("0x{code:x}"),
    }
}

/// Stream ids are distinct integers: hash them with one multiply.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A connection error we detected: GOAWAY with `code`, then a new connection.
struct Protocol {
    code: ErrorCode,
    why: String,
}

fn protocol(code: ErrorCode, why: impl Into<String>) -> Protocol {
    Protocol {
        code,
        why: why.into(),
    }
}

/// One request slot: at most one stream at a time.
struct Slot<S> {
    source: S,
    /// Requests of the current batch not yet sent (reversed: pop from the end).
    batch: Vec<Arc<[u8]>>,
    /// The request to send when a stream is free.
    next: Option<Arc<[u8]>>,
    /// When the slot became ready for its next request: where its latency starts.
    since: Instant,
    /// The open stream, 0 when none.
    stream: u32,
    /// The response's `:status`, 0 until its HEADERS arrived.
    status: u16,
    /// DATA octets received on the stream and not yet given back with WINDOW_UPDATE.
    unacked: u32,
    /// The answer's body length so far, and its first octets (the MinKMS frame header),
    /// for [`Source::expect`].
    body_len: usize,
    body_head: [u8; crate::kms::FRAME_HEADER_BYTES],
}

/// One HTTP/2 connection and the slots multiplexed over it.
struct Conn<S> {
    wire: Option<Wire>,
    retry_at: Option<Instant>,
    handshaken: bool,
    settings_seen: bool,
    /// No new streams (GOAWAY received, or stream ids used up); replaced once idle.
    draining: bool,
    next_id: u32,
    max_streams: u32,
    peer_initial_window: i64,
    send_window: i64,
    size_update_pending: bool,
    recv_unacked: u32,
    decoder: hpack::Decoder,
    input: Vec<u8>,
    out: Vec<u8>,
    block: Vec<u8>,
    /// An open header block: (stream, END_STREAM of its HEADERS).
    continuation: Option<(u32, bool)>,
    streams: HashMap<u32, usize, BuildHasherDefault<IdHasher>>,
    slots: Vec<Slot<S>>,
    /// Slots waiting for a stream, oldest first.
    ready: VecDeque<usize>,
}

impl<S: Source> Conn<S> {
    fn new(sources: Vec<S>, now: Instant) -> Conn<S> {
        let n = sources.len();
        Conn {
            wire: None,
            retry_at: None,
            handshaken: false,
            settings_seen: false,
            draining: false,
            next_id: 1,
            max_streams: u32::MAX,
            peer_initial_window: i64::from(DEFAULT_WINDOW_BYTES),
            send_window: i64::from(DEFAULT_WINDOW_BYTES),
            size_update_pending: false,
            recv_unacked: 0,
            decoder: hpack::Decoder::new(HPACK_TABLE_BYTES, HEADER_BLOCK_BYTES_MAX),
            input: Vec::with_capacity(64 * 1024),
            out: Vec::with_capacity(64 * 1024),
            block: Vec::new(),
            continuation: None,
            streams: HashMap::with_capacity_and_hasher(2 * n, Default::default()),
            slots: sources
                .into_iter()
                .map(|source| Slot {
                    source,
                    batch: Vec::new(),
                    next: None,
                    since: now,
                    stream: 0,
                    status: 0,
                    unacked: 0,
                    body_len: 0,
                    body_head: [0; crate::kms::FRAME_HEADER_BYTES],
                })
                .collect(),
            ready: (0..n).collect(),
        }
    }

    /// A fresh connection: the preface, our SETTINGS and the connection window, queued
    /// (rustls sends them once the handshake is done).
    fn start(&mut self, wire: Wire) {
        self.wire = Some(wire);
        self.handshaken = false;
        self.settings_seen = false;
        self.draining = false;
        self.next_id = 1;
        self.max_streams = u32::MAX;
        self.peer_initial_window = i64::from(DEFAULT_WINDOW_BYTES);
        self.send_window = i64::from(DEFAULT_WINDOW_BYTES);
        self.size_update_pending = false;
        self.recv_unacked = 0;
        self.decoder = hpack::Decoder::new(HPACK_TABLE_BYTES, HEADER_BLOCK_BYTES_MAX);
        self.input.clear();
        self.block.clear();
        self.continuation = None;
        self.out.clear();
        self.out.extend_from_slice(PREFACE);
        frame::write_settings(
            &mut self.out,
            &[
                (kes::http2::SETTINGS_ENABLE_PUSH, 0),
                (
                    kes::http2::SETTINGS_INITIAL_WINDOW_SIZE,
                    STREAM_WINDOW_BYTES,
                ),
            ],
        );
        frame::write_window_update(
            &mut self.out,
            0,
            CONNECTION_WINDOW_BYTES - DEFAULT_WINDOW_BYTES,
        );
    }

    /// One pass: connect if needed, read and handle frames, open streams, write.
    /// `Ok(true)` when something moved; `Err` ends the run (not an h2 server).
    fn step(
        &mut self,
        ep: &Endpoint,
        sink: &Sink,
        hist: &mut Histogram<u64>,
        now: Instant,
    ) -> Result<bool, String> {
        if self.wire.is_none() {
            if self.retry_at.is_some_and(|at| now < at) {
                return Ok(false);
            }
            match Wire::open(ep, sink) {
                Ok(mut wire) => {
                    wire.unbounded();
                    self.retry_at = None;
                    self.start(wire);
                }
                Err(e) => {
                    sink.error(format!("connect: {e}"));
                    self.retry_at = Some(now + RECONNECT_DELAY);
                    return Ok(false);
                }
            }
        }
        let Some(wire) = self.wire.as_mut() else {
            return Ok(false);
        };
        let before = self.input.len();
        let open = match wire.pump_read(&mut self.input) {
            Ok(open) => open,
            Err(e) => {
                self.lose(&format!("h2 connection: io: {e}"), sink, now);
                return Ok(true);
            }
        };
        if !self.handshaken && !wire.is_handshaking() {
            if wire.alpn() != Some(b"h2".as_slice()) {
                return Err(format!(
                    "the server did not choose h2 with ALPN (it chose {}): it does not speak HTTP/2 over TLS",
                    wire.alpn()
                        .map_or("nothing".into(), |p| String::from_utf8_lossy(p).into_owned())
                ));
            }
            self.handshaken = true;
            if wire.resumed() {
                sink.resumed.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut progressed = self.input.len() > before;
        if let Err(e) = self.read_frames(sink, hist, now) {
            frame::write_goaway(&mut self.out, 0, e.code, b"");
            self.lose(&format!("h2 connection: {}", e.why), sink, now);
            return Ok(true);
        }
        if !open {
            self.lose("h2 connection: closed by the server", sink, now);
            return Ok(true);
        }
        progressed |= self.start_streams()?;
        let Some(wire) = self.wire.as_mut() else {
            return Ok(progressed);
        };
        let written = if self.out.is_empty() {
            wire.pump_write()
        } else {
            progressed = true;
            let r = wire.send(&self.out);
            self.out.clear();
            r
        };
        if let Err(e) = written {
            self.lose(&format!("h2 connection: io: {e}"), sink, now);
            return Ok(true);
        }
        if self.draining && self.streams.is_empty() {
            // GOAWAY'd or out of stream ids, and done: a new connection next pass.
            if let Some(wire) = self.wire.take() {
                wire.close();
            }
            progressed = true;
        }
        Ok(progressed)
    }

    /// The connection is gone: its streams fail, their slots go on with the next request
    /// on a new connection. What `out` holds (a GOAWAY) is sent on a best-effort basis.
    fn lose(&mut self, why: &str, sink: &Sink, now: Instant) {
        if let Some(mut wire) = self.wire.take() {
            if !self.out.is_empty() {
                let _ = wire.send(&self.out);
            }
            wire.close();
        }
        self.out.clear();
        let quiet = self.draining && self.streams.is_empty();
        let mut failed = false;
        for (_, index) in self.streams.drain() {
            failed = true;
            sink.error(why.to_string());
            let slot = &mut self.slots[index];
            slot.stream = 0;
            slot.status = 0;
            slot.unacked = 0;
            slot.body_len = 0;
            slot.next = None;
            slot.since = now;
            self.ready.push_back(index);
        }
        if !failed && !quiet {
            sink.error(why.to_string());
        }
    }

    /// Opens a stream for each ready slot, oldest first, while the server's limits allow.
    fn start_streams(&mut self) -> Result<bool, String> {
        if !self.settings_seen || self.draining {
            return Ok(false);
        }
        let mut started = false;
        while (self.streams.len() as u64) < u64::from(self.max_streams) {
            let Some(&index) = self.ready.front() else {
                break;
            };
            let slot = &mut self.slots[index];
            if slot.next.is_none() {
                if slot.batch.is_empty() {
                    slot.source.next_batch(&mut slot.batch);
                    slot.batch.reverse();
                }
                slot.next = slot.batch.pop();
            }
            let Some(req) = slot.next.take() else {
                // A source with nothing to send: the slot rests.
                self.ready.pop_front();
                continue;
            };
            let body = i64::from(body_bytes(&req));
            if body > self.peer_initial_window {
                return Err(format!(
                    "a {body}-byte request body does not fit the server's stream window ({} bytes)",
                    self.peer_initial_window
                ));
            }
            if body > self.send_window {
                // Wait for the server's WINDOW_UPDATE on the connection.
                slot.next = Some(req);
                break;
            }
            let id = self.next_id;
            self.next_id += 2;
            self.send_window -= body;
            put_frames(
                &mut self.out,
                &req,
                id,
                std::mem::take(&mut self.size_update_pending),
            );
            slot.stream = id;
            slot.status = 0;
            slot.unacked = 0;
            slot.body_len = 0;
            self.streams.insert(id, index);
            self.ready.pop_front();
            started = true;
            if self.next_id > STREAM_ID_MAX {
                self.draining = true;
                break;
            }
        }
        Ok(started)
    }

    /// Handles every complete frame in `input`.
    fn read_frames(
        &mut self,
        sink: &Sink,
        hist: &mut Histogram<u64>,
        now: Instant,
    ) -> Result<(), Protocol> {
        let mut input = std::mem::take(&mut self.input);
        let mut at = 0;
        let mut result = Ok(());
        while let Some(h) = input.get(at..).and_then(FrameHeader::parse) {
            if h.length > FRAME_BYTES_MAX {
                result = Err(protocol(
                    ErrorCode::FrameSizeError,
                    format!("a {}-byte frame (type {})", h.length, h.kind),
                ));
                break;
            }
            let end = at + FRAME_HEADER_BYTES + h.length as usize;
            let Some(payload) = input.get(at + FRAME_HEADER_BYTES..end) else {
                break;
            };
            if let Err(e) = self.on_frame(h, payload, sink, hist, now) {
                result = Err(e);
                break;
            }
            at = end;
        }
        input.drain(..at);
        self.input = input;
        if self.recv_unacked >= CONNECTION_WINDOW_BYTES / 2 {
            frame::write_window_update(&mut self.out, 0, self.recv_unacked);
            self.recv_unacked = 0;
        }
        result
    }

    fn on_frame(
        &mut self,
        h: FrameHeader,
        payload: &[u8],
        sink: &Sink,
        hist: &mut Histogram<u64>,
        now: Instant,
    ) -> Result<(), Protocol> {
        if let Some((id, _)) = self.continuation {
            if h.kind != kind::CONTINUATION || h.stream_id != id {
                return Err(protocol(
                    ErrorCode::ProtocolError,
                    format!(
                        "frame type {} on stream {} inside stream {id}'s header block",
                        h.kind, h.stream_id
                    ),
                ));
            }
        }
        let bad = |e: FrameError| Protocol {
            code: e.code(),
            why: format!("frame type {} on stream {}: {e}", h.kind, h.stream_id),
        };
        match h.kind {
            kind::DATA => {
                let data = frame::data_payload(&h, payload).map_err(bad)?;
                self.recv_unacked += h.length;
                let Some(&index) = self.streams.get(&h.stream_id) else {
                    if h.stream_id >= self.next_id || h.stream_id.is_multiple_of(2) {
                        return Err(protocol(
                            ErrorCode::ProtocolError,
                            format!("DATA on stream {}, which we did not open", h.stream_id),
                        ));
                    }
                    return Ok(()); // a stream we gave up on
                };
                let slot = &mut self.slots[index];
                if slot.status == 0 {
                    frame::write_rst_stream(&mut self.out, h.stream_id, ErrorCode::ProtocolError);
                    sink.error("h2 DATA before the response HEADERS".into());
                    self.finish(index, false, sink, hist, now);
                    return Ok(());
                }
                let head = slot.body_head.len();
                if slot.body_len < head {
                    let n = (head - slot.body_len).min(data.len());
                    slot.body_head[slot.body_len..slot.body_len + n].copy_from_slice(&data[..n]);
                }
                slot.body_len += data.len();
                if h.has(flag::END_STREAM) {
                    self.finish(index, true, sink, hist, now);
                } else {
                    slot.unacked += h.length;
                    if slot.unacked >= STREAM_WINDOW_BYTES / 2 {
                        frame::write_window_update(&mut self.out, h.stream_id, slot.unacked);
                        slot.unacked = 0;
                    }
                }
            }
            kind::HEADERS => {
                let p = frame::headers_payload(&h, payload).map_err(bad)?;
                if p.end_headers {
                    self.on_block(h.stream_id, p.fragment, p.end_stream, sink, hist, now)?;
                } else {
                    self.block.clear();
                    self.block.extend_from_slice(p.fragment);
                    self.continuation = Some((h.stream_id, p.end_stream));
                }
            }
            kind::CONTINUATION => {
                let Some((id, end_stream)) = self.continuation else {
                    return Err(protocol(
                        ErrorCode::ProtocolError,
                        format!("CONTINUATION on stream {} without HEADERS", h.stream_id),
                    ));
                };
                let (fragment, end) = frame::continuation_payload(&h, payload).map_err(bad)?;
                if self.block.len() + fragment.len() > HEADER_BLOCK_BYTES_MAX {
                    return Err(protocol(
                        ErrorCode::ProtocolError,
                        format!(
                            "a header block over {HEADER_BLOCK_BYTES_MAX} bytes on stream {id}"
                        ),
                    ));
                }
                self.block.extend_from_slice(fragment);
                if end {
                    self.continuation = None;
                    let block = std::mem::take(&mut self.block);
                    let r = self.on_block(id, &block, end_stream, sink, hist, now);
                    self.block = block;
                    r?;
                }
            }
            kind::RST_STREAM => {
                let code = frame::rst_stream(&h, payload).map_err(bad)?;
                if let Some(&index) = self.streams.get(&h.stream_id) {
                    sink.error(format!("h2 RST_STREAM {}", code_name(code)));
                    self.finish(index, false, sink, hist, now);
                }
            }
            kind::SETTINGS => {
                let settings = frame::settings(&h, payload).map_err(bad)?;
                if h.has(flag::ACK) {
                    return Ok(());
                }
                for (id, value) in settings {
                    match id {
                        kes::http2::SETTINGS_MAX_CONCURRENT_STREAMS => self.max_streams = value,
                        kes::http2::SETTINGS_INITIAL_WINDOW_SIZE => {
                            // Only unsent bodies use the stream windows: nothing to adjust.
                            self.peer_initial_window = i64::from(value);
                        }
                        kes::http2::SETTINGS_HEADER_TABLE_SIZE => self.size_update_pending = true,
                        _ => {} // MAX_FRAME_SIZE: ours never exceed the minimum
                    }
                }
                frame::write_settings_ack(&mut self.out);
                self.settings_seen = true;
                sink.streams_max
                    .fetch_min(u64::from(self.max_streams), Ordering::Relaxed);
            }
            kind::PING => {
                let data = frame::ping(&h, payload).map_err(bad)?;
                if !h.has(flag::ACK) {
                    frame::write_ping_ack(&mut self.out, data);
                }
            }
            kind::GOAWAY => {
                let g = frame::goaway(&h, payload).map_err(bad)?;
                sink.error(format!("h2 GOAWAY {}", code_name(g.error_code)));
                self.draining = true;
                // Streams the server will not process fail; their slots go on elsewhere.
                let refused: Vec<usize> = self
                    .streams
                    .iter()
                    .filter(|(&id, _)| id > g.last_stream_id)
                    .map(|(_, &index)| index)
                    .collect();
                for index in refused {
                    sink.error("h2 stream above the GOAWAY's last stream id".into());
                    self.finish(index, false, sink, hist, now);
                }
            }
            kind::WINDOW_UPDATE => match frame::window_update(&h, payload) {
                Ok(increment) if h.stream_id == 0 => {
                    self.send_window += i64::from(increment);
                    if self.send_window > i64::from(MAX_WINDOW_BYTES) {
                        return Err(protocol(
                            ErrorCode::FlowControlError,
                            "the connection window grew past 2^31-1",
                        ));
                    }
                }
                Ok(_) => {} // bodies go out whole: stream windows only matter at the start
                Err(e) if e.is_connection_error() => return Err(bad(e)),
                Err(e) => {
                    if let Some(&index) = self.streams.get(&h.stream_id) {
                        frame::write_rst_stream(&mut self.out, h.stream_id, e.code());
                        sink.error(format!("h2 bad WINDOW_UPDATE: {e}"));
                        self.finish(index, false, sink, hist, now);
                    }
                }
            },
            kind::PUSH_PROMISE => {
                return Err(protocol(
                    ErrorCode::ProtocolError,
                    "PUSH_PROMISE although we sent SETTINGS_ENABLE_PUSH 0",
                ))
            }
            _ => {} // PRIORITY, unknown types: ignored (RFC 9113 §5.3.2, §4.1)
        }
        Ok(())
    }

    /// A complete response header block for stream `id`.
    fn on_block(
        &mut self,
        id: u32,
        block: &[u8],
        end_stream: bool,
        sink: &Sink,
        hist: &mut Histogram<u64>,
        now: Instant,
    ) -> Result<(), Protocol> {
        let mut status = 0u16;
        // Decoded even for streams we gave up on: HPACK state is per connection.
        self.decoder
            .decode(block, |name, value| {
                if name == b":status" {
                    status = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                }
                Ok::<(), ()>(())
            })
            .map_err(|e| Protocol {
                code: e.code().unwrap_or(ErrorCode::CompressionError),
                why: format!("response header block on stream {id}: {e}"),
            })?;
        let Some(&index) = self.streams.get(&id) else {
            if id >= self.next_id || id.is_multiple_of(2) {
                return Err(protocol(
                    ErrorCode::ProtocolError,
                    format!("HEADERS on stream {id}, which we did not open"),
                ));
            }
            return Ok(());
        };
        let slot = &mut self.slots[index];
        if slot.status == 0 {
            if (100..200).contains(&status) && !end_stream {
                return Ok(()); // informational; the final HEADERS follow
            }
            if !(200..600).contains(&status) {
                frame::write_rst_stream(&mut self.out, id, ErrorCode::ProtocolError);
                sink.error(format!("h2 response without a valid :status ({status})"));
                self.finish(index, false, sink, hist, now);
                return Ok(());
            }
            slot.status = status;
        }
        if end_stream {
            self.finish(index, true, sink, hist, now);
        }
        Ok(())
    }

    /// Stream of slot `index` is over: an answer (`answered`) is recorded; the slot is ready
    /// for its next request.
    fn finish(
        &mut self,
        index: usize,
        answered: bool,
        sink: &Sink,
        hist: &mut Histogram<u64>,
        now: Instant,
    ) {
        let slot = &mut self.slots[index];
        self.streams.remove(&slot.stream);
        if answered {
            let ns = now.saturating_duration_since(slot.since).as_nanos() as u64;
            let _ = hist.record(ns.max(1));
            sink.done.fetch_add(1, Ordering::Relaxed);
            if !(200..300).contains(&slot.status) {
                sink.error(slot.status.to_string());
            } else if let Some(expect) = slot.source.expect() {
                let first = &slot.body_head[..slot.body_len.min(slot.body_head.len())];
                if let Some(kind) = expect.check(first, slot.body_len) {
                    sink.error(kind.into());
                }
            }
        }
        slot.stream = 0;
        slot.status = 0;
        slot.unacked = 0;
        slot.body_len = 0;
        slot.since = now;
        self.ready.push_back(index);
    }

    /// Leaves: GOAWAY NO_ERROR and close_notify.
    fn close(&mut self) {
        if let Some(mut wire) = self.wire.take() {
            self.out.clear();
            frame::write_goaway(&mut self.out, 0, ErrorCode::NoError, b"");
            let _ = wire.send(&self.out);
            wire.close();
        }
    }
}

/// Load-thread settings for HTTP/2.
pub struct Plan {
    /// Its TLS config offers ALPN h2.
    pub endpoint: Endpoint,
    pub idle: Idle,
}

/// Drives `connections` (each a list of request slots multiplexed over it) until
/// `sink.stop` is set.
pub fn drive<S: Source>(plan: &Plan, connections: Vec<Vec<S>>, sink: &Sink) -> Result<(), String> {
    let start = Instant::now();
    let mut conns: Vec<Conn<S>> = connections
        .into_iter()
        .map(|sources| Conn::new(sources, start))
        .collect();
    let mut local =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| e.to_string())?;
    let mut last_merge = Instant::now();
    let mut pollfds: Vec<libc::pollfd> = Vec::with_capacity(conns.len());
    let mut result = Ok(());
    'run: while !sink.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let mut progressed = false;
        for conn in conns.iter_mut() {
            match conn.step(&plan.endpoint, sink, &mut local, now) {
                Ok(p) => progressed |= p,
                Err(e) => {
                    result = Err(e);
                    break 'run;
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
                let mut wait_ms = 100;
                for conn in &conns {
                    match &conn.wire {
                        Some(w) => {
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
                        None => {
                            if let Some(at) = conn.retry_at {
                                let ms = at.saturating_duration_since(Instant::now()).as_millis();
                                wait_ms = wait_ms.min(ms as i32);
                            }
                        }
                    }
                }
                // SAFETY: `pollfds` is a valid array of `pollfd` of the given length.
                unsafe {
                    libc::poll(
                        pollfds.as_mut_ptr(),
                        pollfds.len() as libc::nfds_t,
                        wait_ms.max(0),
                    )
                };
            }
        }
    }
    for conn in conns.iter_mut() {
        conn.close();
    }
    let _ = sink
        .hist
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .add(&local);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(block: &[u8]) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        hpack::Decoder::new(4096, 65536)
            .decode(block, |n, v| {
                fields.push((
                    String::from_utf8(n.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                ));
                Ok::<(), ()>(())
            })
            .unwrap();
        fields
    }

    #[test]
    fn requests_are_headers_then_data_and_take_a_stream_id() {
        let req = request("POST", "/v1/key/generate/k", b"{\"context\":\"\"}", "");
        let frames: Vec<_> = frames_of(&req).collect();
        assert_eq!(frames.len(), 2);
        let (h, at) = frames[0];
        assert_eq!((h.kind, h.stream_id), (kind::HEADERS, 0));
        assert!(h.has(flag::END_HEADERS) && !h.has(flag::END_STREAM));
        let fields = decode(&req[at..at + h.length as usize]);
        let want = [
            (":method", "POST"),
            (":scheme", "https"),
            (":path", "/v1/key/generate/k"),
            (":authority", "kes"),
            ("content-type", "application/json"),
            ("content-length", "14"),
        ];
        let got: Vec<(&str, &str)> = fields
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(got, want);
        let (d, at) = frames[1];
        assert_eq!((d.kind, d.length), (kind::DATA, 14));
        assert!(d.has(flag::END_STREAM));
        assert_eq!(&req[at..], b"{\"context\":\"\"}");
        assert_eq!(body_bytes(&req), 14);

        let mut out = vec![0xaa];
        put_frames(&mut out, &req, 7, false);
        assert_eq!(out.len(), req.len() + 1);
        let ids: Vec<u32> = frames_of(&out[1..]).map(|(h, _)| h.stream_id).collect();
        assert_eq!(ids, [7, 7]);

        // After SETTINGS_HEADER_TABLE_SIZE: a size update leads the block.
        let mut out = Vec::new();
        put_frames(&mut out, &req, 9, true);
        let (h, at) = frames_of(&out).next().unwrap();
        assert_eq!((h.length, h.stream_id), (frames[0].0.length + 1, 9));
        assert_eq!(out[at], 0x20);
        assert_eq!(decode(&out[at..at + h.length as usize]).len(), 6);
    }

    #[test]
    fn get_has_no_body_and_ends_the_stream_in_headers() {
        let req = request("GET", "/v1/status", b"", "X-Vault-Token: t\r\n");
        let frames: Vec<_> = frames_of(&req).collect();
        assert_eq!(frames.len(), 1);
        let (h, at) = frames[0];
        assert!(h.has(flag::END_STREAM | flag::END_HEADERS));
        let fields = decode(&req[at..]);
        assert_eq!(fields[0], (":method".into(), "GET".into()));
        assert_eq!(fields[4], ("x-vault-token".into(), "t".into()));
        assert_eq!(fields.len(), 5);
        assert_eq!(body_bytes(&req), 0);

        let big = vec![b'x'; 40_000];
        let req = request("PUT", "/x", &big, "");
        let data: Vec<_> = frames_of(&req)
            .filter(|(h, _)| h.kind == kind::DATA)
            .map(|(h, _)| (h.length, h.has(flag::END_STREAM)))
            .collect();
        assert_eq!(data, [(16_384, false), (16_384, false), (7_232, true)]);
        let empty_post = request("POST", "/v1/key/create/k", b"", "");
        let (h, at) = frames_of(&empty_post).next().unwrap();
        assert!(h.has(flag::END_STREAM));
        assert!(decode(&empty_post[at..]).contains(&("content-length".into(), "0".into())));
    }

    #[test]
    fn error_codes_are_named_as_in_the_rfc() {
        assert_eq!(code_name(0), "NO_ERROR");
        assert_eq!(code_name(7), "REFUSED_STREAM");
        assert_eq!(code_name(0xb), "ENHANCE_YOUR_CALM");
        assert_eq!(code_name(0x77), "0x77");
    }
}
