//! GCP Secret Manager keystore (`keystore.gcp.secretmanager`), stored exactly as upstream KES
//! stores it, so a Secret Manager that upstream filled works unchanged and back:
//!
//! * one secret per key: secret id = the key name in `projects/<project_id>`, automatic
//!   replication, and the record text as the payload of its version `1` (upstream creates the
//!   secret, adds one version, and always reads `versions/1`);
//! * delete removes the secret (all versions); list pages through the project's secrets and
//!   takes the last path segment of each resource name;
//! * the status probe is a plain `GET` of the endpoint: any HTTP answer means reachable.
//!
//! Upstream speaks gRPC through Google's SDK; we use the same API's REST form (v1), which
//! addresses the same resources: `POST /v1/projects/<p>/secrets?secretId=<name>`,
//! `POST /v1/<secret>:addVersion`, `GET /v1/projects/<p>/secrets/<name>/versions/1:access`,
//! `DELETE /v1/projects/<p>/secrets/<name>`, `GET /v1/projects/<p>/secrets?pageToken=…`.
//!
//! A create is two calls (create the secret, add version 1) and GCP takes no request token,
//! so a create must survive its own retries and a concurrent create of the same name: the
//! rule is that whoever's record is version `1` owns the key. A create that finds the secret
//! already there reads version 1: our own record (a retried call that the service had
//! stored before it failed) is success, another record is "already exists", and no version at
//! all (a secret left empty by a create that failed half way, ours or another node's) is
//! filled. Adding a version that comes back numbered 2 or later means another creator's
//! record is version 1: ours is destroyed and the create reports "already exists". A failed
//! add deletes the secret only when it is still empty.
//!
//! Key rotation ([`KeyStore::replace`]) adds a version holding the key ring (a value that
//! starts with [`KEYRING_PREFIX`]) followed by a line naming the version it follows; a read
//! accesses `versions/latest`, which is version 1 for a key never rotated, or the newest
//! ring: one call, as upstream's read of version 1. A newer version counts only when it is
//! an enabled key ring that follows its predecessor: versions other tools add on top, and
//! versions of a replace that lost a race, are passed over (the secret's versions are
//! listed, `GET /v1/<secret>/versions`, newest first), down to version 1. The replace is a
//! compare-and-set on the version numbers (see `replace` below).
//!
//! A payload's base64 is read in either alphabet, padded or not (Google's JSON decoders accept
//! both). A destroyed version 1 answers `400 FAILED_PRECONDITION`: an error, not a missing key.
//!
//! Auth: see [`super::gcp_auth`] (the block's service account, application default
//! credentials, external accounts, or the metadata server); a credentials file's
//! `quota_project_id` goes with every call as `x-goog-user-project`. The token is cached in a [`Session`], renewed after
//! half its lifetime and at once after a 401.

use std::time::{Duration, Instant};

use base64::Engine;

use super::gcp_auth::Credentials;
use super::http::{other, Endpoint, Reply, Retry, TlsFiles};
use super::session::{call_with_token, json_headers, Session};
use super::{KeyStore, StoreError};
use crate::config::GcpConfig;
use crate::crypto::record::KEYRING_PREFIX;
use crate::secret::SecretVec;

/// Connect + read + write timeout of one GCP call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Safety bound on list pages.
const LIST_PAGES_MAX: usize = 100_000;
/// Versions per page when a secret's versions are listed (the API's maximum).
const VERSIONS_PAGE: usize = 25_000;

const SERVICE: &str = "GCP Secret Manager";

/// The GCP Secret Manager keystore.
pub struct GcpStore {
    config: GcpConfig,
    endpoint: Endpoint,
    credentials: Credentials,
    session: Session,
    retry: Retry,
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
pub(crate) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Secret ids GCP accepts: `[A-Za-z0-9_-]{1,255}`. Anything else is refused before a call
/// (it could not be stored, and must never reach a request path).
fn valid_secret_id(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A payload's `data`: base64 in either alphabet, padded or not, as Google's JSON decoders
/// (proto3 JSON `bytes`) accept it.
fn decode_payload(data: &str) -> Option<SecretVec> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let lenient =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let url_safe = data.bytes().any(|b| b == b'-' || b == b'_');
    let engine = if url_safe {
        GeneralPurpose::new(&base64::alphabet::URL_SAFE, lenient)
    } else {
        GeneralPurpose::new(&base64::alphabet::STANDARD, lenient)
    };
    let mut out = SecretVec::with_capacity(data.len());
    engine.decode_vec(data, out.as_mut_vec()).ok()?;
    Some(out)
}

/// Google's error JSON: `{"error": {"code": 404, "message": "…", "status": "NOT_FOUND"}}`.
fn google_error(op: &str, reply: &Reply) -> StoreError {
    let mut body = reply.body.clone();
    let (mut status, mut message) = (String::new(), String::new());
    if let Ok(v) = simd_json::to_owned_value(&mut body) {
        use simd_json::prelude::*;
        if let Some(e) = v.get("error") {
            if let Some(s) = e.get("status").and_then(|s| s.as_str()) {
                status = s.to_string();
            }
            if let Some(m) = e.get("message").and_then(|m| m.as_str()) {
                message = m.chars().take(200).collect();
            }
            if let Some(s) = e.as_str() {
                // OAuth2 token endpoint: {"error": "invalid_grant", "error_description": …}
                status = s.to_string();
                if let Some(d) = v.get("error_description").and_then(|m| m.as_str()) {
                    message = d.chars().take(200).collect();
                }
            }
        }
    }
    other(format!(
        "{SERVICE} {op} failed with status {}: {status} {message}",
        reply.status
    ))
}

/// Google's error status (`FAILED_PRECONDITION`, …); empty when the body has none.
fn google_status(reply: &Reply) -> String {
    let mut body = reply.body.clone();
    let Ok(v) = simd_json::to_owned_value(&mut body) else {
        return String::new();
    };
    use simd_json::prelude::*;
    v.get("error")
        .and_then(|e| e.get("status"))
        .and_then(|s| s.as_str())
        .unwrap_or_default()
        .to_string()
}

/// The number a version's resource name (`projects/…/secrets/…/versions/<n>`) ends in.
fn version_number(name: &str) -> Option<u64> {
    let (_, n) = name.rsplit_once("/versions/")?;
    n.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| n.parse().ok())
        .flatten()
}

/// The number of the version an `addVersion` answer names.
fn added_number(reply: Reply) -> Option<u64> {
    let mut body = reply.body;
    let v = simd_json::to_owned_value(&mut body).ok()?;
    use simd_json::prelude::*;
    v.get("name")
        .and_then(|n| n.as_str())
        .and_then(version_number)
}

/// Whether a value is a key ring (a rotated key).
fn is_ring(value: &[u8]) -> bool {
    value.starts_with(KEYRING_PREFIX.as_bytes())
}

/// What a replace appends to the key ring it stores as a version: this marker and the number
/// of the newest version it read (the version it expects to follow). Google's version
/// numbers make that a commit record: only the writer whose version is numbered exactly one
/// more than it read won; a version that says otherwise lost a race and never is the key,
/// even in the instant before its writer destroys it.
const FOLLOWS: &[u8] = b"\nkes:follows-version:";

/// The key's value if version `number`, holding `payload`, holds the key: version 1 always
/// (upstream's record, or the first record of a key), a later version only when it is a key
/// ring a replace committed ([`FOLLOWS`] `number - 1`), returned without the marker.
fn committed(number: u64, mut payload: SecretVec) -> Option<SecretVec> {
    if number == 1 {
        return Some(payload);
    }
    let bytes = payload.expose();
    if !is_ring(bytes) {
        return None;
    }
    let at = bytes.windows(FOLLOWS.len()).rposition(|w| w == FOLLOWS)?;
    let follows = std::str::from_utf8(&bytes[at + FOLLOWS.len()..]).ok()?;
    if !follows.bytes().all(|b| b.is_ascii_digit()) || follows.parse::<u64>().ok()? + 1 != number {
        return None;
    }
    // Truncation leaves the marker in the capacity, which is wiped on drop.
    payload.as_mut_vec().truncate(at);
    Some(payload)
}

/// What accessing one version found.
enum Access {
    /// The version's number (also when asked for `latest`) and its payload.
    Value { number: u64, value: SecretVec },
    /// No such secret or version (`404`).
    Missing,
    /// The version is disabled or destroyed (`400 FAILED_PRECONDITION`): the error to report.
    Unavailable(StoreError),
}

impl GcpStore {
    /// Parses the block and finds the credentials (see [`super::gcp_auth`]); contacts
    /// nothing. `env` reads environment variables (the process environment in production).
    pub fn new(
        config: GcpConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<GcpStore, String> {
        let credentials = Credentials::resolve(&config, env)?;
        let endpoint = Endpoint::parse(
            SERVICE,
            "keystore.gcp.secretmanager.endpoint",
            &config.endpoint,
            &TlsFiles::default(),
            CALL_TIMEOUT,
        )?;
        Ok(GcpStore {
            config,
            endpoint,
            credentials,
            session: Session::default(),
            retry: Retry::DEFAULT,
        })
    }

    /// One authorized call, repeated on 5xx/429; a 401 drops the cached token and tries once
    /// more with a fresh one.
    fn call(&self, method: &str, path: &str, body: &[u8]) -> Result<Reply, StoreError> {
        let mut headers = json_headers(body).to_vec();
        if let Some(project) = self.credentials.quota_project() {
            headers.push(("x-goog-user-project", project));
        }
        call_with_token(
            "GCP",
            &self.endpoint,
            &self.session,
            &self.retry,
            |_| self.credentials.fetch(&self.retry),
            "Authorization",
            &headers,
            (method, path, body),
        )
    }

    /// Accesses version `version` (a number or `latest`) of secret `name`.
    fn access(&self, name: &str, version: &str) -> Result<Access, StoreError> {
        let path = format!(
            "{}/secrets/{name}/versions/{version}:access",
            self.project()
        );
        let reply = self.call("GET", &path, b"")?;
        match reply.status {
            200 => {}
            404 => return Ok(Access::Missing),
            400 if google_status(&reply) == "FAILED_PRECONDITION" => {
                return Ok(Access::Unavailable(google_error(
                    "access secret version",
                    &reply,
                )))
            }
            _ => return Err(google_error("access secret version", &reply)),
        }
        let mut body = SecretVec::new(reply.body);
        let v = simd_json::to_owned_value(body.as_mut_vec())
            .map_err(|_| other(format!("{SERVICE} access secret version: invalid JSON")))?;
        use simd_json::prelude::*;
        let number = v
            .get("name")
            .and_then(|n| n.as_str())
            .and_then(version_number)
            .ok_or_else(|| other(format!("{SERVICE} access secret version: no version name")))?;
        let data = v
            .get("payload")
            .and_then(|p| p.get("data"))
            .and_then(|d| d.as_str())
            .ok_or_else(|| other(format!("{SERVICE} access secret version: no payload")))?;
        let value = decode_payload(data)
            .ok_or_else(|| other(format!("{SERVICE}: payload data is not base64")))?;
        if value.expose().len() > super::VALUE_BYTES_MAX {
            return Err(StoreError::TooLarge);
        }
        Ok(Access::Value { number, value })
    }

    /// The record in version 1 of secret `name`; `None` when the secret has no version 1.
    fn version_one(&self, name: &str) -> Result<Option<SecretVec>, StoreError> {
        match self.access(name, "1")? {
            Access::Value { value, .. } => Ok(Some(value)),
            Access::Missing => Ok(None),
            Access::Unavailable(e) => Err(e),
        }
    }

    /// Whether version 1 of `name` holds exactly `value` (`None`: no version 1).
    fn version_one_is(&self, name: &str, value: &[u8]) -> Result<Option<bool>, StoreError> {
        Ok(self.version_one(name)?.map(|v| v.expose() == value))
    }

    /// The key's current value and the number of the secret's newest version (whatever its
    /// state): `versions/latest` when it holds the key ([`committed`]), else the newest
    /// enabled version below it that does, else version 1. `None` when the secret or
    /// version 1 is gone.
    fn current(&self, name: &str) -> Result<Option<(SecretVec, u64)>, StoreError> {
        let latest = match self.access(name, "latest")? {
            Access::Missing => return Ok(None),
            Access::Value { number, value } => match committed(number, value) {
                Some(value) => return Ok(Some((value, number))),
                // A version another tool added, or one a losing replace has not yet taken
                // back.
                None => Some(number),
            },
            // The newest version is disabled or destroyed (a replace that lost a race
            // destroys its version): its number comes from the list.
            Access::Unavailable(_) => None,
        };
        let versions = self.versions(name)?;
        let Some(top) = latest.or_else(|| versions.first().map(|(n, _)| *n)) else {
            return Ok(None);
        };
        for (number, enabled) in versions {
            if !enabled || number <= 1 || number > top || Some(number) == latest {
                continue;
            }
            if let Access::Value { value, .. } = self.access(name, &number.to_string())? {
                if let Some(value) = committed(number, value) {
                    return Ok(Some((value, top)));
                }
            }
        }
        Ok(self.version_one(name)?.map(|v| (v, top)))
    }

    /// The numbers of secret `name`'s versions, newest first, and whether each is enabled.
    fn versions(&self, name: &str) -> Result<Vec<(u64, bool)>, StoreError> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..LIST_PAGES_MAX {
            let mut path = format!(
                "{}/secrets/{name}/versions?pageSize={VERSIONS_PAGE}",
                self.project()
            );
            if let Some(t) = &next {
                path.push_str(&format!("&pageToken={}", query_escape(t)));
            }
            let reply = self.call("GET", &path, b"")?;
            match reply.status {
                200 => {}
                404 => return Ok(Vec::new()),
                _ => return Err(google_error("list secret versions", &reply)),
            }
            let mut body = reply.body;
            let v = simd_json::to_owned_value(&mut body)
                .map_err(|_| other(format!("{SERVICE} list secret versions: invalid JSON")))?;
            use simd_json::prelude::*;
            if let Some(list) = v.get("versions").and_then(|l| l.as_array()) {
                out.extend(list.iter().filter_map(|version| {
                    let number = version
                        .get("name")
                        .and_then(|n| n.as_str())
                        .and_then(version_number)?;
                    let enabled = version.get("state").and_then(|s| s.as_str()) == Some("ENABLED");
                    Some((number, enabled))
                }));
            }
            next = v
                .get("nextPageToken")
                .and_then(|t| t.as_str())
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if next.is_none() {
                // Newest first, as documented; sorted again so no page order matters.
                out.sort_by_key(|v| std::cmp::Reverse(v.0));
                return Ok(out);
            }
        }
        Err(other(format!(
            "{SERVICE} list secret versions: too many pages"
        )))
    }

    /// Adds a version holding `value` to `secret` (`projects/<p>/secrets/<name>`).
    fn add_version(&self, secret: &str, value: &[u8]) -> Result<Reply, StoreError> {
        let mut payload = SecretVec::with_capacity(value.len() * 4 / 3 + 32);
        {
            let mut w = crate::api::json::JsonWriter::object(payload.as_mut_vec());
            let mut data = SecretVec::with_capacity(value.len() * 4 / 3 + 16);
            let mut d = crate::api::json::JsonWriter::object(data.as_mut_vec());
            d.base64("data", value);
            d.finish();
            w.raw("payload", data.expose());
            w.finish();
        }
        self.call(
            "POST",
            &format!("/v1/{secret}:addVersion"),
            payload.expose(),
        )
    }

    /// Destroys version `number` of `secret`, best effort (a version this store added and
    /// must take back).
    fn destroy(&self, secret: &str, number: u64) {
        let _ = self.call(
            "POST",
            &format!("/v1/{secret}/versions/{number}:destroy"),
            b"{}",
        );
    }

    /// Whether version `number` of `name` holds the key and its value is exactly `value`.
    fn version_is(&self, name: &str, number: u64, value: &[u8]) -> Result<bool, StoreError> {
        Ok(match self.access(name, &number.to_string())? {
            Access::Value { value: v, .. } => {
                committed(number, v).is_some_and(|v| v.expose() == value)
            }
            _ => false,
        })
    }

    fn project(&self) -> String {
        format!("/v1/{}", self.project_path())
    }

    /// `projects/<project_id>`, escaped for a path.
    fn project_path(&self) -> String {
        format!("projects/{}", query_escape(&self.config.project_id))
    }
}

impl KeyStore for GcpStore {
    fn display_name(&self) -> String {
        format!("GCP SecretManager: Project={}", self.config.project_id)
    }

    fn credentials(&self) -> Option<String> {
        Some(self.credentials.describe())
    }

    fn status(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        self.endpoint.send("GET", "/", &[], b"")?;
        Ok(start.elapsed())
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        if !valid_secret_id(name) {
            return Err(StoreError::InvalidName);
        }
        let secret = format!("{}/secrets/{name}", self.project_path());
        let path = format!("{}/secrets?secretId={name}", self.project());
        let reply = self.call("POST", &path, br#"{"replication":{"automatic":{}}}"#)?;
        let created = match reply.status {
            200 => true,
            409 => false,
            _ => return Err(google_error("create secret", &reply)),
        };
        if !created {
            // Already there: ours from a retried call the service stored before it failed,
            // another key, or an empty secret (a create that failed half way) to fill.
            match self.version_one_is(name, value)? {
                Some(true) => return Ok(()),
                Some(false) => return Err(StoreError::AlreadyExists),
                None => {}
            }
        }
        let added = self.add_version(&secret, value);
        let failure = match added {
            Ok(r) if r.status == 200 => {
                let number = added_number(r);
                if number == Some(1) {
                    return Ok(());
                }
                // Not version 1: a retried add the service had stored (then version 1 is
                // ours too), or another creator's record is version 1.
                return match self.version_one_is(name, value)? {
                    Some(true) => Ok(()),
                    _ => {
                        if let Some(n) = number {
                            self.destroy(&secret, n);
                        }
                        Err(StoreError::AlreadyExists)
                    }
                };
            }
            Ok(r) => google_error("add secret version", &r),
            Err(e) => e,
        };
        // The add failed, or seemed to: it may still have been stored.
        match self.version_one_is(name, value) {
            Ok(Some(true)) => Ok(()),
            Ok(Some(false)) => Err(StoreError::AlreadyExists),
            Ok(None) if created => {
                // Leave no empty secret behind: it would hold the name without a key.
                let _ = self.call("DELETE", &format!("/v1/{secret}"), b"");
                Err(failure)
            }
            _ => Err(failure),
        }
    }

    fn get(&self, name: &str) -> Result<SecretVec, StoreError> {
        if !valid_secret_id(name) {
            return Err(StoreError::NotFound);
        }
        // An unrotated key is version 1 and `latest` is version 1: one call, as before.
        Ok(self.current(name)?.ok_or(StoreError::NotFound)?.0)
    }

    /// A compare-and-set on Secret Manager's version numbers, which the service hands out
    /// sequentially and atomically: the current value and the newest version's number `n`
    /// are read, the value compared with `old`, and `new` added as a version that says it
    /// follows `n` ([`FOLLOWS`]). Numbered `n + 1`, nobody came in between and the replace
    /// stands; numbered higher, another writer added a version after our read, so ours does
    /// not count (it says it follows `n`, not its predecessor), is destroyed, and the answer
    /// is `Conflict` (unless `n + 1` is ours: an add the service stored before it failed
    /// and that was retried). `new` must be a key ring ([`KEYRING_PREFIX`]): only rings
    /// count above version 1, so versions other tools add never change a key.
    fn replace(&self, name: &str, old: &[u8], new: &[u8]) -> Result<(), StoreError> {
        if !valid_secret_id(name) {
            return Err(StoreError::NotFound);
        }
        if !is_ring(new) {
            return Err(other(format!(
                "{SERVICE}: a replaced value must be a key ring"
            )));
        }
        let Some((current, newest)) = self.current(name)? else {
            return Err(StoreError::NotFound);
        };
        if current.expose() != old {
            return Err(StoreError::Conflict);
        }
        drop(current);
        let secret = format!("{}/secrets/{name}", self.project_path());
        let expected = newest + 1;
        let mut payload = SecretVec::with_capacity(new.len() + FOLLOWS.len() + 20);
        payload.extend_from_slice(new);
        payload.extend_from_slice(FOLLOWS);
        payload.extend_from_slice(newest.to_string().as_bytes());
        let failure = match self.add_version(&secret, payload.expose()) {
            Ok(r) if r.status == 200 => {
                let number = added_number(r);
                if number == Some(expected) {
                    return Ok(());
                }
                if self.version_is(name, expected, new)? {
                    return Ok(());
                }
                if let Some(n) = number {
                    self.destroy(&secret, n);
                }
                return Err(StoreError::Conflict);
            }
            Ok(r) if r.status == 404 => return Err(StoreError::NotFound),
            Ok(r) => google_error("add secret version", &r),
            Err(e) => e,
        };
        // The add failed, or seemed to: it may still have been stored.
        match self.version_is(name, expected, new) {
            Ok(true) => Ok(()),
            _ => Err(failure),
        }
    }

    fn replace_kind(&self) -> super::ReplaceKind {
        super::ReplaceKind::Atomic
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        if !valid_secret_id(name) {
            return Err(StoreError::NotFound);
        }
        let path = format!("{}/secrets/{name}", self.project());
        let reply = self.call("DELETE", &path, b"")?;
        match reply.status {
            200 => Ok(()),
            404 => Err(StoreError::NotFound),
            _ => Err(google_error("delete secret", &reply)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..LIST_PAGES_MAX {
            let mut path = format!("{}/secrets", self.project());
            if let Some(t) = &next {
                path.push_str(&format!("?pageToken={}", query_escape(t)));
            }
            let reply = self.call("GET", &path, b"")?;
            if reply.status != 200 {
                return Err(google_error("list secrets", &reply));
            }
            let mut body = reply.body;
            let v = simd_json::to_owned_value(&mut body)
                .map_err(|_| other(format!("{SERVICE} list secrets: invalid JSON")))?;
            use simd_json::prelude::*;
            if let Some(list) = v.get("secrets").and_then(|l| l.as_array()) {
                names.extend(
                    list.iter()
                        .filter_map(|s| s.get("name").and_then(|n| n.as_str()))
                        .map(|n| n.rsplit('/').next().unwrap_or(n))
                        .filter(|n| n.starts_with(prefix))
                        .map(str::to_string),
                );
            }
            next = v
                .get("nextPageToken")
                .and_then(|t| t.as_str())
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if next.is_none() {
                names.sort();
                names.dedup();
                return Ok(names);
            }
        }
        Err(other(format!("{SERVICE} list secrets: too many pages")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_in_either_base64_alphabet() {
        let value = b"\xfb\xff\xfe record?>";
        for engine in [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            let data = engine.encode(value);
            assert_eq!(decode_payload(&data).unwrap().expose(), value, "{data}");
        }
        assert!(decode_payload("a+b_").is_none(), "mixed alphabets");
        assert!(decode_payload("!!!!").is_none());
    }

    #[test]
    fn secret_ids_and_query_escaping() {
        assert!(valid_secret_id("my-key_1"));
        assert!(!valid_secret_id("a/b"));
        assert!(!valid_secret_id("a?b"));
        assert!(!valid_secret_id(""));
        assert!(!valid_secret_id(&"a".repeat(256)));
        assert_eq!(query_escape("a b/+="), "a%20b%2F%2B%3D");
    }

    #[test]
    fn google_errors_name_the_status_and_message() {
        let e = google_error(
            "delete secret",
            &Reply {
                status: 403,
                headers: Vec::new(),
                body: br#"{"error":{"code":403,"message":"Permission denied","status":"PERMISSION_DENIED"}}"#.to_vec(),
            },
        )
        .to_string();
        assert!(
            e.contains("status 403: PERMISSION_DENIED Permission denied"),
            "{e}"
        );
        let e = google_error(
            "token request",
            &Reply {
                status: 400,
                headers: Vec::new(),
                body: br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#
                    .to_vec(),
            },
        )
        .to_string();
        assert!(e.contains("invalid_grant Invalid JWT Signature."), "{e}");
    }
}
