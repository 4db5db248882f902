//! Issue 12, finding 1: the identity comes only from the end-entity certificate, the one whose
//! key signed the handshake. A client that signs with its own CA-marked certificate and adds
//! a forged certificate carrying the admin's public key must not become the admin — over
//! TLS 1.2 and 1.3, with API-key and certificate identities, with `tls.auth` off and on.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use kes::auth::apikey::ApiKey;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    PublicKeyData, SignatureAlgorithm,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

/// A public key taken from somebody else's (public) certificate.
struct StolenKey {
    raw: Vec<u8>,
    alg: &'static SignatureAlgorithm,
}

impl PublicKeyData for StolenKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }
    fn algorithm(&self) -> &SignatureAlgorithm {
        self.alg
    }
}

fn stolen_key(victim_cert_der: &[u8]) -> StolenKey {
    let (_, cert) = x509_parser::parse_x509_certificate(victim_cert_der).unwrap();
    let spki = &cert.tbs_certificate.subject_pki;
    let oid = spki.algorithm.algorithm.to_id_string();
    let alg = match oid.as_str() {
        "1.3.101.112" => &rcgen::PKCS_ED25519,
        "1.2.840.10045.2.1" => &rcgen::PKCS_ECDSA_P256_SHA256,
        other => panic!("unexpected key algorithm {other}"),
    };
    StolenKey {
        raw: spki.subject_public_key.data.to_vec(),
        alg,
    }
}

/// The attacker's chain: its own certificate marked `cA = TRUE` (whose key signs the
/// handshake), then a forged non-CA certificate carrying the victim's public key.
fn spoofing_chain(
    victim_cert_der: &[u8],
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let attacker_key = KeyPair::generate().unwrap();
    let mut own = CertificateParams::new(vec!["attacker".to_string()]).unwrap();
    own.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    own.distinguished_name.push(DnType::CommonName, "attacker");
    let own_cert = own.self_signed(&attacker_key).unwrap();
    let mut forged = CertificateParams::new(vec!["victim".to_string()]).unwrap();
    forged.is_ca = IsCa::ExplicitNoCa;
    forged.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let forged_cert = forged
        .signed_by(&stolen_key(victim_cert_der), &own_cert, &attacker_key)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(attacker_key.serialize_der()));
    (vec![own_cert.der().clone(), forged_cert.der().clone()], key)
}

/// What the server answered: `Err` if the handshake (or the first read) failed.
fn self_describe(
    addr: SocketAddr,
    version: &'static rustls::SupportedProtocolVersion,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    method_path: &str,
) -> Result<(u16, String), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[version])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(kes::client::AcceptAnyServerCert::new(provider)))
        .with_client_auth_cert(chain, key)
        .unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let request = format!("{method_path} HTTP/1.1\r\nHost: kes\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if out.is_empty() => return Err(format!("read: {e}")),
        Err(_) => {}
    }
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP response: {text:?}"))?;
    Ok((status, text))
}

/// Asserts the spoofing chain gets no admin access on every route tried.
fn assert_not_admin(addr: SocketAddr, victim_cert_der: &[u8], admin_hex: &str, what: &str) {
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        for request in [
            "GET /v1/identity/self/describe",
            "POST /v1/key/create/stolen-key",
            "GET /v1/key/list/*",
        ] {
            let (chain, key) = spoofing_chain(victim_cert_der);
            match self_describe(addr, version, chain, key, request) {
                Err(_) => {} // refused in the handshake: what we want
                Ok((status, text)) => {
                    assert_ne!(
                        status, 200,
                        "{what} {version:?}: {request} answered 200 to a spoofed chain: {text}"
                    );
                    assert!(
                        !text.contains(admin_hex),
                        "{what} {version:?}: the admin identity leaked: {text}"
                    );
                }
            }
        }
    }
}

/// A legitimate client with the same TLS versions still gets in (the test can fail).
fn assert_admin(
    addr: SocketAddr,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    admin_hex: &str,
) {
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let (status, text) = self_describe(
            addr,
            version,
            chain.clone(),
            key.clone_key(),
            "GET /v1/identity/self/describe",
        )
        .unwrap();
        assert_eq!(status, 200, "{text}");
        assert!(text.contains(admin_hex), "{text}");
    }
}

#[test]
fn api_key_admin_cannot_be_spoofed_with_auth_off() {
    let (admin_key, admin_hex) = new_api_key();
    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    let server = config_server(&tls, &admin_hex, keys.path(), "");
    let api_key = ApiKey::parse(&admin_key).unwrap();
    let (victim_cert, victim_priv) = kes::auth::cert::client_cert_from_api_key(&api_key).unwrap();

    assert_not_admin(server.addr, &victim_cert, &admin_hex, "api key, auth off");
    assert_admin(server.addr, vec![victim_cert], victim_priv, &admin_hex);
    // Nothing was created by the spoofed create requests.
    assert!(std::fs::read_dir(keys.path()).unwrap().next().is_none());
}

#[test]
fn api_key_admin_cannot_be_spoofed_in_dev_mode() {
    let server = dev_server();
    let api_key = ApiKey::parse(&server.api_key).unwrap();
    let admin_hex = api_key.identity().to_hex();
    let (victim_cert, victim_priv) = kes::auth::cert::client_cert_from_api_key(&api_key).unwrap();
    assert_not_admin(server.addr, &victim_cert, &admin_hex, "dev");
    assert_admin(server.addr, vec![victim_cert], victim_priv, &admin_hex);
}

/// The admin is a CA-signed certificate; with `tls.auth` on and off.
#[test]
fn certificate_admin_cannot_be_spoofed_with_auth_on_or_off() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec!["admin".to_string()]).unwrap();
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let admin_hex = kes::auth::identity::identity_of_cert_der(leaf.der())
        .unwrap()
        .to_hex();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    let leaf_priv = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));

    for auth in ["off", "on"] {
        let tls = tls_files();
        let keys = tempfile::tempdir().unwrap();
        let yaml = config_yaml(&tls, &admin_hex, keys.path(), "").replace(
            "tls:\n",
            &format!(
                "tls:\n  auth: {auth}\n  ca: {}\n",
                dir.path().join("ca.pem").display()
            ),
        );
        let config = kes::config::parse(&yaml, &|_| None).expect("config");
        let prepared =
            kes::cli::server::prepare_config(&config, Some("127.0.0.1:0"), Some(1)).unwrap();
        let running = kes::server::run(prepared.options).unwrap();
        let addr = running.local_addr;
        std::mem::forget(running);

        assert_not_admin(addr, leaf.der(), &admin_hex, &format!("cert, auth {auth}"));
        // A legitimate user's own CA-signed leaf followed by a forged admin certificate:
        // only the first certificate counts.
        let user_key = KeyPair::generate().unwrap();
        let user = CertificateParams::new(vec!["user".to_string()])
            .unwrap()
            .signed_by(&user_key, &ca, &ca_key)
            .unwrap();
        let (spoof, _) = spoofing_chain(leaf.der());
        let user_priv = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(user_key.serialize_der()));
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let chain = vec![user.der().clone(), spoof[1].clone()];
            if let Ok((status, text)) = self_describe(
                addr,
                version,
                chain,
                user_priv.clone_key(),
                "GET /v1/identity/self/describe",
            ) {
                assert!(!text.contains(&admin_hex), "auth {auth}: {status} {text}");
            }
        }
        assert_admin(
            addr,
            vec![leaf.der().clone()],
            leaf_priv.clone_key(),
            &admin_hex,
        );
        assert!(std::fs::read_dir(keys.path()).unwrap().next().is_none());
    }
}
