//! The server config file (storage-and-config.md §5): YAML parsed into typed structs, with
//! `${VAR}` substitution, Go durations, YAML 1.1 booleans and every validation rule. Errors
//! name the field and say what was expected; a config that fails never starts a server.

pub mod duration;
pub mod inputs;
pub mod keystore;
mod lint;
mod shape;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml::Value;

use crate::auth::policy::{PatternSyntax, Policy};
use crate::cache::Expiry;
use crate::routes::{is_valid_name, AuthMode, RouteSettings, ROUTES};
use keystore::KEYSTORE;
use shape::Node;
use shape::Shape::{self, Leaf, List, Map, Names};

pub use duration::parse_go_duration;
pub use keystore::{
    AwsConfig, AwsCredentials, AzureAuth, AzureConfig, FortanixConfig, GcpConfig, GcpCredentials,
    KeyControlConfig, KeySecureConfig, KeystoreConfig, KubernetesJwt, VaultAuth, VaultConfig,
};

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("key", &self.key)
            .field("cert", &self.cert)
            .field(
                "password",
                &if self.password.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("auth", &self.auth)
            .field("ca", &self.ca)
            .field("proxy_identities", &self.proxy_identities)
            .field("proxy_cert_header", &self.proxy_cert_header)
            .finish()
    }
}

/// A config error: the field it concerns and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

pub(crate) fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// `tls.auth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsAuth {
    /// Require any client certificate, do not verify it (default).
    Off,
    /// Require and verify client certificates against `tls.ca` + system roots.
    On,
}

#[derive(Clone)]
pub struct TlsSettings {
    pub key: PathBuf,
    pub cert: PathBuf,
    pub password: String,
    pub auth: TlsAuth,
    pub ca: Option<PathBuf>,
    pub proxy_identities: Vec<String>,
    pub proxy_cert_header: String,
}

/// A validated server config.
#[derive(Clone, Debug)]
pub struct Config {
    pub address: Option<SocketAddr>,
    pub admin: String,
    pub tls: TlsSettings,
    pub routes: RouteSettings,
    pub policies: Vec<Policy>,
    pub pattern_syntax: PatternSyntax,
    pub expiry: Expiry,
    pub expiry_offline: Duration,
    pub log_error: String,
    pub log_audit: String,
    pub keys: Vec<String>,
    /// `enclaves` (ours): MinKMS enclaves created at start-up when absent.
    pub enclaves: Vec<String>,
    pub keystore: KeystoreConfig,
    /// `log.audit_all` (ours): audit every request, as servers up to 2023-10 did.
    pub audit_all: bool,
    /// Things that loaded but deserve a word (ignored sections, deprecated fields).
    pub warnings: Vec<String>,
}

/// The config file's keys: the parser reads the file through this shape (in [`shape::Node`]),
/// the lint reports every key it does not list.
pub(crate) const ROOT: Shape = Map(&[
    ("version", Leaf),
    ("address", Leaf),
    ("admin", Map(&[("identity", Leaf)])),
    (
        "tls",
        Map(&[
            ("key", Leaf),
            ("cert", Leaf),
            ("password", Leaf),
            ("auth", Leaf),
            ("ca", Leaf),
            (
                "proxy",
                Map(&[("identities", Leaf), ("header", Map(&[("cert", Leaf)]))]),
            ),
        ]),
    ),
    (
        "api",
        Names(&Map(&[("timeout", Leaf), ("skip_auth", Leaf)])),
    ),
    (
        "policy",
        Names(&Map(&[
            ("allow", Leaf),
            ("deny", Leaf),
            ("identities", Leaf),
        ])),
    ),
    (
        "cache",
        Map(&[(
            "expiry",
            Map(&[("any", Leaf), ("unused", Leaf), ("offline", Leaf)]),
        )]),
    ),
    (
        "log",
        Map(&[("error", Leaf), ("audit", Leaf), ("audit_all", Leaf)]),
    ),
    ("keys", List(&Map(&[("name", Leaf)]))),
    ("enclaves", Leaf),
    ("keystore", KEYSTORE),
    ("compat", Map(&[("policy_patterns", Leaf)])),
]);

/// Looks up environment variables; a function so tests need not touch the process env.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Parses and validates a config file's text.
pub fn parse(text: &str, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
    let root: Value =
        serde_yaml::from_str(text).map_err(|e| ConfigError(format!("invalid YAML: {e}")))?;
    let root = match root {
        Value::Mapping(_) => root,
        Value::Null => return err("the config file is empty"),
        _ => return err("the config file must be a YAML mapping"),
    };
    let p = Parser { text, env };
    let mut warnings = Vec::new();
    lint::unknown_keys(&root, &mut warnings);
    let root = Node::new(Some(&root), &ROOT);

    if let Some(v) = root.get("version") {
        let v = p.plain_string("version", v)?;
        if v != "v1" {
            return err(format!("version: '{v}' is not supported; expected 'v1'"));
        }
    }
    let address = match root.get("address") {
        None => None,
        Some(v) => {
            let s = p.string("address", v)?;
            if s.is_empty() {
                None
            } else {
                Some(parse_address(&s)?)
            }
        }
    };
    let admin = match root.child("admin").get("identity") {
        Some(v) => crate::auth::identity::normalize(p.string("admin.identity", v)?),
        None => String::new(),
    };
    if admin.trim().is_empty() {
        return err("admin.identity: missing; expected an identity (64 hex characters) or a placeholder such as 'disabled'");
    }
    lint::admin_identity(&admin, &mut warnings);

    let tls_node = root.child("tls");
    let field = |name: &str| tls_node.get(name);
    let key = p.opt_string("tls.key", field("key"))?.unwrap_or_default();
    let cert = p.opt_string("tls.cert", field("cert"))?.unwrap_or_default();
    if key.is_empty() {
        return err("tls.key: missing; expected the path of the server's PEM private key");
    }
    if cert.is_empty() {
        return err("tls.cert: missing; expected the path of the server's PEM certificate");
    }
    let auth = match p
        .opt_string("tls.auth", field("auth"))?
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "" | "off" | "false" => TlsAuth::Off,
        "on" | "true" => TlsAuth::On,
        other => {
            return err(format!(
                "tls.auth: '{other}' is invalid; expected 'on' or 'off'"
            ))
        }
    };
    let proxy = tls_node.child("proxy");
    let proxy_identities = match proxy.get("identities") {
        Some(v) => p
            .string_list("tls.proxy.identities", v, true)?
            .into_iter()
            .map(crate::auth::identity::normalize)
            .collect(),
        None => Vec::new(),
    };
    let proxy_cert_header = match proxy.child("header").get("cert") {
        Some(v) => p.string("tls.proxy.header.cert", v)?,
        None => String::new(),
    };
    lint::identities("tls.proxy.identities", &proxy_identities, &mut warnings);
    for id in &proxy_identities {
        if *id == admin {
            return err(format!("tls.proxy.identities: '{id}' is the admin identity; the admin cannot be a TLS proxy"));
        }
    }
    let tls = TlsSettings {
        key: key.into(),
        cert: cert.into(),
        password: p
            .opt_string("tls.password", field("password"))?
            .unwrap_or_default(),
        auth,
        ca: p
            .opt_string("tls.ca", field("ca"))?
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        proxy_identities,
        proxy_cert_header,
    };

    let mut routes = RouteSettings::default();
    let api = root.child("api");
    if let Some(Value::Mapping(map)) = api.value() {
        for (k, v) in map {
            let route = api.entry(v);
            let Some(path) = k.as_str() else { continue };
            let Some(index) = ROUTES.iter().position(|r| r.path == path) else {
                // Ignored, as upstream does, but said: a typo here silently drops a setting.
                warnings.push(format!(
                    "api.{path}: not a route, ignored; routes are exact paths such as /v1/status or /v1/key/create/"
                ));
                continue;
            };
            if let Some(t) = route.get("timeout") {
                let d = p.duration(&format!("api.{path}.timeout"), t)?;
                if !d.is_zero() {
                    routes.timeout[index] = d;
                }
            }
            if let Some(s) = route.get("skip_auth") {
                if p.boolean(&format!("api.{path}.skip_auth"), s)? {
                    routes.auth[index] = AuthMode::Identify;
                    if let Some(what) = skip_auth_exposes(path) {
                        warnings.push(format!(
                            "api.{path}.skip_auth: any client, even one without a certificate, can call {path} without a policy check, {what}; skip_auth is meant for /v1/ready, /v1/status and /v1/metrics"
                        ));
                    }
                }
            }
        }
    }

    let mut policies = Vec::new();
    let mut seen_identities: HashSet<String> = HashSet::new();
    let policy = root.child("policy");
    if let Some(node) = policy.value() {
        let Value::Mapping(map) = node else {
            return err("policy: expected a mapping of policy names to policies");
        };
        for (k, v) in map {
            let name = k
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{k:?}"));
            if !is_valid_name(&name) {
                return err(format!("policy.{name}: invalid policy name; expected 1–80 characters of [0-9A-Za-z_-], not starting or ending with '-'"));
            }
            let list = |field: &str, env: bool| -> Result<Vec<String>, ConfigError> {
                match policy.entry(v).get(field) {
                    Some(node) => p.string_list(&format!("policy.{name}.{field}"), node, env),
                    None => Ok(Vec::new()),
                }
            };
            let allow = list("allow", false)?;
            let deny = list("deny", false)?;
            let identities: Vec<String> = list("identities", true)?
                .into_iter()
                .map(crate::auth::identity::normalize)
                .collect();
            lint::identities(
                &format!("policy.{name}.identities"),
                &identities,
                &mut warnings,
            );
            for id in &identities {
                if id.is_empty() {
                    continue;
                }
                if *id == admin {
                    return err(format!("policy.{name}.identities: '{id}' is the admin identity; the admin cannot be assigned a policy"));
                }
                if tls.proxy_identities.contains(id) {
                    return err(format!(
                        "policy.{name}.identities: '{id}' is a TLS proxy identity"
                    ));
                }
                if !is_valid_name(id) {
                    return err(format!(
                        "policy.{name}.identities: '{id}' is not a valid identity"
                    ));
                }
                if !seen_identities.insert(id.clone()) {
                    return err(format!(
                        "policy.{name}.identities: identity '{id}' already has a policy"
                    ));
                }
            }
            policies.push(Policy {
                name,
                allow,
                deny,
                identities: identities.into_iter().filter(|s| !s.is_empty()).collect(),
            });
        }
    }

    let expiry_node = root.child("cache").child("expiry");
    let exp = |field: &str| -> Result<Option<Duration>, ConfigError> {
        match expiry_node.get(field) {
            Some(v) if !v.is_null() => Ok(Some(p.duration(&format!("cache.expiry.{field}"), v)?)),
            _ => Ok(None),
        }
    };
    let defaults = Expiry::default();
    let expiry = Expiry {
        any: exp("any")?.filter(|d| !d.is_zero()).unwrap_or(defaults.any),
        unused: exp("unused")?
            .filter(|d| !d.is_zero())
            .unwrap_or(defaults.unused),
    };
    let expiry_offline = exp("offline")?.unwrap_or(Duration::ZERO);

    let log = root.child("log");
    let log_error = p
        .opt_string("log.error", log.get("error"))?
        .unwrap_or_default();
    let log_audit = p
        .opt_string("log.audit", log.get("audit"))?
        .unwrap_or_default();
    for (field, v) in [("log.error", &log_error), ("log.audit", &log_audit)] {
        if crate::log::Level::parse(v).is_none() {
            return err(format!(
                "{field}: '{v}' is not a log level; expected on, off, DEBUG, INFO, WARN or ERROR"
            ));
        }
    }

    let audit_all = match log.get("audit_all") {
        Some(v) => p.boolean("log.audit_all", v)?,
        None => false,
    };

    let mut keys = Vec::new();
    let keys_node = root.child("keys");
    if let Some(node) = keys_node.value() {
        let Value::Sequence(items) = node else {
            return err("keys: expected a list of {name: <key name>}");
        };
        for (i, item) in items.iter().enumerate() {
            let name = match keys_node.entry(item).get("name") {
                Some(v) => p.string(&format!("keys[{i}].name"), v)?,
                None => return err(format!("keys[{i}].name: missing")),
            };
            if !is_valid_name(&name) {
                return err(format!(
                    "keys[{i}].name: '{name}' is not a valid key name ({})",
                    crate::routes::NAME_RULE
                ));
            }
            if keys.contains(&name) {
                return err(format!(
                    "keys[{i}].name: key '{name}' is defined more than once"
                ));
            }
            keys.push(name);
        }
    }

    let mut enclaves = Vec::new();
    if let Some(node) = root.get("enclaves") {
        for (i, name) in p
            .string_list("enclaves", node, true)?
            .into_iter()
            .enumerate()
        {
            if name == crate::api::minkms::DEFAULT_ENCLAVE {
                return err(format!(
                    "enclaves[{i}]: 'default' always exists (the server's own key namespace); remove it"
                ));
            }
            if !crate::api::minkms::enclave::is_valid_enclave_name(&name) {
                return err(format!(
                    "enclaves[{i}]: '{name}' is not a valid enclave name ({})",
                    crate::api::minkms::enclave::ENCLAVE_NAME_RULE
                ));
            }
            if enclaves.contains(&name) {
                return err(format!(
                    "enclaves[{i}]: enclave '{name}' is listed more than once"
                ));
            }
            enclaves.push(name);
        }
    }

    let pattern_syntax = match root.child("compat").get("policy_patterns") {
        None => PatternSyntax::Prefix,
        Some(v) => match p.string("compat.policy_patterns", v)?.trim() {
            "" | "prefix" => PatternSyntax::Prefix,
            "glob" => PatternSyntax::Glob,
            other => {
                return err(format!(
                    "compat.policy_patterns: '{other}' is invalid; expected 'prefix' (current) or 'glob' (≤ 2023-10)"
                ))
            }
        },
    };
    let keystore = keystore::parse_keystore(&p, root.get("keystore"))?;
    Ok(Config {
        address,
        admin,
        tls,
        routes,
        policies,
        pattern_syntax,
        expiry,
        expiry_offline,
        log_error,
        log_audit,
        keys,
        enclaves,
        keystore,
        audit_all,
        warnings,
    })
}

/// What `skip_auth` on a route hands to every client, for routes where that is a hazard.
fn skip_auth_exposes(path: &str) -> Option<&'static str> {
    if path.starts_with("/v1/key/") {
        Some("on every key")
    } else if path.starts_with("/v1/log/") {
        Some("streaming the server's logs")
    } else if path.starts_with("/v1/policy/")
        || (path.starts_with("/v1/identity/") && path != "/v1/identity/self/describe")
    {
        Some("reading the server's policies and identities")
    } else {
        None
    }
}

/// The unknown-key warnings of a config file's text, whether or not it is a valid config:
/// printed with a parse error, which a misspelled key often causes (a misspelled required
/// field reads as a missing one).
pub fn unknown_key_warnings(text: &str) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Ok(root @ Value::Mapping(_)) = serde_yaml::from_str::<Value>(text) {
        lint::unknown_keys(&root, &mut warnings);
    }
    warnings
}

/// Parses only the `keystore:` section of a config file (for `kes migrate`, whose configs
/// may be keystore-only).
pub fn parse_keystore_only(text: &str, env: EnvLookup<'_>) -> Result<KeystoreConfig, ConfigError> {
    let root: Value =
        serde_yaml::from_str(text).map_err(|e| ConfigError(format!("invalid YAML: {e}")))?;
    let p = Parser { text, env };
    keystore::parse_keystore(&p, Node::new(Some(&root), &ROOT).get("keystore"))
}

/// `address`: `[ip]:port` with an IP literal or an empty host.
pub fn parse_address(s: &str) -> Result<SocketAddr, ConfigError> {
    let s = s.trim();
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| ConfigError(format!("address: invalid port in '{s}'")))?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    s.parse().map_err(|_| {
        ConfigError(format!(
            "address: '{s}' is invalid; expected <ip>:<port> (no host names)"
        ))
    })
}

pub(crate) struct Parser<'a> {
    text: &'a str,
    env: EnvLookup<'a>,
}

impl Parser<'_> {
    /// A scalar as text, without env substitution.
    pub(crate) fn plain_string(&self, field: &str, v: &Value) -> Result<String, ConfigError> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Bool(b) => Ok(b.to_string()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Null => Ok(String::new()),
            _ => err(format!("{field}: expected a string")),
        }
    }

    /// A scalar with `${VAR}` substitution (the whole trimmed value must be the reference).
    pub(crate) fn string(&self, field: &str, v: &Value) -> Result<String, ConfigError> {
        let s = self.plain_string(field, v)?;
        self.substitute(field, &s)
    }

    pub(crate) fn opt_string(
        &self,
        field: &str,
        v: Option<&Value>,
    ) -> Result<Option<String>, ConfigError> {
        v.map(|v| self.string(field, v)).transpose()
    }

    pub(crate) fn substitute(&self, field: &str, s: &str) -> Result<String, ConfigError> {
        let t = s.trim();
        let Some(inner) = t.strip_prefix("${").and_then(|r| r.strip_suffix('}')) else {
            return Ok(s.to_string());
        };
        let name = inner.trim();
        match (self.env)(name) {
            Some(value) => Ok(value),
            None => {
                let line = self
                    .text
                    .lines()
                    .position(|l| l.contains(t))
                    .map(|i| i + 1)
                    .unwrap_or(0);
                err(format!(
                    "{field}: referenced env. variable '{name}' in line '{line}' not found"
                ))
            }
        }
    }

    pub(crate) fn string_list(
        &self,
        field: &str,
        v: &Value,
        env: bool,
    ) -> Result<Vec<String>, ConfigError> {
        let items = match v {
            Value::Sequence(items) => items.as_slice(),
            Value::Null => return Ok(Vec::new()),
            _ => return err(format!("{field}: expected a list of strings")),
        };
        items
            .iter()
            .map(|item| {
                if env {
                    self.string(field, item)
                } else {
                    self.plain_string(field, item)
                }
            })
            .collect()
    }

    pub(crate) fn duration(&self, field: &str, v: &Value) -> Result<Duration, ConfigError> {
        let s = self.string(field, v)?;
        parse_go_duration(s.trim()).map_err(|e| {
            ConfigError(format!(
                "{field}: '{s}' is not a duration ({e}); expected e.g. 30s, 5m, 1h30m"
            ))
        })
    }

    pub(crate) fn boolean(&self, field: &str, v: &Value) -> Result<bool, ConfigError> {
        if let Value::Bool(b) = v {
            return Ok(*b);
        }
        let s = self.string(field, v)?;
        match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "on" => Ok(true),
            "false" | "no" | "n" | "off" | "" => Ok(false),
            _ => err(format!(
                "{field}: '{s}' is not a boolean; expected true or false"
            )),
        }
    }
}
