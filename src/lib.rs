//! `kes`: a wire-compatible, thread-per-core replacement for MinIO KES.
//!
//! The request path, in the order a request travels it (see docs/ARCHITECTURE.md):
//! [`server`] (cores, listener, TLS, connection) → [`http`] (framing) → [`api`] (routing,
//! authorisation via [`auth`], handlers) → [`cache`] → [`keystore`] and [`crypto`].

pub mod api;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod client;
pub mod config;
pub mod crypto;
pub mod heap;
pub mod http;
pub mod http2;
pub mod json;
pub mod keystore;
pub mod log;
pub mod routes;
pub mod rt;
pub mod secret;
pub mod server;
pub mod time;
