//! Why a connection ended: the error every layer of a connection (byte stream, HTTP/1.1,
//! HTTP/2, log subscribers) returns.

/// Why a connection ended early. Only used for logging and tests; never sent to the peer.
#[derive(Debug)]
pub enum ConnError {
    Io(std::io::Error),
    Tls(rustls::Error),
    Timeout,
    Closed,
    /// Closed by the core to make room at the connection cap.
    Evicted,
}

impl From<std::io::Error> for ConnError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::TimedOut {
            ConnError::Timeout
        } else {
            ConnError::Io(e)
        }
    }
}
