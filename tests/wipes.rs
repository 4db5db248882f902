//! Secrets leave no copy behind in freed memory: a global allocator that, while a test
//! thread arms it, looks into every block that thread frees for a marker the test planted
//! in a secret (issue 20, #8: the keystore client's answer buffers).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::time::Duration;

use kes::keystore::http::{Endpoint, TlsFiles};
use kes::secret::SecretVec;

/// What the tests plant in secrets (a token, a record).
const MARKER: &[u8] = b"s.SECRET-TOKEN-4f1c9e2a7b";

struct Scanning;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    /// Freed blocks of this thread that still held [`MARKER`] (per thread: tests run in
    /// parallel, and one test's copies must not fail another).
    static LEFT_BEHIND: Cell<usize> = const { Cell::new(0) };
}

thread_local! {
    /// What this thread's scan looks for: [`MARKER`] unless a test plants another secret.
    static PLANTED: Cell<&'static [u8]> = const { Cell::new(MARKER) };
}

fn holds_marker(block: &[u8]) -> bool {
    let marker = PLANTED.try_with(Cell::get).unwrap_or(MARKER);
    block.windows(marker.len()).any(|w| w == marker)
}

unsafe impl GlobalAlloc for Scanning {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }
    // `realloc` is the trait's default: alloc, copy, then `dealloc` of the old block, which
    // is scanned like any other.
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.try_with(|a| a.get()).unwrap_or(false) {
            // SAFETY: the block is still ours until `System.dealloc` below.
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            if holds_marker(block) {
                let _ = LEFT_BEHIND.try_with(|n| n.set(n.get() + 1));
            }
        }
        // Every freed block is zeroed once looked at (in every thread, armed or not): a copy
        // freed outside a scan (a test's own setup, another test's thread) could otherwise come
        // back as the uninitialised part of a block that a scan then counts.
        // SAFETY: as above.
        unsafe { std::ptr::write_bytes(ptr, 0, layout.size()) };
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Scanning = Scanning;

/// Runs `f` with this thread's frees scanned; returns how many freed blocks held the marker.
fn freed_copies(f: impl FnOnce()) -> usize {
    let before = LEFT_BEHIND.with(Cell::get);
    ARMED.with(|a| a.set(true));
    f();
    ARMED.with(|a| a.set(false));
    LEFT_BEHIND.with(Cell::get) - before
}

/// A loopback service that answers each of `answers` to one request, in order. It wipes each
/// answer once sent: a copy of the marker it freed unwiped could be handed to the test thread
/// again as a new block's uninitialised part, and counted there.
fn service(answers: Vec<Vec<u8>>) -> (u16, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        for answer in answers {
            let answer = SecretVec::new(answer);
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(answer.expose());
        }
    });
    (port, t)
}

/// A GCP `external_account` credentials file's `json`, read.
fn external_account(json: String) -> kes::keystore::gcp_external::ExternalAccount {
    let mut json = json.into_bytes();
    let value = simd_json::to_owned_value(&mut json).unwrap();
    let scopes = ["https://www.googleapis.com/auth/cloud-platform".to_string()];
    kes::keystore::gcp_external::ExternalAccount::from_json(&value, "test", &scopes).unwrap()
}

/// The keystore client's endpoint for the loopback service on `port`.
fn loopback(port: u16) -> Endpoint {
    Endpoint::parse(
        "Test",
        "f",
        &format!("http://127.0.0.1:{port}"),
        &TlsFiles::default(),
        Duration::from_secs(10),
    )
    .unwrap()
}

/// A body of `n` bytes with the marker at its start (so that it is in the first bytes read
/// and in every buffer that grows from there).
fn secret_body(n: usize) -> Vec<u8> {
    let mut body = MARKER.to_vec();
    body.resize(n, b'x');
    body
}

/// The keystore client's answers (a record, a token) are read into buffers that grow
/// without leaving copies, and a chunked answer is decoded without one: once the caller
/// wipes the body it got (as every keystore does), no freed block holds the secret.
#[test]
fn keystore_answers_leave_no_copy_behind() {
    let long = secret_body(64 * 1024);
    let mut plain =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", long.len()).into_bytes();
    plain.extend_from_slice(&long);
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in long.chunks(1000) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (port, server) = service(vec![plain, chunked]);
    let endpoint = loopback(port);
    for what in ["Content-Length", "chunked"] {
        let copies = freed_copies(|| {
            let reply = endpoint.send("GET", "/", &[], b"").expect("an answer");
            let body = SecretVec::new(reply.body);
            assert_eq!(body.expose(), &long[..], "{what}");
        });
        assert_eq!(
            copies, 0,
            "a {what} answer left {copies} unwiped copies in freed memory"
        );
    }
    server.join().unwrap();
}

/// `parts` joined into a buffer of their exact size: no freed block of the test thread keeps a
/// copy of a marker among them.
fn joined(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.extend_from_slice(p.as_bytes());
    }
    out
}

/// An HTTP/1.1 answer with a body.
fn answer(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Vault's login answer, with the marker as its token.
fn vault_login() -> Vec<u8> {
    let token = std::str::from_utf8(MARKER).unwrap();
    answer(
        "200 OK",
        &format!(
            r#"{{"request_id":"r","auth":{{"client_token":"{token}","accessor":"a","policies":["kes"],"lease_duration":3600,"renewable":true}},"data":null}}"#
        ),
    )
}

/// The Vault token (issue 20 #8, "keystore tokens zeroized on drop"): from the login answer
/// through the calls that carry it, a login again after a 403, to the store's drop, no freed
/// block holds a copy of it.
#[test]
fn a_vault_token_leaves_no_copy_behind() {
    use kes::config::{VaultAuth, VaultConfig};
    use kes::keystore::vault::VaultStore;
    use kes::keystore::KeyStore;
    let record = answer("200 OK", r#"{"data":{"k":"record"}}"#);
    let (port, server) = service(vec![
        vault_login(),
        record.clone(),
        record.clone(),
        answer("200 OK", r#"{"data":{"keys":["k"]}}"#),
        answer("403 Forbidden", r#"{"errors":["permission denied"]}"#),
        vault_login(),
        record,
    ]);
    let config = VaultConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        engine: "kv".into(),
        kv_v2: false,
        namespace: String::new(),
        prefix: String::new(),
        auth: VaultAuth::AppRole {
            engine: "approle".into(),
            namespace: String::new(),
            id: "role".into(),
            secret: "secret".into(),
        },
        transit: None,
        tls_key: None,
        tls_cert: None,
        tls_ca: None,
        ping: Duration::from_secs(15),
    };
    let copies = freed_copies(|| {
        let store = VaultStore::new(config).unwrap();
        assert_eq!(store.get("k").unwrap().expose(), b"record");
        assert_eq!(store.get("k").unwrap().expose(), b"record");
        assert_eq!(store.list("").unwrap(), ["k"]);
        // 403: logs in again and repeats the call.
        assert_eq!(store.get("k").unwrap().expose(), b"record");
        drop(store);
    });
    server.join().unwrap();
    assert_eq!(
        copies, 0,
        "the Vault token left {copies} unwiped copies in freed memory"
    );
}

/// An OAuth2 token answer (GCP, Azure, Fortanix, CipherTrust, KeyControl): the access token
/// is read into the `Authorization` value without a copy left behind, escaped or not.
#[test]
fn an_oauth2_token_answer_leaves_no_copy_behind() {
    use kes::keystore::session::bearer_token;
    let token = std::str::from_utf8(MARKER).unwrap();
    let plain = format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":3599}}"#);
    let escaped =
        format!(r#"{{"token_type":"Bearer","access_token":"{token}\/x","expires_in":"60"}}"#);
    for body in [plain, escaped] {
        let copies = freed_copies(|| {
            let (header, lifetime) = bearer_token(body.as_bytes(), "Test").unwrap();
            assert!(header.expose().starts_with(b"Bearer s.SECRET"));
            assert!(lifetime >= Duration::from_secs(60));
        });
        assert_eq!(copies, 0, "{body}: {copies} unwiped copies in freed memory");
    }
}

/// A request whose header carries a long token (an Entra ID JWT is over 1 KiB): the request
/// buffer grows without leaving a copy of it.
#[test]
fn a_token_in_a_request_header_leaves_no_copy_behind() {
    let (port, server) = service(vec![answer("200 OK", "{}")]);
    let endpoint = loopback(port);
    let long = secret_body(1500);
    let header = format!("Bearer {}", std::str::from_utf8(&long).unwrap());
    let copies = freed_copies(|| {
        let headers = [
            ("Authorization", header.as_str()),
            ("Content-Type", "application/json"),
        ];
        let reply = endpoint.send("POST", "/v1/keys", &headers, b"{}").unwrap();
        assert_eq!(reply.status, 200);
    });
    server.join().unwrap();
    assert_eq!(
        copies, 0,
        "the request left {copies} unwiped copies of its token in freed memory"
    );
}

/// The login-based HSM stores (Fortanix DSM, CipherTrust/KeySecure, Entrust KeyControl):
/// a login answer carrying the marker as the token, then a call with it (answered 404). No
/// freed block holds a copy of the token once the call is done, nor of KeyControl's password
/// (which the login body carries), nor once the store is dropped.
#[test]
fn hsm_store_logins_leave_no_copy_behind() {
    use kes::config::{FortanixConfig, KeyControlConfig, KeySecureConfig};
    use kes::keystore::fortanix::FortanixStore;
    use kes::keystore::keycontrol::KeyControlStore;
    use kes::keystore::keysecure::KeySecureStore;
    use kes::keystore::{KeyStore, StoreError};
    let token = std::str::from_utf8(MARKER).unwrap();
    let not_found = answer("404 Not Found", r#"{"error":"Secret not found"}"#);
    let logins = [
        (
            "Fortanix",
            format!(r#"{{"access_token":"{token}","expires_in":600,"entity_id":"e"}}"#),
        ),
        (
            "KeySecure",
            format!(r#"{{"jwt":"{token}","duration":300,"token_type":"Bearer"}}"#),
        ),
        (
            "KeyControl",
            format!(r#"{{"access_token":"{token}","expires_at":"2099-01-01T00:00:00Z"}}"#),
        ),
    ];
    for (which, login) in logins {
        let (port, server) = service(vec![answer("200 OK", &login), not_found.clone()]);
        let endpoint = format!("http://127.0.0.1:{port}");
        let store: Box<dyn KeyStore> = match which {
            "Fortanix" => Box::new(
                FortanixStore::new(FortanixConfig {
                    endpoint,
                    group_id: String::new(),
                    api_key: "api-key".into(),
                    tls_ca: None,
                })
                .unwrap(),
            ),
            "KeySecure" => Box::new(
                KeySecureStore::new(KeySecureConfig {
                    endpoint,
                    token: "refresh-token".into(),
                    domain: String::new(),
                    tls_ca: None,
                })
                .unwrap(),
            ),
            _ => Box::new(
                KeyControlStore::new(KeyControlConfig {
                    endpoint,
                    vault_id: "v".into(),
                    box_id: "b".into(),
                    username: "kes".into(),
                    password: config_secret(&[token, &"x".repeat(100)]),
                    tls_ca: None,
                })
                .unwrap(),
            ),
        };
        let copies = freed_copies(|| {
            let e = store.get("k").err().unwrap();
            assert!(matches!(e, StoreError::NotFound), "{which}: {e}");
            drop(store);
        });
        server.join().unwrap();
        assert_eq!(
            copies, 0,
            "{which}: {copies} unwiped copies in freed memory"
        );
    }
}

/// GCP workload identity federation with impersonation: the subject token (a file), the STS
/// exchange, then the IAM credentials answer carrying the marker as the access token. No
/// freed block holds a copy of it once the `Authorization` value is dropped.
#[test]
fn a_gcp_impersonated_token_leaves_no_copy_behind() {
    use kes::keystore::http::Retry;
    let token = std::str::from_utf8(MARKER).unwrap();
    let (port, server) = service(vec![
        answer(
            "200 OK",
            r#"{"access_token":"federated","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":3600}"#,
        ),
        answer(
            "200 OK",
            &format!(r#"{{"accessToken":"{token}","expireTime":"2099-01-01T00:00:00Z"}}"#),
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let subject = dir.path().join("subject-token");
    std::fs::write(&subject, "subject-jwt").unwrap();
    let json = format!(
        r#"{{"type":"external_account","audience":"//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q","subject_token_type":"urn:ietf:params:oauth:token-type:jwt","token_url":"http://127.0.0.1:{port}/v1/token","service_account_impersonation_url":"http://127.0.0.1:{port}/v1/projects/-/serviceAccounts/kes@p.iam.gserviceaccount.com:generateAccessToken","credential_source":{{"file":"{}"}}}}"#,
        subject.display()
    );
    let account = external_account(json);
    let copies = freed_copies(|| {
        let (header, _) = account.fetch(&Retry::NONE, "test").unwrap();
        // (Not compared with a copy of the marker made here: that copy would count.)
        assert!(header.expose().starts_with(b"Bearer s.SECRET"));
        assert_eq!(header.len(), 7 + MARKER.len());
    });
    server.join().unwrap();
    assert_eq!(
        copies, 0,
        "the impersonated token left {copies} unwiped copies in freed memory"
    );
}

/// The freed blocks holding the marker while an AWS store on the loopback `url` (credentials
/// from `env`, which must come from `source`) is built, makes one call (answered "not
/// found") and is dropped.
fn aws_call_copies(url: &str, env: &dyn Fn(&str) -> Option<String>, source: &str) -> usize {
    use kes::config::AwsConfig;
    use kes::keystore::aws::AwsStore;
    use kes::keystore::{KeyStore, StoreError};
    let config = AwsConfig {
        endpoint: url.to_string(),
        region: "us-east-1".into(),
        kms_key: String::new(),
        credentials: None,
    };
    freed_copies(|| {
        let store = AwsStore::new(config, env).unwrap();
        assert_eq!(store.credentials_source(), source);
        let e = store.get("k").err().unwrap();
        assert!(matches!(e, StoreError::NotFound), "{source}: {e}");
        drop(store);
    })
}

/// Fails unless every count in `left` (a case and its freed copies) is 0.
fn assert_none_left(what: &str, left: &[(&str, usize)]) {
    assert!(
        left.iter().all(|(_, copies)| *copies == 0),
        "{what}: {left:?}"
    );
}

/// AWS temporary credentials from a container credentials answer (ECS, EKS Pod Identity), the
/// marker as the secret key, then as the session token (escaped, as JSON may carry it): a
/// Secrets Manager call signed with them (answered "not found"), then the store's drop. No
/// freed block holds a copy of either: not the answer, not the signing key's `AWS4<secret>`,
/// not the canonical request that carries the token.
#[test]
fn aws_container_credentials_leave_no_copy_behind() {
    let marker = std::str::from_utf8(MARKER).unwrap();
    let padding = "T".repeat(600);
    let key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    let mut left = Vec::new();
    for (which, secret_key, token) in [
        ("secret key", marker, ["IQoJb3JpZ2luX2VjEXAMPLE", "", ""]),
        ("session token", key, [marker, "\\/", padding.as_str()]),
    ] {
        let body = joined(&[
            r#"{"RoleArn":"arn:aws:iam::1:role/kes","AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":""#,
            secret_key,
            r#"","Token":""#,
            token[0],
            token[1],
            token[2],
            r#"","Expiration":"2099-01-01T00:00:00Z"}"#,
        ]);
        let length = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
        let body = SecretVec::new(body);
        let (port, server) = service(vec![
            joined(&[&length, std::str::from_utf8(body.expose()).unwrap()]),
            answer(
                "400 Bad Request",
                r#"{"__type":"ResourceNotFoundException","Message":"Secrets Manager can't find the specified secret."}"#,
            ),
        ]);
        let url = format!("http://127.0.0.1:{port}");
        let env = |name: &str| match name {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI" => Some(format!("{url}/v2/credentials/x")),
            "AWS_EC2_METADATA_DISABLED" => Some("true".into()),
            _ => None,
        };
        let copies = aws_call_copies(&url, &env, "container credentials");
        server.join().unwrap();
        left.push((which, copies));
    }
    assert_none_left("unwiped copies in freed memory", &left);
}

/// A test-only service-account key (RSA 2048, PKCS#8), tests/gcp.rs's `KEY`.
const GCP_KEY: &str = include_str!("common/gcp_test_key.pem");

/// Runs `f` with this thread's frees scanned for `planted` instead of [`MARKER`].
fn freed_copies_of(planted: &'static [u8], f: impl FnOnce()) -> usize {
    PLANTED.with(|p| p.set(planted));
    let copies = freed_copies(f);
    PLANTED.with(|p| p.set(MARKER));
    copies
}

/// The GCP keystore's config, with the token endpoint on the loopback `port`.
fn gcp_config(port: u16) -> kes::config::GcpConfig {
    kes::config::GcpConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        project_id: "p".into(),
        scopes: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
        token_uri: format!("http://127.0.0.1:{port}/token"),
        credentials: None,
    }
}

/// A GCP credentials file (`GOOGLE_APPLICATION_CREDENTIALS`) read, a token fetched with it,
/// the credentials dropped: the freed blocks that held `planted`.
fn gcp_file_copies(file: Vec<u8>, planted: &'static [u8]) -> usize {
    use kes::keystore::gcp_auth::Credentials;
    use kes::keystore::http::Retry;
    let (port, server) = service(vec![answer(
        "200 OK",
        r#"{"access_token":"ya29.federated","expires_in":3599,"token_type":"Bearer"}"#,
    )]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials.json");
    // The test's own copy is wiped: only the keystore's count.
    let file = SecretVec::new(file);
    std::fs::write(&path, file.expose()).unwrap();
    drop(file);
    let config = gcp_config(port);
    let env =
        |name: &str| (name == "GOOGLE_APPLICATION_CREDENTIALS").then(|| path.display().to_string());
    let copies = freed_copies_of(planted, || {
        let credentials = Credentials::resolve(&config, &env).unwrap();
        let (header, _) = credentials.fetch(&Retry::NONE).unwrap();
        assert_eq!(header.expose(), b"Bearer ya29.federated");
        drop(credentials);
    });
    server.join().unwrap();
    copies
}

/// 32 characters of a PEM line of [`GCP_KEY`] and 32 bytes of its DER (the private exponent's
/// region), to look for in freed blocks.
fn key_pieces() -> (&'static [u8], &'static [u8]) {
    use base64::Engine;
    let body: String = GCP_KEY
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = SecretVec::new(
        base64::engine::general_purpose::STANDARD
            .decode(&body)
            .unwrap(),
    );
    let der_piece: &'static [u8] = Box::leak(der.expose()[600..632].to_vec().into_boxed_slice());
    let pem_piece: &'static [u8] = Box::leak(body.as_bytes()[640..672].to_vec().into_boxed_slice());
    drop(SecretVec::new(body.into_bytes()));
    (pem_piece, der_piece)
}

/// A GCP service-account file: its private key (PEM, escaped in JSON as such files have it)
/// goes to the RSA key and signs a JWT. No freed block holds a piece of the PEM's base64 text
/// nor of the DER it decodes to. (What ring's `RsaKeyPair` keeps is its own.)
#[test]
fn a_gcp_service_account_key_leaves_no_copy_behind() {
    let (pem_piece, der_piece) = key_pieces();
    let escaped = GCP_KEY.replace('\n', "\\n");
    let file = joined(&[
        r#"{"type":"service_account","project_id":"p","private_key_id":"k1","private_key":""#,
        &escaped,
        r#"","client_email":"kes@p.iam.gserviceaccount.com","client_id":"1"}"#,
    ]);
    let mut left = Vec::new();
    for (what, planted) in [("PEM text", pem_piece), ("DER", der_piece)] {
        left.push((what, gcp_file_copies(file.clone(), planted)));
    }
    drop(SecretVec::new(escaped.into_bytes()));
    drop(SecretVec::new(file));
    assert_none_left("unwiped copies of the private key in freed memory", &left);
}

/// A gcloud `authorized_user` file: the client secret, then the refresh token, is the
/// marker; a refresh-token grant made with them. No freed block holds a copy of either.
#[test]
fn gcp_authorized_user_secrets_leave_no_copy_behind() {
    let marker = std::str::from_utf8(MARKER).unwrap();
    let mut left = Vec::new();
    // A file over 4 KiB (blanks after the object) is read without growing its buffer.
    let blanks = " ".repeat(8 << 10);
    for (what, client_secret, refresh_token, padding) in [
        ("client secret", marker, "1//0refresh", ""),
        ("refresh token", "d-FL95Q19q7MQmFpd7hHD0Ty", marker, ""),
        ("8 KiB file", marker, "1//0refresh", blanks.as_str()),
    ] {
        let file = joined(&[
            r#"{"type":"authorized_user","client_id":"764086051850.apps.googleusercontent.com","client_secret":""#,
            client_secret,
            r#"","refresh_token":""#,
            refresh_token,
            r#""}"#,
            padding,
        ]);
        left.push((what, gcp_file_copies(file, MARKER)));
    }
    assert_none_left("unwiped copies in freed memory", &left);
}

/// GCP workload identity federation with a JSON-format subject token file
/// (`credential_source.format.type: json`): the marker as the token, exchanged at the STS.
/// No freed block holds a copy of it.
#[test]
fn a_gcp_json_subject_token_leaves_no_copy_behind() {
    use kes::keystore::http::Retry;
    let marker = std::str::from_utf8(MARKER).unwrap();
    let (port, server) = service(vec![answer(
        "200 OK",
        r#"{"access_token":"federated","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":3600}"#,
    )]);
    let dir = tempfile::tempdir().unwrap();
    let subject = dir.path().join("subject-token.json");
    let token = SecretVec::new(joined(&[r#"{"id_token":""#, marker, r#"","expires":1}"#]));
    std::fs::write(&subject, token.expose()).unwrap();
    drop(token);
    let json = format!(
        r#"{{"type":"external_account","audience":"//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q","subject_token_type":"urn:ietf:params:oauth:token-type:jwt","token_url":"http://127.0.0.1:{port}/v1/token","credential_source":{{"file":"{}","format":{{"type":"json","subject_token_field_name":"id_token"}}}}}}"#,
        subject.display()
    );
    let account = external_account(json);
    let copies = freed_copies(|| {
        let (header, _) = account.fetch(&Retry::NONE, "test").unwrap();
        assert_eq!(header.expose(), b"Bearer federated");
    });
    server.join().unwrap();
    assert_eq!(
        copies, 0,
        "the subject token left {copies} unwiped copies in freed memory"
    );
}

/// A config secret made of `parts`, in a buffer of its exact size (no unwiped copy of it is
/// left in the test thread's freed memory).
fn config_secret(parts: &[&str]) -> kes::secret::SecretString {
    kes::secret::SecretString::new(String::from_utf8(joined(parts)).unwrap())
}

/// The keystore credentials a config holds (Vault's AppRole secret and inline Kubernetes
/// JWT, Fortanix's API key, KeySecure's refresh token, KeyControl's password, AWS's static
/// secret key and session token), each the marker in turn: the store built from the config,
/// used once (a login, then a call), then dropped with the config. No freed block holds a
/// copy of the secret.
#[test]
fn config_secrets_leave_no_copy_behind() {
    use kes::config::{
        AwsConfig, AwsCredentials, FortanixConfig, KeyControlConfig, KeySecureConfig,
        KubernetesJwt, VaultAuth, VaultConfig,
    };
    use kes::keystore::aws::AwsStore;
    use kes::keystore::fortanix::FortanixStore;
    use kes::keystore::keycontrol::KeyControlStore;
    use kes::keystore::keysecure::KeySecureStore;
    use kes::keystore::vault::VaultStore;
    use kes::keystore::{KeyStore, StoreError};
    let marker = std::str::from_utf8(MARKER).unwrap();
    let not_found = answer("404 Not Found", r#"{"error":"Secret not found"}"#);
    let vault_login = answer(
        "200 OK",
        r#"{"auth":{"client_token":"s.other","lease_duration":3600,"renewable":true}}"#,
    );
    let stores = [
        "Vault AppRole secret",
        "Vault Kubernetes JWT",
        "Fortanix API key",
        "KeySecure token",
        "KeyControl password",
        "AWS secret key",
        "AWS session token",
    ];
    let mut left = Vec::new();
    for which in stores {
        let answers = match which {
            w if w.starts_with("Vault") => vec![vault_login.clone(), not_found.clone()],
            "Fortanix API key" => vec![
                answer(
                    "200 OK",
                    r#"{"access_token":"t","expires_in":600,"entity_id":"e"}"#,
                ),
                not_found.clone(),
            ],
            "KeySecure token" => vec![
                answer(
                    "200 OK",
                    r#"{"jwt":"t","duration":300,"token_type":"Bearer"}"#,
                ),
                not_found.clone(),
            ],
            "KeyControl password" => vec![
                answer(
                    "200 OK",
                    r#"{"access_token":"t","expires_at":"2099-01-01T00:00:00Z"}"#,
                ),
                not_found.clone(),
            ],
            _ => vec![answer(
                "400 Bad Request",
                r#"{"__type":"ResourceNotFoundException","Message":"not found"}"#,
            )],
        };
        let (port, server) = service(answers);
        let endpoint = format!("http://127.0.0.1:{port}");
        let secret = || config_secret(&[marker]);
        let vault = |auth| VaultConfig {
            endpoint: endpoint.clone(),
            engine: "kv".into(),
            kv_v2: false,
            namespace: String::new(),
            prefix: String::new(),
            auth,
            transit: None,
            tls_key: None,
            tls_cert: None,
            tls_ca: None,
            ping: Duration::from_secs(15),
        };
        let aws = |secret_key, session_token| AwsConfig {
            endpoint: endpoint.clone(),
            region: "us-east-1".into(),
            kms_key: String::new(),
            credentials: Some(AwsCredentials {
                access_key: "AKIDEXAMPLE".into(),
                secret_key,
                session_token,
            }),
        };
        let build: Box<dyn FnOnce() -> Box<dyn KeyStore>> = match which {
            "Vault AppRole secret" => {
                let c = vault(VaultAuth::AppRole {
                    engine: "approle".into(),
                    namespace: String::new(),
                    id: "role".into(),
                    secret: secret(),
                });
                Box::new(move || Box::new(VaultStore::new(c).unwrap()))
            }
            "Vault Kubernetes JWT" => {
                let c = vault(VaultAuth::Kubernetes {
                    engine: "kubernetes".into(),
                    namespace: String::new(),
                    role: "kes".into(),
                    jwt: KubernetesJwt::Token(secret()),
                });
                Box::new(move || Box::new(VaultStore::new(c).unwrap()))
            }
            "Fortanix API key" => {
                let c = FortanixConfig {
                    endpoint: endpoint.clone(),
                    group_id: String::new(),
                    api_key: secret(),
                    tls_ca: None,
                };
                Box::new(move || Box::new(FortanixStore::new(c).unwrap()))
            }
            "KeySecure token" => {
                let c = KeySecureConfig {
                    endpoint: endpoint.clone(),
                    token: secret(),
                    domain: String::new(),
                    tls_ca: None,
                };
                Box::new(move || Box::new(KeySecureStore::new(c).unwrap()))
            }
            "KeyControl password" => {
                let c = KeyControlConfig {
                    endpoint: endpoint.clone(),
                    vault_id: "v".into(),
                    box_id: "b".into(),
                    username: "kes".into(),
                    password: secret(),
                    tls_ca: None,
                };
                Box::new(move || Box::new(KeyControlStore::new(c).unwrap()))
            }
            "AWS secret key" => {
                let c = aws(secret(), Default::default());
                Box::new(move || Box::new(AwsStore::new(c, &|_| None).unwrap()))
            }
            _ => {
                let c = aws("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(), secret());
                Box::new(move || Box::new(AwsStore::new(c, &|_| None).unwrap()))
            }
        };
        let copies = freed_copies(|| {
            let store = build();
            let e = store.get("k").err().unwrap();
            assert!(matches!(e, StoreError::NotFound), "{which}: {e}");
            drop(store);
        });
        server.join().unwrap();
        left.push((which, copies));
    }
    assert_none_left("unwiped copies of config secrets in freed memory", &left);
}

/// AWS web identity (EKS IRSA): the marker as the token in `AWS_WEB_IDENTITY_TOKEN_FILE`
/// (once short, once in a file over 4 KiB), traded at STS, then a Secrets Manager call signed
/// with the credentials STS answered, then the store's drop. No freed block holds a copy of
/// the token.
#[test]
fn an_aws_web_identity_token_leaves_no_copy_behind() {
    let marker = std::str::from_utf8(MARKER).unwrap();
    let sts = answer(
        "200 OK",
        "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>\
         <AccessKeyId>ASIAEXAMPLE</AccessKeyId><SecretAccessKey>wJalrXUtnFEMI/K7MDENG</SecretAccessKey>\
         <SessionToken>IQoJb3JpZ2luX2VjEXAMPLE</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration>\
         </Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>",
    );
    let blanks = "\n".repeat(6 << 10);
    let mut left = Vec::new();
    for (which, padding) in [("token file", ""), ("6 KiB token file", blanks.as_str())] {
        let (port, server) = service(vec![
            sts.clone(),
            answer(
                "400 Bad Request",
                r#"{"__type":"ResourceNotFoundException","Message":"not found"}"#,
            ),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        let token = SecretVec::new(joined(&["eyJhbGciOiJSUzI1NiJ9.", marker, ".sig", padding]));
        std::fs::write(&token_file, token.expose()).unwrap();
        drop(token);
        let url = format!("http://127.0.0.1:{port}");
        let env = |name: &str| match name {
            "AWS_WEB_IDENTITY_TOKEN_FILE" => Some(token_file.display().to_string()),
            "AWS_ROLE_ARN" => Some("arn:aws:iam::1:role/kes".into()),
            "AWS_ROLE_SESSION_NAME" => Some("kes".into()),
            "AWS_ENDPOINT_URL_STS" => Some(url.clone()),
            _ => None,
        };
        let copies = aws_call_copies(&url, &env, "web identity");
        server.join().unwrap();
        left.push((which, copies));
    }
    assert_none_left(
        "unwiped copies of the web identity token in freed memory",
        &left,
    );
}

/// The GCP block's inline service-account key (`credentials.private_key`) and Azure's
/// `client_secret` (the marker): the credentials built from the config, a token fetched with
/// them, then both dropped. No freed block holds a piece of the key (PEM text, DER) nor a copy
/// of the client secret.
#[test]
fn gcp_and_azure_config_secrets_leave_no_copy_behind() {
    use kes::config::{AzureAuth, AzureConfig, GcpCredentials};
    use kes::keystore::azure_challenge::Challenge;
    use kes::keystore::http::Retry;
    use kes::keystore::{azure_auth, gcp_auth};
    let token = || {
        answer(
            "200 OK",
            r#"{"access_token":"ya29.t","expires_in":3599,"token_type":"Bearer"}"#,
        )
    };
    let (pem_piece, der_piece) = key_pieces();
    let mut left = Vec::new();
    for (what, planted) in [("GCP PEM text", pem_piece), ("GCP DER", der_piece)] {
        let (port, server) = service(vec![token()]);
        let mut config = gcp_config(port);
        config.credentials = Some(GcpCredentials {
            client_email: "kes@p.iam.gserviceaccount.com".into(),
            client_id: "1".into(),
            private_key_id: "k1".into(),
            private_key: config_secret(&[GCP_KEY]),
        });
        let copies = freed_copies_of(planted, || {
            let c = gcp_auth::Credentials::resolve(&config, &|_| None).unwrap();
            let (header, _) = c.fetch(&Retry::NONE).unwrap();
            assert_eq!(header.expose(), b"Bearer ya29.t");
            drop(c);
            drop(config);
        });
        server.join().unwrap();
        left.push((what, copies));
    }
    let (port, server) = service(vec![token()]);
    let config = AzureConfig {
        endpoint: "https://v.vault.azure.net".into(),
        authority_host: Some(format!("http://127.0.0.1:{port}")),
        auth: AzureAuth::ClientCredentials {
            tenant_id: "t".into(),
            client_id: "c".into(),
            client_secret: config_secret(&[std::str::from_utf8(MARKER).unwrap()]),
        },
    };
    let challenge = Challenge {
        scope: "https://vault.azure.net/.default".into(),
        resource: "https://vault.azure.net".into(),
        tenant: None,
    };
    let copies = freed_copies(|| {
        let c = azure_auth::Credentials::resolve(&config, &|_| None).unwrap();
        let (header, _) = c.fetch(&Retry::NONE, &challenge).unwrap();
        assert_eq!(header.expose(), b"Bearer ya29.t");
        drop(c);
        drop(config);
    });
    server.join().unwrap();
    left.push(("Azure client secret", copies));
    assert_none_left("unwiped copies of config secrets in freed memory", &left);
}
