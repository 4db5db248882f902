//! The `(status, message)` pairs clients compare errors by (http-api.md §3.5). Every error
//! the API answers is built here, so the exact strings live in one place.

use std::borrow::Cow;

/// An error answer: JSON `{"message": …}` with this status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: Cow<'static, str>,
}

const fn fixed(status: u16, message: &'static str) -> ApiError {
    ApiError {
        status,
        message: Cow::Borrowed(message),
    }
}

impl ApiError {
    pub const CERT_REQUIRED: ApiError = fixed(400, "tls: client certificate is required");
    pub const MORE_THAN_ONE_CERT: ApiError =
        fixed(400, "tls: received more than one client certificate");
    pub const CA_CERT: ApiError = fixed(400, "tls: client certificate is a CA certificate");
    pub const NOT_AUTHORIZED: ApiError = fixed(403, "not authorized: insufficient permissions");
    pub const INVALID_BODY: ApiError = fixed(400, "invalid request body");
    pub const INVALID_IMPORT_BODY: ApiError = fixed(400, "invalid import key request body");
    pub const KEY_EXISTS: ApiError = fixed(400, "key already exists");
    pub const KEY_NOT_FOUND: ApiError = fixed(404, "key does not exist");
    pub const NOT_AUTHENTIC: ApiError =
        fixed(400, "decryption failed: ciphertext is not authentic");
    pub const NO_HMAC: ApiError = fixed(409, "key does not support HMAC");
    pub const POLICY_NOT_FOUND: ApiError = fixed(404, "policy does not exist");
    pub const IDENTITY_NOT_FOUND: ApiError = fixed(404, "identity does not exist");
    pub const GENERATE_FAILED: ApiError = fixed(500, "failed to generate encryption key");
    pub const CREATE_INTERNAL: ApiError = fixed(500, "failed to create key");
    pub const ENCRYPT_FAILED: ApiError = fixed(500, "failed to encrypt plaintext");
    pub const DECRYPT_FAILED: ApiError = fixed(500, "failed to decrypt ciphertext");
    pub const STORE_CREATE: ApiError = fixed(502, "failed to create key");
    pub const STORE_READ: ApiError = fixed(502, "failed to read key");
    pub const STORE_DELETE: ApiError = fixed(502, "failed to delete key");
    pub const STORE_UPDATE: ApiError = fixed(502, "failed to update key");
    pub const KEY_VERSION_NOT_FOUND: ApiError = fixed(404, "key version does not exist");
    pub const ROTATE_UNSUPPORTED: ApiError = fixed(
        501,
        "key rotation is not supported by this keystore: it cannot replace a stored key",
    );
    pub const KEY_CHANGED: ApiError = fixed(
        409,
        "key was changed by other requests at the same time: try again",
    );
    pub const STORE_LIST: ApiError = fixed(502, "failed to list keys");
    pub const STORE_UNAVAILABLE: ApiError = fixed(502, "key store is unavailable");
    pub const STORE_UNREACHABLE: ApiError = fixed(504, "key store is not reachable");
    /// The core's blocking-pool queue is full (`rt::blocking::POOL_QUEUE_JOBS_MAX` keystore
    /// calls wait already): the client should retry later or elsewhere.
    pub const STORE_BUSY: ApiError = fixed(503, "key store is busy");
    pub const BODY_TOO_LARGE: ApiError = fixed(413, "request body too large");

    // The MinKMS API's errors: kms-go (and MinIO through it) compares status and text.
    pub const KMS_ACCESS_DENIED: ApiError = fixed(403, "access denied: insufficient permissions");
    pub const KMS_KEY_EXISTS: ApiError = fixed(409, "key already exists");
    pub const KMS_ENCLAVE_NOT_FOUND: ApiError = fixed(404, "enclave does not exist");
    pub const KMS_INVALID_CIPHERTEXT: ApiError = fixed(400, "invalid ciphertext");
    pub const KMS_NOT_BINARY: ApiError = fixed(
        415,
        "unsupported content type: commands are sent as application/octet-stream",
    );
    pub const KMS_ENCLAVE_EXISTS: ApiError = fixed(409, "enclave already exists");
    pub const KMS_DEFAULT_ENCLAVE_KEPT: ApiError = fixed(
        400,
        "the enclave 'default' cannot be deleted: it is the server's key namespace (the KES API's keys)",
    );
    pub const STORE_ENCLAVE_CREATE: ApiError = fixed(502, "failed to create enclave");
    pub const STORE_ENCLAVE_READ: ApiError = fixed(502, "failed to read enclave");
    pub const STORE_ENCLAVE_DELETE: ApiError = fixed(502, "failed to delete enclave");
    pub const STORE_ENCLAVE_LIST: ApiError = fixed(502, "failed to list enclaves");

    pub fn invalid_enclave_name(name: &str) -> ApiError {
        ApiError {
            status: 400,
            message: Cow::Owned(format!(
                "invalid enclave name '{name}': {}",
                crate::api::minkms::enclave::ENCLAVE_NAME_RULE
            )),
        }
    }

    /// IDENTITY:CREATE/DELETE, POLICY:CREATE/DELETE/ASSIGN: `501`, never retried, never
    /// served — the config file is where identities and policies change.
    pub fn kms_config_only(command: &str) -> ApiError {
        ApiError {
            status: 501,
            message: Cow::Owned(format!(
                "{command} is not served: identities and policies are set in the server's config file (policy:), read on start and reload"
            )),
        }
    }

    pub fn kms_invalid_identity(identity: &str) -> ApiError {
        ApiError {
            status: 400,
            message: Cow::Owned(format!(
                "invalid identity '{identity}': expected h1: and 43 base64url characters, or 64 hex characters"
            )),
        }
    }

    pub fn kms_bad_frames(reason: impl std::fmt::Display) -> ApiError {
        ApiError {
            status: 400,
            message: Cow::Owned(format!("invalid request: {reason}")),
        }
    }

    pub fn kms_bad_message(command: &str, reason: impl std::fmt::Display) -> ApiError {
        ApiError {
            status: 400,
            message: Cow::Owned(format!("invalid {command} request: {reason}")),
        }
    }

    pub fn kms_unknown_command(code: u16) -> ApiError {
        ApiError {
            status: 400,
            message: Cow::Owned(format!(
                "invalid command: {code} is not a command this server serves"
            )),
        }
    }

    pub fn kms_unsupported_type(kind: &str) -> ApiError {
        ApiError {
            status: 400,
            message: Cow::Owned(format!("key type '{kind}' is not supported")),
        }
    }

    pub fn kms_invalid_length(length: u32) -> ApiError {
        ApiError {
            status: 400,
            message: Cow::Owned(format!(
                "invalid key length {length}: data keys are 32 bytes"
            )),
        }
    }

    /// The MinKMS form of an error the key service gave: the statuses and texts kms-go's
    /// errors carry where they differ from the KES API's.
    pub fn into_kms(self) -> ApiError {
        if self == ApiError::KEY_EXISTS {
            ApiError::KMS_KEY_EXISTS
        } else if self == ApiError::NOT_AUTHENTIC || self == ApiError::DECRYPT_FAILED {
            ApiError::KMS_INVALID_CIPHERTEXT
        } else if self == ApiError::NOT_AUTHORIZED {
            ApiError::KMS_ACCESS_DENIED
        } else {
            self
        }
    }

    /// A key ring cannot change as asked (too many versions, no such version).
    pub fn ring(e: crate::crypto::keyring::RingError) -> ApiError {
        use crate::crypto::keyring::RingError;
        match e {
            RingError::NoSuchVersion(_) => ApiError::KEY_VERSION_NOT_FOUND,
            RingError::TooManyVersions | RingError::NumbersExhausted => ApiError {
                status: 409,
                message: Cow::Owned(e.to_string()),
            },
        }
    }

    /// A ciphertext names a key version the key does not hold (removed).
    pub fn unknown_version(version: u32) -> ApiError {
        ApiError {
            status: 400,
            message: Cow::Owned(format!(
                "decryption failed: key version {version} does not exist"
            )),
        }
    }

    pub fn invalid_key_name(name: &str) -> ApiError {
        ApiError {
            status: 400,
            message: Cow::Owned(format!(
                "key name '{name}' is empty, too long or contains invalid characters"
            )),
        }
    }

    pub fn invalid_pattern(pattern: &str) -> ApiError {
        ApiError {
            status: 400,
            message: Cow::Owned(format!(
                "listing pattern '{pattern}' is empty, too long or is invalid"
            )),
        }
    }

    pub fn invalid_policy_name(name: &str) -> ApiError {
        ApiError {
            status: 400,
            message: Cow::Owned(format!(
                "policy name '{name}' is empty, too long or contains invalid characters"
            )),
        }
    }

    pub fn invalid_identity(identity: &str) -> ApiError {
        ApiError {
            status: 400,
            message: Cow::Owned(format!(
                "identity '{identity}' is empty, too long or contains invalid characters"
            )),
        }
    }

    pub fn unsupported_algorithm(cipher: &str) -> ApiError {
        ApiError {
            status: 406,
            message: Cow::Owned(format!("algorithm '{cipher}' is not supported")),
        }
    }

    pub fn invalid_key_size(cipher: &str) -> ApiError {
        ApiError {
            status: 406,
            message: Cow::Owned(format!("invalid key size for '{cipher}'")),
        }
    }

    pub fn wrong_method(got: &str, want: &str) -> ApiError {
        ApiError {
            status: 405,
            message: Cow::Owned(format!("received method '{got}' expected '{want}'")),
        }
    }
}
