//! Keystores: the flat `name → value` maps that hold the stored key records.
//!
//! KES itself is stateless; every key record lives in exactly one keystore (spec
//! storage-and-config.md §1). A value is the record text (base64 of the protobuf record, or
//! legacy JSON) and is stored verbatim. The only write primitive is "create if absent".
//!
//! Implementations block on file or network I/O. The server calls them only from its blocking
//! thread pool, never from an executor thread.

use std::fmt;
use std::time::Duration;

use crate::secret::SecretVec;

pub mod aws;
pub mod azure;
pub mod azure_auth;
pub mod azure_challenge;
pub mod fortanix;
pub mod fs;
pub mod gcp;
pub mod gcp_auth;
pub mod gcp_external;
pub mod http;
pub(crate) mod json_secret;
pub mod keycontrol;
pub mod keysecure;
pub mod mem;
pub mod session;
pub mod sigv4;
pub mod token_file;
pub mod vault;

pub use fs::FsStore;
pub use mem::MemStore;

/// The largest value a keystore returns from `get`; a larger stored value is `TooLarge`.
pub const VALUE_BYTES_MAX: usize = 1 << 20;

/// A flat name → value store.
///
/// Implementations block (file I/O, network); the server only calls them from a blocking
/// thread pool, never from an executor thread.
pub trait KeyStore: Send + Sync + 'static {
    /// The name shown in the startup banner: `Filesystem: <path>`, `In Memory`, …
    fn display_name(&self) -> String;

    /// Runs a cheap health probe and returns how long it took.
    fn status(&self) -> Result<Duration, StoreError>;

    /// Stores `value` under `name` if, and only if, `name` does not exist yet (atomically).
    fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError>;

    /// The value stored under `name`.
    fn get(&self, name: &str) -> Result<SecretVec, StoreError>;

    /// Removes `name`.
    fn delete(&self, name: &str) -> Result<(), StoreError>;

    /// All names starting with `prefix`, sorted ascending in byte order; no paging.
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;

    /// Replaces the value under `name` with `new` if, and only if, it still is `old`
    /// (compare-and-set): how a key gains or loses a version. `Conflict` when the stored value
    /// is no longer `old` (another writer came first: read again and retry), `NotFound` when
    /// `name` is gone. How strong the guarantee is depends on the store: [`Self::replace_kind`].
    fn replace(&self, name: &str, old: &[u8], new: &[u8]) -> Result<(), StoreError> {
        let _ = (name, old, new);
        Err(StoreError::Unsupported(
            "this keystore cannot replace a stored value (key rotation)",
        ))
    }

    /// How [`Self::replace`] holds up against other writers of the same store (other nodes).
    fn replace_kind(&self) -> ReplaceKind {
        ReplaceKind::Unsupported
    }

    /// Which credentials the store found, for the start-up log, where it chose among several
    /// sources (GCP, Azure); never a secret.
    fn credentials(&self) -> Option<String> {
        None
    }
}

/// How a store's [`KeyStore::replace`] holds up when several nodes write the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplaceKind {
    /// The store checks the old value and writes the new one in one step (a compare-and-set
    /// of its own: a version number, a lock): two nodes rotating at once both get a version.
    Atomic,
    /// The store has no compare-and-set: the value is read, compared and overwritten in
    /// separate calls, so two nodes rotating the same key in the same instant can lose one
    /// of the two new versions (never an existing one).
    ReadCompareWrite,
    /// The store cannot replace a value; keys there cannot be rotated.
    Unsupported,
}

/// Why a keystore operation failed. Messages never contain values.
#[derive(Debug)]
pub enum StoreError {
    /// No entry with that name.
    NotFound,
    /// `create` found an entry with that name.
    AlreadyExists,
    /// The backend cannot represent that name.
    InvalidName,
    /// The value exceeds [`VALUE_BYTES_MAX`].
    TooLarge,
    /// The backend cannot be reached (network-type failure).
    Unreachable(String),
    /// Any other I/O failure.
    Io(std::io::Error),
    /// `replace` found another value than the one it was to replace.
    Conflict,
    /// The store cannot do this operation at all.
    Unsupported(&'static str),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound => f.write_str("key does not exist"),
            StoreError::AlreadyExists => f.write_str("key already exists"),
            StoreError::InvalidName => f.write_str("invalid key name"),
            StoreError::TooLarge => f.write_str("stored value is too large"),
            StoreError::Unreachable(reason) => write!(f, "keystore is unreachable: {reason}"),
            StoreError::Io(err) => write!(f, "keystore I/O error: {err}"),
            StoreError::Conflict => f.write_str("key was changed concurrently"),
            StoreError::Unsupported(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io(err) => Some(err),
            _ => None,
        }
    }
}

impl From<std::io::Error> for StoreError {
    fn from(err: std::io::Error) -> Self {
        StoreError::Io(err)
    }
}

/// What `kes server --check` validates of the keystore block: all that opening it checks
/// (endpoints, CA files, credential files and their kinds, the environment a cloud
/// credential is chosen from), contacting nothing. The fs keystore is not opened: that would
/// create its directory.
pub fn check(config: &crate::config::KeystoreConfig) -> Result<(), String> {
    match config {
        crate::config::KeystoreConfig::Fs { .. } => Ok(()),
        other => open(other).map(drop),
    }
}

/// Opens the keystore a config names.
pub fn open(
    config: &crate::config::KeystoreConfig,
) -> Result<std::sync::Arc<dyn KeyStore>, String> {
    use crate::config::KeystoreConfig;
    match config {
        KeystoreConfig::Fs { path } => FsStore::open(path.clone())
            .map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn KeyStore>)
            .map_err(|e| format!("keystore.fs.path '{}': {e}", path.display())),
        KeystoreConfig::Vault(v) => vault::VaultStore::new((**v).clone())
            .map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn KeyStore>),
        KeystoreConfig::Aws(a) => {
            aws::AwsStore::new((**a).clone(), &|name| std::env::var(name).ok())
                .map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn KeyStore>)
        }
        KeystoreConfig::Fortanix(f) => fortanix::FortanixStore::new((**f).clone())
            .map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn KeyStore>),
        KeystoreConfig::KeyControl(k) => keycontrol::KeyControlStore::new((**k).clone())
            .map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn KeyStore>),
        KeystoreConfig::KeySecure(k) => keysecure::KeySecureStore::new((**k).clone())
            .map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn KeyStore>),
        KeystoreConfig::Gcp(g) => {
            gcp::GcpStore::new((**g).clone(), &|name| std::env::var(name).ok())
                .map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn KeyStore>)
        }
        KeystoreConfig::Azure(a) => {
            azure::AzureStore::new((**a).clone(), &|name| std::env::var(name).ok())
                .map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn KeyStore>)
        }
        KeystoreConfig::Unsupported(name) => Err(format!(
            "keystore.{name}: this keystore is not supported (known: fs, vault, aws, gcp, azure, \
             fortanix, gemalto, entrust)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages() {
        assert_eq!(StoreError::NotFound.to_string(), "key does not exist");
        assert_eq!(StoreError::AlreadyExists.to_string(), "key already exists");
        let io = StoreError::Io(std::io::Error::other("boom"));
        assert_eq!(io.to_string(), "keystore I/O error: boom");
        assert!(std::error::Error::source(&io).is_some());
        assert!(std::error::Error::source(&StoreError::TooLarge).is_none());
    }

    #[test]
    fn stores_are_object_safe() {
        let stores: Vec<Box<dyn KeyStore>> = vec![Box::new(MemStore::new())];
        assert_eq!(stores[0].display_name(), "In Memory");
    }
}
