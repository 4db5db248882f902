//! The filesystem keystore through the whole server: an upstream-written keys directory
//! served unchanged, keys surviving a restart of the `kes` binary, policies from a config,
//! and key rotation's replace from several processes at once.

mod common;

use common::*;

/// crypto-formats.md §11.6: K = 00..1f (AES256), HMAC key 60..7f.
const UPSTREAM_RECORD: &str = "CiQKIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4fEAESJAogYGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn8QARoLCKWE2LsGEJWa7zoiQGEwNTA4MzdkODUwNzA1ODJjY2Y3Mzk0YjA5ODg4NDdjYzMxMmNiODgyNTliODk0ODk5ZjZmMjM5Y2YxNzkxYTU=";
const CONTEXT_B64: &str = "eyJteS1idWNrZXQiOiJteS1idWNrZXQvbXktb2JqZWN0In0=";
const DEK: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
const CIPHERTEXT: &str = "qcDsbRpq8F27ep5YDx+5pmCKddecT4ukXN38vFpAUijk2rKKTjxV2UH8MCYJ4WGsQEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaWw==";

#[test]
fn an_upstream_keys_directory_works_unchanged() {
    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    std::fs::write(keys.path().join("minio-default-key"), UPSTREAM_RECORD).unwrap();
    // A legacy (≤ 2024-01) JSON record, ChaCha20.
    std::fs::write(
        keys.path().join("legacy"),
        r#"{"bytes":"9ew6BCae3+13sniOUwttEJ62amg98YXc0OW0WBhNiCY=","algorithm":"XCHACHA20-POLY1305","created_at":"2009-11-10T23:00:00Z","created_by":"189d9de5331e3ee8abe9e4bd40d474ad621d79ccf83a711f6ac68050eb15a52a"}"#,
    )
    .unwrap();
    let (api_key, admin) = new_api_key();
    let mut server = config_server(&tls, &admin, keys.path(), "");
    server.api_key = api_key;
    let mut c = server.client();

    let body = format!(r#"{{"ciphertext":"{CIPHERTEXT}","context":"{CONTEXT_B64}"}}"#);
    let r = c
        .request(
            "POST",
            "/v1/key/decrypt/minio-default-key",
            Some(body.as_bytes()),
            &[],
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    assert_eq!(json_str(&r, "plaintext"), DEK);

    // §11.5: HMAC under the stored HMAC key.
    let r = c
        .request(
            "PUT",
            "/v1/key/hmac/minio-default-key",
            Some(br#"{"message":"cm9vdCBhY2Nlc3Mga2V5"}"#),
            &[],
        )
        .unwrap();
    assert_eq!(
        body_str(&r),
        "{\"hmac\":\"tN/2DJRumz107gEU8b8WRLutoO/YeDkUXG+t57hIb8s=\"}\n"
    );

    let r = c
        .request("GET", "/v1/key/describe/minio-default-key", None, &[])
        .unwrap();
    assert_eq!(
        body_str(&r),
        "{\"name\":\"minio-default-key\",\"algorithm\":\"AES256\",\"created_at\":\"2025-01-02T03:04:05.123456789Z\",\"created_by\":\"a050837d85070582ccf7394b0988847cc312cb88259b894899f6f239cf1791a5\"}\n"
    );

    let r = c
        .request("GET", "/v1/key/describe/legacy", None, &[])
        .unwrap();
    assert_eq!(json_str(&r, "algorithm"), "ChaCha20");
    assert_eq!(json_str(&r, "created_at"), "2009-11-10T23:00:00Z");
    // Legacy records have no HMAC key.
    assert_error(
        &c.request(
            "PUT",
            "/v1/key/hmac/legacy",
            Some(br#"{"message":""}"#),
            &[],
        )
        .unwrap(),
        409,
        "key does not support HMAC",
    );
    // A legacy key still generates and decrypts.
    let r = c
        .request("POST", "/v1/key/generate/legacy", None, &[])
        .unwrap();
    let body = format!(r#"{{"ciphertext":"{}"}}"#, json_str(&r, "ciphertext"));
    let r2 = c
        .request("POST", "/v1/key/decrypt/legacy", Some(body.as_bytes()), &[])
        .unwrap();
    assert_eq!(json_str(&r2, "plaintext"), json_str(&r, "plaintext"));

    // A new key is written in upstream's format: base64 protobuf, one line, mode 0600.
    assert_eq!(
        c.request("POST", "/v1/key/create/new-key", None, &[])
            .unwrap()
            .status,
        200
    );
    let path = keys.path().join("new-key");
    let stored = std::fs::read_to_string(&path).unwrap();
    assert!(stored.starts_with("CiQKI"), "{stored}");
    assert!(!stored.contains('\n'));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let decoded = kes::crypto::record::decode_record(stored.as_bytes()).unwrap();
    assert_eq!(decoded.created_by.as_deref(), Some(admin.as_str()));
    assert!(decoded.hmac.is_some());

    // A garbage file reads as a keystore error, not a crash.
    std::fs::write(keys.path().join("broken"), "not a key").unwrap();
    assert_error(
        &c.request("GET", "/v1/key/describe/broken", None, &[])
            .unwrap(),
        502,
        "failed to read key",
    );

    // Listing shows the files that are keys.
    let r = c.request("GET", "/v1/key/list/", None, &[]).unwrap();
    assert_eq!(
        body_str(&r),
        "{\"names\":[\"broken\",\"legacy\",\"minio-default-key\",\"new-key\"]}\n"
    );
}

/// The files upstream KES itself wrote (`../shared/fixtures/upstream-kes/fs.json`), written
/// with their mode into a fresh directory: our server decrypts every ciphertext upstream made,
/// describes each key as upstream did and leaves the files as they were.
#[test]
fn records_written_by_upstream_kes_are_served() {
    use std::os::unix::fs::PermissionsExt;
    let fixture = fixtures::load("fs");
    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    std::fs::set_permissions(keys.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (name, key) in fixture.keys() {
        let file = keys.path().join(name);
        std::fs::write(&file, key.file_bytes()).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(key.file_mode())).unwrap();
    }
    let (api_key, admin) = new_api_key();
    let server = config_server(&tls, &admin, keys.path(), "");
    for (name, key) in fixture.keys() {
        fixtures::assert_serves_vectors(&server.endpoint(), &api_key, name, key);
        fixtures::assert_describes_as_upstream(&server.endpoint(), &api_key, name, key);
        assert_eq!(
            std::fs::read(keys.path().join(name)).unwrap(),
            key.file_bytes(),
            "{name}: the file changed"
        );
    }
    fixtures::assert_lists_keys(&server.endpoint(), &api_key, &fixture);
}

#[test]
fn keys_survive_a_restart_of_the_binary() {
    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    let (api_key, admin) = new_api_key();
    let config_path = tls.dir.path().join("config.yml");
    std::fs::write(
        &config_path,
        config_yaml(&tls, &admin, keys.path(), "keys:\n- name: declared\n"),
    )
    .unwrap();
    let config_arg = config_path.to_str().unwrap();

    let first = bin_server(&["--config", config_arg]);
    let endpoint = format!("https://{}", first.addr);
    let mut c = client_for(&endpoint, &api_key);
    assert_eq!(
        c.request("POST", "/v1/key/create/persist", None, &[])
            .unwrap()
            .status,
        200
    );
    let r = c
        .request(
            "POST",
            "/v1/key/generate/persist",
            Some(br#"{"context":"e30="}"#),
            &[],
        )
        .unwrap();
    let (dek, ct) = (json_str(&r, "plaintext"), json_str(&r, "ciphertext"));
    let r = c
        .request("POST", "/v1/key/generate/declared", None, &[])
        .unwrap();
    assert_eq!(
        r.status,
        200,
        "declared keys are created at start-up: {}",
        body_str(&r)
    );
    drop(c);
    drop(first);

    let second = bin_server(&["--config", config_arg]);
    let mut c = client_for(&format!("https://{}", second.addr), &api_key);
    let body = format!(r#"{{"ciphertext":"{ct}","context":"e30="}}"#);
    let r = c
        .request(
            "POST",
            "/v1/key/decrypt/persist",
            Some(body.as_bytes()),
            &[],
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    assert_eq!(json_str(&r, "plaintext"), dek);
    assert_error(
        &c.request("POST", "/v1/key/create/persist", None, &[])
            .unwrap(),
        400,
        "key already exists",
    );
}

#[test]
fn dev_mode_binary_prints_a_working_api_key() {
    let server = bin_server(&["--dev"]);
    let key_line = server
        .stdout_lines
        .iter()
        .find(|l| l.starts_with("API Key"))
        .unwrap_or_else(|| panic!("no API key in banner: {:?}", server.stdout_lines));
    let api_key = key_line.split_whitespace().last().unwrap();
    assert!(api_key.starts_with("kes:v1:"));
    let admin_line = server
        .stdout_lines
        .iter()
        .find(|l| l.starts_with("Admin"))
        .unwrap();
    let admin = admin_line.split_whitespace().last().unwrap();
    assert_eq!(
        kes::auth::apikey::ApiKey::parse(api_key)
            .unwrap()
            .identity()
            .to_hex(),
        admin
    );
    let mut c = client_for(&format!("https://{}", server.addr), api_key);
    assert_eq!(
        c.request("POST", "/v1/key/create/k", None, &[])
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        c.request("POST", "/v1/key/generate/k", None, &[])
            .unwrap()
            .status,
        200
    );
}

#[test]
fn policies_from_the_config_decide_access() {
    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    let (admin_key, admin) = new_api_key();
    let (minio_key, minio) = new_api_key();
    let (stranger_key, _) = new_api_key();
    let extra = format!(
        "policy:\n  minio:\n    allow:\n    - /v1/key/create/minio-*\n    - /v1/key/generate/minio-*\n    - /v1/key/list/*\n    deny:\n    - /v1/key/generate/minio-secret\n    identities:\n    - {minio}\n"
    );
    let server = config_server(&tls, &admin, keys.path(), &extra);
    let endpoint = format!("https://{}", server.addr);
    let mut a = client_for(&endpoint, &admin_key);
    let mut m = client_for(&endpoint, &minio_key);
    let mut s = client_for(&endpoint, &stranger_key);
    let denied = "not authorized: insufficient permissions";

    assert_eq!(
        m.request("POST", "/v1/key/create/minio-1", None, &[])
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        m.request("POST", "/v1/key/generate/minio-1", None, &[])
            .unwrap()
            .status,
        200
    );
    assert_error(
        &m.request("POST", "/v1/key/create/other", None, &[])
            .unwrap(),
        403,
        denied,
    );
    assert_error(
        &m.request("DELETE", "/v1/key/delete/minio-1", None, &[])
            .unwrap(),
        403,
        denied,
    );
    assert_eq!(
        a.request("POST", "/v1/key/create/minio-secret", None, &[])
            .unwrap()
            .status,
        200
    );
    assert_error(
        &m.request("POST", "/v1/key/generate/minio-secret", None, &[])
            .unwrap(),
        403,
        denied,
    );
    assert_eq!(
        m.request("GET", "/v1/key/list/", None, &[]).unwrap().status,
        200
    );
    assert_error(
        &s.request("GET", "/v1/key/list/", None, &[]).unwrap(),
        403,
        denied,
    );
    assert_eq!(
        a.request("DELETE", "/v1/key/delete/minio-1", None, &[])
            .unwrap()
            .status,
        200
    );

    let r = m
        .request("GET", "/v1/identity/self/describe", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    assert_eq!(json_str(&r, "policy"), "minio");
    assert!(body_str(&r).contains("\"admin\":false"));
    assert!(body_str(&r).contains("\"allow\":{\"/v1/key/create/minio-*\":{},"));

    let r = a
        .request("GET", "/v1/policy/read/minio", None, &[])
        .unwrap();
    assert!(
        body_str(&r).contains("\"deny\":{\"/v1/key/generate/minio-secret\":{}}"),
        "{}",
        body_str(&r)
    );
    let r = a
        .request("GET", &format!("/v1/identity/describe/{minio}"), None, &[])
        .unwrap();
    assert_eq!(json_str(&r, "policy"), "minio");
    let r = a.request("GET", "/v1/identity/list/", None, &[]).unwrap();
    assert!(body_str(&r).contains(&admin) && body_str(&r).contains(&minio));
    let r = a.request("GET", "/v1/policy/list/", None, &[]).unwrap();
    assert_eq!(
        body_str(&r),
        "{\"names\":[\"minio\"],\"continue_at\":\"\"}\n"
    );
    assert_error(
        &a.request("GET", "/v1/policy/describe/nope", None, &[])
            .unwrap(),
        404,
        "policy does not exist",
    );
}

/// Identities in the config need not be hex (upstream's own tests assign `my-key`, `abc123`
/// and `0` to policies): `/v1/identity/describe/<identity>` finds them by their plain string,
/// as the identity list shows them.
#[test]
fn non_hex_identities_from_the_config_can_be_described() {
    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    let (admin_key, admin) = new_api_key();
    let extra = "policy:\n  app:\n    allow:\n    - /v1/key/list/*\n    identities:\n    - my-key\n    - abc123\n  ops:\n    allow:\n    - /v1/status\n    identities:\n    - \"0\"\n";
    let server = config_server(&tls, &admin, keys.path(), extra);
    let mut a = client_for(&format!("https://{}", server.addr), &admin_key);

    let r = a.request("GET", "/v1/identity/list/", None, &[]).unwrap();
    let listed = body_str(&r);
    for id in ["my-key", "abc123", "0"] {
        assert!(listed.contains(&format!("\"{id}\"")), "{listed}");
    }
    for (id, policy) in [("my-key", "app"), ("abc123", "app"), ("0", "ops")] {
        let r = a
            .request("GET", &format!("/v1/identity/describe/{id}"), None, &[])
            .unwrap();
        assert_eq!(r.status, 200, "{id}: {}", body_str(&r));
        assert_eq!(json_str(&r, "policy"), policy, "{id}");
        assert_eq!(json_str(&r, "created_by"), admin, "{id}");
        assert!(!json_str(&r, "created_at").is_empty());
    }
    // Still exact: another spelling or an unknown identity is not found.
    for id in ["MY-KEY", "abc12", "00"] {
        assert_error(
            &a.request("GET", &format!("/v1/identity/describe/{id}"), None, &[])
                .unwrap(),
            404,
            "identity does not exist",
        );
    }
}

/// The environment variable that makes [`replace_worker`] a worker: the keys directory.
const WORKER_DIR: &str = "KES_TEST_FS_REPLACE_WORKER_DIR";
/// Increments each worker process makes.
const WORKER_INCREMENTS: usize = 100;

/// The counter's `n`th value, a key ring whose length varies with `n` (a half-written file
/// would show).
fn counter_value(n: usize) -> String {
    format!(
        "{}{n}:{}",
        kes::crypto::record::KEYRING_PREFIX,
        "A".repeat(n % 512 * 8)
    )
}

fn counter_of(value: &[u8]) -> usize {
    let text = std::str::from_utf8(value).unwrap();
    let n = text
        .strip_prefix(kes::crypto::record::KEYRING_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("not a counter: {} bytes", text.len()));
    assert_eq!(text, counter_value(n), "a partial value");
    n
}

/// Not a test on its own: run by [`replaces_from_several_processes_lose_nothing`] in child
/// processes (with [`WORKER_DIR`] set), it increments the counter there.
#[test]
fn replace_worker() {
    use kes::keystore::{FsStore, KeyStore, StoreError};
    let Some(dir) = std::env::var_os(WORKER_DIR) else {
        return;
    };
    let store = FsStore::open(std::path::PathBuf::from(dir)).unwrap();
    for _ in 0..WORKER_INCREMENTS {
        loop {
            let old = store.get("counter").unwrap();
            let new = counter_value(counter_of(old.expose()) + 1);
            match store.replace("counter", old.expose(), new.as_bytes()) {
                Ok(()) => break,
                Err(StoreError::Conflict) => continue,
                Err(e) => panic!("{e}"),
            }
        }
    }
}

/// Key rotation on the filesystem keystore is a compare-and-set across processes (servers
/// sharing one keys directory): three processes increment one counter with read → replace,
/// retrying on conflict, while this one reads it continuously; no increment is lost, and the
/// key is never missing or half written.
#[test]
fn replaces_from_several_processes_lose_nothing() {
    use kes::keystore::{FsStore, KeyStore};
    const PROCESSES: usize = 3;
    let keys = tempfile::tempdir().unwrap();
    let store = FsStore::open(keys.path()).unwrap();
    store
        .create("counter", counter_value(0).as_bytes())
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["--exact", "replace_worker", "--test-threads=1"])
                .env(WORKER_DIR, keys.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut reads = 0;
    while children.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
        counter_of(
            store
                .get("counter")
                .expect("the key during replaces")
                .expose(),
        );
        reads += 1;
    }
    for mut child in children {
        assert!(child.wait().unwrap().success(), "a worker failed");
    }
    assert!(reads > 0);
    let last = store.get("counter").unwrap();
    assert_eq!(counter_of(last.expose()), PROCESSES * WORKER_INCREMENTS);
    assert_eq!(store.list("").unwrap(), ["counter"]);
}
