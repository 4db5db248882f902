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

    /// Which credentials the store found, for the start-up log, where it chose among several
    /// sources (GCP, Azure); never a secret.
    fn credentials(&self) -> Option<String> {
        None
    }
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
