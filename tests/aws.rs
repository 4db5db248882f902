//! The AWS Secrets Manager keystore against moto in server mode (`moto_server`, from
//! `pip install "moto[server]"`) on loopback, through `kes server --config`.
//!
//! moto runs with `INITIAL_NO_AUTH_ACTION_COUNT=4`: the setup (IAM user, its policy and
//! access key, a KMS key; boto3) runs unauthenticated, after which moto checks every
//! request's SigV4 signature against the IAM user's secret (as AWS does), so these tests also
//! check our signing against moto's (botocore's) verifier.

mod common;

use std::time::{Duration, Instant};

use common::moto::{moto_py, start_moto, Moto};
use common::*;

/// Config for a `kes server --config` node on moto: the secret key comes from the
/// environment (`${KES_TEST_AWS_SECRET}`) to show `${ENV}` substitution in the block.
fn write_config(
    dir: &std::path::Path,
    tls: &TlsFiles,
    admin: &str,
    m: &Moto,
    extra: &str,
) -> std::path::PathBuf {
    let yaml = format!(
        "admin:\n  identity: {admin}\ntls:\n  key: {}\n  cert: {}\ncache:\n  expiry:\n    any: 5m\n    unused: 5m\nkeystore:\n  aws:\n    secretsmanager:\n      endpoint: http://127.0.0.1:{}\n      region: ${{KES_TEST_AWS_REGION}}\n      kmskey: {}\n      credentials:\n        accesskey: {}\n        secretkey: ${{KES_TEST_AWS_SECRET}}\n{extra}",
        tls.key.display(),
        tls.cert.display(),
        m.port,
        m.kms_key,
        m.access_key,
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

#[test]
fn keys_live_in_moto_as_upstream_stores_them_encrypted_with_kmskey_and_list_pages() {
    let m = start_moto();
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &tls, &admin, &m, "");
    let node = kes_on(&path, &m.secret_key);
    let mut c = client_for(&format!("https://{}", node.addr), &api_key);

    assert_eq!(
        c.request("POST", "/v1/key/create/aws-key", None, &[])
            .unwrap()
            .status,
        200
    );
    assert_error(
        &c.request("POST", "/v1/key/create/aws-key", None, &[])
            .unwrap(),
        400,
        "key already exists",
    );
    let r = c
        .request(
            "POST",
            "/v1/key/generate/aws-key",
            Some(br#"{"context":"e30="}"#),
            &[],
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    let body = format!(
        r#"{{"ciphertext":"{}","context":"e30="}}"#,
        json_str(&r, "ciphertext")
    );
    let d = c
        .request(
            "POST",
            "/v1/key/decrypt/aws-key",
            Some(body.as_bytes()),
            &[],
        )
        .unwrap();
    assert_eq!(d.status, 200, "{}", body_str(&d));
    assert_eq!(json_str(&d, "plaintext"), json_str(&r, "plaintext"));

    // Stored as upstream stores it: Name = key name, SecretString = the record, KmsKeyId set.
    let stored = moto_py(
        &m,
        "v = sm.get_secret_value(SecretId='aws-key')\nd = sm.describe_secret(SecretId='aws-key')\nprint(v['SecretString'])\nprint(d.get('KmsKeyId', ''))",
    );
    let mut lines = stored.lines();
    let record = lines.next().unwrap();
    assert!(record.starts_with("CiQKI"), "{record}");
    kes::crypto::record::decode_record(record.as_bytes()).unwrap();
    assert_eq!(lines.next().unwrap(), m.kms_key);

    // A secret written by another client as SecretBinary (upstream reads both) is served.
    moto_py(
        &m,
        &format!("sm.create_secret(Name='binary-key', SecretBinary={record:?}.encode())"),
    );
    let r = c
        .request("POST", "/v1/key/generate/binary-key", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));

    // Past one ListSecrets page (moto pages at 100): 110 more keys, all listed.
    for i in 0..110 {
        let r = c
            .request("POST", &format!("/v1/key/create/page-{i:03}"), None, &[])
            .unwrap();
        assert_eq!(r.status, 200, "page-{i}: {}", body_str(&r));
    }
    let listed = c.request("GET", "/v1/key/list/page-*", None, &[]).unwrap();
    let text = body_str(&listed);
    for i in 0..110 {
        assert!(
            text.contains(&format!("\"page-{i:03}\"")),
            "page-{i:03} missing"
        );
    }
    assert!(!text.contains("aws-key"));
    let all = body_str(&c.request("GET", "/v1/key/list/*", None, &[]).unwrap());
    assert!(all.contains("\"aws-key\"") && all.contains("\"binary-key\""));

    // Delete: gone at once (no recovery window), then 404.
    assert_eq!(
        c.request("DELETE", "/v1/key/delete/aws-key", None, &[])
            .unwrap()
            .status,
        200
    );
    assert_error(
        &c.request("POST", "/v1/key/generate/aws-key", None, &[])
            .unwrap(),
        404,
        "key does not exist",
    );
    assert_error(
        &c.request("DELETE", "/v1/key/delete/aws-key", None, &[])
            .unwrap(),
        404,
        "key does not exist",
    );
    let n = moto_py(
        &m,
        "print(len([s for s in sm.list_secrets(IncludePlannedDeletion=True, MaxResults=100)['SecretList'] if s['Name'] == 'aws-key']))",
    );
    assert_eq!(n, "0", "deleted without a recovery window");
    assert!(
        !node.stderr_text().contains(&m.secret_key),
        "the secret key leaked into the log"
    );
}

#[test]
fn invalid_credentials_and_an_outage_are_clear_errors() {
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
                session_token: String::new(),
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
    drop(bad);

    // An outage: cached keys keep working, others 502 at once, /v1/ready 504.
    let node = kes_on(&path, &m.secret_key);
    let mut c = client_for(&format!("https://{}", node.addr), &api_key);
    for name in ["hot", "cold"] {
        let r = c
            .request("POST", &format!("/v1/key/create/{name}"), None, &[])
            .unwrap();
        assert_eq!(r.status, 200, "{}", body_str(&r));
    }
    assert_eq!(
        c.request("POST", "/v1/key/generate/hot", None, &[])
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        c.request("GET", "/v1/ready", None, &[]).unwrap().status,
        200
    );
    drop(m); // moto is gone
    std::thread::sleep(Duration::from_millis(1200)); // let the 1 s status cache age out
    let started = Instant::now();
    assert_eq!(
        c.request("POST", "/v1/key/generate/hot", None, &[])
            .unwrap()
            .status,
        200,
        "cached keys keep working"
    );
    assert_error(
        &c.request("POST", "/v1/key/generate/cold", None, &[])
            .unwrap(),
        502,
        "failed to read key",
    );
    assert_error(
        &c.request("GET", "/v1/ready", None, &[]).unwrap(),
        504,
        "key store is not reachable",
    );
    let r = c.request("GET", "/v1/status", None, &[]).unwrap();
    assert!(
        body_str(&r).contains("\"keystore_unreachable\":true"),
        "{}",
        body_str(&r)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "outage answers must be quick: {:?}",
        started.elapsed()
    );
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
