//! Two nodes racing to change one stored key: what every keystore's `replace` must survive.

use std::sync::{Arc, Barrier};

use kes::keystore::{KeyStore, StoreError};

/// A key ring's stored text carrying the counter `n` (what a rotation writes: a
/// `kes:keyring:v1:` record, which every store accepts as a replacement).
pub fn counter_ring(n: usize) -> String {
    format!("{}{n}", kes::crypto::record::KEYRING_PREFIX)
}

/// The counter in a value written by [`counter_ring`].
pub fn counter_of(value: &[u8]) -> usize {
    let text = std::str::from_utf8(value).unwrap();
    text.strip_prefix(kes::crypto::record::KEYRING_PREFIX)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text:?}"))
}

/// `writers` threads, alternating between the two stores (two nodes), each add 1 to the
/// counter stored under `name` `increments` times with read → replace, reading again on
/// `Conflict`, all starting at once. Returns how many replaces met a conflict.
pub fn race_increments(
    stores: &[Arc<dyn KeyStore>; 2],
    name: &'static str,
    writers: usize,
    increments: usize,
) -> usize {
    let barrier = Arc::new(Barrier::new(writers));
    let threads: Vec<_> = (0..writers)
        .map(|i| {
            let (store, barrier) = (stores[i % 2].clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut conflicts = 0;
                for _ in 0..increments {
                    loop {
                        let old = store.get(name).unwrap();
                        let new = counter_ring(counter_of(old.expose()) + 1);
                        match store.replace(name, old.expose(), new.as_bytes()) {
                            Ok(()) => break,
                            Err(StoreError::Conflict) => conflicts += 1,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).sum()
}
