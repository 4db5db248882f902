//! The audit and error-log records of one answered request (http-api.md, logging): key
//! create/import/delete are always audited, every request with `log.audit: on`; errors go to
//! the error log. The hot path (a successful request nobody audits) allocates nothing.

use std::net::IpAddr;
use std::time::Duration;

use crate::api::{Core, Peer, Reply, ROUTES};

/// Audit and error-log records for one answered request.
#[allow(clippy::too_many_arguments)]
pub fn record(
    core: &Core,
    settings: &crate::api::settings::Settings,
    method: &str,
    path: &str,
    peer: Peer,
    ip: Option<IpAddr>,
    route_index: usize,
    reply: &Reply,
    elapsed: Duration,
) {
    use crate::api::RouteId;
    let status = reply.status();
    let route = &ROUTES[route_index];
    let audited = settings.audit_all
        || (status == 200
            && matches!(
                route.id,
                RouteId::KeyCreate | RouteId::KeyImport | RouteId::KeyDelete
            ));
    if !audited && !matches!(reply, Reply::Error(_)) {
        return; // the hot path: nothing to log, nothing to allocate
    }
    let identity = match peer {
        Peer::Identified(id) => Some(id.to_hex()),
        Peer::Unidentified(_) => None,
    };
    let logs = &core.shared.logs;
    if let Reply::Error(e) = reply {
        let level = if e.status >= 500 {
            crate::log::Level::ERROR
        } else {
            crate::log::Level::DEBUG
        };
        logs.error(
            level,
            &e.message,
            Some((method, path, ip, identity.as_deref())),
        );
    }
    let name = &path[route.path.len().min(path.len())..];
    let message = match (route.id, status) {
        (RouteId::KeyCreate | RouteId::KeyImport, 200) => format!("secret key '{name}' created"),
        (RouteId::KeyDelete, 200) => format!("secret key '{name}' deleted"),
        (RouteId::KeyRotate, 200) => format!("secret key '{name}' rotated"),
        _ if settings.audit_all => format!("{method} {path}"),
        _ => return,
    };
    logs.audit(&crate::log::AuditEvent {
        message: &message,
        method,
        path,
        ip,
        identity: identity.as_deref(),
        status,
        elapsed,
    });
}
