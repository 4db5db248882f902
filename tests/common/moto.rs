//! moto in server mode (`moto_server`, from `pip install "moto[server]"`) on loopback, for the
//! AWS Secrets Manager keystore.
//!
//! moto runs with `INITIAL_NO_AUTH_ACTION_COUNT=4`: the setup (IAM user, its policy and
//! access key, a KMS key; boto3) runs unauthenticated, after which moto checks every
//! request's SigV4 signature against the IAM user's secret, as AWS does.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, KillOnDrop};

/// A running `moto_server` with an IAM user `kes` (allowed everything) and a KMS key; killed
/// on drop.
pub struct Moto {
    pub child: KillOnDrop,
    pub port: u16,
    pub access_key: String,
    pub secret_key: String,
    pub kms_key: String,
}

/// Runs a python3 snippet with boto3 clients `sm`/`kms`/`iam` for moto at `port` (signed
/// with `ak`/`sk`); returns its stdout.
pub fn py(port: u16, ak: &str, sk: &str, code: &str) -> String {
    let script = format!(
        "import boto3, json, sys\nkw = dict(endpoint_url='http://127.0.0.1:{port}', region_name='us-east-1', aws_access_key_id='{ak}', aws_secret_access_key='{sk}')\nsm = boto3.client('secretsmanager', **kw)\nkms = boto3.client('kms', **kw)\niam = boto3.client('iam', **kw)\n{code}\n"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn start_moto() -> Moto {
    let found = Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "these tests need moto in server mode: pip install 'moto[server]' (provides moto_server)"
    );
    let port = free_port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("INITIAL_NO_AUTH_ACTION_COUNT", "4")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    let mut moto = Moto {
        child: KillOnDrop(child),
        port,
        access_key: String::new(),
        secret_key: String::new(),
        kms_key: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = py(
        port,
        "setup",
        "setup",
        "iam.create_user(UserName='kes')\n\
         iam.put_user_policy(UserName='kes', PolicyName='all', PolicyDocument=json.dumps({'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': '*', 'Resource': '*'}]}))\n\
         k = iam.create_access_key(UserName='kes')['AccessKey']\n\
         kid = kms.create_key()['KeyMetadata']['KeyId']\n\
         print(k['AccessKeyId'], k['SecretAccessKey'], kid)",
    );
    let mut parts = out.split_whitespace();
    moto.access_key = parts.next().unwrap().to_string();
    moto.secret_key = parts.next().unwrap().to_string();
    moto.kms_key = parts.next().unwrap().to_string();
    moto
}

/// moto queried with the IAM user's own (valid) credentials.
pub fn moto_py(m: &Moto, code: &str) -> String {
    py(m.port, &m.access_key, &m.secret_key, code)
}
