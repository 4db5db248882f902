//! The key API over a real TLS handshake on loopback, against `kes server --dev` in-process:
//! every route's success and error answers, byte-exact where clients compare bytes.

mod common;

use base64::Engine;
use common::*;

const CONTEXT_B64: &str = "eyJteS1idWNrZXQiOiJteS1idWNrZXQvbXktb2JqZWN0In0=";

#[test]
fn version_and_status() {
    let server = dev_server();
    let mut c = server.client();
    let r = c.request("GET", "/version", None, &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(json_str(&r, "version"), env!("CARGO_PKG_VERSION"));
    assert!(r.body.ends_with(b"}\n"));

    let r = c.request("GET", "/v1/status", None, &[]).unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    let text = body_str(&r);
    assert!(text.contains("\"os\":\"linux\""), "{text}");
    assert!(text.contains("\"keystore_latency\":"), "{text}");
    assert!(!text.contains("keystore_unreachable"), "{text}");

    let r = c.request("GET", "/v1/ready", None, &[]).unwrap();
    assert_eq!((r.status, r.body.len()), (200, 0));

    let r = c.request("GET", "/v1/api", None, &[]).unwrap();
    assert_eq!(r.status, 200);
    let text = body_str(&r);
    // Upstream's 22 routes and our key rotation route.
    assert_eq!(text.matches("\"path\"").count(), 23, "{text}");
    assert!(
        text.contains(r#"{"method":"PUT","path":"/v1/key/rotate/","max_body":0,"timeout":15}"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"{"method":"PUT","path":"/v1/key/generate/","max_body":1000000,"timeout":15}"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"{"method":"GET","path":"/version","max_body":0,"timeout":10}"#),
        "{text}"
    );
}

#[test]
fn key_lifecycle_create_generate_decrypt_delete() {
    let server = dev_server();
    let mut c = server.client();

    let r = c
        .request("POST", "/v1/key/create/my-key", None, &[])
        .unwrap();
    assert_eq!((r.status, r.body.len()), (200, 0), "{}", body_str(&r));
    assert_eq!(r.header("content-length"), Some("0"));
    assert_error(
        &c.request("POST", "/v1/key/create/my-key", None, &[])
            .unwrap(),
        400,
        "key already exists",
    );
    // PUT is the canonical method; POST is a synonym.
    assert_error(
        &c.request("PUT", "/v1/key/create/my-key", None, &[])
            .unwrap(),
        400,
        "key already exists",
    );

    let body = format!(r#"{{"context":"{CONTEXT_B64}"}}"#);
    let r = c
        .request(
            "POST",
            "/v1/key/generate/my-key",
            Some(body.as_bytes()),
            &[],
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    let plaintext = json_str(&r, "plaintext");
    let ciphertext = json_str(&r, "ciphertext");
    assert_eq!(B64.decode(&plaintext).unwrap().len(), 32);
    assert_eq!(B64.decode(&ciphertext).unwrap().len(), 76);
    assert_eq!(ciphertext.len(), 104);

    let body = format!(r#"{{"ciphertext":"{ciphertext}","context":"{CONTEXT_B64}"}}"#);
    let r = c
        .request("POST", "/v1/key/decrypt/my-key", Some(body.as_bytes()), &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    assert_eq!(json_str(&r, "plaintext"), plaintext);
    assert_eq!(body_str(&r), format!("{{\"plaintext\":\"{plaintext}\"}}\n"));

    // Wrong or missing context: not authentic.
    let body = format!(r#"{{"ciphertext":"{ciphertext}"}}"#);
    assert_error(
        &c.request("POST", "/v1/key/decrypt/my-key", Some(body.as_bytes()), &[])
            .unwrap(),
        400,
        "decryption failed: ciphertext is not authentic",
    );

    // Generate without a body (no context) and decrypt with an explicit null context.
    let r = c
        .request("POST", "/v1/key/generate/my-key", None, &[])
        .unwrap();
    assert_eq!(r.status, 200);
    let body = format!(
        r#"{{"CIPHERTEXT":"{}","context":null}}"#,
        json_str(&r, "ciphertext")
    );
    let r2 = c
        .request("PUT", "/v1/key/decrypt/my-key", Some(body.as_bytes()), &[])
        .unwrap();
    assert_eq!(r2.status, 200, "{}", body_str(&r2));
    assert_eq!(json_str(&r2, "plaintext"), json_str(&r, "plaintext"));

    // Encrypt / decrypt arbitrary data.
    let body = format!(
        r#"{{"plaintext":"{}","context":"{CONTEXT_B64}"}}"#,
        B64.encode("Hello World")
    );
    let r = c
        .request("POST", "/v1/key/encrypt/my-key", Some(body.as_bytes()), &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    let ct = json_str(&r, "ciphertext");
    assert_eq!(B64.decode(&ct).unwrap().len(), 11 + 44);
    let body = format!(r#"{{"ciphertext":"{ct}","context":"{CONTEXT_B64}"}}"#);
    let r = c
        .request("POST", "/v1/key/decrypt/my-key", Some(body.as_bytes()), &[])
        .unwrap();
    assert_eq!(
        B64.decode(json_str(&r, "plaintext")).unwrap(),
        b"Hello World"
    );

    // HMAC is deterministic per key.
    let body = br#"{"message":"cm9vdCBhY2Nlc3Mga2V5"}"#;
    let h1 = c
        .request("PUT", "/v1/key/hmac/my-key", Some(body), &[])
        .unwrap();
    let h2 = c
        .request("PUT", "/v1/key/hmac/my-key", Some(body), &[])
        .unwrap();
    assert_eq!(h1.status, 200, "{}", body_str(&h1));
    assert_eq!(B64.decode(json_str(&h1, "hmac")).unwrap().len(), 32);
    assert_eq!(json_str(&h1, "hmac"), json_str(&h2, "hmac"));

    // Describe.
    let r = c
        .request("GET", "/v1/key/describe/my-key", None, &[])
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(json_str(&r, "name"), "my-key");
    assert!(["AES256", "ChaCha20"].contains(&json_str(&r, "algorithm").as_str()));
    let admin = kes::auth::apikey::ApiKey::parse(&server.api_key)
        .unwrap()
        .identity()
        .to_hex();
    assert_eq!(json_str(&r, "created_by"), admin);
    assert!(json_str(&r, "created_at").ends_with('Z'));

    // Delete, then everything says "key does not exist".
    let r = c
        .request("DELETE", "/v1/key/delete/my-key", None, &[])
        .unwrap();
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_error(
        &c.request("DELETE", "/v1/key/delete/my-key", None, &[])
            .unwrap(),
        404,
        "key does not exist",
    );
    assert_error(
        &c.request("POST", "/v1/key/generate/my-key", None, &[])
            .unwrap(),
        404,
        "key does not exist",
    );
    assert_error(
        &c.request("GET", "/v1/key/describe/my-key", None, &[])
            .unwrap(),
        404,
        "key does not exist",
    );
    let body = format!(r#"{{"ciphertext":"{ciphertext}","context":"{CONTEXT_B64}"}}"#);
    assert_error(
        &c.request("POST", "/v1/key/decrypt/my-key", Some(body.as_bytes()), &[])
            .unwrap(),
        404,
        "key does not exist",
    );
}

#[test]
fn list_keys_with_patterns_and_redirect() {
    let server = dev_server();
    let mut c = server.client();
    for name in ["minio-a", "minio-b", "other", "minio-c"] {
        assert_eq!(
            c.request("POST", &format!("/v1/key/create/{name}"), None, &[])
                .unwrap()
                .status,
            200
        );
    }
    let r = c.request("GET", "/v1/key/list/", None, &[]).unwrap();
    assert_eq!(
        body_str(&r),
        "{\"names\":[\"minio-a\",\"minio-b\",\"minio-c\",\"other\"]}\n"
    );
    let r = c.request("GET", "/v1/key/list/*", None, &[]).unwrap();
    assert_eq!(
        body_str(&r),
        "{\"names\":[\"minio-a\",\"minio-b\",\"minio-c\",\"other\"]}\n"
    );
    let r = c.request("GET", "/v1/key/list/minio-*", None, &[]).unwrap();
    assert_eq!(
        body_str(&r),
        "{\"names\":[\"minio-a\",\"minio-b\",\"minio-c\"]}\n"
    );
    let r = c.request("GET", "/v1/key/list/zzz", None, &[]).unwrap();
    assert_eq!(body_str(&r), "{\"names\":[]}\n");
    assert_error(
        &c.request("GET", "/v1/key/list/a*b", None, &[]).unwrap(),
        400,
        "listing pattern 'a*b' is empty, too long or is invalid",
    );

    // kms-go lists everything via the slash-less path: 301 to the slash form, query kept.
    let r = c.request("GET", "/v1/key/list?x=1", None, &[]).unwrap();
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/v1/key/list/?x=1"));
    // Non-canonical paths are redirected to the cleaned path.
    let r = c.request("GET", "/v1//key/list/", None, &[]).unwrap();
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/v1/key/list/"));
}

#[test]
fn mux_level_answers() {
    let server = dev_server();
    let mut c = server.client();
    let r = c.request("GET", "/v1/nope", None, &[]).unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(body_str(&r), "404 page not found\n");
    assert_eq!(
        c.request("GET", "/v1/status/", None, &[]).unwrap().status,
        404
    );

    let r = c.request("GET", "/v1/key/create/x", None, &[]).unwrap();
    assert_error(&r, 405, "received method 'GET' expected 'PUT'");
    assert_eq!(r.header("accept"), Some("PUT"));
    let r = c.request("POST", "/v1/key/delete/x", None, &[]).unwrap();
    assert_error(&r, 405, "received method 'POST' expected 'DELETE'");
    assert_eq!(r.header("accept"), Some("DELETE"));
    assert_eq!(
        c.request("HEAD", "/version", None, &[]).unwrap().status,
        405
    );
}

#[test]
fn argument_and_body_errors() {
    let server = dev_server();
    let mut c = server.client();
    for bad in ["-x", "x-", "_", "a.b", "%C3%A9"] {
        let r = c
            .request("POST", &format!("/v1/key/create/{bad}"), None, &[])
            .unwrap();
        assert_eq!(r.status, 400, "{bad}: {}", body_str(&r));
        assert!(
            json_str(&r, "message").starts_with("key name '"),
            "{}",
            body_str(&r)
        );
        assert!(json_str(&r, "message")
            .ends_with("' is empty, too long or contains invalid characters"));
    }
    assert_error(
        &c.request("POST", "/v1/key/create/", None, &[]).unwrap(),
        400,
        "key name '' is empty, too long or contains invalid characters",
    );
    assert_error(
        &c.request(
            "POST",
            &format!("/v1/key/create/{}", "k".repeat(81)),
            None,
            &[],
        )
        .unwrap(),
        400,
        &format!(
            "key name '{}' is empty, too long or contains invalid characters",
            "k".repeat(81)
        ),
    );
    assert_eq!(
        c.request("POST", "/v1/key/create/k", None, &[])
            .unwrap()
            .status,
        200
    );
    for body in [
        &b"not json"[..],
        b"",
        b"[]",
        br#"{"ciphertext":"not base64!"}"#,
        br#"{"ciphertext":5}"#,
    ] {
        let r = c
            .request("POST", "/v1/key/decrypt/k", Some(body), &[])
            .unwrap();
        assert_error(&r, 400, "invalid request body");
    }
    let r = c
        .request(
            "POST",
            "/v1/key/generate/k",
            Some(b"{\"context\":\"%%%\"}"),
            &[],
        )
        .unwrap();
    assert_error(&r, 400, "invalid request body");
    // Truncated ciphertexts are not authentic, not a server error.
    let r = c
        .request(
            "POST",
            "/v1/key/decrypt/k",
            Some(br#"{"ciphertext":"AAAA"}"#),
            &[],
        )
        .unwrap();
    assert_error(&r, 400, "decryption failed: ciphertext is not authentic");
}

#[test]
fn import_checks_in_reference_order_and_decrypts_spec_vectors() {
    let server = dev_server();
    let mut c = server.client();
    let key_b64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    assert_error(
        &c.request("POST", "/v1/key/import/k", Some(b"{"), &[])
            .unwrap(),
        400,
        "invalid import key request body",
    );
    assert_error(
        &c.request(
            "POST",
            "/v1/key/import/k",
            Some(format!(r#"{{"key":"{key_b64}","cipher":"AES-128"}}"#).as_bytes()),
            &[],
        )
        .unwrap(),
        406,
        "algorithm 'AES-128' is not supported",
    );
    assert_error(
        &c.request(
            "POST",
            "/v1/key/import/k",
            Some(br#"{"key":"AAAA","cipher":"AES256"}"#),
            &[],
        )
        .unwrap(),
        406,
        "invalid key size for 'AES256'",
    );
    let r = c
        .request(
            "POST",
            "/v1/key/import/k",
            Some(format!(r#"{{"key":"{key_b64}","cipher":"AES256"}}"#).as_bytes()),
            &[],
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    assert_error(
        &c.request(
            "POST",
            "/v1/key/import/k",
            Some(format!(r#"{{"key":"{key_b64}","cipher":"AES256"}}"#).as_bytes()),
            &[],
        )
        .unwrap(),
        400,
        "key already exists",
    );

    // crypto-formats.md §11.1 and §11.4: the same DEK from the raw, MessagePack and JSON
    // envelopes.
    let dek = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    let raw = "qcDsbRpq8F27ep5YDx+5pmCKddecT4ukXN38vFpAUijk2rKKTjxV2UH8MCYJ4WGsQEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaWw==";
    let msgp = "lbFBRVMyNTYtR0NNX1NIQTI1NtkgNjMwZGNkMjk2NmM0MzM2NjkxMTI1NDQ4YmJiMjViNGbEEEBBQkNERUZHSElKS0xNTk/EDFBRUlNUVVZXWFlaW8QwqcDsbRpq8F27ep5YDx+5pmCKddecT4ukXN38vFpAUijk2rKKTjxV2UH8MCYJ4WGs";
    let json = B64.encode(r#"{"aead":"AES-256-GCM-HMAC-SHA-256","id":"630dcd2966c4336691125448bbb25b4f","iv":"QEFCQ0RFRkdISUpLTE1OTw==","nonce":"UFFSU1RVVldYWVpb","bytes":"qcDsbRpq8F27ep5YDx+5pmCKddecT4ukXN38vFpAUijk2rKKTjxV2UH8MCYJ4WGs"}"#);
    for ct in [raw, msgp, json.as_str()] {
        let body = format!(r#"{{"ciphertext":"{ct}","context":"{CONTEXT_B64}"}}"#);
        let r = c
            .request("POST", "/v1/key/decrypt/k", Some(body.as_bytes()), &[])
            .unwrap();
        assert_eq!(r.status, 200, "{}", body_str(&r));
        assert_eq!(json_str(&r, "plaintext"), dek);
    }
    // §11.3: "Hello World" without context.
    let body = r#"{"ciphertext":"wYSiIlFvgRXhP9AbMMwKH7kiJCBMB426CmijQEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaWw=="}"#;
    let r = c
        .request("POST", "/v1/key/decrypt/k", Some(body.as_bytes()), &[])
        .unwrap();
    assert_eq!(
        B64.decode(json_str(&r, "plaintext")).unwrap(),
        b"Hello World"
    );
    let r = c.request("GET", "/v1/key/describe/k", None, &[]).unwrap();
    assert_eq!(json_str(&r, "algorithm"), "AES256");

    // Legacy import body ({"bytes","algorithm"}) of a ChaCha20 key: §11.2's ciphertext.
    let body = format!(r#"{{"bytes":"{key_b64}","algorithm":"XCHACHA20-POLY1305"}}"#);
    assert_eq!(
        c.request("POST", "/v1/key/import/c", Some(body.as_bytes()), &[])
            .unwrap()
            .status,
        200
    );
    let body = format!(
        r#"{{"ciphertext":"IfdhcQykQu5wCdc1xdWKFKaC20Wds8TbP4n+puuK2k2LoVCMWVpWbDaAgVUWtCmwQEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaWw==","context":"{CONTEXT_B64}"}}"#
    );
    let r = c
        .request("POST", "/v1/key/decrypt/c", Some(body.as_bytes()), &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    assert_eq!(json_str(&r, "plaintext"), dek);
}

#[test]
fn identity_self_describe_for_admin() {
    let server = dev_server();
    let mut c = server.client();
    let admin = kes::auth::apikey::ApiKey::parse(&server.api_key)
        .unwrap()
        .identity()
        .to_hex();
    let r = c
        .request("GET", "/v1/identity/self/describe", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    assert_eq!(json_str(&r, "identity"), admin);
    assert!(body_str(&r).contains("\"admin\":true"));
}

#[test]
fn unknown_identity_is_forbidden_before_argument_validation() {
    let server = dev_server();
    let (stranger, _) = new_api_key();
    let mut c = client_for(&server.endpoint(), &stranger);
    assert_error(
        &c.request("POST", "/v1/key/create/ok", None, &[]).unwrap(),
        403,
        "not authorized: insufficient permissions",
    );
    // 403 beats 400 for an invalid name.
    assert_error(
        &c.request("POST", "/v1/key/create/-bad-", None, &[])
            .unwrap(),
        403,
        "not authorized: insufficient permissions",
    );
    // /version needs no authorisation.
    assert_eq!(c.request("GET", "/version", None, &[]).unwrap().status, 200);
    // Self-describe never rejects, but a stranger has no identity entry.
    assert_error(
        &c.request("GET", "/v1/identity/self/describe", None, &[])
            .unwrap(),
        404,
        "identity does not exist",
    );
}

#[test]
fn concurrent_creates_of_one_name_have_one_winner() {
    let server = dev_server();
    let endpoint = server.endpoint();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let endpoint = endpoint.clone();
            let key = server.api_key.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut c = client_for(&endpoint, &key);
                c.request("GET", "/version", None, &[]).unwrap(); // connect first
                barrier.wait();
                let r = c
                    .request("POST", "/v1/key/create/contended", None, &[])
                    .unwrap();
                (r.status, body_str(&r))
            })
        })
        .collect();
    let results: Vec<(u16, String)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let wins = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(wins, 1, "{results:?}");
    assert!(results
        .iter()
        .filter(|(s, _)| *s != 200)
        .all(|(s, b)| *s == 400 && b.contains("key already exists")));
}

/// Upstream reads request bodies with `json.NewDecoder(body).Decode`: the first JSON value
/// counts, whatever follows it is ignored (a second object, a newline, garbage).
#[test]
fn bodies_with_trailing_bytes_after_the_object_are_accepted() {
    let server = dev_server();
    let mut c = server.client();
    let key = B64.encode([7u8; 32]);
    let import = format!(r#"{{"key":"{key}","cipher":"AES256"}} trailing"#);
    let r = c
        .request("POST", "/v1/key/import/t", Some(import.as_bytes()), &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));

    let r = c
        .request(
            "POST",
            "/v1/key/encrypt/t",
            Some(br#"{"plaintext":"aGVsbG8="}{"plaintext":"other"}"#),
            &[],
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    let ciphertext = json_str(&r, "ciphertext");
    let body = format!("{{\"ciphertext\":\"{ciphertext}\"}}\n\x00garbage");
    let r = c
        .request("POST", "/v1/key/decrypt/t", Some(body.as_bytes()), &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    assert_eq!(json_str(&r, "plaintext"), "aGVsbG8=");

    for (path, body) in [
        ("/v1/key/generate/t", &br#"{"context":"YQ=="}]"#[..]),
        ("/v1/key/hmac/t", br#"{"message":"aGVsbG8="} x"#),
    ] {
        let r = c.request("POST", path, Some(body), &[]).unwrap();
        assert_eq!(r.status, 200, "{path}: {}", body_str(&r));
    }
    // Garbage before the object, or an unfinished object, is still refused.
    for body in [
        &b"x{\"plaintext\":\"aGVsbG8=\"}"[..],
        b"{\"plaintext\":\"aGVsbG8=\"",
    ] {
        let r = c
            .request("POST", "/v1/key/encrypt/t", Some(body), &[])
            .unwrap();
        assert_error(&r, 400, "invalid request body");
    }
}

/// A listing of 50 000 keys is complete and in order, and is written in slices that give the
/// core back to other connections: `/v1/status` on the same (single) core keeps answering
/// while big listings are being served.
#[test]
fn a_list_of_50k_keys_is_complete_and_the_core_keeps_answering() {
    const KEYS: usize = 50_000;
    let mut store = None;
    let server = dev_server_with(|o| store = Some(o.shared.keystore.clone()));
    let store = store.expect("keystore");
    let expected: Vec<String> = (0..KEYS).map(|i| format!("key-{i:05}")).collect();
    // Created out of order: the listing sorts.
    for name in expected.iter().rev() {
        store.create(name, b"not a record").unwrap();
    }

    let lister = {
        let (endpoint, api_key) = (server.endpoint(), server.api_key.clone());
        std::thread::spawn(move || {
            let mut c = client_for(&endpoint, &api_key);
            (0..3)
                .map(|_| c.request("GET", "/v1/key/list/*", None, &[]).unwrap())
                .collect::<Vec<_>>()
        })
    };
    let mut c = server.client();
    let mut slowest = std::time::Duration::ZERO;
    loop {
        let started = std::time::Instant::now();
        let r = c.request("GET", "/v1/status", None, &[]).unwrap();
        assert_eq!(r.status, 200, "{}", body_str(&r));
        slowest = slowest.max(started.elapsed());
        if lister.is_finished() {
            break;
        }
    }
    assert!(slowest < std::time::Duration::from_secs(5), "{slowest:?}");

    for r in lister.join().unwrap() {
        assert_eq!(r.status, 200);
        let mut body = r.body.clone();
        let value = simd_json::to_owned_value(&mut body).unwrap();
        use simd_json::prelude::*;
        let names: Vec<&str> = value
            .get("names")
            .and_then(|n| n.as_array())
            .expect("names")
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        assert_eq!(names.len(), KEYS);
        assert!(names.iter().eq(expected.iter()), "complete and sorted");
    }
}
