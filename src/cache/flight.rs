//! Single flight for keystore reads: when several cores (or requests) miss the same key at
//! the same moment, one keystore read runs and the others wait for its result. Runs on
//! blocking-pool threads only (waiting blocks the thread, never an executor).
//!
//! A follower waits at most its route's timeout (the request has been answered with a 503 by
//! then), and a leader that fails in any way (an error, a panic that unwinds through
//! [`SingleFlight::get`]) wakes every follower with an error and clears the flight, so the next
//! miss reads again.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::keystore::StoreError;
use crate::secret::SecretVec;

/// A fetch result that can be handed to every waiter.
#[derive(Clone)]
enum Shared {
    Value(SecretVec),
    NotFound,
    Failed(Failure),
}

/// A failure handed to every waiter as the keystore gave it (a [`StoreError`] is not `Clone`):
/// the same variant, and an I/O error's kind and text (not the `StoreError`'s own text, which
/// would say `keystore I/O error:` twice once wrapped again).
#[derive(Clone)]
enum Failure {
    AlreadyExists,
    InvalidName,
    TooLarge,
    Unreachable(String),
    Io(std::io::ErrorKind, String),
    Conflict,
    Unsupported(&'static str),
}

impl Failure {
    fn of(e: &StoreError) -> Failure {
        match e {
            // Not a failure: `Shared::NotFound`; kept whole should a caller share it anyway.
            StoreError::NotFound => Failure::Io(std::io::ErrorKind::NotFound, e.to_string()),
            StoreError::AlreadyExists => Failure::AlreadyExists,
            StoreError::InvalidName => Failure::InvalidName,
            StoreError::TooLarge => Failure::TooLarge,
            StoreError::Unreachable(why) => Failure::Unreachable(why.clone()),
            StoreError::Io(io) => Failure::Io(io.kind(), io.to_string()),
            StoreError::Conflict => Failure::Conflict,
            StoreError::Unsupported(what) => Failure::Unsupported(what),
        }
    }

    fn error(self) -> StoreError {
        match self {
            Failure::AlreadyExists => StoreError::AlreadyExists,
            Failure::InvalidName => StoreError::InvalidName,
            Failure::TooLarge => StoreError::TooLarge,
            Failure::Unreachable(why) => StoreError::Unreachable(why),
            Failure::Io(kind, text) => StoreError::Io(std::io::Error::new(kind, text)),
            Failure::Conflict => StoreError::Conflict,
            Failure::Unsupported(what) => StoreError::Unsupported(what),
        }
    }
}

struct Flight {
    result: Mutex<Option<Shared>>,
    done: Condvar,
}

/// In-flight keystore reads by key name.
#[derive(Default)]
pub struct SingleFlight {
    inflight: Mutex<HashMap<String, Arc<Flight>>>,
}

/// The leader's duty to publish a result: done by [`Leader::finish`], or on drop (a panic in
/// the fetch unwinding) with a failure, so that no follower waits for a result that never
/// comes and the flight does not stay in the map.
struct Leader<'a> {
    flights: &'a SingleFlight,
    name: &'a str,
    flight: Arc<Flight>,
    finished: bool,
}

impl Leader<'_> {
    fn finish(&mut self, result: Shared) {
        self.finished = true;
        *self.flight.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        let mut map = self
            .flights
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if map
            .get(self.name)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            map.remove(self.name);
        }
        drop(map);
        self.flight.done.notify_all();
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(Shared::Failed(Failure::Io(
                std::io::ErrorKind::Other,
                "the keystore read this request waited for failed".into(),
            )));
        }
    }
}

impl SingleFlight {
    /// Runs `fetch` for `name`, or waits for the fetch already running and shares its result.
    /// A follower waits at most `wait` (zero: as long as the leader takes) and then fails with
    /// a [`std::io::ErrorKind::TimedOut`] error.
    pub fn get(
        &self,
        name: &str,
        wait: Duration,
        fetch: impl FnOnce() -> Result<SecretVec, StoreError>,
    ) -> Result<SecretVec, StoreError> {
        let (flight, leader) = {
            let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(name) {
                Some(f) => (f.clone(), false),
                None => {
                    let f = Arc::new(Flight {
                        result: Mutex::new(None),
                        done: Condvar::new(),
                    });
                    map.insert(name.to_string(), f.clone());
                    (f, true)
                }
            }
        };
        let result = if leader {
            let mut duty = Leader {
                flights: self,
                name,
                flight,
                finished: false,
            };
            let shared = match fetch() {
                Ok(v) => Shared::Value(v),
                Err(StoreError::NotFound) => Shared::NotFound,
                Err(e) => Shared::Failed(Failure::of(&e)),
            };
            duty.finish(shared.clone());
            shared
        } else {
            let deadline = (!wait.is_zero()).then(|| Instant::now() + wait);
            let mut guard = flight.result.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(result) = guard.as_ref() {
                    break result.clone();
                }
                guard = match deadline {
                    None => flight.done.wait(guard).unwrap_or_else(|e| e.into_inner()),
                    Some(deadline) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Err(StoreError::Io(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "timed out waiting for another request's keystore read",
                            )));
                        }
                        flight
                            .done
                            .wait_timeout(guard, left)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                };
            }
        };
        match result {
            Shared::Value(v) => Ok(v),
            Shared::NotFound => Err(StoreError::NotFound),
            Shared::Failed(failure) => Err(failure.error()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    #[test]
    fn concurrent_misses_fetch_once() {
        let flights = Arc::new(SingleFlight::default());
        let fetches = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (flights, fetches, barrier) =
                    (flights.clone(), fetches.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    flights
                        .get("k", Duration::ZERO, || {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(200));
                            Ok(SecretVec::new(b"record".to_vec()))
                        })
                        .map(|v| v.expose().to_vec())
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap().unwrap(), b"record");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // Errors are shared too, and nothing is remembered afterwards.
        assert!(matches!(
            flights.get("missing", Duration::ZERO, || Err(StoreError::NotFound)),
            Err(StoreError::NotFound)
        ));
        assert_eq!(
            flights
                .get("k", Duration::ZERO, || Ok(SecretVec::new(
                    b"again".to_vec()
                )))
                .unwrap()
                .expose(),
            b"again"
        );
    }

    /// Waits until `n` threads hold the flight for `name` (leader, map and followers).
    fn wait_for_holders(flights: &SingleFlight, name: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let holders = flights
                .inflight
                .lock()
                .unwrap()
                .get(name)
                .map(Arc::strong_count);
            if holders == Some(n) {
                return;
            }
            assert!(Instant::now() < deadline, "holders: {holders:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts a leader whose fetch blocks until `release` is sent, then does `then`.
    fn blocked_leader(
        flights: &Arc<SingleFlight>,
        then: fn() -> Result<SecretVec, StoreError>,
    ) -> (
        std::sync::mpsc::Sender<()>,
        std::thread::JoinHandle<Result<Vec<u8>, String>>,
    ) {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let leader = {
            let flights = flights.clone();
            std::thread::spawn(move || {
                flights
                    .get("k", Duration::ZERO, move || {
                        let _ = started_tx.send(());
                        let _ = released.recv();
                        then()
                    })
                    .map(|v| v.expose().to_vec())
                    .map_err(|e| e.to_string())
            })
        };
        started.recv().unwrap();
        (release, leader)
    }

    /// Followers, each reporting its result on a channel (so a hang fails the test instead
    /// of blocking it).
    fn followers(
        flights: &Arc<SingleFlight>,
        n: usize,
        wait: Duration,
    ) -> std::sync::mpsc::Receiver<Result<Vec<u8>, StoreError>> {
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..n {
            let (flights, tx) = (flights.clone(), tx.clone());
            std::thread::spawn(move || {
                let r = flights.get("k", wait, || Ok(SecretVec::new(b"own read".to_vec())));
                let _ = tx.send(r.map(|v| v.expose().to_vec()));
            });
        }
        rx
    }

    #[test]
    fn a_panicking_leader_wakes_every_follower_with_an_error() {
        let flights = Arc::new(SingleFlight::default());
        let (release, leader) = blocked_leader(&flights, || panic!("keystore client bug"));
        let results = followers(&flights, 3, Duration::ZERO);
        wait_for_holders(&flights, "k", 2 + 3);
        release.send(()).unwrap();
        assert!(
            leader.join().is_err(),
            "the leader's panic propagates to it"
        );
        for _ in 0..3 {
            let r = results
                .recv_timeout(Duration::from_secs(5))
                .expect("a follower still waits for a leader that panicked");
            assert!(r.is_err(), "{r:?}");
        }
        // The flight is gone: the next miss reads again.
        assert_eq!(
            flights
                .get("k", Duration::ZERO, || Ok(SecretVec::new(
                    b"fresh".to_vec()
                )))
                .unwrap()
                .expose(),
            b"fresh"
        );
    }

    #[test]
    fn a_failing_leader_shares_its_error() {
        let flights = Arc::new(SingleFlight::default());
        let (release, leader) = blocked_leader(&flights, || {
            Err(StoreError::Unreachable("vault is down".into()))
        });
        let results = followers(&flights, 2, Duration::from_secs(30));
        wait_for_holders(&flights, "k", 2 + 2);
        release.send(()).unwrap();
        let leader_error = leader.join().unwrap().unwrap_err();
        assert!(leader_error.contains("vault is down"), "{leader_error}");
        for _ in 0..2 {
            let r = results.recv_timeout(Duration::from_secs(5)).unwrap();
            let e = r.unwrap_err().to_string();
            assert!(e.contains("vault is down"), "{e}");
        }
    }

    /// A failure reaches the leader and every follower as the keystore gave it: the same
    /// kind of error, its cause once (not `keystore I/O error: keystore I/O error: …`).
    #[test]
    fn a_failure_is_shared_as_it_was() {
        let flights = Arc::new(SingleFlight::default());
        let (release, leader) = blocked_leader(&flights, || {
            Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "Vault answered 403",
            )))
        });
        let results = followers(&flights, 2, Duration::ZERO);
        wait_for_holders(&flights, "k", 2 + 2);
        release.send(()).unwrap();
        assert_eq!(
            leader.join().unwrap().unwrap_err(),
            "keystore I/O error: Vault answered 403"
        );
        for _ in 0..2 {
            match results.recv_timeout(Duration::from_secs(5)).unwrap() {
                Err(StoreError::Io(e)) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
                    assert_eq!(
                        StoreError::Io(e).to_string(),
                        "keystore I/O error: Vault answered 403"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        // An unreachable keystore stays unreachable (the keystore is then offline).
        let e = flights
            .get("k", Duration::ZERO, || {
                Err(StoreError::Unreachable("connection refused".into()))
            })
            .unwrap_err();
        assert!(
            matches!(&e, StoreError::Unreachable(m) if m == "connection refused"),
            "{e:?}"
        );
        for e in [
            StoreError::AlreadyExists,
            StoreError::InvalidName,
            StoreError::TooLarge,
        ] {
            let want = e.to_string();
            let got = flights.get("k", Duration::ZERO, || Err(e)).unwrap_err();
            assert_eq!(got.to_string(), want);
        }
    }

    #[test]
    fn followers_wait_at_most_their_timeout() {
        let flights = Arc::new(SingleFlight::default());
        let (release, leader) = blocked_leader(&flights, || Ok(SecretVec::new(b"late".to_vec())));
        let started = Instant::now();
        let results = followers(&flights, 2, Duration::from_millis(200));
        for _ in 0..2 {
            let r = results
                .recv_timeout(Duration::from_secs(5))
                .expect("a follower waited past its timeout");
            match r {
                Err(StoreError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::TimedOut),
                other => panic!("{other:?}"),
            }
        }
        assert!(started.elapsed() >= Duration::from_millis(200));
        // The leader is not disturbed and later misses share nothing stale.
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap().unwrap(), b"late");
        assert!(flights.inflight.lock().unwrap().is_empty());
    }
}
