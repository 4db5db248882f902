//! What a config file needs from outside itself: the environment variables its known keys
//! reference (`${NAME}`) and the TLS files it names. [`missing`] lists every one that is
//! absent, so that a first start names all of them at once instead of one per attempt.

use std::path::Path;

use serde_yaml::Value;

use super::shape::Shape::{self, Leaf, List, Map, Names};
use super::{EnvLookup, ROOT};

/// The TLS files a server reads at start: (field, what it is).
const TLS_FILES: [(&str, &str); 3] = [
    ("key", "the server's private key"),
    ("cert", "the server's certificate"),
    ("ca", "the CA certificates"),
];

/// One thing the config needs and does not have.
#[derive(Debug, PartialEq, Eq)]
pub enum Missing {
    /// `field: ${name}` on line `line` (1-based), and `name` is not set.
    Env {
        field: String,
        name: String,
        line: usize,
    },
    /// `tls.<field>` names `path`, which does not exist.
    File {
        field: String,
        path: String,
        what: &'static str,
    },
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Upstream's wording for one variable.
            Missing::Env { field, name, line } => write!(
                f,
                "{field}: referenced env. variable '{name}' in line '{line}' not found"
            ),
            Missing::File { field, path, what } => {
                write!(f, "{field}: '{path}' ({what}) does not exist")
            }
        }
    }
}

/// Every variable and TLS file the config `text` needs that `env` or the file system lacks
/// (empty when the text is not YAML: the parser says why). Relative paths are taken from the
/// working directory, as the server reads them.
pub fn missing(text: &str, env: EnvLookup<'_>) -> Vec<Missing> {
    let Ok(root) = serde_yaml::from_str::<Value>(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    references(&ROOT, &root, "", &mut |field, name| {
        if env(name).is_none() {
            out.push(Missing::Env {
                field: field.to_string(),
                name: name.to_string(),
                line: line_of(text, name),
            });
        }
    });
    let tls = root.get("tls");
    for (key, what) in TLS_FILES {
        let Some(Value::String(raw)) = tls.and_then(|t| t.get(key)) else {
            continue;
        };
        let path = match reference(raw) {
            Some(name) => match env(name) {
                Some(value) => value,
                None => continue, // listed above
            },
            None => raw.clone(),
        };
        let path = path.trim();
        if !path.is_empty() && !Path::new(path).exists() {
            out.push(Missing::File {
                field: format!("tls.{key}"),
                path: path.to_string(),
                what,
            });
        }
    }
    out
}

/// One message for all of `missing`: the single item as it is, several one per line, and
/// how to make the TLS files when they are among them.
pub fn describe(missing: &[Missing]) -> String {
    let mut text = match missing {
        [one] => one.to_string(),
        many => {
            let mut t = format!("{} things are missing:", many.len());
            for m in many {
                t.push_str(&format!("\n  {m}"));
            }
            t
        }
    };
    let tls = missing
        .iter()
        .any(|m| matches!(m, Missing::File { field, .. } if field != "tls.ca"));
    if tls {
        text.push_str(
            "\n  (a key and self-signed certificate for a first try: \
             kes identity new --key server.key --cert server.cert --ip 127.0.0.1 localhost)",
        );
    }
    text
}

/// `${NAME}` as a whole trimmed value → `NAME`.
fn reference(value: &str) -> Option<&str> {
    let inner = value.trim().strip_prefix("${")?.strip_suffix('}')?;
    Some(inner.trim())
}

/// The first line that mentions the reference (as the parser reports it; 0 if none).
fn line_of(text: &str, name: &str) -> usize {
    text.lines()
        .position(|l| {
            l.split("${")
                .skip(1)
                .any(|rest| rest.split('}').next().map(str::trim) == Some(name))
        })
        .map_or(0, |i| i + 1)
}

/// Calls `found(field, NAME)` for every `${NAME}` at a key the config's shape knows.
fn references(shape: &Shape, value: &Value, path: &str, found: &mut dyn FnMut(&str, &str)) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (shape, value) {
        (Leaf, Value::String(s)) => {
            if let Some(name) = reference(s) {
                found(path, name);
            }
        }
        (Leaf, Value::Sequence(items)) => {
            for item in items {
                references(&Leaf, item, path, found);
            }
        }
        (Map(_), Value::Mapping(map)) => {
            for (k, v) in map {
                if let Some(key) = k.as_str() {
                    if let Some(inner) = shape.field(key) {
                        references(inner, v, &join(key), found);
                    }
                }
            }
        }
        (Names(inner), Value::Mapping(map)) => {
            for (k, v) in map {
                if let Some(key) = k.as_str() {
                    references(inner, v, &join(key), found);
                }
            }
        }
        (List(inner), Value::Sequence(items)) => {
            for (i, item) in items.iter().enumerate() {
                references(inner, item, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_unset_variable_and_absent_file() {
        let text = "admin:\n  identity: ${ADMIN}\ntls:\n  key: ./no-such.key\n  cert: ${CERT}\n\
                    policy:\n  p:\n    allow: [\"/v1/status\"]\n    identities:\n    - ${ID}\n\
                    unknown: ${IGNORED}\n";
        let m = missing(text, &|_| None);
        let fields: Vec<String> = m.iter().map(|m| m.to_string()).collect();
        assert_eq!(
            fields,
            [
                "admin.identity: referenced env. variable 'ADMIN' in line '2' not found",
                "tls.cert: referenced env. variable 'CERT' in line '5' not found",
                "policy.p.identities: referenced env. variable 'ID' in line '10' not found",
                "tls.key: './no-such.key' (the server's private key) does not exist",
            ]
        );
        assert!(describe(&m).contains("kes identity new --key server.key"));
        assert!(missing(text, &|_| Some("x".into())).len() == 2); // the key and cert 'x'
    }
}
