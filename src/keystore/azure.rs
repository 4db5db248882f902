//! Azure Key Vault keystore (`keystore.azure.keyvault`), stored exactly as upstream KES
//! stores it, so a vault that upstream filled works unchanged and back:
//!
//! * one Key Vault secret per key: secret name = the key name, `value` = the record text
//!   (`PUT /secrets/<name>`); a create first looks the name up (Key Vault's `PUT` would add a
//!   version instead of failing) and, when the name is soft-deleted, purges it and repeats the
//!   `PUT` while Key Vault answers `ObjectIsBeingDeleted`, as upstream does;
//! * a read lists the secret's versions and reads the *oldest* one (upstream's choice: later
//!   versions added by other tools do not change a key), refusing a disabled, not-yet-valid or
//!   expired secret; a rotated key ([`KeyStore::replace`], read-compare-write) is a newer
//!   version holding a key ring ([`KEYRING_PREFIX`]): a read takes the current version
//!   (`GET /secrets/<name>`) when it is a ring, else the newest ring below it, else the
//!   oldest version;
//! * a delete is `DELETE /secrets/<name>` followed by a purge (`DELETE /deletedsecrets/<name>`,
//!   repeated while `ObjectIsBeingDeleted`; a 404 or `ForbiddenByPolicy` purge means
//!   soft-delete is off or purging is not allowed, and the delete stands);
//! * a list follows `nextLink` (only its path and query, on the configured endpoint, so the
//!   token never goes to another host) and takes the last path segment of each secret id.
//!
//! Auth: see [`super::azure_auth`] (client credentials, managed identity, or the default
//! chain of environment, workload identity and managed identity). Which audience and tenant
//! the token is for comes from the vault's challenge ([`super::azure_challenge`]): the first
//! call asks the vault without a token and keeps what its `401` names; a later `401` naming
//! something else replaces it. The token is cached in a [`Session`], renewed after half its
//! lifetime and at once after a 401.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::azure_auth::Credentials;
use super::azure_challenge::{self, Challenge};
use super::gcp::query_escape;
use super::http::{other, retryable_status, retrying, Endpoint, Reply, Retry, TlsFiles};
use super::session::{call_with_token, json_headers, Session};
use super::{KeyStore, StoreError};
use crate::config::AzureConfig;
use crate::crypto::record::KEYRING_PREFIX;
use crate::secret::SecretVec;

/// Connect + read + write timeout of one Azure call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The Key Vault REST API version.
pub const API_VERSION: &str = "7.4";
/// Safety bound on list pages.
const LIST_PAGES_MAX: usize = 100_000;
/// Purge / re-create attempts while Key Vault finishes a soft delete (as upstream: 7).
const DELETE_WAIT_ATTEMPTS: u32 = 7;

const SERVICE: &str = "Azure Key Vault";

/// The Azure Key Vault keystore.
pub struct AzureStore {
    config: AzureConfig,
    endpoint: Endpoint,
    credentials: Credentials,
    session: Session,
    /// What the vault's last challenge asked for (`None` until the first call).
    challenge: Mutex<Option<Challenge>>,
    retry: Retry,
    /// Delay between purge / re-create attempts (200 ms + jitter, as upstream).
    delete_wait: Duration,
}

/// Key Vault's error: HTTP status, `error.code` / `error.innererror.code`, message.
struct KvError {
    status: u16,
    code: String,
    inner: String,
    message: String,
}

impl KvError {
    fn from(reply: &Reply) -> KvError {
        let mut body = reply.body.clone();
        let mut e = KvError {
            status: reply.status,
            code: String::new(),
            inner: String::new(),
            message: String::new(),
        };
        if let Ok(v) = simd_json::to_owned_value(&mut body) {
            use simd_json::prelude::*;
            match v.get("error") {
                Some(err) if err.is_str() => {
                    // Entra ID token endpoint: {"error": "invalid_client", "error_description": …}
                    e.code = err.as_str().unwrap_or_default().to_string();
                    if let Some(d) = v.get("error_description").and_then(|d| d.as_str()) {
                        e.message = d.chars().take(200).collect();
                    }
                }
                Some(err) => {
                    let s = |n: Option<&simd_json::OwnedValue>| {
                        n.and_then(|n| n.as_str()).unwrap_or_default().to_string()
                    };
                    e.code = s(err.get("code"));
                    e.inner = s(err.get("innererror").and_then(|i| i.get("code")));
                    e.message = s(err.get("message")).chars().take(200).collect();
                }
                None => {}
            }
        }
        e
    }

    fn is(&self, code: &str) -> bool {
        self.code == code || self.inner == code
    }

    /// For logs: never carries a credential (Azure does not echo them) nor a stored value.
    fn into_store(self, op: &str) -> StoreError {
        let code = if self.inner.is_empty() {
            self.code
        } else {
            format!("{} ({})", self.code, self.inner)
        };
        other(format!(
            "{SERVICE} {op} failed with status {}: {code} {}",
            self.status, self.message
        ))
    }
}

/// Secret names Key Vault accepts: `[0-9A-Za-z-]{1,127}`. Anything else is refused before a
/// call (it could not be stored, and must never reach a request path).
fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 127
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn jitter(base: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_ok() {
        u16::from_le_bytes(b) as u32
    } else {
        0
    };
    base + base.mul_f64(4.0 * r as f64 / 65_535.0)
}

impl AzureStore {
    /// Parses the block and chooses the credential (see [`super::azure_auth`]); contacts
    /// nothing. `env` reads environment variables (the process environment in production).
    pub fn new(
        config: AzureConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AzureStore, String> {
        let credentials = Credentials::resolve(&config, env)?;
        let endpoint = Endpoint::parse(
            SERVICE,
            "keystore.azure.keyvault.endpoint",
            &config.endpoint,
            &TlsFiles::default(),
            CALL_TIMEOUT,
        )?;
        Ok(AzureStore {
            config,
            endpoint,
            credentials,
            session: Session::default(),
            challenge: Mutex::new(None),
            retry: Retry::DEFAULT,
            delete_wait: Duration::from_millis(200),
        })
    }

    /// The challenge in a `401` answer, checked against the vault's domain.
    fn challenge_of(&self, reply: &Reply) -> Option<Result<Challenge, StoreError>> {
        let c = azure_challenge::parse(reply.header("www-authenticate")?)?;
        Some(
            azure_challenge::verify(self.endpoint.host(), &c)
                .map(|()| c)
                .map_err(|e| other(format!("{SERVICE} at {}: {e}", self.config.endpoint))),
        )
    }

    /// What the vault asks for: the kept challenge, or the one it answers a call without a
    /// token with (a list of one secret, which changes nothing).
    fn current_challenge(&self) -> Result<Challenge, StoreError> {
        if let Some(c) = self
            .challenge
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(c);
        }
        let path = format!("/secrets?maxresults=1&api-version={API_VERSION}");
        let reply = retrying(&self.retry, retryable_status, || {
            self.endpoint.send("GET", &path, &[], b"")
        })?;
        let c = match (reply.status, self.challenge_of(&reply)) {
            (401, Some(c)) => c?,
            (status, _) => {
                return Err(other(format!(
                    "{SERVICE} at {} answered a call without a token with status {status} and \
                     no Bearer challenge (WWW-Authenticate): is the endpoint a Key Vault?",
                    self.config.endpoint
                )))
            }
        };
        *self.challenge.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        Ok(c)
    }

    /// One authorized call to `path` (with its query, `api-version` appended), repeated on
    /// 5xx/429; a 401 drops the cached token and tries once more with a fresh one, and a 401
    /// whose challenge names another audience or tenant once more for that one.
    fn call(&self, method: &str, path: &str, body: &[u8]) -> Result<Reply, StoreError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = if path.contains("api-version=") {
            path.to_string()
        } else {
            format!("{path}{sep}api-version={API_VERSION}")
        };
        let mut challenged = false;
        loop {
            let challenge = self.current_challenge()?;
            let reply = call_with_token(
                "Azure",
                &self.endpoint,
                &self.session,
                &self.retry,
                |_| self.credentials.fetch(&self.retry, &challenge),
                "Authorization",
                json_headers(body),
                (method, &path, body),
            )?;
            if reply.status == 401 && !challenged {
                if let Some(new) = self.challenge_of(&reply) {
                    let new = new?;
                    if new != challenge {
                        *self.challenge.lock().unwrap_or_else(|e| e.into_inner()) = Some(new);
                        self.session.clear();
                        challenged = true;
                        continue;
                    }
                }
            }
            return Ok(reply);
        }
    }

    fn put(&self, name: &str, body: &[u8]) -> Result<Result<(), KvError>, StoreError> {
        let reply = self.call("PUT", &format!("/secrets/{name}"), body)?;
        Ok(if reply.status == 200 {
            Ok(())
        } else {
            Err(KvError::from(&reply))
        })
    }

    /// Purges a soft-deleted secret, waiting while Key Vault still deletes it.
    fn purge(&self, name: &str) -> Result<Result<(), KvError>, StoreError> {
        let mut last = None;
        for _ in 0..DELETE_WAIT_ATTEMPTS {
            let reply = self.call("DELETE", &format!("/deletedsecrets/{name}"), b"")?;
            if reply.status == 204 || reply.status == 200 {
                return Ok(Ok(()));
            }
            let e = KvError::from(&reply);
            if e.status == 409 && e.is("ObjectIsBeingDeleted") {
                last = Some(e);
                std::thread::sleep(jitter(self.delete_wait));
                continue;
            }
            return Ok(Err(e));
        }
        Ok(Err(last.expect("at least one attempt")))
    }

    /// The ids (last path segment) of the versions of `name`, oldest first.
    fn versions(&self, name: &str) -> Result<Vec<String>, StoreError> {
        let reply = self.call(
            "GET",
            &format!("/secrets/{name}/versions?maxresults=25"),
            b"",
        )?;
        if reply.status == 404 {
            return Err(StoreError::NotFound);
        }
        if reply.status != 200 {
            return Err(KvError::from(&reply).into_store("list secret versions"));
        }
        let mut body = reply.body;
        let v = simd_json::to_owned_value(&mut body)
            .map_err(|_| other(format!("{SERVICE} list secret versions: invalid JSON")))?;
        use simd_json::prelude::*;
        if v.get("nextLink")
            .and_then(|l| l.as_str())
            .is_some_and(|l| !l.is_empty())
        {
            return Err(other(format!(
                "{SERVICE}: secret '{name}' has more than 25 versions; kes reads the first one"
            )));
        }
        let mut versions: Vec<(i64, String)> = Vec::new();
        for item in v
            .get("value")
            .and_then(|l| l.as_array())
            .into_iter()
            .flatten()
        {
            let Some(id) = item.get("id").and_then(|i| i.as_str()) else {
                continue;
            };
            let created = item
                .get("attributes")
                .and_then(|a| a.get("created"))
                .and_then(|c| c.as_i64())
                .unwrap_or(i64::MAX);
            let version = id.trim_end_matches('/').rsplit('/').next().unwrap_or(id);
            versions.push((created, version.to_string()));
        }
        // Stable: versions created in the same second keep the service's order.
        versions.sort_by_key(|(created, _)| *created);
        Ok(versions.into_iter().map(|(_, id)| id).collect())
    }

    /// Version `version` of `name` (`None`: the current version).
    fn read(&self, name: &str, version: Option<&str>) -> Result<Version, StoreError> {
        let path = match version {
            Some(v) => format!("/secrets/{name}/{}", query_escape(v)),
            None => format!("/secrets/{name}"),
        };
        let reply = self.call("GET", &path, b"")?;
        match reply.status {
            200 => {}
            404 => return Err(StoreError::NotFound),
            _ => return Err(KvError::from(&reply).into_store("get secret")),
        }
        let mut body = SecretVec::new(reply.body);
        let v = simd_json::to_owned_value(body.as_mut_vec())
            .map_err(|_| other(format!("{SERVICE} get secret: invalid JSON")))?;
        use simd_json::prelude::*;
        let id = v
            .get("id")
            .and_then(|i| i.as_str())
            .map(|id| id.trim_end_matches('/').rsplit('/').next().unwrap_or(id))
            .unwrap_or_default()
            .to_string();
        let attr = |n: &str| v.get("attributes").and_then(|a| a.get(n));
        let now = unix_now();
        let unusable = if attr("enabled").and_then(|e| e.as_bool()) == Some(false) {
            Some(format!("{SERVICE}: secret '{name}' is disabled"))
        } else if attr("nbf")
            .and_then(|t| t.as_i64())
            .is_some_and(|t| t > now)
        {
            Some(format!("{SERVICE}: secret '{name}' is not valid yet (nbf)"))
        } else if attr("exp")
            .and_then(|t| t.as_i64())
            .is_some_and(|t| t > 0 && t <= now)
        {
            Some(format!("{SERVICE}: secret '{name}' has expired"))
        } else {
            None
        };
        let value = v
            .get("value")
            .and_then(|s| s.as_str())
            .ok_or_else(|| other(format!("{SERVICE} get secret: no value")))?;
        if value.len() > super::VALUE_BYTES_MAX {
            return Err(StoreError::TooLarge);
        }
        Ok(Version {
            id,
            value: SecretVec::new(value.as_bytes().to_vec()),
            unusable,
        })
    }
}

/// One version of a secret as read.
struct Version {
    /// Its id (the last segment of its URL).
    id: String,
    value: SecretVec,
    /// Why it may not be used (disabled, not yet valid, expired); `None` when it may.
    unusable: Option<String>,
}

impl Version {
    /// A usable key ring (a rotated key's value, [`KEYRING_PREFIX`]).
    fn is_ring(&self) -> bool {
        self.unusable.is_none() && self.value.expose().starts_with(KEYRING_PREFIX.as_bytes())
    }
}

impl KeyStore for AzureStore {
    fn display_name(&self) -> String {
        format!("Azure KeyVault: {}", self.config.endpoint)
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
        if !valid_secret_name(name) {
            return Err(StoreError::InvalidName);
        }
        let value =
            std::str::from_utf8(value).map_err(|_| other("key record is not text".into()))?;
        // Key Vault's PUT adds a version to an existing secret: look first.
        let reply = self.call("GET", &format!("/secrets/{name}"), b"")?;
        match reply.status {
            200 => return Err(StoreError::AlreadyExists),
            404 => {}
            _ => return Err(KvError::from(&reply).into_store("get secret")),
        }
        let mut body = SecretVec::with_capacity(value.len() + 16);
        {
            let mut w = crate::api::json::JsonWriter::object(body.as_mut_vec());
            w.string("value", value);
            w.finish();
        }
        let mut result = self.put(name, body.expose())?;
        if let Err(e) = &result {
            if e.status == 409 && e.is("ObjectIsDeletedButRecoverable") {
                // A soft-deleted secret of that name: purge it, then create again.
                if let Err(e) = self.purge(name)? {
                    return Err(e.into_store("purge deleted secret"));
                }
                for _ in 0..DELETE_WAIT_ATTEMPTS {
                    result = self.put(name, body.expose())?;
                    match &result {
                        Err(e) if e.status == 409 && e.is("ObjectIsBeingDeleted") => {
                            std::thread::sleep(jitter(self.delete_wait));
                        }
                        _ => break,
                    }
                }
            }
        }
        result.map_err(|e| e.into_store("set secret"))
    }

    fn get(&self, name: &str) -> Result<SecretVec, StoreError> {
        if !valid_secret_name(name) {
            return Err(StoreError::NotFound);
        }
        // A rotated key: its current version is the newest ring.
        let mut version = self.read(name, None)?;
        if version.is_ring() {
            return Ok(version.value);
        }
        // Not a ring: the only version, or one another tool added on top. The newest ring
        // below it, else the first version (upstream's choice), is the key.
        let versions = self.versions(name)?;
        let first = versions.first().ok_or(StoreError::NotFound)?;
        if *first != version.id {
            for id in versions[1..].iter().rev().filter(|id| **id != version.id) {
                let older = self.read(name, Some(id))?;
                if older.is_ring() {
                    return Ok(older.value);
                }
            }
            version = self.read(name, Some(first))?;
        }
        match version.unusable {
            Some(why) => Err(other(why)),
            None => Ok(version.value),
        }
    }

    /// Read, compare, write: Key Vault has no conditional write (no `If-Match` on
    /// `setSecret`, and version ids are random, not sequential), so `new` is `PUT` as a new
    /// version after the current value was read and compared with `old` in a separate call.
    /// Two nodes rotating the same key in the same instant both succeed and the later
    /// version wins: the earlier node's new key version is lost (the key's existing versions
    /// never are). A delete that lands between the read and the `PUT` and is purged at once
    /// lets the `PUT` make a new secret of the ring. `new` must be a key ring
    /// ([`KEYRING_PREFIX`]): only rings count above the first version, so versions other
    /// tools add never change a key.
    fn replace(&self, name: &str, old: &[u8], new: &[u8]) -> Result<(), StoreError> {
        if !valid_secret_name(name) {
            return Err(StoreError::NotFound);
        }
        if !new.starts_with(KEYRING_PREFIX.as_bytes()) {
            return Err(other(format!(
                "{SERVICE}: a replaced value must be a key ring"
            )));
        }
        let new = std::str::from_utf8(new).map_err(|_| other("key ring is not text".into()))?;
        if self.get(name)?.expose() != old {
            return Err(StoreError::Conflict);
        }
        let mut body = SecretVec::with_capacity(new.len() + 16);
        {
            let mut w = crate::api::json::JsonWriter::object(body.as_mut_vec());
            w.string("value", new);
            w.finish();
        }
        match self.put(name, body.expose())? {
            Ok(()) => Ok(()),
            // Deleted since the read (soft-deleted, not yet purged).
            Err(e) if e.status == 409 && e.is("ObjectIsDeletedButRecoverable") => {
                Err(StoreError::NotFound)
            }
            Err(e) => Err(e.into_store("set secret")),
        }
    }

    fn replace_kind(&self) -> super::ReplaceKind {
        super::ReplaceKind::ReadCompareWrite
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        if !valid_secret_name(name) {
            return Err(StoreError::NotFound);
        }
        let reply = self.call("DELETE", &format!("/secrets/{name}"), b"")?;
        match reply.status {
            200 => {}
            404 => return Err(StoreError::NotFound),
            _ => return Err(KvError::from(&reply).into_store("delete secret")),
        }
        match self.purge(name)? {
            Ok(()) => Ok(()),
            // Soft-delete off (nothing to purge), purging not allowed, or still deleting
            // (a later create purges it): the delete stands, as upstream.
            Err(e)
                if e.status == 404
                    || (e.status == 403 && e.is("ForbiddenByPolicy"))
                    || (e.status == 409 && e.is("ObjectIsBeingDeleted")) =>
            {
                Ok(())
            }
            Err(e) => Err(e.into_store("purge deleted secret")),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        let mut path = "/secrets?maxresults=25".to_string();
        for _ in 0..LIST_PAGES_MAX {
            let reply = self.call("GET", &path, b"")?;
            if reply.status != 200 {
                return Err(KvError::from(&reply).into_store("list secrets"));
            }
            let mut body = reply.body;
            let v = simd_json::to_owned_value(&mut body)
                .map_err(|_| other(format!("{SERVICE} list secrets: invalid JSON")))?;
            use simd_json::prelude::*;
            names.extend(
                v.get("value")
                    .and_then(|l| l.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.get("id").and_then(|n| n.as_str()))
                    .map(|id| id.trim_end_matches('/').rsplit('/').next().unwrap_or(id))
                    .filter(|n| n.starts_with(prefix))
                    .map(str::to_string),
            );
            let next = v
                .get("nextLink")
                .and_then(|t| t.as_str())
                .filter(|t| !t.is_empty());
            let Some(next) = next else {
                names.sort();
                names.dedup();
                return Ok(names);
            };
            // Only the path and query, sent to the configured vault.
            let rest = next.split_once("://").map(|(_, r)| r).unwrap_or(next);
            path = match rest.find('/') {
                Some(i) => rest[i..].to_string(),
                None => return Err(other(format!("{SERVICE} list secrets: bad nextLink"))),
            };
        }
        Err(other(format!("{SERVICE} list secrets: too many pages")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        assert!(valid_secret_name("my-key-1"));
        assert!(!valid_secret_name("my_key"));
        assert!(!valid_secret_name("a/b"));
        assert!(!valid_secret_name(""));
        assert!(!valid_secret_name(&"a".repeat(128)));
    }

    #[test]
    fn key_vault_errors() {
        let e = KvError::from(&Reply {
            status: 409,
            headers: Vec::new(),
            body: br#"{"error":{"code":"Conflict","message":"Secret x is currently in a deleted but recoverable state","innererror":{"code":"ObjectIsDeletedButRecoverable"}}}"#.to_vec(),
        });
        assert!(e.is("ObjectIsDeletedButRecoverable") && e.is("Conflict"));
        let s = e.into_store("set secret").to_string();
        assert!(
            s.contains("status 409: Conflict (ObjectIsDeletedButRecoverable)"),
            "{s}"
        );
        let e = KvError::from(&Reply {
            status: 401,
            headers: Vec::new(),
            body: br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#.to_vec(),
        });
        assert!(e.is("invalid_client") && e.message.contains("AADSTS7000215"));
    }
}
