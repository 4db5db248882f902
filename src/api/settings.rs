//! The reloadable part of the configuration, and how cores pick up a new version.
//!
//! A reload publishes a new [`Settings`] and bumps a generation counter. Each core keeps its
//! own reference to the current version and compares generations once per request (one
//! atomic load of a rarely written cache line); only when it changed does it lock and take
//! the new version. Requests already running keep the version they started with.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustls::server::danger::ClientCertVerifier;
use rustls::ServerConfig;

use super::RouteSettings;
use crate::auth::{Identity, PolicySet};

/// Everything a SIGHUP may change without a restart.
pub struct Settings {
    pub policies: PolicySet,
    pub routes: RouteSettings,
    pub tls: Arc<ServerConfig>,
    /// The verifier `tls` checks client certificates with; certificates forwarded by a
    /// trusted proxy go through it too.
    pub client_verifier: Arc<dyn ClientCertVerifier>,
    /// Identities of trusted TLS-terminating proxies (legacy `tls.proxy`).
    pub proxies: Vec<Identity>,
    /// Header that carries the forwarded client certificate.
    pub proxy_cert_header: String,
    /// Emit an audit event for every request, not only key create/import/delete.
    pub audit_all: bool,
}

/// A value replaced whole on reload.
pub struct Reloadable<T> {
    generation: AtomicU64,
    current: Mutex<Arc<T>>,
}

impl<T> Reloadable<T> {
    pub fn new(value: T) -> Self {
        Reloadable {
            generation: AtomicU64::new(1),
            current: Mutex::new(Arc::new(value)),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current version (takes the lock; cores use [`CoreView`] instead).
    pub fn load(&self) -> (u64, Arc<T>) {
        let guard = self.current.lock().unwrap_or_else(|e| e.into_inner());
        (self.generation.load(Ordering::Acquire), guard.clone())
    }

    /// Publishes a new version; cores see it at their next request.
    pub fn store(&self, value: T) {
        let mut guard = self.current.lock().unwrap_or_else(|e| e.into_inner());
        *guard = Arc::new(value);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// The settings a request runs under, as a core hands them out (see [`CoreView::get`]).
#[allow(clippy::redundant_allocation)]
pub type CoreSettings = Rc<Arc<Settings>>;

/// A core's cached view of a [`Reloadable`].
///
/// `Rc<Arc<T>>` on purpose: handing out the `Arc` itself would bump a reference count that
/// every core shares on every request; the `Rc` keeps that count core-local.
#[allow(clippy::redundant_allocation)]
pub struct CoreView<T> {
    cached: RefCell<(u64, Rc<Arc<T>>)>,
}

impl<T> CoreView<T> {
    pub fn new(source: &Reloadable<T>) -> Self {
        let (generation, value) = source.load();
        CoreView {
            cached: RefCell::new((generation, Rc::new(value))),
        }
    }

    /// The current version; core-local reference counting, no atomics unless it changed.
    #[allow(clippy::redundant_allocation)]
    pub fn get(&self, source: &Reloadable<T>) -> Rc<Arc<T>> {
        let generation = source.generation();
        let mut cached = self.cached.borrow_mut();
        if cached.0 != generation {
            let (generation, value) = source.load();
            *cached = (generation, Rc::new(value));
        }
        cached.1.clone()
    }
}
