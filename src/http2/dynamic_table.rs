//! The HPACK dynamic table (RFC 7541 §2.3.2, §4): a FIFO of (name, value) entries whose size
//! (name + value + 32 octets per entry) stays within a limit, oldest evicted first.
//!
//! Storage never allocates after construction (nor after the first insert that follows a
//! [`DynamicTable::shrink_to_fit`]): all entry bytes live in one byte buffer of twice the
//! largest table size, appended at the end and released at the front; when an
//! append would run past the end the live bytes are moved to the front (at most once per
//! `capacity` octets inserted, so amortised O(1) per octet). Entries are (offset, lengths)
//! records in a ring preallocated for the most entries the limit allows.

use std::collections::VecDeque;

/// Octets of overhead RFC 7541 §4.1 counts per entry.
pub const ENTRY_OVERHEAD_BYTES: usize = 32;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Offset of the name in the logical byte stream (see `DynamicTable::base`).
    offset: u64,
    name_bytes: u32,
    value_bytes: u32,
}

impl Entry {
    fn size_bytes(&self) -> usize {
        self.name_bytes as usize + self.value_bytes as usize + ENTRY_OVERHEAD_BYTES
    }
}

/// A dynamic table whose size limit may move within `0..=capacity_bytes`.
#[derive(Debug, Clone)]
pub struct DynamicTable {
    /// Entry bytes; `bytes[i]` is logical offset `base + i`.
    bytes: Vec<u8>,
    base: u64,
    /// Newest entry at the front (HPACK index 1).
    entries: VecDeque<Entry>,
    size_bytes: usize,
    limit_bytes: usize,
    capacity_bytes: usize,
}

impl DynamicTable {
    /// An empty table whose limit starts at, and can never exceed, `capacity_bytes`.
    pub fn new(capacity_bytes: usize) -> DynamicTable {
        DynamicTable {
            bytes: Vec::with_capacity(capacity_bytes.saturating_mul(2)),
            base: 0,
            entries: VecDeque::with_capacity(capacity_bytes / ENTRY_OVERHEAD_BYTES + 1),
            size_bytes: 0,
            limit_bytes: capacity_bytes,
            capacity_bytes,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table holds no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Current size by RFC 7541 §4.1.
    pub fn size_bytes(&self) -> usize {
        self.size_bytes
    }

    /// Current size limit.
    pub fn limit_bytes(&self) -> usize {
        self.limit_bytes
    }

    /// The largest limit the table accepts.
    pub fn capacity_bytes(&self) -> usize {
        self.capacity_bytes
    }

    /// The entry at 0-based `position` (0 = newest; HPACK index `62 + position`).
    pub fn get(&self, position: usize) -> Option<(&[u8], &[u8])> {
        let e = self.entries.get(position)?;
        let start = usize::try_from(e.offset.checked_sub(self.base)?).ok()?;
        let name_end = start.checked_add(e.name_bytes as usize)?;
        let value_end = name_end.checked_add(e.value_bytes as usize)?;
        Some((
            self.bytes.get(start..name_end)?,
            self.bytes.get(name_end..value_end)?,
        ))
    }

    /// Sets the size limit, evicting as needed; `false` (and no change) above the capacity.
    pub fn set_limit(&mut self, limit_bytes: usize) -> bool {
        if limit_bytes > self.capacity_bytes {
            return false;
        }
        self.limit_bytes = limit_bytes;
        self.evict_to(limit_bytes);
        true
    }

    fn evict_to(&mut self, size_bytes: usize) {
        while self.size_bytes > size_bytes {
            match self.entries.pop_back() {
                Some(e) => self.size_bytes -= e.size_bytes(),
                None => break,
            }
        }
        if self.entries.is_empty() {
            // Nothing live: restart the buffer so no compaction is needed soon.
            self.base += self.bytes.len() as u64;
            self.bytes.clear();
        }
    }

    /// Inserts an entry as the newest (RFC 7541 §4.4): evicts until it fits; an entry larger
    /// than the limit empties the table and is not stored. `name` must not borrow from the
    /// table (the decoder copies an indexed name first).
    pub fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD_BYTES;
        if size > self.limit_bytes {
            self.evict_to(0);
            return;
        }
        self.evict_to(self.limit_bytes - size);
        if self.bytes.capacity() < self.capacity_bytes.saturating_mul(2) {
            self.regrow();
        }
        let add = name.len() + value.len();
        if self.bytes.len() + add > self.bytes.capacity() {
            self.compact();
        }
        let offset = self.base + self.bytes.len() as u64;
        self.bytes.extend_from_slice(name);
        self.bytes.extend_from_slice(value);
        self.entries.push_front(Entry {
            offset,
            name_bytes: name.len() as u32,
            value_bytes: value.len() as u32,
        });
        self.size_bytes += size;
    }

    /// Moves the live bytes (from the oldest entry on) to the front of the buffer.
    /// Gives back the room the live entries do not use (for a connection gone idle); the
    /// next insert takes it back.
    pub fn shrink_to_fit(&mut self) {
        self.compact();
        self.bytes.shrink_to_fit();
        self.entries.shrink_to_fit();
    }

    /// The room [`DynamicTable::new`] sets up, after a [`DynamicTable::shrink_to_fit`].
    #[cold]
    fn regrow(&mut self) {
        let bytes = self.capacity_bytes.saturating_mul(2);
        self.bytes
            .reserve_exact(bytes.saturating_sub(self.bytes.len()));
        let entries = self.capacity_bytes / ENTRY_OVERHEAD_BYTES + 1;
        self.entries
            .reserve_exact(entries.saturating_sub(self.entries.len()));
    }

    fn compact(&mut self) {
        let Some(oldest) = self.entries.back() else {
            self.base += self.bytes.len() as u64;
            self.bytes.clear();
            return;
        };
        let dead = usize::try_from(oldest.offset.saturating_sub(self.base)).unwrap_or(0);
        let dead = dead.min(self.bytes.len());
        self.bytes.copy_within(dead.., 0);
        self.bytes.truncate(self.bytes.len() - dead);
        self.base += dead as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_evicts_oldest_and_counts_overhead() {
        let mut t = DynamicTable::new(100);
        t.insert(b"aa", b"bb"); // 36
        t.insert(b"cc", b"dd"); // 72
        assert_eq!((t.len(), t.size_bytes()), (2, 72));
        assert_eq!(t.get(0), Some((&b"cc"[..], &b"dd"[..])));
        assert_eq!(t.get(1), Some((&b"aa"[..], &b"bb"[..])));
        t.insert(b"ee", b"ff"); // evicts aa
        assert_eq!((t.len(), t.size_bytes()), (2, 72));
        assert_eq!(t.get(1), Some((&b"cc"[..], &b"dd"[..])));
        assert_eq!(t.get(2), None);
        // Larger than the limit: empties the table.
        t.insert(&[b'x'; 60], b"");
        assert_eq!((t.len(), t.size_bytes()), (1, 92));
        t.insert(&[b'x'; 70], b"");
        assert!(t.is_empty());
        assert_eq!(t.size_bytes(), 0);
    }

    #[test]
    fn shrink_to_fit_keeps_the_entries_and_the_next_insert_regrows() {
        let mut t = DynamicTable::new(100);
        t.insert(b"aa", b"bb");
        t.insert(b"cc", b"dd");
        t.shrink_to_fit();
        assert!(t.bytes.capacity() < 200);
        assert_eq!(t.get(0), Some((&b"cc"[..], &b"dd"[..])));
        assert_eq!(t.get(1), Some((&b"aa"[..], &b"bb"[..])));
        t.insert(b"ee", b"ff"); // evicts aa
        assert!(t.bytes.capacity() >= 200);
        assert_eq!(t.get(0), Some((&b"ee"[..], &b"ff"[..])));
        assert_eq!(t.get(1), Some((&b"cc"[..], &b"dd"[..])));
        assert_eq!(t.size_bytes(), 72);
    }

    #[test]
    fn set_limit_evicts_and_refuses_above_capacity() {
        let mut t = DynamicTable::new(100);
        t.insert(b"aa", b"bb");
        t.insert(b"cc", b"dd");
        assert!(t.set_limit(40));
        assert_eq!(t.len(), 1);
        assert!(!t.set_limit(101));
        assert_eq!(t.limit_bytes(), 40);
        assert!(t.set_limit(0));
        assert!(t.is_empty());
    }

    #[test]
    fn buffer_never_grows_past_twice_capacity() {
        let mut t = DynamicTable::new(256);
        let cap = t.bytes.capacity();
        for i in 0..10_000u32 {
            let value = i.to_string();
            t.insert(b"name", value.as_bytes());
            assert_eq!(t.get(0), Some((&b"name"[..], value.as_bytes())));
            assert!(t.size_bytes() <= 256);
            if let Some(older) = i.checked_sub(1).map(|o| o.to_string()) {
                assert_eq!(t.get(1), Some((&b"name"[..], older.as_bytes())));
            }
        }
        assert_eq!(t.bytes.capacity(), cap);
    }
}
