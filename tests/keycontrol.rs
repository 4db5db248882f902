//! The Entrust KeyControl keystore against a stand-in of its documented vault REST API (no
//! emulator exists to run here), through `kes server --config`.
//!
//! The stand-in is strict: login with username/password at `/vault/1.0/Login/<vault>/`,
//! every other call a `POST` with a live `X-Vault-Auth` token, exact paths, content types
//! and JSON body members (right `box_id`, else `404 {"error":"Box not found"}`); a missing
//! secret is `404 {"error":"Secret not found"}`; `GetBox` describes the box; `Renew` (no
//! body) trades a live token for a new one; lists are paged by `next_token`.

mod common;
mod standin;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::lifecycle::{keystore_lifecycle, Backend, Lifecycle};
use common::*;
use standin::{issue_token, q, token_is_live, Request, Response, StandIn};

const VAULT: &str = "0b9d5f6e-1c2a-4e8f-9a3b-7c6d5e4f3a2b";
const BOX: &str = "kes-box";
const USER: &str = "kes";
const PASSWORD: &str = "pass-WORD-never-logged-77";
/// The stand-in serves at most this many names per page, whatever `max_items` asks.
const PAGE_MAX: usize = 30;

#[derive(Default)]
struct State {
    /// name → (secret_data as sent, expired)
    secrets: BTreeMap<String, (String, bool)>,
    tokens: HashMap<String, Instant>,
    ttl: Duration,
    logins: usize,
    /// Tokens renewed, and whether renewals are refused (as for a revoked session).
    renewals: usize,
    renew_refused: bool,
    /// `GetBox` calls answered.
    box_reads: usize,
    rejected: Vec<String>,
}

fn reject(st: &mut State, req: &Request, status: u16, why: &str) -> Response {
    st.rejected
        .push(format!("{} {}: {why}", req.method, req.path));
    Response::json(status, format!(r#"{{"error":{}}}"#, q(why)))
}

/// RFC 3339 UTC time `secs` from now.
fn rfc3339_in(secs: u64) -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + secs;
    let (days, rem) = ((t / 86_400) as i64, t % 86_400);
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000000Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn handle(state: &Mutex<State>, req: &Request) -> Response {
    use simd_json::prelude::*;
    let mut st = state.lock().unwrap();
    let st = &mut *st;
    if req.path == "/" && req.method == "GET" {
        return Response::text(200, "KeyControl");
    }
    if req.method != "POST" {
        return reject(st, req, 405, "method not allowed");
    }
    if req.path == "/vault/1.0/Renew/" {
        if !req.body.is_empty() || st.renew_refused {
            return reject(st, req, 401, "Unauthorized");
        }
        if !token_is_live(req, "x-vault-auth", "", &st.tokens, &mut st.rejected) {
            return Response::json(401, r#"{"error":"Unauthorized"}"#);
        }
        let token = issue_token(&mut st.tokens, st.ttl, "", 20);
        st.renewals += 1;
        return Response::json(
            200,
            format!(
                r#"{{"access_token":"{token}","expires_at":"{}"}}"#,
                rfc3339_in(st.ttl.as_secs())
            ),
        );
    }
    let Some(v) = req
        .json()
        .filter(|_| req.header("content-type") == Some("application/json") && req.query.is_empty())
    else {
        return reject(st, req, 400, "a JSON object body expected");
    };
    let members = v.as_object().unwrap().len();
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    if let Some(vault) = req
        .path
        .strip_prefix("/vault/1.0/Login/")
        .and_then(|r| r.strip_suffix('/'))
    {
        if vault != VAULT {
            return reject(st, req, 404, "no such vault");
        }
        if members != 2
            || s("username").as_deref() != Some(USER)
            || s("password").as_deref() != Some(PASSWORD)
        {
            // Echoes what it got, as a careless server might: kes must not log it.
            let got = s("password").unwrap_or_default();
            return reject(
                st,
                req,
                401,
                &format!("Invalid credentials (password {got})"),
            );
        }
        let token = issue_token(&mut st.tokens, st.ttl, "", 20);
        st.logins += 1;
        return Response::json(
            200,
            format!(
                r#"{{"access_token":"{token}","expires_at":"{}","user":"kes"}}"#,
                rfc3339_in(st.ttl.as_secs())
            ),
        );
    }
    if !token_is_live(req, "x-vault-auth", "", &st.tokens, &mut st.rejected) {
        return Response::json(401, r#"{"error":"Unauthorized"}"#);
    }
    if s("box_id").as_deref() != Some(BOX) {
        return reject(st, req, 404, "Box not found");
    }
    match req.path.as_str() {
        "/vault/1.0/GetBox/" if members == 1 => {
            st.box_reads += 1;
            Response::json(
                200,
                format!(
                    r#"{{"box_id":"{BOX}","name":"{BOX}","secret_count":{}}}"#,
                    st.secrets.len()
                ),
            )
        }
        "/vault/1.0/CreateSecret/" => {
            let (Some(name), Some(data), 3) = (s("name"), s("secret_data"), members) else {
                return reject(st, req, 400, "box_id, name, secret_data expected");
            };
            if base64::engine::general_purpose::STANDARD
                .decode(&data)
                .is_err()
            {
                return reject(st, req, 400, "secret_data is not base64");
            }
            if st.secrets.contains_key(&name) {
                return Response::json(409, r#"{"error":"Secret already exists"}"#);
            }
            st.secrets.insert(name.clone(), (data, false));
            Response::json(200, format!(r#"{{"secret_id":{}}}"#, q(&name)))
        }
        "/vault/1.0/CheckoutSecret/" | "/vault/1.0/DeleteSecret/" => {
            let (Some(id), 2) = (s("secret_id"), members) else {
                return reject(st, req, 400, "box_id, secret_id expected");
            };
            let Some((data, _)) = st.secrets.get(&id).cloned() else {
                return Response::json(404, r#"{"error":"Secret not found"}"#);
            };
            if req.path.contains("Delete") {
                st.secrets.remove(&id);
                return Response::json(200, "{}");
            }
            Response::json(
                200,
                format!(r#"{{"secret_id":{},"secret_data":"{data}"}}"#, q(&id)),
            )
        }
        "/vault/1.0/ListSecretIds/" => {
            let max = v.get("max_items").and_then(|m| m.as_u64());
            let next = s("next_token");
            let expected = 2 + usize::from(v.get("next_token").is_some());
            let (Some(max), true) = (max, members == expected) else {
                return reject(st, req, 400, "box_id, max_items[, next_token] expected");
            };
            // The continuation token: base64 of {"box_id","next_ctx":<first name of the page>}.
            let start = match &next {
                None => String::new(),
                Some(t) => {
                    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(t) else {
                        return reject(st, req, 400, "bad next_token");
                    };
                    let mut raw = raw;
                    let Ok(tv) = simd_json::to_owned_value(&mut raw) else {
                        return reject(st, req, 400, "bad next_token");
                    };
                    tv.get("next_ctx")
                        .and_then(|c| c.as_str())
                        .unwrap_or("")
                        .to_string()
                }
            };
            let mut it = st.secrets.range(start..);
            let page: Vec<String> = it
                .by_ref()
                .take((max as usize).min(PAGE_MAX))
                .map(|(n, (_, expired))| format!(r#"{{"name":{},"expired":{expired}}}"#, q(n)))
                .collect();
            let token = it
                .next()
                .map(|(n, _)| {
                    base64::engine::general_purpose::STANDARD
                        .encode(format!(r#"{{"box_id":"{BOX}","next_ctx":{}}}"#, q(n)))
                })
                .unwrap_or_default();
            Response::json(
                200,
                format!(
                    r#"{{"secrets":[{}],"next_token":"{token}"}}"#,
                    page.join(",")
                ),
            )
        }
        _ => reject(st, req, 404, "no such operation"),
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

/// Config for a `kes server --config` node: endpoint and password come from the
/// environment (`${ENV}` substitution in the block).
fn write_config(dir: &std::path::Path, tls: &TlsFiles, admin: &str) -> std::path::PathBuf {
    let yaml = format!(
        "admin:\n  identity: {admin}\ntls:\n  key: {}\n  cert: {}\ncache:\n  expiry:\n    any: 5m\n    unused: 5m\nkeystore:\n  entrust:\n    keycontrol:\n      endpoint: ${{KES_TEST_KC_ENDPOINT}}\n      vault_id: {VAULT}\n      box_id: ${{KES_TEST_KC_BOX}}\n      credentials:\n        username: {USER}\n        password: ${{KES_TEST_KC_PASSWORD}}\n",
        tls.key.display(),
        tls.cert.display(),
    );
    let path = dir.join("keycontrol.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn kes_on(path: &std::path::Path, url: &str, password: &str) -> BinServer {
    let (url, password) = (url.to_string(), password.to_string());
    bin_server_with(&["--config", path.to_str().unwrap()], move |cmd| {
        cmd.env("KES_TEST_KC_ENDPOINT", url)
            .env("KES_TEST_KC_PASSWORD", password)
            .env("KES_TEST_KC_BOX", BOX);
    })
}

/// The stand-in's secrets, as [`Backend`]: records are the base64 `secret_data` (Go's
/// encoding of `[]byte`) of a secret named after the key.
struct KeyControl(Arc<Mutex<State>>);

impl Backend for KeyControl {
    fn record(&self, name: &str) -> Option<String> {
        let (data, _) = self.0.lock().unwrap().secrets.get(name)?.clone();
        Some(String::from_utf8(B64.decode(data).unwrap()).unwrap())
    }

    fn plant(&self, name: &str, record: &str) {
        self.0
            .lock()
            .unwrap()
            .secrets
            .insert(name.into(), (B64.encode(record), false));
    }
}

#[test]
fn keys_live_in_the_standin_as_upstream_stores_them() {
    let (mut standin, state) = start(Duration::from_secs(3600));
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &tls, &admin);
    let node = kes_on(&path, &standin.url(), PASSWORD);
    let endpoint = format!("https://{}", node.addr);
    // the stand-in pages at 30
    let lifecycle = Lifecycle::one_node(&endpoint, &api_key, "kc-key", 100);
    let record = keystore_lifecycle(&lifecycle, &KeyControl(state.clone()));
    assert_eq!(
        state.lock().unwrap().logins,
        1,
        "one login serves all calls"
    );

    // An expired secret is not listed.
    state
        .lock()
        .unwrap()
        .secrets
        .insert("expired-key".into(), (B64.encode(&record), true));
    let mut c = client_for(&endpoint, &api_key);
    let all = body_str(&c.request("GET", "/v1/key/list/*", None, &[]).unwrap());
    assert!(all.contains("\"upstream-key\""), "{all}");
    assert!(!all.contains("expired-key"), "{all}");

    // Revoked tokens: kes logs in again and carries on; then the outage.
    standin::relogin_then_outage(
        &node,
        &api_key,
        || state.lock().unwrap().tokens.clear(),
        || state.lock().unwrap().logins,
        || state.lock().unwrap().rejected.clone(),
        || standin.stop(),
        PASSWORD,
    );
}

#[test]
fn tokens_are_renewed_before_expiry_and_wrong_credentials_are_clear_errors() {
    use kes::keystore::KeyStore;
    let (standin, state) = start(Duration::from_secs(6));
    let store = |password: &str| {
        kes::keystore::keycontrol::KeyControlStore::new(kes::config::KeyControlConfig {
            endpoint: standin.url(),
            vault_id: VAULT.into(),
            box_id: BOX.into(),
            username: USER.into(),
            password: password.into(),
            tls_ca: None,
        })
        .unwrap()
    };
    let good = store(PASSWORD);
    standin::created_once_and_read(&good);
    assert_eq!(state.lock().unwrap().logins, 1);
    // expires_at is 5 to 6 s away (whole seconds): past half of it, and well before its
    // end, the token is renewed with the renew call, as upstream, not with a new login.
    std::thread::sleep(Duration::from_millis(3100));
    assert_eq!(good.get("k").unwrap().expose(), b"v");
    assert_eq!(state.lock().unwrap().renewals, 1);
    assert_eq!(state.lock().unwrap().logins, 1);
    // A refused renewal: a new login.
    state.lock().unwrap().renew_refused = true;
    std::thread::sleep(Duration::from_millis(3100));
    assert_eq!(good.get("k").unwrap().expose(), b"v");
    assert_eq!(state.lock().unwrap().logins, 2);
    {
        let mut s = state.lock().unwrap();
        s.renew_refused = false;
        s.rejected.retain(|r| !r.contains("/Renew/"));
    }
    standin::listed_then_deleted(&good);
    assert!(matches!(
        good.delete("k"),
        Err(kes::keystore::StoreError::NotFound)
    ));
    assert!(
        state.lock().unwrap().rejected.is_empty(),
        "{:?}",
        state.lock().unwrap().rejected
    );

    let wrong = "wrong-password-NOT-TO-BE-LOGGED";
    let err = store(wrong).create("x", b"v").unwrap_err().to_string();
    assert!(
        err.contains("KeyControl login failed with status 401"),
        "{err}"
    );
    assert!(err.contains("Invalid credentials"), "{err}");
    assert!(!err.contains(wrong), "{err}");

    // Through kes: 502 for create and read, nothing of the password in the log.
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &tls, &admin);
    let bad = kes_on(&path, &standin.url(), wrong);
    standin::wrong_credentials_answer_502(&bad, &api_key, wrong);
}

#[test]
fn https_with_the_blocks_ca() {
    let state = Arc::new(Mutex::new(State {
        ttl: Duration::from_secs(3600),
        ..State::default()
    }));
    standin::trusts_only_the_blocks_ca(Arc::new(move |r| handle(&state, r)), |url, ca| {
        Box::new(
            kes::keystore::keycontrol::KeyControlStore::new(kes::config::KeyControlConfig {
                endpoint: url,
                vault_id: VAULT.into(),
                box_id: BOX.into(),
                username: USER.into(),
                password: PASSWORD.into(),
                tls_ca: ca,
            })
            .unwrap(),
        )
    });
}

#[test]
fn the_documented_keycontrol_example_loads() {
    let (yaml, config, _dir) = documented_keystore_example(
        "entrust",
        &[("KEYCONTROL_PASSWORD", "example-password")],
        &[],
    );
    let env = example_env(&[("KEYCONTROL_PASSWORD", "example-password")]);
    let kes::config::KeystoreConfig::KeyControl(k) = config.keystore else {
        panic!("not the keycontrol keystore");
    };
    assert_eq!(k.endpoint, "https://keycontrol.example.com");
    assert_eq!(k.password.expose(), "example-password");
    assert!(!k.vault_id.is_empty() && !k.box_id.is_empty());
    assert!(kes::keystore::keycontrol::KeyControlStore::new((*k).clone()).is_ok());
    // A missing field is named.
    let broken = yaml.replace("box_id:", "# box_id:");
    let e = kes::config::parse(&broken, &env).unwrap_err().to_string();
    assert!(
        e.contains("keystore.entrust.keycontrol.box_id: missing"),
        "{e}"
    );
}

fn store_for(
    standin: &StandIn,
    box_id: &str,
    password: &str,
) -> kes::keystore::keycontrol::KeyControlStore {
    kes::keystore::keycontrol::KeyControlStore::new(kes::config::KeyControlConfig {
        endpoint: standin.url(),
        vault_id: VAULT.into(),
        box_id: box_id.into(),
        username: USER.into(),
        password: password.into(),
        tls_ca: None,
    })
    .unwrap()
}

/// Issue 21 item 8: a 404 is a missing key only when KeyControl says "Secret not found"; a
/// box that is not there is a configuration error (kes answers 502, not "key not found").
#[test]
fn a_wrong_box_is_a_configuration_error_not_a_missing_key() {
    use kes::keystore::{KeyStore, StoreError};
    let (standin, _state) = start(Duration::from_secs(3600));
    let good = store_for(&standin, BOX, PASSWORD);
    assert!(matches!(good.get("absent"), Err(StoreError::NotFound)));
    assert!(matches!(good.delete("absent"), Err(StoreError::NotFound)));
    good.create("present", b"v").unwrap();
    let wrong = store_for(&standin, "no-such-box", PASSWORD);
    for e in [
        wrong.get("present").unwrap_err(),
        wrong.delete("present").unwrap_err(),
    ] {
        assert!(!matches!(e, StoreError::NotFound), "{e}");
        assert!(e.to_string().contains("Box not found"), "{e}");
    }
    assert!(!matches!(
        wrong.create("present", b"v"),
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(good.get("present").unwrap().expose(), b"v", "nothing lost");

    // Through kes: 502, not 404.
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &tls, &admin);
    let url = standin.url();
    let node = bin_server_with(&["--config", path.to_str().unwrap()], move |cmd| {
        cmd.env("KES_TEST_KC_ENDPOINT", url)
            .env("KES_TEST_KC_PASSWORD", PASSWORD)
            .env("KES_TEST_KC_BOX", "no-such-box");
    });
    let mut c = client_for(&format!("https://{}", node.addr), &api_key);
    assert_error(
        &c.request("POST", "/v1/key/generate/present", None, &[])
            .unwrap(),
        502,
        "failed to read key",
    );
}

/// Readiness is upstream's probe: the session's token and `GetBox`, so wrong credentials
/// or a wrong box are not ready.
#[test]
fn readiness_checks_the_credentials_and_the_box() {
    use kes::keystore::KeyStore;
    let (standin, state) = start(Duration::from_secs(3600));
    store_for(&standin, BOX, PASSWORD).status().unwrap();
    assert_eq!(state.lock().unwrap().box_reads, 1);
    let e = store_for(&standin, BOX, "wrong-password-NOT-LOGGED")
        .status()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("login failed with status 401") && !e.contains("NOT-LOGGED"),
        "{e}"
    );
    let e = store_for(&standin, "no-such-box", PASSWORD)
        .status()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("GetBox failed with status 404: Box not found"),
        "{e}"
    );
}

/// Records upstream KES wrote (the fs fixture), stored as upstream's KeyControl code stores
/// them (`secret_data` = the record's bytes in base64), are served: upstream's ciphertexts
/// decrypt through kes.
#[test]
fn records_upstream_wrote_are_served() {
    let (standin, state) = start(Duration::from_secs(3600));
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &tls, &admin);
    let node = kes_on(&path, &standin.url(), PASSWORD);
    standin::upstream::upstream_records_are_served(&node, &api_key, &KeyControl(state.clone()));
}
