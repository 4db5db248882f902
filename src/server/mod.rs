//! The server runtime: one pinned glommio executor per CPU, each with its own `SO_REUSEPORT`
//! listener, TLS acceptor and key-cache shard. Start-up checks turn a missing io_uring or a
//! too-small memlock limit into one line that names the fix.
//!
//! Read in order: [`runtime`] (cores) → [`listener`] (accept loop, [`slots`]: the
//! connection cap) → [`conn`] (handshake, identity) with [`tls`] → [`stream`] (the
//! connection's byte stream) → [`http1`] or [`http2`] by ALPN (requests; [`proxy`] for forwarded certificates,
//! [`log_stream`] for log subscribers) → [`audit`] (records of answered requests).
//! [`memory`] gives memory back to the OS after bursts of connections.

pub mod audit;
pub mod conn;
pub mod http1;
pub mod http2;
pub mod legacy_pem;
pub mod listener;
pub mod log_stream;
pub mod memory;
pub mod proxy;
pub mod runtime;
pub mod slots;
pub mod stream;
pub mod tls;

pub use runtime::{run, RunningServer, ServerError, ServerOptions};
