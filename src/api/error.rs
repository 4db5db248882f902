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
    pub const STORE_LIST: ApiError = fixed(502, "failed to list keys");
    pub const STORE_UNAVAILABLE: ApiError = fixed(502, "key store is unavailable");
    pub const STORE_UNREACHABLE: ApiError = fixed(504, "key store is not reachable");
    /// The core's blocking-pool queue is full (`rt::blocking::POOL_QUEUE_JOBS_MAX` keystore
    /// calls wait already): the client should retry later or elsewhere.
    pub const STORE_BUSY: ApiError = fixed(503, "key store is busy");
    pub const BODY_TOO_LARGE: ApiError = fixed(413, "request body too large");

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
