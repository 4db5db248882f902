//! The Fortanix DSM (SDKMS) keystore against a stand-in of its documented REST API (no
//! emulator exists to run here), through `kes server --config`.
//!
//! The stand-in (`tests/standin/fortanix.rs`) is strict: sessions, methods, paths, query
//! parameters, content types and JSON body members.

mod common;
mod standin;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use common::lifecycle::{keystore_lifecycle, Backend, Lifecycle};
use common::*;
use standin::fortanix::{handle, start, Obj, State, API_KEY};
use standin::random_hex;

const GROUP: &str = "4f4d3f0e-group-kes";

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

/// The stand-in's objects, as [`Backend`]: records are the base64 `value` of an enabled,
/// exportable OPAQUE object named after the key, in the configured group.
struct Dsm(Arc<Mutex<State>>);

impl Backend for Dsm {
    fn record(&self, name: &str) -> Option<String> {
        let o = self.0.lock().unwrap().objects.get(name)?.clone();
        assert_eq!(o.obj_type, "OPAQUE");
        assert_eq!(o.group_id, GROUP);
        assert_eq!(o.key_ops, ["EXPORT", "APPMANAGEABLE"]);
        assert!(o.enabled);
        Some(String::from_utf8(B64.decode(&o.value).unwrap()).unwrap())
    }

    fn plant(&self, name: &str, record: &str) {
        self.0
            .lock()
            .unwrap()
            .objects
            .insert(name.into(), upstream_object(record, true));
    }
}

fn upstream_object(record: &str, enabled: bool) -> Obj {
    Obj {
        kid: random_hex(8),
        obj_type: "OPAQUE".into(),
        group_id: GROUP.into(),
        key_ops: vec!["EXPORT".into(), "APPMANAGEABLE".into()],
        value: B64.encode(record),
        enabled,
        replaced: None,
        replacement: None,
    }
}

#[test]
fn keys_live_in_the_standin_as_upstream_stores_them() {
    let (mut standin, state) = start(Duration::from_secs(3600));
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &tls, &admin);
    let node = kes_on(&path, &standin.url(), API_KEY);
    let endpoint = format!("https://{}", node.addr);
    // the stand-in pages at 40
    let lifecycle = Lifecycle::one_node(&endpoint, &api_key, "dsm-key", 130);
    let record = keystore_lifecycle(&lifecycle, &Dsm(state.clone()));
    assert_eq!(
        state.lock().unwrap().logins,
        1,
        "one session serves all calls"
    );
    // A disabled object is an error.
    state
        .lock()
        .unwrap()
        .objects
        .insert("disabled-key".into(), upstream_object(&record, false));
    let mut c = client_for(&endpoint, &api_key);
    assert_error(
        &c.request("POST", "/v1/key/generate/disabled-key", None, &[])
            .unwrap(),
        502,
        "failed to read key",
    );

    // An ended session: kes opens a new one with the API key and carries on; then the
    // outage.
    standin::relogin_then_outage(
        &node,
        &api_key,
        || state.lock().unwrap().tokens.clear(),
        || state.lock().unwrap().logins,
        || state.lock().unwrap().rejected.clone(),
        || standin.stop(),
        API_KEY,
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
    standin::created_once_and_read(&good);
    assert_eq!(
        state.lock().unwrap().objects["k"].group_id,
        "",
        "no group_id sent"
    );
    assert_eq!(state.lock().unwrap().logins, 1);
    std::thread::sleep(Duration::from_millis(1100)); // past half the 2 s lifetime
    assert_eq!(good.get("k").unwrap().expose(), b"v");
    assert_eq!(state.lock().unwrap().logins, 2);
    standin::listed_then_deleted(&good);
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
            kes::keystore::fortanix::FortanixStore::new(kes::config::FortanixConfig {
                endpoint: url,
                group_id: GROUP.into(),
                api_key: API_KEY.into(),
                tls_ca: ca,
            })
            .unwrap(),
        )
    });
}

#[test]
fn the_documented_fortanix_example_loads() {
    let (_yaml, config, _dir) =
        documented_keystore_example("fortanix", &[("FORTANIX_API_KEY", "example-api-key")], &[]);
    let kes::config::KeystoreConfig::Fortanix(f) = config.keystore else {
        panic!("not the fortanix keystore");
    };
    assert_eq!(f.endpoint, "https://sdkms.fortanix.com");
    assert_eq!(f.api_key.expose(), "example-api-key");
    assert!(!f.group_id.is_empty());
    assert!(kes::keystore::fortanix::FortanixStore::new((*f).clone()).is_ok());
}

/// Records upstream KES wrote (the fs fixture), stored as upstream's Fortanix code stores
/// them (an OPAQUE security object whose `value` is the record's bytes in base64), are served:
/// upstream's ciphertexts decrypt through kes.
#[test]
fn records_upstream_wrote_are_served() {
    let (standin, state) = start(Duration::from_secs(3600));
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &tls, &admin);
    let node = kes_on(&path, &standin.url(), API_KEY);
    standin::upstream::upstream_records_are_served(&node, &api_key, &Dsm(state.clone()));
}

fn library_store(url: &str) -> kes::keystore::fortanix::FortanixStore {
    kes::keystore::fortanix::FortanixStore::new(kes::config::FortanixConfig {
        endpoint: url.into(),
        group_id: GROUP.into(),
        api_key: API_KEY.into(),
        tls_ca: None,
    })
    .unwrap()
}

/// The stand-in's object names, in order.
fn object_names(state: &Mutex<State>) -> Vec<String> {
    state.lock().unwrap().objects.keys().cloned().collect()
}

#[test]
fn a_replace_gives_the_name_a_new_object_and_delete_removes_every_one() {
    use kes::keystore::{KeyStore, ReplaceKind, StoreError};
    let (_standin, state) = start(Duration::from_secs(3600));
    let store = library_store(&_standin.url());
    assert_eq!(store.replace_kind(), ReplaceKind::ReadCompareWrite);
    store.create("k", b"record-1").unwrap();
    store.create("k2", b"other").unwrap();
    let kid_1 = state.lock().unwrap().objects["k"].kid.clone();

    // Stale old: nothing changes, nothing is imported.
    assert!(matches!(
        store.replace("k", b"record-0", b"kes:keyring:v1:A"),
        Err(StoreError::Conflict)
    ));
    assert_eq!(object_names(&state), ["k", "k2"]);
    assert_eq!(store.get("k").unwrap().expose(), b"record-1");
    assert!(matches!(
        store.replace("missing", b"x", b"kes:keyring:v1:A"),
        Err(StoreError::NotFound)
    ));
    assert_eq!(object_names(&state), ["k", "k2"]);

    store
        .replace("k", b"record-1", b"kes:keyring:v1:A")
        .unwrap();
    assert_eq!(store.get("k").unwrap().expose(), b"kes:keyring:v1:A");
    {
        let st = state.lock().unwrap();
        // The name holds a new object, linked to the replaced one, which is gone.
        assert_ne!(st.objects["k"].kid, kid_1);
        assert_eq!(st.objects["k"].replaced.as_deref(), Some(kid_1.as_str()));
        assert_eq!(st.objects.len(), 2, "{:?}", st.objects.keys());
        assert!(st.rejected.is_empty(), "{:?}", st.rejected);
    }
    Dsm(state.clone()).record("k").unwrap();
    assert!(matches!(
        store.replace("k", b"record-1", b"kes:keyring:v1:AB"),
        Err(StoreError::Conflict)
    ));
    store
        .replace("k", b"kes:keyring:v1:A", b"kes:keyring:v1:AB")
        .unwrap();
    assert_eq!(store.get("k").unwrap().expose(), b"kes:keyring:v1:AB");
    assert_eq!(store.list("").unwrap(), ["k", "k2"]);

    // Replaced objects whose removal failed stay behind, linked: left out of lists,
    // removed by delete with the key.
    let kid_ab = state.lock().unwrap().objects["k"].kid.clone();
    let held = upstream_object("kes:keyring:v1:AB", true);
    {
        // What a rotation whose last step failed leaves: the replaced object under its new
        // name, linked both ways.
        let mut st = state.lock().unwrap();
        let mut old = st.objects.remove("k").unwrap();
        let mut new = held.clone();
        new.value = B64.encode("kes:keyring:v1:ABC");
        old.replacement = Some(new.kid.clone());
        new.replaced = Some(old.kid.clone());
        st.objects
            .insert("k (kes replaced 0123456789abcdef)".into(), old);
        st.objects.insert("k".into(), new);
    }
    assert_eq!(store.get("k").unwrap().expose(), b"kes:keyring:v1:ABC");
    assert_eq!(store.list("").unwrap(), ["k", "k2"]);
    assert_eq!(store.list("k").unwrap(), ["k", "k2"]);
    store.delete("k").unwrap();
    assert_eq!(object_names(&state), ["k2"], "kid {kid_ab} left behind");
    assert!(matches!(store.get("k"), Err(StoreError::NotFound)));
    assert!(matches!(store.delete("k"), Err(StoreError::NotFound)));
    assert_eq!(store.list("").unwrap(), ["k2"]);

    // An unrotated key: one export to read, export + delete to remove, as before.
    let calls = || state.lock().unwrap().requests;
    let before = calls();
    assert_eq!(store.get("k2").unwrap().expose(), b"other");
    assert_eq!(calls() - before, 1);
    store.delete("k2").unwrap();
    assert_eq!(calls() - before, 3);
    assert!(object_names(&state).is_empty());
    assert!(state.lock().unwrap().rejected.is_empty());
}

#[test]
fn a_replace_the_service_refuses_leaves_the_key_and_no_object_behind() {
    use kes::keystore::KeyStore;
    let (_standin, state) = start(Duration::from_secs(3600));
    let store = library_store(&_standin.url());
    store.create("k", b"record-1").unwrap();
    // The key's object is in another group: DSM refuses a replacement that differs.
    state.lock().unwrap().objects.get_mut("k").unwrap().group_id = "another-group".into();
    assert!(store
        .replace("k", b"record-1", b"kes:keyring:v1:A")
        .is_err());
    assert_eq!(object_names(&state), ["k"]);
    assert_eq!(store.get("k").unwrap().expose(), b"record-1");
}
