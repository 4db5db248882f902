//! The time limits of one connection, set per server and handed to every connection.

use std::time::Duration;

/// Time limits of one connection.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Bounds the TLS handshake, the head of the first request (counted from the end of
    /// the handshake), and the head of every later request once its first byte arrived.
    pub header: Duration,
    /// How long a kept-alive connection may sit between requests.
    pub idle: Duration,
    /// How long one write may wait for a client that does not read (HTTP/1.1), and the
    /// window of time in which an HTTP/2 answer waiting for flow-control credit must get
    /// [`super::http2::SEND_PROGRESS_BYTES_MIN`] (or the rest of it) out.
    pub write: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header: Duration::from_secs(5),
            idle: Duration::from_secs(90),
            write: super::stream::WRITE_TIMEOUT,
        }
    }
}
