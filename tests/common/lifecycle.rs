//! The checks every keystore gets, through a running kes server: a key's lifecycle
//! ([`keystore_lifecycle`]) and an outage of the keystore ([`outage_behaviour`]).
//!
//! A keystore's test (`tests/<keystore>.rs`) starts its backend (a real server, an emulator
//! or a stand-in) and a kes server on it, implements [`Backend`] (reading and writing a
//! record in the backend directly, the way upstream KES stores it), and calls
//! [`keystore_lifecycle`]; later [`outage_behaviour`] with a closure that takes the backend
//! away. Backends with expiring tokens check their renewal with [`relogin_after_revocation`]
//! or [`renewed_before_expiry`]; tests about how a node gets its credentials (cloud identity
//! chains) use the short [`create_and_use`] / [`used_and_renewed`]. Backend-specific checks
//! (layouts beyond the record, paging details, rejected calls) stay in that test, before or
//! after.

use std::time::{Duration, Instant};

use super::{assert_error, body_str, client_for, json_str};

/// A keystore seen directly, not through kes.
pub trait Backend {
    /// The record text stored under `name`, decoded from the backend's representation (the
    /// base64 of the text where the backend stores that); `None` when there is none.
    /// Implementations assert their backend-specific layout here (object type, group, …).
    fn record(&self, name: &str) -> Option<String>;

    /// Stores `record` under `name` as upstream KES does (another writer of the keystore).
    fn plant(&self, name: &str, record: &str);
}

/// What [`keystore_lifecycle`] runs against.
pub struct Lifecycle<'a> {
    /// The kes server (`https://…`) that creates, generates and deletes.
    pub writer: &'a str,
    /// The kes server that decrypts and lists: another node on the same keystore, or `writer`.
    pub reader: &'a str,
    pub api_key: &'a str,
    /// The key created and finally deleted.
    pub key: &'a str,
    /// A key planted in the backend as upstream writes it; left in place (cached, after
    /// the lifecycle: a "hot" key for [`outage_behaviour`]).
    pub planted: &'a str,
    /// How many `page-NNN` keys to create to cross the backend's list pages (0: none). They
    /// stay, uncached ("cold" keys for [`outage_behaviour`]).
    pub page_keys: usize,
}

impl<'a> Lifecycle<'a> {
    /// One kes server at `node` (writer and reader), with `upstream-key` planted.
    pub fn one_node(node: &'a str, api_key: &'a str, key: &'a str, page_keys: usize) -> Self {
        Lifecycle {
            writer: node,
            reader: node,
            api_key,
            key,
            planted: "upstream-key",
            page_keys,
        }
    }
}

/// Create (and a second create refused on the other node), generate with a context and
/// decrypt on the other node, the record stored as upstream stores it, a record upstream
/// wrote served, lists across pages, delete (gone from the backend, then 404). Returns the
/// record text kes stored (a valid record, e.g. to plant more).
pub fn keystore_lifecycle(l: &Lifecycle, backend: &dyn Backend) -> String {
    let mut w = client_for(l.writer, l.api_key);
    let mut r = client_for(l.reader, l.api_key);
    let key = l.key;

    let created = w
        .request("POST", &format!("/v1/key/create/{key}"), None, &[])
        .unwrap();
    assert_eq!(created.status, 200, "{}", body_str(&created));
    assert_error(
        &r.request("POST", &format!("/v1/key/create/{key}"), None, &[])
            .unwrap(),
        400,
        "key already exists",
    );
    generate_and_decrypt(l.writer, l.reader, l.api_key, key);
    let record = stored_record(backend, key);

    // A record upstream wrote is served.
    backend.plant(l.planted, &record);
    let served = w
        .request(
            "POST",
            &format!("/v1/key/generate/{}", l.planted),
            None,
            &[],
        )
        .unwrap();
    assert_eq!(served.status, 200, "{}", body_str(&served));

    // Past the backend's list pages: every key listed.
    for i in 0..l.page_keys {
        let r = w
            .request("POST", &format!("/v1/key/create/page-{i:03}"), None, &[])
            .unwrap();
        assert_eq!(r.status, 200, "page-{i:03}: {}", body_str(&r));
    }
    if l.page_keys > 0 {
        let text = body_str(&r.request("GET", "/v1/key/list/page-*", None, &[]).unwrap());
        for i in 0..l.page_keys {
            assert!(
                text.contains(&format!("\"page-{i:03}\"")),
                "page-{i:03} missing: {text}"
            );
        }
        assert!(!text.contains(&format!("\"{key}\"")), "{text}");
    }
    let all = body_str(&r.request("GET", "/v1/key/list/*", None, &[]).unwrap());
    assert!(
        all.contains(&format!("\"{key}\"")) && all.contains(&format!("\"{}\"", l.planted)),
        "{all}"
    );

    // Delete: gone from the backend, then 404.
    let deleted = w
        .request("DELETE", &format!("/v1/key/delete/{key}"), None, &[])
        .unwrap();
    assert_eq!(deleted.status, 200, "{}", body_str(&deleted));
    assert_eq!(backend.record(key), None, "'{key}' is still in the backend");
    assert_error(
        &w.request("POST", &format!("/v1/key/generate/{key}"), None, &[])
            .unwrap(),
        404,
        "key does not exist",
    );
    assert_error(
        &w.request("DELETE", &format!("/v1/key/delete/{key}"), None, &[])
            .unwrap(),
        404,
        "key does not exist",
    );
    record
}

/// Generates a data key with a context at `writer` and decrypts it at `reader`: the same
/// plaintext.
pub fn generate_and_decrypt(writer: &str, reader: &str, api_key: &str, key: &str) {
    let dek = client_for(writer, api_key)
        .request(
            "POST",
            &format!("/v1/key/generate/{key}"),
            Some(br#"{"context":"e30="}"#),
            &[],
        )
        .unwrap();
    assert_eq!(dek.status, 200, "{}", body_str(&dek));
    let body = format!(
        r#"{{"ciphertext":"{}","context":"e30="}}"#,
        json_str(&dek, "ciphertext")
    );
    let plain = client_for(reader, api_key)
        .request(
            "POST",
            &format!("/v1/key/decrypt/{key}"),
            Some(body.as_bytes()),
            &[],
        )
        .unwrap();
    assert_eq!(plain.status, 200, "{}", body_str(&plain));
    assert_eq!(json_str(&plain, "plaintext"), json_str(&dek, "plaintext"));
}

/// The record kes stored under `key`, checked to be stored as upstream stores it: the base64
/// of the protobuf record, in the backend's layout ([`Backend::record`] asserts that).
pub fn stored_record(backend: &dyn Backend, key: &str) -> String {
    let record = backend
        .record(key)
        .unwrap_or_else(|| panic!("'{key}' is not in the backend"));
    assert!(record.starts_with("CiQKI"), "{record}");
    kes::crypto::record::decode_record(record.as_bytes()).unwrap();
    record
}

/// Creates `key` at `node`, generates and decrypts with it, and checks its record in the
/// backend ([`stored_record`], returned): the short lifecycle, for a node whose way of
/// getting credentials is what a test is about.
pub fn create_and_use(node: &str, api_key: &str, key: &str, backend: &dyn Backend) -> String {
    let created = client_for(node, api_key)
        .request("POST", &format!("/v1/key/create/{key}"), None, &[])
        .unwrap();
    assert_eq!(created.status, 200, "{}", body_str(&created));
    generate_and_decrypt(node, node, api_key, key);
    stored_record(backend, key)
}

/// Revokes every token the backend issued (`revoke`) and checks that kes logs in again by
/// itself: the next call succeeds after exactly one more login (`logins` counts them).
pub fn relogin_after_revocation(
    node: &str,
    api_key: &str,
    revoke: impl FnOnce(),
    logins: impl Fn() -> usize,
) {
    let before = logins();
    revoke();
    let r = client_for(node, api_key)
        .request("POST", "/v1/key/create/after-revoke", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    assert_eq!(logins(), before + 1);
}

/// What a backend's token endpoint and API saw, for [`renewed_before_expiry`] (a stand-in
/// keeps one).
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    /// Tokens issued so far.
    pub issued: usize,
    /// Calls refused for a missing, unknown or expired token.
    pub unauthorized: usize,
    /// The other calls the backend refused (its log of them).
    pub rejected: Vec<String>,
}

/// Waits past the lifetime of the backend's tokens (`lifetime_secs`) and creates `key` at
/// `node`: kes must have fetched a new token (more issued than before the wait) and never
/// sent an expired one (no call refused as unauthorized, none refused at all).
pub fn renewed_before_expiry(
    node: &str,
    api_key: &str,
    key: &str,
    lifetime_secs: u64,
    tokens: impl Fn() -> Tokens,
) {
    let before = tokens().issued;
    std::thread::sleep(Duration::from_millis(lifetime_secs * 1000 + 300));
    let r = client_for(node, api_key)
        .request("POST", &format!("/v1/key/create/{key}"), None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    let after = tokens();
    assert!(
        after.issued > before,
        "token not renewed: {} issued, {before} before the wait",
        after.issued
    );
    assert_eq!(
        after.unauthorized, 0,
        "a call went out with an expired token"
    );
    assert!(after.rejected.is_empty(), "{:?}", after.rejected);
}

/// [`create_and_use`] `key` at `node`, then [`renewed_before_expiry`] (creating
/// `<key>-later`): for a node whose way of getting credentials is what a test is about.
pub fn used_and_renewed(
    node: &str,
    api_key: &str,
    key: &str,
    backend: &dyn Backend,
    lifetime_secs: u64,
    tokens: impl Fn() -> Tokens,
) {
    create_and_use(node, api_key, key, backend);
    renewed_before_expiry(
        node,
        api_key,
        &format!("{key}-later"),
        lifetime_secs,
        tokens,
    );
}

/// Takes the keystore away under the kes server at `node` (`stop`) and checks what clients
/// see: `hot` (read once just before, so cached) keeps working, `cold` (stored but never
/// read) answers 502 at once, `/v1/ready` 504 and `/v1/status` says the keystore is
/// unreachable, all within 5 s.
pub fn outage_behaviour(node: &str, api_key: &str, hot: &str, cold: &str, stop: impl FnOnce()) {
    let mut c = client_for(node, api_key);
    let generate = |c: &mut kes::client::Client, name: &str| {
        c.request("POST", &format!("/v1/key/generate/{name}"), None, &[])
            .unwrap()
    };
    let r = generate(&mut c, hot);
    assert_eq!(r.status, 200, "{}", body_str(&r));
    let r = c.request("GET", "/v1/ready", None, &[]).unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));

    stop();
    std::thread::sleep(Duration::from_millis(1200)); // let the 1 s status cache age out
    let started = Instant::now();
    let r = generate(&mut c, hot);
    assert_eq!(r.status, 200, "cached keys keep working: {}", body_str(&r));
    assert_error(&generate(&mut c, cold), 502, "failed to read key");
    assert_error(
        &c.request("GET", "/v1/ready", None, &[]).unwrap(),
        504,
        "key store is not reachable",
    );
    let r = c.request("GET", "/v1/status", None, &[]).unwrap();
    assert!(
        body_str(&r).contains("\"keystore_unreachable\":true"),
        "{}",
        body_str(&r)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "outage answers must be quick: {:?}",
        started.elapsed()
    );
}
