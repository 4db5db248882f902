//! Command frames of the MinKMS API: a request body is one or more
//! `[u16 BE command][u32 BE length][protobuf message]`, and the answer is as many frames,
//! in the same order, each tagged with its command.

use std::fmt;

/// Bytes of a frame header: the command (2) and the message length (4).
pub const FRAME_HEADER_BYTES: usize = 6;

/// The most frames one request may carry (MinIO sends one; batches are small).
pub const FRAMES_PER_REQUEST_MAX: usize = 1000;

/// The commands this server knows (kms-go `cmds`), served or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    EnclaveCreate,
    EnclaveDelete,
    EnclaveStatus,
    EnclaveList,
    KeyCreate,
    KeyDelete,
    KeyImport,
    KeyStatus,
    KeyEncrypt,
    KeyDecrypt,
    KeyGenerate,
    KeyList,
    KeyListVersions,
    KeyMac,
    PolicyCreate,
    PolicyDelete,
    PolicyAssign,
    PolicyGet,
    PolicyStatus,
    PolicyList,
    IdentityCreate,
    IdentityDelete,
    IdentityGet,
    IdentityList,
}

impl Command {
    /// The command for a wire code; `None` for codes this server does not serve (cluster,
    /// key versions).
    pub fn from_code(code: u16) -> Option<Command> {
        Some(match code {
            101 => Command::EnclaveCreate,
            102 => Command::EnclaveDelete,
            103 => Command::EnclaveStatus,
            104 => Command::EnclaveList,
            201 => Command::KeyCreate,
            202 => Command::KeyDelete,
            203 => Command::KeyImport,
            204 => Command::KeyStatus,
            205 => Command::KeyEncrypt,
            206 => Command::KeyDecrypt,
            207 => Command::KeyGenerate,
            208 => Command::KeyList,
            209 => Command::KeyListVersions,
            210 => Command::KeyMac,
            301 => Command::PolicyCreate,
            302 => Command::PolicyDelete,
            303 => Command::PolicyAssign,
            304 => Command::PolicyGet,
            305 => Command::PolicyStatus,
            306 => Command::PolicyList,
            401 => Command::IdentityCreate,
            402 => Command::IdentityDelete,
            403 => Command::IdentityGet,
            404 => Command::IdentityList,
            _ => return None,
        })
    }

    pub fn code(self) -> u16 {
        match self {
            Command::EnclaveCreate => 101,
            Command::EnclaveDelete => 102,
            Command::EnclaveStatus => 103,
            Command::EnclaveList => 104,
            Command::KeyCreate => 201,
            Command::KeyDelete => 202,
            Command::KeyImport => 203,
            Command::KeyStatus => 204,
            Command::KeyEncrypt => 205,
            Command::KeyDecrypt => 206,
            Command::KeyGenerate => 207,
            Command::KeyList => 208,
            Command::KeyListVersions => 209,
            Command::KeyMac => 210,
            Command::PolicyCreate => 301,
            Command::PolicyDelete => 302,
            Command::PolicyAssign => 303,
            Command::PolicyGet => 304,
            Command::PolicyStatus => 305,
            Command::PolicyList => 306,
            Command::IdentityCreate => 401,
            Command::IdentityDelete => 402,
            Command::IdentityGet => 403,
            Command::IdentityList => 404,
        }
    }

    /// The name kms-go gives the command.
    pub fn name(self) -> &'static str {
        match self {
            Command::EnclaveCreate => "ENCLAVE:CREATE",
            Command::EnclaveDelete => "ENCLAVE:DELETE",
            Command::EnclaveStatus => "ENCLAVE:STATUS",
            Command::EnclaveList => "ENCLAVE:LIST",
            Command::KeyCreate => "KEY:CREATE",
            Command::KeyDelete => "KEY:DELETE",
            Command::KeyImport => "KEY:IMPORT",
            Command::KeyStatus => "KEY:STATUS",
            Command::KeyEncrypt => "KEY:ENCRYPT",
            Command::KeyDecrypt => "KEY:DECRYPT",
            Command::KeyGenerate => "KEY:GENERATE",
            Command::KeyList => "KEY:LIST",
            Command::KeyListVersions => "KEY:LISTVERSIONS",
            Command::KeyMac => "KEY:MAC",
            Command::PolicyCreate => "POLICY:CREATE",
            Command::PolicyDelete => "POLICY:DELETE",
            Command::PolicyAssign => "POLICY:ASSIGN",
            Command::PolicyGet => "POLICY:GET",
            Command::PolicyStatus => "POLICY:STATUS",
            Command::PolicyList => "POLICY:LIST",
            // kms-go's text for 403 (its `IdentityGet`).
            Command::IdentityCreate => "IDENTITY:CREATE",
            Command::IdentityDelete => "IDENTITY:DELETE",
            Command::IdentityGet => "IDENTITY:STATUS",
            Command::IdentityList => "IDENTITY:LIST",
        }
    }
}

/// One frame of a request: its command code (not yet checked) and its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub code: u16,
    pub message: &'a [u8],
}

/// Why a request body is not a sequence of frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The body is empty.
    Empty,
    /// Fewer than 6 bytes are left where a frame header should start.
    TruncatedHeader { offset: usize },
    /// The header declares more message bytes than the body has.
    TruncatedMessage {
        offset: usize,
        declared: u32,
        left: usize,
    },
    /// More than [`FRAMES_PER_REQUEST_MAX`] frames.
    TooMany,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Empty => f.write_str("request body contains no command"),
            FrameError::TruncatedHeader { offset } => {
                write!(f, "invalid command format: truncated header at byte {offset}")
            }
            FrameError::TruncatedMessage {
                offset,
                declared,
                left,
            } => write!(
                f,
                "invalid command format: command at byte {offset} declares {declared} bytes, {left} follow"
            ),
            FrameError::TooMany => write!(
                f,
                "too many commands in one request (at most {FRAMES_PER_REQUEST_MAX})"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

/// Checks that `body` is a sequence of frames (every length within the body, at most
/// [`FRAMES_PER_REQUEST_MAX`]) before any command runs, and hands them out one at a time:
/// no allocation.
pub fn frames(body: &[u8]) -> Result<Frames<'_>, FrameError> {
    if body.is_empty() {
        return Err(FrameError::Empty);
    }
    let mut count = 0;
    let mut offset = 0;
    while offset < body.len() {
        if count == FRAMES_PER_REQUEST_MAX {
            return Err(FrameError::TooMany);
        }
        let rest = &body[offset..];
        let Some((header, after)) = rest.split_first_chunk::<FRAME_HEADER_BYTES>() else {
            return Err(FrameError::TruncatedHeader { offset });
        };
        let declared = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
        let len = declared as usize;
        if len > after.len() {
            return Err(FrameError::TruncatedMessage {
                offset,
                declared,
                left: after.len(),
            });
        }
        count += 1;
        offset += FRAME_HEADER_BYTES + len;
    }
    Ok(Frames { rest: body })
}

/// The frames of a body [`frames`] checked, in order.
pub struct Frames<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Frames<'a> {
    type Item = Frame<'a>;

    fn next(&mut self) -> Option<Frame<'a>> {
        let (header, after) = self.rest.split_first_chunk::<FRAME_HEADER_BYTES>()?;
        let code = u16::from_be_bytes([header[0], header[1]]);
        let len = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
        // Checked by `frames`; a shorter rest ends the iteration rather than panicking.
        let message = after.get(..len)?;
        self.rest = &after[len..];
        Some(Frame { code, message })
    }
}

/// Splits a whole request body into frames, checking every length first: a body that is
/// not entirely well-framed is refused before any command runs.
pub fn split(body: &[u8]) -> Result<Vec<Frame<'_>>, FrameError> {
    Ok(frames(body)?.collect())
}

/// Appends a frame of `command` whose message `body` writes.
pub fn put_frame(out: &mut Vec<u8>, command: Command, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&command.code().to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    body(out);
    let len = (out.len() - start - FRAME_HEADER_BYTES) as u32;
    out[start + 2..start + FRAME_HEADER_BYTES].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut body = Vec::new();
        put_frame(&mut body, Command::KeyCreate, |b| {
            b.extend_from_slice(b"abc")
        });
        put_frame(&mut body, Command::KeyList, |_| {});
        assert_eq!(&body[..6], &[0, 201, 0, 0, 0, 3]);
        let frames = split(&body).unwrap();
        assert_eq!(
            frames,
            vec![
                Frame {
                    code: 201,
                    message: b"abc"
                },
                Frame {
                    code: 208,
                    message: b""
                }
            ]
        );
        for c in [
            201u16, 202, 203, 204, 205, 206, 207, 208, 209, 210, 101, 102, 103, 104, 301, 302, 303,
            304, 305, 306, 401, 402, 403, 404,
        ] {
            assert_eq!(Command::from_code(c).map(Command::code), Some(c));
        }
        assert_eq!(
            Command::from_code(1),
            None,
            "cluster commands are not served"
        );
        assert_eq!(Command::from_code(0), None);
    }

    #[test]
    fn malformed_bodies() {
        assert_eq!(split(b""), Err(FrameError::Empty));
        assert_eq!(
            split(&[0, 201, 0]),
            Err(FrameError::TruncatedHeader { offset: 0 })
        );
        assert_eq!(
            split(&[0, 201, 0, 0, 0, 4, 1]),
            Err(FrameError::TruncatedMessage {
                offset: 0,
                declared: 4,
                left: 1
            })
        );
        assert_eq!(
            split(&[0, 201, 0, 0, 0, 0, 0]),
            Err(FrameError::TruncatedHeader { offset: 6 })
        );
        assert_eq!(
            split(&[0, 201, 0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::TruncatedMessage {
                offset: 0,
                declared: u32::MAX,
                left: 0
            })
        );
        let many = [0u8, 201, 0, 0, 0, 0].repeat(FRAMES_PER_REQUEST_MAX + 1);
        assert_eq!(split(&many), Err(FrameError::TooMany));
        let most = [0u8, 201, 0, 0, 0, 0].repeat(FRAMES_PER_REQUEST_MAX);
        assert_eq!(split(&most).unwrap().len(), FRAMES_PER_REQUEST_MAX);
    }
}
