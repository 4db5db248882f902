//! Token files that the platform rotates (Kubernetes projected service-account tokens, web
//! identity tokens, container authorization tokens): read whole, bounded, trimmed, into a
//! zeroizing buffer, each time a login needs one.

use std::path::Path;

use crate::secret::SecretVec;

/// Largest token file read (bytes).
pub const TOKEN_FILE_BYTES_MAX: u64 = 64 << 10;

/// A token file's content without surrounding whitespace; at most [`TOKEN_FILE_BYTES_MAX`]
/// bytes. The error names the file, never its content.
pub fn read_token_file(path: &Path) -> Result<SecretVec, String> {
    let raw = read_capped(path, TOKEN_FILE_BYTES_MAX)
        .map_err(|e| format!("'{}': {e}", path.display()))?;
    let bytes = raw.expose();
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    if start >= end {
        return Err(format!("'{}' is empty", path.display()));
    }
    Ok(SecretVec::new(bytes[start..end].to_vec()))
}

/// A file's bytes, refused when larger than `bytes_max`. Errors do not name the file.
pub fn read_capped(path: &Path, bytes_max: u64) -> Result<SecretVec, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    // Sized once (one byte more, so that `read_to_end` sees the end without growing it): a
    // grown buffer would leave an unwiped copy of the secrets read so far.
    let size = file.metadata().map_or(4096, |m| m.len()).min(bytes_max) as usize;
    let mut out = SecretVec::with_capacity(size + 1);
    file.take(bytes_max + 1)
        .read_to_end(out.as_mut_vec())
        .map_err(|e| e.to_string())?;
    if out.expose().len() as u64 > bytes_max {
        return Err(format!("larger than {bytes_max} bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_trimmed_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "  tok\n").unwrap();
        assert_eq!(read_token_file(&p).unwrap().expose(), b"tok");
        std::fs::write(&p, "\n").unwrap();
        assert!(read_token_file(&p).unwrap_err().contains("empty"));
        std::fs::write(&p, vec![b'a'; TOKEN_FILE_BYTES_MAX as usize + 1]).unwrap();
        assert!(read_token_file(&p).unwrap_err().contains("larger than"));
        assert!(read_token_file(&dir.path().join("none")).is_err());
    }
}
