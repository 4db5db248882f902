//! The Azure Key Vault keystore against a stand-in of the documented Key Vault secrets REST
//! API and the Microsoft Entra ID client-credentials token endpoint, run inside the test on
//! loopback, through `kes server --config`.
//!
//! The stand-in is strict: it checks method, path, `api-version`, headers and body shape,
//! accepts only unexpired bearer tokens it issued, issues a token only for the configured
//! client id, secret and the Key Vault scope, keeps versions (a `PUT` on an existing secret
//! adds one, as Key Vault does), soft-deletes (a purge is needed, and the first purge after a
//! delete answers `ObjectIsBeingDeleted`, as Key Vault may) and pages lists with `nextLink`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use simd_json::prelude::*;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT_ID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
const CLIENT_SECRET: &str = "s3cr3t~value+with/odd=chars";
const API_VERSION: &str = "api-version=7.4";
const PAGE: usize = 10;

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
    tokens: HashMap<String, Instant>,
    tokens_issued: usize,
    unauthorized: usize,
    purges: usize,
    rejected: Vec<String>,
    next_version: u64,
    clock: i64,
}

struct StandIn {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl State {
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
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = Arc::new(Mutex::new(State::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let (st, sp) = (state.clone(), stop.clone());
    let thread = std::thread::spawn(move || {
        for conn in listener.incoming() {
            if sp.load(Ordering::SeqCst) {
                return;
            }
            let Ok(mut conn) = conn else { continue };
            let (status, body) = match read_request(&mut conn) {
                Some(req) => {
                    let mut s = st.lock().unwrap();
                    let (status, body) = handle(&mut s, &req, port, token_lifetime);
                    if status >= 400 && status != 404 && status != 409 {
                        s.rejected
                            .push(format!("{} {} -> {status} {body}", req.method, req.path));
                    }
                    (status, body)
                }
                None => (400, "{}".to_string()),
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    StandIn {
        port,
        state,
        stop,
        thread: Some(thread),
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_request(conn: &mut TcpStream) -> Option<Request> {
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let n = conn.read(&mut tmp).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = req.parse(&buf) {
            let headers: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).to_string(),
                    )
                })
                .collect();
            let len: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let (method, path) = (req.method?.to_string(), req.path?.to_string());
            while buf.len() < head + len {
                let n = conn.read(&mut tmp).ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            return Some(Request {
                method,
                path,
                headers,
                body: buf[head..head + len].to_vec(),
            });
        }
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

fn token(s: &mut State, req: &Request, lifetime: u64) -> (u16, String) {
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
    if fields.len() != 4
        || fields.get("grant_type").map(String::as_str) != Some("client_credentials")
        || fields.get("scope").map(String::as_str) != Some("https://vault.azure.net/.default")
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
    if fields.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET) {
        return bad(
            401,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    s.tokens_issued += 1;
    let t = format!("eyJ0eXAi.az-token-{}", s.tokens_issued);
    s.tokens
        .insert(t.clone(), Instant::now() + Duration::from_secs(lifetime));
    (
        200,
        format!(
            r#"{{"token_type":"Bearer","expires_in":{lifetime},"ext_expires_in":{lifetime},"access_token":"{t}"}}"#
        ),
    )
}

fn handle(s: &mut State, req: &Request, port: u16, lifetime: u64) -> (u16, String) {
    if req.path == format!("/{TENANT}/oauth2/v2.0/token") {
        if req.method != "POST" {
            return (405, "{}".into());
        }
        return token(s, req, lifetime);
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
        s.unauthorized += 1;
        return kverr(
            401,
            "Unauthorized",
            "",
            "AKV10000: Request is missing a Bearer token",
        );
    };
    match s.tokens.get(tok) {
        Some(exp) if *exp > Instant::now() => {}
        _ => {
            s.unauthorized += 1;
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
    bin_server_with(&["--config", path.to_str().unwrap()], move |cmd| {
        cmd.env("KES_TEST_AZURE_SECRET", secret)
            .env("KES_TEST_AZURE_LOGIN", format!("http://127.0.0.1:{port}"));
    })
}

#[test]
fn keys_live_in_the_stand_in_as_upstream_stores_them_and_tokens_are_renewed() {
    let a = start_stand_in(3);
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &tls, &admin, a.port);
    let node = kes_on(&path, a.port, CLIENT_SECRET);
    let mut c = client_for(&format!("https://{}", node.addr), &api_key);

    let r = c
        .request("POST", "/v1/key/create/az-key", None, &[])
        .unwrap();
    assert_eq!(
        r.status,
        200,
        "{} {:?}",
        body_str(&r),
        a.state.lock().unwrap().rejected
    );
    assert_error(
        &c.request("POST", "/v1/key/create/az-key", None, &[])
            .unwrap(),
        400,
        "key already exists",
    );
    let r = c
        .request(
            "POST",
            "/v1/key/generate/az-key",
            Some(br#"{"context":"e30="}"#),
            &[],
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    let body = format!(
        r#"{{"ciphertext":"{}","context":"e30="}}"#,
        json_str(&r, "ciphertext")
    );
    let d = c
        .request("POST", "/v1/key/decrypt/az-key", Some(body.as_bytes()), &[])
        .unwrap();
    assert_eq!(d.status, 200, "{}", body_str(&d));
    assert_eq!(json_str(&d, "plaintext"), json_str(&r, "plaintext"));

    // Stored as upstream stores it: secret name = key name, one version, value = the record.
    let record = {
        let s = a.state.lock().unwrap();
        let versions = &s.secrets["az-key"];
        assert_eq!(
            versions.len(),
            1,
            "create must not add a version to an existing secret"
        );
        versions[0].value.clone()
    };
    assert!(record.starts_with("CiQKI"), "{record}");
    kes::crypto::record::decode_record(record.as_bytes()).unwrap();

    // The oldest version is the key (upstream's rule): a later version changes nothing.
    a.state
        .lock()
        .unwrap()
        .add_version("az-key", "not-a-record");
    let d = c
        .request("POST", "/v1/key/decrypt/az-key", Some(body.as_bytes()), &[])
        .unwrap();
    assert_eq!(d.status, 200, "{}", body_str(&d));

    // A secret written by upstream (same layout) is served.
    a.state.lock().unwrap().add_version("upstream-key", &record);
    let r = c
        .request("POST", "/v1/key/generate/upstream-key", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));

    // Past several list pages (the stand-in pages at 10, with nextLink).
    for i in 0..25 {
        let r = c
            .request("POST", &format!("/v1/key/create/page-{i:02}"), None, &[])
            .unwrap();
        assert_eq!(r.status, 200, "page-{i}: {}", body_str(&r));
    }
    let text = body_str(&c.request("GET", "/v1/key/list/page-*", None, &[]).unwrap());
    for i in 0..25 {
        assert!(
            text.contains(&format!("\"page-{i:02}\"")),
            "page-{i:02} missing: {text}"
        );
    }
    let all = body_str(&c.request("GET", "/v1/key/list/*", None, &[]).unwrap());
    assert!(
        all.contains("\"az-key\"") && all.contains("\"upstream-key\""),
        "{all}"
    );

    // Delete = soft delete + purge (retried while Key Vault is still deleting), then 404.
    assert_eq!(
        c.request("DELETE", "/v1/key/delete/az-key", None, &[])
            .unwrap()
            .status,
        200
    );
    {
        let s = a.state.lock().unwrap();
        assert!(!s.secrets.contains_key("az-key") && !s.deleted.contains_key("az-key"));
        assert_eq!(s.purges, 2, "purge retried once after ObjectIsBeingDeleted");
    }
    assert_error(
        &c.request("POST", "/v1/key/generate/az-key", None, &[])
            .unwrap(),
        404,
        "key does not exist",
    );
    assert_error(
        &c.request("DELETE", "/v1/key/delete/az-key", None, &[])
            .unwrap(),
        404,
        "key does not exist",
    );
    // A name left soft-deleted (by another client) is purged and created again.
    {
        let mut s = a.state.lock().unwrap();
        s.secrets.remove("page-00");
        s.deleted.insert("page-00".into(), 0);
    }
    let r = c
        .request("POST", "/v1/key/create/page-00", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));

    // The 3 s token is renewed before it expires: no call is refused as unauthorized.
    std::thread::sleep(Duration::from_millis(3200));
    let r = c
        .request("POST", "/v1/key/create/after-renewal", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    {
        let s = a.state.lock().unwrap();
        assert!(
            s.tokens_issued >= 2,
            "token not renewed: {}",
            s.tokens_issued
        );
        assert_eq!(s.unauthorized, 0, "a call went out with an expired token");
        assert!(s.rejected.is_empty(), "{:?}", s.rejected);
    }
    // Key Vault cannot hold '_': refused before any call (as upstream, a failed create).
    let before = a.state.lock().unwrap().secrets.len();
    assert_error(
        &c.request("POST", "/v1/key/create/bad_name", None, &[])
            .unwrap(),
        502,
        "failed to create key",
    );
    assert_eq!(a.state.lock().unwrap().secrets.len(), before);
    let log = node.stderr_text();
    assert!(
        !log.contains(CLIENT_SECRET),
        "the client secret leaked into the log"
    );
    assert!(!log.contains("az-token-"), "a token leaked into the log");
}

#[test]
fn a_wrong_secret_unsupported_auth_and_an_outage_are_clear_errors() {
    let a = start_stand_in(3600);
    let config = |secret: &str| kes::config::AzureConfig {
        endpoint: format!("http://127.0.0.1:{}", a.port),
        authority_host: format!("http://127.0.0.1:{}", a.port),
        auth: kes::config::AzureAuth::ClientCredentials {
            tenant_id: TENANT.into(),
            client_id: CLIENT_ID.into(),
            client_secret: secret.into(),
        },
    };
    use kes::keystore::KeyStore;
    let wrong_secret = "wrong-secret-NOT-TO-BE-LOGGED";
    let err = kes::keystore::azure::AzureStore::new(config(wrong_secret))
        .unwrap()
        .create("k", b"v")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("status 401") && err.contains("invalid_client"),
        "{err}"
    );
    assert!(!err.contains(wrong_secret), "{err}");
    let good = kes::keystore::azure::AzureStore::new(config(CLIENT_SECRET)).unwrap();
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
    let mut msi = config(CLIENT_SECRET);
    msi.auth = kes::config::AzureAuth::ManagedIdentity {
        client_id: "x".into(),
    };
    let err = kes::keystore::azure::AzureStore::new(msi).err().unwrap();
    assert!(err.contains("managed identity is not supported"), "{err}");

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
    drop(bad);

    // An outage: cached keys keep working, others 502 at once, /v1/ready 504.
    let node = kes_on(&path, a.port, CLIENT_SECRET);
    let mut c = client_for(&format!("https://{}", node.addr), &api_key);
    for name in ["hot", "cold"] {
        let r = c
            .request("POST", &format!("/v1/key/create/{name}"), None, &[])
            .unwrap();
        assert_eq!(r.status, 200, "{}", body_str(&r));
    }
    assert_eq!(
        c.request("POST", "/v1/key/generate/hot", None, &[])
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        c.request("GET", "/v1/ready", None, &[]).unwrap().status,
        200
    );
    drop(a);
    std::thread::sleep(Duration::from_millis(1200));
    let started = Instant::now();
    assert_eq!(
        c.request("POST", "/v1/key/generate/hot", None, &[])
            .unwrap()
            .status,
        200,
        "cached keys keep working"
    );
    assert_error(
        &c.request("POST", "/v1/key/generate/cold", None, &[])
            .unwrap(),
        502,
        "failed to read key",
    );
    assert_error(
        &c.request("GET", "/v1/ready", None, &[]).unwrap(),
        504,
        "key store is not reachable",
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn the_documented_azure_example_loads() {
    let (_yaml, config, _dir) =
        documented_keystore_example("azure", &[("AZURE_CLIENT_SECRET", "example-secret")], &[]);
    let kes::config::KeystoreConfig::Azure(az) = config.keystore else {
        panic!("not the azure keystore");
    };
    assert_eq!(az.endpoint, "https://my-vault.vault.azure.net");
    assert_eq!(az.authority_host, "https://login.microsoftonline.com");
    kes::keystore::azure::AzureStore::new((*az).clone()).unwrap();
    let kes::config::AzureAuth::ClientCredentials { client_secret, .. } = az.auth else {
        panic!("not client credentials");
    };
    assert_eq!(client_secret, "example-secret");
}
