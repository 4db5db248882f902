//! moto in server mode (from `pip install "moto[server]"`) on loopback, for the AWS Secrets
//! Manager keystore, started through a small launcher that serves `AssumeRoleWithWebIdentity`
//! as AWS does (unsigned: the web identity token is the proof; moto would otherwise demand a
//! signature), optionally checks the token against a file and shortens the credentials' life.
//!
//! moto runs with `INITIAL_NO_AUTH_ACTION_COUNT=6`: the setup (IAM user, its policy and
//! access key, a KMS key, a role; boto3) runs unauthenticated, after which moto checks every
//! request's SigV4 signature against the IAM user's secret, as AWS does.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, KillOnDrop};

/// moto's server with `AssumeRoleWithWebIdentity` as AWS serves it (see the module docs).
pub const MOTO_LAUNCHER: &str = r#"
import os, sys
from moto.core import authorization as auth
from moto.sts import models as sts_models, responses as sts_responses
from moto.sts.exceptions import STSClientError

checked = auth.ActionAuthenticatorMixin._authenticate_and_authorize_action
def authenticate(self, cls, resource="*"):
    if self._get_action() == "AssumeRoleWithWebIdentity":
        return  # unsigned at AWS: the web identity token is the proof
    return checked(self, cls, resource)
auth.ActionAuthenticatorMixin._authenticate_and_authorize_action = authenticate

web_identity = sts_responses.TokenResponse.assume_role_with_web_identity
def checked_web_identity(self):
    path = os.environ.get("KES_TEST_EXPECTED_TOKEN_FILE")
    if path is not None:
        with open(path) as f:
            expected = f.read()
        if self._get_param("WebIdentityToken") != expected:
            raise STSClientError("InvalidIdentityToken", "The web identity token is not valid")
    return web_identity(self)
sts_responses.TokenResponse.assume_role_with_web_identity = checked_web_identity

seconds = os.environ.get("KES_TEST_STS_DURATION_SECONDS")
if seconds:
    assume = sts_models.STSBackend.assume_role_with_web_identity
    def short_assume(self, **kw):
        kw["duration"] = int(seconds)
        return assume(self, **kw)
    sts_models.STSBackend.assume_role_with_web_identity = short_assume

from moto.server import main
main(sys.argv[1:])
"#;

pub struct Moto {
    pub child: KillOnDrop,
    pub port: u16,
    pub access_key: String,
    pub secret_key: String,
    pub kms_key: String,
    /// An IAM role allowed everything, assumable by the user and by web identities.
    pub role_arn: String,
}

/// Runs a python3 snippet with boto3 clients `sm`/`kms`/`iam`/`sts` for moto at `port`
/// (signed with `ak`/`sk`); returns its stdout.
pub fn py(port: u16, ak: &str, sk: &str, code: &str) -> String {
    let script = format!(
        "import boto3, json, sys\nkw = dict(endpoint_url='http://127.0.0.1:{port}', region_name='us-east-1', aws_access_key_id='{ak}', aws_secret_access_key='{sk}')\nsm = boto3.client('secretsmanager', **kw)\nkms = boto3.client('kms', **kw)\niam = boto3.client('iam', **kw)\nsts = boto3.client('sts', **kw)\n{code}\n"
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
    start_moto_with(&[])
}

/// moto with `env` added to its environment (`KES_TEST_EXPECTED_TOKEN_FILE`, …).
pub fn start_moto_with(env: &[(&str, &str)]) -> Moto {
    let found = Command::new("python3")
        .args(["-c", "import moto.server, boto3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "these tests need python3 with moto in server mode and boto3: pip install 'moto[server]' boto3"
    );
    let port = free_port();
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        MOTO_LAUNCHER,
        "-H",
        "127.0.0.1",
        "-p",
        &port.to_string(),
    ])
    .env("INITIAL_NO_AUTH_ACTION_COUNT", "6")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("start moto's server");
    let mut moto = Moto {
        child: KillOnDrop(child),
        port,
        access_key: String::new(),
        secret_key: String::new(),
        kms_key: String::new(),
        role_arn: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto's server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = py(
        port,
        "setup",
        "setup",
        "allow_all = json.dumps({'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': '*', 'Resource': '*'}]})\n\
         trust = json.dumps({'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Principal': {'AWS': '*', 'Federated': '*'}, 'Action': ['sts:AssumeRole', 'sts:AssumeRoleWithWebIdentity']}]})\n\
         iam.create_user(UserName='kes')\n\
         iam.put_user_policy(UserName='kes', PolicyName='all', PolicyDocument=allow_all)\n\
         k = iam.create_access_key(UserName='kes')['AccessKey']\n\
         kid = kms.create_key()['KeyMetadata']['KeyId']\n\
         role = iam.create_role(RoleName='kes-role', AssumeRolePolicyDocument=trust)['Role']['Arn']\n\
         iam.put_role_policy(RoleName='kes-role', PolicyName='all', PolicyDocument=allow_all)\n\
         print(k['AccessKeyId'], k['SecretAccessKey'], kid, role)",
    );
    let mut parts = out.split_whitespace();
    moto.access_key = parts.next().unwrap().to_string();
    moto.secret_key = parts.next().unwrap().to_string();
    moto.kms_key = parts.next().unwrap().to_string();
    moto.role_arn = parts.next().unwrap().to_string();
    moto
}

/// moto queried with the IAM user's own (valid) credentials.
pub fn moto_py(m: &Moto, code: &str) -> String {
    py(m.port, &m.access_key, &m.secret_key, code)
}
