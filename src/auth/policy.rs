//! Policies compiled once into an immutable table that every core reads (auth-and-policy.md
//! §4–§5). Deciding a request does not allocate.

use std::collections::HashMap;

use super::Identity;

/// How policy patterns match request paths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PatternSyntax {
    /// Current (≥ 2024-01): a trailing `*` matches any suffix, including `/`; nothing else is
    /// special.
    #[default]
    Prefix,
    /// Legacy (≤ 2023-10): Go `path.Match` globs, where `*` does not cross `/`.
    Glob,
}

/// One policy from the config.
#[derive(Clone, Debug)]
pub struct Policy {
    pub name: String,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub identities: Vec<String>,
}

/// The outcome of an authorisation check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

/// Admin identity plus all policies, indexed by identity.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    /// The configured admin value; may be a placeholder such as `disabled`.
    pub admin: String,
    admin_identity: Option<Identity>,
    pub policies: Vec<Policy>,
    by_identity: HashMap<Identity, usize>,
    pub syntax: PatternSyntax,
}

impl PolicySet {
    /// Builds the table. Validation (one policy per identity, admin not in a policy, name
    /// rules) belongs to the config loader; here a later duplicate simply loses.
    pub fn new(admin: &str, policies: Vec<Policy>, syntax: PatternSyntax) -> PolicySet {
        let mut by_identity = HashMap::new();
        for (i, p) in policies.iter().enumerate() {
            for id in &p.identities {
                if let Some(identity) = Identity::from_hex(id) {
                    by_identity.entry(identity).or_insert(i);
                }
            }
        }
        PolicySet {
            admin: admin.to_string(),
            admin_identity: Identity::from_hex(admin),
            policies,
            by_identity,
            syntax,
        }
    }

    pub fn is_admin(&self, identity: &Identity) -> bool {
        self.admin_identity.as_ref() == Some(identity)
    }

    pub fn admin_identity(&self) -> Option<Identity> {
        self.admin_identity
    }

    /// The policy assigned to `identity`, if any.
    pub fn policy_of(&self, identity: &Identity) -> Option<&Policy> {
        self.by_identity.get(identity).map(|&i| &self.policies[i])
    }

    /// The policy whose `identities` list holds exactly `identity` as written in the config
    /// (upstream looks identities up as plain strings: `my-key` or `0` are as valid as hex).
    pub fn policy_of_name(&self, identity: &str) -> Option<&Policy> {
        // A later duplicate loses, as in `new`.
        self.policies
            .iter()
            .find(|p| p.identities.iter().any(|id| id == identity))
    }

    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.name == name)
    }

    /// auth-and-policy.md §5.2: admin → allow; no policy → deny; any deny match → deny; any
    /// allow match → allow; otherwise deny.
    pub fn decide(&self, identity: &Identity, path: &str) -> Decision {
        if self.is_admin(identity) {
            return Decision::Allow;
        }
        let Some(policy) = self.policy_of(identity) else {
            return Decision::Deny;
        };
        if policy.deny.iter().any(|d| self.matches(d, path)) {
            return Decision::Deny;
        }
        if policy.allow.iter().any(|a| self.matches(a, path)) {
            return Decision::Allow;
        }
        Decision::Deny
    }

    fn matches(&self, pattern: &str, path: &str) -> bool {
        match self.syntax {
            PatternSyntax::Prefix => prefix_match(pattern, path),
            PatternSyntax::Glob => glob_match(pattern.as_bytes(), path.as_bytes()).unwrap_or(false),
        }
    }
}

/// Current matching (§5.3).
pub fn prefix_match(pattern: &str, path: &str) -> bool {
    if pattern.is_empty() {
        return false;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => path == pattern,
    }
}

/// Go `path.Match`: `*` any run of non-`/` bytes, `?` one non-`/` byte, `[...]` classes with
/// ranges and `^` negation, `\` escapes. `None` for a malformed pattern (never matches).
pub fn glob_match(pattern: &[u8], name: &[u8]) -> Option<bool> {
    let (mut p, mut n) = (0usize, 0usize);
    // Backtracking point for the last `*`: (pattern index after star, name index).
    let mut star: Option<(usize, usize)> = None;
    loop {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p + 1, n));
                    p += 1;
                    continue;
                }
                b'?' if n < name.len() && name[n] != b'/' => {
                    p += 1;
                    n += 1;
                    continue;
                }
                b'[' if n < name.len() => {
                    let (matched, next) = match_class(pattern, p, name[n])?;
                    if matched && name[n] != b'/' {
                        p = next;
                        n += 1;
                        continue;
                    }
                }
                b'\\' => {
                    let c = *pattern.get(p + 1)?;
                    if n < name.len() && name[n] == c {
                        p += 2;
                        n += 1;
                        continue;
                    }
                }
                c if c != b'?' && c != b'[' && n < name.len() && name[n] == c => {
                    p += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
        } else if n == name.len() {
            return Some(true);
        }
        // Mismatch: let the last star swallow one more byte, unless that byte is `/`.
        match star {
            Some((sp, sn)) if sn < name.len() && name[sn] != b'/' => {
                star = Some((sp, sn + 1));
                p = sp;
                n = sn + 1;
            }
            _ => {
                // Go still reports malformed patterns even on mismatch; check the rest.
                validate_glob(&pattern[p.min(pattern.len())..])?;
                return Some(false);
            }
        }
    }
}

fn validate_glob(pattern: &[u8]) -> Option<()> {
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'\\' => {
                pattern.get(i + 1)?;
                i += 2;
            }
            b'[' => {
                let (_, next) = match_class(pattern, i, 0)?;
                i = next;
            }
            _ => i += 1,
        }
    }
    Some(())
}

/// Matches `c` against the class starting at `pattern[start] == b'['`; returns the result and
/// the index after the closing `]`, or `None` if malformed.
fn match_class(pattern: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negated = pattern.get(i) == Some(&b'^');
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let b = *pattern.get(i)?;
        if b == b']' && !first {
            i += 1;
            break;
        }
        first = false;
        let lo = class_char(pattern, &mut i)?;
        let hi = if pattern.get(i) == Some(&b'-') && pattern.get(i + 1) != Some(&b']') {
            i += 1;
            class_char(pattern, &mut i)?
        } else {
            lo
        };
        if lo <= c && c <= hi {
            matched = true;
        }
    }
    Some((matched != negated, i))
}

fn class_char(pattern: &[u8], i: &mut usize) -> Option<u8> {
    let b = *pattern.get(*i)?;
    if b == b'\\' {
        let c = *pattern.get(*i + 1)?;
        *i += 2;
        return Some(c);
    }
    if b == b'-' || b == b']' {
        return None;
    }
    *i += 1;
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_semantics_table() {
        let table = [
            (
                "/v1/key/generate/minio-*",
                "/v1/key/generate/minio-default",
                true,
            ),
            ("/v1/key/generate/minio-*", "/v1/key/generate/minio-", true),
            ("/v1/key/*", "/v1/key/decrypt/a", true),
            ("/v1/*", "/v1/key/create/x", true),
            ("/v1/key/*/minio-*", "/v1/key/create/minio-1", false),
            ("/v1/status", "/v1/status", true),
            ("/v1/status", "/v1/status/", false),
            ("/v1/key/list/*", "/v1/key/list/", true),
            ("/v1/key/list/", "/v1/key/list/", true),
            ("", "/v1/status", false),
        ];
        for (pattern, path, want) in table {
            assert_eq!(prefix_match(pattern, path), want, "{pattern} {path}");
        }
    }

    #[test]
    fn glob_semantics_table() {
        let table = [
            ("/v1/*", "/v1/key/create/x", Some(false)),
            ("/v1/key/*/minio-*", "/v1/key/create/minio-1", Some(true)),
            (
                "/v1/key/generate/minio-*",
                "/v1/key/generate/minio-a",
                Some(true),
            ),
            ("/v1/key/?et", "/v1/key/get", Some(true)),
            ("/v1/key/[a-c]x", "/v1/key/bx", Some(true)),
            ("/v1/key/[^a-c]x", "/v1/key/bx", Some(false)),
            ("/v1/key/\\*", "/v1/key/*", Some(true)),
            ("/v1/key/[", "/v1/key/a", None),
        ];
        for (pattern, path, want) in table {
            assert_eq!(
                glob_match(pattern.as_bytes(), path.as_bytes()),
                want,
                "{pattern} {path}"
            );
        }
    }

    #[test]
    fn decisions() {
        let admin = Identity::from_hex(&"a".repeat(64)).unwrap();
        let user = Identity::from_hex(&"b".repeat(64)).unwrap();
        let stranger = Identity::from_hex(&"c".repeat(64)).unwrap();
        let set = PolicySet::new(
            &admin.to_hex(),
            vec![Policy {
                name: "minio".into(),
                allow: vec!["/v1/key/*".into()],
                deny: vec!["/v1/key/delete/*".into()],
                identities: vec![user.to_hex()],
            }],
            PatternSyntax::Prefix,
        );
        assert_eq!(set.decide(&admin, "/v1/key/delete/x"), Decision::Allow);
        assert_eq!(set.decide(&user, "/v1/key/generate/x"), Decision::Allow);
        assert_eq!(set.decide(&user, "/v1/key/delete/x"), Decision::Deny);
        assert_eq!(set.decide(&user, "/v1/status"), Decision::Deny);
        assert_eq!(set.decide(&stranger, "/v1/key/generate/x"), Decision::Deny);
    }
}
