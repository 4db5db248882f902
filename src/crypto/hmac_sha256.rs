//! HMAC-SHA-256 (RFC 2104) assembled on `sha2`'s compression function, with the key's two pad
//! states computed once per key instead of once per call.
//!
//! Every ciphertext of an AES256 key derives its own AEAD key as `HMAC-SHA-256(K, IV)`
//! (crypto-formats.md §3), so this runs once per generate, encrypt and decrypt. Keyed from
//! scratch, HMAC costs four SHA-256 compressions (the two pads, the inner and the outer
//! message); with the pad states kept beside the key it costs two. The states are as secret as
//! the key (they let anyone compute the MAC), so they are wiped on drop like the key, and every
//! intermediate of a call (the inner hash, the padded blocks) is wiped before it returns.

use sha2::digest::generic_array::GenericArray;

/// SHA-256's initial state (FIPS 180-4 §5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];
/// SHA-256's block size.
const BLOCK_BYTES: usize = 64;

/// An HMAC-SHA-256 key: the SHA-256 states after absorbing `K ⊕ ipad` and `K ⊕ opad`.
#[derive(Clone)]
pub struct HmacSha256Key {
    inner: [u32; 8],
    outer: [u32; 8],
}

fn wipe_words(words: &mut [u32]) {
    // SAFETY: the pointer and byte length describe exactly the given slice.
    unsafe {
        memsec::memzero(
            words.as_mut_ptr().cast::<u8>(),
            std::mem::size_of_val(words),
        )
    };
}

fn wipe_block(block: &mut [u8; BLOCK_BYTES]) {
    // SAFETY: the pointer and length describe exactly our own array.
    unsafe { memsec::memzero(block.as_mut_ptr(), BLOCK_BYTES) };
}

fn compress(state: &mut [u32; 8], block: &[u8; BLOCK_BYTES]) {
    sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
}

/// Writes the last block of a message of `prefix_bytes + message.len()` bytes whose final
/// `message` (under 56 bytes) starts this block: the message, `0x80`, zeros, the bit length.
fn final_block(message: &[u8], prefix_bytes: usize, block: &mut [u8; BLOCK_BYTES]) {
    debug_assert!(message.len() < BLOCK_BYTES - 8);
    block.fill(0);
    block[..message.len()].copy_from_slice(message);
    block[message.len()] = 0x80;
    let bits = ((prefix_bytes + message.len()) as u64) * 8;
    block[BLOCK_BYTES - 8..].copy_from_slice(&bits.to_be_bytes());
}

impl HmacSha256Key {
    /// The pad states of a 32-byte key (shorter than a block, so used as it is).
    pub fn new(key: &[u8; 32]) -> HmacSha256Key {
        HmacSha256Key::from_key(key)
    }

    /// HMAC-SHA-256 of a message shorter than 56 bytes (one block each way): the AES key
    /// derivation's 16-byte IV.
    pub fn sign_short(&self, message: &[u8], out: &mut [u8; 32]) {
        assert!(
            message.len() < BLOCK_BYTES - 8,
            "sign_short: message too long"
        );
        let mut block = [0u8; BLOCK_BYTES];
        let mut state = self.inner;
        final_block(message, BLOCK_BYTES, &mut block);
        compress(&mut state, &block);
        for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        state = self.outer;
        final_block(out, BLOCK_BYTES, &mut block);
        compress(&mut state, &block);
        for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        wipe_words(&mut state);
        wipe_block(&mut block);
    }
}

/// SHA-256 of the `prefix_bytes` already absorbed into `state` followed by `message`, into
/// `out`; `state` and the padded blocks are wiped.
fn finish(mut state: [u32; 8], prefix_bytes: usize, message: &[u8], out: &mut [u8; 32]) {
    let mut block = [0u8; BLOCK_BYTES];
    let whole = message.len() - message.len() % BLOCK_BYTES;
    for chunk in message[..whole].chunks_exact(BLOCK_BYTES) {
        block.copy_from_slice(chunk);
        compress(&mut state, &block);
    }
    let tail = &message[whole..];
    let total = prefix_bytes + message.len();
    if tail.len() < BLOCK_BYTES - 8 {
        final_block(tail, total - tail.len(), &mut block);
    } else {
        // The padding takes a second block.
        block.fill(0);
        block[..tail.len()].copy_from_slice(tail);
        block[tail.len()] = 0x80;
        compress(&mut state, &block);
        block.fill(0);
        block[BLOCK_BYTES - 8..].copy_from_slice(&((total as u64) * 8).to_be_bytes());
    }
    compress(&mut state, &block);
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    wipe_words(&mut state);
    wipe_block(&mut block);
}

impl HmacSha256Key {
    /// The pad states of a key of any length (one longer than a block is hashed first, as
    /// RFC 2104 says); every copy of the key made here is wiped.
    pub fn from_key(key: &[u8]) -> HmacSha256Key {
        let mut block = [0u8; BLOCK_BYTES];
        if key.len() > BLOCK_BYTES {
            let mut hashed = [0u8; 32];
            finish(SHA256_IV, 0, key, &mut hashed);
            block[..32].copy_from_slice(&hashed);
            // SAFETY: the pointer and length describe exactly our own array.
            unsafe { memsec::memzero(hashed.as_mut_ptr(), 32) };
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let mut this = HmacSha256Key {
            inner: SHA256_IV,
            outer: SHA256_IV,
        };
        block.iter_mut().for_each(|b| *b ^= 0x36);
        compress(&mut this.inner, &block);
        // Turn K ⊕ ipad into K ⊕ opad in place (0x36 ⊕ 0x5c = 0x6a).
        block.iter_mut().for_each(|b| *b ^= 0x36 ^ 0x5c);
        compress(&mut this.outer, &block);
        wipe_block(&mut block);
        this
    }

    /// HMAC-SHA-256 of a message of any length into `out`; the intermediates are wiped.
    pub fn sign(&self, message: &[u8], out: &mut [u8; 32]) {
        let mut inner = [0u8; 32];
        finish(self.inner, BLOCK_BYTES, message, &mut inner);
        finish(self.outer, BLOCK_BYTES, &inner, out);
        // SAFETY: the pointer and length describe exactly our own array.
        unsafe { memsec::memzero(inner.as_mut_ptr(), 32) };
    }
}

impl Drop for HmacSha256Key {
    fn drop(&mut self) {
        wipe_words(&mut self.inner);
        wipe_words(&mut self.outer);
    }
}

impl std::fmt::Debug for HmacSha256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacSha256Key(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::hmac;

    fn reference(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message);
        tag.as_ref().try_into().unwrap()
    }

    #[test]
    fn rfc_4231_style_vector() {
        // HMAC-SHA-256 with a 32-byte key 0x00..0x1f over "Hi There" (checked against ring).
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let mut out = [0u8; 32];
        HmacSha256Key::new(&key).sign_short(b"Hi There", &mut out);
        assert_eq!(out, reference(&key, b"Hi There"));
    }

    #[test]
    fn matches_ring_for_every_short_length_and_many_keys() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        };
        for len in 0..56 {
            for _ in 0..8 {
                let key: [u8; 32] = std::array::from_fn(|_| next());
                let message: Vec<u8> = (0..len).map(|_| next()).collect();
                let k = HmacSha256Key::new(&key);
                let mut out = [0u8; 32];
                k.sign_short(&message, &mut out);
                assert_eq!(out, reference(&key, &message), "len {len}");
                // The key is reusable: a second call gives the same tag.
                let mut again = [0u8; 32];
                k.clone().sign_short(&message, &mut again);
                assert_eq!(again, out);
            }
        }
    }

    #[test]
    fn any_key_and_message_length_matches_ring() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        };
        for key_len in [0, 1, 31, 32, 44, 63, 64, 65, 100, 200] {
            let key: Vec<u8> = (0..key_len).map(|_| next()).collect();
            let k = HmacSha256Key::from_key(&key);
            for len in (0..140).chain([191, 192, 256, 1000]) {
                let message: Vec<u8> = (0..len).map(|_| next()).collect();
                let want = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), &message);
                let mut out = [0u8; 32];
                k.sign(&message, &mut out);
                assert_eq!(&out[..], want.as_ref(), "key {key_len}, message {len}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "message too long")]
    fn long_messages_are_refused() {
        HmacSha256Key::new(&[0; 32]).sign_short(&[0; 56], &mut [0; 32]);
    }

    #[test]
    fn debug_does_not_show_the_states() {
        let k = HmacSha256Key::new(&[7; 32]);
        assert_eq!(format!("{k:?}"), "HmacSha256Key(<redacted>)");
    }
}
