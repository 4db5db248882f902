//! Shared test harness: real servers on loopback (in-process or the `kes` binary), real TLS
//! clients authenticated with API keys.
#![allow(dead_code)]

pub mod bao;
pub mod fixtures;
pub mod lifecycle;
pub mod moto;
pub mod race;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use kes::auth::apikey::ApiKey;
use kes::client::{Client, ClientConfig, Credentials, Response};

pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// kms-go `k2:` (ECDSA) keys and the identities kms-go gives them, computed with Go's
/// crypto/elliptic and x509.MarshalPKIXPublicKey (the SPKI `aead.dev/mtls` hashes); the
/// scalars are the bytes 1, 2, 3, ….
pub const K2_P256: &str = "k2:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA";
pub const K2_P256_H1: &str = "h1:8dWUSbcnFl3nMr8oMzgSK5liimFZGP7cZ9h4__z0fac";
pub const K2_P256_HEX: &str = "f1d59449b727165de732bf283338122b99628a615918fedc67d878fffcf47da7";
pub const K2_P384: &str = "k2:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8w";
pub const K2_P384_H1: &str = "h1:bjBG4XEF9zpxLMgNNrPDOpM48hvmG__SzAV_MLGsjyw";
pub const K2_P384_HEX: &str = "6e3046e17105f73a712cc80d36b3c33a9338f21be61bffd2cc057f30b1ac8f2c";

/// A child process (an emulator, a server) killed and reaped on drop.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server running in this test process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub api_key: String,
}

impl TestServer {
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn client(&self) -> Client {
        client_for(&self.endpoint(), &self.api_key)
    }
}

pub fn client_for(endpoint: &str, api_key: &str) -> Client {
    Client::new(ClientConfig {
        endpoints: vec![endpoint.to_string()],
        credentials: Some(Credentials::ApiKey(
            ApiKey::parse(api_key).expect("valid API key"),
        )),
        insecure: true,
        ca_file: None,
        timeout: Duration::from_secs(10),
    })
    .expect("client")
}

/// `kes server --dev` on 127.0.0.1, one core, in this process.
pub fn dev_server() -> TestServer {
    dev_server_with(|_| {})
}

/// Like [`dev_server`], with the server options adjusted first (timeouts, limits).
pub fn dev_server_with(adjust: impl FnOnce(&mut kes::server::ServerOptions)) -> TestServer {
    let mut prepared =
        kes::cli::server::prepare_dev(Some("127.0.0.1:0"), Some(1)).expect("dev server");
    adjust(&mut prepared.options);
    let api_key = prepared.api_key.clone().expect("dev API key");
    let running = kes::server::run(prepared.options).expect("server starts");
    let addr = running.local_addr;
    std::mem::forget(running);
    TestServer { addr, api_key }
}

/// A directory with a server certificate and key for 127.0.0.1.
pub struct TlsFiles {
    pub dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

pub fn tls_files() -> TlsFiles {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, cert_pem) = kes::auth::cert::self_signed_server_cert(
        &["127.0.0.1".parse().unwrap()],
        &["localhost".to_string()],
    )
    .unwrap();
    drop(cert);
    let cert_path = dir.path().join("server.cert");
    let key_path = dir.path().join("server.key");
    std::fs::write(&cert_path, cert_pem).unwrap();
    std::fs::write(&key_path, pem("PRIVATE KEY", key.secret_der())).unwrap();
    TlsFiles {
        dir,
        cert: cert_path,
        key: key_path,
    }
}

/// A fresh API key and its identity.
pub fn new_api_key() -> (String, String) {
    let key = ApiKey::generate().unwrap();
    let text = String::from_utf8(key.to_string_secret().expose().to_vec()).unwrap();
    (text, key.identity().to_hex())
}

/// A config-file server in this process. `body` is the YAML after `admin`/`tls`/`keystore`.
pub fn config_server(tls: &TlsFiles, admin: &str, keys_dir: &Path, extra: &str) -> TestServer {
    let yaml = config_yaml(tls, admin, keys_dir, extra);
    let config = kes::config::parse(&yaml, &|_| None).expect("config parses");
    let prepared = kes::cli::server::prepare_config(&config, Some("127.0.0.1:0"), Some(1))
        .expect("server prepares");
    let running = kes::server::run(prepared.options).expect("server starts");
    let addr = running.local_addr;
    std::mem::forget(running);
    TestServer {
        addr,
        api_key: String::new(),
    }
}

pub fn config_yaml(tls: &TlsFiles, admin: &str, keys_dir: &Path, extra: &str) -> String {
    format!(
        "version: v1\nadmin:\n  identity: {admin}\ntls:\n  key: {}\n  cert: {}\nkeystore:\n  fs:\n    path: {}\n{extra}",
        tls.key.display(),
        tls.cert.display(),
        keys_dir.display()
    )
}

/// `kes <args>` as a user runs it: none of the client variables from the test's own
/// environment, and `server`'s endpoint and API key (if any) in `KES_SERVER`/`KES_API_KEY`.
pub fn kes_command(server: Option<&TestServer>, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kes"));
    cmd.args(args).stdin(Stdio::null());
    for var in [
        "MINIO_KES_SERVER",
        "KES_SERVER",
        "MINIO_KMS_KES_ENDPOINT",
        "MINIO_KES_API_KEY",
        "KES_API_KEY",
        "MINIO_KMS_KES_API_KEY",
        "RUST_BACKTRACE",
    ] {
        cmd.env_remove(var);
    }
    if let Some(s) = server {
        cmd.env("KES_SERVER", s.endpoint())
            .env("KES_API_KEY", &s.api_key);
    }
    cmd
}

/// The `kes` binary as a child process; killed on drop.
pub struct BinServer {
    pub child: Child,
    pub addr: SocketAddr,
    pub stdout_lines: Vec<String>,
    /// Everything the server wrote to stderr so far (also echoed to the test's stderr).
    pub stderr: Arc<Mutex<String>>,
}

impl BinServer {
    pub fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits (bounded) until stderr contains `needle`; returns whether it did.
    pub fn wait_stderr(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr_text().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl BinServer {
    /// The admin API key a `--dev` server printed in its banner.
    pub fn dev_api_key(&self) -> String {
        let line = self
            .stdout_lines
            .iter()
            .find(|l| l.starts_with("API Key"))
            .unwrap_or_else(|| panic!("no API key in banner: {:?}", self.stdout_lines));
        line.split_whitespace()
            .last()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for BinServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `kes server <args> --addr 127.0.0.1:<port>` and waits for its banner.
pub fn bin_server(args: &[&str]) -> BinServer {
    bin_server_with(args, |_| {})
}

/// Like [`bin_server`], with the command adjusted first (environment, resource limits).
pub fn bin_server_with(args: &[&str], adjust: impl FnOnce(&mut Command)) -> BinServer {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    spawn_bin_server(&[], args, addr, true, adjust)
}

/// Like [`bin_server`], run through a wrapper command such as `taskset -c 0`.
pub fn bin_server_under(wrapper: &[&str], args: &[&str]) -> BinServer {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    spawn_bin_server(wrapper, args, addr, true, |_| {})
}

/// Starts `kes server <args>` without `--addr`: the config's `address` (which must be
/// `addr`) is the one in force.
pub fn bin_server_at_config_address(args: &[&str], addr: SocketAddr) -> BinServer {
    spawn_bin_server(&[], args, addr, false, |_| {})
}

fn spawn_bin_server(
    wrapper: &[&str],
    args: &[&str],
    addr: SocketAddr,
    addr_flag: bool,
    adjust: impl FnOnce(&mut Command),
) -> BinServer {
    let mut cmd = match wrapper.split_first() {
        Some((program, wrapper_args)) => {
            let mut c = Command::new(program);
            c.args(wrapper_args).arg(env!("CARGO_BIN_EXE_kes"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_kes")),
    };
    cmd.arg("server").args(args);
    if !args.contains(&"--cores") {
        cmd.args(["--cores", "1"]);
    }
    if addr_flag {
        cmd.args(["--addr", &addr.to_string()]);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    adjust(&mut cmd);
    let mut child = cmd.spawn().expect("spawn kes");
    let stderr = Arc::new(Mutex::new(String::new()));
    let err_pipe = child.stderr.take().unwrap();
    let sink = stderr.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err_pipe).lines() {
            let Ok(line) = line else { break };
            eprintln!("{line}");
            let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
            s.push_str(&line);
            s.push('\n');
        }
    });
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).unwrap_or(0);
        if n == 0 {
            let status = child.try_wait();
            panic!("kes server exited before it was up: {status:?}; output: {lines:?}");
        }
        let done = line.contains("Server is up and running");
        lines.push(line.trim_end().to_string());
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "server did not start in time");
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    BinServer {
        child,
        addr,
        stdout_lines: lines,
        stderr,
    }
}

/// JSON body of a response as a serde-free map lookup: the string value of `member`.
pub fn json_str(resp: &Response, member: &str) -> String {
    let mut body = resp.body.clone();
    let value = simd_json::to_owned_value(&mut body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&resp.body)));
    use simd_json::prelude::*;
    value
        .get(member)
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| {
            panic!(
                "no string member {member} in {:?}",
                String::from_utf8_lossy(&resp.body)
            )
        })
        .to_string()
}

pub fn body_str(resp: &Response) -> String {
    String::from_utf8_lossy(&resp.body).into_owned()
}

/// Asserts an error answer: status, JSON content type and the exact reference body bytes.
pub fn assert_error(resp: &Response, status: u16, message: &str) {
    assert_eq!(resp.status, status, "body: {}", body_str(resp));
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let mut expected = Vec::new();
    kes::api::json::write_error_body(&mut expected, message);
    assert_eq!(body_str(resp), String::from_utf8(expected).unwrap());
}

/// A raw TLS connection with an API-key client certificate, for byte-level HTTP tests.
pub struct RawTls {
    pub stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

pub fn raw_tls(addr: SocketAddr, api_key: Option<&str>) -> std::io::Result<RawTls> {
    let config = kes::client::rustls_config(&ClientConfig {
        endpoints: Vec::new(),
        credentials: api_key.map(|k| Credentials::ApiKey(ApiKey::parse(k).unwrap())),
        insecure: true,
        ca_file: None,
        timeout: Duration::from_secs(10),
    })
    .expect("client TLS config");
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    // Complete the handshake now so failures surface here.
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(RawTls { stream })
}

impl RawTls {
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        self.stream.flush().unwrap();
    }

    /// Reads until the server closes the connection or `timeout` passes.
    pub fn read_all(&mut self, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut buf = [0u8; 16384];
        while Instant::now() < deadline {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    break
                }
                Err(_) => break,
            }
        }
        out
    }

    /// True if the server closes the connection (EOF or reset) within `timeout` without
    /// sending anything; false if it is still open (or it sent bytes).
    pub fn closed_by_server(&mut self, timeout: Duration) -> bool {
        self.stream.sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 1024];
        match self.stream.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }

    /// Reads until `n` complete HTTP responses (Content-Length framed) have arrived.
    pub fn read_responses(&mut self, n: usize) -> Vec<(u16, Vec<u8>)> {
        let mut buf = Vec::new();
        let mut tmp = [0u8; 16384];
        let mut out = Vec::new();
        loop {
            // Parse as many responses as are complete.
            loop {
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut resp = httparse::Response::new(&mut headers);
                let Ok(httparse::Status::Complete(head)) = resp.parse(&buf) else {
                    break;
                };
                let len = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| {
                        std::str::from_utf8(h.value)
                            .unwrap()
                            .parse::<usize>()
                            .unwrap()
                    })
                    .unwrap_or(0);
                if buf.len() < head + len {
                    break;
                }
                out.push((resp.code.unwrap(), buf[head..head + len].to_vec()));
                buf.drain(..head + len);
                if out.len() == n {
                    return out;
                }
            }
            let k = self.stream.read(&mut tmp).expect("read response");
            assert!(k > 0, "connection closed after {} responses", out.len());
            buf.extend_from_slice(&tmp[..k]);
        }
    }
}

/// Raises this process's soft fd limit to the hard one; returns it.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: plain rlimit calls on our own process.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur
    }
}

/// The variables a documented config example needs besides `extra`: admin and MinIO
/// identities.
pub fn example_env(extra: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let mut vars: Vec<(String, String)> = vec![
        ("KES_ADMIN_IDENTITY".into(), "a".repeat(64)),
        ("MINIO_KES_IDENTITY".into(), "b".repeat(64)),
    ];
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

/// The text of `server-config.yaml`.
pub fn server_config_example() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/server-config.yaml")).unwrap()
}

/// The blocks of `server-config.yaml`'s commented keystore examples (`  # <block>:` lines
/// after `keystore:`), in order.
pub fn documented_keystore_blocks() -> Vec<String> {
    let example = server_config_example();
    let keystore = example.find("\nkeystore:\n").expect("a keystore section");
    example[keystore..]
        .lines()
        .filter_map(|l| l.strip_prefix("  # ")?.strip_suffix(':'))
        .filter(|b| !b.is_empty() && b.bytes().all(|c| c.is_ascii_lowercase()))
        .map(str::to_string)
        .collect()
}

/// `server-config.yaml` with its commented `  # <block>:` keystore example uncommented in
/// place of the fs keystore.
pub fn documented_keystore_yaml(block: &str) -> String {
    let example = server_config_example();
    let start = example
        .find(&format!("  # {block}:\n"))
        .unwrap_or_else(|| panic!("no {block} example in server-config.yaml"));
    let lines: String = example[start..]
        .lines()
        .take_while(|l| l.starts_with("  #"))
        .map(|l| format!("  {}\n", &l[4..]))
        .collect();
    let fs_start = example.find("keystore:\n").unwrap();
    format!("{}keystore:\n{lines}", &example[..fs_start])
}

/// The keystore examples of README.md: each `keystore.*` row's "minimal config" of the
/// Keystores table and each ```yaml block with a keystore, as (where, YAML) pairs.
pub fn readme_keystore_examples() -> Vec<(String, String)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut out = Vec::new();
    for (i, line) in readme.lines().enumerate() {
        if !line.starts_with("| `keystore.") {
            continue;
        }
        let last = line
            .trim_end_matches('|')
            .rsplit('|')
            .next()
            .unwrap()
            .trim();
        if let Some(yaml) = last.strip_prefix('`').and_then(|l| l.strip_suffix('`')) {
            out.push((
                format!("README.md:{} (table)", i + 1),
                format!("keystore:\n  {yaml}\n"),
            ));
        }
    }
    for (i, block) in readme.split("```yaml\n").enumerate().skip(1) {
        let yaml = &block[..block.find("```").unwrap()];
        if yaml.contains("keystore:") {
            out.push((format!("README.md yaml block {i}"), yaml.to_string()));
        }
    }
    out
}

/// The commented `  # <block>:` keystore example of `server-config.yaml`, uncommented in
/// place of the fs keystore: it must pass `kes server --config … --check` without a warning
/// (every key is one kes knows) with the example's variables set (see [`example_env`]) and
/// `certificates` (file names the example refers to, e.g. a CA) present in its directory;
/// returns its YAML, the parsed config and the directory.
pub fn documented_keystore_example(
    block: &str,
    extra: &[(&str, &str)],
    certificates: &[&str],
) -> (String, kes::config::Config, tempfile::TempDir) {
    let yaml = documented_keystore_yaml(block);
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_files();
    std::fs::copy(&tls.key, dir.path().join("server.key")).unwrap();
    std::fs::copy(&tls.cert, dir.path().join("server.cert")).unwrap();
    for name in certificates {
        std::fs::copy(&tls.cert, dir.path().join(name)).unwrap();
    }
    let path = dir.path().join(format!("{block}-example.yml"));
    std::fs::write(&path, &yaml).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kes"));
    cmd.args(["server", "--config", path.to_str().unwrap(), "--check"])
        .env("KES_ADMIN_IDENTITY", "a".repeat(64))
        .env("MINIO_KES_IDENTITY", "b".repeat(64))
        .current_dir(dir.path());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{yaml}\n{stderr}");
    assert!(!stderr.contains("warning"), "{yaml}\n{stderr}");
    let config = kes::config::parse(&yaml, &example_env(extra)).unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    (yaml, config, dir)
}

/// Variables through which the GCP and Azure keystores find credentials: removed from a
/// `kes` child's environment (and `HOME` pointed at `home`, where gcloud's file would be), so
/// a test sees only the sources it sets, whatever the machine running it has.
pub const CLOUD_CREDENTIAL_VARS: [&str; 20] = [
    "GOOGLE_APPLICATION_CREDENTIALS",
    "CLOUDSDK_CONFIG",
    "GCE_METADATA_HOST",
    "GCE_METADATA_IP",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_REGIONAL_AUTHORITY_NAME",
];

/// Clears [`CLOUD_CREDENTIAL_VARS`] from `cmd` and sets `HOME` to `home`.
pub fn clean_cloud_env(cmd: &mut Command, home: &Path) {
    for var in CLOUD_CREDENTIAL_VARS {
        cmd.env_remove(var);
    }
    cmd.env("HOME", home);
}

/// Runs `kes server --config <config>` that must fail at start: returns its stderr (bounded:
/// 20 s).
pub fn kes_start_fails(config: &Path, adjust: impl FnOnce(&mut Command)) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kes"));
    cmd.args([
        "server",
        "--config",
        config.to_str().unwrap(),
        "--cores",
        "1",
    ])
    .args(["--addr", &format!("127.0.0.1:{}", free_port())])
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    adjust(&mut cmd);
    let mut child = cmd.spawn().expect("spawn kes");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "kes started");
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kes did not exit at start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
