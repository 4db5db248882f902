//! Policy and identity routes (http-api.md §5.15–§5.20). Policies are static config, so these
//! handlers read the shared, immutable [`PolicySet`](crate::auth::PolicySet) and never block.

use super::json::JsonWriter;
use super::router::{is_valid_name, is_valid_pattern, pattern_prefix};
use super::{ApiError, Core, Peer, Reply, Request};
use crate::auth::policy::Policy;

fn started_at(core: &Core) -> String {
    core.shared.started_at.to_rfc3339()
}

fn write_patterns(out: &mut Vec<u8>, patterns: &[String]) {
    out.push(b'{');
    for (i, p) in patterns.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        super::json::write_string(out, p);
        out.extend_from_slice(b":{}");
    }
    out.push(b'}');
}

fn policy_named<'r>(req: &'r Request<'_>, name: &str) -> Result<&'r Policy, ApiError> {
    if !is_valid_name(name) {
        return Err(ApiError::invalid_policy_name(name));
    }
    req.settings
        .policies
        .policy(name)
        .ok_or(ApiError::POLICY_NOT_FOUND)
}

pub fn describe_policy(
    core: &Core,
    req: &Request<'_>,
    out: &mut Vec<u8>,
) -> Result<Reply, ApiError> {
    let policy = policy_named(req, req.argument)?;
    let mut w = JsonWriter::object(out);
    w.string("name", &policy.name)
        .string("created_at", &started_at(core))
        .string("created_by", &req.settings.policies.admin);
    w.finish();
    Ok(Reply::Json)
}

pub fn read_policy(core: &Core, req: &Request<'_>, out: &mut Vec<u8>) -> Result<Reply, ApiError> {
    let policy = policy_named(req, req.argument)?;
    let mut allow = Vec::new();
    let mut deny = Vec::new();
    write_patterns(&mut allow, &policy.allow);
    write_patterns(&mut deny, &policy.deny);
    let mut w = JsonWriter::object(out);
    w.string("name", &policy.name);
    if !policy.allow.is_empty() {
        w.raw("allow", &allow);
    }
    if !policy.deny.is_empty() {
        w.raw("deny", &deny);
    }
    w.string("created_at", &started_at(core))
        .string("created_by", &req.settings.policies.admin);
    w.finish();
    Ok(Reply::Json)
}

fn sorted_matches<'a>(
    names: impl Iterator<Item = &'a str>,
    pattern: &str,
) -> Result<Vec<&'a str>, ApiError> {
    if !is_valid_pattern(pattern) {
        return Err(ApiError::invalid_pattern(pattern));
    }
    let prefix = pattern_prefix(pattern);
    let mut names: Vec<&str> = names.filter(|n| n.starts_with(prefix)).collect();
    names.sort_unstable();
    names.dedup();
    Ok(names)
}

pub async fn list_policies(req: &Request<'_>, out: &mut Vec<u8>) -> Result<Reply, ApiError> {
    let policies = &req.settings.policies.policies;
    let names = sorted_matches(policies.iter().map(|p| p.name.as_str()), req.argument)?;
    let mut w = JsonWriter::object(out);
    w.string_array_sliced("names", names)
        .await
        .string("continue_at", "");
    w.finish();
    Ok(Reply::Json)
}

pub fn describe_identity(
    core: &Core,
    req: &Request<'_>,
    out: &mut Vec<u8>,
) -> Result<Reply, ApiError> {
    let arg = req.argument;
    if !is_valid_name(arg) {
        return Err(ApiError::invalid_identity(arg));
    }
    let set = &req.settings.policies;
    let mut w = JsonWriter::object(out);
    if arg == set.admin {
        w.bool("admin", true)
            .string("created_at", &started_at(core));
        w.finish();
        return Ok(Reply::Json);
    }
    // Upstream looks the plain string up: identities in the config need not be hex.
    let policy = set
        .policy_of_name(arg)
        .ok_or(ApiError::IDENTITY_NOT_FOUND)?;
    w.string("policy", &policy.name)
        .string("created_at", &started_at(core))
        .string("created_by", &set.admin);
    w.finish();
    Ok(Reply::Json)
}

pub async fn list_identities(req: &Request<'_>, out: &mut Vec<u8>) -> Result<Reply, ApiError> {
    let set = &req.settings.policies;
    let all = std::iter::once(set.admin.as_str()).chain(
        set.policies
            .iter()
            .flat_map(|p| p.identities.iter().map(String::as_str)),
    );
    let names = sorted_matches(all, req.argument)?;
    let mut w = JsonWriter::object(out);
    w.string_array_sliced("identities", names)
        .await
        .string("continue_at", "");
    w.finish();
    Ok(Reply::Json)
}

/// Self-describe: the admin gets `{"identity","admin":true,"created_at"}`; a policy member gets
/// the flat 2023-10-03 shape kms-go decodes; anybody else 404 (http-api.md §5.20).
pub fn describe_self(core: &Core, req: &Request<'_>, out: &mut Vec<u8>) -> Result<Reply, ApiError> {
    let Peer::Identified(identity) = req.peer else {
        return Err(ApiError::IDENTITY_NOT_FOUND);
    };
    let set = &req.settings.policies;
    let hex = identity.to_hex();
    let mut w = JsonWriter::object(out);
    if set.is_admin(&identity) {
        w.string("identity", &hex)
            .bool("admin", true)
            .string("created_at", &started_at(core));
        w.finish();
        return Ok(Reply::Json);
    }
    let policy = set
        .policy_of(&identity)
        .ok_or(ApiError::IDENTITY_NOT_FOUND)?;
    let mut allow = Vec::new();
    let mut deny = Vec::new();
    write_patterns(&mut allow, &policy.allow);
    write_patterns(&mut deny, &policy.deny);
    w.string("identity", &hex)
        .bool("admin", false)
        .string("policy", &policy.name)
        .raw("allow", &allow)
        .raw("deny", &deny)
        .string("created_at", &started_at(core))
        .string("created_by", &set.admin);
    w.finish();
    Ok(Reply::Json)
}
