//! The server runtime: one pinned glommio executor per CPU, each with its own `SO_REUSEPORT`
//! listener, TLS acceptor and key-cache shard. Start-up checks turn a missing io_uring or a
//! too-small memlock limit into one line that names the fix.
//!
//! Read in order: [`runtime`] (cores) → [`listener`] (accept loop) → [`tls`] → [`conn`].

pub mod conn;
pub mod legacy_pem;
pub mod listener;
pub mod runtime;
pub mod tls;

pub use runtime::{run, RunningServer, ServerError, ServerOptions};
