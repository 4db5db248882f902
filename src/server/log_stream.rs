//! `GET /v1/log/audit` and `/v1/log/error` over HTTP/1.1: ND-JSON lines in a chunked response
//! until the client leaves or the server stops.
//!
//! A subscriber has nothing more to say after its request: whatever it sends is read and
//! dropped at once (it must not be able to grow server memory by sending bytes that are
//! never read), and a close is noticed within [`LOG_STREAM_POLL`].

use std::io::Write;
use std::time::Duration;

use super::error::ConnError;
use super::stream::TlsStream;
use crate::api::{Core, LogStream};

/// How often a log stream looks for new lines.
pub const LOG_STREAM_POLL: Duration = Duration::from_millis(100);

/// Streams one log until the client leaves or the server stops.
pub async fn stream_log(
    core: &Core,
    io: &mut TlsStream,
    which: LogStream,
) -> Result<(), ConnError> {
    let logs = &core.shared.logs;
    let sub = match which {
        LogStream::Audit => logs.subscribe_audit(),
        LogStream::Error => logs.subscribe_error(),
    };
    io.queue().extend_from_slice(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    io.flush().await?;
    io.discard_input();
    io.shrink_idle();
    let mut lines = Vec::new();
    loop {
        if core.shared.shutting_down() {
            break;
        }
        // Wait a little; a read that returns means the client closed or sent bytes, which
        // are dropped.
        let poll = crate::rt::now() + LOG_STREAM_POLL;
        match io.read_once(poll).await {
            Err(ConnError::Timeout) => {}
            Ok(()) if io.eof => break,
            Ok(()) => io.discard_input(),
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
            let out = io.queue();
            let _ = write!(out, "{:x}\r\n", line.len());
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        io.flush().await?;
        io.shrink_after_request();
    }
    io.queue().extend_from_slice(b"0\r\n\r\n");
    io.flush().await
}
