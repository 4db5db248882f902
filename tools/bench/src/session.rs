//! A TLS session cache that resumes like Go's `tls.LRUClientSessionCache` under many
//! concurrent dials.
//!
//! Go keeps one session per server and offers it on every new connection, so a burst of
//! concurrent dials all resume. rustls' client cache hands out each TLS 1.3 ticket at most once
//! and keeps at most 8 per server: with 64 dials in flight most would find no ticket and do a
//! full handshake, which costs the server several times what a resumption does, and is not what
//! MinIO makes a server do. This store keeps every ticket the server sends (it sends at least
//! one per connection) up to a generous bound, newest first, still using each once: after the
//! first few full handshakes there is a ticket for every dial, as with Go.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::NamedGroup;
use rustls_pki_types::ServerName;

/// Tickets kept per server: more than any `-c` this tool is run with.
const TICKETS_PER_SERVER: usize = 4096;

pub struct GoLikeSessionCache {
    /// Key-exchange hints and TLS 1.2 sessions: rustls' own cache.
    inner: ClientSessionMemoryCache,
    servers: usize,
    tls13: Mutex<HashMap<ServerName<'static>, VecDeque<Tls13ClientSessionValue>>>,
}

impl GoLikeSessionCache {
    /// Remembers tickets for up to `servers` server names (MinIO: 100).
    pub fn new(servers: usize) -> GoLikeSessionCache {
        GoLikeSessionCache {
            inner: ClientSessionMemoryCache::new(servers),
            servers,
            tls13: Mutex::new(HashMap::new()),
        }
    }
}

impl std::fmt::Debug for GoLikeSessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoLikeSessionCache").finish_non_exhaustive()
    }
}

impl ClientSessionStore for GoLikeSessionCache {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.inner.set_kx_hint(server_name, group)
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.inner.kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.inner.set_tls12_session(server_name, value)
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.inner.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.inner.remove_tls12_session(server_name)
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        let mut map = self.tls13.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(&server_name) && map.len() >= self.servers {
            // Bounded like Go's LRU; one server in practice, so any victim will do.
            if let Some(victim) = map.keys().next().cloned() {
                map.remove(&victim);
            }
        }
        let tickets = map.entry(server_name).or_default();
        if tickets.len() >= TICKETS_PER_SERVER {
            tickets.pop_front();
        }
        tickets.push_back(value);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        // Newest first, as Go offers the session it stored last.
        self.tls13
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(server_name)?
            .pop_back()
    }
}
