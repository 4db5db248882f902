//! The MinKMS identity and policy responses, written from the field numbers and types of
//! kms-go's `response.proto` and `rule.proto`.

use super::message::put_timestamp;
use crate::api::proto::{put_bytes, put_message, put_uint};
use crate::time::Timestamp;

/// kms-go's `Privilege` numbers: `SysAdmin` (the admin)…
pub const PRIVILEGE_SYS_ADMIN: u32 = 1;
/// …and `User` (an identity a policy names).
pub const PRIVILEGE_USER: u32 = 3;

/// An identity as `IdentityResponse` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityInfo<'a> {
    /// `h1:` form.
    pub identity: &'a str,
    pub privilege: u32,
    /// The policy's name; empty for the admin.
    pub policy: &'a str,
    pub created_at: Timestamp,
    /// `h1:` form or empty.
    pub created_by: &'a str,
}

/// `IdentityResponse`.
pub fn put_identity(out: &mut Vec<u8>, i: &IdentityInfo<'_>) {
    put_bytes(out, 1, i.identity.as_bytes());
    put_uint(out, 2, u64::from(i.privilege));
    put_bytes(out, 3, i.policy.as_bytes());
    put_timestamp(out, 4, i.created_at);
    put_bytes(out, 5, i.created_by.as_bytes());
}

/// One entry of `ListIdentitiesResponse.identities` (its `continue_at` is field 2, as in
/// every list response: `message::put_continue_at`).
pub fn put_identity_entry(out: &mut Vec<u8>, i: &IdentityInfo<'_>) {
    put_message(out, 1, |b| put_identity(b, i));
}

/// A policy as `PolicyStatusResponse` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo<'a> {
    pub name: &'a str,
    pub created_at: Timestamp,
    /// `h1:` form or empty.
    pub created_by: &'a str,
}

/// `PolicyStatusResponse`.
pub fn put_policy_status(out: &mut Vec<u8>, p: &PolicyInfo<'_>) {
    put_bytes(out, 1, p.name.as_bytes());
    put_timestamp(out, 4, p.created_at);
    put_bytes(out, 5, p.created_by.as_bytes());
}

/// One entry of `ListPoliciesResponse.policies`.
pub fn put_policy_entry(out: &mut Vec<u8>, p: &PolicyInfo<'_>) {
    put_message(out, 1, |b| put_policy_status(b, p));
}

/// One entry of a policy's `allow` or `deny` map: a command's name (kms-go's text, such as
/// `KEY:GENERATE`) and its `RuleSet`'s patterns, each with the empty `Rule`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet<'a> {
    pub command: &'static str,
    pub patterns: Vec<&'a str>,
}

/// `PolicyResponse`.
pub fn put_policy(out: &mut Vec<u8>, p: &PolicyInfo<'_>, allow: &[RuleSet], deny: &[RuleSet]) {
    put_bytes(out, 1, p.name.as_bytes());
    put_rule_sets(out, 2, allow);
    put_rule_sets(out, 3, deny);
    put_timestamp(out, 4, p.created_at);
    put_bytes(out, 5, p.created_by.as_bytes());
}

/// A `map<string, RuleSet>` field: one entry message (1: key, 2: value) per command, and in
/// each `RuleSet` one `map<string, Rule>` entry (field 1) per pattern.
fn put_rule_sets(out: &mut Vec<u8>, field: u32, sets: &[RuleSet]) {
    for set in sets {
        put_message(out, field, |entry| {
            put_bytes(entry, 1, set.command.as_bytes());
            put_message(entry, 2, |rules| {
                for pattern in &set.patterns {
                    put_message(rules, 1, |rule| {
                        put_bytes(rule, 1, pattern.as_bytes());
                        put_message(rule, 2, |_| {});
                    });
                }
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::proto::{fields, Value};

    fn parse(b: &[u8]) -> Vec<(u32, Value<'_>)> {
        fields(b).map(Result::unwrap).collect()
    }

    #[test]
    fn rule_sets_are_maps_of_maps() {
        let mut out = Vec::new();
        let info = PolicyInfo {
            name: "minio",
            created_at: Timestamp {
                seconds: 1,
                nanos: 0,
            },
            created_by: "",
        };
        let allow = [RuleSet {
            command: "KEY:GENERATE",
            patterns: vec!["minio-*", "*"],
        }];
        put_policy(&mut out, &info, &allow, &[]);
        let top = parse(&out);
        assert_eq!(top[0], (1, Value::Bytes(b"minio")));
        let Value::Bytes(entry) = top[1].1 else {
            panic!("{top:?}")
        };
        assert_eq!(top[1].0, 2);
        let entry = parse(entry);
        assert_eq!(entry[0], (1, Value::Bytes(b"KEY:GENERATE")));
        let Value::Bytes(set) = entry[1].1 else {
            panic!("{entry:?}")
        };
        let rules = parse(set);
        assert_eq!(rules.len(), 2);
        let Value::Bytes(rule) = rules[0].1 else {
            panic!("{rules:?}")
        };
        assert_eq!(
            parse(rule),
            vec![(1, Value::Bytes(b"minio-*")), (2, Value::Bytes(b""))]
        );
        // No deny field; the creation time is field 4.
        assert_eq!(top[2].0, 4);
        assert_eq!(top.len(), 3);
    }
}
