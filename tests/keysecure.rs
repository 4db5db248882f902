//! The Thales CipherTrust Manager / Gemalto KeySecure keystore against a stand-in of its
//! documented REST API (no emulator exists to run here), through `kes server --config`.
//!
//! The stand-in is strict: login with the refresh token (+ domain) at `/api/v1/auth/tokens`,
//! every other call with a live `Authorization: Bearer <jwt>`, exact methods, paths, query
//! parameters, content types and JSON body members; lists are paged by `limit`/`skip`.

mod common;
mod standin;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::lifecycle::{keystore_lifecycle, Backend, Lifecycle};
use common::*;
use standin::{
    bearer_is_live, issue_token, q, query_pairs, random_hex, Request, Response, StandIn,
};

const REFRESH: &str = "refresh-TOKEN-never-logged-3f9a";
const DOMAIN: &str = "kes-domain";
/// The stand-in serves at most this many names per page, whatever `limit` asks.
const PAGE_MAX: usize = 50;

#[derive(Default)]
struct State {
    /// name → (dataType, material)
    secrets: BTreeMap<String, (String, String)>,
    /// jwt → expiry
    tokens: HashMap<String, Instant>,
    ttl: Duration,
    logins: usize,
    rejected: Vec<String>,
}

fn reject(st: &mut State, req: &Request, status: u16, why: &str) -> Response {
    st.rejected
        .push(format!("{} {}?{}: {why}", req.method, req.path, req.query));
    Response::json(
        status,
        format!(r#"{{"code":{status},"codeDesc":{}}}"#, q(why)),
    )
}

fn handle(state: &Mutex<State>, req: &Request) -> Response {
    let mut st = state.lock().unwrap();
    let st = &mut *st;
    if req.path == "/" && req.method == "GET" {
        return Response::text(200, "CipherTrust Manager");
    }
    if req.path == "/api/v1/auth/tokens" {
        if req.method != "POST" {
            return reject(st, req, 405, "method not allowed");
        }
        if req.header("content-type") != Some("application/json") || !req.query.is_empty() {
            return reject(st, req, 400, "bad content type or query");
        }
        let Some(v) = req.json() else {
            return reject(st, req, 400, "body is not a JSON object");
        };
        use simd_json::prelude::*;
        let obj = v.as_object().unwrap();
        let get = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        if obj.len() != 3 || get("grant_type").as_deref() != Some("refresh_token") {
            return reject(st, req, 400, "expected grant_type, refresh_token, domain");
        }
        if get("refresh_token").as_deref() != Some(REFRESH)
            || get("domain").as_deref() != Some(DOMAIN)
        {
            // Echoes the token it got, as a careless server might: kes must not log it.
            let got = get("refresh_token").unwrap_or_default();
            return reject(st, req, 401, &format!("Invalid refresh token {got}"));
        }
        let jwt = issue_token(&mut st.tokens, st.ttl, "eyJ.", 16);
        st.logins += 1;
        return Response::json(
            200,
            format!(
                r#"{{"jwt":"{jwt}","duration":{},"token_type":"Bearer","client_id":"c","refresh_token_id":"r"}}"#,
                st.ttl.as_secs()
            ),
        );
    }
    // Everything else needs a live access token.
    if !bearer_is_live(req, &st.tokens, &mut st.rejected) {
        return Response::text(401, "Unauthorized");
    }
    let Some(rest) = req.path.strip_prefix("/api/v1/vault/secrets") else {
        return reject(st, req, 404, "no such resource");
    };
    match (req.method.as_str(), rest) {
        ("POST", "") => {
            if req.header("content-type") != Some("application/json") || !req.query.is_empty() {
                return reject(st, req, 400, "bad content type or query");
            }
            let Some(v) = req.json() else {
                return reject(st, req, 400, "body is not a JSON object");
            };
            use simd_json::prelude::*;
            let get = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
            let (Some(kind), Some(material), Some(name)) =
                (get("dataType"), get("material"), get("name"))
            else {
                return reject(st, req, 400, "dataType, material and name are required");
            };
            if v.as_object().unwrap().len() != 3
                || !["seed", "blob", "password"].contains(&kind.as_str())
            {
                return reject(st, req, 400, "unexpected members");
            }
            if st.secrets.contains_key(&name) {
                return Response::json(
                    409,
                    r#"{"code":4,"codeDesc":"NCERRResourceAlreadyExists: Resource already exists"}"#,
                );
            }
            st.secrets.insert(name.clone(), (kind, material));
            Response::json(
                201,
                format!(r#"{{"id":"{}","name":{}}}"#, random_hex(8), q(&name)),
            )
        }
        ("GET", "") => {
            let p = query_pairs(&req.query);
            let [(lk, lv), (sk, sv)] = p.as_slice() else {
                return reject(st, req, 400, "expected limit and skip");
            };
            let (Ok(limit), Ok(skip)) = (lv.parse::<usize>(), sv.parse::<usize>()) else {
                return reject(st, req, 400, "bad limit/skip");
            };
            if lk != "limit" || sk != "skip" || !req.body.is_empty() {
                return reject(st, req, 400, "expected limit and skip");
            }
            let names: Vec<String> = st
                .secrets
                .keys()
                .skip(skip)
                .take(limit.min(PAGE_MAX))
                .map(|n| format!(r#"{{"name":{},"dataType":"seed"}}"#, q(n)))
                .collect();
            Response::json(
                200,
                format!(
                    r#"{{"skip":{skip},"limit":{limit},"total":{},"resources":[{}]}}"#,
                    st.secrets.len(),
                    names.join(",")
                ),
            )
        }
        (method, rest) => {
            let (name, action) = match rest.strip_prefix('/').map(|r| r.split_once('/')) {
                Some(Some((n, a))) => (n.to_string(), Some(a)),
                Some(None) => (rest[1..].to_string(), None),
                None => return reject(st, req, 404, "no such resource"),
            };
            if req.query != "type=name" || !req.body.is_empty() {
                return reject(st, req, 400, "expected ?type=name and no body");
            }
            match (method, action) {
                ("POST", Some("export")) => match st.secrets.get(&name) {
                    Some((kind, material)) => Response::json(
                        200,
                        format!(
                            r#"{{"id":"x","name":{},"dataType":"{kind}","material":{}}}"#,
                            q(&name),
                            q(material)
                        ),
                    ),
                    None => Response::json(
                        404,
                        r#"{"code":5,"codeDesc":"NCERRResourceNotFound: Resource not found"}"#,
                    ),
                },
                ("DELETE", None) => match st.secrets.remove(&name) {
                    Some(_) => Response::empty(204),
                    None => Response::json(
                        404,
                        r#"{"code":5,"codeDesc":"NCERRResourceNotFound: Resource not found"}"#,
                    ),
                },
                _ => reject(st, req, 405, "method not allowed"),
            }
        }
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

/// Config for a `kes server --config` node: the refresh token and domain come from the
/// environment (`${ENV}` substitution in the block).
fn write_config(
    dir: &std::path::Path,
    tls: &TlsFiles,
    admin: &str,
    url: &str,
) -> std::path::PathBuf {
    let yaml = format!(
        "admin:\n  identity: {admin}\ntls:\n  key: {}\n  cert: {}\ncache:\n  expiry:\n    any: 5m\n    unused: 5m\nkeystore:\n  gemalto:\n    keysecure:\n      endpoint: ${{KES_TEST_KS_ENDPOINT}}\n      credentials:\n        token: ${{KES_TEST_KS_TOKEN}}\n        domain: ${{KES_TEST_KS_DOMAIN}}\n        retry: 15s\n",
        tls.key.display(),
        tls.cert.display(),
    );
    let path = dir.join("keysecure.yml");
    std::fs::write(&path, yaml).unwrap();
    let _ = url;
    path
}

fn kes_on(path: &std::path::Path, url: &str, token: &str) -> BinServer {
    let (url, token) = (url.to_string(), token.to_string());
    bin_server_with(&["--config", path.to_str().unwrap()], move |cmd| {
        cmd.env("KES_TEST_KS_ENDPOINT", url)
            .env("KES_TEST_KS_TOKEN", token)
            .env("KES_TEST_KS_DOMAIN", DOMAIN);
    })
}

/// The stand-in's secrets, as [`Backend`]: records are the material of a "seed" secret
/// named after the key.
struct CipherTrust(Arc<Mutex<State>>);

impl Backend for CipherTrust {
    fn record(&self, name: &str) -> Option<String> {
        let (kind, material) = self.0.lock().unwrap().secrets.get(name)?.clone();
        assert_eq!(kind, "seed");
        Some(material)
    }

    fn plant(&self, name: &str, record: &str) {
        self.0
            .lock()
            .unwrap()
            .secrets
            .insert(name.into(), ("seed".into(), record.into()));
    }
}

#[test]
fn keys_live_in_the_standin_as_upstream_stores_them() {
    let (mut standin, state) = start(Duration::from_secs(3600));
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &tls, &admin, &standin.url());
    let node = kes_on(&path, &standin.url(), REFRESH);
    let endpoint = format!("https://{}", node.addr);
    // the stand-in pages at 50
    let lifecycle = Lifecycle::one_node(&endpoint, &api_key, "ks-key", 120);
    keystore_lifecycle(&lifecycle, &CipherTrust(state.clone()));
    assert_eq!(
        state.lock().unwrap().logins,
        1,
        "one login serves all calls while the token lives"
    );

    // Revoked access tokens: kes logs in again with the refresh token and carries on; only
    // the revoked tokens were ever rejected; then the outage.
    standin::relogin_then_outage(
        &node,
        &api_key,
        || state.lock().unwrap().tokens.clear(),
        || state.lock().unwrap().logins,
        || state.lock().unwrap().rejected.clone(),
        || standin.stop(),
        REFRESH,
    );
}

#[test]
fn tokens_are_renewed_before_expiry_and_wrong_credentials_are_clear_errors() {
    use kes::keystore::KeyStore;
    let (standin, state) = start(Duration::from_secs(2));
    let store = |token: &str| {
        kes::keystore::keysecure::KeySecureStore::new(kes::config::KeySecureConfig {
            endpoint: standin.url(),
            token: token.into(),
            domain: DOMAIN.into(),
            tls_ca: None,
        })
        .unwrap()
    };
    let good = store(REFRESH);
    standin::created_once_and_read(&good);
    assert_eq!(state.lock().unwrap().logins, 1);
    // Past half the 2 s lifetime: renewed before it expires, no call is rejected.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(good.get("k").unwrap().expose(), b"v");
    assert_eq!(state.lock().unwrap().logins, 2);
    standin::listed_then_deleted(&good);
    assert!(state.lock().unwrap().rejected.is_empty());

    let wrong = "wrong-refresh-token-NOT-TO-BE-LOGGED";
    let err = store(wrong).create("x", b"v").unwrap_err().to_string();
    assert!(
        err.contains("KeySecure login failed with status 401"),
        "{err}"
    );
    assert!(err.contains("Invalid refresh token"), "{err}");
    assert!(!err.contains(wrong), "{err}");

    // Through kes: 502 for create and read, nothing of the token in the log.
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &tls, &admin, &standin.url());
    let bad = kes_on(&path, &standin.url(), wrong);
    standin::wrong_credentials_answer_502(&bad, &api_key, wrong);
    let mut c = client_for(&format!("https://{}", bad.addr), &api_key);
    assert_eq!(
        c.request("GET", "/v1/ready", None, &[]).unwrap().status,
        200
    );
}

#[test]
fn https_with_the_blocks_ca() {
    let state = Arc::new(Mutex::new(State {
        ttl: Duration::from_secs(3600),
        ..State::default()
    }));
    standin::trusts_only_the_blocks_ca(Arc::new(move |r| handle(&state, r)), |url, ca| {
        Box::new(
            kes::keystore::keysecure::KeySecureStore::new(kes::config::KeySecureConfig {
                endpoint: url,
                token: REFRESH.into(),
                domain: DOMAIN.into(),
                tls_ca: ca,
            })
            .unwrap(),
        )
    });
}

#[test]
fn the_documented_keysecure_example_loads() {
    let (_yaml, config, dir) = documented_keystore_example(
        "gemalto",
        &[("KEYSECURE_REFRESH_TOKEN", "example-refresh-token")],
        &["ciphertrust-ca.pem"],
    );
    let kes::config::KeystoreConfig::KeySecure(ks) = config.keystore else {
        panic!("not the keysecure keystore");
    };
    assert_eq!(ks.endpoint, "https://ciphertrust.example.com");
    assert_eq!(ks.token.expose(), "example-refresh-token");
    assert_eq!(
        ks.tls_ca.as_deref().and_then(|p| p.to_str()),
        Some("./ciphertrust-ca.pem")
    );
    // Opening it reads the CA (a missing one is an error) but does not call the service.
    let open = |ca: std::path::PathBuf| {
        kes::keystore::keysecure::KeySecureStore::new(kes::config::KeySecureConfig {
            tls_ca: Some(ca),
            ..(*ks).clone()
        })
    };
    assert!(open(dir.path().join("ciphertrust-ca.pem")).is_ok());
    assert!(open(dir.path().join("missing.pem")).is_err());
}

#[test]
fn kes_migrate_copies_records_verbatim_both_ways() {
    let (standin, state) = start(Duration::from_secs(3600));
    let dir = tempfile::tempdir().unwrap();
    let (from, back) = (dir.path().join("from"), dir.path().join("back"));
    std::fs::create_dir(&from).unwrap();
    let legacy = r#"{"bytes":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#;
    std::fs::write(from.join("legacy-key"), legacy).unwrap();
    std::fs::write(from.join("other-key"), legacy.replace('A', "B")).unwrap();
    let fs_cfg = |d: &std::path::Path, name: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("keystore:\n  fs:\n    path: {}\n", d.display())).unwrap();
        p
    };
    let ks = dir.path().join("ks.yml");
    std::fs::write(
        &ks,
        format!(
            "keystore:\n  gemalto:\n    keysecure:\n      endpoint: {}\n      credentials:\n        token: {REFRESH}\n        domain: {DOMAIN}\n",
            standin.url()
        ),
    )
    .unwrap();
    let migrate = |a: &std::path::Path, b: &std::path::Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kes"))
            .args([
                "migrate",
                "--from",
                a.to_str().unwrap(),
                "--to",
                b.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{err}");
        assert!(err.contains("Migrated 2 keys"), "{err}");
    };
    migrate(&fs_cfg(&from, "from.yml"), &ks);
    assert_eq!(state.lock().unwrap().secrets["legacy-key"].1, legacy);
    migrate(&ks, &fs_cfg(&back, "back.yml"));
    for name in ["legacy-key", "other-key"] {
        assert_eq!(
            std::fs::read(back.join(name)).unwrap(),
            std::fs::read(from.join(name)).unwrap()
        );
    }
}

/// Records upstream KES wrote (the fs fixture), stored as upstream's KeySecure code stores
/// them (a `seed` secret whose `material` is the record text), are served: upstream's
/// ciphertexts decrypt through kes.
#[test]
fn records_upstream_wrote_are_served() {
    let (standin, state) = start(Duration::from_secs(3600));
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &tls, &admin, &standin.url());
    let node = kes_on(&path, &standin.url(), REFRESH);
    standin::upstream::upstream_records_are_served(&node, &api_key, &CipherTrust(state.clone()));
}
