//! The server: one pinned executor ([`crate::rt`]) per CPU, each with its own `SO_REUSEPORT`
//! listener, TLS acceptor and key-cache shard.
//!
//! Read in order: [`runtime`] (cores) → [`listener`] (accept loop, [`slots`]: the
//! connection cap) → [`conn`] (handshake, identity) with [`tls`] → [`stream`] (the
//! connection's byte stream) → [`http1`] or [`http2`] by ALPN (requests; [`proxy`] for forwarded certificates,
//! [`log_stream`] for log subscribers) → [`audit`] (records of answered requests).
//! [`timeouts`] and [`error`] are shared by every layer of a connection (its time limits, why
//! it ended). [`memory`] gives memory back to the OS after bursts of connections; [`port`]
//! makes sure no other process listens on our port.

pub mod audit;
pub mod conn;
pub mod error;
pub mod http1;
pub mod http2;
pub mod legacy_pem;
pub mod listener;
pub mod log_stream;
pub mod memory;
pub mod port;
pub mod proxy;
pub mod runtime;
pub mod slots;
pub mod stream;
pub mod timeouts;
pub mod tls;

pub use runtime::{run, RunningServer, ServerError, ServerOptions};
