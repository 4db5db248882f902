//! One client connection, start to finish: the TLS handshake, the client's identity, then
//! the protocol chosen by ALPN ([`super::http2`] for `h2`, else [`super::http1`]) over the connection's byte stream ([`super::stream`]),
//! until the client leaves, a limit is hit, a timeout fires or the core evicts it.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::AsyncWriteExt;
use rustls::{ServerConfig, ServerConnection};

use super::http1::Http1;
use super::slots::Slot;
use super::stream::TlsStream;
use crate::api::{Core, Peer};
use crate::auth::identity::{identity_from_chain, IdentityError};
use crate::rt::TcpStream;

pub use super::http1::DISCARD_BODY_BYTES_MAX;

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

/// The raw answer Go gives to plain HTTP on a TLS port.
const PLAIN_HTTP_ANSWER: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// Serves one accepted connection until it ends or `slot` is evicted.
pub async fn serve(
    core: Rc<Core>,
    config: Arc<ServerConfig>,
    stream: TcpStream,
    timeouts: Timeouts,
    slot: Rc<Slot>,
) -> Result<(), ConnError> {
    let evicted = slot.evicted();
    futures_lite::future::or(
        serve_connection(core, config, stream, timeouts, &slot),
        async {
            evicted.await;
            Err(ConnError::Evicted)
        },
    )
    .await
}

async fn serve_connection(
    core: Rc<Core>,
    config: Arc<ServerConfig>,
    stream: TcpStream,
    timeouts: Timeouts,
    slot: &Slot,
) -> Result<(), ConnError> {
    let _ = stream.set_nodelay(true);
    let tls = ServerConnection::new(config).map_err(ConnError::Tls)?;
    let mut io = TlsStream::new(stream, tls, timeouts.write);

    if let Err(e) = handshake(&mut io, crate::rt::now() + timeouts.header).await {
        core.metrics.inc(&core.metrics.handshakes_failed);
        return Err(e);
    }
    let ready_at = crate::rt::now();
    match io.tls.handshake_kind() {
        Some(rustls::HandshakeKind::Resumed) => core.metrics.inc(&core.metrics.handshakes_resumed),
        _ => core.metrics.inc(&core.metrics.handshakes_full),
    }
    let peer = peer_identity(&io.tls);
    core.metrics.inc(&core.metrics.connections_open);
    let result = if io.tls.alpn_protocol() == Some(b"h2") {
        core.metrics.inc(&core.metrics.connections_http2);
        super::http2::serve(core.clone(), &mut io, peer, timeouts, slot, ready_at).await
    } else {
        core.metrics.inc(&core.metrics.connections_http1);
        let mut http = Http1::default();
        http.serve(&core, &mut io, peer, timeouts, slot, ready_at)
            .await
    };
    core.metrics.dec(&core.metrics.connections_open);
    let _ = io.flush().await;
    result
}

async fn handshake(io: &mut TlsStream, deadline: Instant) -> Result<(), ConnError> {
    // Peek at the first bytes: plain HTTP gets Go's plain-text answer.
    let (n, plain_http) = {
        let first = io.read_first(deadline).await?;
        (
            first.len(),
            first.first().is_some_and(u8::is_ascii_uppercase),
        )
    };
    if n == 0 {
        return Err(ConnError::Closed);
    }
    if plain_http {
        let _ = io.stream.write_all(PLAIN_HTTP_ANSWER).await;
        return Err(ConnError::Closed);
    }
    io.feed(n).await?;
    while io.tls.is_handshaking() {
        if io.tls.wants_write() {
            io.flush_tls().await?;
            continue;
        }
        io.read_once(deadline).await?;
        if io.eof && io.tls.is_handshaking() {
            return Err(ConnError::Closed);
        }
    }
    io.flush_tls().await
}

/// The client's identity: from the end-entity certificate only (see
/// [`identity_from_chain`]).
fn peer_identity(tls: &ServerConnection) -> Peer {
    let Some(chain) = tls.peer_certificates() else {
        return Peer::Unidentified(IdentityError::NoCertificate);
    };
    let ders: Vec<&[u8]> = chain.iter().map(|c| c.as_ref()).collect();
    match identity_from_chain(&ders) {
        Ok(identity) => Peer::Identified(identity),
        Err(e) => Peer::Unidentified(e),
    }
}
