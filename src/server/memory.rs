//! Giving memory back to the OS. glibc's malloc keeps freed memory in its arenas, and raises
//! its mmap threshold after a large block is freed, so after a burst of connections (each
//! with TLS state and buffers) the process would otherwise keep its peak size for good.
//! [`configure`] fixes the mmap threshold (large buffers are mapped and unmapped on their
//! own), and [`Trimmer`] calls `malloc_trim` when a core's open connections fall far below
//! their recent peak.

/// Blocks at least this large are mmapped (and unmapped when freed) instead of taken from
/// an arena; glibc's dynamic raising of this threshold is switched off by setting it.
pub const MMAP_THRESHOLD_BYTES: usize = 128 * 1024;
/// A core trims after its open connections fell to a quarter of a peak of at least this.
pub const TRIM_PEAK_CONNECTIONS_MIN: usize = 256;

/// Sets the allocator's thresholds; called once at start-up.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes plain integers and changes allocator parameters only.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES as libc::c_int);
    }
}

/// Returns free memory at the top of every arena and free whole pages inside them.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own structures.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Per-core bookkeeping that decides when to trim.
#[derive(Debug, Default)]
pub struct Trimmer {
    peak: std::cell::Cell<usize>,
}

impl Trimmer {
    /// Called as connections open and close with the core's current count; trims once the
    /// count fell to a quarter of a large enough peak. Returns whether it trimmed.
    pub fn observe(&self, open: usize) -> bool {
        if open > self.peak.get() {
            self.peak.set(open);
            return false;
        }
        let peak = self.peak.get();
        if peak >= TRIM_PEAK_CONNECTIONS_MIN && open <= peak / 4 {
            self.peak.set(open);
            trim();
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_after_a_burst_once() {
        let t = Trimmer::default();
        for open in 0..=1000 {
            assert!(!t.observe(open));
        }
        assert!(!t.observe(500));
        assert!(t.observe(250));
        assert!(!t.observe(100)); // the peak restarted at 250
        let small = Trimmer::default();
        small.observe(100);
        assert!(!small.observe(0)); // peaks below the minimum never trim
    }
}
