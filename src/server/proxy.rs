//! Requests relayed by a trusted TLS-terminating proxy (legacy `tls.proxy`): the client
//! certificate it forwards in a header, and the client address in `X-Forwarded-For`.
//!
//! A forwarded certificate is checked exactly as a direct client's certificate is checked in
//! the handshake — by the same verifier — so with `tls.auth: on` it must chain to the CA
//! roots, be within its validity period and allow client authentication; in every mode its
//! first certificate must be an end entity (not a CA).

use std::net::{IpAddr, SocketAddr};

use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::api::settings::Settings;
use crate::api::ApiError;
use crate::auth::identity::end_entity_identity;
use crate::auth::Identity;
use crate::http::RequestHead;

/// The header a TLS proxy forwards client certificates in (legacy `tls.proxy.header.cert`).
pub fn cert_header(settings: &Settings) -> &str {
    if settings.proxy_cert_header.is_empty() {
        "X-Tls-Client-Cert"
    } else {
        &settings.proxy_cert_header
    }
}

fn bad(message: &'static str) -> ApiError {
    ApiError {
        status: 400,
        message: message.into(),
    }
}

/// The identity of the client certificate a proxy forwarded: URL-escaped PEM in one header
/// (auth-and-policy.md §7); the first certificate is the end entity, any further ones are
/// intermediates for the verifier.
pub fn forwarded_identity(
    head: &RequestHead,
    verifier: &dyn ClientCertVerifier,
) -> Result<Identity, ApiError> {
    use rustls_pki_types::pem::PemObject;
    let value = match (head.cert_header_count, head.forwarded_cert.as_deref()) {
        (0, _) | (_, None) => return Err(bad("no client certificate is present")),
        (1, Some(v)) => v,
        _ => return Err(bad("too many client certificates are present")),
    };
    let pem = query_unescape(value).ok_or_else(|| bad("invalid client certificate"))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|_| bad("invalid client certificate"))?;
    let (end_entity, intermediates) = chain
        .split_first()
        .ok_or_else(|| bad("invalid client certificate"))?;
    let identity =
        end_entity_identity(end_entity).map_err(|_| bad("invalid client certificate"))?;
    verifier
        .verify_client_cert(end_entity, intermediates, UnixTime::now())
        .map_err(|_| bad("invalid client certificate"))?;
    Ok(identity)
}

/// Go's `url.QueryUnescape`: `%XX` escapes and `+` as space.
fn query_unescape(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The client's IP for logs: the TCP peer, or for a TLS proxy the first `X-Forwarded-For`.
pub fn client_ip(
    head: &RequestHead,
    from_proxy: bool,
    peer_addr: Option<SocketAddr>,
) -> Option<IpAddr> {
    if from_proxy {
        if let Some(ip) = head.forwarded_for.as_deref().and_then(parse_forwarded_ip) {
            return Some(ip);
        }
    }
    peer_addr.map(|a| a.ip())
}

/// An `X-Forwarded-For` element: an IP, optionally with a port; `unknown` is ignored.
fn parse_forwarded_ip(v: &str) -> Option<IpAddr> {
    let v = v.trim();
    v.parse::<IpAddr>()
        .ok()
        .or_else(|| v.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_and_forwarded_ips() {
        assert_eq!(query_unescape("a%20b+c").unwrap(), b"a b c");
        assert_eq!(query_unescape("%zz"), None);
        assert_eq!(query_unescape("%2"), None);
        assert_eq!(
            parse_forwarded_ip(" 10.0.0.1:443"),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(parse_forwarded_ip("unknown"), None);
    }
}
