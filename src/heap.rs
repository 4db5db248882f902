//! Live heap allocations and bytes, for `kes_system_mem_heap_objects` and
//! `kes_system_mem_heap_used` (upstream reports Go's `MemStats.HeapObjects` and `HeapAlloc`:
//! the allocated heap objects and their bytes).
//!
//! [`CountingAllocator`] wraps the system allocator and counts allocations minus
//! deallocations, and their sizes. The `kes` binary installs it; a program that links the library without it
//! (the in-process tests) reads 0. The counters are sharded per thread over cache-line-padded
//! atomics, so cores allocating at once (TLS handshakes) do not contend on one line; the
//! request hot path does not allocate at all.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering::Relaxed};

const SHARDS: usize = 32;

#[repr(align(128))]
struct Shard(AtomicI64);

static LIVE: [Shard; SHARDS] = [const { Shard(AtomicI64::new(0)) }; SHARDS];
static LIVE_BYTES: [Shard; SHARDS] = [const { Shard(AtomicI64::new(0)) }; SHARDS];
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // `const` and without a destructor: usable inside the allocator, never allocates.
    static MY_SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn shard_index() -> usize {
    MY_SHARD
        .try_with(|s| {
            let mut i = s.get();
            if i == usize::MAX {
                i = NEXT_SHARD.fetch_add(1, Relaxed) % SHARDS;
                s.set(i);
            }
            i
        })
        .unwrap_or(0)
}

/// Counts `objects` allocations of `bytes` in all (negative: freed) on this thread's shard.
fn count(objects: i64, bytes: i64) {
    let index = shard_index();
    if objects != 0 {
        LIVE[index].0.fetch_add(objects, Relaxed);
    }
    LIVE_BYTES[index].0.fetch_add(bytes, Relaxed);
}

fn size_of(layout: Layout) -> i64 {
    i64::try_from(layout.size()).unwrap_or(i64::MAX)
}

/// The system allocator, counting live allocations.
pub struct CountingAllocator;

// SAFETY: every call is forwarded unchanged to `System`; the counters have no effect on
// memory.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on unchanged.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(1, size_of(layout));
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on unchanged.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(1, size_of(layout));
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) };
        count(-1, -size_of(layout));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // One object before and after (a failed realloc leaves the old one in place).
        // SAFETY: the caller's contract is passed on unchanged.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(
                0,
                i64::try_from(new_size).unwrap_or(i64::MAX) - size_of(layout),
            );
        }
        new
    }
}

/// Allocations currently live in the process (0 without [`CountingAllocator`]).
pub fn live_objects() -> u64 {
    let sum: i64 = LIVE.iter().map(|s| s.0.load(Relaxed)).sum();
    u64::try_from(sum).unwrap_or(0)
}

/// Bytes of the allocations currently live in the process, as asked for (not what the
/// system allocator rounds them up to); 0 without [`CountingAllocator`].
pub fn live_bytes() -> u64 {
    let sum: i64 = LIVE_BYTES.iter().map(|s| s.0.load(Relaxed)).sum();
    u64::try_from(sum).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_allocations_minus_deallocations() {
        let a = CountingAllocator;
        let before = live_objects();
        let before_bytes = live_bytes();
        let layout = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: a valid layout; each pointer is freed once with the layout it got.
        unsafe {
            let p = a.alloc(layout);
            let q = a.alloc_zeroed(layout);
            assert!(!p.is_null() && !q.is_null());
            let p = a.realloc(p, layout, 256);
            assert!(!p.is_null());
            // Other test threads may allocate through it too: none do (it is not installed).
            assert_eq!(live_objects(), before + 2);
            assert_eq!(live_bytes(), before_bytes + 256 + 64);
            a.dealloc(p, Layout::from_size_align(256, 8).unwrap());
            a.dealloc(q, layout);
        }
        assert_eq!(live_objects(), before);
        assert_eq!(live_bytes(), before_bytes);
    }
}
