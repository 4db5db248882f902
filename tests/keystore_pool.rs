//! The per-core blocking pool that runs keystore calls, against a keystore stand-in that
//! blocks until the test lets it go (a keystore that has become slow): the queue is bounded
//! (a call beyond it is answered 503 at once), and a call whose request gave up at its route
//! timeout is never made when it was still waiting in the queue (issue 20, #8).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::*;
use kes::keystore::{KeyStore, StoreError};
use kes::secret::SecretVec;

/// How long a blocked call waits for the gate at most (so a failing test still ends).
const GATE_WAIT_MAX: Duration = Duration::from_secs(60);

/// A keystore whose `create` counts the call, then blocks until [`Gate::open`].
#[derive(Default)]
struct Gate {
    creates: AtomicUsize,
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    /// Waits (bounded) until `create` was called `n` times.
    fn wait_creates(&self, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while self.creates.load(Ordering::SeqCst) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "the keystore saw {} of {n} calls",
                self.creates.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

struct GatedStore(Arc<Gate>);

impl KeyStore for GatedStore {
    fn display_name(&self) -> String {
        "gated stand-in".into()
    }
    fn status(&self) -> Result<Duration, StoreError> {
        Ok(Duration::ZERO)
    }
    fn create(&self, _name: &str, _value: &[u8]) -> Result<(), StoreError> {
        self.0.creates.fetch_add(1, Ordering::SeqCst);
        let open = self.0.open.lock().unwrap();
        let _open = self
            .0
            .opened
            .wait_timeout_while(open, GATE_WAIT_MAX, |open| !*open)
            .unwrap();
        Ok(())
    }
    fn get(&self, _name: &str) -> Result<SecretVec, StoreError> {
        Err(StoreError::NotFound)
    }
    fn delete(&self, _name: &str) -> Result<(), StoreError> {
        Err(StoreError::NotFound)
    }
    fn list(&self, _prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
}

/// `POST /v1/key/create/<name>` on a connection of its own: (status, body).
fn create(addr: std::net::SocketAddr, api_key: &str, name: &str) -> (u16, String) {
    let mut raw = raw_tls(addr, Some(api_key)).unwrap();
    raw.stream
        .sock
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    raw.send(
        format!("POST /v1/key/create/{name} HTTP/1.1\r\nHost: kes\r\nContent-Length: 0\r\n\r\n")
            .as_bytes(),
    );
    let (status, body) = raw.read_responses(1).remove(0);
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn a_full_pool_queue_answers_503_and_abandoned_calls_are_skipped() {
    const QUEUE: usize = 4;
    let threads = kes::server::runtime::BLOCKING_THREADS_PER_CORE;
    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    let (admin_key, admin) = new_api_key();
    // Route timeout 5 s: long enough that every request below reaches the pool before the
    // first of them gives up, even on a loaded machine.
    let yaml = config_yaml(
        &tls,
        &admin,
        keys.path(),
        "api:\n  /v1/key/create/:\n    timeout: 5s\n",
    );
    let config = kes::config::parse(&yaml, &|_| None).expect("config parses");
    let mut prepared = kes::cli::server::prepare_config(&config, Some("127.0.0.1:0"), Some(1))
        .expect("server prepares");
    let gate = Arc::new(Gate::default());
    Arc::get_mut(&mut prepared.options.shared)
        .expect("the state is not shared yet")
        .keystore = Arc::new(GatedStore(gate.clone()));
    prepared.options.blocking_queue_jobs_max = QUEUE;
    let running = kes::server::run(prepared.options).expect("server starts");
    let addr = running.local_addr;

    // Every pool thread blocked in the keystore...
    let mut clients = Vec::new();
    for i in 0..threads {
        let key = admin_key.clone();
        clients.push(std::thread::spawn(move || {
            create(addr, &key, &format!("run-{i}"))
        }));
    }
    gate.wait_creates(threads);
    // ... then one call more than the queue holds: exactly one is refused at once.
    let mut queued = Vec::new();
    for i in 0..=QUEUE {
        let key = admin_key.clone();
        queued.push(std::thread::spawn(move || {
            create(addr, &key, &format!("wait-{i}"))
        }));
    }
    let queued: Vec<(u16, String)> = queued.into_iter().map(|t| t.join().unwrap()).collect();
    let busy: Vec<_> = queued
        .iter()
        .filter(|(_, body)| body.contains("busy"))
        .collect();
    assert_eq!(busy.len(), 1, "{queued:?}");
    assert_eq!(busy[0].0, 503, "{queued:?}");
    // The others waited in the queue until their route timeout.
    for (status, body) in &queued {
        assert_eq!(*status, 503, "{body}");
    }
    for t in clients {
        let (status, body) = t.join().unwrap();
        assert_eq!(status, 503, "{body}");
    }
    assert_eq!(gate.creates.load(Ordering::SeqCst), threads);

    // Nobody waits for the queued calls any more: once the keystore answers again they are
    // skipped, not made. A new call queued behind them shows they have been passed.
    gate.open();
    let (status, body) = create(addr, &admin_key, "after");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        gate.creates.load(Ordering::SeqCst),
        threads + 1,
        "calls whose requests had given up were still made"
    );
    std::mem::forget(running);
}
