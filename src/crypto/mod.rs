//! Cryptography and byte formats (docs: `crypto-formats.md`).
//!
//! * [`key_type`]: [`KeyType`], the one thing ciphers and envelopes share.
//! * [`cipher`]: [`SecretKey`] (encrypt/decrypt, §3–§4), [`HmacKey`] (§8) and
//!   [`KeyVersion`], the one version a named key holds (§1).
//! * [`envelope`]: recognition of the legacy MessagePack and JSON ciphertext envelopes (§5).
//! * [`keyring`]: [`KeyRing`], a key's versions, their stored record and versioned ciphertexts.
//! * [`record`]: the key-at-rest encoding, current protobuf and legacy JSON (§10).
//! * [`hchacha`]: HChaCha20, the ChaCha20 per-ciphertext key derivation.
//! * [`hmac_sha256`]: HMAC-SHA-256 with precomputed pad states, the AES256 derivation.
//!
//! AEADs come from `ring`; the per-ciphertext HMAC-SHA-256 is assembled on `sha2`'s compression
//! function so that every intermediate can be wiped and the key's pad states are computed once.
//! Secret material lives in [`crate::secret`] containers. Parsers never panic on any input.

pub mod cipher;
pub mod envelope;
pub mod hchacha;
pub mod hmac_sha256;
pub mod key_type;
pub mod keyring;
pub mod record;
pub mod rng;

pub use cipher::{CryptoError, HmacKey, KeyVersion, SecretKey};
pub use envelope::{parse_envelope, Envelope, LegacyEnvelope, LegacyFormat};
pub use hchacha::hchacha20;
pub use key_type::KeyType;
pub use keyring::KeyRing;
pub use record::{decode_record, encode_record, RecordError};
