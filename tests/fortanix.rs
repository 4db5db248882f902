//! The Fortanix DSM (SDKMS) keystore against a stand-in of its documented REST API (no
//! emulator exists to run here), through `kes server --config`.
//!
//! The stand-in is strict: a session from the API key at `/sys/v1/session/auth` (`Basic`),
//! every other call with a live `Authorization: Bearer <token>`, exact methods, paths, query
//! parameters, content types and JSON body members; lists are paged by `start`/`limit`.

mod common;
mod standin;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use standin::{q, query_pairs, random_hex, Request, Response, StandIn};

const API_KEY: &str = "ZmFrZS1hcHAtaWQ6ZmFrZS1hcGkta2V5LXNlY3JldC0xMjM0NQ==";
const GROUP: &str = "4f4d3f0e-group-kes";
/// The stand-in serves at most this many objects per page, whatever `limit` asks.
const PAGE_MAX: usize = 40;

#[derive(Clone)]
struct Obj {
    kid: String,
    obj_type: String,
    group_id: String,
    key_ops: Vec<String>,
    value: String,
    enabled: bool,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Obj>,
    tokens: HashMap<String, Instant>,
    ttl: Duration,
    logins: usize,
    rejected: Vec<String>,
}

fn reject(st: &mut State, req: &Request, status: u16, why: &str) -> Response {
    st.rejected
        .push(format!("{} {}?{}: {why}", req.method, req.path, req.query));
    Response::json(status, format!(r#"{{"message":{}}}"#, q(why)))
}

fn handle(state: &Mutex<State>, req: &Request) -> Response {
    use simd_json::prelude::*;
    let mut st = state.lock().unwrap();
    let st = &mut *st;
    if req.path == "/" && req.method == "GET" {
        return Response::text(200, "Fortanix DSM");
    }
    if req.path == "/sys/v1/session/auth" {
        if req.method != "POST" || !req.query.is_empty() || !req.body.is_empty() {
            return reject(st, req, 405, "POST without a body expected");
        }
        let key = req
            .header("authorization")
            .and_then(|a| a.strip_prefix("Basic "))
            .unwrap_or("");
        if key != API_KEY {
            // Echoes what it got, as a careless server might: kes must not log it.
            return reject(st, req, 401, &format!("Invalid API key {key}"));
        }
        let token = random_hex(24);
        st.tokens.insert(token.clone(), Instant::now() + st.ttl);
        st.logins += 1;
        return Response::json(
            200,
            format!(
                r#"{{"token_type":"Bearer","expires_in":{},"access_token":"{token}","entity_id":"app-1"}}"#,
                st.ttl.as_secs()
            ),
        );
    }
    let live = req
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .and_then(|t| st.tokens.get(t))
        .is_some_and(|exp| Instant::now() < *exp);
    if !live {
        st.rejected
            .push(format!("{} {}: no live token", req.method, req.path));
        return Response::json(401, r#"{"message":"Session is not authenticated"}"#);
    }
    let json_body = req.header("content-type") == Some("application/json");
    match (req.method.as_str(), req.path.as_str()) {
        ("PUT", "/crypto/v1/keys") => {
            let Some(v) = req.json().filter(|_| json_body && req.query.is_empty()) else {
                return reject(st, req, 400, "a JSON object body expected");
            };
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
            let ops: Option<Vec<String>> = v.get("key_ops").and_then(|o| o.as_array()).map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            });
            let (Some(obj_type), Some(name), Some(value), Some(key_ops), Some(enabled)) = (
                s("obj_type"),
                s("name"),
                s("value"),
                ops,
                v.get("enabled").and_then(|e| e.as_bool()),
            ) else {
                return reject(
                    st,
                    req,
                    400,
                    "obj_type, name, value, key_ops, enabled required",
                );
            };
            let members = v.as_object().unwrap().len();
            let group_id = s("group_id").unwrap_or_default();
            if members != 5 + usize::from(v.get("group_id").is_some())
                || base64::engine::general_purpose::STANDARD
                    .decode(&value)
                    .is_err()
            {
                return reject(st, req, 400, "unexpected members or value not base64");
            }
            if st.objects.contains_key(&name) {
                return Response::json(409, r#"{"message":"sobject already exists"}"#);
            }
            let kid = format!("{}-{}", random_hex(4), random_hex(4));
            st.objects.insert(
                name.clone(),
                Obj {
                    kid: kid.clone(),
                    obj_type,
                    group_id,
                    key_ops,
                    value,
                    enabled,
                },
            );
            Response::json(201, format!(r#"{{"kid":"{kid}","name":{}}}"#, q(&name)))
        }
        ("POST", "/crypto/v1/keys/export") => {
            let Some(v) = req.json().filter(|_| json_body && req.query.is_empty()) else {
                return reject(st, req, 400, "a JSON object body expected");
            };
            let name = v.get("name").and_then(|n| n.as_str()).map(str::to_string);
            let (Some(name), 1) = (name, v.as_object().unwrap().len()) else {
                return reject(st, req, 400, "exactly {name} expected");
            };
            match st.objects.get(&name) {
                Some(o) => Response::json(
                    200,
                    format!(
                        r#"{{"kid":"{}","name":{},"obj_type":"{}","group_id":"{}","enabled":{},"value":"{}"}}"#,
                        o.kid,
                        q(&name),
                        o.obj_type,
                        o.group_id,
                        o.enabled,
                        o.value
                    ),
                ),
                None => Response::json(404, r#"{"message":"sobject does not exist"}"#),
            }
        }
        ("GET", "/crypto/v1/keys") => {
            let p = query_pairs(&req.query);
            let ok = p.len() >= 2
                && p[0] == ("sort".into(), "name:asc".into())
                && p[1] == ("limit".into(), "100".into())
                && (p.len() == 2 || (p.len() == 3 && p[2].0 == "start"));
            if !ok || !req.body.is_empty() {
                return reject(st, req, 400, "expected sort=name:asc&limit=100[&start=]");
            }
            // `start` names the first object of the page (inclusive).
            let start = p.get(2).map(|s| s.1.clone()).unwrap_or_default();
            let page: Vec<String> = st
                .objects
                .range(start..)
                .take(PAGE_MAX)
                .map(|(n, o)| format!(r#"{{"name":{},"kid":"{}"}}"#, q(n), o.kid))
                .collect();
            Response::json(200, format!("[{}]", page.join(",")))
        }
        ("DELETE", path) if path.starts_with("/crypto/v1/keys/") => {
            if !req.body.is_empty() || !req.query.is_empty() {
                return reject(st, req, 400, "no body expected");
            }
            let kid = &path["/crypto/v1/keys/".len()..];
            let name = st
                .objects
                .iter()
                .find(|(_, o)| o.kid == kid)
                .map(|(n, _)| n.clone());
            match name {
                Some(n) => {
                    st.objects.remove(&n);
                    Response::empty(204)
                }
                None => Response::json(404, r#"{"message":"sobject does not exist"}"#),
            }
        }
        _ => reject(st, req, 405, "no such method or resource"),
    }
}

fn start(ttl: Duration) -> (StandIn, Arc<Mutex<State>>) {
    let state = Arc::new(Mutex::new(State {
        ttl,
        ..State::default()
    }));
    let s = state.clone();
    (StandIn::start(Arc::new(move |r| handle(&s, r))), state)
}

/// Config for a `kes server --config` node: endpoint and API key come from the
/// environment (`${ENV}` substitution in the block).
fn write_config(dir: &std::path::Path, tls: &TlsFiles, admin: &str) -> std::path::PathBuf {
    let yaml = format!(
        "admin:\n  identity: {admin}\ntls:\n  key: {}\n  cert: {}\ncache:\n  expiry:\n    any: 5m\n    unused: 5m\nkeystore:\n  fortanix:\n    sdkms:\n      endpoint: ${{KES_TEST_DSM_ENDPOINT}}\n      group_id: ${{KES_TEST_DSM_GROUP}}\n      credentials:\n        key: ${{KES_TEST_DSM_KEY}}\n",
        tls.key.display(),
        tls.cert.display(),
    );
    let path = dir.join("fortanix.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn kes_on(path: &std::path::Path, url: &str, key: &str) -> BinServer {
    let (url, key) = (url.to_string(), key.to_string());
    bin_server_with(&["--config", path.to_str().unwrap()], move |cmd| {
        cmd.env("KES_TEST_DSM_ENDPOINT", url)
            .env("KES_TEST_DSM_KEY", key)
            .env("KES_TEST_DSM_GROUP", GROUP);
    })
}

#[test]
fn keys_live_in_the_standin_as_upstream_stores_them() {
    let (mut standin, state) = start(Duration::from_secs(3600));
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &tls, &admin);
    let node = kes_on(&path, &standin.url(), API_KEY);
    let mut c = client_for(&format!("https://{}", node.addr), &api_key);

    let r = c
        .request("POST", "/v1/key/create/dsm-key", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    assert_error(
        &c.request("POST", "/v1/key/create/dsm-key", None, &[])
            .unwrap(),
        400,
        "key already exists",
    );
    let r = c
        .request(
            "POST",
            "/v1/key/generate/dsm-key",
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
        .request(
            "POST",
            "/v1/key/decrypt/dsm-key",
            Some(body.as_bytes()),
            &[],
        )
        .unwrap();
    assert_eq!(d.status, 200, "{}", body_str(&d));
    assert_eq!(json_str(&d, "plaintext"), json_str(&r, "plaintext"));

    // Stored as upstream stores it: an enabled, exportable OPAQUE object named after the
    // key in the configured group, value = base64 of the record.
    let o = state.lock().unwrap().objects["dsm-key"].clone();
    assert_eq!(o.obj_type, "OPAQUE");
    assert_eq!(o.group_id, GROUP);
    assert_eq!(o.key_ops, ["EXPORT", "APPMANAGEABLE"]);
    assert!(o.enabled);
    let record = base64::engine::general_purpose::STANDARD
        .decode(&o.value)
        .unwrap();
    assert!(record.starts_with(b"CiQKI"), "{record:?}");
    kes::crypto::record::decode_record(&record).unwrap();

    // An object upstream wrote is served; a disabled one is an error.
    let mut other = o.clone();
    other.kid = "upstream-kid".into();
    state
        .lock()
        .unwrap()
        .objects
        .insert("upstream-key".into(), other.clone());
    other.kid = "disabled-kid".into();
    other.enabled = false;
    state
        .lock()
        .unwrap()
        .objects
        .insert("disabled-key".into(), other);
    let r = c
        .request("POST", "/v1/key/generate/upstream-key", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    assert_error(
        &c.request("POST", "/v1/key/generate/disabled-key", None, &[])
            .unwrap(),
        502,
        "failed to read key",
    );

    // Past several pages: 130 more keys (the stand-in pages at 40), all listed.
    for i in 0..130 {
        let r = c
            .request("POST", &format!("/v1/key/create/page-{i:03}"), None, &[])
            .unwrap();
        assert_eq!(r.status, 200, "page-{i}: {}", body_str(&r));
    }
    let text = body_str(&c.request("GET", "/v1/key/list/page-*", None, &[]).unwrap());
    for i in 0..130 {
        assert!(
            text.contains(&format!("\"page-{i:03}\"")),
            "page-{i:03} missing"
        );
    }
    assert!(!text.contains("dsm-key"));
    let all = body_str(&c.request("GET", "/v1/key/list/*", None, &[]).unwrap());
    assert!(all.contains("\"dsm-key\"") && all.contains("\"upstream-key\""));

    // An ended session: kes opens a new one with the API key and carries on.
    assert_eq!(
        state.lock().unwrap().logins,
        1,
        "one session serves all calls"
    );
    state.lock().unwrap().tokens.clear();
    let r = c
        .request("POST", "/v1/key/create/after-revoke", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    assert_eq!(state.lock().unwrap().logins, 2);

    // Delete (by kid): gone, then 404.
    assert_eq!(
        c.request("DELETE", "/v1/key/delete/dsm-key", None, &[])
            .unwrap()
            .status,
        200
    );
    assert!(!state.lock().unwrap().objects.contains_key("dsm-key"));
    assert_error(
        &c.request("POST", "/v1/key/generate/dsm-key", None, &[])
            .unwrap(),
        404,
        "key does not exist",
    );
    assert_error(
        &c.request("DELETE", "/v1/key/delete/dsm-key", None, &[])
            .unwrap(),
        404,
        "key does not exist",
    );
    let rejected = state.lock().unwrap().rejected.clone();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0].contains("no live token"), "{rejected:?}");

    // The stand-in down: cached keys keep working, others 502 at once, /v1/ready 504.
    assert_eq!(
        c.request("POST", "/v1/key/generate/upstream-key", None, &[])
            .unwrap()
            .status,
        200
    );
    standin.stop();
    std::thread::sleep(Duration::from_millis(1200)); // let the 1 s status cache age out
    let started = Instant::now();
    assert_eq!(
        c.request("POST", "/v1/key/generate/upstream-key", None, &[])
            .unwrap()
            .status,
        200,
        "cached keys keep working"
    );
    assert_error(
        &c.request("POST", "/v1/key/generate/page-000", None, &[])
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
    assert!(
        !node.stderr_text().contains(API_KEY),
        "the API key leaked into the log"
    );
}

#[test]
fn sessions_are_renewed_before_expiry_and_wrong_credentials_are_clear_errors() {
    use kes::keystore::KeyStore;
    let (standin, state) = start(Duration::from_secs(2));
    let store = |key: &str| {
        kes::keystore::fortanix::FortanixStore::new(kes::config::FortanixConfig {
            endpoint: standin.url(),
            group_id: String::new(),
            api_key: key.into(),
            tls_ca: None,
        })
        .unwrap()
    };
    let good = store(API_KEY);
    good.create("k", b"v").unwrap();
    assert!(matches!(
        good.create("k", b"v"),
        Err(kes::keystore::StoreError::AlreadyExists)
    ));
    assert_eq!(
        state.lock().unwrap().objects["k"].group_id,
        "",
        "no group_id sent"
    );
    assert_eq!(good.get("k").unwrap().expose(), b"v");
    assert_eq!(state.lock().unwrap().logins, 1);
    std::thread::sleep(Duration::from_millis(1100)); // past half the 2 s lifetime
    assert_eq!(good.get("k").unwrap().expose(), b"v");
    assert_eq!(state.lock().unwrap().logins, 2);
    assert_eq!(good.list("").unwrap(), vec!["k".to_string()]);
    good.delete("k").unwrap();
    assert!(matches!(
        good.get("k"),
        Err(kes::keystore::StoreError::NotFound)
    ));
    assert!(state.lock().unwrap().rejected.is_empty());

    let wrong = "d3Jvbmc6YXBpLWtleS1OT1QtVE8tQkUtTE9HR0VE";
    let err = store(wrong).create("x", b"v").unwrap_err().to_string();
    assert!(
        err.contains("Fortanix DSM login failed with status 401"),
        "{err}"
    );
    assert!(err.contains("Invalid API key"), "{err}");
    assert!(!err.contains(wrong), "{err}");

    // Through kes: 502 for create and read, nothing of the key in the log.
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &tls, &admin);
    let bad = kes_on(&path, &standin.url(), wrong);
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
    assert!(!bad.stderr_text().contains(wrong));
}

#[test]
fn https_with_the_blocks_ca() {
    use kes::keystore::KeyStore;
    let state = Arc::new(Mutex::new(State {
        ttl: Duration::from_secs(3600),
        ..State::default()
    }));
    let s = state.clone();
    let (standin, ca_pem) = StandIn::start_tls(Arc::new(move |r| handle(&s, r)));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let store = |ca: Option<std::path::PathBuf>| {
        kes::keystore::fortanix::FortanixStore::new(kes::config::FortanixConfig {
            endpoint: standin.https_url(),
            group_id: GROUP.into(),
            api_key: API_KEY.into(),
            tls_ca: ca,
        })
        .unwrap()
    };
    let trusted = store(Some(ca));
    trusted.create("tls-key", b"v").unwrap();
    assert_eq!(trusted.get("tls-key").unwrap().expose(), b"v");
    assert_eq!(trusted.list("tls").unwrap(), vec!["tls-key".to_string()]);
    // Without the block's CA the server's certificate is not trusted.
    let err = store(None).get("tls-key").unwrap_err().to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[test]
fn the_documented_fortanix_example_loads() {
    let (_yaml, config, _dir) =
        documented_keystore_example("fortanix", &[("FORTANIX_API_KEY", "example-api-key")], &[]);
    let kes::config::KeystoreConfig::Fortanix(f) = config.keystore else {
        panic!("not the fortanix keystore");
    };
    assert_eq!(f.endpoint, "https://sdkms.fortanix.com");
    assert_eq!(f.api_key, "example-api-key");
    assert!(!f.group_id.is_empty());
    assert!(kes::keystore::fortanix::FortanixStore::new((*f).clone()).is_ok());
}
