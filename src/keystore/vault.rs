//! HashiCorp Vault / OpenBao K/V keystore (storage-and-config.md §4). Records live exactly
//! where upstream KES puts them, so a Vault that upstream used works unchanged and back:
//!
//! * K/V v1: `<engine>/<prefix>/<name>`, data `{"<name>": "<value>"}`;
//! * K/V v2: `<engine>/data/<prefix>/<name>`, `{"data":{"<name>":"<value>"},"options":{"cas":0}}`,
//!   listing via `<engine>/metadata/<prefix>`, delete via the metadata path.
//!
//! Login with AppRole or Kubernetes; the token is renewed by logging in again before it
//! expires, and once more after a 403. Every call has a timeout and runs on the caller's
//! (blocking-pool) thread. A small HTTP/1.1 client over std + rustls, one connection per call.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{KeyStore, StoreError};
use crate::config::{VaultAuth, VaultConfig};
use crate::secret::SecretVec;

/// Connect + read + write timeout of one Vault call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest Vault response read.
const RESPONSE_BYTES_MAX: usize = 4 << 20;

struct Token {
    value: String,
    /// Log in again after this instant.
    renew_at: Instant,
}

/// The Vault keystore.
pub struct VaultStore {
    config: VaultConfig,
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    token: Mutex<Option<Token>>,
}

struct Reply {
    status: u16,
    body: Vec<u8>,
}

fn unreachable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unreachable(e.to_string())
}

fn other(msg: String) -> StoreError {
    StoreError::Io(std::io::Error::other(msg))
}

impl VaultStore {
    pub fn new(config: VaultConfig) -> Result<VaultStore, String> {
        let (tls_wanted, rest) = if let Some(r) = config.endpoint.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = config.endpoint.strip_prefix("http://") {
            (false, r)
        } else {
            (true, config.endpoint.as_str())
        };
        let authority = rest.split('/').next().unwrap_or(rest);
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                p.parse().map_err(|_| {
                    format!("keystore.vault.endpoint: bad port in '{}'", config.endpoint)
                })?,
            ),
            _ => (authority.to_string(), if tls_wanted { 443 } else { 80 }),
        };
        let tls = if tls_wanted {
            let credentials = match (&config.tls_cert, &config.tls_key) {
                (Some(cert), Some(key)) => Some(crate::client::Credentials::Files {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            };
            let cfg = crate::client::ClientConfig {
                endpoints: Vec::new(),
                credentials,
                insecure: false,
                ca_file: config.tls_ca.clone(),
                timeout: CALL_TIMEOUT,
            };
            Some(
                crate::client::rustls_config(&cfg)
                    .map_err(|e| format!("keystore.vault.tls: {e}"))?,
            )
        } else {
            None
        };
        Ok(VaultStore {
            config,
            host,
            port,
            tls,
            token: Mutex::new(None),
        })
    }

    fn path(&self, name: &str, metadata: bool) -> String {
        let c = &self.config;
        let mut p = format!("/v1/{}", c.engine);
        if c.kv_v2 {
            p.push_str(if metadata { "/metadata" } else { "/data" });
        }
        if !c.prefix.is_empty() {
            p.push('/');
            p.push_str(&c.prefix);
        }
        if !name.is_empty() {
            p.push('/');
            p.push_str(name);
        }
        p
    }

    /// One HTTP exchange with Vault.
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        namespace: &str,
        body: Option<&[u8]>,
    ) -> Result<Reply, StoreError> {
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(unreachable)?
            .next()
            .ok_or_else(|| unreachable(format!("cannot resolve {}", self.host)))?;
        let tcp = TcpStream::connect_timeout(&addr, CALL_TIMEOUT).map_err(unreachable)?;
        tcp.set_read_timeout(Some(CALL_TIMEOUT))
            .map_err(unreachable)?;
        tcp.set_write_timeout(Some(CALL_TIMEOUT))
            .map_err(unreachable)?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\n",
            self.host, self.port
        );
        if let Some(t) = token {
            req.push_str(&format!("X-Vault-Token: {t}\r\n"));
        }
        if !namespace.is_empty() && namespace != "/" {
            req.push_str(&format!("X-Vault-Namespace: {namespace}\r\n"));
        }
        let body = body.unwrap_or(b"");
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ));
        let mut bytes = SecretVec::with_capacity(req.len() + body.len());
        bytes.as_mut_vec().extend_from_slice(req.as_bytes());
        bytes.as_mut_vec().extend_from_slice(body);
        let mut raw = SecretVec::with_capacity(4096);
        match &self.tls {
            None => {
                let mut s = tcp;
                s.write_all(bytes.expose()).map_err(unreachable)?;
                read_all(&mut s, raw.as_mut_vec())?;
            }
            Some(config) => {
                let name = match self.host.parse::<std::net::IpAddr>() {
                    Ok(ip) => rustls_pki_types::ServerName::IpAddress(ip.into()),
                    Err(_) => rustls_pki_types::ServerName::try_from(self.host.clone())
                        .map_err(|_| other(format!("bad Vault host name '{}'", self.host)))?,
                };
                let conn = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(|e| other(format!("TLS: {e}")))?;
                let mut s = rustls::StreamOwned::new(conn, tcp);
                s.write_all(bytes.expose()).map_err(unreachable)?;
                read_all(&mut s, raw.as_mut_vec())?;
            }
        }
        parse_reply(raw.expose())
    }

    fn login(&self) -> Result<Token, StoreError> {
        let (path, namespace, body) = match &self.config.auth {
            VaultAuth::AppRole {
                engine,
                namespace,
                id,
                secret,
            } => (
                format!("/v1/auth/{engine}/login"),
                namespace.as_str(),
                json_object(&[("role_id", id), ("secret_id", secret)]),
            ),
            VaultAuth::Kubernetes {
                engine,
                namespace,
                role,
                jwt,
            } => (
                format!("/v1/auth/{engine}/login"),
                namespace.as_str(),
                json_object(&[("role", role), ("jwt", jwt)]),
            ),
        };
        let reply = self.call("POST", &path, None, namespace, Some(body.expose()))?;
        if reply.status != 200 {
            return Err(other(format!(
                "Vault login failed with status {}",
                reply.status
            )));
        }
        let mut body = reply.body;
        let value = simd_json::to_owned_value(&mut body)
            .map_err(|_| other("Vault login: invalid JSON".into()))?;
        use simd_json::prelude::*;
        let auth = value
            .get("auth")
            .ok_or_else(|| other("Vault login: no auth in the answer".into()))?;
        let token = auth
            .get("client_token")
            .and_then(|t| t.as_str())
            .ok_or_else(|| other("Vault login: no client_token".into()))?;
        let ttl = auth
            .get("lease_duration")
            .and_then(|d| d.as_u64())
            .unwrap_or(0);
        // Log in again when 80 % of the lease has passed (0 = no expiry: once an hour).
        let renew = if ttl == 0 {
            Duration::from_secs(3600)
        } else {
            Duration::from_secs(ttl * 4 / 5)
        };
        Ok(Token {
            value: token.to_string(),
            renew_at: Instant::now() + renew,
        })
    }

    fn token(&self, force_login: bool) -> Result<String, StoreError> {
        let mut guard = self.token.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(t) if !force_login && Instant::now() < t.renew_at => Ok(t.value.clone()),
            _ => {
                let t = self.login()?;
                let value = t.value.clone();
                *guard = Some(t);
                Ok(value)
            }
        }
    }

    /// An authenticated call; logs in again once on 403 (token revoked or expired early).
    fn authed(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Reply, StoreError> {
        let token = self.token(false)?;
        let reply = self.call(method, path, Some(&token), &self.config.namespace, body)?;
        if reply.status == 403 {
            let token = self.token(true)?;
            return self.call(method, path, Some(&token), &self.config.namespace, body);
        }
        Ok(reply)
    }
}

fn read_all<R: Read>(r: &mut R, out: &mut Vec<u8>) -> Result<(), StoreError> {
    let mut tmp = [0u8; 8192];
    loop {
        match r.read(&mut tmp) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                if out.len() + n > RESPONSE_BYTES_MAX {
                    return Err(other("Vault response too large".into()));
                }
                out.extend_from_slice(&tmp[..n]);
            }
            // Vault closes TLS connections without close_notify after Connection: close.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(unreachable(e)),
        }
    }
}

fn parse_reply(raw: &[u8]) -> Result<Reply, StoreError> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(unreachable("malformed or truncated response from Vault")),
    };
    let status = resp.code.unwrap_or(0);
    let chunked = resp.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding") && h.value.eq_ignore_ascii_case(b"chunked")
    });
    let body = if chunked {
        let mut decoder = crate::http::ChunkedDecoder::default();
        let mut body = Vec::new();
        decoder
            .decode(&raw[head..], &mut body, RESPONSE_BYTES_MAX)
            .map_err(|_| unreachable("malformed chunked response from Vault"))?;
        body
    } else {
        raw[head..].to_vec()
    };
    Ok(Reply { status, body })
}

/// `{"k":"v",…}` in a zeroizing buffer (values may be secrets).
fn json_object(pairs: &[(&str, &str)]) -> SecretVec {
    let mut out = SecretVec::with_capacity(
        64 + pairs
            .iter()
            .map(|(k, v)| k.len() + v.len() + 8)
            .sum::<usize>(),
    );
    let mut w = crate::api::json::JsonWriter::object(out.as_mut_vec());
    for (k, v) in pairs {
        w.string(k, v);
    }
    w.finish();
    out
}

/// Vault's error text for logs (never contains a stored value).
fn vault_error(reply: &Reply) -> String {
    format!(
        "Vault answered {}: {}",
        reply.status,
        String::from_utf8_lossy(&reply.body)
            .chars()
            .take(200)
            .collect::<String>()
    )
}

impl VaultStore {
    /// With `transit`: the stored string is the transit ciphertext (`vault:v1:…`) of the
    /// record's base64; without it, the record itself.
    fn wrap(&self, value: &str) -> Result<SecretVec, StoreError> {
        let Some((engine, key)) = &self.config.transit else {
            return Ok(SecretVec::new(value.as_bytes().to_vec()));
        };
        use base64::Engine;
        let b64 = SecretVec::new(
            base64::engine::general_purpose::STANDARD
                .encode(value.as_bytes())
                .into_bytes(),
        );
        let plaintext = std::str::from_utf8(b64.expose()).map_err(|_| other("base64".into()))?;
        let reply = self.authed(
            "POST",
            &format!("/v1/{engine}/encrypt/{key}"),
            Some(json_object(&[("plaintext", plaintext)]).expose()),
        )?;
        if reply.status != 200 {
            return Err(other(vault_error(&reply)));
        }
        let mut body = reply.body;
        let v = simd_json::to_owned_value(&mut body)
            .map_err(|_| other("Vault transit: invalid JSON".into()))?;
        use simd_json::prelude::*;
        let ct = v
            .get("data")
            .and_then(|d| d.get("ciphertext"))
            .and_then(|c| c.as_str())
            .ok_or_else(|| other("Vault transit: no ciphertext".into()))?;
        Ok(SecretVec::new(ct.as_bytes().to_vec()))
    }

    fn unwrap_record(&self, stored: &str) -> Result<SecretVec, StoreError> {
        let Some((engine, key)) = &self.config.transit else {
            return Ok(SecretVec::new(stored.as_bytes().to_vec()));
        };
        let reply = self.authed(
            "POST",
            &format!("/v1/{engine}/decrypt/{key}"),
            Some(json_object(&[("ciphertext", stored)]).expose()),
        )?;
        if reply.status != 200 {
            return Err(other(vault_error(&reply)));
        }
        let mut body = SecretVec::new(reply.body);
        let v = simd_json::to_owned_value(body.as_mut_vec())
            .map_err(|_| other("Vault transit: invalid JSON".into()))?;
        use simd_json::prelude::*;
        let pt = v
            .get("data")
            .and_then(|d| d.get("plaintext"))
            .and_then(|c| c.as_str())
            .ok_or_else(|| other("Vault transit: no plaintext".into()))?;
        use base64::Engine;
        let mut out = SecretVec::with_capacity(pt.len());
        base64::engine::general_purpose::STANDARD
            .decode_vec(pt, out.as_mut_vec())
            .map_err(|_| other("Vault transit: plaintext is not base64".into()))?;
        Ok(out)
    }
}

impl KeyStore for VaultStore {
    fn display_name(&self) -> String {
        format!("Hashicorp Vault: {}", self.config.endpoint)
    }

    fn status(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        let reply = self.call("GET", "/v1/sys/health", None, "", None)?;
        // 200 active, 429 standby, 472/473 DR/perf standby: all answer reads.
        match reply.status {
            200 | 429 | 472 | 473 => Ok(start.elapsed()),
            _ => Err(other(vault_error(&reply))),
        }
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let value =
            std::str::from_utf8(value).map_err(|_| other("key record is not text".into()))?;
        let wrapped = self.wrap(value)?;
        let value = std::str::from_utf8(wrapped.expose())
            .map_err(|_| other("wrapped record is not text".into()))?;
        if self.config.kv_v2 {
            let mut body = SecretVec::with_capacity(value.len() + name.len() + 48);
            let v = body.as_mut_vec();
            v.extend_from_slice(b"{\"data\":");
            v.extend_from_slice(json_object(&[(name, value)]).expose().trim_ascii_end());
            v.extend_from_slice(b",\"options\":{\"cas\":0}}");
            let reply = self.authed("POST", &self.path(name, false), Some(body.expose()))?;
            return match reply.status {
                200 | 204 => Ok(()),
                400 if String::from_utf8_lossy(&reply.body).contains("check-and-set") => {
                    Err(StoreError::AlreadyExists)
                }
                _ => Err(other(vault_error(&reply))),
            };
        }
        // K/V v1 has no create-if-absent: read first (racy across nodes, as upstream).
        let path = self.path(name, false);
        let existing = self.authed("GET", &path, None)?;
        if existing.status == 200 {
            return Err(StoreError::AlreadyExists);
        }
        let reply = self.authed("PUT", &path, Some(json_object(&[(name, value)]).expose()))?;
        match reply.status {
            200 | 204 => Ok(()),
            _ => Err(other(vault_error(&reply))),
        }
    }

    fn get(&self, name: &str) -> Result<SecretVec, StoreError> {
        let reply = self.authed("GET", &self.path(name, false), None)?;
        match reply.status {
            200 => {}
            404 => return Err(StoreError::NotFound),
            _ => return Err(other(vault_error(&reply))),
        }
        let mut body = SecretVec::new(reply.body);
        let value = simd_json::to_owned_value(body.as_mut_vec())
            .map_err(|_| other("Vault: invalid JSON".into()))?;
        use simd_json::prelude::*;
        let data = value.get("data").ok_or(StoreError::NotFound)?;
        let data = if self.config.kv_v2 {
            data.get("data").ok_or(StoreError::NotFound)?
        } else {
            data
        };
        let record = data
            .get(name)
            .and_then(|v| v.as_str())
            .ok_or(StoreError::NotFound)?;
        self.unwrap_record(record)
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        // Vault answers 204 whether or not the entry existed: check first for a 404.
        let path = self.path(name, false);
        if self.authed("GET", &path, None)?.status == 404 {
            return Err(StoreError::NotFound);
        }
        let reply = self.authed("DELETE", &self.path(name, self.config.kv_v2), None)?;
        match reply.status {
            200 | 204 => Ok(()),
            404 => Err(StoreError::NotFound),
            _ => Err(other(vault_error(&reply))),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let reply = self.authed("LIST", &self.path("", true), None)?;
        match reply.status {
            200 => {}
            404 => return Ok(Vec::new()),
            _ => return Err(other(vault_error(&reply))),
        }
        let mut body = reply.body;
        let value = simd_json::to_owned_value(&mut body)
            .map_err(|_| other("Vault: invalid JSON".into()))?;
        use simd_json::prelude::*;
        let mut names: Vec<String> = value
            .get("data")
            .and_then(|d| d.get("keys"))
            .and_then(|k| k.as_array())
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k.as_str())
                    .filter(|k| !k.ends_with('/') && k.starts_with(prefix))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        Ok(names)
    }
}
