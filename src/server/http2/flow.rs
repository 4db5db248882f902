//! Flow control apart from sending: the connection's receive window and the credit given
//! back to the client as bodies are released ([`H2::flush_credit`]), the largest window, and
//! the deadlines of streams (a body not complete within its route timeout, an answer held
//! back by the client's windows that gets too little out per write timeout — the
//! send-progress window — and a drain that lingers too long: [`check_deadlines`]).

use std::time::{Duration, Instant};

use super::send::answer;
use super::streams::{StreamState, Target};
use super::{CONNECTION_BODY_BYTES_MAX, H2, SEND_PROGRESS_BYTES_MIN};
use crate::api::{self, ApiError};
use crate::http2::{frame, ErrorCode};
use crate::server::stream::LINGER;

/// Connection credit is returned in WINDOW_UPDATEs of at least this much.
const CREDIT_BATCH_BYTES: u32 = CONNECTION_BODY_BYTES_MAX / 4;

/// The largest flow-control window RFC 9113 allows.
pub(super) const WINDOW_MAX: i64 = (1 << 31) - 1;

impl H2 {
    /// Sends the connection credit due back, once there is enough of it.
    pub(super) fn flush_credit(&mut self, out: &mut Vec<u8>) {
        if self.recv_consumed >= CREDIT_BATCH_BYTES {
            frame::write_window_update(out, 0, self.recv_consumed);
            self.recv_window += i64::from(self.recv_consumed);
            self.recv_consumed = 0;
        }
    }
}

/// Streams past their route timeout while the body still arrives, and answers waiting for
/// flow-control credit that got less than [`SEND_PROGRESS_BYTES_MIN`] (or the rest of the
/// answer) out within a write timeout, are ended.
pub(super) fn check_deadlines(h2: &mut H2, out: &mut Vec<u8>, now: Instant) {
    let mut i = 0;
    while i < h2.streams.len() {
        let write_timeout = h2.write_timeout;
        let s = &mut h2.streams[i];
        let expired = match s.state {
            StreamState::Body => {
                let t = match s.target {
                    Target::Route(r) => s.settings.routes.timeout[r],
                    _ => Duration::ZERO,
                };
                let t = if t.is_zero() {
                    Duration::from_secs(15)
                } else {
                    t
                };
                now.duration_since(s.started_at) > t
            }
            StreamState::Sending => match s.stalled_since {
                Some(t) if now.duration_since(t) > write_timeout => {
                    let moved = s.sent.saturating_sub(s.progress_mark);
                    let wanted = s
                        .work
                        .out
                        .len()
                        .saturating_sub(s.progress_mark)
                        .min(SEND_PROGRESS_BYTES_MIN);
                    if moved < wanted {
                        true
                    } else {
                        // Enough got out: judge the next window.
                        s.stalled_since = Some(now);
                        s.progress_mark = s.sent;
                        false
                    }
                }
                _ => false,
            },
            StreamState::Draining => s
                .stalled_since
                .is_some_and(|t| now.duration_since(t) > LINGER),
            _ => false,
        };
        if expired {
            let id = s.id;
            if s.state == StreamState::Body {
                let e = ApiError {
                    status: 503,
                    message: "request timeout exceeded".into(),
                };
                let s = &mut h2.streams[i];
                s.work.out.clear();
                api::json::write_error_body(&mut s.work.out, &e.message);
                answer(h2, out, i, 503, Some("application/json"), &[]);
            } else {
                let code = match s.state {
                    StreamState::Draining => ErrorCode::NoError,
                    _ => ErrorCode::Cancel,
                };
                frame::write_rst_stream(out, id, code);
                h2.remove_stream(i);
            }
            continue;
        }
        i += 1;
    }
}
