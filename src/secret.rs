//! Containers for secret bytes: zeroized on drop, redacted in `Debug`.
//!
//! Every buffer that holds key material, a DEK plaintext or an API key seed lives in one of
//! these types. Zeroing uses `memsec::memzero`, a volatile write the optimiser cannot elide.

use std::fmt;

/// A fixed-size secret, e.g. a 32-byte key.
pub struct Secret<const N: usize>([u8; N]);

impl<const N: usize> Secret<N> {
    /// Wraps `bytes`; the caller should zeroize its own copy if it had one.
    pub fn new(bytes: [u8; N]) -> Self {
        Secret(bytes)
    }

    /// Copies `bytes` into a new secret; `None` if the length is not `N`.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let array: [u8; N] = bytes.try_into().ok()?;
        Some(Secret(array))
    }

    /// The secret bytes. Callers must not copy them into non-zeroizing storage.
    pub fn expose(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> Drop for Secret<N> {
    fn drop(&mut self) {
        // SAFETY: the pointer and length describe exactly our own array.
        unsafe { memsec::memzero(self.0.as_mut_ptr(), N) };
    }
}

impl<const N: usize> fmt::Debug for Secret<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<const N: usize> Clone for Secret<N> {
    fn clone(&self) -> Self {
        Secret(self.0)
    }
}

/// A growable secret buffer (stored key records, decrypted plaintexts).
///
/// The whole capacity is zeroized on drop, so bytes left behind by truncation are wiped too.
/// Growing the buffer through `as_mut_vec` can reallocate and leave an unzeroized copy behind;
/// reserve the final capacity up front where that matters, or grow it with
/// [`SecretVec::extend_from_slice`], which wipes the old allocation.
#[derive(Default)]
pub struct SecretVec(Vec<u8>);

impl SecretVec {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretVec(bytes)
    }

    pub fn with_capacity(capacity: usize) -> Self {
        SecretVec(Vec::with_capacity(capacity))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn as_mut_vec(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }

    /// Appends `bytes`. When the buffer must grow, the old allocation is wiped before it is
    /// freed (growing through [`as_mut_vec`](Self::as_mut_vec) would leave a copy behind).
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let need = self.0.len() + bytes.len();
        if need > self.0.capacity() {
            let mut grown = Vec::with_capacity(need.max(self.0.capacity().saturating_mul(2)));
            grown.extend_from_slice(&self.0);
            drop(SecretVec(std::mem::replace(&mut self.0, grown)));
        }
        self.0.extend_from_slice(bytes);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for SecretVec {
    fn drop(&mut self) {
        let capacity = self.0.capacity();
        // SAFETY: we zero the vector's whole allocation, which we own exclusively.
        unsafe { memsec::memzero(self.0.as_mut_ptr(), capacity) };
    }
}

impl fmt::Debug for SecretVec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0.len())
    }
}

impl Clone for SecretVec {
    fn clone(&self) -> Self {
        SecretVec(self.0.clone())
    }
}

/// A secret text (a password, an API key, a token from the config): a [`SecretVec`] that
/// holds valid UTF-8, zeroized on drop, `<redacted>` in `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretString(SecretVec);

impl SecretString {
    /// Takes `text`'s allocation as it is (no copy is made).
    pub fn new(text: String) -> Self {
        SecretString(SecretVec::new(text.into_bytes()))
    }

    /// The text. Callers must not copy it into non-zeroizing storage.
    pub fn expose(&self) -> &str {
        // Always UTF-8: only `new` makes one, from a `String`.
        std::str::from_utf8(self.0.expose()).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretString {
    fn from(text: String) -> Self {
        SecretString::new(text)
    }
}

impl From<&str> for SecretString {
    fn from(text: &str) -> Self {
        SecretString::new(text.to_string())
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl PartialEq for SecretVec {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for SecretVec {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = Secret::new([7u8; 32]);
        assert_eq!(format!("{s:?}"), "<redacted>");
        let v = SecretVec::new(b"top secret".to_vec());
        assert_eq!(format!("{v:?}"), "<redacted 10 bytes>");
        let t = SecretString::from("hunter2");
        assert_eq!(format!("{t:?}"), "<redacted>");
        assert_eq!(t.expose(), "hunter2");
    }
}
