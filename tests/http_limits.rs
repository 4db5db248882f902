//! HTTP/1.1 framing and limits on a real TLS connection: pipelining, chunked bodies, body and
//! header limits, timeouts, clients without certificates, plain HTTP on the TLS port.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;

fn generate_request(name: &str, keep_alive: bool) -> String {
    let body = r#"{"context":"e30="}"#;
    format!(
        "POST /v1/key/generate/{name} HTTP/1.1\r\nHost: kes\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{body}",
        body.len(),
        if keep_alive { "" } else { "Connection: close\r\n" }
    )
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = dev_server();
    server
        .client()
        .request("POST", "/v1/key/create/p", None, &[])
        .unwrap();
    let mut raw = raw_tls(server.addr, Some(&server.api_key)).unwrap();
    let mut batch = String::new();
    batch.push_str("GET /version HTTP/1.1\r\nHost: kes\r\n\r\n");
    batch.push_str(&generate_request("p", true));
    batch.push_str("GET /v1/key/describe/missing HTTP/1.1\r\nHost: kes\r\n\r\n");
    batch.push_str(&generate_request("p", true));
    batch.push_str("GET /v1/key/list/ HTTP/1.1\r\nHost: kes\r\n\r\n");
    raw.send(batch.as_bytes());
    let responses = raw.read_responses(5);
    let statuses: Vec<u16> = responses.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [200, 200, 404, 200, 200]);
    assert!(String::from_utf8_lossy(&responses[0].1).contains("\"version\""));
    assert!(String::from_utf8_lossy(&responses[1].1).contains("\"ciphertext\""));
    assert_eq!(responses[2].1, b"{\"message\":\"key does not exist\"\n}");
    assert_eq!(responses[4].1, b"{\"names\":[\"p\"]}\n");
}

#[test]
fn chunked_request_bodies() {
    let server = dev_server();
    server
        .client()
        .request("POST", "/v1/key/create/c", None, &[])
        .unwrap();
    let mut raw = raw_tls(server.addr, Some(&server.api_key)).unwrap();
    let req = "POST /v1/key/generate/c HTTP/1.1\r\nHost: kes\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"con\r\n0c;ext=1\r\ntext\":\"e30=\"\r\n1\r\n}\r\n0\r\n\r\n";
    raw.send(req.as_bytes());
    raw.send(b"GET /version HTTP/1.1\r\nHost: kes\r\n\r\n");
    let responses = raw.read_responses(2);
    assert_eq!(
        responses[0].0,
        200,
        "{}",
        String::from_utf8_lossy(&responses[0].1)
    );
    assert_eq!(responses[1].0, 200);
}

#[test]
fn oversized_body_is_413_and_closes() {
    let server = dev_server();
    let mut raw = raw_tls(server.addr, Some(&server.api_key)).unwrap();
    raw.send(b"POST /v1/key/generate/x HTTP/1.1\r\nHost: kes\r\nContent-Length: 1000001\r\n\r\n");
    let out = raw.read_all(Duration::from_secs(5));
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
    assert!(text.contains("Connection: close"), "{text}");

    // 2^63 and more: still 413, no overflow.
    let mut raw = raw_tls(server.addr, Some(&server.api_key)).unwrap();
    raw.send(b"POST /v1/key/generate/x HTTP/1.1\r\nHost: kes\r\nContent-Length: 9223372036854775808\r\n\r\n");
    assert!(
        String::from_utf8_lossy(&raw.read_all(Duration::from_secs(5))).starts_with("HTTP/1.1 413 ")
    );

    // A chunked body that grows past the limit.
    let mut raw = raw_tls(server.addr, Some(&server.api_key)).unwrap();
    raw.send(
        b"POST /v1/key/generate/x HTTP/1.1\r\nHost: kes\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    let chunk = format!("{:x}\r\n{}\r\n", 600_000, "a".repeat(600_000));
    raw.send(chunk.as_bytes());
    raw.send(chunk.as_bytes());
    assert!(
        String::from_utf8_lossy(&raw.read_all(Duration::from_secs(5))).starts_with("HTTP/1.1 413 ")
    );
}

#[test]
fn a_body_of_exactly_the_limit_is_read() {
    let server = dev_server();
    server
        .client()
        .request("POST", "/v1/key/create/big", None, &[])
        .unwrap();
    let plaintext = vec![b'z'; 700_000];
    let mut body = format!(r#"{{"plaintext":"{}""#, B64.encode(&plaintext)).into_bytes();
    body.extend_from_slice(b"}");
    let pad = 1_000_000 - body.len();
    body.extend(std::iter::repeat_n(b' ', pad));
    assert_eq!(body.len(), 1_000_000);
    let r = server
        .client()
        .request("POST", "/v1/key/encrypt/big", Some(&body), &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
}

#[test]
fn oversized_and_malformed_heads() {
    let server = dev_server();
    let mut raw = raw_tls(server.addr, Some(&server.api_key)).unwrap();
    let big = format!(
        "GET /version HTTP/1.1\r\nHost: kes\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    raw.send(big.as_bytes());
    let text = String::from_utf8_lossy(&raw.read_all(Duration::from_secs(5))).into_owned();
    assert!(text.starts_with("HTTP/1.1 431 "), "{text}");

    for bad in [
        "GARBAGE\r\n\r\n",
        "GET /version HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        "GET /version HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET /v1/%zz HTTP/1.1\r\n\r\n",
    ] {
        let mut raw = raw_tls(server.addr, Some(&server.api_key)).unwrap();
        raw.send(bad.as_bytes());
        let text = String::from_utf8_lossy(&raw.read_all(Duration::from_secs(5))).into_owned();
        assert!(text.starts_with("HTTP/1.1 400 "), "{bad:?} → {text}");
    }
    // The server is still fine.
    assert_eq!(
        server
            .client()
            .request("GET", "/version", None, &[])
            .unwrap()
            .status,
        200
    );
}

#[test]
fn slow_heads_time_out_with_408_and_idle_connections_close() {
    let server = dev_server_with(|o| {
        o.timeouts.header = Duration::from_millis(500);
        o.timeouts.idle = Duration::from_millis(800);
    });
    let mut raw = raw_tls(server.addr, Some(&server.api_key)).unwrap();
    raw.send(b"GET /version HTTP/1.1\r\n");
    let started = Instant::now();
    let text = String::from_utf8_lossy(&raw.read_all(Duration::from_secs(5))).into_owned();
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // A connection that never sends a request is cut at the header timeout, not kept for
    // the idle timeout (issue 12 #6).
    let mut raw = raw_tls(server.addr, Some(&server.api_key)).unwrap();
    let started = Instant::now();
    assert!(raw.closed_by_server(Duration::from_secs(5)));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_millis(750),
        "{waited:?}"
    );

    // Between requests the idle timeout applies.
    let mut raw = raw_tls(server.addr, Some(&server.api_key)).unwrap();
    raw.send(b"GET /version HTTP/1.1\r\nHost: kes\r\n\r\n");
    assert_eq!(raw.read_responses(1)[0].0, 200);
    let started = Instant::now();
    assert!(raw.closed_by_server(Duration::from_secs(5)));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

#[test]
fn handshake_without_client_certificate_is_refused() {
    let server = dev_server();
    let result = raw_tls(server.addr, None).and_then(|mut raw| {
        raw.stream
            .write_all(b"GET /version HTTP/1.1\r\nHost: kes\r\n\r\n")?;
        let mut buf = [0u8; 64];
        raw.stream.read(&mut buf)
    });
    assert!(
        result.is_err(),
        "a client without a certificate must not be served: {result:?}"
    );
}

#[test]
fn plain_http_on_the_tls_port() {
    let server = dev_server();
    let mut tcp = std::net::TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(b"GET /version HTTP/1.1\r\nHost: kes\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = tcp.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.0 400 Bad Request"), "{out}");
    assert!(out.contains("Client sent an HTTP request to an HTTPS server."));
}

#[test]
fn connection_close_is_honoured() {
    let server = dev_server();
    server
        .client()
        .request("POST", "/v1/key/create/cc", None, &[])
        .unwrap();
    let mut raw = raw_tls(server.addr, Some(&server.api_key)).unwrap();
    raw.send(generate_request("cc", false).as_bytes());
    let text = String::from_utf8_lossy(&raw.read_all(Duration::from_secs(5))).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(text.contains("Connection: close"));
}

#[test]
fn tls_sessions_resume() {
    let server = dev_server();
    let config = api_key_tls_config(&server);
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let conn = get_version_over(&server, config.clone());
        kinds.push(conn.handshake_kind());
    }
    assert_eq!(
        kinds,
        [
            Some(rustls::HandshakeKind::Full),
            Some(rustls::HandshakeKind::Resumed)
        ]
    );
}

/// The server, not the client, orders the suites (as Go's server does for upstream KES):
/// a client that lists AES-256-GCM first (rustls' default) gets AES-128-GCM on a CPU with
/// AES instructions; a client that offers only ChaCha20-Poly1305 (or only TLS 1.2) still
/// connects.
#[test]
fn the_server_chooses_the_cipher_suite() {
    use rustls::crypto::ring::cipher_suite as cs;
    let server = dev_server();
    let base = api_key_tls_config(&server);
    let negotiated = |config: Arc<rustls::ClientConfig>| {
        let conn = get_version_over(&server, config);
        conn.negotiated_cipher_suite().unwrap().suite()
    };
    let client_first = base.crypto_provider().cipher_suites[0].suite();
    assert_eq!(client_first, cs::TLS13_AES_256_GCM_SHA384.suite());
    let expected = if kes::crypto::KeyType::platform_default() == kes::crypto::KeyType::Aes256 {
        cs::TLS13_AES_128_GCM_SHA256.suite()
    } else {
        cs::TLS13_CHACHA20_POLY1305_SHA256.suite()
    };
    assert_eq!(negotiated(base.clone()), expected);

    let only = |suite: rustls::SupportedCipherSuite, tls12: bool| {
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: vec![suite],
            ..rustls::crypto::ring::default_provider()
        };
        let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert))
            .with_no_client_auth();
        config.client_auth_cert_resolver = base.client_auth_cert_resolver.clone();
        Arc::new(config)
    };
    let chacha = cs::TLS13_CHACHA20_POLY1305_SHA256;
    assert_eq!(negotiated(only(chacha, false)), chacha.suite());
    let tls12 = cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384;
    assert_eq!(negotiated(only(tls12, true)), tls12.suite());
}

/// `-k` for the suite test: any server certificate, handshake signatures still checked.
#[derive(Debug)]
struct AnyServerCert;

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algs)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algs)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The CLI's TLS client config (`-k`) with the server's admin API key.
fn api_key_tls_config(server: &TestServer) -> Arc<rustls::ClientConfig> {
    kes::client::rustls_config(&kes::client::ClientConfig {
        endpoints: Vec::new(),
        credentials: Some(kes::client::Credentials::ApiKey(
            kes::auth::apikey::ApiKey::parse(&server.api_key).unwrap(),
        )),
        insecure: true,
        ca_file: None,
        timeout: Duration::from_secs(10),
    })
    .unwrap()
}

/// `GET /version` on a new connection with `config`; returns the finished TLS session.
fn get_version_over(
    server: &TestServer,
    config: Arc<rustls::ClientConfig>,
) -> rustls::ClientConnection {
    let tcp = std::net::TcpStream::connect(server.addr).unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(server.addr.ip().into());
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    stream
        .write_all(b"GET /version HTTP/1.1\r\nHost: kes\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    assert!(
        out.starts_with(b"HTTP/1.1 200 OK"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    stream.conn
}
