//! Start-up warnings for configs that load but will not do what their author meant: keys
//! this server does not know (a misspelled `polcy:` is silently ignored, storage-and-config.md
//! §5) and identities that can never match a client. Nothing here rejects a config.

use serde_yaml::Value;

/// The known layout of a config file.
enum Shape {
    /// A scalar or list whose content [`super::parse`] checks.
    Leaf,
    /// A mapping with exactly these keys.
    Map(&'static [(&'static str, Shape)]),
    /// A mapping whose keys are names (policies, routes), each value of this shape.
    Names(&'static Shape),
    /// A list of values of this shape.
    List(&'static Shape),
    /// Not checked (keystores this build does not implement).
    Any,
}

use Shape::{Any, Leaf, List, Map, Names};

const TLS_FILES: Shape = Map(&[("key", Leaf), ("cert", Leaf), ("ca", Leaf)]);

const VAULT: Shape = Map(&[
    ("endpoint", Leaf),
    ("engine", Leaf),
    ("version", Leaf),
    ("namespace", Leaf),
    ("prefix", Leaf),
    (
        "approle",
        Map(&[
            ("engine", Leaf),
            ("namespace", Leaf),
            ("id", Leaf),
            ("secret", Leaf),
            ("retry", Leaf), // in upstream's sample configs; ignored
        ]),
    ),
    (
        "kubernetes",
        Map(&[
            ("engine", Leaf),
            ("namespace", Leaf),
            ("role", Leaf),
            ("jwt", Leaf),
            ("retry", Leaf),
        ]),
    ),
    ("transit", Map(&[("engine", Leaf), ("key", Leaf)])),
    ("tls", TLS_FILES),
    ("status", Map(&[("ping", Leaf)])),
]);

const ROOT: Shape = Map(&[
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
    (
        "keystore",
        Map(&[
            ("fs", Map(&[("path", Leaf)])),
            ("vault", VAULT),
            ("fortanix", Any),
            ("gemalto", Any),
            ("gcp", Any),
            ("aws", Any),
            ("azure", Any),
            ("entrust", Any),
            ("kes", Any),
        ]),
    ),
    ("compat", Map(&[("policy_patterns", Leaf)])),
]);

/// One warning per key of `root` this server does not know.
pub(crate) fn unknown_keys(root: &Value, warnings: &mut Vec<String>) {
    walk(&ROOT, root, "", warnings);
}

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn walk(shape: &Shape, value: &Value, path: &str, warnings: &mut Vec<String>) {
    match (shape, value) {
        (Map(fields), Value::Mapping(map)) => {
            for (k, v) in map {
                let key = key_text(k);
                match fields.iter().find(|(name, _)| *name == key) {
                    Some((_, inner)) => walk(inner, v, &join(path, &key), warnings),
                    None => {
                        let hint = fields
                            .iter()
                            .map(|(name, _)| *name)
                            .filter(|name| edit_distance(name, &key) <= 2)
                            .min_by_key(|name| edit_distance(name, &key))
                            .map(|name| format!("; did you mean '{}'?", join(path, name)))
                            .unwrap_or_default();
                        warnings.push(format!("{}: unknown key, ignored{hint}", join(path, &key)));
                    }
                }
            }
        }
        (Names(inner), Value::Mapping(map)) => {
            for (k, v) in map {
                walk(inner, v, &join(path, &key_text(k)), warnings);
            }
        }
        (List(inner), Value::Sequence(items)) => {
            for (i, item) in items.iter().enumerate() {
                walk(inner, item, &format!("{path}[{i}]"), warnings);
            }
        }
        // Wrong types are the parser's errors; leaves and unchecked sections are not ours.
        _ => {}
    }
}

/// Levenshtein distance, for "did you mean" hints on short keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn is_identity(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

fn looks_like_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_hexdigit())
}

/// Why `id` can never match a client, if it cannot. Client identities are always 64
/// lowercase hex characters (the SHA-256 of a certificate's public key).
fn identity_problem(id: &str) -> Option<&'static str> {
    if is_identity(id) {
        None
    } else if id.len() == 64 && looks_like_hex(id) {
        Some("has uppercase letters, but identities are lowercase hex: write it in lowercase")
    } else if looks_like_hex(id) {
        Some("is not 64 hex characters long (truncated?)")
    } else {
        Some("is not an identity (64 lowercase hex characters)")
    }
}

/// `admin.identity`: a non-identity disables the admin on purpose (e.g. `disabled`), so only
/// near-misses (hex of the wrong case or length) are reported.
pub(crate) fn admin_identity(admin: &str, warnings: &mut Vec<String>) {
    if looks_like_hex(admin) {
        if let Some(problem) = identity_problem(admin) {
            warnings.push(format!(
                "admin.identity: '{admin}' {problem}; as it is, it never matches a client and the admin is disabled"
            ));
        }
    }
}

/// Policy and proxy identities: every one that can never match a client.
pub(crate) fn identities(field: &str, ids: &[String], warnings: &mut Vec<String>) {
    for id in ids.iter().filter(|id| !id.is_empty()) {
        if let Some(problem) = identity_problem(id) {
            warnings.push(format!(
                "{field}: '{id}' {problem}; it never matches a client"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warnings_of(yaml: &str) -> Vec<String> {
        let root: Value = serde_yaml::from_str(yaml).unwrap();
        let mut w = Vec::new();
        unknown_keys(&root, &mut w);
        w
    }

    #[test]
    fn unknown_keys_are_named_with_their_path_and_a_hint() {
        let w = warnings_of(
            "polcy: {}\ntls:\n  pasword: x\napi:\n  /v1/status:\n    skipauth: true\n\
             keys:\n- nme: a\nkeystore:\n  vault:\n    approle:\n      secert: s\n  aws:\n    anything: 1\n",
        );
        assert_eq!(
            w,
            [
                "polcy: unknown key, ignored; did you mean 'policy'?",
                "tls.pasword: unknown key, ignored; did you mean 'tls.password'?",
                "api./v1/status.skipauth: unknown key, ignored; did you mean 'api./v1/status.skip_auth'?",
                "keys[0].nme: unknown key, ignored; did you mean 'keys[0].name'?",
                "keystore.vault.approle.secert: unknown key, ignored; did you mean 'keystore.vault.approle.secret'?",
            ]
        );
        assert!(warnings_of("version: v1\nzzz: 1\n")[0].ends_with("unknown key, ignored"));
    }

    #[test]
    fn identities_that_never_match() {
        let mut w = Vec::new();
        admin_identity("disabled", &mut w);
        admin_identity(&"a".repeat(64), &mut w);
        assert!(w.is_empty());
        admin_identity(&"A".repeat(64), &mut w);
        assert!(w[0].contains("uppercase"), "{w:?}");
        let mut w = Vec::new();
        identities(
            "policy.p.identities",
            &["b".repeat(64), "B".repeat(64), "abc".into(), "name".into()],
            &mut w,
        );
        assert_eq!(w.len(), 3, "{w:?}");
    }
}
