//! The volatile in-memory keystore used by `kes server --dev` (spec storage-and-config.md §3).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{KeyStore, StoreError};
use crate::secret::SecretVec;

/// A volatile map; everything is lost when the process exits.
#[derive(Default)]
pub struct MemStore {
    entries: Mutex<BTreeMap<String, SecretVec>>,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    fn entries(&self) -> MutexGuard<'_, BTreeMap<String, SecretVec>> {
        // No operation can leave the map half-updated, so a poisoned lock is still usable.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for MemStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemStore")
    }
}

impl KeyStore for MemStore {
    fn display_name(&self) -> String {
        "In Memory".to_string()
    }

    fn status(&self) -> Result<Duration, StoreError> {
        Ok(Duration::from_millis(1))
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut entries = self.entries();
        if entries.contains_key(name) {
            return Err(StoreError::AlreadyExists);
        }
        entries.insert(name.to_string(), SecretVec::new(value.to_vec()));
        Ok(())
    }

    fn replace(&self, name: &str, old: &[u8], new: &[u8]) -> Result<(), StoreError> {
        let mut entries = self.entries();
        let stored = entries.get_mut(name).ok_or(StoreError::NotFound)?;
        if stored.expose() != old {
            return Err(StoreError::Conflict);
        }
        // The old value is wiped when its SecretVec drops.
        *stored = SecretVec::new(new.to_vec());
        Ok(())
    }

    fn replace_kind(&self) -> super::ReplaceKind {
        super::ReplaceKind::Atomic
    }

    fn get(&self, name: &str) -> Result<SecretVec, StoreError> {
        self.entries()
            .get(name)
            .cloned()
            .ok_or(StoreError::NotFound)
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.entries()
            .remove(name)
            .map(drop)
            .ok_or(StoreError::NotFound)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let entries = self.entries();
        Ok(entries
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .map(|(name, _)| name)
            .take_while(|name| name.starts_with(prefix))
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_is_a_compare_and_set() {
        let s = MemStore::new();
        assert!(matches!(
            s.replace("k", b"a", b"b"),
            Err(StoreError::NotFound)
        ));
        s.create("k", b"a").unwrap();
        assert!(matches!(
            s.replace("k", b"x", b"b"),
            Err(StoreError::Conflict)
        ));
        assert_eq!(s.get("k").unwrap().expose(), b"a");
        s.replace("k", b"a", b"b").unwrap();
        assert_eq!(s.get("k").unwrap().expose(), b"b");
        assert!(matches!(
            s.replace("k", b"a", b"c"),
            Err(StoreError::Conflict)
        ));
    }

    #[test]
    fn create_get_delete() {
        let store = MemStore::new();
        assert_eq!(store.display_name(), "In Memory");
        assert!(store.status().is_ok());

        store.create("my-key", b"value-1").unwrap();
        assert_eq!(store.get("my-key").unwrap().expose(), b"value-1");

        let err = store.create("my-key", b"value-2").unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists), "{err:?}");
        assert_eq!(store.get("my-key").unwrap().expose(), b"value-1");

        store.delete("my-key").unwrap();
        assert!(matches!(store.get("my-key"), Err(StoreError::NotFound)));
        assert!(matches!(store.delete("my-key"), Err(StoreError::NotFound)));
        assert!(matches!(store.get("missing"), Err(StoreError::NotFound)));

        // Re-creating after delete works.
        store.create("my-key", b"value-3").unwrap();
        assert_eq!(store.get("my-key").unwrap().expose(), b"value-3");
    }

    #[test]
    fn list_sorted_with_prefix() {
        let store = MemStore::new();
        for name in ["b-2", "a-1", "b-1", "c", "B-0", "b", "ba"] {
            store.create(name, name.as_bytes()).unwrap();
        }
        assert_eq!(
            store.list("").unwrap(),
            ["B-0", "a-1", "b", "b-1", "b-2", "ba", "c"]
        );
        assert_eq!(store.list("b-").unwrap(), ["b-1", "b-2"]);
        assert_eq!(store.list("b").unwrap(), ["b", "b-1", "b-2", "ba"]);
        assert!(store.list("d").unwrap().is_empty());
        assert!(store.list("zzz").unwrap().is_empty());
    }

    #[test]
    fn concurrent_create_has_one_winner() {
        let store = std::sync::Arc::new(MemStore::new());
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
        let handles: Vec<_> = (0..16u8)
            .map(|i| {
                let (store, barrier) = (store.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    store.create("k", &[i; 8]).map(|()| i)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<u8> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        assert_eq!(winners.len(), 1);
        assert!(results
            .iter()
            .filter(|r| r.is_err())
            .all(|r| matches!(r, Err(StoreError::AlreadyExists))));
        assert_eq!(store.get("k").unwrap().expose(), &[winners[0]; 8]);
    }
}
