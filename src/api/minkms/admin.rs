//! Identities and policies over the MinKMS API, as far as they map onto ours: they are the
//! config file's (`admin.identity`, `policy.<name>.{allow,deny,identities}`), so the
//! commands that read them are served and those that would change them answer
//! [`ApiError::kms_config_only`] (`501`: never served here; edit the config and reload).
//!
//! - IDENTITY:GET / IDENTITY:LIST: the admin (`SysAdmin`) and every hex (or `h1:`) identity
//!   a policy names (`User`, with its policy), in the `h1:` form kms-go parses; created at
//!   the server's start by the admin, as the KES API says.
//! - POLICY:GET / POLICY:STATUS / POLICY:LIST: each config policy. Its `allow`/`deny` paths
//!   become kms-go's per-command rule sets in the request's enclave: a path under a
//!   command's route (`/v1/key/generate/` in `default`, `/v1/kms/<E>/key/generate/` in
//!   enclave `E`) gives that command the rest of the path as a pattern; with the current
//!   (prefix) pattern syntax a path `…*` whose literal part is a prefix of the route (such
//!   as `/v1/key/*`) gives the command `*`. Other paths (other KES routes, wildcards inside
//!   the route) have no MinKMS command and are left out, and so is KEY:IMPORT, for which
//!   kms-go has no policy name.
//!
//! All are the admin's, except that any identity may read its own IDENTITY:GET.

use super::admin_message::{self as am, IdentityInfo, PolicyInfo, RuleSet};
use super::enclave::Enclave;
use super::frame::{self, Command};
use super::message::{self, List};
use super::{ApiError, Caller, Core, LIST_PAGE_KEYS_MAX};
use crate::api::router::is_valid_name;
use crate::auth::identity::Identity;
use crate::auth::policy::{PatternSyntax, Policy, PolicySet};

/// The key commands a policy's paths can map onto, by code, with kms-go's names for them.
const MAPPED: [(Command, &str); 8] = [
    (Command::KeyCreate, "KEY:CREATE"),
    (Command::KeyDelete, "KEY:DELETE"),
    (Command::KeyStatus, "KEY:STATUS"),
    (Command::KeyEncrypt, "KEY:ENCRYPT"),
    (Command::KeyDecrypt, "KEY:DECRYPT"),
    (Command::KeyGenerate, "KEY:GENERATE"),
    (Command::KeyList, "KEY:LIST"),
    (Command::KeyMac, "KEY:MAC"),
];

/// Serves the IDENTITY:* and POLICY:* commands for `caller`.
pub(super) fn serve(
    core: &Core,
    caller: &Caller<'_>,
    command: Command,
    message: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ApiError> {
    let bad = |e| ApiError::kms_bad_message(command.name(), e);
    let set = &caller.settings.policies;
    let started = core.shared.started_at;
    let admin_h1 = set.admin_identity().map(|i| i.to_h1()).unwrap_or_default();
    let mut path = String::new();
    if command == Command::IdentityGet {
        let text = message::decode_enclave_name(message).map_err(bad)?;
        let identity = Identity::from_h1(text)
            .or_else(|| Identity::from_hex(text))
            .ok_or_else(|| ApiError::kms_invalid_identity(text))?;
        if caller.identity != Some(identity) {
            caller.authorize(command, "", &mut path)?;
        }
        let h1 = identity.to_h1();
        let (privilege, policy) =
            privilege_of(set, &identity).ok_or(ApiError::IDENTITY_NOT_FOUND)?;
        let info = IdentityInfo {
            identity: &h1,
            privilege,
            policy,
            created_at: started,
            created_by: created_by(privilege, &admin_h1),
        };
        frame::put_frame(out, command, |b| am::put_identity(b, &info));
        return Ok(());
    }
    caller.authorize(command, "", &mut path)?;
    match command {
        Command::IdentityList => {
            let m = List::decode(message).map_err(bad)?;
            let mut all: Vec<(String, u32, &str)> = set
                .admin_identity()
                .into_iter()
                .chain(
                    set.policies
                        .iter()
                        .flat_map(|p| p.identities.iter().filter_map(|id| Identity::from_hex(id))),
                )
                .filter_map(|id| {
                    let (privilege, policy) = privilege_of(set, &id)?;
                    Some((id.to_h1(), privilege, policy))
                })
                .collect();
            all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            all.dedup_by(|a, b| a.0 == b.0);
            let (page, continue_at) = page(&all, |e| &e.0, &m);
            frame::put_frame(out, command, |b| {
                for (h1, privilege, policy) in page {
                    am::put_identity_entry(
                        b,
                        &IdentityInfo {
                            identity: h1,
                            privilege: *privilege,
                            policy,
                            created_at: started,
                            created_by: created_by(*privilege, &admin_h1),
                        },
                    );
                }
                message::put_continue_at(b, continue_at);
            });
        }
        Command::PolicyGet | Command::PolicyStatus => {
            let name = message::decode_enclave_name(message).map_err(bad)?;
            if !is_valid_name(name) {
                return Err(ApiError::invalid_policy_name(name));
            }
            let policy = set.policy(name).ok_or(ApiError::POLICY_NOT_FOUND)?;
            let info = PolicyInfo {
                name,
                created_at: started,
                created_by: &admin_h1,
            };
            if command == Command::PolicyStatus {
                frame::put_frame(out, command, |b| am::put_policy_status(b, &info));
            } else {
                let allow = rule_sets(&policy.allow, caller.enclave, set.syntax);
                let deny = rule_sets(&policy.deny, caller.enclave, set.syntax);
                frame::put_frame(out, command, |b| am::put_policy(b, &info, &allow, &deny));
            }
        }
        Command::PolicyList => {
            let m = List::decode(message).map_err(bad)?;
            let mut all: Vec<&Policy> = set.policies.iter().collect();
            all.sort_unstable_by(|a, b| a.name.cmp(&b.name));
            let (page, continue_at) = page(&all, |p| &p.name, &m);
            frame::put_frame(out, command, |b| {
                for p in page {
                    am::put_policy_entry(
                        b,
                        &PolicyInfo {
                            name: &p.name,
                            created_at: started,
                            created_by: &admin_h1,
                        },
                    );
                }
                message::put_continue_at(b, continue_at);
            });
        }
        _ => return Err(ApiError::kms_config_only(command.name())),
    }
    Ok(())
}

/// kms-go's privilege and the policy name of `identity`; `None`: neither admin nor in a
/// policy.
fn privilege_of<'s>(set: &'s PolicySet, identity: &Identity) -> Option<(u32, &'s str)> {
    if set.is_admin(identity) {
        return Some((am::PRIVILEGE_SYS_ADMIN, ""));
    }
    let policy = set.policy_of(identity)?;
    Some((am::PRIVILEGE_USER, policy.name.as_str()))
}

/// Who created an identity: the admin made the others; the admin itself has no creator.
fn created_by(privilege: u32, admin_h1: &str) -> &str {
    if privilege == am::PRIVILEGE_SYS_ADMIN {
        ""
    } else {
        admin_h1
    }
}

/// The entries of a sorted list with the request's prefix from its `continue_at` on, at
/// most a page ([`LIST_PAGE_KEYS_MAX`], or the request's smaller `limit`), and where the next
/// page starts (empty: no more).
fn page<'a, T>(all: &'a [T], name: impl Fn(&T) -> &str, m: &List<'_>) -> (&'a [T], &'a str) {
    let limit = match m.limit as usize {
        0 => LIST_PAGE_KEYS_MAX,
        n => n.min(LIST_PAGE_KEYS_MAX),
    };
    let from = all
        .iter()
        .position(|e| name(e) >= m.continue_at && name(e).starts_with(m.prefix))
        .unwrap_or(all.len());
    let mut end = from;
    while end < all.len() && end - from < limit && name(&all[end]).starts_with(m.prefix) {
        end += 1;
    }
    let continue_at = match all.get(end) {
        Some(e) if name(e).starts_with(m.prefix) => name(e),
        _ => "",
    };
    (&all[from..end], continue_at)
}

/// A policy's `allow` or `deny` paths as kms-go's per-command rule sets in `enclave`.
fn rule_sets<'p>(
    paths: &'p [String],
    enclave: Enclave<'_>,
    syntax: PatternSyntax,
) -> Vec<RuleSet<'p>> {
    let mut route = String::new();
    let mut sets = Vec::new();
    for (command, text) in MAPPED {
        if enclave.route_prefix(command, &mut route).is_none() {
            continue;
        }
        let mut patterns: Vec<&str> = Vec::new();
        for p in paths {
            let pattern = match p.strip_prefix(route.as_str()) {
                Some(rest) if !rest.is_empty() => rest,
                Some(_) => continue,
                None => match p.strip_suffix('*') {
                    Some(stem) if syntax == PatternSyntax::Prefix && route.starts_with(stem) => "*",
                    _ => continue,
                },
            };
            if !patterns.contains(&pattern) {
                patterns.push(pattern);
            }
        }
        if !patterns.is_empty() {
            sets.push(RuleSet {
                command: text,
                patterns,
            });
        }
    }
    sets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_paths_map_onto_commands_per_enclave() {
        let paths: Vec<String> = [
            "/v1/key/generate/minio-*",
            "/v1/key/decrypt/minio-*",
            "/v1/key/list/*",
            "/v1/status",
            "/v1/key/import/x",
            "/v1/kms/tenant-1/key/generate/t-*",
            "/v1/kms/tenant-1/key/*",
        ]
        .map(String::from)
        .to_vec();
        let sets = rule_sets(&paths, Enclave::Default, PatternSyntax::Prefix);
        let got: Vec<(&str, Vec<&str>)> = sets
            .iter()
            .map(|s| (s.command, s.patterns.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("KEY:DECRYPT", vec!["minio-*"]),
                ("KEY:GENERATE", vec!["minio-*"]),
                ("KEY:LIST", vec!["*"]),
            ]
        );
        let sets = rule_sets(&paths, Enclave::Named("tenant-1"), PatternSyntax::Prefix);
        let generate = sets.iter().find(|s| s.command == "KEY:GENERATE").unwrap();
        assert_eq!(generate.patterns, ["t-*", "*"]);
        // `/v1/kms/tenant-1/key/*` covers every command of the enclave.
        assert_eq!(sets.len(), MAPPED.len());
        assert!(rule_sets(&paths, Enclave::Named("tenant-2"), PatternSyntax::Prefix).is_empty());
        // In glob syntax `*` does not cross `/`: no command is covered whole.
        let sets = rule_sets(&paths, Enclave::Named("tenant-1"), PatternSyntax::Glob);
        assert_eq!(sets.len(), 1);
    }

    #[test]
    fn pages_follow_prefix_continue_at_and_limit() {
        let all = ["a1", "a2", "a3", "b1"];
        let m = |prefix, continue_at, limit| List {
            prefix,
            continue_at,
            limit,
        };
        fn id<'x>(s: &'x &str) -> &'x str {
            s
        }
        assert_eq!(page(&all, id, &m("a", "", 0)), (&all[..3], ""));
        assert_eq!(page(&all, id, &m("a", "", 2)), (&all[..2], "a3"));
        assert_eq!(page(&all, id, &m("a", "a3", 2)), (&all[2..3], ""));
        assert_eq!(page(&all, id, &m("", "", 3)), (&all[..3], "b1"));
        assert_eq!(page(&all, id, &m("c", "", 0)).0.len(), 0);
    }
}
