//! Request-body and identity hot paths: JSON body decode (kms-go's decrypt body through the
//! per-connection simd-json parser), JSON response encode (a generate answer), identity
//! hashing (the API key's and an X.509 certificate's), and the cryptography that bounds a
//! TLS handshake (X25519 key agreement, the ECDSA P-256 server signature, the Ed25519
//! client signature check) beside complete in-memory TLS 1.3 handshakes, full and resumed,
//! against the server's own `rustls::ServerConfig`.
//!
//! Run with `cargo bench --bench api`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use kes::api::json::{JsonParser, JsonWriter};
use kes::auth::apikey::ApiKey;
use kes::client::{ClientConfig, Credentials};
use kes::server::tls::{server_config, ClientAuth};
use ring::rand::SystemRandom;

const DECRYPT_BODY: &[u8] = br#"{"ciphertext":"lbFBRVMyNTYtR0NNX1NIQTI1NtkgY2VhZGQ3YTY3MWFjZWE0NzljOGZhY2I1OTVjYzA2OTLEEJHDrfXL2sCqRFmRnDEsYAjEDH2uc+sMIQKmpnaMV8QgYuZwnjgOLL8YuLM5ry8H1ywPWOsV5j2ggq5zFs+QkSCw","context":"eyJidWNrZXQiOiJidWNrZXQvb2JqZWN0LTQyIn0="}"#;

fn json(c: &mut Criterion) {
    let mut parser = JsonParser::default();
    let mut body = DECRYPT_BODY.to_vec();
    c.bench_function("json/decode_decrypt_body", |b| {
        b.iter(|| {
            body.clear();
            body.extend_from_slice(DECRYPT_BODY);
            let [ct, ctx] = parser
                .string_members(&mut body, ["ciphertext", "context"])
                .unwrap();
            black_box((ct.map(str::len), ctx.map(str::len)))
        })
    });
    let plaintext = [0x5au8; 32];
    let ciphertext = [0xa5u8; 76];
    let mut out = Vec::with_capacity(256);
    c.bench_function("json/encode_generate_answer", |b| {
        b.iter(|| {
            out.clear();
            let mut w = JsonWriter::object(&mut out);
            w.base64("plaintext", black_box(&plaintext))
                .base64("ciphertext", black_box(&ciphertext));
            w.finish();
            black_box(out.len())
        })
    });
}

fn identities(c: &mut Criterion) {
    let key = ApiKey::generate().unwrap();
    c.bench_function("identity/of_api_key", |b| {
        b.iter(|| black_box(black_box(&key).identity()))
    });
    let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let (cert, _, _) = kes::auth::cert::self_signed_server_cert(&[ip], &[]).unwrap();
    c.bench_function("identity/of_certificate", |b| {
        b.iter(|| kes::auth::identity::identity_of_cert_der(black_box(cert.as_ref())).unwrap())
    });
}

/// A TLS 1.3 handshake between `client` and `server` in memory; returns the server side.
fn handshake(
    client: &Arc<rustls::ClientConfig>,
    server: &Arc<rustls::ServerConfig>,
) -> rustls::ServerConnection {
    let name =
        rustls_pki_types::ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
    let mut c = rustls::ClientConnection::new(client.clone(), name).unwrap();
    let mut s = rustls::ServerConnection::new(server.clone()).unwrap();
    let mut buf = Vec::with_capacity(8192);
    while c.is_handshaking() || s.is_handshaking() || c.wants_write() || s.wants_write() {
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
            s.process_new_packets().unwrap();
        }
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets().unwrap();
        }
    }
    s
}

fn tls(c: &mut Criterion) {
    use ring::agreement::{agree_ephemeral, EphemeralPrivateKey, UnparsedPublicKey, X25519};
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    let rng = SystemRandom::new();
    let mut group = c.benchmark_group("tls");
    group.measurement_time(Duration::from_secs(4));
    let peer = EphemeralPrivateKey::generate(&X25519, &rng).unwrap();
    let peer_public = peer.compute_public_key().unwrap();
    group.bench_function("x25519_keygen_and_agree", |b| {
        b.iter(|| {
            let k = EphemeralPrivateKey::generate(&X25519, &rng).unwrap();
            black_box(k.compute_public_key().unwrap());
            agree_ephemeral(k, &UnparsedPublicKey::new(&X25519, &peer_public), |s| {
                black_box(s[0])
            })
            .unwrap()
        })
    });
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let ecdsa =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    group.bench_function("ecdsa_p256_sign", |b| {
        b.iter(|| black_box(ecdsa.sign(&rng, black_box(&[7u8; 130])).unwrap()))
    });
    let api_key = ApiKey::generate().unwrap();
    let pair = api_key.key_pair().unwrap();
    let msg = [9u8; 130];
    let sig = pair.sign(&msg);
    let public = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ED25519,
        pair.public_key().as_ref().to_vec(),
    );
    group.bench_function("ed25519_verify", |b| {
        b.iter(|| public.verify(black_box(&msg), sig.as_ref()).unwrap())
    });

    let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let (cert, key, _) = kes::auth::cert::self_signed_server_cert(&[ip], &[]).unwrap();
    let server = server_config(vec![cert], key, ClientAuth::RequireAny, None)
        .unwrap()
        .config;
    let client_config = |resume: bool| {
        let mut config = (*kes::client::rustls_config(&ClientConfig {
            endpoints: Vec::new(),
            credentials: Some(Credentials::ApiKey(api_key.clone())),
            insecure: true,
            ca_file: None,
            timeout: Duration::from_secs(10),
        })
        .unwrap())
        .clone();
        if !resume {
            config.resumption = rustls::client::Resumption::disabled();
        }
        Arc::new(config)
    };
    let full = client_config(false);
    group.bench_function("handshake_full_in_memory", |b| {
        b.iter(|| {
            let s = handshake(&full, &server);
            assert_eq!(s.handshake_kind(), Some(rustls::HandshakeKind::Full));
        })
    });
    let resume = client_config(true);
    handshake(&resume, &server);
    group.bench_function("handshake_resumed_in_memory", |b| {
        b.iter(|| {
            let s = handshake(&resume, &server);
            assert_eq!(s.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
        })
    });
    group.finish();
}

criterion_group!(benches, json, identities, tls);
criterion_main!(benches);
