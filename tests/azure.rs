//! The Azure Key Vault keystore against a stand-in of the documented Key Vault secrets REST
//! API, the Microsoft Entra ID token endpoint and the managed-identity endpoints (IMDS, App
//! Service), run inside the test on loopback, through `kes server --config` started as a user
//! starts it (environment variables, files on disk).
//!
//! The stand-in is strict: it checks method, path, `api-version`, headers and body shape,
//! answers a call without a token with Key Vault's challenge (`401`, `WWW-Authenticate:
//! Bearer authorization="…/<tenant>", resource="<its resource>"`), accepts only unexpired
//! bearer tokens it issued for its own resource (a token for another audience is refused with
//! `AKV10022`, as Key Vault does), issues a token only for the configured client id and
//! secret, or for a federated assertion equal to the token file's content at that moment, for
//! the scope asked; as IMDS only with `Metadata: true`, as the App Service endpoint only with
//! the right `X-IDENTITY-HEADER`, both for the resource asked and the expected identity. It keeps versions (a `PUT` on an existing secret adds one, as
//! Key Vault does), soft-deletes (a purge is needed, and the first purge after a delete
//! answers `ObjectIsBeingDeleted`, as Key Vault may) and pages lists with `nextLink`.

mod common;
mod standin;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::lifecycle::{
    keystore_lifecycle, outage_behaviour, renewed_before_expiry, used_and_renewed, Backend,
    Lifecycle, Tokens,
};
use common::*;
use simd_json::prelude::*;
use standin::{Request, Response};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT_ID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
const CLIENT_SECRET: &str = "s3cr3t~value+with/odd=chars";
const API_VERSION: &str = "api-version=7.4";
const PAGE: usize = 10;
/// A user-assigned managed identity.
const MI_CLIENT_ID: &str = "5a8f3c2e-1d4b-4e6f-9a7c-2b1d0e9f8a7b";
/// App Service's per-process secret for its identity endpoint.
const IDENTITY_HEADER: &str = "7f3e9d1c-IDENTITY-HEADER-secret";

struct Version {
    id: String,
    value: String,
    created: i64,
}

#[derive(Default)]
struct State {
    secrets: BTreeMap<String, Vec<Version>>,
    /// Soft-deleted secrets → purge attempts so far.
    deleted: HashMap<String, u32>,
    lifetime_secs: u64,
    /// The audience this vault accepts and names in its challenge.
    resource: String,
    /// Calls without a token, answered with the challenge.
    challenges: usize,
    /// Token → (expiry, audience).
    tokens: HashMap<String, (Instant, String)>,
    /// Tokens issued, calls refused as unauthorized, other calls refused.
    seen: Tokens,
    /// Tokens issued per way: client secret, federated assertion, IMDS, App Service.
    secret_grants: usize,
    assertion_grants: usize,
    imds_grants: usize,
    app_service_grants: usize,
    /// The federated token file whose current content is the only assertion accepted.
    federated_file: Option<std::path::PathBuf>,
    assertions_seen: Vec<String>,
    /// The managed identity expected (`None`: the system-assigned one, no client_id).
    mi_client_id: Option<String>,
    purges: usize,
    next_version: u64,
    clock: i64,
}

/// The stand-in: Key Vault, the Entra ID token endpoint, IMDS and the App Service identity
/// endpoint on one loopback port (`tests/standin` serves it), with its state.
struct StandIn {
    port: u16,
    state: Arc<Mutex<State>>,
    _server: standin::StandIn,
}

impl State {
    fn record_exists(&self, name: &str) -> bool {
        self.secrets.contains_key(name)
    }

    fn add_version(&mut self, name: &str, value: &str) {
        self.next_version += 1;
        self.clock += 1;
        let v = Version {
            id: format!("{:032x}", self.next_version),
            value: value.to_string(),
            created: 1_700_000_000 + self.clock,
        };
        self.secrets.entry(name.to_string()).or_default().push(v);
    }
}

fn start_stand_in(token_lifetime: u64) -> StandIn {
    start_stand_in_for(token_lifetime, "https://vault.azure.net")
}

/// A stand-in of a vault whose resource (token audience) is `resource`.
fn start_stand_in_for(token_lifetime: u64, resource: &str) -> StandIn {
    let state = Arc::new(Mutex::new(State {
        lifetime_secs: token_lifetime,
        resource: resource.to_string(),
        ..State::default()
    }));
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
        let (status, body) = handle(&mut s, &req, port);
        // A call without a token is how a client learns the challenge: not a rejection.
        let challenge = status == 401 && req.header("authorization").is_none();
        if status >= 400 && status != 404 && status != 409 && !challenge {
            s.seen
                .rejected
                .push(format!("{} {} -> {status} {body}", req.method, req.path));
        }
        let vault_401 = status == 401 && body.contains("AKV100");
        let response = Response {
            content_type: "application/json; charset=utf-8",
            ..Response::json(status, body)
        };
        if vault_401 {
            // Key Vault's challenge: the tenant's authority and this vault's resource.
            response.with_header(format!(
                r#"WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/{TENANT}", resource="{}""#,
                s.resource
            ))
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

fn kverr(status: u16, code: &str, inner: &str, message: &str) -> (u16, String) {
    let inner = if inner.is_empty() {
        String::new()
    } else {
        format!(r#","innererror":{{"code":"{inner}"}}"#)
    };
    (
        status,
        format!(r#"{{"error":{{"code":"{code}","message":"{message}"{inner}}}}}"#),
    )
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

/// A token for `audience`, valid for `lifetime_secs`.
fn issue(s: &mut State, audience: &str) -> String {
    s.seen.issued += 1;
    let t = format!("eyJ0eXAi.az-token-{}", s.seen.issued);
    s.tokens.insert(
        t.clone(),
        (
            Instant::now() + Duration::from_secs(s.lifetime_secs),
            audience.to_string(),
        ),
    );
    t
}

/// An audience Entra ID issues tokens for: an `https://` resource.
fn audience_ok(resource: &str) -> bool {
    resource.starts_with("https://") && !resource.ends_with('/') && resource.len() > 8
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The managed-identity endpoints: IMDS (`Metadata: true`, api-version 2018-02-01) and App
/// Service (`X-IDENTITY-HEADER`, api-version 2019-08-01). Numbers come as strings, as Azure
/// sends them.
fn managed_identity(s: &mut State, req: &Request, imds: bool) -> (u16, String) {
    let bad = |code: u16, e: &str, why: &str| {
        (
            code,
            format!(r#"{{"error":"{e}","error_description":"{why}"}}"#),
        )
    };
    if imds && req.header("metadata") != Some("true") {
        return bad(
            400,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    if !imds && req.header("x-identity-header") != Some(IDENTITY_HEADER) {
        return bad(
            401,
            "unauthorized",
            "The X-IDENTITY-HEADER is missing or wrong",
        );
    }
    if req.method != "GET" || !req.body.is_empty() {
        return bad(405, "invalid_request", "method");
    }
    let (_, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let mut params = HashMap::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if params.insert(k.to_string(), url_decode(v)).is_some() {
            return bad(400, "invalid_request", "duplicate parameter");
        }
    }
    let version = if imds { "2018-02-01" } else { "2019-08-01" };
    let resource = params.get("resource").cloned().unwrap_or_default();
    if params.get("api-version").map(String::as_str) != Some(version) || !audience_ok(&resource) {
        return bad(400, "invalid_request", "wrong api-version or resource");
    }
    if params.get("client_id") != s.mi_client_id.as_ref()
        || params.len() != 2 + usize::from(s.mi_client_id.is_some())
    {
        return bad(400, "invalid_request", "Identity not found");
    }
    if imds {
        s.imds_grants += 1;
    } else {
        s.app_service_grants += 1;
    }
    let t = issue(s, &resource);
    let (life, on) = (s.lifetime_secs, unix_now() + s.lifetime_secs);
    let id = s.mi_client_id.clone().unwrap_or_else(|| "system".into());
    // App Service gives the expiry only as `expires_on`; IMDS also as `expires_in`.
    let body = if imds {
        format!(
            r#"{{"access_token":"{t}","client_id":"{id}","expires_in":"{life}","expires_on":"{on}","ext_expires_in":"{life}","not_before":"{}","resource":"{resource}","token_type":"Bearer"}}"#,
            unix_now()
        )
    } else {
        format!(
            r#"{{"access_token":"{t}","expires_on":"{on}","resource":"{resource}","token_type":"Bearer","client_id":"{id}"}}"#
        )
    };
    (200, body)
}

fn token(s: &mut State, req: &Request) -> (u16, String) {
    let bad = |code: u16, e: &str, why: &str| {
        (
            code,
            format!(r#"{{"error":"{e}","error_description":"{why}"}}"#),
        )
    };
    if req.header("content-type") != Some("application/x-www-form-urlencoded") {
        return bad(400, "invalid_request", "AADSTS900144: wrong content type");
    }
    let form = String::from_utf8_lossy(&req.body).to_string();
    let mut fields = HashMap::new();
    for pair in form.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if fields.insert(k.to_string(), url_decode(v)).is_some() {
            return bad(400, "invalid_request", "duplicate field");
        }
    }
    let federated = fields.contains_key("client_assertion");
    let expected = if federated { 5 } else { 4 };
    let audience = fields
        .get("scope")
        .and_then(|s| s.strip_suffix("/.default"))
        .unwrap_or_default()
        .to_string();
    if fields.len() != expected
        || fields.get("grant_type").map(String::as_str) != Some("client_credentials")
        || !audience_ok(&audience)
    {
        return bad(400, "invalid_request", "AADSTS900144: wrong grant or scope");
    }
    if fields.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return bad(
            400,
            "unauthorized_client",
            "AADSTS700016: Application not found",
        );
    }
    if federated {
        let current = s
            .federated_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok());
        if fields.get("client_assertion_type").map(String::as_str)
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            || fields.get("client_assertion") != current.as_ref()
        {
            return bad(
                401,
                "invalid_client",
                "AADSTS700024: Client assertion is not within its valid time range.",
            );
        }
        s.assertion_grants += 1;
        s.assertions_seen.push(fields["client_assertion"].clone());
    } else if fields.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET) {
        return bad(
            401,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    } else {
        s.secret_grants += 1;
    }
    let t = issue(s, &audience);
    let lifetime = s.lifetime_secs;
    (
        200,
        format!(
            r#"{{"token_type":"Bearer","expires_in":{lifetime},"ext_expires_in":{lifetime},"access_token":"{t}"}}"#
        ),
    )
}

fn handle(s: &mut State, req: &Request, port: u16) -> (u16, String) {
    if req.path == format!("/{TENANT}/oauth2/v2.0/token") {
        if req.method != "POST" {
            return (405, "{}".into());
        }
        return token(s, req);
    }
    let path = req.path.split('?').next().unwrap_or("");
    if path == "/metadata/identity/oauth2/token" {
        return managed_identity(s, req, true);
    }
    if path == "/msi/token" {
        return managed_identity(s, req, false);
    }
    if req.path == "/" {
        return kverr(
            401,
            "Unauthorized",
            "",
            "AKV10000: Request is missing a Bearer token",
        );
    }
    let Some(tok) = req
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
    else {
        s.challenges += 1;
        return kverr(
            401,
            "Unauthorized",
            "",
            "AKV10000: Request is missing a Bearer token",
        );
    };
    match s.tokens.get(tok) {
        Some((exp, aud)) if *exp > Instant::now() && *aud == s.resource => {}
        _ => {
            s.seen.unauthorized += 1;
            return kverr(
                401,
                "Unauthorized",
                "",
                "AKV10022: Invalid audience or expired token",
            );
        }
    }
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    if !params.contains(&API_VERSION) {
        return kverr(400, "BadParameter", "", "api-version missing");
    }
    let (needs_body, has_body) = (req.method == "PUT", !req.body.is_empty());
    if needs_body != has_body {
        return kverr(400, "BadParameter", "", "body");
    }
    if needs_body && req.header("content-type") != Some("application/json") {
        return kverr(400, "BadParameter", "", "content type");
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let name_ok =
        |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let base = format!("http://127.0.0.1:{port}");
    match (req.method.as_str(), segs.as_slice()) {
        ("GET", ["secrets"]) => {
            let skip: usize = params
                .iter()
                .find_map(|p| p.strip_prefix("$skiptoken="))
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let ids: Vec<&String> = s.secrets.keys().collect();
            let page: Vec<String> = ids
                .iter()
                .skip(skip)
                .take(PAGE)
                .map(|n| {
                    format!(r#"{{"id":"{base}/secrets/{n}","attributes":{{"enabled":true}}}}"#)
                })
                .collect();
            let next = if skip + PAGE < ids.len() {
                format!(
                    r#""{base}/secrets?{API_VERSION}&maxresults=25&$skiptoken={}""#,
                    skip + PAGE
                )
            } else {
                "null".into()
            };
            (
                200,
                format!(r#"{{"value":[{}],"nextLink":{next}}}"#, page.join(",")),
            )
        }
        ("GET", ["secrets", name]) | ("GET", ["secrets", name, ""]) => match s.secrets.get(*name) {
            Some(vs) => {
                let v = vs.last().unwrap();
                (
                    200,
                    format!(
                        r#"{{"value":"{}","id":"{base}/secrets/{name}/{}","attributes":{{"enabled":true}}}}"#,
                        v.value, v.id
                    ),
                )
            }
            None => kverr(
                404,
                "SecretNotFound",
                "",
                "A secret with (name/id) was not found in this key vault.",
            ),
        },
        ("GET", ["secrets", name, "versions"]) => match s.secrets.get(*name) {
            Some(vs) => {
                let items: Vec<String> = <[Version]>::iter(vs)
                    .rev()
                    .map(|v| format!(r#"{{"id":"{base}/secrets/{name}/{}","attributes":{{"enabled":true,"created":{}}}}}"#, v.id, v.created))
                    .collect();
                (
                    200,
                    format!(r#"{{"value":[{}],"nextLink":null}}"#, items.join(",")),
                )
            }
            None => kverr(404, "SecretNotFound", "", "not found"),
        },
        ("GET", ["secrets", name, version]) => {
            match s
                .secrets
                .get(*name)
                .and_then(|vs| vs.iter().find(|v| v.id == *version))
            {
                Some(v) => (
                    200,
                    format!(
                        r#"{{"value":"{}","id":"{base}/secrets/{name}/{}","attributes":{{"enabled":true,"created":{}}}}}"#,
                        v.value, v.id, v.created
                    ),
                ),
                None => kverr(404, "SecretNotFound", "", "not found"),
            }
        }
        ("PUT", ["secrets", name]) if name_ok(name) => {
            let mut b = req.body.clone();
            let Ok(v) = simd_json::to_owned_value(&mut b) else {
                return kverr(400, "BadParameter", "", "JSON");
            };
            let value = match (
                v.as_object().map(|o| o.len()),
                v.get("value").and_then(|x| x.as_str()),
            ) {
                (Some(1), Some(value)) => value.to_string(),
                _ => return kverr(400, "BadParameter", "", "body must be {value}"),
            };
            if let Some(purges) = s.deleted.get(*name) {
                return if *purges == 0 {
                    kverr(
                        409,
                        "Conflict",
                        "ObjectIsDeletedButRecoverable",
                        "Secret is currently in a deleted but recoverable state",
                    )
                } else {
                    kverr(
                        409,
                        "Conflict",
                        "ObjectIsBeingDeleted",
                        "Secret is currently being deleted.",
                    )
                };
            }
            s.add_version(name, &value);
            let id = s.secrets[*name].last().unwrap().id.clone();
            (
                200,
                format!(r#"{{"id":"{base}/secrets/{name}/{id}","attributes":{{"enabled":true}}}}"#),
            )
        }
        ("DELETE", ["secrets", name]) => match s.secrets.remove(*name) {
            Some(_) => {
                s.deleted.insert(name.to_string(), 0);
                (
                    200,
                    format!(r#"{{"recoveryId":"{base}/deletedsecrets/{name}"}}"#),
                )
            }
            None => kverr(404, "SecretNotFound", "", "not found"),
        },
        ("DELETE", ["deletedsecrets", name]) => {
            s.purges += 1;
            match s.deleted.get_mut(*name) {
                // The first purge after a delete finds it still being deleted.
                Some(n) if *n == 0 => {
                    *n += 1;
                    kverr(409, "Conflict", "ObjectIsBeingDeleted", "still deleting")
                }
                Some(_) => {
                    s.deleted.remove(*name);
                    (204, String::new())
                }
                None => kverr(404, "SecretNotFound", "", "Deleted Secret not found"),
            }
        }
        _ => kverr(405, "BadParameter", "", "unsupported method or path"),
    }
}

fn write_config(
    dir: &std::path::Path,
    tls: &TlsFiles,
    admin: &str,
    port: u16,
) -> std::path::PathBuf {
    let yaml = format!(
        "admin:\n  identity: {admin}\ntls:\n  key: {}\n  cert: {}\ncache:\n  expiry:\n    any: 5m\n    unused: 5m\nkeystore:\n  azure:\n    keyvault:\n      endpoint: http://127.0.0.1:{port}\n      authority_host: ${{KES_TEST_AZURE_LOGIN}}\n      credentials:\n        tenant_id: {TENANT}\n        client_id: {CLIENT_ID}\n        client_secret: ${{KES_TEST_AZURE_SECRET}}\n",
        tls.key.display(),
        tls.cert.display(),
    );
    let path = dir.join("azure.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn kes_on(path: &std::path::Path, port: u16, secret: &str) -> BinServer {
    let secret = secret.to_string();
    let home = tempfile::tempdir().unwrap();
    bin_server_with(&["--config", path.to_str().unwrap()], move |cmd| {
        clean_cloud_env(cmd, home.path());
        cmd.env("KES_TEST_AZURE_SECRET", secret)
            .env("KES_TEST_AZURE_LOGIN", format!("http://127.0.0.1:{port}"));
    })
}

/// The stand-in's secrets, as [`Backend`]: a record is the value of the one version of the
/// secret named after the key (upstream's layout); a deleted key must also be purged.
struct KeyVault(Arc<Mutex<State>>);

impl Backend for KeyVault {
    fn record(&self, name: &str) -> Option<String> {
        let s = self.0.lock().unwrap();
        assert!(
            !s.deleted.contains_key(name),
            "'{name}' is soft-deleted, not purged"
        );
        let versions = s.secrets.get(name)?;
        assert_eq!(
            versions.len(),
            1,
            "create must not add a version to an existing secret"
        );
        Some(versions[0].value.clone())
    }

    fn plant(&self, name: &str, record: &str) {
        self.0.lock().unwrap().add_version(name, record);
    }
}

/// The stand-in's token counts, for [`renewed_before_expiry`].
fn tokens(a: &StandIn) -> impl Fn() -> Tokens + '_ {
    || a.state.lock().unwrap().seen.clone()
}

#[test]
fn keys_live_in_the_stand_in_as_upstream_stores_them_and_tokens_are_renewed() {
    let a = start_stand_in(3);
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &tls, &admin, a.port);
    let node = kes_on(&path, a.port, CLIENT_SECRET);
    let endpoint = format!("https://{}", node.addr);
    // the stand-in pages at 10, with nextLink
    let lifecycle = Lifecycle::one_node(&endpoint, &api_key, "az-key", 25);
    keystore_lifecycle(&lifecycle, &KeyVault(a.state.clone()));
    // Delete = soft delete + purge, retried while Key Vault is still deleting.
    assert_eq!(
        a.state.lock().unwrap().purges,
        2,
        "purge retried once after ObjectIsBeingDeleted"
    );

    // The oldest version is the key (upstream's rule): a later version of a key kes has not
    // read yet changes nothing.
    a.state
        .lock()
        .unwrap()
        .add_version("page-002", "not-a-record");
    let mut c = client_for(&endpoint, &api_key);
    let r = c
        .request("POST", "/v1/key/generate/page-002", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));

    // A name left soft-deleted (by another client) is purged and created again.
    {
        let mut s = a.state.lock().unwrap();
        s.secrets.remove("page-001");
        s.deleted.insert("page-001".into(), 0);
    }
    let r = c
        .request("POST", "/v1/key/create/page-001", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    assert!(!a.state.lock().unwrap().deleted.contains_key("page-001"));

    // The 3 s token is renewed before it expires: no call is refused as unauthorized.
    renewed_before_expiry(&endpoint, &api_key, "after-renewal", 3, tokens(&a));

    // Key Vault cannot hold '_': refused before any call (as upstream, a failed create).
    let before = a.state.lock().unwrap().secrets.len();
    assert_error(
        &c.request("POST", "/v1/key/create/bad_name", None, &[])
            .unwrap(),
        502,
        "failed to create key",
    );
    assert_eq!(a.state.lock().unwrap().secrets.len(), before);

    outage_behaviour(&endpoint, &api_key, "upstream-key", "page-000", || drop(a));
    let log = node.stderr_text();
    assert!(
        !log.contains(CLIENT_SECRET),
        "the client secret leaked into the log"
    );
    assert!(!log.contains("az-token-"), "a token leaked into the log");
}

#[test]
fn a_wrong_secret_is_a_clear_error() {
    let a = start_stand_in(3600);
    let config = |secret: &str| kes::config::AzureConfig {
        endpoint: format!("http://127.0.0.1:{}", a.port),
        authority_host: Some(format!("http://127.0.0.1:{}", a.port)),
        auth: kes::config::AzureAuth::ClientCredentials {
            tenant_id: TENANT.into(),
            client_id: CLIENT_ID.into(),
            client_secret: secret.into(),
        },
    };
    use kes::keystore::KeyStore;
    let wrong_secret = "wrong-secret-NOT-TO-BE-LOGGED";
    let err = kes::keystore::azure::AzureStore::new(config(wrong_secret), &no_env)
        .unwrap()
        .create("k", b"v")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("status 401") && err.contains("invalid_client"),
        "{err}"
    );
    assert!(!err.contains(wrong_secret), "{err}");
    let good = kes::keystore::azure::AzureStore::new(config(CLIENT_SECRET), &no_env).unwrap();
    good.create("lib-key", b"v").unwrap();
    assert!(matches!(
        good.create("lib-key", b"v"),
        Err(kes::keystore::StoreError::AlreadyExists)
    ));
    assert_eq!(good.get("lib-key").unwrap().expose(), b"v");
    good.delete("lib-key").unwrap();
    assert!(matches!(
        good.get("lib-key"),
        Err(kes::keystore::StoreError::NotFound)
    ));

    // Through kes: the wrong secret answers 502.
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &tls, &admin, a.port);
    let bad = kes_on(&path, a.port, wrong_secret);
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
    assert!(!bad.stderr_text().contains(wrong_secret));
}

/// Issue 21 item 6: a vault outside public Azure (here Azure China's resource) names its
/// token audience in its challenge; kes asks Entra ID / IMDS for that audience, and the vault
/// refuses a token for another one.
#[test]
fn a_sovereign_vault_gets_tokens_for_the_audience_its_challenge_names() {
    const CHINA: &str = "https://vault.azure.cn";
    let a = start_stand_in_for(3600, CHINA);
    // The stand-in refuses a token for public Azure's vaults, as Key Vault does.
    a.state.lock().unwrap().tokens.insert(
        "public-token".into(),
        (
            Instant::now() + Duration::from_secs(60),
            "https://vault.azure.net".into(),
        ),
    );
    let target = format!("/secrets?{API_VERSION}");
    let status = raw_get(a.port, &target, "Authorization: Bearer public-token\r\n");
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");
    {
        let mut s = a.state.lock().unwrap();
        s.seen.unauthorized = 0;
        s.seen.rejected.clear();
    }

    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &tls, &admin, a.port);
    let node = kes_on(&path, a.port, CLIENT_SECRET);
    let mut c = client_for(&format!("https://{}", node.addr), &api_key);
    let r = c
        .request("POST", "/v1/key/create/cn-key", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    let r = c
        .request("POST", "/v1/key/generate/cn-key", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    {
        let s = a.state.lock().unwrap();
        assert!(s.record_exists("cn-key"));
        assert_eq!(
            s.seen.unauthorized, 0,
            "a token for another audience was sent"
        );
        assert!(s.challenges >= 1, "kes never asked for the challenge");
        assert!(s.tokens.values().filter(|(_, aud)| aud == CHINA).count() >= 1);
    }

    // Managed identity asks IMDS for the challenge's resource, too.
    use kes::keystore::KeyStore;
    let imds = format!("http://127.0.0.1:{}", a.port);
    a.state.lock().unwrap().mi_client_id = Some(MI_CLIENT_ID.into());
    let env = move |name: &str| (name == "AZURE_POD_IDENTITY_AUTHORITY_HOST").then(|| imds.clone());
    let mi = kes::keystore::azure::AzureStore::new(
        kes::config::AzureConfig {
            endpoint: format!("http://127.0.0.1:{}", a.port),
            authority_host: None,
            auth: kes::config::AzureAuth::ManagedIdentity {
                client_id: MI_CLIENT_ID.into(),
            },
        },
        &env,
    )
    .unwrap();
    mi.get("cn-key").unwrap();
    assert_eq!(a.state.lock().unwrap().imds_grants, 1);

    // Credentials of another tenant than the vault's are refused by name, before a login.
    let other = kes::keystore::azure::AzureStore::new(
        kes::config::AzureConfig {
            endpoint: format!("http://127.0.0.1:{}", a.port),
            authority_host: Some(format!("http://127.0.0.1:{}", a.port)),
            auth: kes::config::AzureAuth::ClientCredentials {
                tenant_id: "other-tenant".into(),
                client_id: CLIENT_ID.into(),
                client_secret: CLIENT_SECRET.into(),
            },
        },
        &no_env,
    )
    .unwrap();
    let e = other.get("cn-key").unwrap_err().to_string();
    assert!(
        e.contains(&format!("asks for a token of tenant '{TENANT}'"))
            && e.contains("for tenant 'other-tenant'")
            && !e.contains(CLIENT_SECRET),
        "{e}"
    );
    assert!(!node.stderr_text().contains("az-token-"));
}

#[test]
fn the_documented_azure_example_loads() {
    let (_yaml, config, _dir) =
        documented_keystore_example("azure", &[("AZURE_CLIENT_SECRET", "example-secret")], &[]);
    let kes::config::KeystoreConfig::Azure(az) = config.keystore else {
        panic!("not the azure keystore");
    };
    assert_eq!(az.endpoint, "https://my-vault.vault.azure.net");
    assert_eq!(az.authority_host, None);
    kes::keystore::azure::AzureStore::new((*az).clone(), &no_env).unwrap();
    let kes::config::AzureAuth::ClientCredentials { client_secret, .. } = az.auth else {
        panic!("not client credentials");
    };
    assert_eq!(client_secret.expose(), "example-secret");
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// A config whose Azure block has only the endpoint and `auth` (a YAML fragment, may be "").
fn write_config_with_auth(
    dir: &std::path::Path,
    tls: &TlsFiles,
    admin: &str,
    port: u16,
    auth: &str,
) -> std::path::PathBuf {
    let yaml = format!(
        "admin:\n  identity: {admin}\ntls:\n  key: {}\n  cert: {}\ncache:\n  expiry:\n    any: 5m\n    unused: 5m\nkeystore:\n  azure:\n    keyvault:\n      endpoint: http://127.0.0.1:{port}\n{auth}",
        tls.key.display(),
        tls.cert.display(),
    );
    let path = dir.join("azure-identity.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// `kes server --config path` with only the cloud variables in `vars`.
fn kes_with_env(path: &std::path::Path, vars: &[(&str, String)]) -> BinServer {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let home = tempfile::tempdir().unwrap();
    bin_server_with(&["--config", path.to_str().unwrap()], move |cmd| {
        clean_cloud_env(cmd, home.path());
        for (k, v) in vars {
            cmd.env(k, v);
        }
    })
}

/// Sends `GET <target>` with `headers` to the stand-in; returns the status line.
fn raw_get(port: u16, target: &str, headers: &str) -> String {
    let mut raw = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        raw,
        "GET {target} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or_default().to_string()
}

#[test]
fn the_blocks_managed_identity_gets_tokens_from_imds() {
    let a = start_stand_in(2);
    a.state.lock().unwrap().mi_client_id = Some(MI_CLIENT_ID.into());
    // The stand-in is strict: IMDS refuses a request without `Metadata: true`.
    let target = format!("/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net&client_id={MI_CLIENT_ID}");
    assert!(raw_get(a.port, &target, "").starts_with("HTTP/1.1 400"));
    assert!(raw_get(a.port, &target, "Metadata: true\r\n").starts_with("HTTP/1.1 200"));
    a.state.lock().unwrap().seen.rejected.clear();

    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config_with_auth(
        dir.path(),
        &tls,
        &admin,
        a.port,
        &format!("      managed_identity:\n        client_id: {MI_CLIENT_ID}\n"),
    );
    let imds = format!("http://127.0.0.1:{}", a.port);
    // The environment's client id is not this block's identity: it is ignored.
    let node = kes_with_env(
        &path,
        &[
            ("AZURE_POD_IDENTITY_AUTHORITY_HOST", imds.clone()),
            ("AZURE_CLIENT_ID", CLIENT_ID.into()),
        ],
    );
    let endpoint = format!("https://{}", node.addr);
    let backend = KeyVault(a.state.clone());
    used_and_renewed(&endpoint, &api_key, "mi-key", &backend, 2, tokens(&a));
    {
        let s = a.state.lock().unwrap();
        assert!(s.imds_grants >= 3, "{}", s.imds_grants); // one raw, two from kes
        assert_eq!(
            s.secret_grants + s.assertion_grants + s.app_service_grants,
            0
        );
    }
    let log = node.stderr_text();
    assert!(
        log.contains(&format!("kes: keystore credentials: user-assigned managed identity {MI_CLIENT_ID} (IMDS at {imds}) from keystore.azure.keyvault.managed_identity")),
        "{log}"
    );
    assert!(!log.contains("az-token-"), "a token leaked into the log");

    // As upstream: a managed_identity block needs the client id.
    let path = write_config_with_auth(
        dir.path(),
        &tls,
        &admin,
        a.port,
        "      managed_identity:\n        client_id: \"\"\n",
    );
    let err = kes_start_fails(&path, |cmd| clean_cloud_env(cmd, dir.path()));
    assert!(
        err.contains("keystore.azure.keyvault.managed_identity.client_id: missing"),
        "{err}"
    );
}

#[test]
fn the_default_chain_uses_the_app_service_identity_endpoint() {
    let a = start_stand_in(2);
    // The stand-in is strict: a wrong X-IDENTITY-HEADER is refused.
    let target = "/msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fvault.azure.net";
    assert!(raw_get(a.port, target, "X-IDENTITY-HEADER: wrong\r\n").starts_with("HTTP/1.1 401"));
    a.state.lock().unwrap().seen.rejected.clear();

    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config_with_auth(dir.path(), &tls, &admin, a.port, "");
    let endpoint = format!("http://127.0.0.1:{}/msi/token", a.port);
    let node = kes_with_env(
        &path,
        &[
            ("IDENTITY_ENDPOINT", endpoint.clone()),
            ("IDENTITY_HEADER", IDENTITY_HEADER.into()),
        ],
    );
    let kes_url = format!("https://{}", node.addr);
    let backend = KeyVault(a.state.clone());
    used_and_renewed(
        &kes_url,
        &api_key,
        "app-service-key",
        &backend,
        2,
        tokens(&a),
    );
    {
        let s = a.state.lock().unwrap();
        assert!(s.app_service_grants >= 2, "{}", s.app_service_grants);
        assert_eq!(s.secret_grants + s.assertion_grants + s.imds_grants, 0);
    }
    let log = node.stderr_text();
    assert!(
        log.contains(&format!("system-assigned managed identity (IDENTITY_ENDPOINT {endpoint}) from the default chain")),
        "{log}"
    );
    assert!(!log.contains(IDENTITY_HEADER), "the identity header leaked");
    assert!(!log.contains("az-token-"), "a token leaked into the log");
    drop(node);

    // A wrong header: 502, the cause in the log, the header nowhere.
    let wrong = "WRONG-identity-header-value";
    let node = kes_with_env(
        &path,
        &[
            ("IDENTITY_ENDPOINT", endpoint.clone()),
            ("IDENTITY_HEADER", wrong.into()),
        ],
    );
    let mut c = client_for(&format!("https://{}", node.addr), &api_key);
    assert_error(
        &c.request("POST", "/v1/key/create/x", None, &[]).unwrap(),
        502,
        "failed to create key",
    );
    let expected = format!("managed identity: {endpoint} refused the token request: status 401: unauthorized The X-IDENTITY-HEADER is missing or wrong");
    assert!(
        node.wait_stderr(&expected, Duration::from_secs(5)),
        "{}",
        node.stderr_text()
    );
    assert!(!node.stderr_text().contains(wrong));
}

#[test]
fn workload_identity_sends_the_token_file_as_it_is_now() {
    let a = start_stand_in(2);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("azure-identity-token");
    let first = "eyJhbGciOiJSUzI1NiJ9.first-projected-token.sig";
    std::fs::write(&file, first).unwrap();
    a.state.lock().unwrap().federated_file = Some(file.clone());

    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let path = write_config_with_auth(dir.path(), &tls, &admin, a.port, "");
    let node = kes_with_env(
        &path,
        &[
            ("AZURE_TENANT_ID", TENANT.into()),
            ("AZURE_CLIENT_ID", CLIENT_ID.into()),
            ("AZURE_FEDERATED_TOKEN_FILE", file.display().to_string()),
            (
                "AZURE_AUTHORITY_HOST",
                format!("http://127.0.0.1:{}/", a.port),
            ),
        ],
    );
    let mut c = client_for(&format!("https://{}", node.addr), &api_key);
    let r = c
        .request("POST", "/v1/key/create/wi-key", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    // Kubernetes rotates the projected token: the next refresh sends the new one.
    let second = "eyJhbGciOiJSUzI1NiJ9.second-projected-token.sig";
    std::fs::write(&file, second).unwrap();
    let endpoint = format!("https://{}", node.addr);
    let backend = KeyVault(a.state.clone());
    used_and_renewed(&endpoint, &api_key, "wi-key-2", &backend, 2, tokens(&a));
    {
        let s = a.state.lock().unwrap();
        assert_eq!(s.assertions_seen.first().map(String::as_str), Some(first));
        assert_eq!(s.assertions_seen.last().map(String::as_str), Some(second));
        assert_eq!(s.secret_grants + s.imds_grants + s.app_service_grants, 0);
    }
    let log = node.stderr_text();
    assert!(
        log.contains(&format!(
            "client {CLIENT_ID} by workload identity (AZURE_FEDERATED_TOKEN_FILE '{}')",
            file.display()
        )),
        "{log}"
    );
    for secret in [first, second, "az-token-"] {
        assert!(!log.contains(secret), "{secret} leaked into the log");
    }

    // The file gone: 502 and the path in the log.
    std::fs::remove_file(&file).unwrap();
    std::thread::sleep(Duration::from_millis(2300));
    assert_error(
        &c.request("POST", "/v1/key/create/wi-gone", None, &[])
            .unwrap(),
        502,
        "failed to create key",
    );
    let expected = format!(
        "AZURE_FEDERATED_TOKEN_FILE '{}': cannot open: No such file or directory",
        file.display()
    );
    assert!(
        node.wait_stderr(&expected, Duration::from_secs(5)),
        "{}",
        node.stderr_text()
    );
}

#[test]
fn the_default_chain_takes_environment_client_credentials_first() {
    let a = start_stand_in(2);
    let dir = tempfile::tempdir().unwrap();
    // A token file too: the environment's client secret comes first, as in the SDK.
    let file = dir.path().join("token");
    std::fs::write(&file, "unused-assertion").unwrap();
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let path = write_config_with_auth(dir.path(), &tls, &admin, a.port, "");
    let node = kes_with_env(
        &path,
        &[
            ("AZURE_TENANT_ID", TENANT.into()),
            ("AZURE_CLIENT_ID", CLIENT_ID.into()),
            ("AZURE_CLIENT_SECRET", CLIENT_SECRET.into()),
            ("AZURE_FEDERATED_TOKEN_FILE", file.display().to_string()),
            (
                "AZURE_AUTHORITY_HOST",
                format!("http://127.0.0.1:{}", a.port),
            ),
        ],
    );
    let endpoint = format!("https://{}", node.addr);
    let backend = KeyVault(a.state.clone());
    used_and_renewed(&endpoint, &api_key, "env-key", &backend, 2, tokens(&a));
    {
        let s = a.state.lock().unwrap();
        assert!(s.secret_grants >= 2, "{}", s.secret_grants);
        assert_eq!(s.assertion_grants + s.imds_grants + s.app_service_grants, 0);
    }
    let log = node.stderr_text();
    assert!(log.contains(&format!("client secret of {CLIENT_ID} from the environment (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET)")), "{log}");
    for secret in [CLIENT_SECRET, "az-token-"] {
        assert!(!log.contains(secret), "{secret} leaked into the log");
    }
}

#[test]
fn off_azure_the_error_names_what_was_tried() {
    let a = start_stand_in(60);
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let path = write_config_with_auth(dir.path(), &tls, &admin, a.port, "");
    let closed = free_port();
    let started = Instant::now();
    let node = kes_with_env(
        &path,
        &[
            (
                "AZURE_POD_IDENTITY_AUTHORITY_HOST",
                format!("http://127.0.0.1:{closed}"),
            ),
            ("AZURE_CLIENT_ID", MI_CLIENT_ID.into()),
        ],
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
        "Azure credentials: environment: AZURE_TENANT_ID, AZURE_CLIENT_SECRET not set; workload identity: AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE not set; managed identity: http://127.0.0.1:{closed} did not answer"
    );
    assert!(
        node.wait_stderr(&expected, Duration::from_secs(5)),
        "{}",
        node.stderr_text()
    );
    assert!(a.state.lock().unwrap().secrets.is_empty());

    // Credentials kes cannot use are refused at start, by name.
    let err = kes_start_fails(&path, |cmd| {
        clean_cloud_env(cmd, dir.path());
        cmd.env("AZURE_TENANT_ID", TENANT)
            .env("AZURE_CLIENT_ID", CLIENT_ID)
            .env("AZURE_CLIENT_CERTIFICATE_PATH", dir.path().join("c.pem"));
    });
    assert!(
        err.contains(
            "AZURE_CLIENT_CERTIFICATE_PATH is set, but certificate credentials are not supported"
        ),
        "{err}"
    );
}

/// Records upstream KES wrote (the fs fixture), stored as upstream's Azure code stores them
/// (a secret named after the key whose `value` is the record text), are served: upstream's
/// ciphertexts decrypt through kes.
#[test]
fn records_upstream_wrote_are_served() {
    let a = start_stand_in(3600);
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &tls, &admin, a.port);
    let node = kes_on(&path, a.port, CLIENT_SECRET);
    standin::upstream::upstream_records_are_served(&node, &api_key, &KeyVault(a.state.clone()));
}

fn ring(rest: &str) -> Vec<u8> {
    format!("{}{rest}", kes::crypto::record::KEYRING_PREFIX).into_bytes()
}

/// Key rotation on Key Vault: read, compare, and a new version holding the ring; reads take
/// the newest ring and pass over versions other tools add; a delete removes every version.
#[test]
fn a_replace_adds_a_version_that_reads_return() {
    use kes::keystore::{KeyStore, ReplaceKind, StoreError};
    let a = start_stand_in(3600);
    let store = kes::keystore::azure::AzureStore::new(
        kes::config::AzureConfig {
            endpoint: format!("http://127.0.0.1:{}", a.port),
            authority_host: Some(format!("http://127.0.0.1:{}", a.port)),
            auth: kes::config::AzureAuth::ClientCredentials {
                tenant_id: TENANT.into(),
                client_id: CLIENT_ID.into(),
                client_secret: CLIENT_SECRET.into(),
            },
        },
        &no_env,
    )
    .unwrap();
    assert_eq!(store.replace_kind(), ReplaceKind::ReadCompareWrite);
    let versions = |name: &str| a.state.lock().unwrap().secrets[name].len();
    store.create("k", b"record-1").unwrap();
    assert!(matches!(
        store.replace("k", b"record-0", &ring("A")),
        Err(StoreError::Conflict)
    ));
    assert!(store.replace("k", b"record-1", b"record-2").is_err());
    assert_eq!(versions("k"), 1, "nothing written");
    assert_eq!(store.get("k").unwrap().expose(), b"record-1");
    assert!(matches!(
        store.replace("missing", b"x", &ring("A")),
        Err(StoreError::NotFound)
    ));
    assert!(!a.state.lock().unwrap().secrets.contains_key("missing"));

    store.replace("k", b"record-1", &ring("A")).unwrap();
    assert_eq!(store.get("k").unwrap().expose(), ring("A"));
    store.replace("k", &ring("A"), &ring("AB")).unwrap();
    assert!(matches!(
        store.replace("k", &ring("A"), &ring("AC")),
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.get("k").unwrap().expose(), ring("AB"));
    assert_eq!(versions("k"), 3);

    // Another tool adds versions on top: they do not change the key; the next rotation
    // goes on top of them.
    a.state.lock().unwrap().add_version("k", "foreign-1");
    a.state.lock().unwrap().add_version("k", "foreign-2");
    assert_eq!(store.get("k").unwrap().expose(), ring("AB"));
    store.replace("k", &ring("AB"), &ring("ABC")).unwrap();
    assert_eq!(store.get("k").unwrap().expose(), ring("ABC"));
    // On a key never rotated, the first version stays the key.
    store.create("plain", b"record-p").unwrap();
    a.state.lock().unwrap().add_version("plain", "foreign");
    assert_eq!(store.get("plain").unwrap().expose(), b"record-p");

    store.delete("k").unwrap();
    assert!(matches!(store.get("k"), Err(StoreError::NotFound)));
    assert!(!a.state.lock().unwrap().secrets.contains_key("k"));
    assert!(matches!(
        store.replace("k", &ring("ABC"), &ring("ABCD")),
        Err(StoreError::NotFound)
    ));
}
