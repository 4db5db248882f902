//! Entrust KeyControl keystore (`keystore.entrust.keycontrol`), stored exactly as upstream
//! KES stores it, so a KeyControl vault that upstream filled works unchanged and back:
//!
//! * login: `POST /vault/1.0/Login/<vault_id>/` with `{"username","password"}` →
//!   `{"access_token","expires_at"}` (RFC 3339; none = 5 minutes); calls carry
//!   `X-Vault-Auth: <token>`. After half its lifetime the token is renewed with
//!   `POST /vault/1.0/Renew/` (the current token, no body; same answer), and only when that
//!   fails by logging in again, as upstream; a 401 logs in again at once;
//! * one secret per key in box `box_id`: `POST /vault/1.0/CreateSecret/`
//!   `{"box_id","name":<key name>,"secret_data":<base64 of the record>}` (200; 409 "Secret
//!   already exists"), read with `POST /vault/1.0/CheckoutSecret/` `{"box_id","secret_id"}`
//!   (→ `secret_data`, base64), deleted with `POST /vault/1.0/DeleteSecret/`, listed with
//!   `POST /vault/1.0/ListSecretIds/` `{"box_id","max_items","next_token"}` paged by
//!   `next_token`, expired secrets left out;
//! * a `404` is a missing key only when its `error` says `Secret not found` (a `409` is an
//!   existing key only with `Secret already exists`), as upstream: a box that is not there
//!   is a configuration error, never "key not found";
//! * the status probe is upstream's: `POST /vault/1.0/GetBox/` `{"box_id"}` with the
//!   session's token, so readiness fails on wrong credentials or a wrong box.
//!
//! kes starts without calling the service (upstream logs in at start-up).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;

use super::http::{other, retryable_status, retrying, Reply};
use super::json_secret;
use super::session::{describe, encode, secret_json, Service};
use super::{KeyStore, StoreError};
use crate::config::KeyControlConfig;
use crate::secret::SecretVec;

/// Connect + read + write timeout of one call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Names per list page (upstream's page size).
const PAGE: u64 = 256;
/// Safety bound on list pages.
const LIST_PAGES_MAX: usize = 100_000;
/// Token lifetime assumed when the service does not say (as upstream).
const TOKEN_DEFAULT: Duration = Duration::from_secs(300);
const SERVICE: &str = "KeyControl";

/// The Entrust KeyControl keystore.
pub struct KeyControlStore {
    config: KeyControlConfig,
    svc: Service,
}

/// `{"box_id":…, <name>:<value>…}`, with `base64_value` as a base64 member last.
fn box_json(
    box_id: &str,
    pairs: &[(&str, &str)],
    base64_value: Option<(&str, &[u8])>,
) -> SecretVec {
    let mut all = Vec::with_capacity(pairs.len() + 1);
    all.push(("box_id", box_id));
    all.extend_from_slice(pairs);
    secret_json(&all, base64_value)
}

impl KeyControlStore {
    /// Reads the CA file; no network I/O (the first call logs in).
    pub fn new(config: KeyControlConfig) -> Result<KeyControlStore, String> {
        let svc = Service::open(
            SERVICE,
            "keystore.entrust.keycontrol.endpoint",
            &config.endpoint,
            config.tls_ca.clone(),
            CALL_TIMEOUT,
        )?;
        Ok(KeyControlStore { config, svc })
    }

    fn fail(&self, what: &str, reply: &Reply) -> StoreError {
        other(format!(
            "{SERVICE} {what} failed with status {}: {}",
            reply.status,
            describe(reply, &["error"], &[self.config.password.expose()])
        ))
    }

    /// Renews `token` (still valid) when one is given, else or when that fails logs in.
    fn renew_or_login(
        &self,
        token: Option<&SecretVec>,
    ) -> Result<(SecretVec, Duration), StoreError> {
        if let Some(token) = token {
            let path = format!("{}/vault/1.0/Renew/", self.svc.base);
            let auth = std::str::from_utf8(token.expose()).unwrap_or_default();
            let renewed = retrying(&self.svc.retry, retryable_status, || {
                self.svc
                    .endpoint
                    .send("POST", &path, &[("X-Vault-Auth", auth)], b"")
            });
            // Renewal refused or failed: a new login, as upstream.
            if let Some(reply) = renewed.ok().filter(|r| r.status == 200) {
                if let Ok(fresh) = self.token_answer(reply, "renew") {
                    return Ok(fresh);
                }
            }
        }
        self.login()
    }

    /// Logs in with username and password.
    fn login(&self) -> Result<(SecretVec, Duration), StoreError> {
        // Sized for the worst escaping (`\u00XX`): growing would leave the password behind.
        let mut body = SecretVec::with_capacity(
            64 + 6 * (self.config.username.len() + self.config.password.len()),
        );
        {
            let mut w = crate::api::json::JsonWriter::object(body.as_mut_vec());
            w.string("username", &self.config.username)
                .string("password", self.config.password.expose());
            w.finish();
        }
        let path = format!(
            "{}/vault/1.0/Login/{}/",
            self.svc.base,
            encode(&self.config.vault_id)
        );
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
        self.token_answer(reply, "login")
    }

    /// `{"access_token","expires_at"}` of a login or renewal: the token and its lifetime.
    fn token_answer(&self, reply: Reply, what: &str) -> Result<(SecretVec, Duration), StoreError> {
        // Read in place (simd-json would leave copies of the token in freed buffers).
        let raw = SecretVec::new(reply.body);
        let [token, expires_at] =
            json_secret::members(raw.expose(), ["access_token", "expires_at"])
                .map_err(|_| other(format!("{SERVICE} {what}: invalid JSON answer")))?;
        let token = token
            .as_ref()
            .and_then(|t| t.text())
            .filter(|t| !t.is_empty() && t.iter().all(u8::is_ascii_graphic))
            .ok_or_else(|| other(format!("{SERVICE} {what}: the answer has no usable token")))?;
        let life = expires_at
            .as_ref()
            .and_then(|e| std::str::from_utf8(e.text()?).ok())
            .and_then(rfc3339_unix)
            .and_then(|at| {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
                Duration::try_from_secs_f64(at).ok()?.checked_sub(now)
            })
            .filter(|d| !d.is_zero())
            .unwrap_or(TOKEN_DEFAULT);
        Ok((SecretVec::new(token.to_vec()), life))
    }

    /// An authorized JSON `POST` to `/vault/1.0/<op>/`, repeated on 5xx/429; a 401 logs
    /// in again once.
    fn call(&self, op: &str, body: &[u8]) -> Result<Reply, StoreError> {
        let path = format!("/vault/1.0/{op}/");
        self.svc.call(
            SERVICE,
            |previous| self.renew_or_login(previous),
            "X-Vault-Auth",
            ("POST", &path, Some(body)),
        )
    }
}

/// KeyControl's `error` for a secret that is not in the box.
const SECRET_NOT_FOUND: &str = "Secret not found";

/// Whether an error answer's `error` member is exactly `text` (upstream's test).
fn says(reply: &Reply, text: &str) -> bool {
    let mut body = reply.body.clone();
    simd_json::to_owned_value(&mut body).is_ok_and(|v| {
        use simd_json::prelude::*;
        v.get("error").and_then(|e| e.as_str()) == Some(text)
    })
}

/// Seconds since the Unix epoch of an RFC 3339 time (`2024-05-06T07:08:09.5Z`,
/// `…+02:00`).
fn rfc3339_unix(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        frac = format!("0.{}", &r[..n]).parse().ok()?;
        rest = &r[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = rest[1..].split_once(':')?;
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60)
        }
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, mo) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + sec - offset) as f64 + frac)
}

/// Key rotation ([`KeyStore::replace`]) is not supported here (the trait's default:
/// `Unsupported`). Entrust's Secrets Vault overview (docs.hytrust.com/DataControl/5.4,
/// "Secrets Vault Programmer's Reference", Secrets-Vault-Overview) says changing a secret's
/// value creates a new version and a box keeps up to "Max Secret Version" of them, so an
/// in-place update exists; but the call that does it (its `/vault/1.0/<op>/` name, body and
/// errors), which version `CheckoutSecret` then returns, and whether `DeleteSecret` removes
/// every version, could not be found in a public Entrust source (the stored reference pages,
/// the docs and code search; upstream KES's keystore, which this one mirrors, only
/// creates, checks out, deletes and lists); no conditional write was found either. The stand-in must model
/// documented behaviour, not a guess, so this stays unsupported. Delete and re-create is
/// not an option: the key would not exist in between.
impl KeyStore for KeyControlStore {
    fn display_name(&self) -> String {
        format!("Entrust KeyControl: {}", self.config.endpoint)
    }

    fn status(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        let body = box_json(&self.config.box_id, &[], None);
        let reply = self.call("GetBox", body.expose())?;
        if reply.status != 200 {
            return Err(self.fail("GetBox", &reply));
        }
        Ok(start.elapsed())
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let body = box_json(
            &self.config.box_id,
            &[("name", name)],
            Some(("secret_data", value)),
        );
        let reply = self.call("CreateSecret", body.expose())?;
        match reply.status {
            200 | 201 => Ok(()),
            409 if says(&reply, "Secret already exists") => Err(StoreError::AlreadyExists),
            _ => Err(self.fail("CreateSecret", &reply)),
        }
    }

    fn get(&self, name: &str) -> Result<SecretVec, StoreError> {
        let body = box_json(&self.config.box_id, &[("secret_id", name)], None);
        let reply = self.call("CheckoutSecret", body.expose())?;
        match reply.status {
            200 => {}
            404 if says(&reply, SECRET_NOT_FOUND) => return Err(StoreError::NotFound),
            _ => return Err(self.fail("CheckoutSecret", &reply)),
        }
        let mut raw = SecretVec::new(reply.body);
        let v = simd_json::to_owned_value(raw.as_mut_vec())
            .map_err(|_| other(format!("{SERVICE} CheckoutSecret: invalid JSON answer")))?;
        use simd_json::prelude::*;
        let data = v
            .get("secret_data")
            .and_then(|d| d.as_str())
            .ok_or_else(|| other(format!("{SERVICE} CheckoutSecret: no secret_data")))?;
        let mut out = SecretVec::with_capacity(data.len());
        base64::engine::general_purpose::STANDARD
            .decode_vec(data, out.as_mut_vec())
            .map_err(|_| {
                other(format!(
                    "{SERVICE} CheckoutSecret: secret_data is not base64"
                ))
            })?;
        Ok(out)
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        let body = box_json(&self.config.box_id, &[("secret_id", name)], None);
        let reply = self.call("DeleteSecret", body.expose())?;
        match reply.status {
            200 | 204 => Ok(()),
            404 if says(&reply, SECRET_NOT_FOUND) => Err(StoreError::NotFound),
            _ => Err(self.fail("DeleteSecret", &reply)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        let mut next = String::new();
        for _ in 0..LIST_PAGES_MAX {
            let mut body = SecretVec::with_capacity(96 + next.len());
            {
                let mut w = crate::api::json::JsonWriter::object(body.as_mut_vec());
                w.string("box_id", &self.config.box_id)
                    .uint("max_items", PAGE);
                if !next.is_empty() {
                    w.string("next_token", &next);
                }
                w.finish();
            }
            let reply = self.call("ListSecretIds", body.expose())?;
            if reply.status != 200 {
                return Err(self.fail("ListSecretIds", &reply));
            }
            let mut raw = reply.body;
            let v = simd_json::to_owned_value(&mut raw)
                .map_err(|_| other(format!("{SERVICE} ListSecretIds: invalid JSON answer")))?;
            use simd_json::prelude::*;
            let secrets = v
                .get("secrets")
                .or_else(|| v.get("Secrets"))
                .and_then(|s| s.as_array())
                .map(|a| a.as_slice())
                .unwrap_or_default();
            names.extend(
                secrets
                    .iter()
                    .filter(|s| !s.get("expired").and_then(|e| e.as_bool()).unwrap_or(false))
                    .filter_map(|s| s.get("name").and_then(|n| n.as_str()))
                    .filter(|n| n.starts_with(prefix))
                    .map(str::to_string),
            );
            let token = v
                .get("next_token")
                .and_then(|t| t.as_str())
                .unwrap_or_default();
            if token.is_empty() || token == next || secrets.is_empty() {
                names.sort();
                names.dedup();
                return Ok(names);
            }
            next = token.to_string();
        }
        Err(other(format!("{SERVICE} ListSecretIds: too many pages")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert_eq!(rfc3339_unix("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(rfc3339_unix("2024-02-29T12:00:00Z"), Some(1_709_208_000.0));
        assert_eq!(
            rfc3339_unix("2024-02-29T14:00:00+02:00"),
            Some(1_709_208_000.0)
        );
        assert_eq!(
            rfc3339_unix("2024-02-29T12:00:00.5Z"),
            Some(1_709_208_000.5)
        );
        assert_eq!(
            rfc3339_unix("0001-01-01T00:00:00Z"),
            Some(-62_135_596_800.0)
        );
        assert_eq!(rfc3339_unix("yesterday"), None);
        assert_eq!(rfc3339_unix("2024-13-01T00:00:00Z"), None);
    }
}
