//! Thales CipherTrust Manager / Gemalto KeySecure keystore (`keystore.gemalto.keysecure`),
//! stored exactly as upstream KES stores it, so a CipherTrust that upstream filled works
//! unchanged and back:
//!
//! * login: `POST /api/v1/auth/tokens` with `{"grant_type":"refresh_token",
//!   "refresh_token":…,"domain":…}` → `{"token_type":"Bearer","jwt":…,"duration":<s>}`; the
//!   access token is sent as `Authorization: Bearer <jwt>`, renewed after half its lifetime
//!   and at once when the service answers 401;
//! * one vault secret per key: create `POST /api/v1/vault/secrets` with
//!   `{"dataType":"seed","material":<record>,"name":<key name>}` (201; 409 = exists), read
//!   `POST /api/v1/vault/secrets/<name>/export?type=name` (→ `material`), delete
//!   `DELETE /api/v1/vault/secrets/<name>?type=name` (204), list
//!   `GET /api/v1/vault/secrets?limit=200&skip=<n>` paged by `skip`/`total`;
//! * the status probe is a plain `GET` of the endpoint: any HTTP answer means reachable.
//!
//! Unlike upstream, a delete of a missing secret answers 404 (as every other keystore here),
//! and kes starts without logging in: the first call logs in, so kes comes up while the
//! service is down and reports it offline.

use std::time::Duration;

use super::http::{other, retryable_status, retrying, Reply, Retry};
use super::json_secret;
use super::session::{describe, encode, secret_json, Service};
use super::{KeyStore, StoreError};
use crate::config::KeySecureConfig;
use crate::secret::SecretVec;

/// Connect + read + write timeout of one call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Names per list page (upstream's page size).
const PAGE: usize = 200;
/// Safety bound on list pages.
const LIST_PAGES_MAX: usize = 100_000;
const SERVICE: &str = "KeySecure";

/// The CipherTrust Manager / KeySecure keystore.
pub struct KeySecureStore {
    config: KeySecureConfig,
    svc: Service,
}

impl KeySecureStore {
    /// Reads the CA file; no network I/O (the first call logs in).
    pub fn new(config: KeySecureConfig) -> Result<KeySecureStore, String> {
        let svc = Service::open(
            "KeySecure",
            "keystore.gemalto.keysecure.endpoint",
            &config.endpoint,
            config.tls_ca.clone(),
            CALL_TIMEOUT,
        )?;
        Ok(KeySecureStore { config, svc })
    }

    /// A shorter retry policy (tests).
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.svc.retry = retry;
        self
    }

    fn fail(&self, what: &str, reply: &Reply) -> StoreError {
        other(format!(
            "{SERVICE} {what} failed with status {}: {}",
            reply.status,
            describe(
                reply,
                &["codeDesc", "message"],
                &[self.config.token.expose()]
            )
        ))
    }

    /// Trades the refresh token for an access token.
    fn login(&self) -> Result<(SecretVec, Duration), StoreError> {
        let body = secret_json(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", self.config.token.expose()),
                ("domain", &self.config.domain),
            ],
            None,
        );
        let path = format!("{}/api/v1/auth/tokens", self.svc.base);
        let reply = retrying(&self.svc.retry, retryable_status, || {
            self.svc.endpoint.send(
                "POST",
                &path,
                &[("Content-Type", "application/json")],
                body.expose(),
            )
        })?;
        if reply.status != 200 {
            return Err(self.fail("login", &reply));
        }
        // Read in place (simd-json would leave copies of the token in freed buffers).
        let raw = SecretVec::new(reply.body);
        let [jwt, kind, secs] =
            json_secret::members(raw.expose(), ["jwt", "token_type", "duration"])
                .map_err(|_| other(format!("{SERVICE} login: invalid JSON answer")))?;
        let jwt = jwt
            .as_ref()
            .and_then(|t| t.text())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| other(format!("{SERVICE} login: the answer has no token")))?;
        let kind = kind.as_ref().and_then(|t| t.text()).unwrap_or_default();
        if kind != b"Bearer" {
            return Err(other(format!(
                "{SERVICE} login: unexpected token type '{}'",
                String::from_utf8_lossy(kind)
            )));
        }
        let secs = secs.and_then(|d| d.uint()).unwrap_or(0);
        if secs == 0 {
            return Err(other(format!("{SERVICE} login: invalid token lifetime")));
        }
        Ok((
            json_secret::header_value(b"Bearer ", jwt),
            Duration::from_secs(secs),
        ))
    }

    /// An authorized call, repeated on 5xx/429; a 401 logs in again once.
    fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Reply, StoreError> {
        self.svc.call(
            SERVICE,
            |_| self.login(),
            "Authorization",
            (method, path, body),
        )
    }
}

/// Key rotation ([`KeyStore::replace`]) is not supported here (the trait's default:
/// `Unsupported`). CipherTrust Manager's vault secrets do have versions: Thales's CLI has
/// `ksctl secrets version --name <id> --material <data>` and `ksctl secrets listversion`
/// (seen through a third-party wrapper, sanyambassi/ciphertrust-manager-mcp-server
/// `src/ciphertrust_mcp_server/tools/secrets.py`, which also lists with a `secretversion`
/// filter). What a rotation here needs could not be confirmed from a public Thales
/// source: the REST call and body behind `secrets version` (presumably
/// `POST /api/v1/vault/secrets/<id>/versions` with `material`; thalesdocs.com documents that
/// path shape only for CCM's external-CM keys), whether `export?type=name` then reads the
/// latest version, whether `DELETE …?type=name` removes every version, and whether a list
/// shows a versioned secret once; nor any conditional write (an etag or version
/// precondition). ThalesGroup/terraform-provider-ciphertrust does not manage vault secrets.
/// The stand-in must model documented behaviour, not a guess, so this stays unsupported
/// until the CipherTrust Manager REST reference (`/api/v1/vault/secrets`) can be read.
/// Delete and re-create is not an option: the key would not exist in between.
impl KeyStore for KeySecureStore {
    fn display_name(&self) -> String {
        format!("Gemalto KeySecure: {}", self.config.endpoint)
    }

    fn status(&self) -> Result<Duration, StoreError> {
        self.svc.probe()
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let value =
            std::str::from_utf8(value).map_err(|_| other("key record is not text".into()))?;
        let body = secret_json(
            &[("dataType", "seed"), ("material", value), ("name", name)],
            None,
        );
        let reply = self.call("POST", "/api/v1/vault/secrets", Some(body.expose()))?;
        match reply.status {
            201 => Ok(()),
            409 => Err(StoreError::AlreadyExists),
            _ => Err(self.fail("create", &reply)),
        }
    }

    fn get(&self, name: &str) -> Result<SecretVec, StoreError> {
        let path = format!("/api/v1/vault/secrets/{}/export?type=name", encode(name));
        let reply = self.call("POST", &path, None)?;
        match reply.status {
            200 => {}
            404 => return Err(StoreError::NotFound),
            _ => return Err(self.fail("export", &reply)),
        }
        let mut body = SecretVec::new(reply.body);
        let v = simd_json::to_owned_value(body.as_mut_vec())
            .map_err(|_| other(format!("{SERVICE} export: invalid JSON answer")))?;
        use simd_json::prelude::*;
        match v.get("material").and_then(|m| m.as_str()) {
            Some(m) => Ok(SecretVec::new(m.as_bytes().to_vec())),
            None => Err(other(format!(
                "{SERVICE} export: the answer has no material"
            ))),
        }
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        let path = format!("/api/v1/vault/secrets/{}?type=name", encode(name));
        let reply = self.call("DELETE", &path, None)?;
        match reply.status {
            200 | 204 => Ok(()),
            404 => Err(StoreError::NotFound),
            _ => Err(self.fail("delete", &reply)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        let mut skip: u64 = 0;
        for _ in 0..LIST_PAGES_MAX {
            let path = format!("/api/v1/vault/secrets?limit={PAGE}&skip={skip}");
            let reply = self.call("GET", &path, None)?;
            if reply.status != 200 {
                return Err(self.fail("list", &reply));
            }
            let mut body = reply.body;
            let v = simd_json::to_owned_value(&mut body)
                .map_err(|_| other(format!("{SERVICE} list: invalid JSON answer")))?;
            use simd_json::prelude::*;
            let skipped = v.get("skip").and_then(|s| s.as_u64()).unwrap_or(0);
            if skipped != skip {
                return Err(other(format!(
                    "{SERVICE} list: paging out of sync (asked to skip {skip}, skipped {skipped})"
                )));
            }
            let total = v.get("total").and_then(|t| t.as_u64()).unwrap_or(0);
            let page = v
                .get("resources")
                .and_then(|r| r.as_array())
                .map(|r| r.as_slice())
                .unwrap_or_default();
            names.extend(
                page.iter()
                    .filter_map(|s| s.get("name").and_then(|n| n.as_str()))
                    .filter(|n| n.starts_with(prefix))
                    .map(str::to_string),
            );
            skip += page.len() as u64;
            if page.is_empty() || skip >= total {
                names.sort();
                names.dedup();
                return Ok(names);
            }
        }
        Err(other(format!("{SERVICE} list: too many pages")))
    }
}
