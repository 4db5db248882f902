//! The receive path: every complete frame of a read ([`process_input`]), each handled by its
//! type ([`handle_frame`]: HEADERS/CONTINUATION into a header block, RST_STREAM, SETTINGS,
//! PING, GOAWAY, WINDOW_UPDATE, PRIORITY, the flood counts), and DATA kept for a route's body
//! or dropped, within the connection's receive window ([`on_data`]).

use std::time::Instant;

use super::flow::WINDOW_MAX;
use super::handlers::{begin, StartHandler};
use super::headers::end_of_block;
use super::send::{answer, send_pending};
use super::streams::{reset_stream, StreamState};
use super::{
    ConnectionError, FRAME_BYTES_MAX, H2, HEADER_BLOCK_BYTES_MAX, QUEUED_OUTPUT_BYTES_MAX,
};
use crate::api::{self, ApiError};
use crate::http2::frame::{self, FrameHeader};
use crate::http2::ErrorCode;
use crate::server::stream::LINGER_BYTES_MAX;

/// Handles every complete frame at the start of `input`, answering into `out`. Returns the
/// bytes consumed and, on a connection error, its code (GOAWAY is the caller's).
pub(super) fn process_input(
    h2: &mut H2,
    run: &mut impl StartHandler,
    input: &[u8],
    out: &mut Vec<u8>,
    now: Instant,
) -> (usize, Result<(), ConnectionError>) {
    let mut pos = 0;
    while let Some(header) = input.get(pos..pos + 9).and_then(FrameHeader::parse) {
        if header.length > FRAME_BYTES_MAX {
            return (pos, Err(ConnectionError(ErrorCode::FrameSizeError)));
        }
        let end = pos + 9 + header.length as usize;
        let Some(payload) = input.get(pos + 9..end) else {
            break;
        };
        let result = handle_frame(h2, run, out, header, payload, now);
        pos = end;
        if result.is_err() {
            return (pos, result);
        }
        if out.len() > QUEUED_OUTPUT_BYTES_MAX {
            return (pos, Err(ConnectionError(ErrorCode::EnhanceYourCalm)));
        }
    }
    h2.flush_credit(out);
    (pos, Ok(()))
}

/// Handles one frame. Stream errors are answered with RST_STREAM here; a connection error is
/// returned for the caller to send GOAWAY and close.
fn handle_frame(
    h2: &mut H2,
    run: &mut impl StartHandler,
    out: &mut Vec<u8>,
    header: FrameHeader,
    payload: &[u8],
    now: Instant,
) -> Result<(), ConnectionError> {
    // While a header block is open, only its CONTINUATION frames may come.
    if let Some((id, _)) = h2.continuation {
        if header.kind != frame::kind::CONTINUATION || header.stream_id != id {
            return Err(ConnectionError(ErrorCode::ProtocolError));
        }
    }
    let proto = |e: frame::FrameError| ConnectionError(e.code());
    match header.kind {
        frame::kind::DATA => {
            let data = frame::data_payload(&header, payload).map_err(proto)?;
            on_data(h2, run, out, header, data, payload.len() as u32, now)?;
        }
        frame::kind::HEADERS => {
            let id = header.stream_id;
            if id == 0 {
                return Err(ConnectionError(ErrorCode::ProtocolError));
            }
            let headers = frame::headers_payload(&header, payload).map_err(proto)?;
            if let Some(index) = h2.stream_index(id) {
                // Trailers: allowed once, with END_STREAM, while the body is open.
                let s = &h2.streams[index];
                if s.remote_closed || !headers.end_stream {
                    return Err(ConnectionError(ErrorCode::ProtocolError));
                }
            } else if id % 2 == 0 || id <= h2.last_stream_id {
                return Err(ConnectionError(ErrorCode::ProtocolError));
            }
            h2.block.clear();
            h2.block.extend_from_slice(headers.fragment);
            if headers.end_headers {
                end_of_block(h2, run, out, id, headers.end_stream, now)?;
            } else {
                h2.continuation = Some((id, headers.end_stream));
                h2.block_started = now;
            }
        }
        frame::kind::CONTINUATION => {
            let Some((id, end_stream)) = h2.continuation else {
                return Err(ConnectionError(ErrorCode::ProtocolError));
            };
            if h2.block.len() + payload.len() > HEADER_BLOCK_BYTES_MAX {
                // A CONTINUATION flood: cut before decoding anything.
                return Err(ConnectionError(ErrorCode::EnhanceYourCalm));
            }
            if payload.is_empty() {
                h2.control_frames.count(now)?; // empty ones add nothing to the block: a flood
            }
            h2.block.extend_from_slice(payload);
            if header.flags & frame::flag::END_HEADERS != 0 {
                h2.continuation = None;
                end_of_block(h2, run, out, id, end_stream, now)?;
            }
        }
        frame::kind::PRIORITY => {
            // Accepted and ignored (RFC 9113 §5.3.2); malformed ones are stream errors.
            h2.control_frames.count(now)?;
            if let Err(e) = frame::priority(&header, payload) {
                if e.is_connection_error() {
                    return Err(proto(e));
                }
                frame::write_rst_stream(out, header.stream_id, e.code());
            }
        }
        frame::kind::RST_STREAM => {
            let _code = frame::rst_stream(&header, payload).map_err(proto)?;
            let id = header.stream_id;
            if id == 0 || id > h2.last_stream_id {
                return Err(ConnectionError(ErrorCode::ProtocolError));
            }
            if let Some(index) = h2.stream_index(id) {
                // A stream reset before we answered: count it (rapid reset). A parked
                // handler finishes on its own; its answer is then dropped.
                if h2.streams[index].state != StreamState::Log {
                    h2.resets.count(now)?;
                }
                h2.close_stream(index);
            }
        }
        frame::kind::SETTINGS => {
            h2.control_frames.count(now)?;
            if header.stream_id != 0 {
                return Err(ConnectionError(ErrorCode::ProtocolError));
            }
            if header.flags & frame::flag::ACK != 0 {
                if !payload.is_empty() {
                    return Err(ConnectionError(ErrorCode::FrameSizeError));
                }
                return Ok(());
            }
            for (id, value) in frame::settings(&header, payload).map_err(proto)? {
                match id {
                    crate::http2::SETTINGS_INITIAL_WINDOW_SIZE => {
                        let delta = i64::from(value) - h2.peer_initial_window;
                        h2.peer_initial_window = i64::from(value);
                        for s in h2.streams.iter_mut() {
                            s.send_window += delta;
                            if s.send_window > WINDOW_MAX {
                                return Err(ConnectionError(ErrorCode::FlowControlError));
                            }
                        }
                    }
                    crate::http2::SETTINGS_MAX_FRAME_SIZE => h2.peer_max_frame = value as usize,
                    crate::http2::SETTINGS_HEADER_TABLE_SIZE => {
                        h2.encoder.peer_header_table_size(value)
                    }
                    _ => {} // push, concurrency (we never push), unknown ones
                }
            }
            frame::write_settings_ack(out);
            send_pending(h2, out);
        }
        frame::kind::PING => {
            h2.control_frames.count(now)?;
            let data = frame::ping(&header, payload).map_err(proto)?;
            if header.stream_id != 0 {
                return Err(ConnectionError(ErrorCode::ProtocolError));
            }
            if header.flags & frame::flag::ACK == 0 {
                frame::write_ping_ack(out, data);
            }
        }
        frame::kind::GOAWAY => {
            frame::goaway(&header, payload).map_err(proto)?;
            // The client leaves; finish what is in flight, accept nothing new.
            h2.goaway_sent = true;
        }
        frame::kind::WINDOW_UPDATE => {
            h2.control_frames.count(now)?;
            let increment = match frame::window_update(&header, payload) {
                Ok(i) => i64::from(i),
                Err(e) if !e.is_connection_error() => {
                    frame::write_rst_stream(out, header.stream_id, e.code());
                    return Ok(());
                }
                Err(e) => return Err(proto(e)),
            };
            if header.stream_id == 0 {
                h2.send_window += increment;
                if h2.send_window > WINDOW_MAX {
                    return Err(ConnectionError(ErrorCode::FlowControlError));
                }
            } else if let Some(s) = h2.stream_mut(header.stream_id) {
                s.send_window += increment;
                if s.send_window > WINDOW_MAX {
                    let id = s.id;
                    frame::write_rst_stream(out, id, ErrorCode::FlowControlError);
                    if let Some(index) = h2.stream_index(id) {
                        h2.close_stream(index);
                    }
                    return Ok(());
                }
            } else if header.stream_id > h2.last_stream_id {
                return Err(ConnectionError(ErrorCode::ProtocolError));
            }
            send_pending(h2, out);
        }
        frame::kind::PUSH_PROMISE => return Err(ConnectionError(ErrorCode::ProtocolError)),
        _ => h2.control_frames.count(now)?, // unknown frame types are ignored (RFC 9113 §4.1)
    }
    Ok(())
}

/// DATA for a stream: kept (up to the route's limit) or dropped; the end starts the handler.
fn on_data(
    h2: &mut H2,
    run: &mut impl StartHandler,
    out: &mut Vec<u8>,
    header: FrameHeader,
    data: &[u8],
    flow_bytes: u32,
    now: Instant,
) -> Result<(), ConnectionError> {
    let id = header.stream_id;
    if id == 0 {
        return Err(ConnectionError(ErrorCode::ProtocolError));
    }
    if id > h2.last_stream_id {
        return Err(ConnectionError(ErrorCode::ProtocolError)); // an idle stream
    }
    // The client may send what it was credited; what is not kept is credited back.
    if i64::from(flow_bytes) > h2.recv_window {
        return Err(ConnectionError(ErrorCode::FlowControlError));
    }
    h2.recv_window -= i64::from(flow_bytes);
    h2.recv_consumed += flow_bytes;
    let end_stream = header.flags & frame::flag::END_STREAM != 0;
    if data.is_empty() && !end_stream {
        h2.control_frames.count(now)?; // empty DATA frames are a known flood
    }
    let Some(index) = h2.stream_index(id) else {
        // Ids only grow: one at or below the highest seen and not open is closed.
        h2.control_frames.count(now)?;
        frame::write_rst_stream(out, id, ErrorCode::StreamClosed);
        return Ok(());
    };
    let s = &mut h2.streams[index];
    if s.remote_closed {
        h2.control_frames.count(now)?;
        reset_stream(h2, out, index, ErrorCode::StreamClosed);
        return Ok(());
    }
    s.received += data.len() as u64;
    if s.content_length.is_some_and(|n| s.received > n)
        || (end_stream && s.content_length.is_some_and(|n| s.received != n))
    {
        // Checked whether or not the body is read (RFC 9113 §8.1.1).
        reset_stream(h2, out, index, ErrorCode::ProtocolError);
        return Ok(());
    }
    if s.state == StreamState::Draining {
        if end_stream {
            h2.remove_stream(index);
        } else if s.received > LINGER_BYTES_MAX as u64 {
            reset_stream(h2, out, index, ErrorCode::NoError);
        } else if flow_bytes > 0 && s.content_length.is_none() {
            // Unknown length: keep the window open as it drains (known: granted at once).
            frame::write_window_update(out, id, flow_bytes);
        }
        return Ok(());
    }
    // Only a body still awaited is kept (not one arriving after a 413 or 503).
    if let Some(limit) = s.body_limit.filter(|_| s.state == StreamState::Body) {
        if s.work.body.len() + data.len() > limit {
            // Over the route's limit: 413, and the client is told to stop sending.
            let err = ApiError {
                status: 413,
                message: crate::http::HttpError::BodyTooLarge.message().into(),
            };
            s.work.out.clear();
            api::json::write_error_body(&mut s.work.out, &err.message);
            answer(h2, out, index, 413, Some("application/json"), &[]);
            return Ok(());
        }
        s.work.body.extend_from_slice(data);
        // Kept: its credit comes back when the body is released.
        s.work.held += data.len() as u32;
        h2.recv_consumed -= data.len() as u32;
    }
    if end_stream {
        s.remote_closed = true;
        if s.state == StreamState::Body {
            begin(h2, run, out, index);
        }
    }
    Ok(())
}
