//! AWS Secrets Manager keystore (`keystore.aws.secretsmanager`), stored exactly as upstream
//! KES stores it, so a Secrets Manager that upstream filled works unchanged and back:
//!
//! * one secret per key: `Name` = the key name, `SecretString` = the record text, encrypted
//!   with `KmsKeyId` = `kmskey` when configured (else the account's default key);
//! * read with `GetSecretValue` (`SecretString`, or `SecretBinary` for secrets written that
//!   way), delete with `DeleteSecret` + `ForceDeleteWithoutRecovery` (no recovery window),
//!   list with `ListSecrets` paged by `NextToken`; a delete first looks the secret up with
//!   `DescribeSecret` (or, where IAM denies that, `GetSecretValue`), since a forced delete of
//!   a missing secret succeeds at AWS and the API must answer 404; a secret that cannot be
//!   decrypted or is scheduled for deletion is deleted all the same, as upstream does;
//! * the status probe is a plain `GET` of the endpoint: any HTTP answer means reachable;
//! * reads ask for the `AWSCURRENT` version explicitly (AWS's default; moto's default is the
//!   version last written with `AWSCURRENT`, not the one a stage move made current).
//!
//! `replace` (key rotation) is a compare-and-set ([`ReplaceKind::Atomic`]), built from
//! Secrets Manager's staging labels: read the `AWSCURRENT` value and its `VersionId`,
//! compare, `PutSecretValue` the new `SecretString` as a new version labelled only
//! [`PENDING_STAGE`] (so it is not current yet, and not dropped as unlabelled), then
//! `UpdateSecretVersionStage` moving `AWSCURRENT` to it with `RemoveFromVersionId` = the
//! version read. AWS documents that this move fails when `AWSCURRENT` is no longer on that
//! version ("if the label is attached and … the version ID does not match, then the
//! operation fails"): a node that rotated in between makes ours fail, and that is the
//! `Conflict`. moto 5 checks the same (`InvalidParameterException`). The new version is
//! encrypted with the secret's own KMS key (`PutSecretValue` takes none; `create` set it).
//! IAM must allow `secretsmanager:PutSecretValue` and `secretsmanager:UpdateSecretVersionStage`
//! beside upstream's documented actions. A version whose move lost stays behind with the
//! pending label until the next rotation takes the label (AWS then ages it out).
//!
//! The JSON 1.1 protocol (`X-Amz-Target: secretsmanager.<Op>`) over the shared blocking
//! client ([`super::http`]), signed with our SigV4 ([`super::sigv4`]). Calls are repeated on
//! 5xx, 429 and throttling answers with bounded backoff; `CreateSecret` carries a
//! `ClientRequestToken` (as the AWS SDKs add one) so a repeated create is idempotent.
//!
//! Credentials ([`credentials`]): the config's static `credentials`, else the AWS SDK default
//! chain in the order of upstream's SDK: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`
//! (+ `AWS_SESSION_TOKEN`), web identity (EKS IRSA: `AWS_WEB_IDENTITY_TOKEN_FILE` +
//! `AWS_ROLE_ARN`, traded at STS), the shared credentials file, container credentials (ECS,
//! EKS Pod Identity) and EC2 instance metadata (IMDSv2). Which source applies is decided at
//! start-up without network I/O; temporary credentials are fetched on the first call, cached,
//! and renewed before they expire. A call AWS answers with an expired-token error drops the
//! cached credentials and is made once more with fresh ones. `AWS_CA_BUNDLE` replaces the
//! system CAs for HTTPS to AWS (as the SDKs read it; upstream's config block has no `tls`).

use std::time::{Duration, Instant};

pub mod credentials;

use std::sync::Arc;

use super::http::{other, retrying, Endpoint, Reply, Retry};
use super::sigv4::{self, Credentials};
use super::{KeyStore, ReplaceKind, StoreError};
use crate::config::AwsConfig;
use crate::secret::SecretVec;

/// Connect + read + write timeout of one AWS call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The staging label of a rotation's new version until `AWSCURRENT` is moved to it.
pub const PENDING_STAGE: &str = "KESPENDING";
/// Safety bound on `ListSecrets` pages (100 names each by default).
const LIST_PAGES_MAX: usize = 100_000;

/// The AWS Secrets Manager keystore.
pub struct AwsStore {
    config: AwsConfig,
    endpoint: Endpoint,
    credentials: credentials::Provider,
    retry: Retry,
}

/// A failed call: AWS's error code (`ResourceNotFoundException`, …) and message.
struct AwsError {
    status: u16,
    code: String,
    message: String,
}

impl AwsStore {
    /// `env` reads environment variables (the process environment in production). No
    /// network I/O: temporary credentials are fetched by the first call.
    pub fn new(
        config: AwsConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AwsStore, String> {
        let tls = credentials::tls_files(env)?;
        let endpoint = Endpoint::parse(
            "AWS Secrets Manager",
            "keystore.aws.secretsmanager.endpoint",
            &config.endpoint,
            &tls,
            CALL_TIMEOUT,
        )?;
        let credentials = credentials::Provider::new(&config, env, &tls)?;
        Ok(AwsStore {
            config,
            endpoint,
            credentials,
            retry: Retry::DEFAULT,
        })
    }

    /// Where the credentials come from ("web identity", "the config's credentials", …).
    pub fn credentials_source(&self) -> &'static str {
        self.credentials.source()
    }

    /// One signed JSON 1.1 call of `op` with `credentials`, repeated on 5xx/429/throttling.
    fn call(&self, op: &str, body: &[u8], credentials: &Credentials) -> Result<Reply, StoreError> {
        let target = format!("secretsmanager.{op}");
        let host = self.endpoint.host_header();
        let payload_hash = sigv4::sha256_hex(body);
        retrying(&self.retry, throttled, || {
            let date = sigv4::amz_date_now();
            let mut headers: Vec<(&str, &str)> = vec![
                ("Content-Type", "application/x-amz-json-1.1"),
                ("Host", &host),
                ("X-Amz-Date", &date),
                ("X-Amz-Target", &target),
            ];
            if let Some(token) = credentials.session_token() {
                headers.push(("X-Amz-Security-Token", token));
            }
            let auth = sigv4::authorization(
                "POST",
                "/",
                "",
                &headers,
                &payload_hash,
                credentials,
                &self.config.region,
                "secretsmanager",
                &date,
            );
            headers.retain(|(n, _)| *n != "Host"); // the client sends Host itself
            headers.push(("Authorization", &auth));
            self.endpoint.send("POST", "/", &headers, body)
        })
    }

    /// `call` with the current credentials, a non-200 answer turned into an [`AwsError`].
    /// Temporary credentials AWS calls expired are dropped and the call is made once more
    /// with new ones.
    fn json_call(&self, op: &str, body: &[u8]) -> Result<Result<Reply, AwsError>, StoreError> {
        let mut credentials: Arc<Credentials> = self.credentials.credentials()?;
        let mut renewed = false;
        loop {
            let reply = self.call(op, body, &credentials)?;
            if reply.status == 200 {
                return Ok(Ok(reply));
            }
            let e = aws_error(&reply);
            if renewed || !self.credentials.is_temporary() || !expired_token(&e.code) {
                return Ok(Err(e));
            }
            self.credentials.invalidate(&credentials);
            credentials = self.credentials.credentials()?;
            renewed = true;
        }
    }
}

/// 5xx, 429, and AWS's 400 throttling answers.
fn throttled(reply: &Reply) -> bool {
    if super::http::retryable_status(reply) {
        return true;
    }
    reply.status == 400 && {
        let code = aws_error(reply).code;
        matches!(
            code.as_str(),
            "ThrottlingException"
                | "Throttling"
                | "TooManyRequestsException"
                | "RequestLimitExceeded"
        )
    }
}

/// The error codes of a call signed with expired temporary credentials.
fn expired_token(code: &str) -> bool {
    matches!(code, "ExpiredTokenException" | "ExpiredToken")
}

/// The error codes of a call that IAM does not allow (Secrets Manager's JSON code; the XML
/// one of IAM's own answer, as moto gives it).
fn access_denied(code: &str) -> bool {
    matches!(code, "AccessDeniedException" | "AccessDenied")
}

/// AWS's error code and message from a JSON (`__type`, `message`) or XML (`<Code>`) body.
fn aws_error(reply: &Reply) -> AwsError {
    let text = String::from_utf8_lossy(&reply.body);
    let mut body = reply.body.clone();
    let (mut code, mut message) = (String::new(), String::new());
    if let Ok(v) = simd_json::to_owned_value(&mut body) {
        use simd_json::prelude::*;
        if let Some(t) = v.get("__type").and_then(|t| t.as_str()) {
            code = t.rsplit('#').next().unwrap_or(t).to_string();
        }
        if let Some(m) = v
            .get("message")
            .or_else(|| v.get("Message"))
            .and_then(|m| m.as_str())
        {
            message = m.to_string();
        }
    } else {
        let tag = |name: &str| -> String {
            let open = format!("<{name}>");
            text.find(&open)
                .and_then(|i| {
                    let rest = &text[i + open.len()..];
                    rest.find('<').map(|j| rest[..j].to_string())
                })
                .unwrap_or_default()
        };
        code = tag("Code");
        message = tag("Message");
    }
    AwsError {
        status: reply.status,
        code,
        message: message.chars().take(200).collect(),
    }
}

impl AwsError {
    /// For logs: never carries a credential (AWS does not echo them) nor a stored value.
    fn into_store(self, op: &str) -> StoreError {
        other(format!(
            "AWS Secrets Manager {op} failed with status {}: {} {}",
            self.status, self.code, self.message
        ))
    }
}

/// A version-4 UUID (the shape AWS wants for `ClientRequestToken`).
fn request_token() -> String {
    let mut b = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn json(pairs: &[(&str, &str)], force_delete: bool) -> SecretVec {
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
    if force_delete {
        w.bool("ForceDeleteWithoutRecovery", true);
    }
    w.finish();
    out
}

impl AwsStore {
    /// Whether a secret named `name` exists, scheduled for deletion or not. `DescribeSecret`
    /// reads metadata only (no KMS); where the IAM policy does not grant it (upstream's
    /// documented policy grants only Create/Get/Delete/ListSecrets), `GetSecretValue` decides,
    /// and any answer but "not found" (it cannot be decrypted, it is scheduled for deletion)
    /// means the secret is there.
    fn exists(&self, name: &str) -> Result<bool, StoreError> {
        let id = json(&[("SecretId", name)], false);
        match self.json_call("DescribeSecret", id.expose())? {
            Ok(_) => return Ok(true),
            Err(e) if e.code == "ResourceNotFoundException" => return Ok(false),
            Err(e) if access_denied(&e.code) => {}
            Err(_) => return Ok(true),
        }
        match self.json_call("GetSecretValue", id.expose())? {
            Ok(reply) => {
                drop(SecretVec::new(reply.body)); // the value, wiped unread
                Ok(true)
            }
            Err(e) => Ok(e.code != "ResourceNotFoundException"),
        }
    }
}

impl AwsStore {
    /// The `AWSCURRENT` value of `name` and its `VersionId`.
    fn read_current(&self, name: &str) -> Result<(SecretVec, String), StoreError> {
        let request = json(&[("SecretId", name), ("VersionStage", "AWSCURRENT")], false);
        let reply = match self.json_call("GetSecretValue", request.expose())? {
            Ok(r) => r,
            Err(e) if e.code == "ResourceNotFoundException" => return Err(StoreError::NotFound),
            Err(e) => return Err(e.into_store("GetSecretValue")),
        };
        let mut body = SecretVec::new(reply.body);
        let v = simd_json::to_owned_value(body.as_mut_vec())
            .map_err(|_| other("AWS Secrets Manager GetSecretValue: invalid JSON".into()))?;
        use simd_json::prelude::*;
        let version = v
            .get("VersionId")
            .and_then(|s| s.as_str())
            .unwrap_or_default()
            .to_string();
        if let Some(s) = v.get("SecretString").and_then(|s| s.as_str()) {
            return Ok((SecretVec::new(s.as_bytes().to_vec()), version));
        }
        if let Some(b) = v.get("SecretBinary").and_then(|s| s.as_str()) {
            use base64::Engine;
            let mut out = SecretVec::with_capacity(b.len());
            base64::engine::general_purpose::STANDARD
                .decode_vec(b, out.as_mut_vec())
                .map_err(|_| other("AWS Secrets Manager: SecretBinary is not base64".into()))?;
            return Ok((out, version));
        }
        Err(other(
            "AWS Secrets Manager GetSecretValue: neither SecretString nor SecretBinary".into(),
        ))
    }

    /// `UpdateSecretVersionStage` of `stage`: onto `to`, off `from` (either may be absent).
    fn move_stage(
        &self,
        name: &str,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<Result<(), AwsError>, StoreError> {
        let mut pairs = vec![("SecretId", name), ("VersionStage", stage)];
        if let Some(to) = to {
            pairs.push(("MoveToVersionId", to));
        }
        if let Some(from) = from {
            pairs.push(("RemoveFromVersionId", from));
        }
        Ok(self
            .json_call("UpdateSecretVersionStage", json(&pairs, false).expose())?
            .map(drop))
    }
}

/// `PutSecretValue`'s body: the new version `token` of `name`, labelled [`PENDING_STAGE`].
fn put_pending(name: &str, value: &str, token: &str) -> SecretVec {
    // Sized for the worst escaping (`\u00XX`): growing would leave a copy behind.
    let mut out = SecretVec::with_capacity(6 * (name.len() + value.len()) + token.len() + 160);
    let mut w = crate::api::json::JsonWriter::object(out.as_mut_vec());
    w.string("SecretId", name)
        .string("ClientRequestToken", token)
        .string("SecretString", value)
        .string_array("VersionStages", [PENDING_STAGE]);
    w.finish();
    out
}

impl KeyStore for AwsStore {
    fn display_name(&self) -> String {
        format!("AWS SecretsManager: {}", self.config.endpoint)
    }

    fn status(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        self.endpoint.send("GET", "/", &[], b"")?;
        Ok(start.elapsed())
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let value =
            std::str::from_utf8(value).map_err(|_| other("key record is not text".into()))?;
        let token = request_token();
        let mut pairs = vec![
            ("Name", name),
            ("SecretString", value),
            ("ClientRequestToken", token.as_str()),
        ];
        if !self.config.kms_key.is_empty() {
            pairs.push(("KmsKeyId", self.config.kms_key.as_str()));
        }
        match self.json_call("CreateSecret", json(&pairs, false).expose())? {
            Ok(_) => Ok(()),
            Err(e) if e.code == "ResourceExistsException" => Err(StoreError::AlreadyExists),
            Err(e) => Err(e.into_store("CreateSecret")),
        }
    }

    fn get(&self, name: &str) -> Result<SecretVec, StoreError> {
        self.read_current(name).map(|(value, _)| value)
    }

    fn replace(&self, name: &str, old: &[u8], new: &[u8]) -> Result<(), StoreError> {
        let new = std::str::from_utf8(new).map_err(|_| other("key record is not text".into()))?;
        let (current, version) = self.read_current(name)?;
        if current.expose() != old {
            return Err(StoreError::Conflict);
        }
        drop(current);
        if version.is_empty() {
            return Err(other(
                "AWS Secrets Manager GetSecretValue: no VersionId in the answer".into(),
            ));
        }
        // A new token per replace: the request is idempotent when `call` repeats it.
        let token = request_token();
        match self.json_call("PutSecretValue", put_pending(name, new, &token).expose())? {
            Ok(reply) => drop(SecretVec::new(reply.body)),
            Err(e) if e.code == "ResourceNotFoundException" => return Err(StoreError::NotFound),
            Err(e) => return Err(e.into_store("PutSecretValue")),
        }
        match self.move_stage(name, "AWSCURRENT", Some(&token), Some(&version))? {
            Ok(()) => {}
            Err(e) if e.code == "ResourceNotFoundException" => return Err(StoreError::NotFound),
            Err(e) => {
                // Refused: either another node moved AWSCURRENT first (a conflict), or our
                // own move went through on an attempt whose answer was lost (`call` repeats
                // on 5xx), or it failed for its own reason. The current version tells.
                let (_, now) = self.read_current(name)?;
                if now == version {
                    return Err(e.into_store("UpdateSecretVersionStage"));
                }
                if now != token {
                    return Err(StoreError::Conflict);
                }
            }
        }
        // Tidy only: the current version keeps just AWSCURRENT (and AWSPREVIOUS moves on).
        let _ = self.move_stage(name, PENDING_STAGE, None, Some(&token));
        Ok(())
    }

    fn replace_kind(&self) -> ReplaceKind {
        ReplaceKind::Atomic
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        // A forced DeleteSecret of a missing secret succeeds at AWS (and moto): look first
        // for the 404 the API owes, without reading the value, so that a secret that cannot
        // be decrypted or is scheduled for deletion is deleted all the same, as upstream does.
        if !self.exists(name)? {
            return Err(StoreError::NotFound);
        }
        match self.json_call("DeleteSecret", json(&[("SecretId", name)], true).expose())? {
            Ok(_) => Ok(()),
            Err(e) if e.code == "ResourceNotFoundException" => Err(StoreError::NotFound),
            Err(e) => Err(e.into_store("DeleteSecret")),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..LIST_PAGES_MAX {
            let body = match &next {
                None => SecretVec::new(b"{}".to_vec()),
                Some(t) => json(&[("NextToken", t)], false),
            };
            let reply = self
                .json_call("ListSecrets", body.expose())?
                .map_err(|e| e.into_store("ListSecrets"))?;
            let mut body = reply.body;
            let v = simd_json::to_owned_value(&mut body)
                .map_err(|_| other("AWS Secrets Manager ListSecrets: invalid JSON".into()))?;
            use simd_json::prelude::*;
            if let Some(list) = v.get("SecretList").and_then(|l| l.as_array()) {
                names.extend(
                    list.iter()
                        .filter_map(|s| s.get("Name").and_then(|n| n.as_str()))
                        .filter(|n| n.starts_with(prefix))
                        .map(str::to_string),
                );
            }
            next = v
                .get("NextToken")
                .and_then(|t| t.as_str())
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if next.is_none() {
                names.sort();
                names.dedup();
                return Ok(names);
            }
        }
        Err(other(
            "AWS Secrets Manager ListSecrets: too many pages".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_in_json_and_xml() {
        let e = aws_error(&Reply {
            status: 400,
            headers: Vec::new(),
            body: br#"{"__type":"com.amazonaws.secretsmanager#ResourceNotFoundException","message":"Secrets Manager can't find the specified secret."}"#.to_vec(),
        });
        assert_eq!(e.code, "ResourceNotFoundException");
        assert!(e.message.contains("can't find"));
        let e = aws_error(&Reply {
            status: 403,
            headers: Vec::new(),
            body: b"<ErrorResponse><Errors><Error><Code>SignatureDoesNotMatch</Code><Message>no</Message></Error></Errors></ErrorResponse>".to_vec(),
        });
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("SignatureDoesNotMatch", "no")
        );
        assert!(throttled(&Reply {
            status: 400,
            headers: Vec::new(),
            body: br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_vec()
        }));
        assert!(!throttled(&Reply {
            status: 400,
            headers: Vec::new(),
            body: br#"{"__type":"ResourceExistsException"}"#.to_vec()
        }));
    }

    #[test]
    fn request_tokens_are_uuids() {
        let t = request_token();
        assert_eq!(t.len(), 36);
        assert_eq!(&t[14..15], "4");
        assert_ne!(t, request_token());
    }
}
