//! The AWS credential chain of the Secrets Manager keystore, in the order of the AWS SDK for
//! Go that upstream KES is built on (aws-sdk-go v1 `session.NewSessionWithOptions`, which
//! current SDKs for Go, Java and Python follow too):
//!
//! 1. the config's static `credentials`;
//! 2. `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`);
//! 3. web identity (EKS IRSA): `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`
//!    (+ `AWS_ROLE_SESSION_NAME`), traded at STS with `AssumeRoleWithWebIdentity` (an unsigned
//!    Query API call); the token file is read again for every renewal (the kubelet rotates it);
//! 4. the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`,
//!    profile `AWS_PROFILE` or `default`);
//! 5. container credentials (ECS task roles, EKS Pod Identity):
//!    `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (on `http://169.254.170.2`) or
//!    `AWS_CONTAINER_CREDENTIALS_FULL_URI` (`https://` anywhere; `http://` only to loopback,
//!    169.254.170.2, 169.254.170.23 or fd00:ec2::23), with `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`
//!    (read for every fetch) or `AWS_CONTAINER_AUTHORIZATION_TOKEN` as `Authorization`;
//! 6. EC2 instance metadata, IMDSv2 only (a `PUT` session token first), on
//!    `http://169.254.169.254` or `AWS_EC2_METADATA_SERVICE_ENDPOINT`
//!    (`AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6`: `http://[fd00:ec2::254]`), unless
//!    `AWS_EC2_METADATA_DISABLED=true`. 1 s timeouts, so a host off EC2 fails fast.
//!
//! The first source that is *configured* is used: which one is decided at start-up from the
//! environment and files alone, without network I/O (a token file named but unreadable, or a
//! container URL on a host the SDKs refuse, stops the start with a clear error). Sources 3, 5
//! and 6 hand out temporary credentials: they are fetched on the first keystore call (on the
//! blocking pool, like every keystore call), cached in a [`Renewing`] and renewed 5 minutes
//! before their `Expiration` (at half their lifetime when that is shorter). A renewal that
//! fails while the old credentials are still valid keeps them (and logs why); once they have
//! expired, calls fail with the reason until a renewal succeeds. Failed renewals are not
//! repeated for [`FAILED_RENEWAL_HOLD`]. Errors and log lines never carry a credential or token.
//!
//! STS is `AWS_ENDPOINT_URL_STS`, else `AWS_ENDPOINT_URL` (unless
//! `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`), else `https://sts.<region>.amazonaws.com`
//! (`AWS_STS_REGIONAL_ENDPOINTS=legacy`: the global `https://sts.amazonaws.com` for the regions
//! that had it). `AWS_CA_BUNDLE` (a PEM file, as the SDKs read it) replaces the system CAs for
//! every HTTPS call to AWS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::http::{other, retryable_status, retrying, Endpoint, Reply, Retry, TlsFiles};
use super::super::json_secret;
use super::super::session::{self, Fresh, Renewing};
use super::super::sigv4::Credentials;
use super::super::token_file::{read_capped, read_token_file};
use super::super::StoreError;
use crate::config::AwsConfig;
use crate::secret::SecretVec;
use crate::time::Timestamp;

/// Connect/read/write timeout of an STS call.
pub const STS_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect/read/write timeout of a container credentials call (a local agent).
pub const CONTAINER_TIMEOUT: Duration = Duration::from_secs(2);
/// Connect/read/write timeout of an instance metadata call: off EC2 this fails fast.
pub const IMDS_TIMEOUT: Duration = Duration::from_secs(1);
/// Temporary credentials are renewed this long before they expire (or at half their
/// lifetime, when that is sooner).
pub const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// Credentials without an `Expiration` (container credentials may omit it) are fetched again
/// after this long; until then, and while fetching fails, they are used.
pub const NO_EXPIRY_RENEW_AFTER: Duration = Duration::from_secs(60 * 60);
/// After a failed renewal, no new attempt for this long (callers get the same outcome).
pub const FAILED_RENEWAL_HOLD: Duration = Duration::from_secs(2);
/// Largest shared credentials file read.
pub const SHARED_FILE_BYTES_MAX: u64 = 1 << 20;
/// Lifetime asked for an IMDSv2 session token (the maximum, 6 hours).
const IMDS_TOKEN_TTL_SECONDS: &str = "21600";
/// Longest IMDSv2 session token accepted (they are about 56 bytes).
const IMDS_TOKEN_BYTES_MAX: usize = 1024;
const CONTAINER_HOST: &str = "http://169.254.170.2";
const IMDS_ENDPOINT: &str = "http://169.254.169.254";
const IMDS_ENDPOINT_IPV6: &str = "http://[fd00:ec2::254]";
/// Regions whose STS endpoint was the global one before regional endpoints became the default
/// (`AWS_STS_REGIONAL_ENDPOINTS=legacy` still sends them there).
const STS_LEGACY_GLOBAL_REGIONS: &[&str] = &[
    "ap-northeast-1",
    "ap-south-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "aws-global",
    "ca-central-1",
    "eu-central-1",
    "eu-north-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
];

/// Where the keystore's credentials come from, and the cache of temporary ones.
pub struct Provider {
    kind: Kind,
}

enum Kind {
    Static {
        source: &'static str,
        credentials: Arc<Credentials>,
    },
    Temporary {
        source: Box<Source>,
        cache: Renewing<Arc<Credentials>>,
    },
}

enum Source {
    WebIdentity(WebIdentity),
    Container(Container),
    InstanceMetadata(InstanceMetadata),
}

struct WebIdentity {
    token_file: PathBuf,
    role_arn: String,
    session_name: String,
    sts: Endpoint,
    sts_url: String,
    sts_path: String,
}

struct Container {
    endpoint: Endpoint,
    /// Path and query of the credentials URL.
    path: String,
    url: String,
    /// `Some`: the host must still resolve to allowed addresses only (plain HTTP).
    check_host: Option<(String, u16)>,
    authorization: ContainerAuth,
}

enum ContainerAuth {
    None,
    Token(SecretVec),
    File(PathBuf),
}

struct InstanceMetadata {
    endpoint: Endpoint,
    base: String,
    url: String,
    /// The sources found unset before this one, for the error when it fails too.
    tried: String,
}

/// The `TlsFiles` of every HTTPS call to AWS: `AWS_CA_BUNDLE` as the only trusted CAs when
/// set, else the system CAs.
pub fn tls_files(env: &dyn Fn(&str) -> Option<String>) -> Result<TlsFiles, String> {
    let Some(bundle) = env("AWS_CA_BUNDLE").filter(|v| !v.is_empty()) else {
        return Ok(TlsFiles::default());
    };
    std::fs::metadata(&bundle)
        .map_err(|e| format!("keystore.aws.secretsmanager: AWS_CA_BUNDLE '{bundle}': {e}"))?;
    Ok(TlsFiles {
        ca: Some(PathBuf::from(bundle)),
        ..TlsFiles::default()
    })
}

impl Provider {
    /// Picks the first configured source of the chain (see the module description); no
    /// network I/O. `env` reads environment variables.
    pub fn new(
        config: &AwsConfig,
        env: &dyn Fn(&str) -> Option<String>,
        tls: &TlsFiles,
    ) -> Result<Provider, String> {
        let var = |n: &str| env(n).filter(|v| !v.is_empty());
        let fail = |msg: String| format!("keystore.aws.secretsmanager: {msg}");
        let fixed = |source, credentials| {
            Ok(Provider {
                kind: Kind::Static {
                    source,
                    credentials: Arc::new(credentials),
                },
            })
        };
        let temporary = |source| {
            Ok(Provider {
                kind: Kind::Temporary {
                    source: Box::new(source),
                    cache: Renewing::default(),
                },
            })
        };
        let mut tried: Vec<String> = Vec::new();

        // 1. The config.
        if let Some(c) = &config.credentials {
            return fixed(
                "the config's credentials",
                Credentials {
                    access_key: c.access_key.clone(),
                    secret_key: SecretVec::new(c.secret_key.expose().as_bytes().to_vec()),
                    session_token: SecretVec::new(c.session_token.expose().as_bytes().to_vec()),
                },
            );
        }
        tried.push("credentials.accesskey/secretkey in the config (not set)".into());

        // 2. Environment variables.
        match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key), Some(secret_key)) => {
                return fixed(
                    "AWS_ACCESS_KEY_ID",
                    Credentials {
                        access_key,
                        secret_key: SecretVec::new(secret_key.into_bytes()),
                        session_token: SecretVec::new(
                            var("AWS_SESSION_TOKEN").unwrap_or_default().into_bytes(),
                        ),
                    },
                )
            }
            (None, None) => {
                tried.push("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (not set)".into())
            }
            (Some(_), None) => tried.push(
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (AWS_SECRET_ACCESS_KEY not set)"
                    .into(),
            ),
            (None, Some(_)) => tried.push(
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (AWS_ACCESS_KEY_ID not set)".into(),
            ),
        }

        // 3. Web identity.
        if let Some(token_file) = var("AWS_WEB_IDENTITY_TOKEN_FILE") {
            let role_arn = var("AWS_ROLE_ARN").ok_or_else(|| {
                fail("AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not".into())
            })?;
            let token_file = PathBuf::from(token_file);
            read_token_file(&token_file)
                .map_err(|e| fail(format!("AWS_WEB_IDENTITY_TOKEN_FILE: {e}")))?;
            let session_name = var("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| {
                let ms = Timestamp::now().seconds.saturating_mul(1000);
                format!("kes-{ms}")
            });
            let sts_url = sts_url(&config.region, &var).map_err(fail)?;
            let sts = Endpoint::parse("AWS STS", "the STS endpoint", &sts_url, tls, STS_TIMEOUT)
                .map_err(fail)?;
            let sts_path = format!("{}/", session::base_path(&sts_url));
            return temporary(Source::WebIdentity(WebIdentity {
                token_file,
                role_arn,
                session_name,
                sts,
                sts_url,
                sts_path,
            }));
        }
        tried.push("web identity: AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN (not set)".into());

        // 4. The shared credentials file.
        let profile = var("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let file = var("AWS_SHARED_CREDENTIALS_FILE")
            .or_else(|| var("HOME").map(|h| format!("{h}/.aws/credentials")));
        match &file {
            None => tried.push(
                "the shared credentials file (neither AWS_SHARED_CREDENTIALS_FILE nor HOME set)"
                    .into(),
            ),
            Some(file) => match read_capped(Path::new(file), SHARED_FILE_BYTES_MAX) {
                Ok(text) => {
                    // Read in place: a copy of the file (its secrets) would not be wiped.
                    let Ok(text) = std::str::from_utf8(text.expose()) else {
                        return Err(fail(format!(
                            "the shared credentials file '{file}' is not UTF-8"
                        )));
                    };
                    if let Some(c) = shared_file_profile(text, &profile) {
                        return fixed("the shared credentials file", c);
                    }
                    tried.push(format!(
                        "the shared credentials file '{file}' (no profile '{profile}' with \
                         aws_access_key_id and aws_secret_access_key)"
                    ));
                }
                Err(e) => tried.push(format!("the shared credentials file '{file}' ({e})")),
            },
        }

        // 5. Container credentials.
        let container = if let Some(relative) = var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
            let sep = if relative.starts_with('/') { "" } else { "/" };
            Some(format!("{CONTAINER_HOST}{sep}{relative}"))
        } else {
            var("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        };
        if let Some(url) = container {
            let c = Container::new(&url, &var, tls).map_err(fail)?;
            return temporary(Source::Container(c));
        }
        tried.push(
            "container credentials: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or \
             AWS_CONTAINER_CREDENTIALS_FULL_URI (not set)"
                .into(),
        );

        // 6. EC2 instance metadata.
        if var("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            tried.push("EC2 instance metadata (disabled by AWS_EC2_METADATA_DISABLED)".into());
            return Err(fail(format!(
                "no AWS credentials; tried, in order: {}",
                tried.join("; ")
            )));
        }
        let url = match var("AWS_EC2_METADATA_SERVICE_ENDPOINT") {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => match var("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE") {
                Some(m) if m.eq_ignore_ascii_case("ipv6") => IMDS_ENDPOINT_IPV6.into(),
                Some(m) if m.eq_ignore_ascii_case("ipv4") => IMDS_ENDPOINT.into(),
                Some(m) => {
                    return Err(fail(format!(
                        "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE '{m}': expected IPv4 or IPv6"
                    )))
                }
                None => IMDS_ENDPOINT.into(),
            },
        };
        let endpoint = Endpoint::parse(
            "EC2 instance metadata",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            &url,
            tls,
            IMDS_TIMEOUT,
        )
        .map_err(fail)?;
        temporary(Source::InstanceMetadata(InstanceMetadata {
            endpoint,
            base: session::base_path(&url),
            url,
            tried: tried.join("; "),
        }))
    }

    /// Where the credentials come from, for logs and tests ("web identity", …).
    pub fn source(&self) -> &'static str {
        match &self.kind {
            Kind::Static { source, .. } => source,
            Kind::Temporary { source, .. } => source.name(),
        }
    }

    /// Whether the credentials are temporary (fetched, cached and renewed).
    pub fn is_temporary(&self) -> bool {
        matches!(self.kind, Kind::Temporary { .. })
    }

    /// The credentials to sign a call with; temporary ones are fetched or renewed first when
    /// due. Blocks on network I/O then: call only from the blocking pool.
    pub fn credentials(&self) -> Result<Arc<Credentials>, StoreError> {
        match &self.kind {
            Kind::Static { credentials, .. } => Ok(credentials.clone()),
            Kind::Temporary { source, cache } => {
                cache.get(Instant::now(), FAILED_RENEWAL_HOLD, || {
                    match source.fetch() {
                        Ok((credentials, expiration)) => Ok(fresh(
                            Arc::new(credentials),
                            expiration,
                            Instant::now(),
                            Timestamp::now(),
                        )),
                        Err(e) => {
                            // Keystore errors reach the client only as "failed to … key":
                            // the operator needs the reason here. It never holds a secret.
                            eprintln!(
                                "kes: keystore.aws.secretsmanager: fetching credentials from {} \
                                 failed: {}",
                                source.name(),
                                reason(&e)
                            );
                            Err(e)
                        }
                    }
                })
            }
        }
    }

    /// Drops `stale` (credentials AWS answered "expired token" to), so the next call fetches
    /// new ones; static credentials stay.
    pub fn invalidate(&self, stale: &Arc<Credentials>) {
        if let Kind::Temporary { cache, .. } = &self.kind {
            cache.invalidate(|c| Arc::ptr_eq(c, stale));
        }
    }
}

/// The cache entry for credentials that expire at `expiration` (wall clock), fetched at `now`
/// (`wall_now` on the wall clock).
fn fresh(
    credentials: Arc<Credentials>,
    expiration: Option<Timestamp>,
    now: Instant,
    wall_now: Timestamp,
) -> Fresh<Arc<Credentials>> {
    let Some(expiration) = expiration else {
        return Fresh {
            value: credentials,
            renew_at: now + NO_EXPIRY_RENEW_AFTER,
            valid_until: now
                .checked_add(Duration::from_secs(100 * 365 * 86_400))
                .unwrap_or(now + NO_EXPIRY_RENEW_AFTER),
        };
    };
    let remaining_ns = (i128::from(expiration.seconds) - i128::from(wall_now.seconds))
        * 1_000_000_000
        + (i128::from(expiration.nanos) - i128::from(wall_now.nanos));
    let remaining = Duration::from_nanos(remaining_ns.clamp(0, i128::from(u64::MAX)) as u64);
    let valid_until = now + remaining;
    Fresh {
        value: credentials,
        renew_at: valid_until - RENEW_BEFORE_EXPIRY.min(remaining / 2),
        valid_until,
    }
}

impl Source {
    fn name(&self) -> &'static str {
        match self {
            Source::WebIdentity(_) => "web identity",
            Source::Container(_) => "container credentials",
            Source::InstanceMetadata(_) => "EC2 instance metadata",
        }
    }

    fn fetch(&self) -> Result<(Credentials, Option<Timestamp>), StoreError> {
        match self {
            Source::WebIdentity(w) => w.fetch(),
            Source::Container(c) => c.fetch(),
            Source::InstanceMetadata(m) => m.fetch(),
        }
    }
}

/// The STS endpoint URL for `region` (see the module description).
fn sts_url(region: &str, var: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let ignore_env =
        var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !ignore_env {
        if let Some(url) = var("AWS_ENDPOINT_URL_STS").or_else(|| var("AWS_ENDPOINT_URL")) {
            return Ok(url.trim_end_matches('/').to_string());
        }
    }
    let legacy = match var("AWS_STS_REGIONAL_ENDPOINTS") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("regional") => false,
        Some(v) if v.eq_ignore_ascii_case("legacy") => true,
        Some(v) => {
            return Err(format!(
                "AWS_STS_REGIONAL_ENDPOINTS '{v}': expected regional or legacy"
            ))
        }
    };
    if legacy && STS_LEGACY_GLOBAL_REGIONS.contains(&region) {
        return Ok("https://sts.amazonaws.com".into());
    }
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    Ok(format!("https://sts.{region}.{domain}"))
}

impl WebIdentity {
    fn fetch(&self) -> Result<(Credentials, Option<Timestamp>), StoreError> {
        let fail = |msg: String| {
            other(format!(
                "web identity: STS AssumeRoleWithWebIdentity at {}: {msg}",
                self.sts_url
            ))
        };
        let token = read_token_file(&self.token_file)
            .map_err(|e| other(format!("web identity: AWS_WEB_IDENTITY_TOKEN_FILE: {e}")))?;
        // Borrowed, for redaction only; the token is encoded straight into the wiped form,
        // sized once (a plain copy or a grown buffer would leave it behind).
        let token_text = std::str::from_utf8(token.expose()).unwrap_or_default();
        let role_arn = session::encode(&self.role_arn);
        let session_name = session::encode(&self.session_name);
        let mut body = SecretVec::with_capacity(
            128 + role_arn.len() + session_name.len() + 3 * token.expose().len(),
        );
        {
            let b = body.as_mut_vec();
            b.extend_from_slice(b"Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=");
            b.extend_from_slice(role_arn.as_bytes());
            b.extend_from_slice(b"&RoleSessionName=");
            b.extend_from_slice(session_name.as_bytes());
            b.extend_from_slice(b"&WebIdentityToken=");
        }
        session::encode_into(&mut body, token.expose());
        let reply = retrying(&Retry::DEFAULT, sts_retryable, || {
            self.sts.send(
                "POST",
                &self.sts_path,
                &[(
                    "Content-Type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                )],
                body.expose(),
            )
        })
        .map_err(|e| fail(reason(&e)))?;
        if reply.status != 200 {
            let e = super::aws_error(&reply);
            let message = redact(&e.message, &[token_text]);
            return Err(fail(format!(
                "status {}: {} {message}",
                reply.status, e.code
            )));
        }
        let body = SecretVec::new(reply.body);
        let text = std::str::from_utf8(body.expose())
            .map_err(|_| fail("the answer is not UTF-8".into()))?;
        let inner = xml_element(text, "Credentials")
            .ok_or_else(|| fail("no Credentials in the answer".into()))?;
        let field = |name: &str| {
            xml_element(inner, name)
                .map(xml_unescape)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| fail(format!("no {name} in the answer")))
        };
        let credentials = Credentials {
            access_key: field("AccessKeyId")?,
            // `xml_unescape` sizes its string once (unescaping only shortens it): no copy is
            // left behind.
            secret_key: SecretVec::new(field("SecretAccessKey")?.into_bytes()),
            session_token: SecretVec::new(field("SessionToken")?.into_bytes()),
        };
        let expiration = field("Expiration")?;
        let expiration = Timestamp::parse_rfc3339(&expiration)
            .ok_or_else(|| fail(format!("Expiration '{expiration}' is not RFC 3339")))?;
        Ok((credentials, Some(expiration)))
    }
}

/// 5xx, 429, throttling, and STS's `IDPCommunicationError` (the identity provider did not
/// answer STS in time; the SDKs repeat it).
fn sts_retryable(reply: &Reply) -> bool {
    if retryable_status(reply) {
        return true;
    }
    reply.status == 400 && {
        let code = super::aws_error(reply).code;
        matches!(
            code.as_str(),
            "Throttling" | "ThrottlingException" | "IDPCommunicationError"
        )
    }
}

impl Container {
    fn new(
        url: &str,
        var: &dyn Fn(&str) -> Option<String>,
        tls: &TlsFiles,
    ) -> Result<Container, String> {
        let field = "AWS_CONTAINER_CREDENTIALS_FULL_URI";
        let plain = url.starts_with("http://");
        if !plain && !url.starts_with("https://") {
            return Err(format!(
                "{field} '{url}': expected an http:// or https:// URL"
            ));
        }
        let endpoint =
            Endpoint::parse("container credentials", field, url, tls, CONTAINER_TIMEOUT)?;
        let check_host = if plain {
            let host = endpoint.host().to_string();
            let port = url_port(url).unwrap_or(80);
            allowed_container_host(&host, port).map_err(|e| format!("{field}: {e}"))?;
            Some((host, port))
        } else {
            None
        };
        let authorization = if let Some(file) = var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
            ContainerAuth::File(PathBuf::from(file))
        } else if let Some(token) = var("AWS_CONTAINER_AUTHORIZATION_TOKEN") {
            check_header_value(token.as_bytes())
                .map_err(|e| format!("AWS_CONTAINER_AUTHORIZATION_TOKEN: {e}"))?;
            ContainerAuth::Token(SecretVec::new(token.into_bytes()))
        } else {
            ContainerAuth::None
        };
        Ok(Container {
            endpoint,
            path: path_and_query(url),
            url: url.to_string(),
            check_host,
            authorization,
        })
    }

    fn fetch(&self) -> Result<(Credentials, Option<Timestamp>), StoreError> {
        let fail = |msg: String| other(format!("container credentials at {}: {msg}", self.url));
        if let Some((host, port)) = &self.check_host {
            // The name may resolve elsewhere by now.
            allowed_container_host(host, *port).map_err(fail)?;
        }
        let token = match &self.authorization {
            ContainerAuth::None => None,
            ContainerAuth::Token(t) => Some(t.clone()),
            ContainerAuth::File(path) => {
                let t = read_token_file(path).map_err(|e| {
                    other(format!(
                        "container credentials: AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: {e}"
                    ))
                })?;
                check_header_value(t.expose()).map_err(|e| {
                    other(format!(
                        "container credentials: AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: {e}"
                    ))
                })?;
                Some(t)
            }
        };
        // Borrowed from the wiped buffer, not copied.
        let token_text = match &token {
            None => None,
            Some(t) => Some(
                std::str::from_utf8(t.expose())
                    .map_err(|_| fail("the authorization token is not UTF-8".into()))?,
            ),
        };
        let mut headers: Vec<(&str, &str)> = vec![("Accept", "application/json")];
        if let Some(t) = token_text {
            headers.push(("Authorization", t));
        }
        let reply = retrying(&Retry::DEFAULT, retryable_status, || {
            self.endpoint.send("GET", &self.path, &headers, b"")
        })
        .map_err(|e| fail(reason(&e)))?;
        if reply.status != 200 {
            let secrets: Vec<&str> = token_text.into_iter().collect();
            return Err(fail(format!(
                "status {}: {}",
                reply.status,
                session::describe(&reply, &["message", "Message", "code"], &secrets)
            )));
        }
        json_credentials(reply.body).map_err(fail)
    }
}

/// Whether plain HTTP to `host` may carry container credentials: every address it resolves
/// to is loopback, the ECS agent (169.254.170.2) or EKS Pod Identity (169.254.170.23,
/// fd00:ec2::23), as the SDKs require.
fn allowed_container_host(host: &str, port: u16) -> Result<(), String> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
    let allowed = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4 == Ipv4Addr::new(169, 254, 170, 2)
                || v4 == Ipv4Addr::new(169, 254, 170, 23)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23)
                || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    };
    let addrs: Vec<IpAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{host}': {e}"))?
        .map(|a| a.ip())
        .collect();
    if addrs.is_empty() || !addrs.iter().all(|ip| allowed(*ip)) {
        return Err(format!(
            "host '{host}' is not allowed over http:// (only loopback, 169.254.170.2, \
             169.254.170.23 and fd00:ec2::23; use https:// for other hosts)"
        ));
    }
    Ok(())
}

impl InstanceMetadata {
    fn fetch(&self) -> Result<(Credentials, Option<Timestamp>), StoreError> {
        let fail = |msg: String| {
            other(format!(
                "no AWS credentials: EC2 instance metadata at {}: {msg} (tried before it: {})",
                self.url, self.tried
            ))
        };
        let retry = Retry {
            attempts: 3,
            base: Duration::from_millis(100),
            total: Duration::from_secs(1),
        };
        let token = retrying(&retry, retryable_status, || {
            self.endpoint.send(
                "PUT",
                &format!("{}/latest/api/token", self.base),
                &[(
                    "X-aws-ec2-metadata-token-ttl-seconds",
                    IMDS_TOKEN_TTL_SECONDS,
                )],
                b"",
            )
        })
        .map_err(|e| fail(reason(&e)))?;
        if token.status != 200 {
            return Err(fail(format!(
                "the IMDSv2 session token request (PUT /latest/api/token) answered status {}",
                token.status
            )));
        }
        let token = SecretVec::new(token.body);
        let token_text = std::str::from_utf8(token.expose())
            .map(str::trim)
            .ok()
            .filter(|t| !t.is_empty() && t.len() <= IMDS_TOKEN_BYTES_MAX)
            .filter(|t| check_header_value(t.as_bytes()).is_ok())
            .ok_or_else(|| fail("the IMDSv2 session token is not a valid header value".into()))?;
        let get = |path: &str| {
            retrying(&retry, retryable_status, || {
                self.endpoint.send(
                    "GET",
                    &format!("{}{path}", self.base),
                    &[("X-aws-ec2-metadata-token", token_text)],
                    b"",
                )
            })
            .map_err(|e| fail(reason(&e)))
        };
        let roles_path = "/latest/meta-data/iam/security-credentials/";
        let roles = get(roles_path)?;
        match roles.status {
            200 => {}
            404 => {
                return Err(fail(
                    "no IAM role is attached to this instance (instance profile)".into(),
                ))
            }
            s => return Err(fail(format!("GET {roles_path} answered status {s}"))),
        }
        let text = String::from_utf8_lossy(&roles.body);
        let role = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("");
        if role.is_empty()
            || role.len() > 128
            || !role
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
        {
            return Err(fail(format!("GET {roles_path} did not name an IAM role")));
        }
        let reply = get(&format!("{roles_path}{role}"))?;
        if reply.status != 200 {
            return Err(fail(format!(
                "GET {roles_path}{role} answered status {}",
                reply.status
            )));
        }
        json_credentials(reply.body).map_err(fail)
    }
}

/// `{AccessKeyId, SecretAccessKey, Token, Expiration}` (container and instance metadata
/// credentials); a `Code` other than `Success` is an error. The answer is read in place
/// ([`json_secret`]): the secret key and the token are copied only into [`SecretVec`]s, and
/// the answer is wiped.
fn json_credentials(body: Vec<u8>) -> Result<(Credentials, Option<Timestamp>), String> {
    let body = SecretVec::new(body);
    let [code, access_key, secret_key, token, expiration] = json_secret::members(
        body.expose(),
        [
            "Code",
            "AccessKeyId",
            "SecretAccessKey",
            "Token",
            "Expiration",
        ],
    )
    .map_err(|_| "the answer is not a JSON object".to_string())?;
    // A member that is not a string counts as absent (as simd-json's `as_str` read them).
    let text = |m: &Option<json_secret::Member<'_>>| {
        m.as_ref()
            .and_then(|m| m.text())
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .unwrap_or_default()
    };
    let code = text(&code);
    if !code.is_empty() && code != "Success" {
        return Err(format!("the answer's Code is '{}'", clip(&code)));
    }
    let secret = |m: Option<json_secret::Member<'_>>| {
        m.and_then(|m| m.secret())
            .filter(|s| std::str::from_utf8(s.expose()).is_ok())
            .unwrap_or_default()
    };
    let credentials = Credentials {
        access_key: text(&access_key),
        secret_key: secret(secret_key),
        session_token: secret(token),
    };
    if credentials.access_key.is_empty() || credentials.secret_key.is_empty() {
        return Err("the answer has no AccessKeyId and SecretAccessKey".into());
    }
    if !credentials.session_token.is_empty()
        && check_header_value(credentials.session_token.expose()).is_err()
    {
        return Err("the answer's Token is not a valid header value".into());
    }
    let expiration = match text(&expiration).as_str() {
        "" => None,
        e => Some(
            Timestamp::parse_rfc3339(e)
                .ok_or_else(|| format!("Expiration '{}' is not RFC 3339", clip(e)))?,
        ),
    };
    Ok((credentials, expiration))
}

fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

/// The text between `<name>` and `</name>` (the first such element).
fn xml_element<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = text.find(&open)? + open.len();
    let len = text[start..].find(&close)?;
    Some(text[start..start + len].trim())
}

/// Resolves XML's predefined and numeric character references.
fn xml_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let c = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .map(|h| u32::from_str_radix(h, 16))
                .or_else(|| entity.strip_prefix('#').map(|d| d.parse::<u32>()))
                .and_then(|n| n.ok())
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `text` with every secret of 4 or more characters replaced by `<redacted>`.
fn redact(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        text = text.replace(s, "<redacted>");
    }
    text
}

/// A failed call's reason without the keystore's prefix ("keystore I/O error: …").
fn reason(e: &StoreError) -> String {
    match e {
        StoreError::Io(io) => io.to_string(),
        StoreError::Unreachable(m) => format!("unreachable: {m}"),
        other => other.to_string(),
    }
}

/// A header value must not end the header early: no CR, LF or NUL (and not empty).
fn check_header_value(v: &[u8]) -> Result<(), String> {
    if v.is_empty() {
        return Err("empty".into());
    }
    if v.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err("contains a line break".into());
    }
    Ok(())
}

/// `aws_access_key_id`, `aws_secret_access_key`, `aws_session_token` of `[profile]` in an
/// AWS shared credentials file (INI).
fn shared_file_profile(text: &str, profile: &str) -> Option<Credentials> {
    let mut in_profile = false;
    let (mut ak, mut sk, mut tok) = (String::new(), SecretVec::default(), SecretVec::default());
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = name.trim() == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim();
            match k.trim().to_ascii_lowercase().as_str() {
                "aws_access_key_id" => ak = v.to_string(),
                "aws_secret_access_key" => sk = SecretVec::new(v.as_bytes().to_vec()),
                "aws_session_token" => tok = SecretVec::new(v.as_bytes().to_vec()),
                _ => {}
            }
        }
    }
    (!ak.is_empty() && !sk.is_empty()).then_some(Credentials {
        access_key: ak,
        secret_key: sk,
        session_token: tok,
    })
}

/// The explicit port of an `http(s)://host[:port]/…` URL.
fn url_port(url: &str) -> Option<u16> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let port = match authority.rfind(']') {
        Some(i) => authority[i + 1..].strip_prefix(':')?,
        None => authority.rsplit_once(':')?.1,
    };
    port.parse().ok()
}

/// The path and query of a URL (`/` when it has none).
fn path_and_query(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => rest[i..].to_string(),
        Some(i) => format!("/{}", &rest[i..]),
        None => "/".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(creds: Option<(&str, &str, &str)>) -> AwsConfig {
        AwsConfig {
            endpoint: "https://secretsmanager.us-east-1.amazonaws.com".into(),
            region: "us-east-1".into(),
            kms_key: String::new(),
            credentials: creds.map(|(a, s, t)| crate::config::AwsCredentials {
                access_key: a.into(),
                secret_key: s.into(),
                session_token: t.into(),
            }),
        }
    }

    fn env_of(vars: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
        move |n: &str| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone())
    }

    fn provider(c: &AwsConfig, vars: Vec<(&'static str, String)>) -> Result<Provider, String> {
        Provider::new(c, &env_of(vars), &TlsFiles::default())
    }

    fn static_keys(p: &Provider) -> (String, String, String) {
        assert!(!p.is_temporary(), "{}", p.source());
        let c = p.credentials().unwrap();
        (
            c.access_key.clone(),
            String::from_utf8(c.secret_key.expose().to_vec()).unwrap(),
            String::from_utf8(c.session_token.expose().to_vec()).unwrap(),
        )
    }

    /// A directory with a shared credentials file (profiles `default` and `other`) and a web
    /// identity token file.
    fn files() -> (tempfile::TempDir, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        std::fs::write(
            &creds,
            "# comment\n[default]\naws_access_key_id = DA\naws_secret_access_key = DS\n\n[other]\naws_access_key_id=OA\naws_secret_access_key=OS\naws_session_token=OT\n",
        )
        .unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJrZXMifQ.c2ln\n").unwrap();
        let c = creds.to_str().unwrap().to_string();
        let t = token.to_str().unwrap().to_string();
        (dir, c, t)
    }

    #[test]
    fn the_chain_takes_the_first_configured_source_in_sdk_order() {
        let (_dir, creds_file, token_file) = files();
        // Every source configured at once: each step removes the winner of the one before.
        let all = || -> Vec<(&'static str, String)> {
            vec![
                ("AWS_ACCESS_KEY_ID", "EA".into()),
                ("AWS_SECRET_ACCESS_KEY", "ES".into()),
                ("AWS_SESSION_TOKEN", "ET".into()),
                ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.clone()),
                ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/kes".into()),
                ("AWS_SHARED_CREDENTIALS_FILE", creds_file.clone()),
                (
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    "http://127.0.0.1:9/creds".into(),
                ),
            ]
        };
        let without = |names: &[&str]| -> Vec<(&'static str, String)> {
            all()
                .into_iter()
                .filter(|(k, _)| !names.contains(k))
                .collect()
        };
        // 1. The config beats everything.
        let p = provider(&cfg(Some(("A", "S", "T"))), all()).unwrap();
        assert_eq!(static_keys(&p), ("A".into(), "S".into(), "T".into()));
        // 2. Then the environment.
        let p = provider(&cfg(None), all()).unwrap();
        assert_eq!(static_keys(&p), ("EA".into(), "ES".into(), "ET".into()));
        // Half a key pair in the environment is skipped.
        let p = provider(&cfg(None), without(&["AWS_SECRET_ACCESS_KEY"])).unwrap();
        assert_eq!(p.source(), "web identity");
        // 3. Then web identity (before the shared file, as aws-sdk-go does).
        let env_keys = [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ];
        let p = provider(&cfg(None), without(&env_keys)).unwrap();
        assert_eq!((p.source(), p.is_temporary()), ("web identity", true));
        // 4. Then the shared credentials file.
        let mut no_web = env_keys.to_vec();
        no_web.push("AWS_WEB_IDENTITY_TOKEN_FILE");
        let p = provider(&cfg(None), without(&no_web)).unwrap();
        assert_eq!(static_keys(&p), ("DA".into(), "DS".into(), String::new()));
        let mut other = without(&no_web);
        other.push(("AWS_PROFILE", "other".into()));
        let p = provider(&cfg(None), other).unwrap();
        assert_eq!(static_keys(&p), ("OA".into(), "OS".into(), "OT".into()));
        // 5. Then container credentials (a profile the file lacks does not count).
        let mut missing = without(&no_web);
        missing.push(("AWS_PROFILE", "absent".into()));
        let p = provider(&cfg(None), missing).unwrap();
        assert_eq!(p.source(), "container credentials");
        // 6. Then instance metadata.
        let mut no_container = no_web.clone();
        no_container.extend([
            "AWS_SHARED_CREDENTIALS_FILE",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ]);
        let p = provider(&cfg(None), without(&no_container)).unwrap();
        assert_eq!(
            (p.source(), p.is_temporary()),
            ("EC2 instance metadata", true)
        );
        // The relative container URI wins over the full one.
        let p = provider(
            &cfg(None),
            vec![
                (
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                    "/v2/credentials/x".into(),
                ),
                (
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    "http://10.0.0.1/creds".into(),
                ),
            ],
        )
        .unwrap();
        let Kind::Temporary { source, .. } = &p.kind else {
            panic!("not temporary credentials");
        };
        let Source::Container(c) = source.as_ref() else {
            panic!("not container credentials");
        };
        assert_eq!(c.url, "http://169.254.170.2/v2/credentials/x");
        assert_eq!(c.path, "/v2/credentials/x");
    }

    #[test]
    fn with_nothing_configured_and_imds_disabled_the_error_lists_every_source() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_str().unwrap().to_string();
        let err = provider(
            &cfg(None),
            vec![
                ("HOME", home.clone()),
                ("AWS_ACCESS_KEY_ID", "only-half".into()),
                ("AWS_EC2_METADATA_DISABLED", "TRUE".into()),
            ],
        )
        .err()
        .unwrap();
        assert!(
            err.starts_with("keystore.aws.secretsmanager: no AWS credentials"),
            "{err}"
        );
        for part in [
            "credentials.accesskey/secretkey in the config (not set)",
            "AWS_SECRET_ACCESS_KEY not set",
            "AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN (not set)",
            &format!("the shared credentials file '{home}/.aws/credentials'"),
            "AWS_CONTAINER_CREDENTIALS_FULL_URI (not set)",
            "EC2 instance metadata (disabled by AWS_EC2_METADATA_DISABLED)",
        ] {
            assert!(err.contains(part), "{part}: {err}");
        }
        assert!(!err.contains("only-half"), "{err}");
    }

    #[test]
    fn misconfigured_sources_stop_the_start() {
        let (_dir, _creds, token_file) = files();
        let e = |vars| provider(&cfg(None), vars).err().unwrap();
        let err = e(vec![("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.clone())]);
        assert!(err.contains("AWS_ROLE_ARN is not"), "{err}");
        let err = e(vec![
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent/token".into()),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r".into()),
        ]);
        assert!(err.contains("/nonexistent/token"), "{err}");
        let err = e(vec![
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r".into()),
            ("AWS_STS_REGIONAL_ENDPOINTS", "sometimes".into()),
        ]);
        assert!(err.contains("AWS_STS_REGIONAL_ENDPOINTS"), "{err}");
        for url in [
            "http://10.1.2.3/creds",
            "http://169.254.169.254/creds",
            "ftp://127.0.0.1/",
        ] {
            let err = e(vec![("AWS_CONTAINER_CREDENTIALS_FULL_URI", url.into())]);
            assert!(err.contains("AWS_CONTAINER_CREDENTIALS_FULL_URI"), "{err}");
        }
        let err = e(vec![
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://127.0.0.1/c".into(),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                "a\r\nX-Injected: 1".into(),
            ),
        ]);
        assert!(
            err.contains("line break") && !err.contains("Injected"),
            "{err}"
        );
        let err = e(vec![(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
            "IPv5".into(),
        )]);
        assert!(
            err.contains("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE"),
            "{err}"
        );
    }

    #[test]
    fn container_hosts_as_the_sdks_allow_them() {
        for (url, ok) in [
            ("http://127.0.0.1:80/creds", true),
            ("http://127.1.2.3/creds", true),
            ("http://[::1]:8080/creds", true),
            ("http://localhost/creds", true),
            ("http://169.254.170.2/v2/creds", true),
            ("http://169.254.170.23/v1/credentials", true),
            ("http://[fd00:ec2::23]/v1/credentials", true),
            ("https://creds.example.com/x", true),
            ("http://169.254.170.3/creds", false),
            ("http://192.168.1.1/creds", false),
            ("http://[fd00:ec2::24]/creds", false),
        ] {
            let r = Container::new(url, &|_| None, &TlsFiles::default());
            assert_eq!(r.is_ok(), ok, "{url}: {:?}", r.err());
        }
        let c = Container::new(
            "http://127.0.0.1:9/get?role=x",
            &|_| None,
            &TlsFiles::default(),
        )
        .unwrap();
        assert_eq!(c.path, "/get?role=x");
        assert_eq!(path_and_query("http://h:1"), "/");
        assert_eq!(path_and_query("http://h?x=1"), "/?x=1");
        assert_eq!(url_port("http://[::1]:8080/x"), Some(8080));
        assert_eq!(url_port("http://[::1]/x"), None);
        assert_eq!(url_port("http://h:81?x"), Some(81));
    }

    #[test]
    fn sts_endpoints() {
        let v = |vars: Vec<(&'static str, String)>| env_of(vars);
        assert_eq!(
            sts_url("eu-west-1", &v(vec![])).unwrap(),
            "https://sts.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            sts_url("cn-north-1", &v(vec![])).unwrap(),
            "https://sts.cn-north-1.amazonaws.com.cn"
        );
        let legacy = || vec![("AWS_STS_REGIONAL_ENDPOINTS", "legacy".to_string())];
        assert_eq!(
            sts_url("us-east-1", &v(legacy())).unwrap(),
            "https://sts.amazonaws.com"
        );
        assert_eq!(
            sts_url("ap-east-1", &v(legacy())).unwrap(),
            "https://sts.ap-east-1.amazonaws.com",
            "regions newer than global STS stay regional"
        );
        let both = || {
            vec![
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:1".to_string()),
                ("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:2/".to_string()),
            ]
        };
        assert_eq!(sts_url("x", &v(both())).unwrap(), "http://127.0.0.1:2");
        assert_eq!(
            sts_url(
                "x",
                &v(vec![("AWS_ENDPOINT_URL", "http://127.0.0.1:1".into())])
            )
            .unwrap(),
            "http://127.0.0.1:1"
        );
        let mut ignored = both();
        ignored.push(("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true".into()));
        assert_eq!(
            sts_url("us-west-2", &v(ignored)).unwrap(),
            "https://sts.us-west-2.amazonaws.com"
        );
    }

    #[test]
    fn renewal_times_follow_the_expiration() {
        let now = Instant::now();
        let wall = Timestamp::from_unix(1_700_000_000, 0);
        let c = Arc::new(Credentials {
            access_key: "A".into(),
            secret_key: SecretVec::new(b"S".to_vec()),
            session_token: SecretVec::new(b"T".to_vec()),
        });
        // One hour: renewed 5 minutes before it expires.
        let f = fresh(
            c.clone(),
            Some(Timestamp::from_unix(1_700_003_600, 0)),
            now,
            wall,
        );
        assert_eq!(f.valid_until - now, Duration::from_secs(3600));
        assert_eq!(f.renew_at - now, Duration::from_secs(3300));
        // Four seconds: renewed at half its lifetime.
        let f = fresh(
            c.clone(),
            Some(Timestamp::from_unix(1_700_000_004, 0)),
            now,
            wall,
        );
        assert_eq!(
            (f.renew_at - now, f.valid_until - now),
            (Duration::from_secs(2), Duration::from_secs(4))
        );
        // Already expired: used once, renewed by the next call.
        let f = fresh(
            c.clone(),
            Some(Timestamp::from_unix(1_699_999_000, 0)),
            now,
            wall,
        );
        assert_eq!((f.renew_at, f.valid_until), (now, now));
        // No expiration: fetched again after an hour, valid meanwhile and after.
        let f = fresh(c, None, now, wall);
        assert_eq!(f.renew_at - now, NO_EXPIRY_RENEW_AFTER);
        assert!(f.valid_until - now > Duration::from_secs(86_400 * 365));
    }

    #[test]
    fn answers_are_parsed_strictly() {
        let xml = "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult>\
            <Credentials><AccessKeyId>ASIAX</AccessKeyId><SecretAccessKey>s/k+&amp;&#x41;&#66;</SecretAccessKey>\
            <SessionToken>tok=</SessionToken><Expiration>2026-01-02T03:04:05Z</Expiration></Credentials>\
            </AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";
        let inner = xml_element(xml, "Credentials").unwrap();
        assert_eq!(xml_element(inner, "AccessKeyId"), Some("ASIAX"));
        assert_eq!(
            xml_unescape(xml_element(inner, "SecretAccessKey").unwrap()),
            "s/k+&AB"
        );
        assert_eq!(xml_unescape("a&bogus;b&"), "a&bogus;b&");
        let (c, e) = json_credentials(
            br#"{"Code":"Success","Type":"AWS-HMAC","AccessKeyId":"AK","SecretAccessKey":"SK","Token":"TK","Expiration":"2026-01-02T03:04:05Z"}"#.to_vec(),
        )
        .unwrap();
        assert_eq!(
            (
                c.access_key.as_str(),
                c.secret_key.expose(),
                c.session_token()
            ),
            ("AK", &b"SK"[..], Some("TK"))
        );
        assert_eq!(e, Timestamp::parse_rfc3339("2026-01-02T03:04:05Z"));
        let (_, e) =
            json_credentials(br#"{"AccessKeyId":"AK","SecretAccessKey":"SK"}"#.to_vec()).unwrap();
        assert_eq!(e, None);
        for bad in [
            &br#"{"Code":"AssumeRoleUnauthorizedAccess","AccessKeyId":"AK","SecretAccessKey":"SK"}"#[..],
            br#"{"AccessKeyId":"AK"}"#,
            br#"{"AccessKeyId":"AK","SecretAccessKey":"SK","Expiration":"tomorrow"}"#,
            b"<html>",
            br#"{"AccessKeyId":"AK","SecretAccessKey":"SK","Token":"T\r\nX-Injected: 1"}"#,
        ] {
            let err = json_credentials(bad.to_vec()).unwrap_err();
            assert!(!err.contains("SK"), "{err}");
        }
        let err = json_credentials(
            br#"{"AccessKeyId":"AK","SecretAccessKey":"SECRET","Expiration":"SECRET-NOT-A-DATE-AT-ALL-AND-LONGER-THAN-FORTY"}"#.to_vec(),
        )
        .unwrap_err();
        assert!(err.contains("not RFC 3339"), "{err}");
        assert_eq!(
            redact("bad token abcd", &["abcd", "xy"]),
            "bad token <redacted>"
        );
    }

    #[test]
    fn header_values_have_no_line_breaks() {
        assert!(check_header_value(b"a\nb").is_err());
        assert!(check_header_value(b"Bearer x").is_ok());
    }
}
