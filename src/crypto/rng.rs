//! A per-core CSPRNG for the hot path: ChaCha20 with fast key erasure, seeded and regularly
//! reseeded from the OS.
//!
//! Why not one `getrandom` per request: that syscall costs about 0.6 µs here, a sizeable part
//! of a request's CPU budget. Why this is safe:
//! * Output is ChaCha20 keystream under a 256-bit key that only this core knows; it is
//!   indistinguishable from random as long as ChaCha20 is a PRF (the assumption the
//!   ChaCha20-Poly1305 keys themselves rest on).
//! * Fast key erasure (as in OpenBSD's arc4random and Linux's own CRNG): every refill first
//!   replaces the key with fresh keystream, and bytes are wiped from the buffer as they are
//!   handed out, so a later compromise of the state reveals nothing already produced.
//! * Fresh OS entropy is mixed into the key before any keystream is made once
//!   [`RESEED_BYTES`] of output or [`RESEED_INTERVAL`] have passed, whichever comes first,
//!   bounding what a state compromise reveals about future output (at most one buffer,
//!   512 bytes, made before the limit can be handed out after it).
//! * One instance per core, never shared, never cloned; the process never forks.

use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};

/// Output between reseeds from the OS.
pub const RESEED_BYTES: usize = 1 << 20;
/// Time between reseeds from the OS.
pub const RESEED_INTERVAL: Duration = Duration::from_secs(5);
const BLOCKS: usize = 8;
const KEYSTREAM: usize = 64 * BLOCKS;

use super::hchacha::{double_rounds, SIGMA};

/// The ChaCha20 block function (RFC 8439 §2.3).
pub fn chacha20_block(key: &[u8; 32], counter: u32, nonce: &[u8; 12], out: &mut [u8; 64]) {
    let mut init = [0u32; 16];
    init[..4].copy_from_slice(&SIGMA);
    for (i, c) in key.chunks_exact(4).enumerate() {
        init[4 + i] = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    init[12] = counter;
    for (i, c) in nonce.chunks_exact(4).enumerate() {
        init[13 + i] = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    let mut s = init;
    double_rounds(&mut s);
    for i in 0..16 {
        out[4 * i..4 * i + 4].copy_from_slice(&s[i].wrapping_add(init[i]).to_le_bytes());
    }
    // SAFETY: wiping our own local arrays of plain integers.
    unsafe {
        memsec::memzero(s.as_mut_ptr().cast::<u8>(), 64);
        memsec::memzero(init.as_mut_ptr().cast::<u8>(), 64);
    }
}

/// Why random bytes could not be produced (the OS refused entropy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RngError;

/// One core's generator. Not `Sync`, not `Clone`: one per core.
pub struct CoreRng {
    key: [u8; 32],
    buf: [u8; KEYSTREAM],
    /// Bytes `pos..` of `buf` are unused output; `..pos` are already wiped.
    pos: usize,
    since_seed: usize,
    seeded_at: Instant,
    os: SystemRandom,
}

impl CoreRng {
    pub fn new() -> Result<CoreRng, RngError> {
        let mut rng = CoreRng {
            key: [0; 32],
            buf: [0; KEYSTREAM],
            pos: KEYSTREAM,
            since_seed: 0,
            seeded_at: Instant::now(),
            os: SystemRandom::new(),
        };
        rng.reseed()?;
        Ok(rng)
    }

    fn reseed(&mut self) -> Result<(), RngError> {
        let mut fresh = [0u8; 32];
        self.os.fill(&mut fresh).map_err(|_| RngError)?;
        for (k, f) in self.key.iter_mut().zip(fresh.iter()) {
            *k ^= f;
        }
        // SAFETY: wiping our own stack copy.
        unsafe { memsec::memzero(fresh.as_mut_ptr(), 32) };
        self.since_seed = 0;
        self.seeded_at = Instant::now();
        self.refill();
        Ok(())
    }

    /// New keystream; its first 32 bytes replace the key (fast key erasure).
    fn refill(&mut self) {
        let mut block = [0u8; 64];
        for i in 0..BLOCKS {
            chacha20_block(&self.key, i as u32, &[0; 12], &mut block);
            self.buf[64 * i..64 * i + 64].copy_from_slice(&block);
        }
        // SAFETY: wiping our own stack copy.
        unsafe { memsec::memzero(block.as_mut_ptr(), 64) };
        self.key.copy_from_slice(&self.buf[..32]);
        // SAFETY: the first 32 bytes are the new key: wipe them from the output buffer.
        unsafe { memsec::memzero(self.buf.as_mut_ptr(), 32) };
        self.pos = 32;
    }

    /// Fills `dest` with random bytes.
    pub fn fill(&mut self, dest: &mut [u8]) -> Result<(), RngError> {
        let mut written = 0;
        while written < dest.len() {
            if self.pos == KEYSTREAM {
                // The reseed check runs once per refill, not per call: one clock read per
                // buffer of keystream instead of one per request.
                if self.since_seed >= RESEED_BYTES || self.seeded_at.elapsed() >= RESEED_INTERVAL {
                    self.reseed()?;
                } else {
                    self.refill();
                }
            }
            let n = (dest.len() - written).min(KEYSTREAM - self.pos);
            dest[written..written + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            // SAFETY: wipe the bytes just handed out.
            unsafe { memsec::memzero(self.buf.as_mut_ptr().add(self.pos), n) };
            self.pos += n;
            written += n;
        }
        self.since_seed += dest.len();
        Ok(())
    }
}

impl Drop for CoreRng {
    fn drop(&mut self) {
        // SAFETY: wiping our own arrays.
        unsafe {
            memsec::memzero(self.key.as_mut_ptr(), 32);
            memsec::memzero(self.buf.as_mut_ptr(), KEYSTREAM);
        }
    }
}

impl std::fmt::Debug for CoreRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CoreRng(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8439 §2.3.2.
    #[test]
    fn rfc8439_block_vector() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let nonce = [0, 0, 0, 9, 0, 0, 0, 0x4a, 0, 0, 0, 0];
        let mut out = [0u8; 64];
        chacha20_block(&key, 1, &nonce, &mut out);
        assert_eq!(
            hex::encode(out),
            "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4ed2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e"
        );
    }

    #[test]
    fn outputs_differ_and_buffer_is_wiped() {
        let mut a = CoreRng::new().unwrap();
        let mut b = CoreRng::new().unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let mut x = [0u8; 60];
            let mut y = [0u8; 60];
            a.fill(&mut x).unwrap();
            b.fill(&mut y).unwrap();
            assert_ne!(x, y);
            assert!(seen.insert(x), "repeated output");
            assert!(
                a.buf[..a.pos].iter().all(|&b| b == 0),
                "handed-out bytes are wiped"
            );
        }
        // Roughly uniform bytes: every value appears.
        let mut counts = [0usize; 256];
        for x in &seen {
            for &byte in x {
                counts[byte as usize] += 1;
            }
        }
        assert!(counts.iter().all(|&c| c > 1000), "{counts:?}");
    }
}
