//! TLS client-auth modes and legacy TLS proxies, over real handshakes.

mod common;

use std::time::Duration;

use common::*;
use kes::client::{Client, ClientConfig, Credentials};

/// URL-escapes PEM the way a proxy's `url.QueryEscape` does.
fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[test]
fn a_trusted_proxy_forwards_client_certificates_and_others_cannot() {
    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    let (_, admin) = new_api_key();
    let (proxy_key, proxy) = new_api_key();
    let (user_key, user) = new_api_key();
    let extra = format!(
        "policy:\n  app:\n    allow:\n    - /v1/key/list/*\n    identities:\n    - {user}\n"
    );
    let yaml = config_yaml(&tls, &admin, keys.path(), &extra).replace(
        "tls:\n",
        &format!("tls:\n  proxy:\n    identities:\n    - {proxy}\n    header:\n      cert: X-Tls-Client-Cert\n"),
    );
    let config = kes::config::parse(&yaml, &|_| None).expect("config");
    let prepared = kes::cli::server::prepare_config(&config, Some("127.0.0.1:0"), Some(1)).unwrap();
    let running = kes::server::run(prepared.options).unwrap();
    let endpoint = format!("https://{}", running.local_addr);
    std::mem::forget(running);

    let user_api_key = kes::auth::apikey::ApiKey::parse(&user_key).unwrap();
    let (cert, _) = kes::auth::cert::client_cert_from_api_key(&user_api_key).unwrap();
    let header = query_escape(&pem("CERTIFICATE", &cert));

    let mut p = client_for(&endpoint, &proxy_key);
    let r = p
        .request(
            "GET",
            "/v1/key/list/",
            None,
            &[("X-Tls-Client-Cert", &header)],
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    // The forwarded identity's policy applies, not the proxy's.
    let r = p
        .request("GET", "/v1/status", None, &[("X-Tls-Client-Cert", &header)])
        .unwrap();
    assert_error(&r, 403, "not authorized: insufficient permissions");
    assert_error(
        &p.request("GET", "/v1/key/list/", None, &[]).unwrap(),
        400,
        "no client certificate is present",
    );
    assert_error(
        &p.request(
            "GET",
            "/v1/key/list/",
            None,
            &[("X-Tls-Client-Cert", "garbage")],
        )
        .unwrap(),
        400,
        "invalid client certificate",
    );

    // Anybody else's header is ignored: identity comes from the TLS peer.
    let (other_key, _) = new_api_key();
    let mut o = client_for(&endpoint, &other_key);
    let r = o
        .request(
            "GET",
            "/v1/key/list/",
            None,
            &[("X-Tls-Client-Cert", &header)],
        )
        .unwrap();
    assert_error(&r, 403, "not authorized: insufficient permissions");
}

#[test]
fn auth_on_accepts_ca_signed_client_certificates_and_refuses_self_signed_ones() {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec!["client".to_string()]).unwrap();
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let admin = kes::auth::identity::identity_of_cert_der(leaf.der())
        .unwrap()
        .to_hex();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.path().join("client.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.path().join("client.key"), leaf_key.serialize_pem()).unwrap();

    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    let yaml = config_yaml(&tls, &admin, keys.path(), "").replace(
        "tls:\n",
        &format!(
            "tls:\n  auth: on\n  ca: {}\n",
            dir.path().join("ca.pem").display()
        ),
    );
    let config = kes::config::parse(&yaml, &|_| None).expect("config");
    let prepared = kes::cli::server::prepare_config(&config, Some("127.0.0.1:0"), Some(1)).unwrap();
    let running = kes::server::run(prepared.options).unwrap();
    let endpoint = format!("https://{}", running.local_addr);
    std::mem::forget(running);

    let mut signed = Client::new(ClientConfig {
        endpoints: vec![endpoint.clone()],
        credentials: Some(Credentials::Files {
            cert: dir.path().join("client.pem"),
            key: dir.path().join("client.key"),
        }),
        insecure: true,
        ca_file: None,
        timeout: Duration::from_secs(10),
    })
    .unwrap();
    let r = signed
        .request("GET", "/v1/identity/self/describe", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    assert_eq!(json_str(&r, "identity"), admin);

    // A self-signed API-key certificate fails the handshake.
    let (api_key, _) = new_api_key();
    let mut self_signed = client_for(&endpoint, &api_key);
    assert!(self_signed.request("GET", "/version", None, &[]).is_err());
}

#[test]
fn config_errors_name_the_field() {
    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    let (_, admin) = new_api_key();
    let base = config_yaml(&tls, &admin, keys.path(), "");
    let cases: Vec<(String, &str)> = vec![
        (
            base.replace("version: v1", "version: v2"),
            "version: 'v2' is not supported",
        ),
        (
            base.replace(&format!("identity: {admin}"), "identity: ${NOPE}"),
            "admin.identity: referenced env. variable 'NOPE' in line '3' not found",
        ),
        (
            format!("{base}cache:\n  expiry:\n    any: 5\n"),
            "cache.expiry.any: '5' is not a duration",
        ),
        (
            base.replace("tls:\n", "tls:\n  auth: maybe\n"),
            "tls.auth: 'maybe' is invalid",
        ),
        (
            format!("{base}policy:\n  p:\n    identities:\n    - {admin}\n"),
            "is the admin identity",
        ),
        (
            format!(
                "{base}policy:\n  a:\n    identities:\n    - {}\n  b:\n    identities:\n    - {}\n",
                "e".repeat(64),
                "e".repeat(64)
            ),
            "already has a policy",
        ),
        (
            format!("{base}policy:\n  -bad:\n    allow: []\n"),
            "policy.-bad: invalid policy name",
        ),
        (
            format!("{base}  vault:\n    endpoint: x\n"),
            "more than once keystore specified",
        ),
        (
            format!("{base}keys:\n- name: a\n- name: a\n"),
            "defined more than once",
        ),
        (
            base.replace(
                &format!("    path: {}", keys.path().display()),
                "    path: \"\"",
            ),
            "keystore.fs.path: no path specified",
        ),
        (
            "address: x\n".to_string() + &base,
            "address: 'x' is invalid",
        ),
    ];
    for (yaml, want) in cases {
        let err = kes::config::parse(&yaml, &|_| None).expect_err(want);
        assert!(err.to_string().contains(want), "want {want:?}, got {err}");
    }
    // The documented example at the repository root loads (with its env variables set).
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/server-config.yaml"))
            .unwrap();
    let config = kes::config::parse(&example, &|name| match name {
        "KES_ADMIN_IDENTITY" => Some("a".repeat(64)),
        "MINIO_KES_IDENTITY" => Some("b".repeat(64)),
        _ => None,
    })
    .expect("server-config.yaml loads");
    assert_eq!(config.policies.len(), 1);
    assert_eq!(config.keys, ["minio-default-key"]);
    let glob = kes::config::parse(
        &format!("{base}compat:\n  policy_patterns: glob\n"),
        &|_| None,
    )
    .unwrap();
    assert_eq!(glob.pattern_syntax, kes::auth::policy::PatternSyntax::Glob);
}

fn openssl(args: &[&str], dir: &std::path::Path) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("this test needs the `openssl` command (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn legacy_pem_encrypted_server_keys_load_with_tls_password() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        &[
            "ecparam",
            "-genkey",
            "-name",
            "prime256v1",
            "-noout",
            "-out",
            "plain.key",
        ],
        d,
    );
    openssl(
        &[
            "ec",
            "-in",
            "plain.key",
            "-aes256",
            "-passout",
            "pass:s3cret",
            "-out",
            "server.key",
        ],
        d,
    );
    openssl(
        &[
            "req",
            "-x509",
            "-key",
            "plain.key",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-days",
            "2",
            "-out",
            "server.cert",
        ],
        d,
    );
    assert!(std::fs::read_to_string(d.join("server.key"))
        .unwrap()
        .contains("Proc-Type: 4,ENCRYPTED"));
    let keys = tempfile::tempdir().unwrap();
    let (api_key, admin) = new_api_key();
    let yaml = |password: &str| {
        format!(
            "admin:\n  identity: {admin}\ntls:\n  key: {}\n  cert: {}\n  password: {password}\nkeystore:\n  fs:\n    path: {}\n",
            d.join("server.key").display(),
            d.join("server.cert").display(),
            keys.path().display()
        )
    };
    for (password, want) in [("wrong", "wrong password"), ("\"\"", "password required")] {
        let config = kes::config::parse(&yaml(password), &|_| None).unwrap();
        let err = kes::cli::server::prepare_config(&config, Some("127.0.0.1:0"), Some(1))
            .err()
            .expect("must fail");
        assert!(err.to_string().contains(want), "{err}");
    }
    let config = kes::config::parse(&yaml("s3cret"), &|_| None).unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    // The real binary starts with it, serves, and does not claim it is unsupported.
    let config_path = d.join("config.yml");
    std::fs::write(&config_path, yaml("s3cret")).unwrap();
    let server = bin_server(&["--config", config_path.to_str().unwrap()]);
    let mut c = client_for(&format!("https://{}", server.addr), &api_key);
    assert_eq!(
        c.request("GET", "/v1/status", None, &[]).unwrap().status,
        200
    );
    std::thread::sleep(std::time::Duration::from_millis(200)); // stderr is read by a thread
    let stderr = server.stderr_text();
    assert!(
        !stderr.contains("tls.password") && !stderr.contains("not supported"),
        "{stderr}"
    );
    let prepared = kes::cli::server::prepare_config(&config, Some("127.0.0.1:0"), Some(1)).unwrap();
    let running = kes::server::run(prepared.options).unwrap();
    let endpoint = format!("https://{}", running.local_addr);
    std::mem::forget(running);
    let mut c = client_for(&endpoint, &api_key);
    assert_eq!(
        c.request("GET", "/v1/status", None, &[]).unwrap().status,
        200
    );
}

#[test]
fn access_matrix_identities_by_routes() {
    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    let (admin_key, admin) = new_api_key();
    let (reader_key, reader) = new_api_key();
    let (denied_key, denied) = new_api_key();
    let (stranger_key, _) = new_api_key();
    // `reader` may use every route; `denied` has the same allow rules but a deny-everything rule.
    let extra = format!(
        "policy:\n  reader:\n    allow:\n    - /*\n    identities:\n    - {reader}\n  denied:\n    allow:\n    - /*\n    deny:\n    - /v1/*\n    identities:\n    - {denied}\n"
    );
    let server = config_server(&tls, &admin, keys.path(), &extra);
    let endpoint = format!("https://{}", server.addr);
    let mut admin_c = client_for(&endpoint, &admin_key);
    assert_eq!(
        admin_c
            .request("POST", "/v1/key/create/k", None, &[])
            .unwrap()
            .status,
        200
    );

    let forbidden = "not authorized: insufficient permissions";
    for route in kes::api::ROUTES.iter() {
        if matches!(
            route.id,
            kes::api::RouteId::LogAudit | kes::api::RouteId::LogError
        ) {
            continue; // streams; covered in tests/ops.rs
        }
        if route.id == kes::api::RouteId::Kms {
            continue; // authorised per command; covered in tests/minkms.rs
        }
        let path = if route.has_argument {
            let arg = match route.id {
                kes::api::RouteId::IdentityDescribe => reader.clone(),
                kes::api::RouteId::PolicyDescribe | kes::api::RouteId::PolicyRead => {
                    "reader".into()
                }
                kes::api::RouteId::KeyList
                | kes::api::RouteId::PolicyList
                | kes::api::RouteId::IdentityList => String::new(),
                _ => "k".into(),
            };
            format!("{}{arg}", route.path)
        } else {
            route.path.to_string()
        };
        let method = route.method.as_str();
        let body: Option<&[u8]> = match route.id {
            kes::api::RouteId::KeyDecrypt => Some(br#"{"ciphertext":"AAAA"}"#),
            kes::api::RouteId::KeyEncrypt => Some(br#"{"plaintext":"AAAA"}"#),
            kes::api::RouteId::KeyHmac => Some(br#"{"message":"AAAA"}"#),
            kes::api::RouteId::KeyImport => Some(br#"{"key":"AAAA","cipher":"AES256"}"#),
            _ => None,
        };
        let open = matches!(
            route.id,
            kes::api::RouteId::Version | kes::api::RouteId::IdentitySelfDescribe
        );
        for (who, key, allowed) in [
            ("admin", &admin_key, true),
            ("reader", &reader_key, true),
            ("denied", &denied_key, open),
            ("stranger", &stranger_key, open),
        ] {
            let mut c = client_for(&endpoint, key);
            let r = c.request(method, &path, body, &[]).unwrap();
            if allowed {
                assert_ne!(r.status, 403, "{who} {method} {path}: {}", body_str(&r));
                assert!(r.status < 500, "{who} {method} {path}: {}", body_str(&r));
            } else {
                assert_error(&r, 403, forbidden);
            }
        }
    }
    // The denied identity's own description works (identify-only route) and names its policy.
    let r = client_for(&endpoint, &denied_key)
        .request("GET", "/v1/identity/self/describe", None, &[])
        .unwrap();
    assert_eq!(json_str(&r, "policy"), "denied");
}

#[test]
fn ecdsa_p384_and_rsa_client_certificates_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // ECDSA P-384 with rcgen, RSA-2048 (PKCS#1 v1.5 / PSS signatures) with openssl.
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let p384_cert = rcgen::CertificateParams::new(vec!["client".into()])
        .unwrap()
        .self_signed(&p384)
        .unwrap();
    std::fs::write(d.join("p384.pem"), p384_cert.pem()).unwrap();
    std::fs::write(d.join("p384.key"), p384.serialize_pem()).unwrap();
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "rsa.key",
            "-subj",
            "/CN=client",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-days",
            "2",
            "-out",
            "rsa.pem",
        ],
        d,
    );

    for (cert, key) in [("p384.pem", "p384.key"), ("rsa.pem", "rsa.key")] {
        let identity = kes::auth::identity::identity_of_pem_file(&d.join(cert))
            .unwrap()
            .to_hex();
        let tls = tls_files();
        let keys = tempfile::tempdir().unwrap();
        let server = config_server(&tls, &identity, keys.path(), "");
        let mut c = Client::new(ClientConfig {
            endpoints: vec![format!("https://{}", server.addr)],
            credentials: Some(Credentials::Files {
                cert: d.join(cert),
                key: d.join(key),
            }),
            insecure: true,
            ca_file: None,
            timeout: Duration::from_secs(10),
        })
        .unwrap();
        let r = c
            .request("GET", "/v1/identity/self/describe", None, &[])
            .unwrap();
        assert_eq!(r.status, 200, "{cert}: {}", body_str(&r));
        assert_eq!(json_str(&r, "identity"), identity, "{cert}");
        assert!(body_str(&r).contains("\"admin\":true"));
    }
}

/// Issue 12 #7: with `tls.auth: on`, a certificate a trusted proxy forwards is verified
/// exactly as a direct client certificate is: an unsigned, expired or wrong-purpose
/// certificate carrying the admin's key does not make the request the admin's.
#[test]
fn forwarded_certificates_are_verified_like_direct_ones_with_auth_on() {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let client_params = |name: &str| {
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p
    };
    // The proxy's own certificate (it must pass tls.auth itself).
    let proxy_key = KeyPair::generate().unwrap();
    let proxy_cert = client_params("proxy")
        .signed_by(&proxy_key, &ca, &ca_key)
        .unwrap();
    let proxy_id = kes::auth::identity::identity_of_cert_der(proxy_cert.der())
        .unwrap()
        .to_hex();
    // The admin's key, in certificates of every kind.
    let admin_key = KeyPair::generate().unwrap();
    let admin_cert = client_params("admin")
        .signed_by(&admin_key, &ca, &ca_key)
        .unwrap();
    let admin_id = kes::auth::identity::identity_of_cert_der(admin_cert.der())
        .unwrap()
        .to_hex();
    let unsigned = client_params("admin").self_signed(&admin_key).unwrap();
    let mut expired_params = client_params("admin");
    expired_params.not_before = rcgen::date_time_ymd(2001, 1, 1);
    expired_params.not_after = rcgen::date_time_ymd(2002, 1, 1);
    let expired = expired_params.signed_by(&admin_key, &ca, &ca_key).unwrap();
    let mut server_only = client_params("admin");
    server_only.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_only = server_only.signed_by(&admin_key, &ca, &ca_key).unwrap();
    let mut ca_marked = client_params("admin");
    ca_marked.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_marked = ca_marked.signed_by(&admin_key, &ca, &ca_key).unwrap();

    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.path().join("proxy.pem"), proxy_cert.pem()).unwrap();
    std::fs::write(dir.path().join("proxy.key"), proxy_key.serialize_pem()).unwrap();

    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    let yaml = config_yaml(&tls, &admin_id, keys.path(), "").replace(
        "tls:\n",
        &format!(
            "tls:\n  auth: on\n  ca: {}\n  proxy:\n    identities:\n    - {proxy_id}\n    header:\n      cert: X-Tls-Client-Cert\n",
            dir.path().join("ca.pem").display()
        ),
    );
    let config = kes::config::parse(&yaml, &|_| None).expect("config");
    let prepared = kes::cli::server::prepare_config(&config, Some("127.0.0.1:0"), Some(1)).unwrap();
    let running = kes::server::run(prepared.options).unwrap();
    let endpoint = format!("https://{}", running.local_addr);
    std::mem::forget(running);

    let mut proxy = Client::new(ClientConfig {
        endpoints: vec![endpoint],
        credentials: Some(Credentials::Files {
            cert: dir.path().join("proxy.pem"),
            key: dir.path().join("proxy.key"),
        }),
        insecure: true,
        ca_file: None,
        timeout: Duration::from_secs(10),
    })
    .unwrap();
    let forward = |proxy: &mut Client, cert_pem: &str| {
        let header = query_escape(cert_pem);
        proxy
            .request(
                "GET",
                "/v1/identity/self/describe",
                None,
                &[("X-Tls-Client-Cert", &header)],
            )
            .unwrap()
    };
    let r = forward(&mut proxy, &admin_cert.pem());
    assert_eq!(r.status, 200, "{}", body_str(&r));
    assert_eq!(json_str(&r, "identity"), admin_id);
    for (what, pem) in [
        ("unsigned", unsigned.pem()),
        ("expired", expired.pem()),
        ("server-auth only", server_only.pem()),
        ("CA-marked", ca_marked.pem()),
    ] {
        let r = forward(&mut proxy, &pem);
        assert_eq!(r.status, 400, "{what}: {}", body_str(&r));
        assert!(
            !body_str(&r).contains(&admin_id),
            "{what}: {}",
            body_str(&r)
        );
        assert_error(&r, 400, "invalid client certificate");
    }
}
