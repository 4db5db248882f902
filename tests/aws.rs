//! The AWS Secrets Manager keystore against moto in server mode (moto's server, from
//! `pip install "moto[server]"`) on loopback, through `kes server --config`.
//!
//! moto runs with `INITIAL_NO_AUTH_ACTION_COUNT=6`: the setup (IAM user, its policy and
//! access key, a KMS key, an IAM role with its policy; boto3) runs unauthenticated, after
//! which moto checks every request's SigV4 signature against the IAM user's secret, or an
//! assumed role's secret and session token (as AWS does), so these tests also check our
//! signing against moto's (botocore's) verifier.
//!
//! moto is started through [`MOTO_LAUNCHER`], which makes moto treat
//! `AssumeRoleWithWebIdentity` as AWS does: an unsigned call (moto would demand a signature
//! once authentication is on), whose web identity token must be the current content of
//! `KES_TEST_EXPECTED_TOKEN_FILE` when that is set (moto accepts any token) and whose
//! credentials last `KES_TEST_STS_DURATION_SECONDS` when that is set (AWS grants at least
//! 15 minutes; the tests need a renewal within seconds).
//!
//! The credential chain's other sources are stand-ins on loopback ([`standin`]): an ECS /
//! EKS Pod Identity container credentials endpoint and an EC2 instance metadata service
//! (IMDSv2), both strict about methods, paths and tokens, serving credentials that moto
//! issued for the role.

mod common;
mod standin;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::lifecycle::{
    generate_and_decrypt, keystore_lifecycle, outage_behaviour, stored_record, Backend, Lifecycle,
};
use common::moto::{moto_py, start_moto, start_moto_with, Moto};
use common::race::{counter_of, counter_ring as ring, race_increments};
use common::*;
use standin::{q, random_hex, Request, Response, StandIn};

/// Config for a `kes server --config` node on moto: the secret key comes from the
/// environment (`${KES_TEST_AWS_SECRET}`) to show `${ENV}` substitution in the block.
fn write_config(
    dir: &std::path::Path,
    tls: &TlsFiles,
    admin: &str,
    m: &Moto,
    extra: &str,
) -> std::path::PathBuf {
    let credentials = format!(
        "      credentials:\n        accesskey: {}\n        secretkey: ${{KES_TEST_AWS_SECRET}}\n",
        m.access_key
    );
    write_config_with(dir, tls, admin, m.port, &m.kms_key, &credentials, extra)
}

/// Like [`write_config`] for Secrets Manager at `port`, with the `credentials` lines given
/// ("" = none: the credential chain).
fn write_config_with(
    dir: &std::path::Path,
    tls: &TlsFiles,
    admin: &str,
    port: u16,
    kms_key: &str,
    credentials: &str,
    extra: &str,
) -> std::path::PathBuf {
    let yaml = format!(
        "admin:\n  identity: {admin}\ntls:\n  key: {}\n  cert: {}\ncache:\n  expiry:\n    any: 5m\n    unused: 5m\nkeystore:\n  aws:\n    secretsmanager:\n      endpoint: http://127.0.0.1:{port}\n      region: ${{KES_TEST_AWS_REGION}}\n      kmskey: {kms_key}\n{credentials}{extra}",
        tls.key.display(),
        tls.cert.display(),
    );
    let path = dir.join("aws.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn kes_on(path: &std::path::Path, secret: &str) -> BinServer {
    let secret = secret.to_string();
    bin_server_with(&["--config", path.to_str().unwrap()], move |cmd| {
        cmd.env("KES_TEST_AWS_SECRET", secret)
            .env("KES_TEST_AWS_REGION", "us-east-1")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY");
    })
}

/// Secrets Manager in moto, as [`Backend`]: a record is the `SecretString` of the secret named
/// after the key (no `SecretBinary`), encrypted with the configured `kmskey`, as upstream
/// stores it.
struct SecretsManager<'a>(&'a Moto);

impl Backend for SecretsManager<'_> {
    fn record(&self, name: &str) -> Option<String> {
        let out = moto_py(
            self.0,
            &format!(
                "try:\n    v = sm.get_secret_value(SecretId={name:?})\nexcept sm.exceptions.ResourceNotFoundException:\n    print('absent')\n    sys.exit(0)\nd = sm.describe_secret(SecretId={name:?})\nprint('SecretBinary' in v)\nprint(d.get('KmsKeyId', ''))\nprint(v.get('SecretString', ''))"
            ),
        );
        if out == "absent" {
            return None;
        }
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("False"), "'{name}' has a SecretBinary");
        assert_eq!(
            lines.next(),
            Some(self.0.kms_key.as_str()),
            "'{name}': KmsKeyId"
        );
        Some(lines.next().unwrap_or_default().to_string())
    }

    fn plant(&self, name: &str, record: &str) {
        moto_py(
            self.0,
            &format!(
                "sm.create_secret(Name={name:?}, SecretString={record:?}, KmsKeyId={:?})",
                self.0.kms_key
            ),
        );
    }
}

#[test]
fn keys_live_in_moto_as_upstream_stores_them_encrypted_with_kmskey_and_list_pages() {
    let m = start_moto();
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &tls, &admin, &m, "");
    let node = kes_on(&path, &m.secret_key);
    let endpoint = format!("https://{}", node.addr);
    // moto pages ListSecrets at 100
    let lifecycle = Lifecycle::one_node(&endpoint, &api_key, "aws-key", 110);
    let record = keystore_lifecycle(&lifecycle, &SecretsManager(&m));
    // Deleted at once, without a recovery window.
    let n = moto_py(
        &m,
        "print(len([s for s in sm.list_secrets(IncludePlannedDeletion=True, MaxResults=100)['SecretList'] if s['Name'] == 'aws-key']))",
    );
    assert_eq!(n, "0", "deleted without a recovery window");

    // A secret written by another client as SecretBinary (upstream reads both) is served.
    moto_py(
        &m,
        &format!("sm.create_secret(Name='binary-key', SecretBinary={record:?}.encode())"),
    );
    let mut c = client_for(&endpoint, &api_key);
    let r = c
        .request("POST", "/v1/key/generate/binary-key", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    let all = body_str(&c.request("GET", "/v1/key/list/*", None, &[]).unwrap());
    assert!(all.contains("\"binary-key\""), "{all}");

    let secret_key = m.secret_key.clone();
    outage_behaviour(&endpoint, &api_key, "upstream-key", "page-000", || drop(m));
    assert!(
        !node.stderr_text().contains(&secret_key),
        "the secret key leaked into the log"
    );
}

#[test]
fn invalid_credentials_are_clear_errors() {
    let m = start_moto();

    // Straight through the library: the error names AWS's code, never the secret.
    let store_with = |ak: &str, sk: &str| {
        let config = kes::config::AwsConfig {
            endpoint: format!("http://127.0.0.1:{}", m.port),
            region: "us-east-1".into(),
            kms_key: String::new(),
            credentials: Some(kes::config::AwsCredentials {
                access_key: ak.into(),
                secret_key: sk.into(),
                session_token: Default::default(),
            }),
        };
        kes::keystore::aws::AwsStore::new(config, &|_| None).unwrap()
    };
    use kes::keystore::KeyStore;
    let wrong_secret = "wrong-secret-NOT-TO-BE-LOGGED";
    let err = store_with(&m.access_key, wrong_secret)
        .create("k", b"v")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("status 403") && err.contains("SignatureDoesNotMatch"),
        "{err}"
    );
    assert!(!err.contains(wrong_secret), "{err}");
    let err = store_with("AKIAUNKNOWNKEY000000", wrong_secret)
        .get("k")
        .unwrap_err()
        .to_string();
    assert!(err.contains("InvalidClientTokenId"), "{err}");
    assert!(!err.contains(wrong_secret), "{err}");
    // The good key works through the same path.
    let good = store_with(&m.access_key, &m.secret_key);
    good.create("lib-key", b"v").unwrap();
    assert!(matches!(
        good.create("lib-key", b"v"),
        Err(kes::keystore::StoreError::AlreadyExists)
    ));
    assert_eq!(good.get("lib-key").unwrap().expose(), b"v");
    good.delete("lib-key").unwrap();
    assert!(matches!(
        good.get("lib-key"),
        Err(kes::keystore::StoreError::NotFound)
    ));

    // Through kes: a wrong secret key answers 502 for create and read.
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &tls, &admin, &m, "");
    let bad = kes_on(&path, wrong_secret);
    let mut c = client_for(&format!("https://{}", bad.addr), &api_key);
    assert_error(
        &c.request("POST", "/v1/key/create/x", None, &[]).unwrap(),
        502,
        "failed to create key",
    );
    assert_error(
        &c.request("POST", "/v1/key/generate/x", None, &[]).unwrap(),
        502,
        "failed to read key",
    );
    assert!(!bad.stderr_text().contains(wrong_secret));
}

#[test]
fn the_documented_aws_example_loads() {
    let (_yaml, config, _dir) = documented_keystore_example(
        "aws",
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "example-secret"),
        ],
        &[],
    );
    let kes::config::KeystoreConfig::Aws(aws) = config.keystore else {
        panic!("not the aws keystore");
    };
    assert_eq!(aws.region, "us-east-1");
    assert_eq!(aws.endpoint, "secretsmanager.us-east-1.amazonaws.com");
    assert_eq!(aws.credentials.unwrap().access_key, "AKIDEXAMPLE");
}

// ---- The credential chain: web identity, container credentials, instance metadata ----

/// `kes server --config path` with exactly `env` as its environment, plus the region and a
/// `HOME` without AWS files: nothing of the test's own environment (an `AWS_*` variable, a
/// `~/.aws/credentials`) takes part in the credential chain.
fn kes_with_env(
    path: &std::path::Path,
    home: &std::path::Path,
    env: &[(&str, String)],
) -> BinServer {
    bin_server_with(&["--config", path.to_str().unwrap()], |cmd| {
        cmd.env_clear()
            .env("KES_TEST_AWS_REGION", "us-east-1")
            .env("HOME", home);
        for (k, v) in env {
            cmd.env(k, v);
        }
    })
}

/// Temporary credentials of moto's role (access key, secret key, session token), assumed
/// with the IAM user's key: what an ECS agent or EC2's metadata service hands out.
fn role_credentials(m: &Moto) -> (String, String, String) {
    let out = moto_py(
        m,
        &format!(
            "c = sts.assume_role(RoleArn='{}', RoleSessionName='stand-in', DurationSeconds=3600)['Credentials']\nprint(c['AccessKeyId'], c['SecretAccessKey'], c['SessionToken'])",
            m.role_arn
        ),
    );
    let mut p = out.split_whitespace().map(str::to_string);
    (p.next().unwrap(), p.next().unwrap(), p.next().unwrap())
}

/// The JSON container and instance metadata credentials are served as, expiring
/// `lifetime_ms` from now.
fn credentials_json(c: &(String, String, String), lifetime_ms: u64) -> String {
    let now = kes::time::Timestamp::now();
    let expiration = kes::time::Timestamp::from_unix(
        now.seconds,
        now.nanos as i64 + lifetime_ms as i64 * 1_000_000,
    );
    format!(
        r#"{{"Code":"Success","LastUpdated":{},"Type":"AWS-HMAC","AccessKeyId":{},"SecretAccessKey":{},"Token":{},"Expiration":{}}}"#,
        q(&now.to_rfc3339()),
        q(&c.0),
        q(&c.1),
        q(&c.2),
        q(&expiration.to_rfc3339())
    )
}

/// A JWT-shaped token (header.payload.signature, base64url), as the kubelet projects them.
fn jwt_shaped() -> String {
    use base64::Engine;
    let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.{}",
        b(r#"{"alg":"RS256","kid":"k"}"#),
        b(&format!(
            r#"{{"aud":["sts.amazonaws.com"],"sub":"system:serviceaccount:kes:kes","jti":"{}"}}"#,
            random_hex(8)
        )),
        b(&random_hex(32))
    )
}

fn create_status(c: &mut kes::client::Client, name: &str) -> u16 {
    c.request("POST", &format!("/v1/key/create/{name}"), None, &[])
        .unwrap()
        .status
}

fn assert_no_secret(node: &BinServer, secrets: &[&str]) {
    let log = node.stderr_text();
    for s in secrets {
        assert!(
            !log.contains(s),
            "a credential or token leaked into the log:\n{log}"
        );
    }
}

#[test]
fn irsa_web_identity_credentials_come_from_sts_and_the_token_file_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let (token1, token2) = (jwt_shaped(), jwt_shaped());
    let expected = dir.path().join("sts-expects"); // the identity provider's view
    let projected = dir.path().join("token"); // the kubelet's projected token for kes
    std::fs::write(&expected, &token1).unwrap();
    std::fs::write(&projected, &token1).unwrap();
    let m = start_moto_with(&[
        ("KES_TEST_EXPECTED_TOKEN_FILE", expected.to_str().unwrap()),
        ("KES_TEST_STS_DURATION_SECONDS", "6"),
    ]);
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let path = write_config_with(dir.path(), &tls, &admin, m.port, &m.kms_key, "", "");
    let node = kes_with_env(
        &path,
        dir.path(),
        &[
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                projected.to_str().unwrap().into(),
            ),
            ("AWS_ROLE_ARN", m.role_arn.clone()),
            ("AWS_ROLE_SESSION_NAME", "kes-test".into()),
            (
                "AWS_ENDPOINT_URL_STS",
                format!("http://127.0.0.1:{}", m.port),
            ),
        ],
    );
    let mut c = client_for(&format!("https://{}", node.addr), &api_key);

    // No static credentials: STS's temporary ones sign every call, and moto checks their
    // signature and session token against the assumed role.
    assert_eq!(
        create_status(&mut c, "irsa-key"),
        200,
        "{}",
        node.stderr_text()
    );
    let endpoint = format!("https://{}", node.addr);
    generate_and_decrypt(&endpoint, &endpoint, &api_key, "irsa-key");
    stored_record(&SecretsManager(&m), "irsa-key");

    // The identity provider moves on to a new token; kes's file still holds the old one.
    // Renewals fail from now on: once the credentials in hand expire (6 s), calls fail.
    std::fs::write(&expected, &token2).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    loop {
        i += 1;
        let r = c
            .request("POST", &format!("/v1/key/create/rotated-{i}"), None, &[])
            .unwrap();
        if r.status == 502 {
            assert_error(&r, 502, "failed to create key");
            break;
        }
        assert_eq!(r.status, 200, "{}", body_str(&r));
        assert!(Instant::now() < deadline, "the credentials never expired");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        node.wait_stderr("InvalidIdentityToken", Duration::from_secs(5)),
        "the log should say why: {}",
        node.stderr_text()
    );

    // The kubelet rotates the projected token: the next renewal reads the file again.
    std::fs::write(&projected, &token2).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while create_status(&mut c, &format!("after-rotation-{i}")) != 200 {
        assert!(Instant::now() < deadline, "the new token was not read");
        i += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_no_secret(&node, &[&token1, &token2, &m.secret_key]);
}

#[test]
fn container_credentials_need_the_authorization_token_and_are_renewed_before_they_expire() {
    let m = start_moto();
    let creds = role_credentials(&m);
    let token = format!("pod-identity-{}", random_hex(16));
    let fetches = Arc::new(AtomicUsize::new(0));
    let unauthorized = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (creds, token) = (creds.clone(), token.clone());
        let (fetches, unauthorized) = (fetches.clone(), unauthorized.clone());
        Arc::new(move |req: &Request| {
            if req.path != "/v1/credentials" || req.query != "role=kes" {
                return Response::json(404, r#"{"code":"NotFound","message":"no such path"}"#);
            }
            if req.method != "GET" {
                return Response::empty(405);
            }
            if req.header("authorization") != Some(token.as_str()) {
                unauthorized.fetch_add(1, Ordering::SeqCst);
                return Response::json(
                    401,
                    r#"{"code":"AccessDenied","message":"invalid authorization token"}"#,
                );
            }
            fetches.fetch_add(1, Ordering::SeqCst);
            Response::json(200, credentials_json(&creds, 4_000))
        }) as standin::Handler
    };
    let agent = StandIn::start(handler.clone());
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("eks-pod-identity-token");
    std::fs::write(&token_file, &token).unwrap();
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let path = write_config_with(dir.path(), &tls, &admin, m.port, &m.kms_key, "", "");
    let url = format!("{}/v1/credentials?role=kes", agent.url());
    let node = kes_with_env(
        &path,
        dir.path(),
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", url.clone()),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                token_file.to_str().unwrap().into(),
            ),
        ],
    );
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        0,
        "fetched on first use, not at start"
    );
    let mut c = client_for(&format!("https://{}", node.addr), &api_key);
    assert_eq!(
        create_status(&mut c, "ecs-1"),
        200,
        "{}",
        node.stderr_text()
    );
    let fetched = Instant::now();
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    assert_eq!(create_status(&mut c, "ecs-2"), 200);
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "cached while fresh");
    // Past half of their 4 s lifetime, before they expire: renewed.
    std::thread::sleep(Duration::from_millis(2_500).saturating_sub(fetched.elapsed()));
    assert_eq!(
        create_status(&mut c, "ecs-3"),
        200,
        "{}",
        node.stderr_text()
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 2, "renewed before expiry");
    assert_eq!(unauthorized.load(Ordering::SeqCst), 0);
    assert_no_secret(&node, &[&token, &creds.1, &creds.2]);
    drop(node);

    // The wrong token: the agent answers 401, kes 502 and the log says why.
    let wrong = "wrong-token-NOT-TO-BE-LOGGED";
    let node = kes_with_env(
        &path,
        dir.path(),
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", url),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", wrong.into()),
        ],
    );
    let mut c = client_for(&format!("https://{}", node.addr), &api_key);
    assert_error(
        &c.request("POST", "/v1/key/create/ecs-x", None, &[])
            .unwrap(),
        502,
        "failed to create key",
    );
    assert!(unauthorized.load(Ordering::SeqCst) >= 1);
    assert!(
        node.wait_stderr("status 401", Duration::from_secs(5)),
        "{}",
        node.stderr_text()
    );
    assert_no_secret(&node, &[wrong, &token]);
    drop(node);

    // Over HTTPS the agent's certificate must be trusted: AWS_CA_BUNDLE (as the SDKs read it).
    let (tls_agent, ca_pem) = StandIn::start_tls(handler);
    let ca = dir.path().join("agent-ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let https_url = format!("{}/v1/credentials?role=kes", tls_agent.https_url());
    let env = |with_ca: bool| {
        let mut env = vec![
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", https_url.clone()),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", token.clone()),
        ];
        if with_ca {
            env.push(("AWS_CA_BUNDLE", ca.to_str().unwrap().to_string()));
        }
        env
    };
    let node = kes_with_env(&path, dir.path(), &env(false));
    let mut c = client_for(&format!("https://{}", node.addr), &api_key);
    assert_eq!(create_status(&mut c, "ecs-tls"), 502, "an untrusted agent");
    drop(node);
    let node = kes_with_env(&path, dir.path(), &env(true));
    let mut c = client_for(&format!("https://{}", node.addr), &api_key);
    assert_eq!(
        create_status(&mut c, "ecs-tls"),
        200,
        "{}",
        node.stderr_text()
    );
    assert_no_secret(&node, &[&token, &creds.1, &creds.2]);
}

/// An EC2 instance metadata service (IMDSv2) stand-in: a session token from
/// `PUT /latest/api/token` (TTL header required) must accompany every metadata `GET`.
struct Imds {
    standin: StandIn,
    /// Credential documents served (or refused while failing).
    fetches: Arc<AtomicUsize>,
    /// Metadata requests without a valid session token.
    rejected: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

fn start_imds(creds: (String, String, String), lifetime_ms: u64) -> Imds {
    let tokens: Arc<Mutex<Vec<String>>> = Arc::default();
    let fetches = Arc::new(AtomicUsize::new(0));
    let rejected = Arc::new(AtomicUsize::new(0));
    let failing = Arc::new(AtomicBool::new(false));
    let lifetime = Arc::new(AtomicU64::new(lifetime_ms));
    let handler = {
        let (fetches, rejected, failing) = (fetches.clone(), rejected.clone(), failing.clone());
        Arc::new(move |req: &Request| {
            if req.path == "/latest/api/token" {
                if req.method != "PUT" {
                    return Response::empty(405);
                }
                let ttl = req
                    .header("x-aws-ec2-metadata-token-ttl-seconds")
                    .and_then(|v| v.parse::<u32>().ok());
                if !ttl.is_some_and(|t| (1..=21_600).contains(&t)) {
                    return Response::empty(400);
                }
                let token = random_hex(28);
                tokens.lock().unwrap().push(token.clone());
                return Response::text(200, &token);
            }
            if !req.path.starts_with("/latest/meta-data/") {
                return Response::empty(404);
            }
            if req.method != "GET" {
                return Response::empty(405);
            }
            let valid = req
                .header("x-aws-ec2-metadata-token")
                .is_some_and(|t| tokens.lock().unwrap().iter().any(|k| k == t));
            if !valid {
                rejected.fetch_add(1, Ordering::SeqCst);
                return Response::empty(401);
            }
            match req.path.as_str() {
                "/latest/meta-data/iam/security-credentials/" => Response::text(200, "kes-role"),
                "/latest/meta-data/iam/security-credentials/kes-role" => {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    if failing.load(Ordering::SeqCst) {
                        return Response::empty(500);
                    }
                    Response::json(
                        200,
                        credentials_json(&creds, lifetime.load(Ordering::SeqCst)),
                    )
                }
                _ => Response::empty(404),
            }
        }) as standin::Handler
    };
    Imds {
        standin: StandIn::start(handler),
        fetches,
        rejected,
        failing,
    }
}

/// The status line of a raw HTTP/1.1 request to the stand-in.
fn raw_status(port: u16, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or("").to_string()
}

#[test]
fn instance_metadata_credentials_are_kept_while_valid_renewed_and_refused_once_expired() {
    let m = start_moto();
    let creds = role_credentials(&m);
    let imds = start_imds(creds.clone(), 6_000);
    let port = imds.standin.port;
    // The stand-in is strict: no session token, no metadata; the token needs a PUT and a TTL.
    let get = "GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nHost: x\r\n\r\n";
    assert!(raw_status(port, get).contains(" 401 "));
    let get_token = "GET /latest/api/token HTTP/1.1\r\nHost: x\r\n\r\n";
    assert!(raw_status(port, get_token).contains(" 405 "));
    let no_ttl = "PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    assert!(raw_status(port, no_ttl).contains(" 400 "));
    assert_eq!(imds.rejected.swap(0, Ordering::SeqCst), 1);

    let dir = tempfile::tempdir().unwrap();
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let path = write_config_with(dir.path(), &tls, &admin, m.port, &m.kms_key, "", "");
    let node = kes_with_env(
        &path,
        dir.path(),
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.standin.url())],
    );
    let mut c = client_for(&format!("https://{}", node.addr), &api_key);
    let before = Instant::now();
    assert_eq!(
        create_status(&mut c, "imds-1"),
        200,
        "{}",
        node.stderr_text()
    );
    let after = Instant::now();
    // The timing below assumes the credentials were fetched within this window.
    assert!(
        after - before < Duration::from_secs(2),
        "{:?}",
        after - before
    );
    assert_eq!(imds.fetches.load(Ordering::SeqCst), 1);
    assert_eq!(create_status(&mut c, "imds-2"), 200);
    assert_eq!(imds.fetches.load(Ordering::SeqCst), 1, "cached while fresh");

    // The service fails from now on. Past half of the 6 s lifetime a renewal is tried and
    // fails; the credentials in hand are still valid and keep serving.
    imds.failing.store(true, Ordering::SeqCst);
    std::thread::sleep(
        (after + Duration::from_millis(3_300)).saturating_duration_since(Instant::now()),
    );
    assert_eq!(
        create_status(&mut c, "imds-3"),
        200,
        "{}",
        node.stderr_text()
    );
    assert!(
        imds.fetches.load(Ordering::SeqCst) > 1,
        "a renewal was tried"
    );
    assert!(node.wait_stderr("status 500", Duration::from_secs(5)));

    // Expired, and the renewal still fails: 502.
    std::thread::sleep(
        (after + Duration::from_millis(6_300)).saturating_duration_since(Instant::now()),
    );
    assert_error(
        &c.request("POST", "/v1/key/create/imds-4", None, &[])
            .unwrap(),
        502,
        "failed to create key",
    );

    // The service is back: the next renewal (after the 2 s hold) succeeds.
    imds.failing.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut i = 5;
    while create_status(&mut c, &format!("imds-{i}")) != 200 {
        assert!(Instant::now() < deadline, "{}", node.stderr_text());
        i += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        imds.rejected.load(Ordering::SeqCst),
        0,
        "every GET carried the session token"
    );
    assert_no_secret(&node, &[&creds.1, &creds.2]);
}

#[test]
fn without_any_source_kes_names_every_source_it_tried() {
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let closed = free_port(); // nothing listens: neither Secrets Manager nor the metadata service
    let path = write_config_with(dir.path(), &tls, &admin, closed, "", "", "");

    // Instance metadata disabled and nothing else: kes does not start, and says why.
    let mut child = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(["server", "--config", path.to_str().unwrap(), "--cores", "1"])
        .args(["--addr", &format!("127.0.0.1:{}", free_port())])
        .env_clear()
        .env("KES_TEST_AWS_REGION", "us-east-1")
        .env("HOME", dir.path())
        .env("AWS_ACCESS_KEY_ID", "AKIA-HALF-A-PAIR")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kes started without credentials");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    for part in [
        "no AWS credentials",
        "in the config (not set)",
        "AWS_SECRET_ACCESS_KEY not set",
        "AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN (not set)",
        "the shared credentials file",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI (not set)",
        "EC2 instance metadata (disabled by AWS_EC2_METADATA_DISABLED)",
    ] {
        assert!(stderr.contains(part), "{part}: {stderr}");
    }

    // Instance metadata enabled but absent (off EC2): kes starts (no I/O at start-up), and
    // calls fail quickly with the reason, every source tried listed, in the log.
    let node = kes_with_env(
        &path,
        dir.path(),
        &[(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("http://127.0.0.1:{closed}"),
        )],
    );
    let mut c = client_for(&format!("https://{}", node.addr), &api_key);
    let started = Instant::now();
    assert_error(
        &c.request("POST", "/v1/key/create/k", None, &[]).unwrap(),
        502,
        "failed to create key",
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let expected =
        format!("no AWS credentials: EC2 instance metadata at http://127.0.0.1:{closed}");
    assert!(
        node.wait_stderr(&expected, Duration::from_secs(5)),
        "{}",
        node.stderr_text()
    );
    assert!(node
        .stderr_text()
        .contains("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"));
}

/// Upstream's secrets (`../shared/fixtures/upstream-kes/aws-secretsmanager.json`), created in
/// moto as upstream created them (`Name`, `SecretString`, `KmsKeyId` = the alias, no prefix),
/// are served: every vector upstream made decrypts, a wrong context fails, and each key is
/// described with upstream's creation time and creator.
#[test]
fn secrets_written_by_upstream_kes_are_served() {
    let fixture = common::fixtures::load("aws-secretsmanager");
    let alias = &fixture
        .store_setup()
        .kms_key
        .as_ref()
        .expect("store_setup.kms_key")
        .alias;
    let m = start_moto();
    moto_py(
        &m,
        &format!(
            "kms.create_alias(AliasName={alias:?}, TargetKeyId={:?})",
            m.kms_key
        ),
    );
    for (name, key) in fixture.keys() {
        assert_eq!(key.kms_key_id(), alias);
        moto_py(
            &m,
            &format!(
                "sm.create_secret(Name={name:?}, SecretString={:?}, KmsKeyId={alias:?})",
                key.secret_string()
            ),
        );
    }
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let credentials = format!(
        "      credentials:\n        accesskey: {}\n        secretkey: ${{KES_TEST_AWS_SECRET}}\n",
        m.access_key
    );
    let path = write_config_with(dir.path(), &tls, &admin, m.port, alias, &credentials, "");
    let node = kes_on(&path, &m.secret_key);
    let endpoint = format!("https://{}", node.addr);
    for (name, key) in fixture.keys() {
        common::fixtures::assert_serves_vectors(&endpoint, &api_key, name, key);
        common::fixtures::assert_describes_as_upstream(&endpoint, &api_key, name, key);
    }
}

/// Issue 21 item 9: a delete does not read the secret's value first, so a secret scheduled
/// for deletion (or one that cannot be decrypted) is deleted all the same, as upstream does;
/// a missing one is still 404. Also under upstream's documented IAM policy, which grants no
/// `DescribeSecret`.
#[test]
fn a_secret_scheduled_for_deletion_is_still_deleted() {
    let m = start_moto();
    // A second IAM user with upstream's documented policy only.
    let minimal = moto_py(
        &m,
        "policy = json.dumps({'Version': '2012-10-17', 'Statement': [\
           {'Effect': 'Allow', 'Action': ['secretsmanager:CreateSecret', 'secretsmanager:GetSecretValue', 'secretsmanager:DeleteSecret', 'secretsmanager:ListSecrets'], 'Resource': '*'},\
           {'Effect': 'Allow', 'Action': ['kms:GenerateDataKey', 'kms:Decrypt'], 'Resource': '*'}]})\n\
         iam.create_user(UserName='kes-minimal')\n\
         iam.put_user_policy(UserName='kes-minimal', PolicyName='upstream', PolicyDocument=policy)\n\
         k = iam.create_access_key(UserName='kes-minimal')['AccessKey']\n\
         print(k['AccessKeyId'], k['SecretAccessKey'])",
    );
    let (min_ak, min_sk) = minimal.split_once(' ').unwrap();
    // moto enforces it: DescribeSecret is denied to that user.
    let denied = common::moto::py(
        m.port,
        min_ak,
        min_sk,
        "try:\n    sm.describe_secret(SecretId='x')\nexcept Exception as e:\n    print(type(e).__name__, e)",
    );
    assert!(denied.contains("AccessDenied"), "{denied}");

    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    for (user, ak, sk) in [
        ("kes", m.access_key.as_str(), m.secret_key.as_str()),
        ("kes-minimal", min_ak, min_sk),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let credentials = format!(
            "      credentials:\n        accesskey: {ak}\n        secretkey: ${{KES_TEST_AWS_SECRET}}\n"
        );
        let path = write_config_with(
            dir.path(),
            &tls,
            &admin,
            m.port,
            &m.kms_key,
            &credentials,
            "",
        );
        let node = kes_on(&path, sk);
        let mut c = client_for(&format!("https://{}", node.addr), &api_key);
        let name = format!("scheduled-{user}");
        assert_eq!(create_status(&mut c, &name), 200);
        // Another client schedules it for deletion: it can no longer be read.
        moto_py(
            &m,
            &format!("sm.delete_secret(SecretId={name:?}, RecoveryWindowInDays=7)"),
        );
        let r = c
            .request("DELETE", &format!("/v1/key/delete/{name}"), None, &[])
            .unwrap();
        assert_eq!(r.status, 200, "{user}: {}", body_str(&r));
        let left = moto_py(
            &m,
            &format!("print(len([s for s in sm.list_secrets(IncludePlannedDeletion=True)['SecretList'] if s['Name'] == {name:?}]))"),
        );
        assert_eq!(left, "0", "{user}: {name} is still in Secrets Manager");
        assert_error(
            &c.request("DELETE", "/v1/key/delete/never-created", None, &[])
                .unwrap(),
            404,
            "key does not exist",
        );
    }
}

/// The Secrets Manager keystore opened directly (two calls: two nodes) on moto, as the
/// IAM user `kes`, with `kms_key` as `kmskey`.
fn open_store(m: &Moto, kms_key: &str) -> std::sync::Arc<dyn kes::keystore::KeyStore> {
    let yaml = format!(
        "keystore:\n  aws:\n    secretsmanager:\n      endpoint: http://127.0.0.1:{}\n      region: us-east-1\n      kmskey: {kms_key}\n      credentials:\n        accesskey: {}\n        secretkey: {}\n",
        m.port, m.access_key, m.secret_key
    );
    let config = kes::config::parse_keystore_only(&yaml, &|_| None).expect("config");
    kes::keystore::open(&config).expect("open the AWS keystore")
}

/// The secret's `AWSCURRENT` string and its versions' labels, as boto3 reads them.
fn current_and_stages(m: &Moto, name: &str) -> (String, Vec<Vec<String>>) {
    let out = moto_py(
        m,
        &format!(
            "v = sm.get_secret_value(SecretId={name:?}, VersionStage='AWSCURRENT')['SecretString']\n\
             d = sm.describe_secret(SecretId={name:?})\n\
             print(json.dumps([v, d['KmsKeyId'], sorted(sorted(s) for s in d['VersionIdsToStages'].values())]))"
        ),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let stages = serde_json::from_value(v[2].clone()).unwrap();
    (v[0].as_str().unwrap().to_string(), stages)
}

/// Key rotation's `replace` is a compare-and-set built on staging labels: a record upstream
/// wrote is replaced by a new `AWSCURRENT` version (a `SecretString`, under the secret's KMS
/// key), which every node then reads; a stale expected value is a conflict that changes
/// nothing; a missing secret is not found.
#[test]
fn replace_moves_awscurrent_to_the_new_value_only_from_the_expected_one() {
    use kes::keystore::{ReplaceKind, StoreError};
    let fixture = common::fixtures::load("aws-secretsmanager");
    let m = start_moto();
    let alias = "alias/kes-fixture";
    moto_py(
        &m,
        &format!(
            "kms.create_alias(AliasName={alias:?}, TargetKeyId={:?})",
            m.kms_key
        ),
    );
    let (name, key) = fixture.keys().next().expect("a key");
    let upstream = key.secret_string();
    moto_py(
        &m,
        &format!("sm.create_secret(Name={name:?}, SecretString={upstream:?}, KmsKeyId={alias:?})"),
    );
    let (a, b) = (open_store(&m, alias), open_store(&m, alias));
    assert_eq!(a.replace_kind(), ReplaceKind::Atomic);
    let e = a.replace("missing", b"x", b"y").unwrap_err();
    assert!(matches!(e, StoreError::NotFound), "{e:?}");

    let e = a.replace(name, b"stale", ring(1).as_bytes()).unwrap_err();
    assert!(matches!(e, StoreError::Conflict), "{e:?}");
    let (value, stages) = current_and_stages(&m, name);
    assert_eq!(
        (value.as_str(), stages.len()),
        (upstream, 1),
        "a conflict wrote"
    );

    a.replace(name, upstream.as_bytes(), ring(1).as_bytes())
        .unwrap();
    assert_eq!(b.get(name).unwrap().expose(), ring(1).as_bytes());
    let (value, stages) = current_and_stages(&m, name);
    assert_eq!(value, ring(1));
    // The upstream record is the previous version; no pending label is left.
    assert_eq!(stages, [vec!["AWSCURRENT"], vec!["AWSPREVIOUS"]]);
    let kms = moto_py(
        &m,
        &format!("print(sm.describe_secret(SecretId={name:?})['KmsKeyId'])"),
    );
    assert_eq!(kms, alias);

    // The replaced value is gone: replacing from it again is a conflict.
    let e = b
        .replace(name, upstream.as_bytes(), ring(9).as_bytes())
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict), "{e:?}");
    b.replace(name, ring(1).as_bytes(), ring(2).as_bytes())
        .unwrap();
    assert_eq!(a.get(name).unwrap().expose(), ring(2).as_bytes());
    assert_eq!(current_and_stages(&m, name).0, ring(2));

    a.delete(name).unwrap();
    let e = b
        .replace(name, ring(2).as_bytes(), ring(3).as_bytes())
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound), "{e:?}");
}

/// Two nodes (two `AwsStore`s) increment one key concurrently with read → replace, retrying
/// on conflict: moving `AWSCURRENT` only off the version read lets no increment be lost.
#[test]
fn racing_replaces_lose_no_increment() {
    const WRITERS: usize = 4;
    const INCREMENTS: usize = 10;
    let m = start_moto();
    let stores = [open_store(&m, &m.kms_key), open_store(&m, &m.kms_key)];
    stores[0].create("counter", ring(0).as_bytes()).unwrap();
    let conflicts = race_increments(&stores, "counter", WRITERS, INCREMENTS);
    assert_eq!(
        counter_of(stores[1].get("counter").unwrap().expose()),
        WRITERS * INCREMENTS
    );
    assert_eq!(
        current_and_stages(&m, "counter").0,
        ring(WRITERS * INCREMENTS)
    );
    assert!(conflicts > 0, "the writers never raced");
}
