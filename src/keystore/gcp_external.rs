//! GCP `external_account` credentials (workload identity federation), as Google's libraries
//! use such a file (the MinIO Operator's GCP option mounts one):
//!
//! 1. the subject token is read from `credential_source.file` (re-read for every token, since
//!    the platform rotates it) or fetched with `GET credential_source.url` (with
//!    `credential_source.headers`); `credential_source.format` is `text` (the default) or
//!    `json` with `subject_token_field_name`;
//! 2. it is exchanged at `token_url` (Google's STS) for a federated access token (RFC 8693:
//!    `grant_type=…:token-exchange`, the file's `audience` and `subject_token_type`,
//!    `requested_token_type=…:access_token`, the scopes; `client_id`/`client_secret` as HTTP
//!    Basic when the file has them; `options={"userProject": …}` for a workforce pool's
//!    `workforce_pool_user_project`);
//! 3. when the file names `service_account_impersonation_url`, the federated token (asked
//!    with the `cloud-platform` scope) buys the service account's token there
//!    (`{"scope": […], "lifetime": "<n>s"}` → `{"accessToken", "expireTime"}`).
//!
//! Executable-sourced, AWS-sourced (`environment_id`) and certificate-sourced subject tokens
//! are refused when the file is read (at start and by `kes server --check`).

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;

use super::http::{other, retryable_status, retrying, Endpoint, Reply, Retry, TlsFiles};
use super::json_secret;
use super::session::{base_path, bearer_token, encode, oauth_error, read_credential_file};
use super::StoreError;
use crate::secret::SecretVec;

/// Connect + read + write timeout of an STS, IAM or subject-token call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest subject token read (a Kubernetes service-account token is about 1 KB).
pub const SUBJECT_TOKEN_BYTES_MAX: usize = 64 << 10;
/// The scope a federated token is asked with when it buys a service account's token.
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The service account token's lifetime asked for, unless the file says otherwise.
const IMPERSONATION_LIFETIME_SECS: u64 = 3600;

/// An `external_account` credentials file, read and checked.
pub struct ExternalAccount {
    audience: String,
    subject_token_type: String,
    sts: Url,
    subject: Subject,
    impersonation: Option<Impersonation>,
    /// The scopes asked for (space-separated).
    scopes: Vec<String>,
    /// `client_id` / `client_secret`, sent to the STS as HTTP Basic.
    client: Option<(String, SecretVec)>,
    workforce_user_project: Option<String>,
}

struct Url {
    endpoint: Endpoint,
    /// Path and query.
    target: String,
    /// As written, for messages.
    url: String,
}

impl Url {
    fn parse(url: &str, field: &str) -> Result<Url, String> {
        let endpoint = Endpoint::parse(
            "GCP external account",
            field,
            url,
            &TlsFiles::default(),
            CALL_TIMEOUT,
        )?;
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
        let target = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('?') => format!("/{}", &rest[i..]),
            Some(i) => rest[i..].to_string(),
            None => match base_path(url) {
                p if p.is_empty() => "/".to_string(),
                p => p,
            },
        };
        Ok(Url {
            endpoint,
            target,
            url: url.to_string(),
        })
    }
}

enum Subject {
    File {
        path: PathBuf,
        format: Format,
    },
    Url {
        url: Url,
        headers: Vec<(String, String)>,
        format: Format,
    },
}

enum Format {
    Text,
    /// The member holding the token.
    Json(String),
}

struct Impersonation {
    url: Url,
    /// The service account, for messages (from the URL).
    account: String,
    lifetime_secs: u64,
}

impl ExternalAccount {
    /// Reads the members of an `external_account` file; `origin` names it in errors.
    pub fn from_json(
        v: &simd_json::OwnedValue,
        origin: &str,
        scopes: &[String],
    ) -> Result<ExternalAccount, String> {
        use simd_json::prelude::*;
        let text = |o: &simd_json::OwnedValue, name: &str| {
            o.get(name)
                .and_then(|s| s.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let need =
            |name: &str| text(v, name).ok_or_else(|| format!("{origin}: '{name}' is missing"));
        let source = v
            .get("credential_source")
            .filter(|s| s.is_object())
            .ok_or_else(|| format!("{origin}: 'credential_source' is missing"))?;
        for (member, what) in [
            ("executable", "executable-sourced"),
            ("environment_id", "AWS-sourced"),
            ("certificate", "certificate-sourced (X.509)"),
        ] {
            if source.get(member).is_some() {
                return Err(format!(
                    "{origin}: {what} subject tokens (credential_source.{member}) are not \
                     supported; use a file- or URL-sourced credential_source"
                ));
            }
        }
        let format = match source.get("format") {
            None => Format::Text,
            Some(f) => match text(f, "type").as_deref() {
                None | Some("text") => Format::Text,
                Some("json") => {
                    Format::Json(text(f, "subject_token_field_name").ok_or_else(|| {
                        format!(
                            "{origin}: credential_source.format.subject_token_field_name is \
                             missing"
                        )
                    })?)
                }
                Some(t) => {
                    return Err(format!(
                        "{origin}: credential_source.format.type '{}' is not text or json",
                        t.chars().take(32).collect::<String>()
                    ))
                }
            },
        };
        let subject = match (text(source, "file"), text(source, "url")) {
            (Some(file), None) => Subject::File {
                path: PathBuf::from(file),
                format,
            },
            (None, Some(url)) => {
                let mut headers = Vec::new();
                if let Some(h) = source.get("headers").and_then(|h| h.as_object()) {
                    for (k, val) in h.iter() {
                        let val = val.as_str().unwrap_or_default();
                        let printable = |s: &str| s.bytes().all(|b| (b' '..=b'~').contains(&b));
                        if k.is_empty() || !printable(k) || k.contains(':') || !printable(val) {
                            return Err(format!(
                                "{origin}: credential_source.headers has a header that cannot \
                                 be sent"
                            ));
                        }
                        headers.push((k.to_string(), val.to_string()));
                    }
                }
                Subject::Url {
                    url: Url::parse(&url, &format!("{origin}: credential_source.url"))?,
                    headers,
                    format,
                }
            }
            _ => {
                return Err(format!(
                    "{origin}: credential_source needs exactly one of 'file' and 'url'"
                ))
            }
        };
        let impersonation = match text(v, "service_account_impersonation_url") {
            None => None,
            Some(url) => {
                let account = url
                    .rsplit('/')
                    .next()
                    .and_then(|s| s.strip_suffix(":generateAccessToken"))
                    .ok_or_else(|| {
                        format!(
                            "{origin}: service_account_impersonation_url does not end in \
                             '/serviceAccounts/<email>:generateAccessToken'"
                        )
                    })?
                    .to_string();
                let lifetime_secs = v
                    .get("service_account_impersonation")
                    .and_then(|i| i.get("token_lifetime_seconds"))
                    .and_then(|n| n.as_u64())
                    .unwrap_or(IMPERSONATION_LIFETIME_SECS);
                if !(600..=43_200).contains(&lifetime_secs) {
                    return Err(format!(
                        "{origin}: service_account_impersonation.token_lifetime_seconds must be \
                         600 to 43200"
                    ));
                }
                Some(Impersonation {
                    url: Url::parse(
                        &url,
                        &format!("{origin}: service_account_impersonation_url"),
                    )?,
                    account,
                    lifetime_secs,
                })
            }
        };
        let client = match (text(v, "client_id"), text(v, "client_secret")) {
            (Some(id), Some(secret)) => Some((id, SecretVec::new(secret.into_bytes()))),
            _ => None,
        };
        let token_url =
            text(v, "token_url").unwrap_or_else(|| "https://sts.googleapis.com/v1/token".into());
        Ok(ExternalAccount {
            audience: need("audience")?,
            subject_token_type: need("subject_token_type")?,
            sts: Url::parse(&token_url, &format!("{origin}: token_url"))?,
            subject,
            impersonation,
            scopes: scopes.to_vec(),
            client,
            workforce_user_project: text(v, "workforce_pool_user_project"),
        })
    }

    /// For the log: the pool and, when impersonating, the service account.
    pub fn describe(&self) -> String {
        let how = match &self.subject {
            Subject::File { path, .. } => format!("subject token file '{}'", path.display()),
            Subject::Url { url, .. } => format!("subject token from {}", url.url),
        };
        match &self.impersonation {
            Some(i) => format!(
                "external account {} ({how}) impersonating {}",
                self.audience, i.account
            ),
            None => format!("external account {} ({how})", self.audience),
        }
    }

    /// A fresh access token: the `Authorization` value and its lifetime.
    pub fn fetch(&self, retry: &Retry, origin: &str) -> Result<(SecretVec, Duration), StoreError> {
        let subject = self.subject_token(retry, origin)?;
        let (federated, life) = self.exchange(&subject, retry, origin)?;
        match &self.impersonation {
            None => Ok((federated, life)),
            Some(i) => self.impersonate(i, &federated, retry, origin),
        }
    }

    fn subject_token(&self, retry: &Retry, origin: &str) -> Result<SecretVec, StoreError> {
        let fail = |why: String| other(format!("GCP credentials ({origin}): {why}"));
        let (raw, format, what) = match &self.subject {
            Subject::File { path, format } => {
                let what = format!("credential_source.file '{}'", path.display());
                let raw =
                    read_credential_file(path, SUBJECT_TOKEN_BYTES_MAX, &what).map_err(fail)?;
                (raw, format, what)
            }
            Subject::Url {
                url,
                headers,
                format,
            } => {
                let what = format!("credential_source.url {}", url.url);
                let h: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let reply = retrying(retry, retryable_status, || {
                    url.endpoint.send("GET", &url.target, &h, b"")
                })
                .map_err(|e| match e {
                    StoreError::Unreachable(why) => StoreError::Unreachable(format!(
                        "GCP credentials ({origin}): {what}: {why}"
                    )),
                    e => e,
                })?;
                if reply.status != 200 {
                    return Err(fail(format!(
                        "{what} refused the subject token request: status {}",
                        reply.status
                    )));
                }
                if reply.body.len() > SUBJECT_TOKEN_BYTES_MAX {
                    return Err(fail(format!("{what}: the answer is too large")));
                }
                (SecretVec::new(reply.body), format, what)
            }
        };
        let token = match format {
            Format::Text => {
                let t = std::str::from_utf8(raw.expose())
                    .map(str::trim)
                    .unwrap_or("");
                SecretVec::new(t.as_bytes().to_vec())
            }
            Format::Json(field) => {
                // Read in place: simd-json would leave copies of the token behind.
                let [t] = json_secret::members(raw.expose(), [field.as_str()])
                    .map_err(|_| fail(format!("{what}: not JSON")))?;
                let t = t.as_ref().and_then(|t| t.text()).unwrap_or_default();
                let t = std::str::from_utf8(t).map(str::trim).unwrap_or("");
                SecretVec::new(t.as_bytes().to_vec())
            }
        };
        if token.expose().is_empty() {
            return Err(fail(format!("{what}: no subject token in it")));
        }
        Ok(token)
    }

    fn exchange(
        &self,
        subject: &SecretVec,
        retry: &Retry,
        origin: &str,
    ) -> Result<(SecretVec, Duration), StoreError> {
        let scope = match &self.impersonation {
            Some(_) => CLOUD_PLATFORM.to_string(),
            None => self.scopes.join(" "),
        };
        let subject_text = String::from_utf8_lossy(subject.expose());
        let mut form = SecretVec::with_capacity(subject.expose().len() + 512);
        form.as_mut_vec().extend_from_slice(
            format!(
                "grant_type={}&audience={}&scope={}&requested_token_type={}&subject_token_type={}",
                encode("urn:ietf:params:oauth:grant-type:token-exchange"),
                encode(&self.audience),
                encode(&scope),
                encode("urn:ietf:params:oauth:token-type:access_token"),
                encode(&self.subject_token_type),
            )
            .as_bytes(),
        );
        if let (Some(project), None) = (&self.workforce_user_project, &self.client) {
            let mut options = Vec::new();
            let mut w = crate::api::json::JsonWriter::object(&mut options);
            w.string("userProject", project);
            w.finish();
            form.as_mut_vec().extend_from_slice(
                format!("&options={}", encode(&String::from_utf8_lossy(&options))).as_bytes(),
            );
        }
        form.as_mut_vec().extend_from_slice(b"&subject_token=");
        let encoded = SecretVec::new(encode(&subject_text).into_bytes());
        form.as_mut_vec().extend_from_slice(encoded.expose());
        let mut basic = SecretVec::with_capacity(128);
        if let Some((id, secret)) = &self.client {
            let mut pair = SecretVec::with_capacity(id.len() + secret.expose().len() + 1);
            pair.as_mut_vec().extend_from_slice(id.as_bytes());
            pair.as_mut_vec().push(b':');
            pair.as_mut_vec().extend_from_slice(secret.expose());
            basic.as_mut_vec().extend_from_slice(b"Basic ");
            // Encoded straight into the zeroizing buffer.
            let start = basic.expose().len();
            let n = base64::encoded_len(pair.expose().len(), true).unwrap_or(0);
            basic.as_mut_vec().resize(start + n, 0);
            let written = base64::engine::general_purpose::STANDARD
                .encode_slice(pair.expose(), &mut basic.as_mut_vec()[start..])
                .unwrap_or(0);
            basic.as_mut_vec().truncate(start + written);
        }
        let basic_text = String::from_utf8_lossy(basic.expose());
        let mut headers = vec![
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Accept", "application/json"),
        ];
        if !basic.expose().is_empty() {
            headers.push(("Authorization", &basic_text));
        }
        let reply = self.send(&self.sts, &headers, form.expose(), retry, origin, "STS")?;
        let mut secrets: Vec<&[u8]> = vec![subject.expose()];
        if let Some((_, s)) = &self.client {
            secrets.push(s.expose());
        }
        if reply.status != 200 {
            return Err(other(format!(
                "GCP credentials ({origin}): the token exchange at {} failed with {}",
                self.sts.url,
                oauth_error(&reply, &secrets)
            )));
        }
        bearer_token(&reply.body, &format!("GCP STS at {}", self.sts.url))
    }

    fn impersonate(
        &self,
        i: &Impersonation,
        federated: &SecretVec,
        retry: &Retry,
        origin: &str,
    ) -> Result<(SecretVec, Duration), StoreError> {
        let mut body = Vec::new();
        let mut w = crate::api::json::JsonWriter::object(&mut body);
        w.string("lifetime", &format!("{}s", i.lifetime_secs))
            .string_array("scope", self.scopes.iter().map(String::as_str));
        w.finish();
        let auth = std::str::from_utf8(federated.expose())
            .map_err(|_| other("GCP STS: the access token is not text".into()))?;
        let headers = [
            ("Authorization", auth),
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
        ];
        let reply = self.send(&i.url, &headers, &body, retry, origin, "IAM credentials")?;
        if reply.status != 200 {
            return Err(other(format!(
                "GCP credentials ({origin}): impersonating {} failed with {}",
                i.account,
                oauth_error(&reply, &[federated.expose()])
            )));
        }
        // Read in place (simd-json would leave copies of the token in freed buffers).
        let answer = SecretVec::new(reply.body);
        let [token, expire] = json_secret::members(answer.expose(), ["accessToken", "expireTime"])
            .map_err(|_| other(format!("GCP IAM credentials at {}: not JSON", i.url.url)))?;
        let token = token
            .as_ref()
            .and_then(|t| t.text())
            .filter(|t| !t.is_empty() && t.iter().all(u8::is_ascii_graphic))
            .ok_or_else(|| {
                other(format!(
                    "GCP IAM credentials at {}: no usable accessToken in the answer",
                    i.url.url
                ))
            })?;
        let now = crate::time::Timestamp::now().seconds;
        let life = expire
            .as_ref()
            .and_then(|t| std::str::from_utf8(t.text()?).ok())
            .and_then(crate::time::Timestamp::parse_rfc3339)
            .map(|t| t.seconds.saturating_sub(now).max(0) as u64)
            .unwrap_or(300);
        Ok((
            json_secret::header_value(b"Bearer ", token),
            Duration::from_secs(life),
        ))
    }

    fn send(
        &self,
        url: &Url,
        headers: &[(&str, &str)],
        body: &[u8],
        retry: &Retry,
        origin: &str,
        what: &str,
    ) -> Result<Reply, StoreError> {
        retrying(retry, retryable_status, || {
            url.endpoint.send("POST", &url.target, headers, body)
        })
        .map_err(|e| match e {
            StoreError::Unreachable(why) => StoreError::Unreachable(format!(
                "GCP credentials ({origin}): {what} at {}: {why}",
                url.url
            )),
            e => e,
        })
    }
}
