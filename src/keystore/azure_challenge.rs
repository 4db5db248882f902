//! Key Vault's authentication challenge: which token audience and tenant a vault wants.
//!
//! Key Vault answers a request without a token with `401` and
//! `WWW-Authenticate: Bearer authorization="https://login…/<tenant>", resource="https://vault.azure.net"`
//! (or `scope="…"`, and `authorization_uri` for `authorization`). The Azure SDK that upstream
//! uses learns the scope and tenant from it instead of assuming public Azure, so vaults in
//! sovereign clouds (`*.vault.azure.cn`, `*.vault.usgovcloudapi.net`, …) work. As the SDK, the
//! scope's host must be a parent domain of the vault's host, so a vault cannot ask for a token
//! for another service; an endpoint given as an IP address (no domain to compare) is exempt.

/// What a vault's challenge asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The OAuth2 v2.0 scope (`https://vault.azure.net/.default`).
    pub scope: String,
    /// The v1 resource the scope names (`https://vault.azure.net`), for managed identity.
    pub resource: String,
    /// The tenant in `authorization`'s last path segment, when there is one.
    pub tenant: Option<String>,
}

/// Parses a `WWW-Authenticate` value. `None` when it is not a Bearer challenge naming a scope
/// or resource.
pub fn parse(header: &str) -> Option<Challenge> {
    let rest = header.trim();
    let (scheme, params) = rest.split_once(' ').unwrap_or((rest, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut scope = None;
    let mut resource = None;
    let mut authorization = None;
    for part in params.split(',') {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').trim();
        if v.is_empty() {
            continue;
        }
        match k.trim().to_ascii_lowercase().as_str() {
            "scope" => scope = Some(v.to_string()),
            "resource" => resource = Some(v.to_string()),
            "authorization" | "authorization_uri" => authorization = Some(v.to_string()),
            _ => {}
        }
    }
    let (scope, resource) = match (scope, resource) {
        (Some(s), _) => {
            let r = s.strip_suffix("/.default").unwrap_or(&s).to_string();
            (s, r)
        }
        (None, Some(r)) => (format!("{}/.default", r.trim_end_matches('/')), r),
        (None, None) => return None,
    };
    // Scopes and resources go into a form or query: printable ASCII only.
    if !scope.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let tenant = authorization
        .as_deref()
        .map(|a| a.trim_end_matches('/'))
        .and_then(|a| a.rsplit('/').next())
        .filter(|t| !t.is_empty() && !t.contains(':'))
        .map(str::to_string);
    Some(Challenge {
        scope,
        resource,
        tenant,
    })
}

/// Refuses a challenge whose scope host is not the vault's domain (`vault_host` without port).
pub fn verify(vault_host: &str, c: &Challenge) -> Result<(), String> {
    if vault_host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let rest = c
        .scope
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(&c.scope);
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    let vault = vault_host.to_ascii_lowercase();
    if host.is_empty() || !vault.ends_with(&format!(".{}", host.to_ascii_lowercase())) {
        return Err(format!(
            "the vault's challenge asks for a token for '{}', which is not a domain of '{vault_host}'",
            c.resource
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_as_key_vault_sends_them() {
        let c = parse(
            r#"Bearer authorization="https://login.chinacloudapi.cn/72f9-t", resource="https://vault.azure.cn""#,
        )
        .unwrap();
        assert_eq!(c.scope, "https://vault.azure.cn/.default");
        assert_eq!(c.resource, "https://vault.azure.cn");
        assert_eq!(c.tenant.as_deref(), Some("72f9-t"));
        let c = parse(r#"Bearer authorization_uri="https://login.microsoftonline.us/t/", scope="https://vault.usgovcloudapi.net/.default""#).unwrap();
        assert_eq!(c.resource, "https://vault.usgovcloudapi.net");
        assert_eq!(c.tenant.as_deref(), Some("t"));
        assert!(parse(r#"Basic realm="x""#).is_none());
        assert!(parse(r#"Bearer authorization="https://login/t""#).is_none());
    }

    #[test]
    fn a_vault_may_only_ask_for_its_own_domain() {
        let c = parse(r#"Bearer resource="https://vault.azure.cn""#).unwrap();
        verify("my-vault.vault.azure.cn", &c).unwrap();
        verify("127.0.0.1", &c).unwrap();
        let e = verify("my-vault.vault.azure.net", &c).unwrap_err();
        assert!(e.contains("'https://vault.azure.cn'"), "{e}");
        let m = parse(r#"Bearer resource="https://management.azure.com""#).unwrap();
        assert!(verify("my-vault.vault.azure.net", &m).is_err());
        assert!(
            verify("vault.azure.cn", &c).is_err(),
            "a parent, not the host"
        );
    }
}
