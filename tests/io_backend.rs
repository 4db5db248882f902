//! The I/O backend: the one in use is reported at start (and is the one `KES_IO_BACKEND`
//! asks for, so `tools/test-all.sh` can run the whole suite per backend); the server serves
//! every route on io_uring, and on epoll with io_uring forbidden by a seccomp filter — as
//! Docker's default profile and Kubernetes' `RuntimeDefault` forbid it — where `--io auto`
//! falls back to epoll and says why, and `--io io_uring` is refused with the reason and the
//! fix.

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use common::*;

/// io_uring_setup, io_uring_enter, io_uring_register: the same numbers on x86_64 and
/// aarch64 (the generic syscall table).
const IO_URING_SYSCALLS: [u32; 3] = [425, 426, 427];

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64

const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
/// offsetof(struct seccomp_data, nr) and (…, arch).
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// A seccomp program that fails the io_uring system calls with EPERM and allows everything
/// else (Docker's default profile fails every call it does not list with EPERM).
fn no_io_uring_filter() -> Vec<libc::sock_filter> {
    let [setup, enter, register] = IO_URING_SYSCALLS;
    vec![
        insn(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH),
        insn(BPF_JEQ_K, 0, 4, AUDIT_ARCH), // another ABI: allow (jump to 6)
        insn(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_NR),
        insn(BPF_JEQ_K, 3, 0, setup),
        insn(BPF_JEQ_K, 2, 0, enter),
        insn(BPF_JEQ_K, 1, 0, register),
        insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        insn(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | libc::EPERM as u32),
    ]
}

/// Installs `filter` on the calling thread (and what it execs). Async-signal-safe: only
/// prctl calls, on memory prepared beforehand.
fn install(filter: &[libc::sock_filter]) -> std::io::Result<()> {
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with integer arguments, and a pointer to `prog`, which outlives the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// io_uring must work on the machines the tests run on (the backend's tests need it).
fn require_io_uring() {
    if let Err(why) = kes::rt::uring::probe() {
        panic!("these tests need io_uring on this machine: {why}");
    }
}

/// What `kes` must report: the backend `KES_IO_BACKEND` asks for, resolved.
fn expected_backend() -> &'static str {
    match std::env::var("KES_IO_BACKEND").as_deref() {
        Ok("epoll") => "epoll",
        Ok("auto") | Ok("io_uring") | Ok("") | Err(_) => {
            require_io_uring();
            "io_uring"
        }
        Ok(other) => panic!("KES_IO_BACKEND={other} is not a backend"),
    }
}

/// The `Runtime` line of a started server's banner.
fn runtime_line(server: &BinServer) -> String {
    server
        .stdout_lines
        .iter()
        .find(|l| l.starts_with("Runtime"))
        .unwrap_or_else(|| panic!("no Runtime line in {:?}", server.stdout_lines))
        .clone()
}

#[test]
fn the_backend_in_use_is_reported_at_start() {
    let server = bin_server(&["--dev"]);
    let runtime = runtime_line(&server);
    assert!(
        runtime.contains(&format!("I/O: {}", expected_backend())),
        "{runtime}"
    );
    // The in-process server reports the same.
    let prepared = kes::cli::server::prepare_dev(Some("127.0.0.1:0"), Some(1)).unwrap();
    let running = kes::server::run(prepared.options).unwrap();
    assert_eq!(running.backend.name(), expected_backend());
    std::mem::forget(running);
}

#[test]
fn io_uring_forbidden_is_refused_when_asked_for_and_auto_falls_back_to_epoll() {
    let filter = no_io_uring_filter();
    let out = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args([
            "server",
            "--dev",
            "--addr",
            "127.0.0.1:0",
            "--io",
            "io_uring",
        ])
        .env_remove("KES_IO_BACKEND")
        .pre_exec_filter(filter.clone())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("io_uring is not permitted here"), "{err}");
    assert!(err.contains("--io epoll"), "{err}");

    let server = bin_server_with(&["--dev", "--io", "auto"], move |cmd| {
        cmd.env_remove("KES_IO_BACKEND").pre_exec_filter(filter);
    });
    assert!(
        runtime_line(&server).contains("I/O: epoll"),
        "{}",
        runtime_line(&server)
    );
    assert!(
        server.wait_stderr(
            "--io auto: using epoll because io_uring is not permitted here",
            Duration::from_secs(5)
        ),
        "{}",
        server.stderr_text()
    );

    let out = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(["server", "--dev", "--addr", "127.0.0.1:0"])
        .env("KES_IO_BACKEND", "kqueue")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kqueue"), "{err}");
}

#[test]
fn the_filter_forbids_io_uring_setup() {
    // Checked on a thread of our own (a filter binds only its thread), so the test below
    // cannot pass because the filter did nothing.
    let filter = no_io_uring_filter();
    let errno = std::thread::spawn(move || {
        install(&filter).expect("install the seccomp filter");
        // struct io_uring_params, zeroed: the defaults.
        let mut params = [0u8; 120];
        // SAFETY: io_uring_setup reads and writes `params`, which is large enough.
        let rc = unsafe { libc::syscall(425, 1u32, params.as_mut_ptr()) };
        if rc >= 0 {
            // SAFETY: closing the descriptor the call returned.
            unsafe { libc::close(rc as i32) };
        }
        (rc, std::io::Error::last_os_error().raw_os_error())
    })
    .join()
    .unwrap();
    assert_eq!(errno, (-1, Some(libc::EPERM)));
}

/// Installs the filter in the child between fork and exec.
trait PreExecFilter {
    fn pre_exec_filter(&mut self, filter: Vec<libc::sock_filter>) -> &mut Self;
}

impl PreExecFilter for Command {
    fn pre_exec_filter(&mut self, filter: Vec<libc::sock_filter>) -> &mut Self {
        // SAFETY: the closure only calls prctl on memory allocated before the fork.
        unsafe { self.pre_exec(move || install(&filter)) }
    }
}

#[test]
fn every_route_is_served_with_io_uring_forbidden_by_seccomp() {
    let filter = no_io_uring_filter();
    // `auto`, as a deployment would set it: epoll here.
    let server = bin_server_with(&["--dev", "--io", "auto"], move |cmd| {
        cmd.env_remove("KES_IO_BACKEND").pre_exec_filter(filter);
    });
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    assert!(
        status.contains("Seccomp:\t2"),
        "no seccomp filter: {status}"
    );
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(runtime_line(&server).contains("I/O: epoll"));
    serves_every_route(&server);
}

#[test]
fn every_route_is_served_on_io_uring() {
    require_io_uring();
    let server = bin_server_with(&["--dev", "--io", "io_uring"], |cmd| {
        cmd.env_remove("KES_IO_BACKEND");
    });
    assert!(runtime_line(&server).contains("I/O: io_uring"));
    serves_every_route(&server);
}

fn serves_every_route(server: &BinServer) {
    let api_key = server.dev_api_key();
    let mut c = client_for(&format!("https://{}", server.addr), &api_key);
    let ok = |c: &mut kes::client::Client, method: &str, path: &str, body: Option<&[u8]>| {
        let r = c.request(method, path, body, &[]).unwrap();
        assert_eq!(r.status, 200, "{method} {path}: {}", body_str(&r));
        r
    };
    // Routes without keys.
    ok(&mut c, "GET", "/version", None);
    ok(&mut c, "GET", "/v1/ready", None);
    ok(&mut c, "GET", "/v1/status", None);
    ok(&mut c, "GET", "/v1/metrics", None);
    ok(&mut c, "GET", "/v1/api", None);
    // Keys.
    ok(&mut c, "POST", "/v1/key/create/k", None);
    let import = format!(r#"{{"key":"{}","cipher":"AES256"}}"#, B64.encode([7u8; 32]));
    ok(
        &mut c,
        "POST",
        "/v1/key/import/imported",
        Some(import.as_bytes()),
    );
    ok(&mut c, "GET", "/v1/key/describe/k", None);
    let list = ok(&mut c, "GET", "/v1/key/list/*", None);
    assert!(body_str(&list).contains("imported"), "{}", body_str(&list));
    let r = ok(&mut c, "POST", "/v1/key/generate/k", None);
    let ciphertext = json_str(&r, "ciphertext");
    let body = format!(r#"{{"ciphertext":"{ciphertext}"}}"#);
    let d = ok(&mut c, "POST", "/v1/key/decrypt/k", Some(body.as_bytes()));
    assert_eq!(json_str(&d, "plaintext"), json_str(&r, "plaintext"));
    let body = format!(r#"{{"plaintext":"{}"}}"#, B64.encode("hello"));
    ok(&mut c, "POST", "/v1/key/encrypt/k", Some(body.as_bytes()));
    ok(
        &mut c,
        "PUT",
        "/v1/key/hmac/k",
        Some(br#"{"message":"aGVsbG8="}"#),
    );
    ok(&mut c, "DELETE", "/v1/key/delete/imported", None);
    // Policies and identities (dev mode has none besides the admin): answered, not failed.
    for path in [
        "/v1/policy/describe/p",
        "/v1/policy/read/p",
        "/v1/policy/list/*",
        "/v1/identity/describe/x",
        "/v1/identity/list/*",
    ] {
        let r = c.request("GET", path, None, &[]).unwrap();
        assert!(r.status < 500, "GET {path}: {} {}", r.status, body_str(&r));
    }
    ok(&mut c, "GET", "/v1/identity/self/describe", None);
    // The two log streams answer 200 and stream.
    for path in ["/v1/log/error", "/v1/log/audit"] {
        let mut raw = raw_tls(server.addr, Some(&api_key)).unwrap();
        raw.send(format!("GET {path} HTTP/1.1\r\nHost: kes\r\n\r\n").as_bytes());
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            raw.stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{path}: {head}");
    }
    // Still healthy after all of it.
    ok(&mut c, "GET", "/v1/status", None);
}
