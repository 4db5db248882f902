//! The MinKMS API (what `github.com/minio/kms-go/kms` speaks) over the same key service as
//! the KES API: `POST /v1/kms/{enclave}` with one or more command frames ([`frame`]) of
//! protobuf messages ([`message`]), answered 200 with one frame per command in order, or
//! one error for the whole request.
//!
//! A key is a ring of versions (`crypto::keyring`): KEY:CREATE with `add_version` rotates
//! it, generate and encrypt use the latest version (or the one asked for), decrypt finds the
//! version a ciphertext was made with. The enclave `default` (or none) is the server's one
//! key namespace, where each command is authorised as the KES route it stands for
//! ([`Command::policy_path`]), so one policy governs both APIs; other enclaves are
//! namespaces of their own in the same keystore ([`enclave`]). Identities and policies are
//! the config file's, served read-only ([`admin`]).

pub mod admin;
mod admin_message;
pub mod enclave;
pub mod frame;
pub mod message;

use super::key::{
    self, create_key, decrypt_with, encrypt_with, import_key, mac_with, new_dek, remove_version,
    rotate_key, version_of,
};
use super::router::{is_valid_name, is_valid_pattern};
use super::{store, ApiError, AuthMode, Core, Peer, Reply, Request, RouteId};
use crate::auth::identity::Identity;
use crate::auth::Decision;
use crate::crypto::{KeyType, KeyVersion};
use enclave::Enclave;
pub use frame::{Command, FRAMES_PER_REQUEST_MAX};
use message::{KeyLayout, KeyRequest, KeyStatus};

/// `api_version` of `GET /version`.
pub const API_VERSION: &str = "v1";

/// The enclave that is the server's key namespace. An empty enclave means the same.
pub const DEFAULT_ENCLAVE: &str = "default";

/// DEK length MinIO asks for (and the only one served): [`key::DEK_BYTES`].
const DEK_LENGTH: u32 = key::DEK_BYTES as u32;

/// Keys in one KEY:LIST answer when the request's `limit` is 0 or larger; `continue_at`
/// names the next key when there are more.
pub const LIST_PAGE_KEYS_MAX: usize = 100;

impl Command {
    /// The KES API path whose policy rule governs this command on `name` (KEY:LIST: on the
    /// list pattern `name*`). `None`: cluster-level, the admin's alone.
    fn policy_path(self, name: &str, path: &mut String) -> Option<()> {
        let route = match self {
            Command::KeyCreate => "/v1/key/create/",
            Command::KeyImport => "/v1/key/import/",
            Command::KeyStatus => "/v1/key/describe/",
            Command::KeyDelete => "/v1/key/delete/",
            Command::KeyEncrypt => "/v1/key/encrypt/",
            Command::KeyDecrypt => "/v1/key/decrypt/",
            Command::KeyGenerate => "/v1/key/generate/",
            Command::KeyMac => "/v1/key/hmac/",
            Command::KeyList => "/v1/key/list/",
            Command::KeyListVersions => "/v1/key/describe/",
            Command::EnclaveCreate
            | Command::EnclaveDelete
            | Command::EnclaveStatus
            | Command::EnclaveList
            | Command::PolicyCreate
            | Command::PolicyDelete
            | Command::PolicyAssign
            | Command::PolicyGet
            | Command::PolicyStatus
            | Command::PolicyList
            | Command::IdentityCreate
            | Command::IdentityDelete
            | Command::IdentityGet
            | Command::IdentityList => return None,
        };
        path.clear();
        path.push_str(route);
        path.push_str(name);
        if self == Command::KeyList {
            path.push('*');
        }
        Some(())
    }
}

/// Serves one request of command frames. Errors wipe what was already answered and come
/// back as protobuf `ErrResponse` (or JSON `{"message"}` to a client that did not send
/// `application/octet-stream`, which kms-go reads as protojson).
pub async fn serve(core: &Core, req: &mut Request<'_>, out: &mut Vec<u8>) -> Reply {
    match serve_frames(core, req, out).await {
        Ok(()) => Reply::Binary(200),
        Err(e) if req.binary => error_reply(e, out),
        Err(e) => {
            wipe(out);
            Reply::Error(e.into_kms())
        }
    }
}

/// `e` as kms-go reads it: its status and text in a protobuf `ErrResponse`, replacing
/// (and wiping) whatever `out` held.
pub fn error_reply(e: ApiError, out: &mut Vec<u8>) -> Reply {
    wipe(out);
    let e = e.into_kms();
    message::put_error(out, &e.message);
    Reply::Binary(e.status)
}

fn wipe(buf: &mut Vec<u8>) {
    // SAFETY: zeroing the initialised part of our own buffer.
    unsafe { memsec::memzero(buf.as_mut_ptr(), buf.len()) };
    buf.clear();
}

/// Who may do what: the route's auth mode (`api./v1/kms/.skip_auth` turns checks off) and
/// the caller.
struct Caller<'a> {
    enforce: bool,
    identity: Option<Identity>,
    settings: &'a super::settings::Settings,
    enclave: Enclave<'a>,
}

impl Caller<'_> {
    /// The caller's identity in hex, as a key's `created_by` records it (only commands that
    /// create something ask, so the hot path does not build it).
    fn creator(&self) -> String {
        self.identity.map(|i| i.to_hex()).unwrap_or_default()
    }

    /// Decodes a key request and checks its name and the caller's right to run `command` on
    /// that key.
    fn key_request<'m>(
        &self,
        command: Command,
        layout: KeyLayout,
        message: &'m [u8],
        path: &mut String,
    ) -> Result<KeyRequest<'m>, ApiError> {
        let m = KeyRequest::decode(layout, message)
            .map_err(|e| ApiError::kms_bad_message(command.name(), e))?;
        self.authorize(command, valid_name(m.name)?, path)?;
        Ok(m)
    }

    fn authorize(&self, command: Command, name: &str, path: &mut String) -> Result<(), ApiError> {
        if !self.enforce {
            return Ok(());
        }
        let Some(identity) = self.identity else {
            return Err(ApiError::KMS_ACCESS_DENIED);
        };
        let policies = &self.settings.policies;
        let allowed = match self.enclave.policy_path(command, name, path) {
            Some(()) => policies.decide(&identity, path) == Decision::Allow,
            None => policies.is_admin(&identity),
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::KMS_ACCESS_DENIED)
        }
    }

    /// KEY:CREATE with `add_version` is a rotation: authorised as the KES API's rotate
    /// route, `/v1/key/rotate/<name>` (in enclave `E`: `/v1/kms/E/key/rotate/<name>`), not
    /// as creating a key.
    fn authorize_rotate(&self, name: &str, path: &mut String) -> Result<(), ApiError> {
        if !self.enforce {
            return Ok(());
        }
        let Some(identity) = self.identity else {
            return Err(ApiError::KMS_ACCESS_DENIED);
        };
        path.clear();
        match self.enclave {
            Enclave::Default => path.push_str("/v1/key/rotate/"),
            Enclave::Named(e) => {
                path.push_str("/v1/kms/");
                path.push_str(e);
                path.push_str("/key/rotate/");
            }
        }
        path.push_str(name);
        match self.settings.policies.decide(&identity, path) {
            Decision::Allow => Ok(()),
            _ => Err(ApiError::KMS_ACCESS_DENIED),
        }
    }
}

async fn serve_frames(
    core: &Core,
    req: &mut Request<'_>,
    out: &mut Vec<u8>,
) -> Result<(), ApiError> {
    if !req.binary {
        return Err(ApiError::KMS_NOT_BINARY);
    }
    let enclave = enclave::parse(req.argument)?;
    // Whether the path's enclave exists is asked after the first key command was authorised.
    let mut exists = enclave == Enclave::Default;
    let timeout = req.timeout();
    let index = super::router::index_of(RouteId::Kms);
    let identity = match req.peer {
        Peer::Identified(identity) => Some(identity),
        Peer::Unidentified(_) => None,
    };
    let caller = Caller {
        enforce: req.settings.routes.auth[index] == AuthMode::Verify,
        identity,
        settings: req.settings,
        enclave,
    };
    let frames = frame::frames(req.body).map_err(ApiError::kms_bad_frames)?;
    let scratch = &mut *req.scratch;
    // The policy path of each command, in the stream's reused buffer.
    let mut path = std::mem::take(&mut scratch.path);
    let mut stored = String::new();
    for f in frames {
        let command =
            Command::from_code(f.code).ok_or_else(|| ApiError::kms_unknown_command(f.code))?;
        let bad = |e| ApiError::kms_bad_message(command.name(), e);
        match command {
            Command::KeyCreate => {
                let m = message::CreateKey::decode(f.message).map_err(bad)?;
                let name = valid_name(m.name)?;
                if m.add_version {
                    caller.authorize_rotate(name, &mut path)?;
                } else {
                    caller.authorize(command, name, &mut path)?;
                }
                let kind = match m.kind {
                    "" if m.add_version => None,
                    other => Some(key_type(other, core)?),
                };
                known(core, enclave, &mut exists).await?;
                let name = enclave.stored_name(name, &mut stored);
                if m.add_version {
                    add_version(core, name, kind, &caller.creator()).await?;
                } else {
                    let kind = kind.unwrap_or(core.shared.key_type);
                    create_key(core, name, kind, &caller.creator()).await?;
                }
                frame::put_frame(out, command, |_| {});
            }
            Command::KeyImport => {
                let m = message::ImportKey::decode(f.message).map_err(bad)?;
                let name = valid_name(m.name)?;
                caller.authorize(command, name, &mut path)?;
                let kind = key_type(m.kind, core)?;
                known(core, enclave, &mut exists).await?;
                let name = enclave.stored_name(name, &mut stored);
                import_key(core, name, kind, m.key, &caller.creator()).await?;
                frame::put_frame(out, command, |_| {});
            }
            Command::KeyStatus => {
                let m = caller.key_request(command, KeyLayout::Status, f.message, &mut path)?;
                let name = m.name;
                known(core, enclave, &mut exists).await?;
                let stored_name = enclave.stored_name(name, &mut stored);
                let ring = store::key_with_version(core, stored_name, m.version, timeout).await?;
                let (number, k) = version_of(&ring, m.version)?;
                let created_by = created_by(k);
                frame::put_frame(out, command, |b| {
                    message::put_key_status(b, &status_of(name, number, k, &created_by))
                });
            }
            Command::KeyListVersions => {
                let m = caller.key_request(command, KeyLayout::Status, f.message, &mut path)?;
                let name = m.name;
                known(core, enclave, &mut exists).await?;
                let ring =
                    store::key(core, enclave.stored_name(name, &mut stored), timeout).await?;
                let creators: Vec<String> = ring.versions().map(|(_, k)| created_by(k)).collect();
                frame::put_frame(out, command, |b| {
                    for ((number, k), by) in ring.versions().zip(&creators) {
                        if number >= m.version {
                            message::put_list_entry(b, &status_of(name, number, k, by));
                        }
                    }
                    message::put_continue_at(b, "");
                });
            }
            Command::KeyDelete => {
                let m = caller.key_request(command, KeyLayout::Delete, f.message, &mut path)?;
                known(core, enclave, &mut exists).await?;
                let name = enclave.stored_name(m.name, &mut stored);
                if m.all_versions {
                    store::delete(core, name).await?;
                } else {
                    remove_version(core, name, m.version).await?;
                }
                frame::put_frame(out, command, |_| {});
            }
            Command::KeyEncrypt => {
                let m = caller.key_request(command, KeyLayout::Encrypt, f.message, &mut path)?;
                known(core, enclave, &mut exists).await?;
                let name = enclave.stored_name(m.name, &mut stored);
                let ring = store::key_with_version(core, name, m.version, timeout).await?;
                let number = encrypt_with(
                    core,
                    &ring,
                    m.version,
                    m.data,
                    m.associated_data,
                    &mut scratch.output,
                )?;
                frame::put_frame(out, command, |b| {
                    message::put_encrypt(b, number, &scratch.output)
                });
            }
            Command::KeyDecrypt => {
                let m = caller.key_request(command, KeyLayout::Decrypt, f.message, &mut path)?;
                known(core, enclave, &mut exists).await?;
                let name = enclave.stored_name(m.name, &mut stored);
                // The ciphertext says which version made it (MinIO sends version 0, or 1 for
                // ciphertexts it made through the KES API): a version in the request must
                // exist, but the ciphertext's own version opens it.
                let ring = store::key_with_version(core, name, m.version, timeout).await?;
                version_of(&ring, m.version)?;
                decrypt_with(
                    core,
                    name,
                    ring,
                    m.data,
                    m.associated_data,
                    &mut scratch.output,
                    timeout,
                )
                .await?;
                frame::put_frame(out, command, |b| message::put_decrypt(b, &scratch.output));
            }
            Command::KeyGenerate => {
                let m = caller.key_request(command, KeyLayout::Generate, f.message, &mut path)?;
                if !(m.length == 0 || m.length == DEK_LENGTH) {
                    return Err(ApiError::kms_invalid_length(m.length));
                }
                known(core, enclave, &mut exists).await?;
                let name = enclave.stored_name(m.name, &mut stored);
                let ring = store::key_with_version(core, name, m.version, timeout).await?;
                let (dek, number) = new_dek(
                    core,
                    &ring,
                    m.version,
                    m.associated_data,
                    &mut scratch.output,
                )?;
                frame::put_frame(out, command, |b| {
                    message::put_generate(b, number, dek.plaintext(), &scratch.output)
                });
            }
            Command::KeyMac => {
                let m = caller.key_request(command, KeyLayout::Mac, f.message, &mut path)?;
                known(core, enclave, &mut exists).await?;
                let name = enclave.stored_name(m.name, &mut stored);
                let ring = store::key_with_version(core, name, m.version, timeout).await?;
                let (number, mut tag) = mac_with(&ring, m.version, m.data)?;
                frame::put_frame(out, command, |b| message::put_mac(b, number, &tag));
                // SAFETY: wiping our own stack copy of the tag.
                unsafe { memsec::memzero(tag.as_mut_ptr(), tag.len()) };
            }
            Command::KeyList => {
                let m = message::List::decode(f.message).map_err(bad)?;
                let mut pattern = String::with_capacity(m.prefix.len() + 1);
                pattern.push_str(m.prefix);
                pattern.push('*');
                if !is_valid_pattern(&pattern) {
                    return Err(ApiError::invalid_pattern(m.prefix));
                }
                caller.authorize(command, m.prefix, &mut path)?;
                known(core, enclave, &mut exists).await?;
                list(core, enclave, &m, timeout, out).await?;
            }
            Command::EnclaveCreate
            | Command::EnclaveDelete
            | Command::EnclaveStatus
            | Command::EnclaveList => {
                caller.authorize(command, "", &mut path)?;
                let creator = identity.map(|i| i.to_h1()).unwrap_or_default();
                enclave::serve(core, command, f.message, &creator, out).await?;
            }
            Command::PolicyCreate
            | Command::PolicyDelete
            | Command::PolicyAssign
            | Command::PolicyGet
            | Command::PolicyStatus
            | Command::PolicyList
            | Command::IdentityCreate
            | Command::IdentityDelete
            | Command::IdentityGet
            | Command::IdentityList => admin::serve(core, &caller, command, f.message, out)?,
        }
    }
    path.clear();
    scratch.path = path;
    Ok(())
}

fn valid_name(name: &str) -> Result<&str, ApiError> {
    if is_valid_name(name) {
        Ok(name)
    } else {
        Err(ApiError::invalid_key_name(name))
    }
}

/// The type a KEY:CREATE / KEY:IMPORT names: `AES256` or `ChaCha20` exactly, or empty for
/// the server's key type.
fn key_type(name: &str, core: &Core) -> Result<KeyType, ApiError> {
    match name {
        "" => Ok(core.shared.key_type),
        "AES256" => Ok(KeyType::Aes256),
        "ChaCha20" => Ok(KeyType::ChaCha20),
        other => Err(ApiError::kms_unsupported_type(other)),
    }
}

/// KEY:CREATE with `add_version`: a new version of key `name`, or the key itself (version
/// 1) when there is none yet.
async fn add_version(
    core: &Core,
    name: &str,
    kind: Option<KeyType>,
    creator: &str,
) -> Result<(), ApiError> {
    match rotate_key(core, name, kind, creator).await {
        Err(e) if e == ApiError::KEY_NOT_FOUND => {
            let kind = kind.unwrap_or(core.shared.key_type);
            match create_key(core, name, kind, creator).await {
                // Another request created it first: rotate that one.
                Err(e) if e == ApiError::KEY_EXISTS => {
                    rotate_key(core, name, Some(kind), creator).await.map(drop)
                }
                other => other,
            }
        }
        other => other.map(drop),
    }
}

/// The creator in the `h1:` form kms-go parses; a key without a (hex) creator shows the
/// zero identity, which kms-go accepts and which matches no key.
fn created_by(k: &KeyVersion) -> String {
    k.created_by
        .as_deref()
        .and_then(Identity::from_hex)
        .unwrap_or(Identity::from_bytes([0; 32]))
        .to_h1()
}

fn status_of<'a>(
    name: &'a str,
    version: u32,
    k: &KeyVersion,
    created_by: &'a str,
) -> KeyStatus<'a> {
    KeyStatus {
        name,
        version,
        kind: k.key.kind().as_str(),
        created_at: k.created_at,
        created_by,
    }
}

/// Checks once per request that the path's enclave exists (see [`enclave::ensure_exists`]).
async fn known(core: &Core, enclave: Enclave<'_>, exists: &mut bool) -> Result<(), ApiError> {
    if !*exists {
        enclave::ensure_exists(core, enclave).await?;
        *exists = true;
    }
    Ok(())
}

/// KEY:LIST: the keys from `continue_at` on with the prefix, at most a page, each with its
/// latest version's type and creator (keys deleted meanwhile are left out).
async fn list(
    core: &Core,
    enclave: Enclave<'_>,
    m: &message::List<'_>,
    timeout: std::time::Duration,
    out: &mut Vec<u8>,
) -> Result<(), ApiError> {
    let limit = match m.limit as usize {
        0 => LIST_PAGE_KEYS_MAX,
        n => n.min(LIST_PAGE_KEYS_MAX),
    };
    let mut prefix = String::new();
    let names = store::list(core, enclave.stored_name(m.prefix, &mut prefix)).await?;
    let mut names = names
        .iter()
        .filter_map(|stored| Some((enclave.key_of(stored)?, stored.as_str())))
        .filter(|(name, _)| *name >= m.continue_at);
    let mut entries = Vec::with_capacity(limit.min(16));
    let mut continue_at = "";
    for (name, stored) in names.by_ref() {
        if entries.len() == limit {
            continue_at = name;
            break;
        }
        match store::key(core, stored, timeout).await {
            Ok(ring) => {
                let by = created_by(ring.latest().1);
                entries.push((name, ring, by));
            }
            Err(e) if e == ApiError::KEY_NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    frame::put_frame(out, Command::KeyList, |b| {
        for (name, ring, by) in &entries {
            let (number, k) = ring.latest();
            message::put_list_entry(b, &status_of(name, number, k, by));
        }
        message::put_continue_at(b, continue_at);
    });
    Ok(())
}
