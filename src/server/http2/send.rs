//! The send path: a stream's answer as HEADERS, then DATA within the client's stream and
//! connection windows ([`answer`]); what does not fit waits for WINDOW_UPDATE
//! ([`send_pending`]); a stream whose answer is out ends or drains ([`complete`]); log
//! streams get their lines as DATA ([`pump_logs`]).

use std::time::Instant;

use super::streams::StreamState;
use super::H2;
use crate::api;
use crate::http;
use crate::http2::{frame, ErrorCode};
use crate::server::stream::{wipe, LINGER_BYTES_MAX};

/// Writes the answer of stream `index` (body in its `work.out`): HEADERS, then as much DATA
/// as the flow-control windows allow; the rest waits for WINDOW_UPDATE (state `Sending`).
pub(super) fn answer(
    h2: &mut H2,
    out: &mut Vec<u8>,
    index: usize,
    status: u16,
    content_type: Option<&str>,
    extra: &[(&str, &str)],
) {
    let s = &mut h2.streams[index];
    // As over HTTP/1.1 (`http::write_response`): a header value with CR, LF or NUL is never
    // written; the answer becomes a bare 500.
    let safe = content_type.is_none_or(http::header_value_ok)
        && extra.iter().all(|(_, value)| http::header_value_ok(value));
    let (status, content_type, extra) = if safe {
        (status, content_type, extra)
    } else {
        wipe(&mut s.work.out);
        (500, None, &[][..])
    };
    let encoder = &mut h2.encoder;
    let mark = frame::begin_headers(out);
    encoder.begin_block(out);
    encoder.encode_status(out, status);
    if let Some(ct) = content_type {
        encoder.encode_field(out, b"content-type", ct.as_bytes());
    }
    for (name, value) in extra {
        encoder.encode_field(out, name.as_bytes(), value.as_bytes());
    }
    let mut digits = [0u8; 20];
    encoder.encode_field(
        out,
        b"content-length",
        api::json::format_u64(s.work.out.len() as u64, &mut digits),
    );
    let empty = s.work.out.is_empty();
    frame::finish_headers(out, mark, s.id, empty, h2.peer_max_frame as u32);
    // Only the answer's body is needed from here on.
    s.work.release_head();
    s.state = StreamState::Sending;
    s.sent = 0;
    if empty {
        complete(h2, out, index);
        return;
    }
    send_pending(h2, out);
}

/// The whole answer of stream `index` is out. If the client is still sending, the stream
/// drains (see [`StreamState::Draining`]); a client announcing more than that bound is told
/// to stop at once (RST_STREAM NO_ERROR, RFC 9113 §8.1).
fn complete(h2: &mut H2, out: &mut Vec<u8>, index: usize) {
    let s = &mut h2.streams[index];
    if s.remote_closed {
        h2.remove_stream(index);
        return;
    }
    let left = s.content_length.map(|n| n.saturating_sub(s.received));
    if left.is_some_and(|n| n > LINGER_BYTES_MAX as u64) {
        frame::write_rst_stream(out, s.id, ErrorCode::NoError);
        h2.remove_stream(index);
        return;
    }
    s.state = StreamState::Draining;
    s.stalled_since = Some(Instant::now());
    // What it still sends is dropped: let it through (its window may be used up by a body
    // that was over the limit).
    let grant = left.unwrap_or(64 * 1024).min(LINGER_BYTES_MAX as u64) as u32;
    if grant > 0 {
        frame::write_window_update(out, s.id, grant);
    }
    // The body (of a request answered early) is not needed: its credit comes back.
    h2.recv_consumed += s.work.release_body();
}

/// Sends what flow control now allows of every stream waiting to send.
pub(super) fn send_pending(h2: &mut H2, out: &mut Vec<u8>) {
    let mut i = 0;
    while i < h2.streams.len() {
        let s = &mut h2.streams[i];
        if s.state != StreamState::Sending || s.sent == usize::MAX {
            i += 1;
            continue;
        }
        let total = s.work.out.len();
        while s.sent < total {
            let allowed = s.send_window.min(h2.send_window).max(0) as usize;
            let n = (total - s.sent).min(allowed).min(h2.peer_max_frame);
            if n == 0 {
                break;
            }
            let end = s.sent + n == total;
            frame::write_data(out, s.id, &s.work.out[s.sent..s.sent + n], end);
            s.sent += n;
            s.send_window -= n as i64;
            h2.send_window -= n as i64;
        }
        if s.sent >= total {
            complete(h2, out, i);
        } else {
            if s.stalled_since.is_none() {
                s.stalled_since = Some(Instant::now());
                s.progress_mark = s.sent;
            }
            i += 1;
        }
    }
}

/// Log streams: queued lines go out as DATA frames; a subscriber that fell behind, or whose
/// windows are closed, is ended.
pub(super) fn pump_logs(h2: &mut H2, out: &mut Vec<u8>, lines: &mut Vec<String>) {
    let mut i = 0;
    while i < h2.streams.len() {
        if h2.streams[i].state != StreamState::Log {
            i += 1;
            continue;
        }
        lines.clear();
        let alive = h2.streams[i]
            .log
            .as_ref()
            .is_some_and(|sub| sub.drain(lines).is_some());
        let s = &mut h2.streams[i];
        let bytes: usize = lines.iter().map(|l| l.len()).sum();
        if !alive || (bytes as i64) > s.send_window.min(h2.send_window) {
            frame::write_rst_stream(out, s.id, ErrorCode::Cancel);
            h2.remove_stream(i);
            continue;
        }
        for line in lines.iter() {
            for piece in line.as_bytes().chunks(h2.peer_max_frame) {
                frame::write_data(out, s.id, piece, false);
            }
        }
        s.send_window -= bytes as i64;
        h2.send_window -= bytes as i64;
        i += 1;
    }
}
