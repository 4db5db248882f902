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
//! Auth: the service account in `credentials` signs a JWT (RS256, ring's `RsaKeyPair` from
//! the PKCS#8 PEM) that the token endpoint exchanges for an OAuth2 access token (RFC 7523);
//! the token is cached and renewed before it expires (and at once after a 401). Without
//! `credentials` kes does not start: the metadata server / application default credentials
//! are not supported yet.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use ring::signature::RsaKeyPair;

use super::http::{other, retryable_status, retrying, Endpoint, Reply, Retry, TlsFiles};
use super::{KeyStore, StoreError};
use crate::config::GcpConfig;
use crate::secret::SecretVec;

/// Connect + read + write timeout of one GCP call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Lifetime asked for in the JWT (Google's maximum).
const JWT_LIFETIME_SECS: u64 = 3600;
/// Safety bound on list pages.
const LIST_PAGES_MAX: usize = 100_000;

const SERVICE: &str = "GCP Secret Manager";

/// The GCP Secret Manager keystore.
pub struct GcpStore {
    config: GcpConfig,
    endpoint: Endpoint,
    token_endpoint: Endpoint,
    token_path: String,
    key: RsaKeyPair,
    token: Mutex<Option<Token>>,
    retry: Retry,
}

/// A cached access token and when to fetch the next one.
struct Token {
    value: SecretVec,
    renew_at: Instant,
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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

impl GcpStore {
    pub fn new(config: GcpConfig) -> Result<GcpStore, String> {
        let Some(creds) = &config.credentials else {
            return Err(
                "keystore.gcp.secretmanager.credentials: missing; the service account \
                 (client_email, client_id, private_key_id, private_key) is required (the GCP \
                 metadata server / application default credentials are not supported yet)"
                    .into(),
            );
        };
        let der = {
            use rustls_pki_types::pem::PemObject;
            rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(creds.private_key.as_bytes())
                .map_err(|_| {
                    "keystore.gcp.secretmanager.credentials.private_key: not a PKCS#8 PEM \
                     private key (-----BEGIN PRIVATE KEY-----)"
                        .to_string()
                })?
        };
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(|e| {
            format!("keystore.gcp.secretmanager.credentials.private_key: not an RSA key: {e}")
        })?;
        let endpoint = Endpoint::parse(
            SERVICE,
            "keystore.gcp.secretmanager.endpoint",
            &config.endpoint,
            &TlsFiles::default(),
            CALL_TIMEOUT,
        )?;
        let token_endpoint = Endpoint::parse(
            "GCP OAuth2",
            "keystore.gcp.secretmanager.token_uri",
            &config.token_uri,
            &TlsFiles::default(),
            CALL_TIMEOUT,
        )?;
        let rest = config
            .token_uri
            .split_once("://")
            .map(|(_, r)| r)
            .unwrap_or(&config.token_uri);
        let token_path = rest
            .find('/')
            .map(|i| rest[i..].to_string())
            .unwrap_or_else(|| "/".into());
        Ok(GcpStore {
            config,
            endpoint,
            token_endpoint,
            token_path,
            key,
            token: Mutex::new(None),
            retry: Retry::DEFAULT,
        })
    }

    fn credentials(&self) -> &crate::config::GcpCredentials {
        self.config
            .credentials
            .as_ref()
            .expect("checked in GcpStore::new")
    }

    /// The signed JWT bearer assertion (RFC 7523) for the token endpoint.
    fn assertion(&self) -> Result<SecretVec, StoreError> {
        let creds = self.credentials();
        let mut header = Vec::new();
        let mut w = crate::api::json::JsonWriter::object(&mut header);
        w.string("alg", "RS256")
            .string("typ", "JWT")
            .string("kid", &creds.private_key_id);
        w.finish();
        let now = unix_now();
        let mut claims = Vec::new();
        let mut w = crate::api::json::JsonWriter::object(&mut claims);
        w.string("iss", &creds.client_email)
            .string("scope", &self.config.scopes.join(" "))
            .string("aud", &self.config.token_uri)
            .uint("iat", now)
            .uint("exp", now + JWT_LIFETIME_SECS);
        w.finish();
        let signing_input = format!("{}.{}", b64url(&header), b64url(&claims));
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| other("GCP: cannot sign the token request".into()))?;
        let mut out = SecretVec::with_capacity(signing_input.len() + sig.len() * 2);
        out.as_mut_vec().extend_from_slice(signing_input.as_bytes());
        out.as_mut_vec().push(b'.');
        out.as_mut_vec().extend_from_slice(b64url(&sig).as_bytes());
        Ok(out)
    }

    /// A valid access token: the cached one, or a fresh one from the token endpoint.
    fn access_token(&self) -> Result<SecretVec, StoreError> {
        let mut cached = self.token.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = cached.as_ref() {
            if Instant::now() < t.renew_at {
                return Ok(SecretVec::new(t.value.expose().to_vec()));
            }
        }
        let assertion = self.assertion()?;
        let mut form = SecretVec::with_capacity(assertion.expose().len() + 96);
        form.as_mut_vec().extend_from_slice(
            b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=",
        );
        form.as_mut_vec().extend_from_slice(assertion.expose());
        let reply = retrying(&self.retry, retryable_status, || {
            self.token_endpoint.send(
                "POST",
                &self.token_path,
                &[
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("Accept", "application/json"),
                ],
                form.expose(),
            )
        })?;
        if reply.status != 200 {
            return Err(google_error("token request", &reply));
        }
        let mut body = SecretVec::new(reply.body);
        let v = simd_json::to_owned_value(body.as_mut_vec())
            .map_err(|_| other("GCP token endpoint: invalid JSON".into()))?;
        use simd_json::prelude::*;
        let token = v
            .get("access_token")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| other("GCP token endpoint: no access_token".into()))?;
        let lifetime = v.get("expires_in").and_then(|e| e.as_u64()).unwrap_or(300);
        // Renew 5 minutes before expiry, or at half the lifetime of a short-lived token.
        let early = (lifetime / 2).min(300);
        let value = SecretVec::new(token.as_bytes().to_vec());
        let out = SecretVec::new(value.expose().to_vec());
        *cached = Some(Token {
            value,
            renew_at: Instant::now() + Duration::from_secs(lifetime - early),
        });
        Ok(out)
    }

    /// One authorized call, repeated on 5xx/429; a 401 drops the cached token and tries once
    /// more with a fresh one.
    fn call(&self, method: &str, path: &str, body: &[u8]) -> Result<Reply, StoreError> {
        for fresh in [false, true] {
            let token = self.access_token()?;
            let mut auth = SecretVec::with_capacity(token.expose().len() + 8);
            auth.as_mut_vec().extend_from_slice(b"Bearer ");
            auth.as_mut_vec().extend_from_slice(token.expose());
            let auth = std::str::from_utf8(auth.expose())
                .map_err(|_| other("GCP token endpoint: token is not text".into()))?;
            let mut headers = vec![("Authorization", auth), ("Accept", "application/json")];
            if !body.is_empty() {
                headers.push(("Content-Type", "application/json"));
            }
            let reply = retrying(&self.retry, retryable_status, || {
                self.endpoint.send(method, path, &headers, body)
            })?;
            if reply.status == 401 && !fresh {
                *self.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
                continue;
            }
            return Ok(reply);
        }
        unreachable!("the loop returns")
    }

    fn project(&self) -> String {
        format!("/v1/projects/{}", query_escape(&self.config.project_id))
    }
}

impl KeyStore for GcpStore {
    fn display_name(&self) -> String {
        format!("GCP SecretManager: Project={}", self.config.project_id)
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
        let path = format!("{}/secrets?secretId={name}", self.project());
        let reply = self.call("POST", &path, br#"{"replication":{"automatic":{}}}"#)?;
        match reply.status {
            200 => {}
            409 => return Err(StoreError::AlreadyExists),
            _ => return Err(google_error("create secret", &reply)),
        }
        // The secret's resource name as GCP answers it (with the project number).
        let mut body = reply.body;
        let secret = simd_json::to_owned_value(&mut body).ok().and_then(|v| {
            use simd_json::prelude::*;
            v.get("name").and_then(|n| n.as_str()).map(str::to_string)
        });
        let secret = match secret {
            Some(s) if s.starts_with("projects/") && s.ends_with(&format!("/secrets/{name}")) => s,
            _ => format!("projects/{}/secrets/{name}", self.config.project_id),
        };
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
        let added = self.call(
            "POST",
            &format!("/v1/{secret}:addVersion"),
            payload.expose(),
        );
        match added {
            Ok(r) if r.status == 200 => Ok(()),
            failed => {
                // Leave no empty secret behind: it would block this name for good.
                let _ = self.call("DELETE", &format!("/v1/{secret}"), b"");
                match failed {
                    Ok(r) => Err(google_error("add secret version", &r)),
                    Err(e) => Err(e),
                }
            }
        }
    }

    fn get(&self, name: &str) -> Result<SecretVec, StoreError> {
        if !valid_secret_id(name) {
            return Err(StoreError::NotFound);
        }
        let path = format!("{}/secrets/{name}/versions/1:access", self.project());
        let reply = self.call("GET", &path, b"")?;
        match reply.status {
            200 => {}
            404 => return Err(StoreError::NotFound),
            _ => return Err(google_error("access secret version", &reply)),
        }
        let mut body = SecretVec::new(reply.body);
        let v = simd_json::to_owned_value(body.as_mut_vec())
            .map_err(|_| other(format!("{SERVICE} access secret version: invalid JSON")))?;
        use simd_json::prelude::*;
        let data = v
            .get("payload")
            .and_then(|p| p.get("data"))
            .and_then(|d| d.as_str())
            .ok_or_else(|| other(format!("{SERVICE} access secret version: no payload")))?;
        let mut out = SecretVec::with_capacity(data.len());
        base64::engine::general_purpose::STANDARD
            .decode_vec(data, out.as_mut_vec())
            .map_err(|_| other(format!("{SERVICE}: payload data is not base64")))?;
        if out.expose().len() > super::VALUE_BYTES_MAX {
            return Err(StoreError::TooLarge);
        }
        Ok(out)
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
                body: br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#
                    .to_vec(),
            },
        )
        .to_string();
        assert!(e.contains("invalid_grant Invalid JWT Signature."), "{e}");
    }
}
