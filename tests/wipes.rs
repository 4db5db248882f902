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

fn holds_marker(block: &[u8]) -> bool {
    block.windows(MARKER.len()).any(|w| w == MARKER)
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
/// (which the login body carries). The stores are dropped outside the scan: their configs
/// hold the credentials as plain strings.
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
                    password: format!("{token}{}", "x".repeat(100)),
                    tls_ca: None,
                })
                .unwrap(),
            ),
        };
        let copies = freed_copies(|| {
            let e = store.get("k").err().unwrap();
            assert!(matches!(e, StoreError::NotFound), "{which}: {e}");
        });
        drop(store);
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
    use kes::keystore::gcp_external::ExternalAccount;
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
    let mut json = format!(
        r#"{{"type":"external_account","audience":"//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q","subject_token_type":"urn:ietf:params:oauth:token-type:jwt","token_url":"http://127.0.0.1:{port}/v1/token","service_account_impersonation_url":"http://127.0.0.1:{port}/v1/projects/-/serviceAccounts/kes@p.iam.gserviceaccount.com:generateAccessToken","credential_source":{{"file":"{}"}}}}"#,
        subject.display()
    )
    .into_bytes();
    let value = simd_json::to_owned_value(&mut json).unwrap();
    let scopes = ["https://www.googleapis.com/auth/cloud-platform".to_string()];
    let account = ExternalAccount::from_json(&value, "test", &scopes).unwrap();
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

/// AWS temporary credentials from a container credentials answer (ECS, EKS Pod Identity), the
/// marker as the secret key, then as the session token (escaped, as JSON may carry it): a
/// Secrets Manager call signed with them (answered "not found"), then the store's drop. No
/// freed block holds a copy of either: not the answer, not the signing key's `AWS4<secret>`,
/// not the canonical request that carries the token.
#[test]
fn aws_container_credentials_leave_no_copy_behind() {
    use kes::config::AwsConfig;
    use kes::keystore::aws::AwsStore;
    use kes::keystore::{KeyStore, StoreError};
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
        let config = AwsConfig {
            endpoint: url.clone(),
            region: "us-east-1".into(),
            kms_key: String::new(),
            credentials: None,
        };
        let copies = freed_copies(|| {
            let store = AwsStore::new(config, &env).unwrap();
            assert_eq!(store.credentials_source(), "container credentials");
            let e = store.get("k").err().unwrap();
            assert!(matches!(e, StoreError::NotFound), "{which}: {e}");
            drop(store);
        });
        server.join().unwrap();
        left.push((which, copies));
    }
    assert!(
        left.iter().all(|(_, copies)| *copies == 0),
        "unwiped copies in freed memory: {left:?}"
    );
}
