//! The route table and the routing decision for one request (http-api.md §1, §3 step 1–3).
//!
//! Routing is a pure function of (method, path): it selects a [`Route`] and its argument, or
//! says which mux-level answer (301, 404, 405) applies. Nothing here allocates on the hot path.

use std::time::Duration;

use crate::http::Method;

/// Request body limit of the routes that take a body ("1 MB" in the reference: decimal).
pub const BODY_BYTES_MAX: usize = 1_000_000;

/// Request body limit of the MinKMS route (`/v1/kms/{enclave}`): all of a request's
/// command frames together ("1 MB", decimal, as the KES key routes).
pub const KMS_BODY_BYTES_MAX: usize = 1_000_000;

/// The MinKMS route without an enclave (kms-go sends it when the enclave is empty); served
/// by the `/v1/kms/` route with an empty argument.
pub const KMS_PATH_NO_ENCLAVE: &str = "/v1/kms";

/// Our detailed metrics (`/v1/metrics` route, authorised as `/v1/metrics`).
pub const METRICS_DETAIL_PATH: &str = "/v1/metrics/detail";

/// How a route authenticates (auth-and-policy.md §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// No identity is computed and nothing is enforced.
    None,
    /// The identity is computed when a certificate is present; nothing is enforced.
    Identify,
    /// The identity must be the admin or allowed by its policy.
    Verify,
}

/// Every route the server knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteId {
    Version,
    Ready,
    Status,
    Metrics,
    Api,
    KeyCreate,
    KeyImport,
    KeyDescribe,
    KeyList,
    KeyDelete,
    KeyGenerate,
    KeyEncrypt,
    KeyDecrypt,
    KeyHmac,
    /// Adds a version to a key (ours; upstream KES has no rotation).
    KeyRotate,
    PolicyDescribe,
    PolicyRead,
    PolicyList,
    IdentityDescribe,
    IdentityList,
    IdentitySelfDescribe,
    LogError,
    LogAudit,
    /// The MinKMS API (kms-go): command frames for the enclave in the argument.
    Kms,
}

/// A route's static description; the effective timeout and auth mode can be overridden by
/// the config (see [`RouteSettings`]).
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub id: RouteId,
    pub method: Method,
    /// The prefix exactly as in the spec; argument routes end with `/`.
    pub path: &'static str,
    pub has_argument: bool,
    pub body_bytes_max: usize,
    pub timeout: Duration,
    pub auth: AuthMode,
}

impl Route {
    /// The argument of a routed `path`: what follows the route's prefix; empty for exact
    /// routes and for [`KMS_PATH_NO_ENCLAVE`], which is shorter than its route's prefix.
    pub fn argument_of<'p>(&self, path: &'p str) -> &'p str {
        if self.has_argument {
            path.get(self.path.len()..).unwrap_or("")
        } else {
            ""
        }
    }

    /// POST is accepted as a synonym of PUT.
    pub fn accepts(&self, method: Method) -> bool {
        self.method == method || (self.method == Method::Put && method == Method::Post)
    }
}

const fn route(
    id: RouteId,
    method: Method,
    path: &'static str,
    body_bytes_max: usize,
    timeout_s: u64,
    auth: AuthMode,
) -> Route {
    let bytes = path.as_bytes();
    Route {
        id,
        method,
        path,
        has_argument: bytes[bytes.len() - 1] == b'/',
        body_bytes_max,
        timeout: Duration::from_secs(timeout_s),
        auth,
    }
}

use AuthMode::{Identify, Verify};
use Method::{Delete, Get, Put};
use RouteId::*;

/// How many routes there are; per-route settings and metrics are arrays of this size.
pub const ROUTE_COUNT: usize = 24;

/// The 22 routes of http-api.md §1, in the spec's order (with our key rotation route after
/// the key routes), then the MinKMS route (authorised per command in `api::minkms`, not by
/// its path).
pub static ROUTES: [Route; ROUTE_COUNT] = [
    route(Version, Get, "/version", 0, 10, AuthMode::None),
    route(Ready, Get, "/v1/ready", 0, 15, Verify),
    route(Status, Get, "/v1/status", 0, 15, Verify),
    route(Metrics, Get, "/v1/metrics", 0, 15, Verify),
    route(Api, Get, "/v1/api", 0, 10, Verify),
    route(KeyCreate, Put, "/v1/key/create/", 0, 15, Verify),
    route(
        KeyImport,
        Put,
        "/v1/key/import/",
        BODY_BYTES_MAX,
        15,
        Verify,
    ),
    route(KeyDescribe, Get, "/v1/key/describe/", 0, 15, Verify),
    route(KeyList, Get, "/v1/key/list/", 0, 15, Verify),
    route(KeyDelete, Delete, "/v1/key/delete/", 0, 15, Verify),
    route(
        KeyGenerate,
        Put,
        "/v1/key/generate/",
        BODY_BYTES_MAX,
        15,
        Verify,
    ),
    route(
        KeyEncrypt,
        Put,
        "/v1/key/encrypt/",
        BODY_BYTES_MAX,
        15,
        Verify,
    ),
    route(
        KeyDecrypt,
        Put,
        "/v1/key/decrypt/",
        BODY_BYTES_MAX,
        15,
        Verify,
    ),
    route(KeyHmac, Put, "/v1/key/hmac/", BODY_BYTES_MAX, 15, Verify),
    route(KeyRotate, Put, "/v1/key/rotate/", 0, 15, Verify),
    route(PolicyDescribe, Get, "/v1/policy/describe/", 0, 15, Verify),
    route(PolicyRead, Get, "/v1/policy/read/", 0, 15, Verify),
    route(PolicyList, Get, "/v1/policy/list/", 0, 15, Verify),
    route(
        IdentityDescribe,
        Get,
        "/v1/identity/describe/",
        0,
        15,
        Verify,
    ),
    route(IdentityList, Get, "/v1/identity/list/", 0, 15, Verify),
    route(
        IdentitySelfDescribe,
        Get,
        "/v1/identity/self/describe",
        0,
        15,
        Identify,
    ),
    route(LogError, Get, "/v1/log/error", 0, 0, Verify),
    route(LogAudit, Get, "/v1/log/audit", 0, 0, Verify),
    route(
        Kms,
        Method::Post,
        "/v1/kms/",
        KMS_BODY_BYTES_MAX,
        15,
        Verify,
    ),
];

/// The index of a route in [`ROUTES`]; per-route settings are arrays indexed by it.
pub fn index_of(id: RouteId) -> usize {
    ROUTES.iter().position(|r| r.id == id).unwrap_or(0)
}

/// Effective per-route settings after config overrides (`api.<route>.{timeout,skip_auth}`).
#[derive(Clone, Debug)]
pub struct RouteSettings {
    pub timeout: [Duration; ROUTE_COUNT],
    pub auth: [AuthMode; ROUTE_COUNT],
}

impl Default for RouteSettings {
    fn default() -> Self {
        let mut timeout = [Duration::ZERO; ROUTE_COUNT];
        let mut auth = [AuthMode::None; ROUTE_COUNT];
        for (i, r) in ROUTES.iter().enumerate() {
            timeout[i] = r.timeout;
            auth[i] = r.auth;
        }
        RouteSettings { timeout, auth }
    }
}

impl RouteSettings {
    /// True if some route was downgraded with `skip_auth`, which makes client certificates
    /// optional in the TLS handshake (auth-and-policy.md §2.1).
    pub fn any_skip_auth(&self) -> bool {
        ROUTES
            .iter()
            .zip(self.auth.iter())
            .any(|(r, a)| r.auth == Verify && *a != Verify)
    }
}

/// The outcome of routing one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Routed<'p> {
    /// Serve `ROUTES[index]` with this argument (empty for exact routes).
    Route { index: usize, argument: &'p str },
    /// 301 to this path (a slash-less argument route): `Location` = path + query.
    RedirectAddSlash,
    /// 405: the route exists but wants another method.
    WrongMethod { index: usize },
    /// 404 page not found.
    NotFound,
}

/// Selects the route for a cleaned, decoded path (Go ServeMux semantics: exact routes match
/// only themselves, argument routes match their prefix; a slash-less argument route path is
/// redirected).
///
/// Two paths beyond the table: [`METRICS_DETAIL_PATH`] is served by the metrics route (which
/// tells the two apart by the request path), [`KMS_PATH_NO_ENCLAVE`] by the MinKMS route.
pub fn route_request(method: Method, path: &str) -> Routed<'_> {
    // Before the table: `/v1/kms` would otherwise be redirected to `/v1/kms/`.
    if path == KMS_PATH_NO_ENCLAVE {
        return served_by(Kms, method);
    }
    for (index, r) in ROUTES.iter().enumerate() {
        let matched = if r.has_argument {
            if let Some(argument) = path.strip_prefix(r.path) {
                Some(argument)
            } else if path.len() + 1 == r.path.len() && r.path.starts_with(path) {
                return Routed::RedirectAddSlash;
            } else {
                None
            }
        } else if path == r.path {
            Some("")
        } else {
            None
        };
        if let Some(argument) = matched {
            if !r.accepts(method) {
                return Routed::WrongMethod { index };
            }
            return Routed::Route { index, argument };
        }
    }
    if path == METRICS_DETAIL_PATH {
        return served_by(Metrics, method);
    }
    Routed::NotFound
}

/// [`is_valid_name`]'s rule in words, for error messages.
pub const NAME_RULE: &str = "a name is 1 to 80 characters of A-Z, a-z, 0-9, '_' and '-', \
                             does not start or end with '-' and is not '_' alone";

/// A path beyond the table that route `id` serves with an empty argument.
fn served_by(id: RouteId, method: Method) -> Routed<'static> {
    let index = index_of(id);
    if ROUTES[index].accepts(method) {
        Routed::Route {
            index,
            argument: "",
        }
    } else {
        Routed::WrongMethod { index }
    }
}

/// Name rules of http-api.md §3.1 (current): `[0-9A-Za-z_-]`, 1…80 bytes, `-` not first or
/// last, `_` alone invalid.
pub fn is_valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > 80 || name == "_" {
        return false;
    }
    if b[0] == b'-' || b[b.len() - 1] == b'-' {
        return false;
    }
    b.iter()
        .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// Pattern rules of http-api.md §3.1: like names plus one trailing `*`; empty and `*` valid.
pub fn is_valid_pattern(pattern: &str) -> bool {
    if pattern.is_empty() || pattern == "*" {
        return true;
    }
    let stem = pattern.strip_suffix('*').unwrap_or(pattern);
    if stem.is_empty() || stem.len() > 80 || stem == "_" {
        return false;
    }
    let b = stem.as_bytes();
    // `-` may not be first; it may be last only when a `*` follows it.
    if b[0] == b'-' || (b[b.len() - 1] == b'-' && !pattern.ends_with('*')) || pattern.len() > 80 {
        return false;
    }
    b.iter()
        .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// The literal prefix of a list pattern: one trailing `*` stripped, `*` alone = everything.
pub fn pattern_prefix(pattern: &str) -> &str {
    pattern.strip_suffix('*').unwrap_or(pattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(id: RouteId) -> usize {
        index_of(id)
    }

    #[test]
    fn exact_and_argument_routes() {
        assert_eq!(
            route_request(Get, "/version"),
            Routed::Route {
                index: idx(Version),
                argument: ""
            }
        );
        assert_eq!(route_request(Get, "/v1/status/"), Routed::NotFound);
        assert_eq!(
            route_request(Post, "/v1/key/generate/my-key"),
            Routed::Route {
                index: idx(KeyGenerate),
                argument: "my-key"
            }
        );
        assert_eq!(
            route_request(Put, "/v1/key/hmac/k"),
            Routed::Route {
                index: idx(KeyHmac),
                argument: "k"
            }
        );
        assert_eq!(
            route_request(Get, "/v1/key/list/"),
            Routed::Route {
                index: idx(KeyList),
                argument: ""
            }
        );
        assert_eq!(
            route_request(Get, "/v1/identity/self/describe"),
            Routed::Route {
                index: idx(IdentitySelfDescribe),
                argument: ""
            }
        );
        assert_eq!(route_request(Get, "/v1/key/list"), Routed::RedirectAddSlash);
        assert_eq!(
            route_request(Get, "/v1/metrics/detail"),
            Routed::Route {
                index: idx(Metrics),
                argument: ""
            }
        );
        assert_eq!(route_request(Get, "/v1/metrics/"), Routed::NotFound);
        assert_eq!(route_request(Get, "/v1/metrics/other"), Routed::NotFound);
        assert_eq!(route_request(Get, "/v1/nope"), Routed::NotFound);
        // The MinKMS route, with and without an enclave.
        assert_eq!(
            route_request(Post, "/v1/kms"),
            Routed::Route {
                index: idx(Kms),
                argument: ""
            }
        );
        assert_eq!(
            route_request(Post, "/v1/kms/default"),
            Routed::Route {
                index: idx(Kms),
                argument: "default"
            }
        );
        assert_eq!(
            route_request(Get, "/v1/kms"),
            Routed::WrongMethod { index: idx(Kms) }
        );
        assert_eq!(route_request(Get, "/"), Routed::NotFound);
    }

    use Method::Post;

    #[test]
    fn methods() {
        assert_eq!(
            route_request(Get, "/v1/key/create/a"),
            Routed::WrongMethod {
                index: idx(KeyCreate)
            }
        );
        assert_eq!(
            route_request(Post, "/v1/key/delete/a"),
            Routed::WrongMethod {
                index: idx(KeyDelete)
            }
        );
        assert_eq!(
            route_request(Method::Head, "/version"),
            Routed::WrongMethod {
                index: idx(Version)
            }
        );
        assert!(matches!(
            route_request(Post, "/v1/key/import/a"),
            Routed::Route { .. }
        ));
    }

    #[test]
    fn names() {
        for ok in ["a", "my-key", "A_b-9", "_a", "a_", "__", &"x".repeat(80)] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "_",
            "-a",
            "a-",
            "a.b",
            "a/b",
            "a*",
            "é",
            &"x".repeat(81),
        ] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn patterns() {
        for ok in ["", "*", "my-*", "abc", "a_*", "a*"] {
            assert!(is_valid_pattern(ok), "{ok}");
        }
        for bad in ["_", "-*", "a*b", "**", "a-", "a.b*", &"x".repeat(81)] {
            assert!(!is_valid_pattern(bad), "{bad}");
        }
        assert_eq!(pattern_prefix("my-*"), "my-");
        assert_eq!(pattern_prefix("*"), "");
        assert_eq!(pattern_prefix("abc"), "abc");
    }
}
