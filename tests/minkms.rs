//! The MinKMS API (kms-go's `kms.Client`, what MinIO speaks with `MINIO_KMS_SERVER`) against
//! a real server on loopback, over HTTP/1.1 (the crate's client) and HTTP/2 (curl). The
//! client side here is written from the wire facts alone: frames
//! `[u16 BE command][u32 BE length][protobuf]`, kms-go's field numbers, its error texts.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use common::*;
use kes::auth::apikey::ApiKey;
use sha2::Digest;

// Command codes (kms-go `cmds`).
const ENCLAVE_CREATE: u16 = 101;
const ENCLAVE_DELETE: u16 = 102;
const ENCLAVE_STATUS: u16 = 103;
const ENCLAVE_LIST: u16 = 104;
const KEY_CREATE: u16 = 201;
const KEY_DELETE: u16 = 202;
const KEY_STATUS: u16 = 204;
const KEY_ENCRYPT: u16 = 205;
const KEY_DECRYPT: u16 = 206;
const KEY_GENERATE: u16 = 207;
const KEY_LIST: u16 = 208;
const KEY_MAC: u16 = 210;
const POLICY_CREATE: u16 = 301;
const POLICY_ASSIGN: u16 = 303;
const POLICY_GET: u16 = 304;
const POLICY_STATUS: u16 = 305;
const POLICY_LIST: u16 = 306;
const IDENTITY_CREATE: u16 = 401;
const IDENTITY_DELETE: u16 = 402;
const IDENTITY_GET: u16 = 403;
const IDENTITY_LIST: u16 = 404;

const OCTET: &str = "application/octet-stream";

/// A minimal protobuf writer/reader of our own, from the wire format.
mod pb {
    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    pub fn bytes(out: &mut Vec<u8>, field: u32, v: &[u8]) {
        varint(out, u64::from(field) << 3 | 2);
        varint(out, v.len() as u64);
        out.extend_from_slice(v);
    }

    pub fn uint(out: &mut Vec<u8>, field: u32, v: u64) {
        varint(out, u64::from(field) << 3);
        varint(out, v);
    }

    fn read_varint(b: &[u8], at: &mut usize) -> u64 {
        let mut v = 0;
        let mut shift = 0;
        loop {
            let byte = b[*at];
            *at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    }

    /// (field, varint or bytes) in order.
    pub fn parse(b: &[u8]) -> Vec<(u32, Result<u64, Vec<u8>>)> {
        let mut at = 0;
        let mut out = Vec::new();
        while at < b.len() {
            let tag = read_varint(b, &mut at);
            let field = (tag >> 3) as u32;
            match tag & 7 {
                0 => out.push((field, Ok(read_varint(b, &mut at)))),
                2 => {
                    let n = read_varint(b, &mut at) as usize;
                    out.push((field, Err(b[at..at + n].to_vec())));
                    at += n;
                }
                t => panic!("unexpected wire type {t}"),
            }
        }
        out
    }

    pub fn get_bytes(m: &[(u32, Result<u64, Vec<u8>>)], field: u32) -> Vec<u8> {
        m.iter()
            .find_map(|(f, v)| (*f == field).then(|| v.clone().err()).flatten())
            .unwrap_or_default()
    }

    pub fn get_uint(m: &[(u32, Result<u64, Vec<u8>>)], field: u32) -> u64 {
        m.iter()
            .find_map(|(f, v)| (*f == field).then(|| v.clone().ok()).flatten())
            .unwrap_or(0)
    }

    pub fn get_str(m: &[(u32, Result<u64, Vec<u8>>)], field: u32) -> String {
        String::from_utf8(get_bytes(m, field)).unwrap()
    }
}

fn frame(command: u16, message: &[u8]) -> Vec<u8> {
    let mut f = command.to_be_bytes().to_vec();
    f.extend_from_slice(&(message.len() as u32).to_be_bytes());
    f.extend_from_slice(message);
    f
}

/// Splits an answer into its frames; the answer must be exactly frames.
fn frames(body: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let cmd = u16::from_be_bytes([body[at], body[at + 1]]);
        let n = u32::from_be_bytes(body[at + 2..at + 6].try_into().unwrap()) as usize;
        out.push((cmd, body[at + 6..at + 6 + n].to_vec()));
        at += 6 + n;
    }
    assert_eq!(at, body.len(), "answer is not exactly frames");
    out
}

fn named(name: &str) -> Vec<u8> {
    let mut m = Vec::new();
    pb::bytes(&mut m, 1, name.as_bytes());
    m
}

fn generate_msg(name: &str, version: u64, ad: &[u8]) -> Vec<u8> {
    let mut m = named(name);
    pb::uint(&mut m, 2, version);
    pb::bytes(&mut m, 3, ad);
    pb::uint(&mut m, 4, 32);
    m
}

fn decrypt_msg(name: &str, version: u64, ciphertext: &[u8], ad: &[u8]) -> Vec<u8> {
    let mut m = named(name);
    pb::uint(&mut m, 2, version);
    pb::bytes(&mut m, 3, ciphertext);
    pb::bytes(&mut m, 4, ad);
    m
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Wire {
    H1,
    H2,
}

/// An answer: status, content type, content length header, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    content_length: Option<usize>,
    body: Vec<u8>,
}

impl Answer {
    /// The protobuf `ErrResponse` message (field 1).
    fn error(&self) -> (u16, String) {
        assert_eq!(self.content_type, OCTET, "{self:?}");
        (self.status, pb::get_str(&pb::parse(&self.body), 1))
    }

    fn ok_frames(&self) -> Vec<(u16, Vec<u8>)> {
        assert_eq!(
            self.status,
            200,
            "{:?}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.content_type, OCTET);
        assert_eq!(self.content_length, Some(self.body.len()));
        frames(&self.body)
    }
}

/// A client of one server with one API key, over one of the two protocols.
struct Kms<'a> {
    addr: std::net::SocketAddr,
    key: &'a str,
    wire: Wire,
    dir: PathBuf,
}

impl<'a> Kms<'a> {
    fn new(addr: std::net::SocketAddr, key: &'a str, wire: Wire, dir: &Path) -> Self {
        let dir = dir.join(format!("{:?}-{}", wire, &key[key.len() - 8..]));
        std::fs::create_dir_all(&dir).unwrap();
        let parsed = ApiKey::parse(key).unwrap();
        let (cert, private) = kes::auth::cert::client_cert_from_api_key(&parsed).unwrap();
        std::fs::write(dir.join("client.crt"), pem("CERTIFICATE", &cert)).unwrap();
        std::fs::write(
            dir.join("client.key"),
            pem("PRIVATE KEY", private.secret_der()),
        )
        .unwrap();
        Kms {
            addr,
            key,
            wire,
            dir,
        }
    }

    fn send(&self, method: &str, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Answer {
        match self.wire {
            Wire::H1 => {
                let mut c = client_for(&format!("https://{}", self.addr), self.key);
                let body = (!body.is_empty()).then_some(body);
                let r = c.request(method, path, body, headers).unwrap();
                Answer {
                    status: r.status,
                    content_type: r.header("content-type").unwrap_or("").to_string(),
                    content_length: r.header("content-length").and_then(|v| v.parse().ok()),
                    body: r.body,
                }
            }
            Wire::H2 => {
                let input = self.dir.join("in");
                let output = self.dir.join("out");
                let head = self.dir.join("head");
                std::fs::write(&input, body).unwrap();
                let mut cmd = Command::new("curl");
                cmd.args(["-sSk", "--http2", "-X", method, "--max-time", "10"])
                    .arg("--cert")
                    .arg(self.dir.join("client.crt"))
                    .arg("--key")
                    .arg(self.dir.join("client.key"))
                    .arg("-o")
                    .arg(&output)
                    .arg("-D")
                    .arg(&head)
                    .args(["-w", "%{http_version}"]);
                for (n, v) in headers {
                    cmd.args(["-H", &format!("{n}: {v}")]);
                }
                if !body.is_empty() {
                    cmd.arg("--data-binary")
                        .arg(format!("@{}", input.display()));
                }
                let out = cmd
                    .arg(format!("https://{}{}", self.addr, path))
                    .output()
                    .expect("run curl");
                assert_eq!(String::from_utf8_lossy(&out.stdout), "2", "{out:?}");
                let head = std::fs::read_to_string(head).unwrap();
                let mut lines = head.lines();
                let status = lines
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|s| s.parse().ok())
                    .unwrap();
                let header = |name: &str| {
                    head.lines().find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                    })
                };
                Answer {
                    status,
                    content_type: header("content-type").unwrap_or_default(),
                    content_length: header("content-length").and_then(|v| v.parse().ok()),
                    body: std::fs::read(output).unwrap_or_default(),
                }
            }
        }
    }

    fn post(&self, body: &[u8]) -> Answer {
        self.send(
            "POST",
            "/v1/kms/default",
            body,
            &[("Content-Type", OCTET), ("Accept", "application/*")],
        )
    }

    fn one(&self, command: u16, message: &[u8]) -> Answer {
        self.post(&frame(command, message))
    }

    /// One command to `/v1/kms/<enclave>`.
    fn one_in(&self, enclave: &str, command: u16, message: &[u8]) -> Answer {
        self.send(
            "POST",
            &format!("/v1/kms/{enclave}"),
            &frame(command, message),
            &[("Content-Type", OCTET), ("Accept", "application/*")],
        )
    }
}

/// A parsed message: (field, varint or bytes) in wire order.
type Parsed = Vec<(u32, Result<u64, Vec<u8>>)>;

/// The messages of a list answer's repeated field 1, parsed.
fn list_entries(message: &[u8]) -> Vec<Parsed> {
    pb::parse(message)
        .into_iter()
        .filter(|(n, _)| *n == 1)
        .map(|(_, v)| pb::parse(&v.unwrap_err()))
        .collect()
}

/// The names (field 1) of a list answer's entries.
fn listed_names(message: &[u8]) -> Vec<String> {
    list_entries(message)
        .iter()
        .map(|e| pb::get_str(e, 1))
        .collect()
}

fn need_curl() {
    let found = Command::new("curl").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "this test needs `curl` with HTTP/2; tools/test-all.sh installs it"
    );
}

#[test]
fn create_generate_decrypt_round_trip_and_key_errors_over_h1_and_h2() {
    need_curl();
    let server = dev_server();
    let dir = tempfile::tempdir().unwrap();
    for wire in [Wire::H1, Wire::H2] {
        let kms = Kms::new(server.addr, &server.api_key, wire, dir.path());
        let name = format!("minio-{wire:?}").to_lowercase();

        // KEY:GENERATE on a missing key: what makes MinIO create MINIO_KMS_SSE_KEY.
        let ad = br#"{"bucket":"object"}"#;
        let r = kms.one(KEY_GENERATE, &generate_msg(&name, 0, ad));
        assert_eq!(r.error(), (404, "key does not exist".into()), "{wire:?}");

        let r = kms.one(KEY_CREATE, &named(&name));
        assert_eq!(r.ok_frames(), vec![(KEY_CREATE, Vec::new())]);
        let r = kms.one(KEY_CREATE, &named(&name));
        assert_eq!(r.error(), (409, "key already exists".into()));

        // Two GENERATE frames in one request: two answers, in order, each version 1.
        let mut body = frame(KEY_GENERATE, &generate_msg(&name, 0, ad));
        body.extend(frame(KEY_GENERATE, &generate_msg(&name, 1, b"")));
        let answers = kms.post(&body).ok_frames();
        assert_eq!(answers.len(), 2);
        let mut deks = Vec::new();
        for (cmd, msg) in &answers {
            assert_eq!(*cmd, KEY_GENERATE);
            let m = pb::parse(msg);
            assert_eq!(pb::get_uint(&m, 1), 1, "version");
            let plaintext = pb::get_bytes(&m, 2);
            assert_eq!(plaintext.len(), 32);
            deks.push((plaintext, pb::get_bytes(&m, 3)));
        }
        assert_ne!(deks[0].0, deks[1].0);

        // KEY:DECRYPT as MinIO sends it (version 1, the one GENERATE named) and with 0.
        for version in [1, 0] {
            let r = kms.one(KEY_DECRYPT, &decrypt_msg(&name, version, &deks[0].1, ad));
            let f = r.ok_frames();
            assert_eq!(f[0].0, KEY_DECRYPT);
            assert_eq!(pb::get_bytes(&pb::parse(&f[0].1), 1), deks[0].0);
        }
        // Wrong associated data, a mangled ciphertext, a version that does not exist.
        let r = kms.one(KEY_DECRYPT, &decrypt_msg(&name, 1, &deks[0].1, b"other"));
        assert_eq!(r.error(), (400, "invalid ciphertext".into()));
        let r = kms.one(KEY_DECRYPT, &decrypt_msg(&name, 1, b"garbage", ad));
        assert_eq!(r.error(), (400, "invalid ciphertext".into()));
        let r = kms.one(KEY_DECRYPT, &decrypt_msg(&name, 2, &deks[0].1, ad));
        assert_eq!(r.error(), (404, "key version does not exist".into()));

        // KEY:ENCRYPT → KEY:DECRYPT, KEY:MAC, KEY:STATUS, KEY:DELETE.
        let mut m = named(&name);
        pb::bytes(&mut m, 3, b"secret");
        pb::bytes(&mut m, 4, ad);
        let f = kms.one(KEY_ENCRYPT, &m).ok_frames();
        let enc = pb::parse(&f[0].1);
        assert_eq!(pb::get_uint(&enc, 1), 1);
        let r = kms.one(
            KEY_DECRYPT,
            &decrypt_msg(&name, 1, &pb::get_bytes(&enc, 2), ad),
        );
        assert_eq!(pb::get_bytes(&pb::parse(&r.ok_frames()[0].1), 1), b"secret");
        let mut m = named(&name);
        pb::bytes(&mut m, 3, b"message");
        let f = kms.one(KEY_MAC, &m).ok_frames();
        assert_eq!(pb::get_bytes(&pb::parse(&f[0].1), 2).len(), 32);
        let f = kms.one(KEY_STATUS, &named(&name)).ok_frames();
        let s = pb::parse(&f[0].1);
        assert_eq!(pb::get_str(&s, 1), name);
        assert_eq!(pb::get_uint(&s, 2), 1);
        assert_eq!(pb::get_str(&s, 3), "AES256");
        let admin = ApiKey::parse(&server.api_key).unwrap().identity();
        assert_eq!(pb::get_str(&s, 5), admin.to_h1());
        assert_eq!(
            kms.one(KEY_DELETE, &named(&name)).ok_frames()[0].0,
            KEY_DELETE
        );
        let r = kms.one(KEY_STATUS, &named(&name));
        assert_eq!(r.error(), (404, "key does not exist".into()));
    }
}

#[test]
fn a_kes_api_ciphertext_decrypts_through_key_decrypt() {
    let server = dev_server();
    let mut c = server.client();
    assert_eq!(
        c.request("POST", "/v1/key/create/migrated", None, &[])
            .unwrap()
            .status,
        200
    );
    let context = br#"{"minio":"bucket/object"}"#;
    let body = format!(r#"{{"context":"{}"}}"#, B64.encode(context));
    let r = c
        .request(
            "POST",
            "/v1/key/generate/migrated",
            Some(body.as_bytes()),
            &[],
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let plaintext = B64.decode(json_str(&r, "plaintext")).unwrap();
    let ciphertext = B64.decode(json_str(&r, "ciphertext")).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let kms = Kms::new(server.addr, &server.api_key, Wire::H1, dir.path());
    let r = kms.one(
        KEY_DECRYPT,
        &decrypt_msg("migrated", 1, &ciphertext, context),
    );
    assert_eq!(pb::get_bytes(&pb::parse(&r.ok_frames()[0].1), 1), plaintext);

    // And the other way: a MinKMS DEK decrypts through the KES API.
    let f = kms
        .one(KEY_GENERATE, &generate_msg("migrated", 0, context))
        .ok_frames();
    let g = pb::parse(&f[0].1);
    let body = format!(
        r#"{{"ciphertext":"{}","context":"{}"}}"#,
        B64.encode(pb::get_bytes(&g, 3)),
        B64.encode(context)
    );
    let r = c
        .request(
            "POST",
            "/v1/key/decrypt/migrated",
            Some(body.as_bytes()),
            &[],
        )
        .unwrap();
    assert_eq!(
        B64.decode(json_str(&r, "plaintext")).unwrap(),
        pb::get_bytes(&g, 2)
    );

    // KEY:LIST: every entry typed and with a creator kms-go parses; the page is in order.
    for n in ["list-a", "list-b"] {
        assert_eq!(kms.one(KEY_CREATE, &named(n)).ok_frames().len(), 1);
    }
    let mut m = Vec::new();
    pb::bytes(&mut m, 1, b"list-");
    let f = kms.one(KEY_LIST, &m).ok_frames();
    let entries: Vec<_> = pb::parse(&f[0].1)
        .into_iter()
        .filter(|(n, _)| *n == 1)
        .map(|(_, v)| pb::parse(&v.unwrap_err()))
        .collect();
    let names: Vec<String> = entries.iter().map(|e| pb::get_str(e, 1)).collect();
    assert_eq!(names, ["list-a", "list-b"]);
    for e in &entries {
        assert_eq!(pb::get_str(e, 3), "AES256");
        assert!(pb::get_str(e, 5).starts_with("h1:"));
        assert_eq!(pb::get_uint(e, 2), 1);
    }
    // A limit of one: one entry and where to continue.
    let mut m = Vec::new();
    pb::bytes(&mut m, 1, b"list-");
    pb::uint(&mut m, 3, 1);
    let f = kms.one(KEY_LIST, &m).ok_frames();
    let page = pb::parse(&f[0].1);
    assert_eq!(page.iter().filter(|(n, _)| *n == 1).count(), 1);
    assert_eq!(pb::get_str(&page, 2), "list-b");

    // A page holds at most LIST_PAGE_KEYS_MAX keys (101 keys created in one request).
    let max = kes::api::minkms::LIST_PAGE_KEYS_MAX;
    let body: Vec<u8> = (0..=max)
        .flat_map(|i| frame(KEY_CREATE, &named(&format!("page-{i:03}"))))
        .collect();
    assert_eq!(kms.post(&body).ok_frames().len(), max + 1);
    let mut m = Vec::new();
    pb::bytes(&mut m, 1, b"page-");
    pb::uint(&mut m, 3, 5000);
    let f = kms.one(KEY_LIST, &m).ok_frames();
    let page = pb::parse(&f[0].1);
    assert_eq!(page.iter().filter(|(n, _)| *n == 1).count(), max);
    assert_eq!(pb::get_str(&page, 2), format!("page-{max:03}"));

    // The one enclave.
    let f = kms.one(ENCLAVE_STATUS, &named("default")).ok_frames();
    assert_eq!(pb::get_str(&pb::parse(&f[0].1), 1), "default");
    let f = kms.one(ENCLAVE_LIST, &[]).ok_frames();
    assert_eq!(pb::parse(&f[0].1).len(), 1);
    let r = kms.one(ENCLAVE_STATUS, &named("tenant"));
    assert_eq!(r.error(), (404, "enclave does not exist".into()));
}

/// The identity kms-go gives a `k1:` key, computed here from the wire facts: `h1:` +
/// unpadded base64url of SHA-256 over the Ed25519 SubjectPublicKeyInfo.
fn h1_of_k1(k1: &str) -> String {
    use ring::signature::KeyPair;
    let seed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(k1.strip_prefix("k1:").unwrap())
        .unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(pair.public_key().as_ref());
    let hash = sha2::Sha256::digest(&spki);
    format!(
        "h1:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash)
    )
}

/// The identity (hex) and policy the server names for the certificate of `key`.
fn self_described(endpoint: &str, key: &str) -> (String, String) {
    let r = client_for(endpoint, key)
        .request("GET", "/v1/identity/self/describe", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{key}");
    (json_str(&r, "identity"), json_str(&r, "policy"))
}

/// KEY:GENERATE on `name`, then KEY:DECRYPT of what it gave: both answered with one frame.
fn generate_then_decrypt(kms: &Kms, name: &str) {
    let f = kms
        .one(KEY_GENERATE, &generate_msg(name, 0, b""))
        .ok_frames();
    let ct = pb::get_bytes(&pb::parse(&f[0].1), 3);
    assert_eq!(
        kms.one(KEY_DECRYPT, &decrypt_msg(name, 1, &ct, b""))
            .ok_frames()
            .len(),
        1
    );
}

#[test]
fn policies_govern_commands_and_h1_identities_are_ours() {
    // A k1 key (MINIO_KMS_API_KEY) whose identity the config names in the h1: form.
    let k1 = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    let h1 = h1_of_k1(k1);
    let (admin_key, admin) = new_api_key();
    let (stranger_key, _) = new_api_key();
    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    let extra = format!(
        "policy:\n  minio:\n    allow:\n    - /v1/key/generate/minio-*\n    - /v1/key/decrypt/minio-*\n    - /v1/key/list/*\n    identities:\n    - {h1}\n"
    );
    let server = config_server(&tls, &admin, keys.path(), &extra);
    let endpoint = format!("https://{}", server.addr);

    // The identity the server computes for the k1 key's certificate is the h1 one.
    let (hex, policy) = self_described(&endpoint, k1);
    let id = kes::auth::identity::Identity::from_hex(&hex).unwrap();
    assert_eq!(id.to_h1(), h1);
    assert_eq!(policy, "minio");

    let dir = tempfile::tempdir().unwrap();
    let admin_kms = Kms::new(server.addr, &admin_key, Wire::H1, dir.path());
    assert_eq!(
        admin_kms
            .one(KEY_CREATE, &named("minio-sse"))
            .ok_frames()
            .len(),
        1
    );
    assert_eq!(
        admin_kms.one(KEY_CREATE, &named("other")).ok_frames().len(),
        1
    );

    let denied = (403, "access denied: insufficient permissions".to_string());
    for wire in [Wire::H1, Wire::H2] {
        if wire == Wire::H2 {
            need_curl();
        }
        let minio = Kms::new(server.addr, k1, wire, dir.path());
        generate_then_decrypt(&minio, "minio-sse");
        assert_eq!(minio.one(KEY_LIST, &[]).ok_frames().len(), 1);
        // Not in the policy: create, another key, status, the enclave (admin only).
        assert_eq!(minio.one(KEY_CREATE, &named("minio-new")).error(), denied);
        assert_eq!(
            minio
                .one(KEY_GENERATE, &generate_msg("other", 0, b""))
                .error(),
            denied
        );
        assert_eq!(minio.one(KEY_STATUS, &named("minio-sse")).error(), denied);
        assert_eq!(minio.one(ENCLAVE_STATUS, &named("default")).error(), denied);
        // One denied frame fails the whole request and answers nothing else.
        let mut body = frame(KEY_GENERATE, &generate_msg("minio-sse", 0, b""));
        body.extend(frame(KEY_GENERATE, &generate_msg("other", 0, b"")));
        assert_eq!(minio.post(&body).error(), denied);
    }
    // An identity without a policy is refused from the head, body unread: protobuf to a
    // protobuf client, JSON (which kms-go reads as protojson) to others.
    for wire in [Wire::H1, Wire::H2] {
        let stranger = Kms::new(server.addr, &stranger_key, wire, dir.path());
        let r = stranger.one(KEY_GENERATE, &generate_msg("minio-sse", 0, b""));
        assert_eq!(r.error(), denied, "{wire:?}");
        let r = stranger.send(
            "POST",
            "/v1/kms/default",
            b"x",
            &[("Content-Type", "text/plain")],
        );
        assert_eq!(r.status, 403);
        assert_eq!(json_str_of(&r.body, "message"), denied.1);
    }
}

#[test]
fn k2_keys_authenticate_as_the_identities_kms_go_gives_them() {
    // The policy names the P-256 key by its h1: identity and the P-384 key by its hex one.
    let (admin_key, admin) = new_api_key();
    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    let extra = format!(
        "policy:\n  minio:\n    allow:\n    - /v1/key/generate/minio-*\n    - /v1/key/decrypt/minio-*\n    - /v1/key/list/*\n    identities:\n    - {K2_P256_H1}\n    - {K2_P384_HEX}\n"
    );
    let server = config_server(&tls, &admin, keys.path(), &extra);
    let endpoint = format!("https://{}", server.addr);

    for (key, hex, h1) in [
        (K2_P256, K2_P256_HEX, K2_P256_H1),
        (K2_P384, K2_P384_HEX, K2_P384_H1),
    ] {
        // Our client presents the key's ECDSA certificate; the server names its identity.
        assert_eq!(
            self_described(&endpoint, key),
            (hex.to_string(), "minio".to_string())
        );
        let id = kes::auth::identity::Identity::from_hex(hex).unwrap();
        assert_eq!(id.to_h1(), h1);
    }

    let dir = tempfile::tempdir().unwrap();
    let admin_kms = Kms::new(server.addr, &admin_key, Wire::H1, dir.path());
    admin_kms.one(KEY_CREATE, &named("minio-sse")).ok_frames();
    // The MinKMS API over both protocols (HTTP/2: curl with the key's certificate and
    // PKCS#8 key on disk): allowed by the policy, and refused where it does not allow.
    need_curl();
    let denied = (403, "access denied: insufficient permissions".to_string());
    for key in [K2_P256, K2_P384] {
        for wire in [Wire::H1, Wire::H2] {
            let minio = Kms::new(server.addr, key, wire, dir.path());
            generate_then_decrypt(&minio, "minio-sse");
            assert_eq!(
                minio.one(KEY_CREATE, &named("minio-new")).error(),
                denied,
                "{key} {wire:?}"
            );
        }
    }
}

fn json_str_of(body: &[u8], member: &str) -> String {
    let r = kes::client::Response {
        status: 200,
        headers: Vec::new(),
        body: body.to_vec(),
    };
    json_str(&r, member)
}

#[test]
fn malformed_requests_get_clear_errors_and_version_speaks_both() {
    need_curl();
    let server = dev_server();
    let dir = tempfile::tempdir().unwrap();
    for wire in [Wire::H1, Wire::H2] {
        let kms = Kms::new(server.addr, &server.api_key, wire, dir.path());
        assert_eq!(
            kms.one(KEY_CREATE, &named("k")).status,
            if wire == Wire::H1 { 200 } else { 409 }
        );
        let bad = |body: &[u8]| {
            let (status, message) = kms.post(body).error();
            assert_eq!(status, 400, "{message}");
            message
        };
        assert!(bad(&[0, 201, 0]).contains("truncated header at byte 0"));
        assert!(bad(&[0, 206, 0, 0, 0, 9, 1]).contains("declares 9 bytes, 1 follow"));
        let mut two = frame(KEY_STATUS, &named("k"));
        two.extend_from_slice(&[0, 204]);
        assert!(bad(&two).contains("truncated header at byte"));
        assert!(bad(&frame(999, &[])).contains("999 is not a command"));
        assert!(bad(&frame(KEY_GENERATE, &[0x0a, 5, b'k']))
            .starts_with("invalid KEY:GENERATE request: message is truncated"));
        assert!(bad(&frame(KEY_GENERATE, &[0x0a, 1, 0xff])).contains("not valid UTF-8"));
        assert!(bad(&frame(KEY_GENERATE, &[0x08, 1])).contains("wrong wire type"));
        assert!(bad(&frame(KEY_CREATE, &named("a/b"))).contains("invalid characters"));
        let mut long = generate_msg("k", 0, b"");
        pb::uint(&mut long, 4, 64);
        assert!(bad(&frame(KEY_GENERATE, &long)).contains("data keys are 32 bytes"));
        let many = frame(KEY_STATUS, &named("k")).repeat(1001);
        assert!(bad(&many).contains("too many commands"));
        let many = frame(KEY_STATUS, &named("k")).repeat(1000);
        assert_eq!(kms.post(&many).ok_frames().len(), 1000);
        // An unknown enclave; no enclave at all is the default one.
        let r = kms.send(
            "POST",
            "/v1/kms/tenant",
            &frame(KEY_STATUS, &named("k")),
            &[("Content-Type", OCTET)],
        );
        assert_eq!(r.error(), (404, "enclave does not exist".into()));
        let r = kms.send(
            "POST",
            "/v1/kms",
            &frame(KEY_STATUS, &named("k")),
            &[("Content-Type", OCTET)],
        );
        assert_eq!(r.ok_frames().len(), 1);
        // Not protobuf: 415 as JSON; an oversized body: 413.
        let r = kms.send(
            "POST",
            "/v1/kms/default",
            &frame(KEY_STATUS, &named("k")),
            &[("Content-Type", "application/json")],
        );
        assert_eq!(r.status, 415);
        assert!(json_str_of(&r.body, "message").contains("application/octet-stream"));
        let r = kms.post(&vec![0u8; kes::routes::KMS_BODY_BYTES_MAX + 1]);
        assert_eq!(r.status, 413);

        // /version: protojson-compatible JSON by default, protobuf for octet-stream; the
        // host is the one the client used.
        let host = server.addr.to_string();
        let r = kms.send("GET", "/version", &[], &[("Accept", "application/*")]);
        assert_eq!(r.status, 200);
        assert_eq!(json_str_of(&r.body, "version"), env!("CARGO_PKG_VERSION"));
        assert_eq!(json_str_of(&r.body, "api_version"), "v1");
        assert_eq!(json_str_of(&r.body, "host"), host);
        let r = kms.send("GET", "/version", &[], &[("Accept", OCTET)]);
        assert_eq!(r.content_type, OCTET);
        let v = pb::parse(&r.body);
        assert_eq!(pb::get_str(&v, 1), env!("CARGO_PKG_VERSION"));
        assert_eq!(pb::get_str(&v, 4), host);
    }
}

#[test]
fn the_dev_banner_prints_the_admin_key_in_both_forms_with_one_identity() {
    let server = bin_server(&["--dev"]);
    let kes_key = server.dev_api_key();
    let line = server
        .stdout_lines
        .iter()
        .find(|l| l.starts_with("MinKMS Key"))
        .unwrap_or_else(|| panic!("no MinKMS key in banner: {:?}", server.stdout_lines));
    let k1 = line.split_whitespace().last().unwrap();
    assert!(k1.starts_with("k1:") && k1.len() == 46, "{k1}");
    let identity = ApiKey::parse(&kes_key).unwrap().identity();
    assert_eq!(h1_of_k1(k1), identity.to_h1());
    // The k1 key is the admin on the wire too.
    let dir = tempfile::tempdir().unwrap();
    let kms = Kms::new(server.addr, k1, Wire::H1, dir.path());
    assert_eq!(kms.one(KEY_CREATE, &named("banner")).ok_frames().len(), 1);
}

#[test]
fn enclaves_are_key_namespaces_of_their_own_over_h1_and_h2() {
    need_curl();
    let server = dev_server();
    let admin_h1 = ApiKey::parse(&server.api_key).unwrap().identity().to_h1();
    let dir = tempfile::tempdir().unwrap();
    let mut kes = server.client();
    for wire in [Wire::H1, Wire::H2] {
        let kms = Kms::new(server.addr, &server.api_key, wire, dir.path());
        let w = format!("{wire:?}").to_lowercase();
        let (t1, t2) = (format!("tenant-a-{w}"), format!("tenant-b-{w}"));

        // ENCLAVE:CREATE, once; `default` always exists; bad names say the rule.
        for t in [&t1, &t2] {
            let f = kms.one(ENCLAVE_CREATE, &named(t)).ok_frames();
            assert_eq!(f, vec![(ENCLAVE_CREATE, Vec::new())], "{wire:?}");
        }
        let exists = (409, "enclave already exists".to_string());
        assert_eq!(kms.one(ENCLAVE_CREATE, &named(&t1)).error(), exists);
        assert_eq!(kms.one(ENCLAVE_CREATE, &named("default")).error(), exists);
        let long = "e".repeat(kes::api::minkms::enclave::ENCLAVE_NAME_BYTES_MAX + 1);
        for bad in ["a--b", "", "-a", long.as_str()] {
            let (status, text) = kms.one(ENCLAVE_CREATE, &named(bad)).error();
            assert_eq!(status, 400, "{bad}");
            assert!(
                text.starts_with(&format!(
                    "invalid enclave name '{bad}': an enclave name is 1 to 40 bytes"
                )),
                "{text}"
            );
        }
        let max = "e".repeat(kes::api::minkms::enclave::ENCLAVE_NAME_BYTES_MAX);
        assert_eq!(kms.one(ENCLAVE_CREATE, &named(&max)).ok_frames().len(), 1);
        assert_eq!(kms.one(ENCLAVE_DELETE, &named(&max)).ok_frames().len(), 1);

        // ENCLAVE:STATUS: created now, by the admin; ENCLAVE:LIST: default and the records.
        let f = kms.one(ENCLAVE_STATUS, &named(&t1)).ok_frames();
        let s = pb::parse(&f[0].1);
        assert_eq!(pb::get_str(&s, 1), t1);
        assert_eq!(pb::get_str(&s, 3), admin_h1);
        let at = pb::get_uint(&pb::parse(&pb::get_bytes(&s, 2)), 1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(at + 60 > now && at <= now, "{at} {now}");
        let f = kms.one(ENCLAVE_LIST, &[]).ok_frames();
        let names = listed_names(&f[0].1);
        assert!(names.contains(&"default".to_string()), "{names:?}");
        assert!(names.contains(&t1) && names.contains(&t2), "{names:?}");
        let mut m = Vec::new();
        pb::bytes(&mut m, 1, b"tenant-");
        pb::uint(&mut m, 3, 1);
        let f = kms.one(ENCLAVE_LIST, &m).ok_frames();
        assert_eq!(listed_names(&f[0].1).len(), 1);
        assert!(
            !pb::get_str(&pb::parse(&f[0].1), 2).is_empty(),
            "continue_at"
        );

        // An enclave that does not exist.
        let r = kms.one_in("nowhere", KEY_CREATE, &named("k"));
        assert_eq!(r.error(), (404, "enclave does not exist".into()));
        let r = kms.one(ENCLAVE_STATUS, &named("nowhere"));
        assert_eq!(r.error(), (404, "enclave does not exist".into()));

        // The same key name in two enclaves: two keys (no conflict); a DEK of one does not
        // open with the other, nor with the default namespace.
        for t in [&t1, &t2] {
            let f = kms.one_in(t, KEY_CREATE, &named("k")).ok_frames();
            assert_eq!(f, vec![(KEY_CREATE, Vec::new())]);
        }
        let f = kms
            .one_in(&t1, KEY_GENERATE, &generate_msg("k", 0, b"ad"))
            .ok_frames();
        let g = pb::parse(&f[0].1);
        let (plaintext, ciphertext) = (pb::get_bytes(&g, 2), pb::get_bytes(&g, 3));
        let f = kms
            .one_in(&t1, KEY_DECRYPT, &decrypt_msg("k", 1, &ciphertext, b"ad"))
            .ok_frames();
        assert_eq!(pb::get_bytes(&pb::parse(&f[0].1), 1), plaintext);
        let r = kms.one_in(&t2, KEY_DECRYPT, &decrypt_msg("k", 1, &ciphertext, b"ad"));
        assert_eq!(r.error(), (400, "invalid ciphertext".into()));
        let r = kms.one(KEY_DECRYPT, &decrypt_msg("k", 1, &ciphertext, b"ad"));
        assert_eq!(r.error(), (404, "key does not exist".into()));
        let f = kms.one_in(&t1, KEY_STATUS, &named("k")).ok_frames();
        assert_eq!(pb::get_str(&pb::parse(&f[0].1), 1), "k");

        // KEY:LIST in an enclave: its keys, by their own names; in `default`: none of them.
        let f = kms.one_in(&t1, KEY_LIST, &[]).ok_frames();
        assert_eq!(listed_names(&f[0].1), ["k"]);
        let f = kms.one(KEY_LIST, &[]).ok_frames();
        let names = listed_names(&f[0].1);
        assert!(names.iter().all(|n| !n.starts_with('-')), "{names:?}");

        // The KES API neither lists nor reaches them.
        let r = kes.request("GET", "/v1/key/list/*", None, &[]).unwrap();
        assert_eq!(r.status, 200);
        let body = String::from_utf8_lossy(&r.body).into_owned();
        assert!(!body.contains("-e-") && !body.contains(&t1), "{body}");
        let stored = format!("/v1/key/describe/-e-{t1}--k");
        let r = kes.request("GET", &stored, None, &[]).unwrap();
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));

        // ENCLAVE:DELETE: not `default`; an enclave goes with its keys, and a new one of
        // the same name starts empty.
        let r = kms.one(ENCLAVE_DELETE, &named("default"));
        assert_eq!(r.error().0, 400);
        assert!(r.error().1.contains("cannot be deleted"), "{:?}", r.error());
        let f = kms.one(ENCLAVE_DELETE, &named(&t1)).ok_frames();
        assert_eq!(f, vec![(ENCLAVE_DELETE, Vec::new())]);
        let r = kms.one_in(&t1, KEY_STATUS, &named("k"));
        assert_eq!(r.error(), (404, "enclave does not exist".into()));
        let r = kms.one(ENCLAVE_DELETE, &named(&t1));
        assert_eq!(r.error(), (404, "enclave does not exist".into()));
        assert_eq!(kms.one(ENCLAVE_CREATE, &named(&t1)).ok_frames().len(), 1);
        let r = kms.one_in(&t1, KEY_STATUS, &named("k"));
        assert_eq!(r.error(), (404, "key does not exist".into()));
        let f = kms.one_in(&t1, KEY_LIST, &[]).ok_frames();
        assert!(listed_names(&f[0].1).is_empty());
        // The other enclave's key is untouched.
        assert_eq!(
            kms.one_in(&t2, KEY_STATUS, &named("k")).ok_frames().len(),
            1
        );
        for t in [&t1, &t2] {
            assert_eq!(kms.one(ENCLAVE_DELETE, &named(t)).ok_frames().len(), 1);
        }
    }
}

#[test]
fn per_enclave_policies_config_enclaves_and_read_only_identities_and_policies() {
    let (admin_key, admin) = new_api_key();
    let (user_key, user) = new_api_key();
    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    let extra = format!(
        "enclaves:\n- tenant-1\n- tenant-2\npolicy:\n  tenants:\n    allow:\n    - /v1/kms/tenant-1/key/generate/*\n    - /v1/key/list/*\n    deny:\n    - /v1/kms/tenant-1/key/generate/secret-*\n    identities:\n    - {user}\n"
    );
    let server = config_server(&tls, &admin, keys.path(), &extra);
    let admin_h1 = kes::auth::identity::Identity::from_hex(&admin)
        .unwrap()
        .to_h1();
    let user_h1 = kes::auth::identity::Identity::from_hex(&user)
        .unwrap()
        .to_h1();
    let dir = tempfile::tempdir().unwrap();
    let root = Kms::new(server.addr, &admin_key, Wire::H1, dir.path());

    // `enclaves:` made them at start, recorded as the admin's.
    let f = root.one(ENCLAVE_LIST, &[]).ok_frames();
    assert_eq!(listed_names(&f[0].1), ["default", "tenant-1", "tenant-2"]);
    let f = root.one(ENCLAVE_STATUS, &named("tenant-2")).ok_frames();
    assert_eq!(pb::get_str(&pb::parse(&f[0].1), 3), admin_h1);
    for enclave in ["default", "tenant-1", "tenant-2"] {
        for k in ["k", "secret-k"] {
            assert_eq!(
                root.one_in(enclave, KEY_CREATE, &named(k))
                    .ok_frames()
                    .len(),
                1
            );
        }
    }

    let denied = (403, "access denied: insufficient permissions".to_string());
    for wire in [Wire::H1, Wire::H2] {
        if wire == Wire::H2 {
            need_curl();
        }
        let u = Kms::new(server.addr, &user_key, wire, dir.path());
        // `/v1/kms/tenant-1/key/generate/*`: generate in tenant-1, nowhere else, nothing else.
        let f = u
            .one_in("tenant-1", KEY_GENERATE, &generate_msg("k", 0, b""))
            .ok_frames();
        assert_eq!(f[0].0, KEY_GENERATE, "{wire:?}");
        let r = u.one_in("tenant-1", KEY_GENERATE, &generate_msg("secret-k", 0, b""));
        assert_eq!(r.error(), denied, "deny wins");
        let r = u.one_in("tenant-2", KEY_GENERATE, &generate_msg("k", 0, b""));
        assert_eq!(r.error(), denied);
        // An enclave that does not exist answers the same: no right there, no way to learn
        // which enclaves exist. (The admin gets 404 "enclave does not exist".)
        let r = u.one_in("tenant-9", KEY_GENERATE, &generate_msg("k", 0, b""));
        assert_eq!(r.error(), denied, "{wire:?}");
        let r = u.one(KEY_GENERATE, &generate_msg("k", 0, b""));
        assert_eq!(r.error(), denied);
        assert_eq!(
            u.one_in("tenant-1", KEY_CREATE, &named("n")).error(),
            denied
        );
        assert_eq!(u.one_in("tenant-1", KEY_LIST, &[]).error(), denied);
        // `/v1/key/list/*` is the default enclave's KEY:LIST, not another's.
        assert_eq!(u.one(KEY_LIST, &[]).ok_frames().len(), 1);
        for (cmd, m) in [
            (ENCLAVE_LIST, Vec::new()),
            (ENCLAVE_CREATE, named("mine")),
            (IDENTITY_LIST, Vec::new()),
            (POLICY_LIST, Vec::new()),
            (POLICY_GET, named("tenants")),
            (IDENTITY_GET, named(&admin_h1)),
        ] {
            assert_eq!(u.one(cmd, &m).error(), denied, "{cmd}");
        }

        // Any identity reads its own identity: h1 form, User (3), its policy.
        let f = u.one(IDENTITY_GET, &named(&user_h1)).ok_frames();
        let i = pb::parse(&f[0].1);
        assert_eq!(f[0].0, IDENTITY_GET);
        assert_eq!(pb::get_str(&i, 1), user_h1);
        assert_eq!(pb::get_uint(&i, 2), 3);
        assert_eq!(pb::get_str(&i, 3), "tenants");
        assert_eq!(pb::get_str(&i, 5), admin_h1);
    }

    // The admin: SysAdmin (1) and no policy; the list holds both, sorted, in h1 form.
    let f = root.one(IDENTITY_GET, &named(&admin_h1)).ok_frames();
    let i = pb::parse(&f[0].1);
    assert_eq!(
        (pb::get_str(&i, 1), pb::get_uint(&i, 2)),
        (admin_h1.clone(), 1)
    );
    assert_eq!(pb::get_str(&i, 3), "");
    // Hex is accepted too; an identity nobody configured is not there.
    let f = root.one(IDENTITY_GET, &named(&user)).ok_frames();
    assert_eq!(pb::get_str(&pb::parse(&f[0].1), 1), user_h1);
    let (_, stranger) = new_api_key();
    let r = root.one(IDENTITY_GET, &named(&stranger));
    assert_eq!(r.error(), (404, "identity does not exist".into()));
    let r = root.one(IDENTITY_GET, &named("h1:nope"));
    assert_eq!(r.error().0, 400);
    let f = root.one(IDENTITY_LIST, &[]).ok_frames();
    let mut want = vec![admin_h1.clone(), user_h1.clone()];
    want.sort();
    assert_eq!(listed_names(&f[0].1), want);

    // Policies: status, list, and the paths as kms-go's per-command rule sets, per enclave.
    let f = root.one(POLICY_STATUS, &named("tenants")).ok_frames();
    let p = pb::parse(&f[0].1);
    assert_eq!(pb::get_str(&p, 1), "tenants");
    assert_eq!(pb::get_str(&p, 5), admin_h1);
    let f = root.one(POLICY_LIST, &[]).ok_frames();
    assert_eq!(listed_names(&f[0].1), ["tenants"]);
    let r = root.one(POLICY_GET, &named("nope"));
    assert_eq!(r.error(), (404, "policy does not exist".into()));
    // (command, patterns) of field `field`'s map entries.
    let rules = |m: &[u8], field: u32| -> Vec<(String, Vec<String>)> {
        pb::parse(m)
            .into_iter()
            .filter(|(n, _)| *n == field)
            .map(|(_, v)| {
                let entry = pb::parse(&v.unwrap_err());
                (
                    pb::get_str(&entry, 1),
                    listed_names(&pb::get_bytes(&entry, 2)),
                )
            })
            .collect()
    };
    let f = root
        .one_in("tenant-1", POLICY_GET, &named("tenants"))
        .ok_frames();
    assert_eq!(
        rules(&f[0].1, 2),
        [("KEY:GENERATE".to_string(), vec!["*".to_string()])]
    );
    assert_eq!(
        rules(&f[0].1, 3),
        [("KEY:GENERATE".to_string(), vec!["secret-*".to_string()])]
    );
    let f = root.one(POLICY_GET, &named("tenants")).ok_frames();
    assert_eq!(
        rules(&f[0].1, 2),
        [("KEY:LIST".to_string(), vec!["*".to_string()])]
    );
    assert!(rules(&f[0].1, 3).is_empty());

    // What would change them: 501, saying where they are set.
    for cmd in [
        IDENTITY_CREATE,
        IDENTITY_DELETE,
        POLICY_CREATE,
        POLICY_ASSIGN,
    ] {
        let (status, text) = root.one(cmd, &named("x")).error();
        assert_eq!(status, 501, "{cmd}");
        assert!(
            text.contains("identities and policies are set in the server's config file"),
            "{text}"
        );
    }
}

const KEY_LIST_VERSIONS: u16 = 209;

fn add_version_msg(name: &str) -> Vec<u8> {
    let mut m = named(name);
    pb::uint(&mut m, 3, 1);
    m
}

fn versioned(name: &str, version: u64) -> Vec<u8> {
    let mut m = named(name);
    pb::uint(&mut m, 2, version);
    m
}

/// Generates a DEK through KEY:GENERATE: (version, plaintext, ciphertext).
fn kms_generate(kms: &Kms<'_>, name: &str, version: u64, ad: &[u8]) -> (u64, Vec<u8>, Vec<u8>) {
    let f = kms
        .one(KEY_GENERATE, &generate_msg(name, version, ad))
        .ok_frames();
    let m = pb::parse(&f[0].1);
    (
        pb::get_uint(&m, 1),
        pb::get_bytes(&m, 2),
        pb::get_bytes(&m, 3),
    )
}

fn kms_decrypt(kms: &Kms<'_>, name: &str, ciphertext: &[u8], ad: &[u8]) -> Answer {
    kms.one(KEY_DECRYPT, &decrypt_msg(name, 0, ciphertext, ad))
}

#[test]
fn key_versions_rotate_and_every_version_still_decrypts_over_h1_and_h2() {
    need_curl();
    let server = dev_server();
    let mut c = server.client();
    let dir = tempfile::tempdir().unwrap();
    let ad = br#"{"bucket":"object"}"#;
    for wire in [Wire::H1, Wire::H2] {
        let kms = Kms::new(server.addr, &server.api_key, wire, dir.path());
        let name = format!("rotated-{wire:?}").to_lowercase();

        // A key made through the KES API is version 1 of the same key here.
        let r = c
            .request("POST", &format!("/v1/key/create/{name}"), None, &[])
            .unwrap();
        assert_eq!(r.status, 200);
        let body = format!(r#"{{"context":"{}"}}"#, B64.encode(ad));
        let r = c
            .request(
                "POST",
                &format!("/v1/key/generate/{name}"),
                Some(body.as_bytes()),
                &[],
            )
            .unwrap();
        let kes_v1 = (
            B64.decode(json_str(&r, "plaintext")).unwrap(),
            B64.decode(json_str(&r, "ciphertext")).unwrap(),
        );
        assert_eq!(kes_v1.1.len(), 76, "version 1 keeps upstream's format");
        let (v, dek1, ct1) = kms_generate(&kms, &name, 0, ad);
        assert_eq!((v, ct1.len()), (1, 76));

        // KEY:CREATE with add_version: version 2 is the latest from now on.
        assert_eq!(
            kms.one(KEY_CREATE, &add_version_msg(&name)).ok_frames(),
            vec![(KEY_CREATE, Vec::new())]
        );
        let s = pb::parse(&kms.one(KEY_STATUS, &named(&name)).ok_frames()[0].1);
        assert_eq!(pb::get_uint(&s, 2), 2, "{wire:?}");
        let (v, dek2, ct2) = kms_generate(&kms, &name, 0, ad);
        assert_eq!(v, 2);
        assert_eq!(
            ct2.len(),
            76 + 8,
            "a version >= 2 ciphertext carries its version"
        );
        // Every version decrypts with version 0, as MinIO sends it.
        for (plain, ct) in [(&dek1, &ct1), (&dek2, &ct2), (&kes_v1.0, &kes_v1.1)] {
            let f = kms_decrypt(&kms, &name, ct, ad).ok_frames();
            assert_eq!(&pb::get_bytes(&pb::parse(&f[0].1), 1), plain);
        }
        // The KES API decrypts version 2 too and describes the versions.
        let body = format!(
            r#"{{"ciphertext":"{}","context":"{}"}}"#,
            B64.encode(&ct2),
            B64.encode(ad)
        );
        let r = c
            .request(
                "POST",
                &format!("/v1/key/decrypt/{name}"),
                Some(body.as_bytes()),
                &[],
            )
            .unwrap();
        assert_eq!(B64.decode(json_str(&r, "plaintext")).unwrap(), dek2);
        let r = c
            .request("GET", &format!("/v1/key/describe/{name}"), None, &[])
            .unwrap();
        let describe = body_str(&r);
        assert!(describe.contains(r#""version":2"#), "{describe}");
        assert!(
            describe.contains(r#""versions":[{"version":1,"#),
            "{describe}"
        );

        // An explicit older version still generates (in upstream's format for version 1).
        let (v, _, ct) = kms_generate(&kms, &name, 1, ad);
        assert_eq!((v, ct.len()), (1, 76));
        let r = kms.one(KEY_GENERATE, &generate_msg(&name, 7, ad));
        assert_eq!(r.error(), (404, "key version does not exist".into()));

        // The KES API's rotate route: version 3.
        let r = c
            .request("POST", &format!("/v1/key/rotate/{name}"), None, &[])
            .unwrap();
        assert_eq!(r.status, 200, "{}", body_str(&r));
        assert!(body_str(&r).contains(r#""version":3"#), "{}", body_str(&r));

        // KEY:LISTVERSIONS: every version, oldest first, from the asked version on.
        let f = kms.one(KEY_LIST_VERSIONS, &named(&name)).ok_frames();
        let listed: Vec<u64> = pb::parse(&f[0].1)
            .iter()
            .filter(|(field, _)| *field == 1)
            .map(|(_, v)| pb::get_uint(&pb::parse(v.as_ref().unwrap_err()), 2))
            .collect();
        assert_eq!(listed, vec![1, 2, 3]);
        let f = kms.one(KEY_LIST_VERSIONS, &versioned(&name, 2)).ok_frames();
        assert_eq!(
            pb::parse(&f[0].1).iter().filter(|(f, _)| *f == 1).count(),
            2
        );

        // Removing version 1: its ciphertexts fail clearly, the others still open, and the
        // removed number is never given out again.
        let f = kms.one(KEY_DELETE, &versioned(&name, 1)).ok_frames();
        assert_eq!(f[0].0, KEY_DELETE);
        let r = kms_decrypt(&kms, &name, &ct1, ad);
        assert_eq!(
            r.error(),
            (
                400,
                "decryption failed: key version 1 does not exist".into()
            )
        );
        let f = kms_decrypt(&kms, &name, &ct2, ad).ok_frames();
        assert_eq!(pb::get_bytes(&pb::parse(&f[0].1), 1), dek2);
        kms.one(KEY_CREATE, &add_version_msg(&name)).ok_frames();
        let s = pb::parse(&kms.one(KEY_STATUS, &named(&name)).ok_frames()[0].1);
        assert_eq!(pb::get_uint(&s, 2), 4, "version numbers are not reused");
        let r = kms.one(KEY_STATUS, &versioned(&name, 1));
        assert_eq!(r.error(), (404, "key version does not exist".into()));

        // Version 0 removes the latest; removing the last one left deletes the key.
        for _ in 0..3 {
            kms.one(KEY_DELETE, &versioned(&name, 0)).ok_frames();
        }
        let r = kms.one(KEY_STATUS, &named(&name));
        assert_eq!(r.error(), (404, "key does not exist".into()));

        // add_version on a key that does not exist creates it as version 1.
        kms.one(KEY_CREATE, &add_version_msg(&name)).ok_frames();
        let s = pb::parse(&kms.one(KEY_STATUS, &named(&name)).ok_frames()[0].1);
        assert_eq!(pb::get_uint(&s, 2), 1);
    }
}

#[test]
fn a_key_holds_at_most_the_version_limit_and_rotation_is_authorised_as_rotate() {
    let max = kes::crypto::keyring::KEY_VERSIONS_MAX;
    let k1 = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    let h1 = h1_of_k1(k1);
    let (admin_key, admin) = new_api_key();
    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    let server = dev_server();
    let dir = tempfile::tempdir().unwrap();
    let kms = Kms::new(server.addr, &server.api_key, Wire::H1, dir.path());
    kms.one(KEY_CREATE, &named("full")).ok_frames();
    for _ in 1..max {
        kms.one(KEY_CREATE, &add_version_msg("full")).ok_frames();
    }
    let (status, message) = kms.one(KEY_CREATE, &add_version_msg("full")).error();
    assert_eq!(status, 409);
    assert!(message.contains(&format!("{max} versions")), "{message}");
    let (v, _, ct) = kms_generate(&kms, "full", 0, b"");
    assert_eq!(v as usize, max);
    assert_eq!(kms_decrypt(&kms, "full", &ct, b"").ok_frames().len(), 1);

    // A policy that allows create but not rotate: KEY:CREATE works, add_version does not.
    let extra = format!(
        "policy:\n  minio:\n    allow:\n    - /v1/key/create/minio-*\n    - /v1/key/generate/minio-*\n    identities:\n    - {h1}\n"
    );
    let server = config_server(&tls, &admin, keys.path(), &extra);
    let minio = Kms::new(server.addr, k1, Wire::H1, dir.path());
    minio.one(KEY_CREATE, &named("minio-a")).ok_frames();
    let denied = (403, "access denied: insufficient permissions".to_string());
    assert_eq!(
        minio.one(KEY_CREATE, &add_version_msg("minio-a")).error(),
        denied
    );
    let admin_kms = Kms::new(server.addr, &admin_key, Wire::H1, dir.path());
    admin_kms
        .one(KEY_CREATE, &add_version_msg("minio-a"))
        .ok_frames();
    assert_eq!(kms_generate(&minio, "minio-a", 0, b"").0, 2);
}

/// Issue 23: a key upstream KES wrote (`../shared/fixtures/upstream-kes/fs.json`) is version 1
/// through the MinKMS API: KEY:STATUS shows it, every ciphertext upstream made decrypts with
/// version 0 and 1 (what MinIO sends after moving from the KES variables); after a rotation
/// through KEY:CREATE `add_version`, upstream's ciphertexts still decrypt through both APIs,
/// new DEKs are version 2, and the file holds the key ring.
#[test]
fn an_upstream_written_key_is_version_1_and_survives_its_rotation() {
    let fixture = common::fixtures::load("fs");
    let keys = tempfile::tempdir().unwrap();
    for (name, key) in fixture.keys() {
        let path = keys.path().join(name);
        std::fs::write(&path, key.file_bytes()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(key.file_mode())).unwrap();
    }
    let tls = tls_files();
    let (admin_key, admin) = new_api_key();
    let server = config_server(&tls, &admin, keys.path(), "");
    let dir = tempfile::tempdir().unwrap();
    let kms = Kms::new(server.addr, &admin_key, Wire::H1, dir.path());
    let context = |v: &common::fixtures::Vector| {
        v.context_b64
            .as_deref()
            .map(|c| B64.decode(c).unwrap())
            .unwrap_or_default()
    };
    for (name, key) in fixture.keys() {
        let s = pb::parse(&kms.one(KEY_STATUS, &named(name)).ok_frames()[0].1);
        assert_eq!(pb::get_uint(&s, 2), 1, "{name}");
        assert_eq!(pb::get_str(&s, 3), "AES256");
        let creator = kes::auth::identity::Identity::from_hex(&key.kes_key_info.created_by)
            .unwrap()
            .to_h1();
        assert_eq!(pb::get_str(&s, 5), creator);
        let decrypts_all = |versions: &[u64]| {
            for v in &key.vectors {
                let ct = B64.decode(&v.ciphertext_b64).unwrap();
                for &version in versions {
                    let r = kms.one(KEY_DECRYPT, &decrypt_msg(name, version, &ct, &context(v)));
                    let f = r.ok_frames();
                    assert_eq!(
                        B64.encode(pb::get_bytes(&pb::parse(&f[0].1), 1)),
                        v.plaintext_b64,
                        "{name}: {} with version {version}",
                        v.made_with
                    );
                }
            }
        };
        decrypts_all(&[0, 1]);

        kms.one(KEY_CREATE, &add_version_msg(name)).ok_frames();
        let stored = std::fs::read(keys.path().join(name)).unwrap();
        assert!(stored.starts_with(b"kes:keyring:v1:"), "{name}");
        decrypts_all(&[0, 1, 2]);
        common::fixtures::assert_serves_vectors(&server.endpoint(), &admin_key, name, key);
        let (v, _, ct) = kms_generate(&kms, name, 0, b"");
        assert_eq!((v, ct.len()), (2, 84));
    }
}
