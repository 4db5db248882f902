//! The type of a secret key (crypto-formats.md §1.1): its names in the API and the legacy
//! formats, its protobuf code, and the default for new keys. A leaf module: the ciphers
//! ([`super::cipher`]) and the envelope parsers ([`super::envelope`]) both use it.

/// The type of a secret key (crypto-formats.md §1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    Aes256,
    ChaCha20,
}

impl KeyType {
    /// The name used in describe responses: `AES256` or `ChaCha20`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Aes256 => "AES256",
            KeyType::ChaCha20 => "ChaCha20",
        }
    }

    /// Parses the names accepted by import and the legacy formats (case-sensitive):
    /// `AES256`, `AES256-GCM_SHA256`, `ChaCha20`, `XCHACHA20-POLY1305`.
    pub fn from_name(name: &str) -> Option<KeyType> {
        Self::from_name_bytes(name.as_bytes())
    }

    /// Byte-slice variant of [`KeyType::from_name`].
    pub fn from_name_bytes(name: &[u8]) -> Option<KeyType> {
        match name {
            b"AES256" | b"AES256-GCM_SHA256" => Some(KeyType::Aes256),
            b"ChaCha20" | b"XCHACHA20-POLY1305" => Some(KeyType::ChaCha20),
            _ => None,
        }
    }

    /// The numeric code of the stored protobuf (`SecretKey.Type`): 1 = AES256, 2 = ChaCha20.
    pub fn protobuf_code(self) -> u32 {
        match self {
            KeyType::Aes256 => 1,
            KeyType::ChaCha20 => 2,
        }
    }

    /// Inverse of [`KeyType::protobuf_code`].
    pub fn from_protobuf_code(code: u32) -> Option<KeyType> {
        match code {
            1 => Some(KeyType::Aes256),
            2 => Some(KeyType::ChaCha20),
            _ => None,
        }
    }

    /// The type given to newly created keys (§2): AES256 when the CPU has hardware AES-GCM
    /// (x86-64: AES-NI + PCLMULQDQ; aarch64: AES + PMULL), ChaCha20 otherwise.
    pub fn platform_default() -> KeyType {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("aes")
                && std::arch::is_x86_feature_detected!("pclmulqdq")
            {
                return KeyType::Aes256;
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("aes")
                && std::arch::is_aarch64_feature_detected!("pmull")
            {
                return KeyType::Aes256;
            }
        }
        KeyType::ChaCha20
    }
}
