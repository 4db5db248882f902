//! The `keystore:` section: exactly one backend, each with its own fields
//! (storage-and-config.md §2–§4).

use std::path::PathBuf;

use serde_yaml::Value;

use super::{err, ConfigError, Parser};

/// Which keystore to use, with its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeystoreConfig {
    Fs {
        path: PathBuf,
    },
    /// A backend this build does not implement yet (named for the error message).
    Unsupported(String),
}

pub(crate) fn parse_keystore(
    p: &Parser<'_>,
    node: Option<&Value>,
) -> Result<KeystoreConfig, ConfigError> {
    let Some(Value::Mapping(map)) = node else {
        return err("keystore: no keystore specified; expected e.g. keystore: {fs: {path: /var/lib/kes/keys}}");
    };
    let present: Vec<&str> = map
        .iter()
        .filter(|(_, v)| !v.is_null())
        .filter_map(|(k, _)| k.as_str())
        .collect();
    match present.as_slice() {
        [] => err("keystore: no keystore specified"),
        ["fs"] => {
            let path = match map.get("fs").and_then(|f| f.get("path")) {
                Some(v) => p.string("keystore.fs.path", v)?,
                None => String::new(),
            };
            if path.is_empty() {
                return err("keystore.fs.path: no path specified");
            }
            Ok(KeystoreConfig::Fs { path: path.into() })
        }
        [one] => Ok(KeystoreConfig::Unsupported(one.to_string())),
        _ => err(format!(
            "keystore: more than once keystore specified ({})",
            present.join(", ")
        )),
    }
}
