//! Single flight for keystore reads: when several cores (or requests) miss the same key at
//! the same moment, one keystore read runs and the others wait for its result. Runs on
//! blocking-pool threads only (waiting blocks the thread, never an executor).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};

use crate::keystore::StoreError;
use crate::secret::SecretVec;

/// A fetch result that can be handed to every waiter.
#[derive(Clone)]
enum Shared {
    Value(SecretVec),
    NotFound,
    Failed(String),
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

impl SingleFlight {
    /// Runs `fetch` for `name`, or waits for the fetch already running and shares its result.
    pub fn get(
        &self,
        name: &str,
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
            let shared = match fetch() {
                Ok(v) => Shared::Value(v),
                Err(StoreError::NotFound) => Shared::NotFound,
                Err(e) => Shared::Failed(e.to_string()),
            };
            *flight.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(shared.clone());
            self.inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(name);
            flight.done.notify_all();
            shared
        } else {
            let mut guard = flight.result.lock().unwrap_or_else(|e| e.into_inner());
            while guard.is_none() {
                guard = flight.done.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            guard
                .clone()
                .unwrap_or(Shared::Failed("lost flight".into()))
        };
        match result {
            Shared::Value(v) => Ok(v),
            Shared::NotFound => Err(StoreError::NotFound),
            Shared::Failed(msg) => Err(StoreError::Io(std::io::Error::other(msg))),
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
                        .get("k", || {
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
            flights.get("missing", || Err(StoreError::NotFound)),
            Err(StoreError::NotFound)
        ));
        assert_eq!(
            flights
                .get("k", || Ok(SecretVec::new(b"again".to_vec())))
                .unwrap()
                .expose(),
            b"again"
        );
    }
}
