//! Start-up warnings for configs that load but will not do what their author meant: keys
//! this server does not know (a misspelled `polcy:` is silently ignored, storage-and-config.md
//! §5) and identities that can never match a client. Nothing here rejects a config.

use serde_yaml::Value;

use super::shape::Shape::{self, List, Map, Names};
use super::ROOT;

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
        (Map(_), Value::Mapping(map)) => {
            for (k, v) in map {
                let key = key_text(k);
                match shape.field(&key) {
                    Some(inner) => walk(inner, v, &join(path, &key), warnings),
                    None => {
                        let hint = shape
                            .keys()
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
    use super::super::keystore::KEYSTORE;
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
                "keystore.aws.anything: unknown key, ignored",
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

    /// One misspelling at every depth of every keystore block: the full path and, where a
    /// known key is close, the key meant.
    #[test]
    fn misspelled_keys_inside_keystore_blocks_are_named_with_a_hint() {
        let cases = [
            (
                "fs: {pth: ./keys}",
                "keystore.fs.pth",
                Some("keystore.fs.path"),
            ),
            (
                "vault: {approle: {id: i, secert: s}}",
                "keystore.vault.approle.secert",
                Some("keystore.vault.approle.secret"),
            ),
            (
                "vault: {kubernetes: {rol: r}}",
                "keystore.vault.kubernetes.rol",
                Some("keystore.vault.kubernetes.role"),
            ),
            (
                "vault: {tls: {cer: c}}",
                "keystore.vault.tls.cer",
                Some("keystore.vault.tls.cert"),
            ),
            (
                "vault: {status: {pnig: 1s}}",
                "keystore.vault.status.pnig",
                Some("keystore.vault.status.ping"),
            ),
            (
                "vault: {endpiont: e}",
                "keystore.vault.endpiont",
                Some("keystore.vault.endpoint"),
            ),
            (
                "vualt: {endpoint: e}",
                "keystore.vualt",
                Some("keystore.vault"),
            ),
            (
                "aws: {secretmanager: {}}",
                "keystore.aws.secretmanager",
                Some("keystore.aws.secretsmanager"),
            ),
            (
                "aws: {secretsmanager: {kmsky: k}}",
                "keystore.aws.secretsmanager.kmsky",
                Some("keystore.aws.secretsmanager.kmskey"),
            ),
            (
                "aws: {secretsmanager: {credentials: {secretky: s}}}",
                "keystore.aws.secretsmanager.credentials.secretky",
                Some("keystore.aws.secretsmanager.credentials.secretkey"),
            ),
            (
                "gcp: {secretmanager: {projectid: p}}",
                "keystore.gcp.secretmanager.projectid",
                Some("keystore.gcp.secretmanager.project_id"),
            ),
            (
                "gcp: {secretmanager: {credentials: {private_keyid: k}}}",
                "keystore.gcp.secretmanager.credentials.private_keyid",
                Some("keystore.gcp.secretmanager.credentials.private_key_id"),
            ),
            (
                "azure: {keyvault: {credentials: {client_secrt: s}}}",
                "keystore.azure.keyvault.credentials.client_secrt",
                Some("keystore.azure.keyvault.credentials.client_secret"),
            ),
            (
                "azure: {keyvault: {managed_identity: {clientid: c}}}",
                "keystore.azure.keyvault.managed_identity.clientid",
                Some("keystore.azure.keyvault.managed_identity.client_id"),
            ),
            (
                "fortanix: {sdkms: {groupid: g}}",
                "keystore.fortanix.sdkms.groupid",
                Some("keystore.fortanix.sdkms.group_id"),
            ),
            (
                "fortanix: {sdkms: {credentials: {api_key: k}}}",
                "keystore.fortanix.sdkms.credentials.api_key",
                None,
            ),
            (
                "gemalto: {keysecure: {credentials: {tokn: t}}}",
                "keystore.gemalto.keysecure.credentials.tokn",
                Some("keystore.gemalto.keysecure.credentials.token"),
            ),
            // Only a CA in these blocks' tls: a client certificate is not theirs.
            (
                "gemalto: {keysecure: {tls: {cert: c}}}",
                "keystore.gemalto.keysecure.tls.cert",
                None,
            ),
            (
                "entrust: {keycontrol: {boxid: b}}",
                "keystore.entrust.keycontrol.boxid",
                Some("keystore.entrust.keycontrol.box_id"),
            ),
            (
                "entrust: {keycontrol: {credentials: {usrname: u}}}",
                "keystore.entrust.keycontrol.credentials.usrname",
                Some("keystore.entrust.keycontrol.credentials.username"),
            ),
        ];
        for (block, path, meant) in cases {
            let w = warnings_of(&format!("keystore:\n  {block}\n"));
            let hint = meant
                .map(|m| format!("; did you mean '{m}'?"))
                .unwrap_or_default();
            assert_eq!(
                w,
                [format!("{path}: unknown key, ignored{hint}")],
                "{block}"
            );
        }
    }

    /// A config with every key the keystore parsers read, one per block (and auth variant).
    const FULL_KEYSTORE_BLOCKS: &[&str] = &[
        "fs: {path: ./keys}",
        "vault: {endpoint: https://v:8200, engine: kv, version: v2, namespace: ns, prefix: p, \
         approle: {engine: a, namespace: n, id: i, secret: s, retry: 15s}, \
         transit: {engine: t, key: k}, tls: {key: k.pem, cert: c.pem, ca: ca.pem}, status: {ping: 10s}}",
        "vault: {endpoint: https://v:8200, \
         kubernetes: {engine: k, namespace: n, role: r, jwt: token-text, retry: 15s}}",
        "aws: {secretsmanager: {endpoint: https://sm, region: us-east-1, kmskey: k, \
         credentials: {accesskey: a, secretkey: s, token: t}}}",
        "gcp: {secretmanager: {project_id: p, endpoint: https://sm, scopes: [s], token_uri: https://t, \
         credentials: {client_email: e, client_id: i, private_key_id: k, private_key: pk}}}",
        "azure: {keyvault: {endpoint: https://kv, authority_host: https://login, \
         credentials: {tenant_id: t, client_id: c, client_secret: s}}}",
        "azure: {keyvault: {endpoint: https://kv, managed_identity: {client_id: c}}}",
        "fortanix: {sdkms: {endpoint: https://dsm, group_id: g, credentials: {key: k}, tls: {ca: ca.pem}}}",
        "gemalto: {keysecure: {endpoint: https://cm, credentials: {token: t, domain: d, retry: 15s}, \
         tls: {ca: ca.pem}}}",
        "entrust: {keycontrol: {endpoint: https://kc, vault_id: v, box_id: b, \
         credentials: {username: u, password: p}, tls: {ca: ca.pem}}}",
    ];

    /// Every key a block registers is one its parser accepts: each full block parses without
    /// a warning (in debug builds the parse also proves the parser reads no unregistered
    /// key), and together they use every registered key, so a key registered for the lint
    /// alone, or added without a test here, fails.
    #[test]
    fn every_registered_keystore_key_is_parsed_and_every_parsed_key_is_registered() {
        let mut used = std::collections::BTreeSet::new();
        for block in FULL_KEYSTORE_BLOCKS {
            let yaml = format!(
                "admin: {{identity: disabled}}\ntls: {{key: k, cert: c}}\nkeystore:\n  {block}\n"
            );
            let config =
                super::super::parse(&yaml, &|_| None).unwrap_or_else(|e| panic!("{block}: {e}"));
            assert!(config.warnings.is_empty(), "{block}: {:?}", config.warnings);
            let root: Value = serde_yaml::from_str(&yaml).unwrap();
            value_paths(&KEYSTORE, &root["keystore"], "keystore", &mut used);
        }
        let mut registered = std::collections::BTreeSet::new();
        shape_paths(&KEYSTORE, "keystore", &mut registered);
        assert_eq!(used, registered);
    }

    /// Every top-level (non-keystore) key, route and policy entries and list items included.
    const FULL_CONFIG: &str = "version: v1\naddress: 0.0.0.0:7373\nadmin: {identity: disabled}\n\
        tls: {key: k.pem, cert: c.pem, password: pw, auth: on, ca: ca.pem, \
        proxy: {identities: [aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa], header: {cert: X-Cert}}}\n\
        api: {/v1/status: {timeout: 5s, skip_auth: true}}\n\
        policy: {p: {allow: [/v1/status], deny: [/v1/key/delete/*], \
        identities: [bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb]}}\n\
        cache: {expiry: {any: 5m, unused: 1m, offline: 1h}}\nlog: {error: on, audit: off, audit_all: true}\n\
        keys: [{name: k1}]\nenclaves: [tenant-1]\ncompat: {policy_patterns: glob}\nkeystore: {fs: {path: ./keys}}\n";

    /// The top level's keys are registered in one place (`ROOT`, read by the parser through
    /// `Node`): a config with every one parses without a warning (in debug builds, so every
    /// test run, the parse panics if the parser reads a key `ROOT` does not list), uses
    /// every registered key, and each key, given a mapping where a value belongs, makes the
    /// parse fail naming it: the parser reads every key it registers.
    #[test]
    fn every_registered_top_level_key_is_parsed_and_every_parsed_key_is_registered() {
        let config = super::super::parse(FULL_CONFIG, &|_| None).unwrap();
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        let root: Value = serde_yaml::from_str(FULL_CONFIG).unwrap();
        let mut used = std::collections::BTreeSet::new();
        value_paths(&ROOT, &root, "", &mut used);
        let mut registered = std::collections::BTreeSet::new();
        shape_paths(&ROOT, "", &mut registered);
        used.retain(|p| !p.starts_with("keystore."));
        registered.retain(|p| !p.starts_with("keystore."));
        assert_eq!(used, registered);

        let mut leaves = Vec::new();
        concrete_leaves(&root, "", &mut leaves);
        leaves.retain(|(path, _)| !path.starts_with("keystore."));
        assert_eq!(leaves.len(), used.len(), "{leaves:?}");
        for (path, at) in leaves {
            let mut broken = root.clone();
            let mut v = &mut broken;
            for step in &at {
                v = match step {
                    Step::Key(k) => &mut v[k.as_str()],
                    Step::Item(i) => &mut v[*i],
                };
            }
            *v = serde_yaml::from_str("{not: a value}").unwrap();
            let text = serde_yaml::to_string(&broken).unwrap();
            let err = match super::super::parse(&text, &|_| None) {
                Ok(_) => panic!("{path}: a mapping parses as its value: the parser never reads it"),
                Err(e) => e.0,
            };
            assert!(err.starts_with(&format!("{path}: ")), "{path}: {err}");
        }
    }

    #[derive(Clone, Debug)]
    enum Step {
        Key(String),
        Item(usize),
    }

    /// Each scalar or list of `v` with its dotted path and the steps to it.
    fn concrete_leaves(v: &Value, path: &str, out: &mut Vec<(String, Vec<Step>)>) {
        fn go(v: &Value, path: &str, at: &mut Vec<Step>, out: &mut Vec<(String, Vec<Step>)>) {
            match v {
                Value::Mapping(map) => {
                    for (k, v) in map {
                        at.push(Step::Key(key_text(k)));
                        go(v, &join(path, &key_text(k)), at, out);
                        at.pop();
                    }
                }
                Value::Sequence(items) if items.iter().any(Value::is_mapping) => {
                    for (i, v) in items.iter().enumerate() {
                        at.push(Step::Item(i));
                        go(v, &format!("{path}[{i}]"), at, out);
                        at.pop();
                    }
                }
                _ => out.push((path.to_string(), at.clone())),
            }
        }
        go(v, path, &mut Vec::new(), out);
    }

    /// The paths of `v`'s leaves in `shape`'s terms: a route or policy name is `*`, a list
    /// item `[]`; a key `shape` does not list is a leaf (so it shows in a comparison).
    fn value_paths(
        shape: &Shape,
        v: &Value,
        path: &str,
        out: &mut std::collections::BTreeSet<String>,
    ) {
        match (shape, v) {
            (Map(_), Value::Mapping(map)) => {
                for (k, v) in map {
                    let key = key_text(k);
                    match shape.field(&key) {
                        Some(inner) => value_paths(inner, v, &join(path, &key), out),
                        None => {
                            out.insert(join(path, &key));
                        }
                    }
                }
            }
            (Names(inner), Value::Mapping(map)) => {
                for v in map.values() {
                    value_paths(inner, v, &join(path, "*"), out);
                }
            }
            (List(inner), Value::Sequence(items)) => {
                for v in items {
                    value_paths(inner, v, &format!("{path}[]"), out);
                }
            }
            _ => {
                out.insert(path.to_string());
            }
        }
    }

    fn shape_paths(shape: &Shape, path: &str, out: &mut std::collections::BTreeSet<String>) {
        match shape {
            Map(_) => {
                for key in shape.keys() {
                    shape_paths(shape.field(key).unwrap(), &join(path, key), out);
                }
            }
            Names(inner) => shape_paths(inner, &join(path, "*"), out),
            List(inner) => shape_paths(inner, &format!("{path}[]"), out),
            // Blocks this build does not implement (`kes`) have no keys of ours.
            Shape::Any => {}
            Shape::Leaf => {
                out.insert(path.to_string());
            }
        }
    }
}
