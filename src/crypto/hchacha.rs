//! HChaCha20 (draft-irtf-cfrg-xchacha §2.2): derives a 32-byte subkey from a 32-byte key and
//! a 16-byte nonce. Used to derive the per-ciphertext key `K'` of ChaCha20 keys.

pub(crate) const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// The 20 ChaCha rounds (10 double rounds) on a state, shared with `crypto::rng`.
#[inline(always)]
pub(crate) fn double_rounds(s: &mut [u32; 16]) {
    for _ in 0..10 {
        quarter_round(s, 0, 4, 8, 12);
        quarter_round(s, 1, 5, 9, 13);
        quarter_round(s, 2, 6, 10, 14);
        quarter_round(s, 3, 7, 11, 15);
        quarter_round(s, 0, 5, 10, 15);
        quarter_round(s, 1, 6, 11, 12);
        quarter_round(s, 2, 7, 8, 13);
        quarter_round(s, 3, 4, 9, 14);
    }
}

#[inline(always)]
fn quarter_round(s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(16);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(12);
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(8);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(7);
}

/// Writes HChaCha20(`key`, `nonce`) into `out`; the internal state is wiped afterwards.
pub fn hchacha20_into(key: &[u8; 32], nonce: &[u8; 16], out: &mut [u8; 32]) {
    let mut s = [0u32; 16];
    s[..4].copy_from_slice(&SIGMA);
    for (i, chunk) in key.chunks_exact(4).enumerate() {
        s[4 + i] = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    for (i, chunk) in nonce.chunks_exact(4).enumerate() {
        s[12 + i] = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    double_rounds(&mut s);
    for (i, &word) in s[..4].iter().chain(&s[12..]).enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&word.to_le_bytes());
    }
    // SAFETY: `s` is our own local array of plain integers.
    unsafe { memsec::memzero(s.as_mut_ptr().cast::<u8>(), core::mem::size_of_val(&s)) };
}

/// HChaCha20(`key`, `nonce`). The caller owns (and should wipe) the returned subkey; prefer
/// [`hchacha20_into`] to write straight into zeroizing storage.
pub fn hchacha20(key: &[u8; 32], nonce: &[u8; 16]) -> [u8; 32] {
    let mut out = [0u8; 32];
    hchacha20_into(key, nonce, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// draft-irtf-cfrg-xchacha-03 §2.2.1.
    #[test]
    fn draft_test_vector() {
        let key: [u8; 32] = h("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
        let nonce: [u8; 16] = h("000000090000004a0000000031415927");
        assert_eq!(
            hex::encode(hchacha20(&key, &nonce)),
            "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"
        );
    }

    /// crypto-formats.md §11.2: K' for K = 00..1f, IV = 40..4f.
    #[test]
    fn spec_11_2_subkey() {
        let key: [u8; 32] = h("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
        let iv: [u8; 16] = h("404142434445464748494a4b4c4d4e4f");
        let mut out = [0u8; 32];
        hchacha20_into(&key, &iv, &mut out);
        assert_eq!(
            hex::encode(out),
            "001b38f1bc654a0470f0172049103eccb67d8bb16b11d2a468db66a2dd53d47d"
        );
    }
}
