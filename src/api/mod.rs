//! The KES API: routing ([`router`]), authorisation, and the handlers, which turn one parsed
//! request into one [`Reply`].
//!
//! Order of checks for every request (http-api.md §3): route (404/301) → method (405) →
//! authenticate + authorise (400/403) → handler (argument validation, body, keystore).

pub mod error;
pub mod identity;
pub mod json;
pub mod key;
pub mod metrics;
pub mod minkms;
pub mod proto;
/// The route table lives in [`crate::routes`] (below both the API and the config); this
/// alias keeps the API's paths.
pub use crate::routes as router;
pub mod settings;
pub mod store;
pub mod system;

use std::sync::Arc;
use std::time::Instant;

use ring::rand::SystemRandom;

pub use error::ApiError;
pub use router::{AuthMode, Route, RouteId, RouteSettings, Routed, ROUTES};

use crate::auth::identity::IdentityError;
use crate::auth::{Decision, Identity};
use crate::cache::{CoreCache, Expiry, Invalidations};
use crate::crypto::KeyType;
use crate::keystore::KeyStore;
use crate::time::Timestamp;

/// Server version reported by `/version` and `/v1/status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit, when the build passes it in `KES_BUILD_COMMIT`.
pub const COMMIT: &str = match option_env!("KES_BUILD_COMMIT") {
    Some(c) => c,
    None => "<unknown>",
};

/// State shared by all cores: immutable except for the invalidation log and the keystore's
/// own internals. Cores hold it through an `Arc` and never lock it on the request path.
pub struct Shared {
    /// Admin, policies, route settings, TLS: replaced whole on reload.
    pub settings: settings::Reloadable<settings::Settings>,
    pub keystore: Arc<dyn KeyStore>,
    pub invalidations: Invalidations,
    /// Type of newly created keys.
    pub key_type: KeyType,
    pub expiry: Expiry,
    pub started: Instant,
    pub started_at: Timestamp,
    /// Number of cores serving requests (for `/v1/status`).
    pub cores: usize,
    /// Set by SIGINT/SIGTERM: stop accepting, finish in-flight requests, exit.
    pub shutdown: crate::rt::Signal,
    pub metrics: metrics::Registry,
    pub logs: crate::log::Logs,
    /// One keystore read per key name at a time, node-wide.
    pub flights: crate::cache::flight::SingleFlight,
    /// Set by the health check while the keystore does not answer.
    pub keystore_offline: std::sync::atomic::AtomicBool,
    /// Why keystore calls fail, for the error log (repeats held back).
    pub store_errors: store::ErrorReports,
    /// `cache.expiry.offline`: while offline, cached keys are kept this long (0 = no pinning).
    pub expiry_offline: std::time::Duration,
    /// The MinKMS enclaves this node has seen exist (for `cache.expiry.any`).
    pub enclaves: minkms::enclave::Known,
}

impl Shared {
    pub fn shutting_down(&self) -> bool {
        self.shutdown.is_set()
    }
}

/// One core's state: its cache shard and RNG, plus the shared state.
pub struct Core {
    pub shared: Arc<Shared>,
    pub metrics: Arc<metrics::CoreMetrics>,
    pub settings: settings::CoreView<settings::Settings>,
    pub cache: CoreCache,
    /// For key creation (rare): the OS generator.
    pub rng: SystemRandom,
    /// For the hot path (DEKs, IVs, nonces): the core's own CSPRNG (see `crypto::rng`).
    pub fast_rng: std::cell::RefCell<crate::crypto::rng::CoreRng>,
    pub json: std::cell::RefCell<json::JsonParser>,
    /// The last keystore probe and when it ran (see `store::status`).
    pub last_probe:
        std::cell::Cell<Option<(std::time::Instant, Result<std::time::Duration, bool>)>>,
    /// Process memory figures for `/v1/status`, refreshed at most once a second.
    pub proc_memory: std::cell::Cell<Option<(std::time::Instant, u64, u64)>>,
}

impl Core {
    pub fn new(shared: Arc<Shared>) -> Core {
        Core {
            metrics: shared.metrics.register(),
            settings: settings::CoreView::new(&shared.settings),
            shared,
            cache: Default::default(),
            rng: SystemRandom::new(),
            fast_rng: std::cell::RefCell::new(
                crate::crypto::rng::CoreRng::new()
                    .expect("the OS refused random bytes at start-up"),
            ),
            json: Default::default(),
            last_probe: Default::default(),
            proc_memory: Default::default(),
        }
    }
}

/// What the connection knows about the peer.
#[derive(Clone, Copy, Debug)]
pub enum Peer {
    /// The identity of the client's end-entity certificate.
    Identified(Identity),
    /// The identity could not be derived.
    Unidentified(IdentityError),
}

/// Per-connection scratch buffers for handlers, reused across requests (so the hot path does
/// not allocate) and wiped after each request (they hold DEKs and plaintexts).
#[derive(Default)]
pub struct Scratch {
    pub context: Vec<u8>,
    pub data: Vec<u8>,
    pub output: Vec<u8>,
    /// A policy path being built (MinKMS commands); never secret.
    pub path: String,
}

impl Scratch {
    /// Wipes the buffers and gives back any that a large request grew past `keep_bytes_max`.
    pub fn wipe_and_shrink(&mut self, keep_bytes_max: usize) {
        self.wipe();
        for buf in [&mut self.context, &mut self.data, &mut self.output] {
            if buf.capacity() > keep_bytes_max {
                *buf = Vec::new();
            }
        }
        if self.path.capacity() > keep_bytes_max {
            self.path = String::new();
        }
    }

    pub fn wipe(&mut self) {
        for buf in [&mut self.context, &mut self.data, &mut self.output] {
            // SAFETY: zeroing the initialised part of our own buffer.
            unsafe { memsec::memzero(buf.as_mut_ptr(), buf.len()) };
            buf.clear();
        }
    }
}

/// One request, as the handlers see it.
pub struct Request<'a> {
    /// The settings in force when the request started.
    pub settings: &'a settings::Settings,
    pub route: &'static Route,
    pub argument: &'a str,
    pub path: &'a str,
    pub peer: Peer,
    /// The request body (already bounded by the route's limit); handlers may modify it
    /// in place (simd-json does).
    pub body: &'a mut Vec<u8>,
    pub scratch: &'a mut Scratch,
    /// The head's `Content-Type` or `Accept` is exactly `application/octet-stream`: the
    /// MinKMS API answers protobuf (else protojson / the KES API's JSON).
    pub binary: bool,
    /// The `Host` header (HTTP/2: `:authority`) as the client wrote it; empty if absent.
    pub host: &'a str,
}

impl Request<'_> {
    /// The route's effective timeout (zero: none).
    pub fn timeout(&self) -> std::time::Duration {
        self.settings.routes.timeout[router::index_of(self.route.id)]
    }
}

/// A handler's answer. JSON and text bodies are written into the connection's body buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// 200, no body.
    Empty,
    /// 200, `Content-Type: application/json`, body in the buffer.
    Json,
    /// 200 with this content type, body in the buffer.
    Content(&'static str),
    /// This status, `Content-Type: application/octet-stream`, body in the buffer (MinKMS
    /// answers and their protobuf errors).
    Binary(u16),
    /// 200 ND-JSON stream of log lines until the client leaves.
    Stream(LogStream),
    Error(ApiError),
}

/// Which log a stream follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Audit,
    Error,
}

impl Reply {
    /// The HTTP status this reply answers with.
    pub fn status(&self) -> u16 {
        match self {
            Reply::Error(e) => e.status,
            Reply::Binary(status) => *status,
            _ => 200,
        }
    }
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Reply {
        Reply::Error(e)
    }
}

/// Authenticates and authorises `req` per its route's effective auth mode.
pub fn authorize(route_index: usize, req: &Request<'_>) -> Result<(), ApiError> {
    authorize_head(req.settings, route_index, req.peer, req.path)
}

/// The same decision from what the request head alone says (route, peer, path): taken
/// before any body byte is read, so an unauthorised client cannot make the server buffer
/// its body.
pub fn authorize_head(
    settings: &settings::Settings,
    route_index: usize,
    peer: Peer,
    path: &str,
) -> Result<(), ApiError> {
    match settings.routes.auth[route_index] {
        AuthMode::None | AuthMode::Identify => Ok(()),
        AuthMode::Verify => {
            let identity = match peer {
                Peer::Identified(identity) => identity,
                Peer::Unidentified(IdentityError::MoreThanOne) => {
                    return Err(ApiError::MORE_THAN_ONE_CERT)
                }
                Peer::Unidentified(IdentityError::CaAsEndEntity) => return Err(ApiError::CA_CERT),
                Peer::Unidentified(_) => return Err(ApiError::CERT_REQUIRED),
            };
            // The detailed metrics are authorised as `/v1/metrics` itself.
            let path = match ROUTES[route_index].id {
                RouteId::Metrics => ROUTES[route_index].path,
                // Each MinKMS command is authorised as the KES route it stands for, once the
                // body is read (`minkms::authorize`); from the head: only identities that
                // may do something (the admin or one with a policy) get their body read.
                RouteId::Kms => {
                    let policies = &settings.policies;
                    if policies.is_admin(&identity) || policies.policy_of(&identity).is_some() {
                        return Ok(());
                    }
                    return Err(ApiError::KMS_ACCESS_DENIED);
                }
                _ => path,
            };
            match settings.policies.decide(&identity, path) {
                Decision::Allow => Ok(()),
                Decision::Deny => Err(ApiError::NOT_AUTHORIZED),
            }
        }
    }
}

/// The reply to a request refused by [`authorize_head`]: on the MinKMS route a client that
/// speaks protobuf gets a protobuf `ErrResponse` (body in `out`), everyone else JSON.
pub fn refusal(route_index: usize, binary: bool, e: ApiError, out: &mut Vec<u8>) -> Reply {
    if binary && ROUTES[route_index].id == RouteId::Kms {
        minkms::error_reply(e, out)
    } else {
        Reply::Error(e)
    }
}

/// Runs the handler for an authorised request, writing any body into `out`.
pub async fn dispatch(core: &Core, req: &mut Request<'_>, out: &mut Vec<u8>) -> Reply {
    use RouteId::*;
    let result = match req.route.id {
        Version => system::version(req, out),
        Ready => system::ready(core).await,
        Status => system::status(core, out).await,
        Metrics => system::metrics(core, req, out),
        Api => system::api(req, out),
        KeyCreate => key::create(core, req).await,
        KeyImport => key::import(core, req).await,
        KeyDescribe => key::describe(core, req, out).await,
        KeyList => key::list(core, req, out).await,
        KeyDelete => key::delete(core, req).await,
        KeyGenerate => key::generate(core, req, out).await,
        KeyEncrypt => key::encrypt(core, req, out).await,
        KeyDecrypt => key::decrypt(core, req, out).await,
        KeyHmac => key::hmac(core, req, out).await,
        KeyRotate => key::rotate(core, req, out).await,
        PolicyDescribe => identity::describe_policy(core, req, out),
        PolicyRead => identity::read_policy(core, req, out),
        PolicyList => identity::list_policies(req, out).await,
        IdentityDescribe => identity::describe_identity(core, req, out),
        IdentityList => identity::list_identities(req, out).await,
        IdentitySelfDescribe => identity::describe_self(core, req, out),
        LogError => Ok(Reply::Stream(LogStream::Error)),
        LogAudit => Ok(Reply::Stream(LogStream::Audit)),
        Kms => return minkms::serve(core, req, out).await,
    };
    result.unwrap_or_else(Reply::Error)
}
