//! The records upstream KES (final release) wrote into an fs keystore, and the vectors it
//! made with them (`../shared/fixtures/upstream-kes/fs.json`, see its README), for stores
//! that have no fixture of their own: a test plants each record the way upstream's code for
//! its store keeps it, starts kes over the stand-in and decrypts upstream's ciphertexts.

use base64::Engine;
use simd_json::prelude::*;

/// One key upstream made: its name, the record text it stored, and its vectors.
pub struct UpstreamKey {
    pub name: String,
    pub record: String,
    pub vectors: Vec<Vector>,
}

/// A DEK or message upstream encrypted: base64 plaintext, ciphertext and context (if any).
pub struct Vector {
    pub plaintext_b64: String,
    pub ciphertext_b64: String,
    pub context_b64: Option<String>,
}

/// The keys of `fs.json`, with the stored file text as the record (all stores hold that
/// text). Panics naming the path when the fixture is missing.
pub fn fs_keys() -> Vec<UpstreamKey> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/upstream-kes/fs.json"
    );
    let mut raw = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v = simd_json::to_owned_value(&mut raw).unwrap_or_else(|e| panic!("{path}: {e}"));
    let keys = v.get("keys").and_then(|k| k.as_object()).expect("keys");
    let text =
        |o: &simd_json::OwnedValue, k: &str| o.get(k).and_then(|s| s.as_str()).map(str::to_string);
    let mut out: Vec<UpstreamKey> = keys
        .iter()
        .map(|(name, k)| {
            let stored = k.get("stored").expect("stored");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text(stored, "content_b64").expect("content_b64"))
                .expect("content_b64 is base64");
            let record = String::from_utf8(bytes).expect("the record is text");
            assert_eq!(Some(&record), text(stored, "content_text").as_ref());
            let vectors = k
                .get("vectors")
                .and_then(|v| v.as_array())
                .expect("vectors")
                .iter()
                .map(|v| Vector {
                    plaintext_b64: text(v, "plaintext_b64").expect("plaintext_b64"),
                    ciphertext_b64: text(v, "ciphertext_b64").expect("ciphertext_b64"),
                    context_b64: text(v, "context_b64"),
                })
                .collect();
            UpstreamKey {
                name: name.to_string(),
                record,
                vectors,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(out.len() >= 2 && out.iter().all(|k| k.vectors.len() >= 4));
    out
}

/// Plants every upstream record in `backend` (as upstream's code for that store keeps it),
/// then decrypts each of its vectors through the kes server `node` (over that backend); a
/// wrong context must fail. All of fs.json's vectors (8) are checked.
pub fn upstream_records_are_served(
    node: &crate::common::BinServer,
    api_key: &str,
    backend: &dyn crate::common::lifecycle::Backend,
) {
    let mut client = crate::common::client_for(&format!("https://{}", node.addr), api_key);
    let keys = fs_keys();
    for k in &keys {
        backend.plant(&k.name, &k.record);
    }
    let mut n = 0;
    for k in &keys {
        for v in &k.vectors {
            let body = |context: Option<&str>| {
                let mut b = Vec::new();
                let mut w = kes::api::json::JsonWriter::object(&mut b);
                w.string("ciphertext", &v.ciphertext_b64);
                if let Some(c) = context {
                    w.string("context", c);
                }
                w.finish();
                b
            };
            let path = format!("/v1/key/decrypt/{}", k.name);
            let r = client
                .request("POST", &path, Some(&body(v.context_b64.as_deref())), &[])
                .unwrap();
            let text = String::from_utf8_lossy(&r.body).to_string();
            assert_eq!(r.status, 200, "{}: {text}", k.name);
            assert!(
                text.contains(&format!(r#""plaintext":"{}""#, v.plaintext_b64)),
                "{}: {text}",
                k.name
            );
            let wrong = base64::engine::general_purpose::STANDARD.encode("another context");
            let r = client
                .request("POST", &path, Some(&body(Some(&wrong))), &[])
                .unwrap();
            assert_ne!(r.status, 200, "{}: a wrong context decrypted", k.name);
            n += 1;
        }
    }
    assert_eq!(n, 8, "fs.json has four vectors for each of two keys");
}
