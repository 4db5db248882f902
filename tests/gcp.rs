//! The GCP Secret Manager keystore against a stand-in of the documented REST API (v1), the
//! OAuth2 token endpoint and the metadata server, run inside the test on loopback, through
//! `kes server --config` started as a user starts it (environment variables, files on disk).
//!
//! The stand-in is strict: it answers only the calls upstream's layout and key rotation need
//! (create secret with automatic replication, add version numbered sequentially, access a
//! version by number or as `latest` (the most recently created, whatever its state), list a
//! secret's versions newest first in pages, delete, paged list, and destroying a version kes
//! added after another writer's), checks method, path, headers and
//! body shape, accepts only unexpired bearer tokens it issued, and issues a token only for
//! a JWT whose RS256 signature verifies with the service account's public key and whose
//! claims (iss, aud, scope, iat/exp) are right, for a refresh-token grant with the
//! authorized user's client id, secret and refresh token, or, as the metadata server, for a
//! request with `Metadata-Flavor: Google` and the scope (it answers with that header too).
//! As Google's STS it exchanges a subject token for a federated token (RFC 8693 form, the
//! pool's audience, the subject token as the credential source holds it at that moment), as
//! the IAM credentials API it sells the service account's token for a valid federated token
//! (`generateAccessToken`, scope and lifetime checked), and it serves a URL-sourced subject
//! token only with the header the credentials file names. Secret Manager takes a federated
//! token only when the test grants the pool direct access. A destroyed version answers
//! `400 FAILED_PRECONDITION`, as Secret Manager does; the `x-goog-user-project` of every call
//! is recorded.

mod common;
mod standin;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::lifecycle::{
    create_and_use, keystore_lifecycle, outage_behaviour, renewed_before_expiry, used_and_renewed,
    Backend, Lifecycle, Tokens,
};
use common::*;
use simd_json::prelude::*;
use standin::{Request, Response};

/// Test-only service-account keys (RSA 2048, PKCS#8), generated for these tests.
const KEY: &str = include_str!("common/gcp_test_key.pem");
const OTHER_KEY: &str = r"-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDcLyJrBXeFZd1U
RJMEb659dIxUCAQd9uRHjQvyXbkw0MMfgv1Ssfo/5cbHUvYaKHsz8FZTiWI5Kg0T
gZ9/YCittLDh9tEw/ExlK7mrn5peCAimvOK8gPjGBlgBDWsuGRw2u1vFa/e6mwrH
OC+oRDy1Y+El95pVN+4XBwI+sKSwIiOQc3UWKEctNlkrM5VV1o/Y2lhssly+yaa5
r1JQdJqN+wX6jK61QUzuTMDMeLN7DVxEDavKdMRRJvT1aXj55s732vVf9y/Cbmqx
LuvaoaYqokg0LlysfQUxCeJXHmSrD0RILj3FTE+QIT7YzsopD9MSIktAh65XtI+/
cKgDZukLAgMBAAECggEAQPWq+tYPEA0ggkcE9M8aNKsY54XB6TE44h8rwiKCi3Nb
zcUwhaA6i3V38sB4GPmOd6FVZqnmj6TnXLTmYIb3GWBwuwm9Z+1XgJWo3ohk248V
NlQNtL18J7ghaJYT4/LGjyMxjQoweR5azLG35bXUD1PbTf9ByhiJJsQLloE45Tlw
5trr+6SOgauP8zcMDKWWeTELHhJ6bIrOEVKrzcPziy4VvRWSghEi0wYj5aTD/kti
Fj68kHY+a0/QUkib2Hy0/xwJu7Fm6ojakRlU+lqHGpM8lkKqK6kZBBMt5JbfH7aS
gWkgqQ1Qyx/tbSFUshzlqPUfzdje6Z4Rdjpq4CXY2QKBgQD6pWtEoDNG9t7uVTwV
X7HkhYCws04+tZgUgyjX49zkdtR2hJkekaLvJZAPRF2wyTHHBjvjs6QHVsA3xiZS
vTSyzqyfx+SKL4Vkfy+JRRtWTtiC1+3/TaTVAJaUzxAEYPMNWThuVJcHOw0yymdb
sZL2/RoZLoBZ1GptEcq6HzPGfQKBgQDg4ySlC/z+9vWkqKwG6PlYeJn1e4m9UNH+
unD2DkW8pIIhhloZ0N8xJi/pPHfvcVHhI7LlB5d2ZnpyAViYylUeDoBfeY1jknaP
ncmnupBr4wNIzYgU1g5YWDiztZ5ya76TpE2oib7pBfVV75+qRFv8uKT9WSINVxFE
gNF8/2YcJwKBgHPlyZQR/6Pww2SxRPcdKMTidn8+ag/VKF1TyK8LTjjWOagT6Dma
Xhz24YYttqToY3wEBe1kQ5ShKIChv1bC5ntH1cqMQ8Eh+CxgIzr2GY3vJ25ZKlPD
M1TK0NY+aMmdisXBW7aopq1RQOkbbm+XzL0oi8jZF8Bx2ERW1cb6ZpaBAoGAIj70
yZ11vW3mIlj9OWAo+GwFJfjWFNpF4ECMCyxJOlzi5DANcHj6RAXIrf/jU7cx/NLu
3ym0yvb4FnxV/Y5yP819hwx/l3YqT9x7ZOtoKsW7Lk7+Ng4SySlGGTfDFTGLJ/iR
SuUPCXU60wdWjRsz1txXY607HkTwADqNrDdIWWkCgYEAta+0CHTK7aqzKEw40039
JooitFX4QK20JGsZJJ83oUTwF2aDpIvHyZs1qwgTeIKLlgLAc5Lk5fD/jIaZ/hcX
hDhyqoVn0kK5GYpXxQC8wHfj4Sk5DdYjI+OpfJRBJehDtH3JqF837s1nv9yRMy/v
ZSv444zOdiLAHJ2d/xoFe58=
-----END PRIVATE KEY-----
";

const PROJECT: &str = "kes-project";
/// The workload identity pool provider of the `external_account` files.
const AUDIENCE: &str =
    "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/kes-pool/providers/kes-provider";
/// The header value a URL-sourced subject token is served for.
const SUBJECT_URL_KEY: &str = "subject-key-1";
const PROJECT_NUMBER: &str = "123456789";
const EMAIL: &str = "kes@kes-project.iam.gserviceaccount.com";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const PAGE: usize = 10;
/// The most versions one page of a version list holds (fewer than asked for, as the API
/// may answer, so that paging is exercised).
const VERSIONS_PAGE: usize = 3;
/// The authorized user of an `authorized_user` credentials file.
const USER_CLIENT_ID: &str =
    "764086051850-6qr4p6gpi6hn506pt8ejuq83di341hur.apps.googleusercontent.com";
const USER_CLIENT_SECRET: &str = "d-FL95Q19q7MQmFpd7hHD0Ty";
const USER_REFRESH_TOKEN: &str = "1//0gREFRESH-token_value/with+odd=chars";

#[derive(Default)]
struct State {
    /// secret id → versions' payloads (version n at index n-1).
    secrets: BTreeMap<String, Vec<Vec<u8>>>,
    /// Lifetime of the tokens issued, in seconds.
    lifetime_secs: u64,
    tokens: HashMap<String, Instant>,
    /// Tokens issued, calls refused as unauthorized, other calls refused.
    seen: Tokens,
    /// Tokens issued per grant: JWT bearer, refresh token, metadata server.
    jwt_grants: usize,
    refresh_grants: usize,
    metadata_grants: usize,
    /// The next create ("create") or add version ("add") is stored and then answered 503.
    fail_after_store: Vec<&'static str>,
    /// Stored as a version just before the next add version (another creator or rotator
    /// came first).
    race_version: Option<Vec<u8>>,
    /// `<secret>/versions/<n>` destroyed.
    destroyed: Vec<String>,
    /// The metadata server answers without `Metadata-Flavor: Google` (another cloud's).
    impostor: bool,
    /// Payloads are answered in the URL-safe base64 alphabet.
    url_safe_payloads: bool,
    /// The `x-goog-user-project` of each Secret Manager call ("" when none).
    user_projects: Vec<String>,
    /// External account: the file whose content is the subject token the STS accepts.
    subject_file: Option<std::path::PathBuf>,
    /// External account: the subject token served at `/subject-token` (and then accepted).
    subject_url_token: Option<String>,
    /// Token exchanges at the STS and service-account tokens sold by IAM credentials.
    sts_grants: usize,
    iam_grants: usize,
    /// Federated tokens from the STS; Secret Manager takes them only with `sts_direct_access`.
    sts_tokens: HashMap<String, Instant>,
    sts_direct_access: bool,
    /// The scope the STS expects (cloud-platform when impersonating).
    sts_scope: String,
    /// The OAuth client the STS expects as HTTP Basic (a file's client_id/client_secret).
    sts_client: Option<(String, String)>,
}

/// The stand-in: Secret Manager, the OAuth2 token endpoint and the metadata server on one
/// loopback port (`tests/standin` serves it), with its state.
struct StandIn {
    port: u16,
    state: Arc<Mutex<State>>,
    _server: standin::StandIn,
}

fn public_key(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).unwrap();
    let pair = ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
    use ring::signature::KeyPair;
    pair.public_key().as_ref().to_vec()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn start_stand_in(token_lifetime: u64) -> StandIn {
    let state = Arc::new(Mutex::new(State {
        lifetime_secs: token_lifetime,
        sts_scope: SCOPE.into(),
        ..State::default()
    }));
    let public = public_key(KEY);
    let port_cell = Arc::new(std::sync::OnceLock::<u16>::new());
    let (st, pc) = (state.clone(), port_cell.clone());
    let server = standin::StandIn::start(Arc::new(move |req: &Request| {
        let port = *pc.get().expect("the port is known before any request");
        // The handlers read the target as sent (path and query).
        let req = Request {
            path: req.target(),
            query: req.query.clone(),
            method: req.method.clone(),
            headers: req.headers.clone(),
            body: req.body.clone(),
        };
        let mut s = st.lock().unwrap();
        let metadata_call = req.path.starts_with("/computeMetadata/");
        let (status, body) = if metadata_call {
            metadata(&mut s, &req)
        } else {
            handle(&mut s, &req, port, &public)
        };
        // A disabled or destroyed version (FAILED_PRECONDITION) is an answer about the data,
        // not a refused call.
        if status >= 400 && status != 404 && status != 409 && !body.contains("FAILED_PRECONDITION")
        {
            s.seen
                .rejected
                .push(format!("{} {} -> {status} {body}", req.method, req.path));
        }
        let response = Response::json(status, body);
        if metadata_call && !s.impostor {
            response.with_header("Metadata-Flavor: Google")
        } else {
            response
        }
    }) as standin::Handler);
    let _ = port_cell.set(server.port);
    StandIn {
        port: server.port,
        state,
        _server: server,
    }
}

fn gerr(code: u16, status: &str, message: &str) -> (u16, String) {
    (
        code,
        format!(r#"{{"error":{{"code":{code},"message":"{message}","status":"{status}"}}}}"#),
    )
}

fn b64url(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

/// A token the stand-in accepts for `lifetime_secs`, in Google's token answer.
fn issue(s: &mut State) -> (u16, String) {
    s.seen.issued += 1;
    let t = format!("ya29.token-{}", s.seen.issued);
    s.tokens.insert(
        t.clone(),
        Instant::now() + Duration::from_secs(s.lifetime_secs),
    );
    let lifetime = s.lifetime_secs;
    (
        200,
        format!(r#"{{"access_token":"{t}","expires_in":{lifetime},"token_type":"Bearer"}}"#),
    )
}

/// The metadata server's token endpoint (GCE, GKE workload identity): `GET` with
/// `Metadata-Flavor: Google` and the scope asked for; anything else refused.
fn metadata(s: &mut State, req: &Request) -> (u16, String) {
    if req.header("metadata-flavor") != Some("Google") {
        return (403, "Missing Metadata-Flavor:Google header.".into());
    }
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    if req.method != "GET"
        || path != "/computeMetadata/v1/instance/service-accounts/default/token"
        || !req.body.is_empty()
    {
        return (404, "Not Found".into());
    }
    let scopes: Vec<String> = query
        .split('&')
        .filter_map(|p| p.strip_prefix("scopes="))
        .map(url_decode)
        .collect();
    if scopes != [SCOPE] {
        return (400, format!("wrong scopes {scopes:?}"));
    }
    s.metadata_grants += 1;
    issue(s)
}

/// The token endpoint: RFC 7523 JWT bearer grant or refresh-token grant, checked strictly.
fn token(s: &mut State, req: &Request, port: u16, public: &[u8]) -> (u16, String) {
    let bad = |why: &str| {
        (
            400,
            format!(r#"{{"error":"invalid_grant","error_description":"{why}"}}"#),
        )
    };
    if req.header("content-type") != Some("application/x-www-form-urlencoded") {
        return bad("wrong content type");
    }
    let form = String::from_utf8_lossy(&req.body).to_string();
    if form.starts_with("grant_type=refresh_token&") {
        let mut fields = HashMap::new();
        for pair in form.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if fields.insert(k.to_string(), url_decode(v)).is_some() {
                return bad("duplicate field");
            }
        }
        let field = |k: &str| fields.get(k).map(String::as_str);
        if fields.len() != 4 || field("client_id") != Some(USER_CLIENT_ID) {
            return (
                401,
                r#"{"error":"invalid_client","error_description":"The OAuth client was not found."}"#
                    .into(),
            );
        }
        if field("client_secret") != Some(USER_CLIENT_SECRET) {
            return (
                401,
                r#"{"error":"invalid_client","error_description":"Unauthorized"}"#.into(),
            );
        }
        if field("refresh_token") != Some(USER_REFRESH_TOKEN) {
            return bad("Token has been expired or revoked.");
        }
        s.refresh_grants += 1;
        return issue(s);
    }
    let mut fields = form.split('&');
    if fields.next() != Some("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer") {
        return bad("wrong grant_type");
    }
    let Some(jwt) = fields.next().and_then(|f| f.strip_prefix("assertion=")) else {
        return bad("no assertion");
    };
    if fields.next().is_some() {
        return bad("extra form fields");
    }
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return bad("not a JWT");
    }
    let Some(sig) = b64url(parts[2]) else {
        return bad("bad signature encoding");
    };
    let signed = format!("{}.{}", parts[0], parts[1]);
    if ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, public)
        .verify(signed.as_bytes(), &sig)
        .is_err()
    {
        return bad("Invalid JWT Signature.");
    }
    let (Some(mut h), Some(mut c)) = (b64url(parts[0]), b64url(parts[1])) else {
        return bad("bad encoding");
    };
    let (Ok(h), Ok(c)) = (
        simd_json::to_owned_value(&mut h),
        simd_json::to_owned_value(&mut c),
    ) else {
        return bad("bad JSON");
    };
    if h.get("alg").and_then(|v| v.as_str()) != Some("RS256")
        || h.get("kid").and_then(|v| v.as_str()) != Some("key-id-1")
    {
        return bad("wrong header");
    }
    let aud = format!("http://127.0.0.1:{port}/token");
    let (iat, exp) = (
        c.get("iat").and_then(|v| v.as_u64()).unwrap_or(0),
        c.get("exp").and_then(|v| v.as_u64()).unwrap_or(0),
    );
    if c.get("iss").and_then(|v| v.as_str()) != Some(EMAIL)
        || c.get("aud").and_then(|v| v.as_str()) != Some(aud.as_str())
        || c.get("scope").and_then(|v| v.as_str()) != Some(SCOPE)
        || exp <= now()
        || iat > now() + 5
        || exp - iat > 3600
    {
        return bad("wrong claims");
    }
    s.jwt_grants += 1;
    issue(s)
}

fn handle(s: &mut State, req: &Request, port: u16, public: &[u8]) -> (u16, String) {
    if req.path == "/token" {
        if req.method != "POST" {
            return (405, "{}".into());
        }
        return token(s, req, port, public);
    }
    if req.path == "/sts/v1/token" {
        return sts(s, req);
    }
    if req.path == format!("/iam/v1/projects/-/serviceAccounts/{EMAIL}:generateAccessToken") {
        return generate_access_token(s, req);
    }
    if req.path == "/subject-token" {
        return match (&s.subject_url_token, req.header("x-subject-key")) {
            (Some(t), Some(SUBJECT_URL_KEY)) if req.method == "GET" => {
                (200, format!(r#"{{"id_token":"{t}","other":"x"}}"#))
            }
            _ => (403, "{}".into()),
        };
    }
    if req.path == "/" {
        return (404, "{}".into());
    }
    let Some(tok) = req
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
    else {
        s.seen.unauthorized += 1;
        return gerr(401, "UNAUTHENTICATED", "missing credentials");
    };
    let federated = s.sts_direct_access && s.sts_tokens.contains_key(tok);
    match s.tokens.get(tok).or(if federated {
        s.sts_tokens.get(tok)
    } else {
        None
    }) {
        Some(exp) if *exp > Instant::now() => {}
        _ => {
            s.seen.unauthorized += 1;
            return gerr(401, "UNAUTHENTICATED", "invalid or expired token");
        }
    }
    let project = req
        .header("x-goog-user-project")
        .unwrap_or_default()
        .to_string();
    s.user_projects.push(project);
    let json_body = || -> Option<simd_json::OwnedValue> {
        let mut b = req.body.clone();
        simd_json::to_owned_value(&mut b).ok()
    };
    let needs_json = req.method == "POST";
    if needs_json && req.header("content-type") != Some("application/json") {
        return gerr(400, "INVALID_ARGUMENT", "wrong content type");
    }
    if !needs_json && !req.body.is_empty() {
        return gerr(400, "INVALID_ARGUMENT", "unexpected body");
    }
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let Some(rest) = path
        .strip_prefix(&format!("/v1/projects/{PROJECT}/secrets"))
        .or_else(|| path.strip_prefix(&format!("/v1/projects/{PROJECT_NUMBER}/secrets")))
    else {
        return gerr(404, "NOT_FOUND", "unknown path");
    };
    let id_ok = |id: &str| {
        !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    match (req.method.as_str(), rest) {
        ("POST", "") => {
            let Some(id) = query.strip_prefix("secretId=").filter(|id| id_ok(id)) else {
                return gerr(400, "INVALID_ARGUMENT", "secretId");
            };
            let Some(b) = json_body() else {
                return gerr(400, "INVALID_ARGUMENT", "body");
            };
            let auto = b.get("replication").and_then(|r| r.get("automatic"));
            if b.as_object().map(|o| o.len()) != Some(1)
                || b.get("replication")
                    .and_then(|r| r.as_object())
                    .map(|o| o.len())
                    != Some(1)
                || !auto
                    .and_then(|a| a.as_object())
                    .is_some_and(|o| o.is_empty())
            {
                return gerr(400, "INVALID_ARGUMENT", "replication must be automatic");
            }
            if s.secrets.contains_key(id) {
                return gerr(409, "ALREADY_EXISTS", "Secret already exists");
            }
            s.secrets.insert(id.to_string(), Vec::new());
            let fail = s.fail_after_store.iter().position(|f| *f == "create");
            if let Some(i) = fail {
                s.fail_after_store.remove(i);
                return gerr(503, "UNAVAILABLE", "The service is currently unavailable.");
            }
            (
                200,
                format!(
                    r#"{{"name":"projects/{PROJECT_NUMBER}/secrets/{id}","replication":{{"automatic":{{}}}},"createTime":"2026-01-01T00:00:00Z"}}"#
                ),
            )
        }
        ("GET", "") => {
            let start: usize = match query {
                "" => 0,
                q => match q.strip_prefix("pageToken=").and_then(|t| t.parse().ok()) {
                    Some(n) => n,
                    None => return gerr(400, "INVALID_ARGUMENT", "query"),
                },
            };
            let ids: Vec<&String> = s.secrets.keys().collect();
            let page: Vec<String> = ids
                .iter()
                .skip(start)
                .take(PAGE)
                .map(|id| format!(r#"{{"name":"projects/{PROJECT_NUMBER}/secrets/{id}"}}"#))
                .collect();
            let next = if start + PAGE < ids.len() {
                format!(r#","nextPageToken":"{}""#, start + PAGE)
            } else {
                String::new()
            };
            (
                200,
                format!(
                    r#"{{"secrets":[{}]{next},"totalSize":{}}}"#,
                    page.join(","),
                    ids.len()
                ),
            )
        }
        (method, rest) => {
            let rest = rest.strip_prefix('/').unwrap_or("");
            if let Some(id) = rest.strip_suffix(":addVersion") {
                if method != "POST" || !query.is_empty() {
                    return gerr(405, "INVALID_ARGUMENT", "method");
                }
                let data = json_body().and_then(|b| {
                    let ok = b.as_object().map(|o| o.len()) == Some(1)
                        && b.get("payload")
                            .and_then(|p| p.as_object())
                            .map(|o| o.len())
                            == Some(1);
                    let d = b.get("payload")?.get("data")?.as_str()?.to_string();
                    ok.then_some(d)
                });
                let Some(data) =
                    data.and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
                else {
                    return gerr(400, "INVALID_ARGUMENT", "payload.data");
                };
                let race = s.race_version.take();
                let fail = s.fail_after_store.iter().position(|f| *f == "add");
                let fail = match fail {
                    Some(i) => {
                        s.fail_after_store.remove(i);
                        true
                    }
                    None => false,
                };
                let Some(versions) = s.secrets.get_mut(id) else {
                    return gerr(404, "NOT_FOUND", "no such secret");
                };
                versions.extend(race);
                versions.push(data);
                let n = versions.len();
                if fail {
                    return gerr(503, "UNAVAILABLE", "The service is currently unavailable.");
                }
                return (
                    200,
                    format!(
                        r#"{{"name":"projects/{PROJECT_NUMBER}/secrets/{id}/versions/{n}","state":"ENABLED"}}"#
                    ),
                );
            }
            if let Some(id) = rest.strip_suffix("/versions") {
                return list_versions(s, id, method, query);
            }
            if let Some((id, version)) = rest.split_once("/versions/") {
                if let Some(v) = version.strip_suffix(":destroy") {
                    if method != "POST" || req.body != b"{}" || !query.is_empty() {
                        return gerr(400, "INVALID_ARGUMENT", "destroy");
                    }
                    let n: usize = v.parse().unwrap_or(0);
                    return match s
                        .secrets
                        .get_mut(id)
                        .and_then(|vs| vs.get_mut(n.wrapping_sub(1)))
                    {
                        Some(data) => {
                            data.clear();
                            s.destroyed.push(format!("{id}/versions/{n}"));
                            (
                                200,
                                format!(
                                    r#"{{"name":"projects/{PROJECT_NUMBER}/secrets/{id}/versions/{n}","state":"DESTROYED"}}"#
                                ),
                            )
                        }
                        None => gerr(404, "NOT_FOUND", "Secret Version not found"),
                    };
                }
                let Some(v) = version.strip_suffix(":access") else {
                    return gerr(404, "NOT_FOUND", "unknown path");
                };
                if method != "GET" || !query.is_empty() {
                    return gerr(405, "INVALID_ARGUMENT", "method");
                }
                // `latest` is the most recently created version, whatever its state.
                let n = match v {
                    "latest" => match s.secrets.get(id).map(Vec::len) {
                        Some(n) if n >= 1 => n,
                        _ => return gerr(404, "NOT_FOUND", "Secret Version not found"),
                    },
                    v => match v.parse::<usize>().ok().filter(|n| *n >= 1) {
                        Some(n) => n,
                        None => return gerr(400, "INVALID_ARGUMENT", "version"),
                    },
                };
                let Some(data) = s.secrets.get(id).and_then(|vs| vs.get(n - 1)) else {
                    return gerr(404, "NOT_FOUND", "Secret Version not found");
                };
                if s.destroyed.contains(&format!("{id}/versions/{n}")) {
                    return gerr(
                        400,
                        "FAILED_PRECONDITION",
                        &format!("Secret Version [projects/{PROJECT_NUMBER}/secrets/{id}/versions/{n}] is in DESTROYED state."),
                    );
                }
                let d = if s.url_safe_payloads {
                    base64::engine::general_purpose::URL_SAFE.encode(data)
                } else {
                    base64::engine::general_purpose::STANDARD.encode(data)
                };
                return (
                    200,
                    format!(
                        r#"{{"name":"projects/{PROJECT_NUMBER}/secrets/{id}/versions/{n}","payload":{{"data":"{d}"}}}}"#
                    ),
                );
            }
            if method != "DELETE" || !id_ok(rest) || !query.is_empty() {
                return gerr(405, "INVALID_ARGUMENT", "method or path");
            }
            match s.secrets.remove(rest) {
                Some(_) => (200, "{}".into()),
                None => gerr(404, "NOT_FOUND", "Secret not found"),
            }
        }
    }
}

/// `GET /v1/<secret>/versions?pageSize=<n>[&pageToken=<t>]`: the versions without their data,
/// newest first, with their state, paged.
fn list_versions(s: &State, id: &str, method: &str, query: &str) -> (u16, String) {
    if method != "GET" {
        return gerr(405, "INVALID_ARGUMENT", "method");
    }
    let mut size = 0usize;
    let mut start = 0usize;
    for field in query.split('&').filter(|f| !f.is_empty()) {
        match field.split_once('=') {
            Some(("pageSize", n)) => match n.parse() {
                Ok(n) => size = n,
                Err(_) => return gerr(400, "INVALID_ARGUMENT", "pageSize"),
            },
            Some(("pageToken", t)) => match t.parse() {
                Ok(t) => start = t,
                Err(_) => return gerr(400, "INVALID_ARGUMENT", "pageToken"),
            },
            _ => return gerr(400, "INVALID_ARGUMENT", "query"),
        }
    }
    // Capped at 25000; 0 lets the server choose. This one chooses small pages, so paging
    // is exercised.
    let size = match size {
        0 => PAGE,
        n => n.min(25_000).min(VERSIONS_PAGE),
    };
    let Some(versions) = s.secrets.get(id) else {
        return gerr(404, "NOT_FOUND", "Secret not found");
    };
    let all: Vec<usize> = (1..=versions.len()).rev().collect();
    let page: Vec<String> = all
        .iter()
        .skip(start)
        .take(size)
        .map(|n| {
            let state = if s.destroyed.contains(&format!("{id}/versions/{n}")) {
                "DESTROYED"
            } else {
                "ENABLED"
            };
            format!(
                r#"{{"name":"projects/{PROJECT_NUMBER}/secrets/{id}/versions/{n}","createTime":"2026-01-01T00:00:00Z","state":"{state}"}}"#
            )
        })
        .collect();
    let next = if start + size < all.len() {
        format!(r#","nextPageToken":"{}""#, start + size)
    } else {
        String::new()
    };
    (
        200,
        format!(
            r#"{{"versions":[{}]{next},"totalSize":{}}}"#,
            page.join(","),
            all.len()
        ),
    )
}

/// A form's fields; `None` when a field repeats.
fn form_fields(body: &[u8]) -> Option<HashMap<String, String>> {
    let form = String::from_utf8_lossy(body).to_string();
    let mut fields = HashMap::new();
    for pair in form.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if fields.insert(k.to_string(), url_decode(v)).is_some() {
            return None;
        }
    }
    Some(fields)
}

/// Google's STS (`POST /v1/token`, RFC 8693 token exchange), strict about every field.
fn sts(s: &mut State, req: &Request) -> (u16, String) {
    let bad = |why: &str| {
        (
            400,
            format!(r#"{{"error":"invalid_grant","error_description":"{why}"}}"#),
        )
    };
    if req.method != "POST"
        || req.header("content-type") != Some("application/x-www-form-urlencoded")
    {
        return bad("wrong method or content type");
    }
    let Some(f) = form_fields(&req.body) else {
        return bad("duplicate field");
    };
    if let Some((id, secret)) = &s.sts_client {
        let want = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        if req.header("authorization") != Some(&format!("Basic {want}")) {
            return (
                401,
                r#"{"error":"invalid_client","error_description":"client authentication failed"}"#
                    .into(),
            );
        }
    }
    let field = |k: &str| f.get(k).map(String::as_str);
    let subject = match (&s.subject_file, &s.subject_url_token) {
        (Some(file), _) => std::fs::read_to_string(file)
            .ok()
            .map(|t| t.trim().to_string()),
        (None, t) => t.clone(),
    };
    if f.len() != 6
        || field("grant_type") != Some("urn:ietf:params:oauth:grant-type:token-exchange")
        || field("audience") != Some(AUDIENCE)
        || field("requested_token_type") != Some("urn:ietf:params:oauth:token-type:access_token")
        || field("subject_token_type") != Some("urn:ietf:params:oauth:token-type:jwt")
        || field("scope") != Some(s.sts_scope.as_str())
    {
        return bad("The request is missing or has a wrong parameter.");
    }
    if subject.is_none() || field("subject_token") != subject.as_deref() {
        return bad("The incoming token has expired or is invalid.");
    }
    s.sts_grants += 1;
    s.seen.issued += 1;
    let t = format!("ya29.sts-federated-{}", s.seen.issued);
    s.sts_tokens.insert(
        t.clone(),
        Instant::now() + Duration::from_secs(s.lifetime_secs),
    );
    (
        200,
        format!(
            r#"{{"access_token":"{t}","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":{}}}"#,
            s.lifetime_secs
        ),
    )
}

/// IAM credentials `generateAccessToken` for the service account, paid with a federated token.
fn generate_access_token(s: &mut State, req: &Request) -> (u16, String) {
    let valid = req
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .and_then(|t| s.sts_tokens.get(t))
        .is_some_and(|exp| *exp > Instant::now());
    if !valid {
        s.seen.unauthorized += 1;
        return gerr(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        );
    }
    let body = req.json();
    let ok = req.method == "POST"
        && req.header("content-type") == Some("application/json")
        && body.as_ref().is_some_and(|b| {
            b.as_object().map(|o| o.len()) == Some(2)
                && b.get("lifetime").and_then(|l| l.as_str()) == Some("3600s")
                && b.get("scope")
                    .and_then(|l| l.as_array())
                    .is_some_and(|a| a.len() == 1 && a[0].as_str() == Some(SCOPE))
        });
    if !ok {
        return gerr(400, "INVALID_ARGUMENT", "lifetime or scope");
    }
    s.iam_grants += 1;
    // issue() answers `{"access_token":"<token>",…}`.
    let (_, answer) = issue(s);
    let token = answer.split('"').nth(3).unwrap().to_string();
    let expire = kes::time::Timestamp::from_unix((now() + s.lifetime_secs) as i64, 0).to_rfc3339();
    (
        200,
        format!(r#"{{"accessToken":"{token}","expireTime":"{expire}"}}"#),
    )
}

fn write_config(
    dir: &std::path::Path,
    tls: &TlsFiles,
    admin: &str,
    port: u16,
) -> std::path::PathBuf {
    let yaml = format!(
        "admin:\n  identity: {admin}\ntls:\n  key: {}\n  cert: {}\ncache:\n  expiry:\n    any: 5m\n    unused: 5m\nkeystore:\n  gcp:\n    secretmanager:\n      project_id: ${{KES_TEST_GCP_PROJECT}}\n      endpoint: http://127.0.0.1:{port}\n      token_uri: http://127.0.0.1:{port}/token\n      credentials:\n        client_email: {EMAIL}\n        client_id: \"1234567890\"\n        private_key_id: key-id-1\n        private_key: ${{KES_TEST_GCP_KEY}}\n",
        tls.key.display(),
        tls.cert.display(),
    );
    let path = dir.join("gcp.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn kes_on(path: &std::path::Path, key: &str) -> BinServer {
    let key = key.to_string();
    let home = tempfile::tempdir().unwrap();
    bin_server_with(&["--config", path.to_str().unwrap()], move |cmd| {
        clean_cloud_env(cmd, home.path());
        cmd.env("KES_TEST_GCP_KEY", key)
            .env("KES_TEST_GCP_PROJECT", PROJECT);
    })
}

/// A config whose GCP block has no `credentials` (application default credentials or the
/// metadata server); `token_uri` only when given.
fn write_config_without_credentials(
    dir: &std::path::Path,
    tls: &TlsFiles,
    admin: &str,
    port: u16,
    token_uri: Option<&str>,
) -> std::path::PathBuf {
    let token_uri = token_uri
        .map(|t| format!("      token_uri: {t}\n"))
        .unwrap_or_default();
    let yaml = format!(
        "admin:\n  identity: {admin}\ntls:\n  key: {}\n  cert: {}\ncache:\n  expiry:\n    any: 5m\n    unused: 5m\nkeystore:\n  gcp:\n    secretmanager:\n      project_id: {PROJECT}\n      endpoint: http://127.0.0.1:{port}\n{token_uri}",
        tls.key.display(),
        tls.cert.display(),
    );
    let path = dir.join("gcp-adc.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// `kes server --config path` with only the cloud variables in `vars` (and `HOME` = `home`).
fn kes_with_env(
    path: &std::path::Path,
    home: &std::path::Path,
    vars: &[(&str, String)],
) -> BinServer {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let home = home.to_path_buf();
    bin_server_with(&["--config", path.to_str().unwrap()], move |cmd| {
        clean_cloud_env(cmd, &home);
        for (k, v) in vars {
            cmd.env(k, v);
        }
    })
}

/// The stand-in's secrets, as [`Backend`]: a record is the payload of version 1, the only
/// version, of the secret named after the key (upstream's layout).
struct SecretManager(Arc<Mutex<State>>);

impl Backend for SecretManager {
    fn record(&self, name: &str) -> Option<String> {
        let s = self.0.lock().unwrap();
        let versions = s.secrets.get(name)?;
        assert_eq!(versions.len(), 1, "'{name}': one version");
        Some(String::from_utf8(versions[0].clone()).unwrap())
    }

    fn plant(&self, name: &str, record: &str) {
        self.0
            .lock()
            .unwrap()
            .secrets
            .insert(name.into(), vec![record.as_bytes().to_vec()]);
    }
}

/// The stand-in's token counts, for [`renewed_before_expiry`].
fn tokens(g: &StandIn) -> impl Fn() -> Tokens + '_ {
    || g.state.lock().unwrap().seen.clone()
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn key_body(pem: &str) -> &str {
    pem.lines().nth(3).unwrap()
}

#[test]
fn keys_live_in_the_stand_in_as_upstream_stores_them_and_tokens_are_renewed() {
    let g = start_stand_in(3);
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &tls, &admin, g.port);
    let node = kes_on(&path, KEY);
    let endpoint = format!("https://{}", node.addr);
    // the stand-in pages at 10
    let lifecycle = Lifecycle::one_node(&endpoint, &api_key, "gcp-key", 25);
    keystore_lifecycle(&lifecycle, &SecretManager(g.state.clone()));

    // The 3 s token is renewed before it expires: no call is ever refused as unauthorized.
    renewed_before_expiry(&endpoint, &api_key, "after-renewal", 3, tokens(&g));

    outage_behaviour(&endpoint, &api_key, "upstream-key", "page-000", || drop(g));
    let log = node.stderr_text();
    assert!(
        !log.contains(key_body(KEY)),
        "the private key leaked into the log"
    );
    assert!(!log.contains("ya29."), "a token leaked into the log");
}

#[test]
fn a_wrong_key_is_a_clear_error() {
    let g = start_stand_in(3600);
    let config = kes::config::GcpConfig {
        endpoint: format!("http://127.0.0.1:{}", g.port),
        project_id: PROJECT.into(),
        scopes: vec![SCOPE.into()],
        token_uri: format!("http://127.0.0.1:{}/token", g.port),
        credentials: Some(kes::config::GcpCredentials {
            client_email: EMAIL.into(),
            client_id: "1".into(),
            private_key_id: "key-id-1".into(),
            private_key: OTHER_KEY.into(),
        }),
    };
    use kes::keystore::KeyStore;
    let wrong = kes::keystore::gcp::GcpStore::new(config.clone(), &no_env).unwrap();
    let err = wrong.create("k", b"v").unwrap_err().to_string();
    assert!(
        err.contains("status 400") && err.contains("invalid_grant"),
        "{err}"
    );
    assert!(!err.contains(key_body(OTHER_KEY)), "{err}");
    // A wrong scope is refused too (the claims are checked).
    let mut scoped = config.clone();
    scoped.credentials.as_mut().unwrap().private_key = KEY.into();
    scoped.scopes = vec!["https://www.googleapis.com/auth/other".into()];
    let err = kes::keystore::gcp::GcpStore::new(scoped, &no_env)
        .unwrap()
        .get("k")
        .unwrap_err();
    assert!(err.to_string().contains("invalid_grant"), "{err}");
    // The right key works through the same path; names GCP cannot hold are refused early.
    let mut good = config.clone();
    good.credentials.as_mut().unwrap().private_key = KEY.into();
    let good = kes::keystore::gcp::GcpStore::new(good, &no_env).unwrap();
    good.create("lib-key", b"v").unwrap();
    assert!(matches!(
        good.create("lib-key", b"w"),
        Err(kes::keystore::StoreError::AlreadyExists)
    ));
    assert_eq!(good.get("lib-key").unwrap().expose(), b"v");
    assert!(matches!(
        good.create("a/b", b"v"),
        Err(kes::keystore::StoreError::InvalidName)
    ));
    good.delete("lib-key").unwrap();
    assert!(matches!(
        good.get("lib-key"),
        Err(kes::keystore::StoreError::NotFound)
    ));
    // Not a key at all: start-up error, without the value.
    let mut broken = config;
    broken.credentials.as_mut().unwrap().private_key = "not-a-pem-SECRET".into();
    let err = kes::keystore::gcp::GcpStore::new(broken, &no_env)
        .err()
        .unwrap();
    assert!(
        err.contains("private_key: not a PKCS#8 PEM") && !err.contains("SECRET"),
        "{err}"
    );

    // Through kes: the wrong key answers 502.
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &tls, &admin, g.port);
    let bad = kes_on(&path, OTHER_KEY);
    let mut c = client_for(&format!("https://{}", bad.addr), &api_key);
    assert_error(
        &c.request("POST", "/v1/key/create/x", None, &[]).unwrap(),
        502,
        "failed to create key",
    );
    assert_error(
        &c.request("POST", "/v1/key/generate/x", None, &[]).unwrap(),
        502,
        "failed to read key",
    );
    assert!(!bad.stderr_text().contains(key_body(OTHER_KEY)));
}

#[test]
fn the_documented_gcp_example_loads() {
    let (_yaml, config, _dir) =
        documented_keystore_example("gcp", &[("GCP_PRIVATE_KEY", KEY)], &[]);
    let kes::config::KeystoreConfig::Gcp(gcp) = config.keystore else {
        panic!("not the gcp keystore");
    };
    assert_eq!(gcp.project_id, "my-project");
    assert_eq!(gcp.endpoint, "secretmanager.googleapis.com:443");
    assert_eq!(gcp.scopes, vec![SCOPE.to_string()]);
    assert_eq!(gcp.token_uri, "https://oauth2.googleapis.com/token");
    // The example's key is usable (the store is built; nothing is contacted).
    kes::keystore::gcp::GcpStore::new(*gcp, &no_env).unwrap();
}

/// A service-account key file as the GCP console downloads it.
fn service_account_file(dir: &std::path::Path, token_uri: &str) -> std::path::PathBuf {
    let mut key = Vec::new();
    kes::api::json::write_string(&mut key, KEY);
    let json = format!(
        r#"{{"type":"service_account","project_id":"{PROJECT}","private_key_id":"key-id-1","private_key":{},"client_email":"{EMAIL}","client_id":"1234567890","auth_uri":"https://accounts.google.com/o/oauth2/auth","token_uri":"{token_uri}"}}"#,
        String::from_utf8(key).unwrap()
    );
    let path = dir.join("service-account.json");
    std::fs::write(&path, json).unwrap();
    path
}

#[test]
fn google_application_credentials_names_a_service_account_file() {
    let g = start_stand_in(2);
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    // No token_uri in the block: the file's token_uri is the one used.
    let path = write_config_without_credentials(dir.path(), &tls, &admin, g.port, None);
    let file = service_account_file(dir.path(), &format!("http://127.0.0.1:{}/token", g.port));
    let node = kes_with_env(
        &path,
        dir.path(),
        &[("GOOGLE_APPLICATION_CREDENTIALS", file.display().to_string())],
    );
    let endpoint = format!("https://{}", node.addr);
    let backend = SecretManager(g.state.clone());
    used_and_renewed(&endpoint, &api_key, "adc-sa-key", &backend, 2, tokens(&g));
    {
        let s = g.state.lock().unwrap();
        assert!(s.jwt_grants >= 2, "token not renewed: {}", s.jwt_grants);
        assert_eq!(s.refresh_grants + s.metadata_grants, 0);
    }
    let log = node.stderr_text();
    assert!(
        log.contains(&format!(
            "kes: keystore credentials: service account {EMAIL} from GOOGLE_APPLICATION_CREDENTIALS '{}'",
            file.display()
        )),
        "{log}"
    );
    assert!(
        !log.contains(key_body(KEY)),
        "the private key leaked into the log"
    );
    assert!(!log.contains("ya29."), "a token leaked into the log");
}

#[test]
fn gclouds_authorized_user_file_uses_the_refresh_token_grant() {
    let g = start_stand_in(2);
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let token_uri = format!("http://127.0.0.1:{}/token", g.port);
    let path = write_config_without_credentials(dir.path(), &tls, &admin, g.port, Some(&token_uri));
    // `gcloud auth application-default login` writes this file (no token_uri in it: the
    // block's is used), found through HOME without any variable.
    let home = tempfile::tempdir().unwrap();
    let gcloud = home.path().join(".config/gcloud");
    std::fs::create_dir_all(&gcloud).unwrap();
    let file = |refresh: &str| {
        format!(
            r#"{{"client_id":"{USER_CLIENT_ID}","client_secret":"{USER_CLIENT_SECRET}","quota_project_id":"{PROJECT}","refresh_token":"{refresh}","type":"authorized_user"}}"#
        )
    };
    let adc = gcloud.join("application_default_credentials.json");
    std::fs::write(&adc, file(USER_REFRESH_TOKEN)).unwrap();
    let node = kes_with_env(&path, home.path(), &[]);
    let endpoint = format!("https://{}", node.addr);
    let backend = SecretManager(g.state.clone());
    used_and_renewed(&endpoint, &api_key, "adc-user-key", &backend, 2, tokens(&g));
    {
        let s = g.state.lock().unwrap();
        assert!(
            s.refresh_grants >= 2,
            "token not renewed: {}",
            s.refresh_grants
        );
        assert_eq!(s.jwt_grants + s.metadata_grants, 0);
    }
    let log = node.stderr_text();
    assert!(
        log.contains(&format!(
            "keystore credentials: authorized user (client {USER_CLIENT_ID}) from gcloud's application default credentials '{}'",
            adc.display()
        )),
        "{log}"
    );
    for secret in [USER_CLIENT_SECRET, USER_REFRESH_TOKEN, "ya29."] {
        assert!(!log.contains(secret), "{secret} leaked into the log");
    }
    drop(node);

    // A revoked refresh token: 502 to the client, the cause in the log, no secret anywhere.
    let revoked = "1//0gREVOKED-refresh-token";
    std::fs::write(&adc, file(revoked)).unwrap();
    let node = kes_with_env(&path, home.path(), &[]);
    let mut c = client_for(&format!("https://{}", node.addr), &api_key);
    assert_error(
        &c.request("POST", "/v1/key/create/revoked", None, &[])
            .unwrap(),
        502,
        "failed to create key",
    );
    let expected = format!(
        "keystore: create key: keystore I/O error: GCP credentials (gcloud's application default credentials '{}'): token request to {token_uri} failed with status 400: invalid_grant Token has been expired or revoked.",
        adc.display()
    );
    assert!(
        node.wait_stderr(&expected, Duration::from_secs(5)),
        "{}",
        node.stderr_text()
    );
    let log = node.stderr_text();
    for secret in [USER_CLIENT_SECRET, revoked] {
        assert!(!log.contains(secret), "{secret} leaked into the log");
    }
}

#[test]
fn on_gce_and_gke_the_metadata_server_gives_the_tokens() {
    let g = start_stand_in(2);
    // The stand-in is strict: without Metadata-Flavor it refuses, as the real server does.
    let mut raw = TcpStream::connect(("127.0.0.1", g.port)).unwrap();
    write!(
        raw,
        "GET /computeMetadata/v1/instance/service-accounts/default/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    g.state.lock().unwrap().seen.rejected.clear();

    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config_without_credentials(dir.path(), &tls, &admin, g.port, None);
    let host = format!("127.0.0.1:{}", g.port);
    let node = kes_with_env(&path, dir.path(), &[("GCE_METADATA_HOST", host.clone())]);
    let endpoint = format!("https://{}", node.addr);
    let backend = SecretManager(g.state.clone());
    used_and_renewed(&endpoint, &api_key, "gce-key", &backend, 2, tokens(&g));
    {
        let s = g.state.lock().unwrap();
        assert!(
            s.metadata_grants >= 2,
            "token not renewed: {}",
            s.metadata_grants
        );
        assert_eq!(s.jwt_grants + s.refresh_grants, 0);
    }
    let log = node.stderr_text();
    assert!(
        log.contains(&format!(
            "keystore credentials: the GCP metadata server at http://{host}"
        )),
        "{log}"
    );
    assert!(!log.contains("ya29."), "a token leaked into the log");
}

#[test]
fn off_gcp_the_error_names_what_was_tried_and_impostors_are_refused() {
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let g = start_stand_in(60);
    let path = write_config_without_credentials(dir.path(), &tls, &admin, g.port, None);

    // Nothing configured and no metadata server: kes starts (nothing is contacted at start),
    // a call fails fast and the log says what was looked for.
    let closed = free_port();
    let started = Instant::now();
    let node = kes_with_env(
        &path,
        home.path(),
        &[("GCE_METADATA_HOST", format!("127.0.0.1:{closed}"))],
    );
    let mut c = client_for(&format!("https://{}", node.addr), &api_key);
    assert_error(
        &c.request("POST", "/v1/key/create/k", None, &[]).unwrap(),
        502,
        "failed to create key",
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let expected = format!(
        "GCP credentials: keystore.gcp.secretmanager.credentials is not set, GOOGLE_APPLICATION_CREDENTIALS is not set, no file at '{}/.config/gcloud/application_default_credentials.json', and the metadata server at http://127.0.0.1:{closed} did not answer",
        home.path().display()
    );
    assert!(
        node.wait_stderr(&expected, Duration::from_secs(5)),
        "{}",
        node.stderr_text()
    );
    drop(node);

    // Another cloud's metadata server (no Metadata-Flavor: Google in the answer): refused,
    // its token never used.
    g.state.lock().unwrap().impostor = true;
    let node = kes_with_env(
        &path,
        home.path(),
        &[("GCE_METADATA_HOST", format!("127.0.0.1:{}", g.port))],
    );
    let mut c = client_for(&format!("https://{}", node.addr), &api_key);
    assert_error(
        &c.request("POST", "/v1/key/create/k", None, &[]).unwrap(),
        502,
        "failed to create key",
    );
    assert!(
        node.wait_stderr(
            &format!(
                "the server at http://127.0.0.1:{} answered without 'Metadata-Flavor: Google' (status 200): it is not a GCP metadata server",
                g.port
            ),
            Duration::from_secs(5)
        ),
        "{}",
        node.stderr_text()
    );
    {
        let s = g.state.lock().unwrap();
        assert!(s.metadata_grants >= 1 && s.seen.unauthorized == 0 && s.secrets.is_empty());
    }
    assert!(!node.stderr_text().contains("ya29."));
    drop(node);

    // A named credentials file that is missing or of a kind kes cannot use stops kes at
    // start, naming the file.
    let missing = dir.path().join("missing.json");
    let err = kes_start_fails(&path, |cmd| {
        clean_cloud_env(cmd, home.path());
        cmd.env("GOOGLE_APPLICATION_CREDENTIALS", &missing);
    });
    assert!(
        err.contains(&format!(
            "GOOGLE_APPLICATION_CREDENTIALS '{}': cannot open",
            missing.display()
        )),
        "{err}"
    );
    // A credentials type kes cannot use (external_account is served: see below).
    let other = dir.path().join("impersonated.json");
    std::fs::write(
        &other,
        r#"{"type":"impersonated_service_account","service_account_impersonation_url":"https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/x@p.iam.gserviceaccount.com:generateAccessToken","source_credentials":{}}"#,
    )
    .unwrap();
    let err = kes_start_fails(&path, |cmd| {
        clean_cloud_env(cmd, home.path());
        cmd.env("GOOGLE_APPLICATION_CREDENTIALS", &other);
    });
    assert!(
        err.contains("credentials of type 'impersonated_service_account' are not supported"),
        "{err}"
    );
}

#[test]
fn a_create_the_service_stored_before_it_failed_is_no_duplicate() {
    let g = start_stand_in(3600);
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &tls, &admin, g.port);
    let node = kes_on(&path, KEY);
    let endpoint = format!("https://{}", node.addr);
    let mut c = client_for(&endpoint, &api_key);

    // The create of the secret is stored, then answered 503: the retry meets 409, finds the
    // secret without a version and fills it.
    g.state.lock().unwrap().fail_after_store = vec!["create"];
    let backend = SecretManager(g.state.clone());
    create_and_use(&endpoint, &api_key, "stored-then-503", &backend);
    // The add of version 1 is stored, then answered 503: the retry adds version 2, version 1
    // holds exactly our record, so the create succeeded.
    g.state.lock().unwrap().fail_after_store = vec!["add"];
    let r = c
        .request("POST", "/v1/key/create/added-then-503", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    {
        let s = g.state.lock().unwrap();
        let versions = &s.secrets["added-then-503"];
        assert_eq!(versions.len(), 2);
        assert_eq!(versions[0], versions[1]);
        assert!(s.fail_after_store.is_empty());
    }
    let r = c
        .request("POST", "/v1/key/generate/added-then-503", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    // Still "already exists" when version 1 is another key.
    assert_error(
        &c.request("POST", "/v1/key/create/stored-then-503", None, &[])
            .unwrap(),
        400,
        "key already exists",
    );

    // Through the library: another creator's record lands as version 1 while ours is being
    // added: ours is destroyed and the create reports "already exists"; theirs stands.
    let store = kes::keystore::gcp::GcpStore::new(
        kes::config::GcpConfig {
            endpoint: format!("http://127.0.0.1:{}", g.port),
            project_id: PROJECT.into(),
            scopes: vec![SCOPE.into()],
            token_uri: format!("http://127.0.0.1:{}/token", g.port),
            credentials: Some(kes::config::GcpCredentials {
                client_email: EMAIL.into(),
                client_id: "1".into(),
                private_key_id: "key-id-1".into(),
                private_key: KEY.into(),
            }),
        },
        &no_env,
    )
    .unwrap();
    use kes::keystore::KeyStore;
    g.state
        .lock()
        .unwrap()
        .secrets
        .insert("raced".into(), Vec::new());
    g.state.lock().unwrap().race_version = Some(b"their-record".to_vec());
    assert!(matches!(
        store.create("raced", b"our-record"),
        Err(kes::keystore::StoreError::AlreadyExists)
    ));
    assert_eq!(store.get("raced").unwrap().expose(), b"their-record");
    assert_eq!(g.state.lock().unwrap().destroyed, ["raced/versions/2"]);
    // An empty secret (a create that failed half way) is filled.
    g.state
        .lock()
        .unwrap()
        .secrets
        .insert("empty".into(), Vec::new());
    store.create("empty", b"record").unwrap();
    assert_eq!(store.get("empty").unwrap().expose(), b"record");
    let rejected = g.state.lock().unwrap().seen.rejected.clone();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(
        rejected.iter().all(|r| r.contains("-> 503")),
        "{rejected:?}"
    );
}

/// An `external_account` file (workload identity federation) pointing at the stand-in's STS
/// and IAM credentials endpoints; `source` is its `credential_source` JSON, `extra` more
/// members (with a leading comma).
fn external_account_file(
    dir: &std::path::Path,
    port: u16,
    source: &str,
    extra: &str,
) -> std::path::PathBuf {
    let json = format!(
        r#"{{"type":"external_account","audience":"{AUDIENCE}","subject_token_type":"urn:ietf:params:oauth:token-type:jwt","token_url":"http://127.0.0.1:{port}/sts/v1/token","credential_source":{source}{extra}}}"#
    );
    let path = dir.join("external-account.json");
    std::fs::write(&path, json).unwrap();
    path
}

fn impersonation(port: u16) -> String {
    format!(
        r#","service_account_impersonation_url":"http://127.0.0.1:{port}/iam/v1/projects/-/serviceAccounts/{EMAIL}:generateAccessToken""#
    )
}

/// `kes server --config path --check` with only `vars` from the cloud variables.
fn kes_check(
    path: &std::path::Path,
    home: &std::path::Path,
    vars: &[(&str, String)],
) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kes"));
    cmd.args(["server", "--config", path.to_str().unwrap(), "--check"]);
    clean_cloud_env(&mut cmd, home);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Issue 21 item 7: the MinIO Operator's GCP option mounts an `external_account` file; kes
/// exchanges the (rotating) subject token file at the STS, buys the service account's token
/// with it, and bills the file's quota project.
#[test]
fn an_external_account_file_exchanges_its_subject_token_and_impersonates() {
    let g = start_stand_in(2);
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let subject = dir.path().join("ksa-token");
    std::fs::write(&subject, "eyJhbGciOi.subject-one.sig\n").unwrap();
    g.state.lock().unwrap().subject_file = Some(subject.clone());
    let source = format!(r#"{{"file":"{}"}}"#, subject.display());
    let extra = format!(
        r#"{}{}"#,
        impersonation(g.port),
        r#","quota_project_id":"kes-billing""#
    );
    let file = external_account_file(dir.path(), g.port, &source, &extra);
    let path = write_config_without_credentials(dir.path(), &tls, &admin, g.port, None);
    let vars = [("GOOGLE_APPLICATION_CREDENTIALS", file.display().to_string())];
    let (ok, out) = kes_check(&path, dir.path(), &vars);
    assert!(ok, "{out}");
    let node = kes_with_env(&path, dir.path(), &vars);
    let endpoint = format!("https://{}", node.addr);
    let backend = SecretManager(g.state.clone());
    used_and_renewed(&endpoint, &api_key, "wif-key", &backend, 2, tokens(&g));
    // Kubernetes rotates the token file: the next exchange sends what it holds now.
    std::fs::write(&subject, "eyJhbGciOi.subject-two.sig").unwrap();
    let grants = g.state.lock().unwrap().sts_grants;
    std::thread::sleep(Duration::from_millis(2100));
    let mut c = client_for(&endpoint, &api_key);
    // A key kes has not cached: the call needs a token.
    let r = c
        .request("POST", "/v1/key/create/wif-rotated", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    {
        let s = g.state.lock().unwrap();
        assert!(s.sts_grants > grants, "no exchange with the rotated token");
        assert!(s.iam_grants >= 2, "{}", s.iam_grants);
        assert_eq!(s.jwt_grants + s.refresh_grants + s.metadata_grants, 0);
        assert!(!s.user_projects.is_empty());
        assert!(
            s.user_projects.iter().all(|p| p == "kes-billing"),
            "{:?}",
            s.user_projects
        );
    }
    let log = node.stderr_text();
    assert!(
        log.contains(&format!(
            "kes: keystore credentials: external account {AUDIENCE} (subject token file '{}') impersonating {EMAIL} from GOOGLE_APPLICATION_CREDENTIALS",
            subject.display()
        )),
        "{log}"
    );
    assert!(!log.contains("subject-one") && !log.contains("subject-two"));
    assert!(!log.contains("ya29."), "a token leaked into the log");
}

/// A URL-sourced subject token in a JSON answer, fetched with the file's headers, exchanged
/// with the file's OAuth client as HTTP Basic, and used directly (no impersonation: the pool
/// has access to the secrets itself).
#[test]
fn a_url_sourced_subject_token_is_exchanged_for_direct_access() {
    use kes::keystore::KeyStore;
    let g = start_stand_in(3600);
    {
        let mut s = g.state.lock().unwrap();
        s.subject_url_token = Some("eyJ.url-subject.sig".into());
        s.sts_direct_access = true;
        s.sts_client = Some(("sts-client".into(), "STS-CLIENT-SECRET".into()));
    }
    let dir = tempfile::tempdir().unwrap();
    let source = format!(
        r#"{{"url":"http://127.0.0.1:{}/subject-token","headers":{{"X-Subject-Key":"{SUBJECT_URL_KEY}"}},"format":{{"type":"json","subject_token_field_name":"id_token"}}}}"#,
        g.port
    );
    let client = r#","client_id":"sts-client","client_secret":"STS-CLIENT-SECRET""#;
    let file = external_account_file(dir.path(), g.port, &source, client)
        .display()
        .to_string();
    let config = kes::config::GcpConfig {
        endpoint: format!("http://127.0.0.1:{}", g.port),
        project_id: PROJECT.into(),
        scopes: vec![SCOPE.into()],
        token_uri: format!("http://127.0.0.1:{}/token", g.port),
        credentials: None,
    };
    let env = move |name: &str| (name == "GOOGLE_APPLICATION_CREDENTIALS").then(|| file.clone());
    let store = kes::keystore::gcp::GcpStore::new(config.clone(), &env).unwrap();
    store.create("url-key", b"record").unwrap();
    assert_eq!(store.get("url-key").unwrap().expose(), b"record");
    {
        let s = g.state.lock().unwrap();
        assert_eq!((s.sts_grants, s.iam_grants), (1, 0));
        assert!(s.user_projects.iter().all(String::is_empty));
    }
    // A subject token the STS refuses is a clear error, without the token.
    g.state.lock().unwrap().subject_url_token = Some("eyJ.other".into());
    g.state.lock().unwrap().sts_tokens.clear();
    let fresh = kes::keystore::gcp::GcpStore::new(config, &env).unwrap();
    g.state.lock().unwrap().subject_url_token = None;
    let e = fresh.get("url-key").unwrap_err().to_string();
    assert!(
        e.contains("refused the subject token request: status 403"),
        "{e}"
    );
}

/// Subject tokens kes cannot get (executable, AWS, certificate) stop `--check` and the
/// start with a clear message; a good file passes `--check`.
#[test]
fn external_accounts_kes_cannot_serve_fail_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_files();
    let (_, admin) = new_api_key();
    let path = write_config_without_credentials(dir.path(), &tls, &admin, 1, None);
    for (source, want) in [
        (
            r#"{"executable":{"command":"/usr/bin/token","timeout_millis":5000}}"#,
            "executable-sourced subject tokens (credential_source.executable) are not supported",
        ),
        (
            r#"{"environment_id":"aws1","region_url":"http://169.254.169.254/latest/meta-data/placement/availability-zone","regional_cred_verification_url":"https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"}"#,
            "AWS-sourced subject tokens (credential_source.environment_id) are not supported",
        ),
        (
            r#"{"file":"/t","url":"http://127.0.0.1:1/t"}"#,
            "credential_source needs exactly one of 'file' and 'url'",
        ),
    ] {
        let file = external_account_file(dir.path(), 1, source, "");
        let vars = [("GOOGLE_APPLICATION_CREDENTIALS", file.display().to_string())];
        let (ok, out) = kes_check(&path, dir.path(), &vars);
        assert!(!ok, "{out}");
        assert!(
            out.contains(&format!(
                "GOOGLE_APPLICATION_CREDENTIALS '{}'",
                file.display()
            )) && out.contains(want),
            "{out}"
        );
        let err = kes_start_fails(&path, |cmd| {
            clean_cloud_env(cmd, dir.path());
            cmd.env("GOOGLE_APPLICATION_CREDENTIALS", file.display().to_string());
        });
        assert!(err.contains(want), "{err}");
    }
}

/// Google's JSON may carry bytes in either base64 alphabet; a file's quota project is billed
/// (`x-goog-user-project`); a destroyed version 1 is an error, not a missing key.
#[test]
fn url_safe_payloads_quota_projects_and_destroyed_versions() {
    use kes::keystore::{KeyStore, StoreError};
    let g = start_stand_in(3600);
    let dir = tempfile::tempdir().unwrap();
    let sa = service_account_file(dir.path(), &format!("http://127.0.0.1:{}/token", g.port));
    let json = std::fs::read_to_string(&sa)
        .unwrap()
        .replace(r#""type":"#, r#""quota_project_id":"kes-billing","type":"#);
    std::fs::write(&sa, json).unwrap();
    let file = sa.display().to_string();
    let env = move |name: &str| (name == "GOOGLE_APPLICATION_CREDENTIALS").then(|| file.clone());
    let store = kes::keystore::gcp::GcpStore::new(
        kes::config::GcpConfig {
            endpoint: format!("http://127.0.0.1:{}", g.port),
            project_id: PROJECT.into(),
            scopes: vec![SCOPE.into()],
            token_uri: format!("http://127.0.0.1:{}/token", g.port),
            credentials: None,
        },
        &env,
    )
    .unwrap();
    // "??>" is "Pz8+" in the standard alphabet and "Pz8-" in the URL-safe one.
    let value = b"??>??>record";
    g.state.lock().unwrap().url_safe_payloads = true;
    g.state
        .lock()
        .unwrap()
        .secrets
        .insert("url-safe".into(), vec![value.to_vec()]);
    assert_eq!(store.get("url-safe").unwrap().expose(), value);
    assert!(g
        .state
        .lock()
        .unwrap()
        .user_projects
        .iter()
        .all(|p| p == "kes-billing"));

    g.state
        .lock()
        .unwrap()
        .destroyed
        .push("url-safe/versions/1".into());
    let e = store.get("url-safe").unwrap_err();
    assert!(!matches!(e, StoreError::NotFound), "{e}");
    assert!(e.to_string().contains("FAILED_PRECONDITION"), "{e}");
    // A create of that name does not overwrite it.
    assert!(store.create("url-safe", b"new").is_err());
    assert_eq!(g.state.lock().unwrap().secrets["url-safe"].len(), 1);
}

/// Records upstream KES wrote (the fs fixture), stored as upstream's GCP code stores them
/// (version 1 of a secret named after the key, payload = the record's bytes), are served:
/// upstream's ciphertexts decrypt through kes.
#[test]
fn records_upstream_wrote_are_served() {
    let g = start_stand_in(3600);
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &tls, &admin, g.port);
    let node = kes_on(&path, KEY);
    standin::upstream::upstream_records_are_served(
        &node,
        &api_key,
        &SecretManager(g.state.clone()),
    );
}

/// A store of the library on the stand-in, with the block's service account.
fn library_store(port: u16) -> kes::keystore::gcp::GcpStore {
    kes::keystore::gcp::GcpStore::new(
        kes::config::GcpConfig {
            endpoint: format!("http://127.0.0.1:{port}"),
            project_id: PROJECT.into(),
            scopes: vec![SCOPE.into()],
            token_uri: format!("http://127.0.0.1:{port}/token"),
            credentials: Some(kes::config::GcpCredentials {
                client_email: EMAIL.into(),
                client_id: "1".into(),
                private_key_id: "key-id-1".into(),
                private_key: KEY.into(),
            }),
        },
        &no_env,
    )
    .unwrap()
}

fn ring(rest: &str) -> Vec<u8> {
    format!("{}{rest}", kes::crypto::record::KEYRING_PREFIX).into_bytes()
}

/// Key rotation adds a version holding the ring; reads take the newest ring, pass over
/// versions other tools add on top, and an unrotated key still costs one call.
#[test]
fn a_replace_adds_a_version_that_reads_return() {
    use kes::keystore::{KeyStore, ReplaceKind, StoreError};
    let g = start_stand_in(3600);
    let store = library_store(g.port);
    assert_eq!(store.replace_kind(), ReplaceKind::Atomic);
    store.create("k", b"record-1").unwrap();
    let calls = || g.state.lock().unwrap().user_projects.len();
    let before = calls();
    assert_eq!(store.get("k").unwrap().expose(), b"record-1");
    assert_eq!(calls() - before, 1, "an unrotated key is one call");

    // Stale old: nothing is added.
    assert!(matches!(
        store.replace("k", b"record-0", &ring("A")),
        Err(StoreError::Conflict)
    ));
    assert_eq!(g.state.lock().unwrap().secrets["k"].len(), 1);
    // Only a key ring can be a later version.
    assert!(store.replace("k", b"record-1", b"record-2").is_err());
    assert_eq!(g.state.lock().unwrap().secrets["k"].len(), 1);
    assert!(matches!(
        store.replace("missing", b"x", &ring("A")),
        Err(StoreError::NotFound)
    ));

    store.replace("k", b"record-1", &ring("A")).unwrap();
    assert_eq!(store.get("k").unwrap().expose(), ring("A"));
    assert_eq!(g.state.lock().unwrap().secrets["k"].len(), 2);
    store.replace("k", &ring("A"), &ring("AB")).unwrap();
    assert!(matches!(
        store.replace("k", &ring("A"), &ring("AC")),
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.get("k").unwrap().expose(), ring("AB"));

    // Another tool adds versions on top (more than one page of versions): they do not
    // change the key, and the next rotation goes on top of them.
    for i in 0..4 {
        g.state
            .lock()
            .unwrap()
            .secrets
            .get_mut("k")
            .unwrap()
            .push(format!("foreign-{i}").into_bytes());
    }
    assert_eq!(store.get("k").unwrap().expose(), ring("AB"));
    store.replace("k", &ring("AB"), &ring("ABC")).unwrap();
    assert_eq!(store.get("k").unwrap().expose(), ring("ABC"));
    assert_eq!(g.state.lock().unwrap().secrets["k"].len(), 8);
    // On an unrotated key a foreign version leaves version 1 the key.
    store.create("plain", b"record-p").unwrap();
    g.state
        .lock()
        .unwrap()
        .secrets
        .get_mut("plain")
        .unwrap()
        .push(b"foreign".to_vec());
    assert_eq!(store.get("plain").unwrap().expose(), b"record-p");
    store.replace("plain", b"record-p", &ring("P")).unwrap();
    assert_eq!(store.get("plain").unwrap().expose(), ring("P"));

    // A delete removes every version.
    store.delete("k").unwrap();
    assert!(matches!(store.get("k"), Err(StoreError::NotFound)));
    assert!(!g.state.lock().unwrap().secrets.contains_key("k"));
    let rejected = g.state.lock().unwrap().seen.rejected.clone();
    assert!(rejected.is_empty(), "{rejected:?}");
}

/// Another writer's version lands between our read and our add: ours is destroyed, the
/// replace reports a conflict and theirs is the key. An add the service stored before it
/// failed (and that was retried) is a success, not a conflict.
#[test]
fn a_replace_that_loses_the_race_takes_its_version_back() {
    use kes::keystore::{KeyStore, StoreError};
    let g = start_stand_in(3600);
    let store = library_store(g.port);
    store.create("k", b"record").unwrap();
    // Another node's rotation, as it stores it: the ring and the version it follows.
    let mut theirs = ring("theirs");
    theirs.extend_from_slice(b"\nkes:follows-version:1");
    g.state.lock().unwrap().race_version = Some(theirs);
    assert!(matches!(
        store.replace("k", b"record", &ring("ours")),
        Err(StoreError::Conflict)
    ));
    assert_eq!(g.state.lock().unwrap().destroyed, ["k/versions/3"]);
    // `latest` is the destroyed version now; the read finds theirs below it.
    assert_eq!(store.get("k").unwrap().expose(), ring("theirs"));
    assert!(matches!(
        store.replace("k", b"record", &ring("ours")),
        Err(StoreError::Conflict)
    ));
    store.replace("k", &ring("theirs"), &ring("next")).unwrap();
    assert_eq!(store.get("k").unwrap().expose(), ring("next"));
    assert_eq!(g.state.lock().unwrap().secrets["k"].len(), 4);

    g.state.lock().unwrap().fail_after_store = vec!["add"];
    store.replace("k", &ring("next"), &ring("after")).unwrap();
    assert_eq!(store.get("k").unwrap().expose(), ring("after"));
    let s = g.state.lock().unwrap();
    assert_eq!(s.secrets["k"].len(), 6, "stored, answered 503, retried");
    assert_eq!(s.destroyed, ["k/versions/3"]);
}

/// Two stores (two nodes) rotating the same key at once, each retrying on a conflict:
/// every rotation is in the final value.
#[test]
fn two_stores_racing_replaces_lose_nothing() {
    use kes::keystore::{KeyStore, StoreError};
    let g = start_stand_in(3600);
    library_store(g.port).create("k", b"record").unwrap();
    const ROUNDS: usize = 12;
    let conflicts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let threads: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|node| {
            let store = library_store(g.port);
            let (conflicts, barrier) = (conflicts.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..ROUNDS {
                    loop {
                        let old = store.get("k").unwrap();
                        let mut new = if old.expose().starts_with(b"kes:keyring:v1:") {
                            old.expose().to_vec()
                        } else {
                            ring("")
                        };
                        new.extend_from_slice(format!("{node}{i},").as_bytes());
                        match store.replace("k", old.expose(), &new) {
                            Ok(()) => break,
                            Err(StoreError::Conflict) => {
                                conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let value = library_store(g.port).get("k").unwrap();
    let text = std::str::from_utf8(value.expose()).unwrap();
    let mut got: Vec<&str> = text
        .strip_prefix("kes:keyring:v1:")
        .unwrap()
        .split(',')
        .filter(|t| !t.is_empty())
        .collect();
    got.sort();
    let mut want: Vec<String> = ["a", "b"]
        .iter()
        .flat_map(|n| (0..ROUNDS).map(move |i| format!("{n}{i}")))
        .collect();
    want.sort();
    assert_eq!(got, want, "conflicts: {conflicts:?}");
}
