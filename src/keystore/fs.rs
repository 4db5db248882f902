//! The filesystem keystore (`keystore.fs`, spec storage-and-config.md §2).
//!
//! On-disk format, identical to upstream KES: one regular file per key directly inside the
//! directory, file name = key name, content = the value bytes exactly (no trailing newline),
//! mode 0600. Files written by upstream are read as-is and vice versa.
//!
//! Durability improvement over upstream: `create` writes the value to a temporary file
//! (`.kes-tmp-<name>-<pid>-<counter>`, which can never be a key name because of its dots),
//! fsyncs it, hard-links it to the final name (the link fails if the name exists, which makes
//! "create if absent" atomic across threads and processes), unlinks the temporary name and
//! fsyncs the directory. A key file therefore never appears partially written. Leftover
//! temporary files of a crashed process are removed by [`FsStore::open`].
//!
//! `replace` (key rotation) is a compare-and-set across threads and processes on one host:
//! under an exclusive `flock(2)` on the keystore directory itself (no lock file, so nothing
//! new is listed, and upstream's layout is unchanged) it reads the file, compares it with the
//! expected value, writes the new value to a temporary file (mode 0600, fsynced) and
//! `rename(2)`s it over the key file, then fsyncs the directory. A reader sees either the old
//! or the new file, never a missing or partial one. `delete` takes the same lock, so a
//! replace cannot bring a key back that was deleted while it ran. `flock` is per host: on a
//! network file system shared by several hosts the guarantee is only as good as that file
//! system's `flock` emulation.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{KeyStore, StoreError, VALUE_BYTES_MAX};
use crate::secret::SecretVec;

/// Prefix of the temporary files `create` writes before linking them into place.
const TEMP_PREFIX: &str = ".kes-tmp-";

/// The longest key name (bytes): the usual `NAME_MAX` of Unix file systems.
const NAME_BYTES_MAX: usize = 255;

/// How much of the key name goes into a temporary file name, so that prefix, pid and counter
/// still fit in `NAME_MAX`.
const TEMP_NAME_PART_MAX: usize = 200;

/// How often `create` starts over when its temporary file vanished before it was linked (a
/// server sharing the directory removed it while starting up).
const CREATE_ATTEMPTS: usize = 3;

/// How often `replace` starts over when its temporary file vanished before the rename.
const REPLACE_ATTEMPTS: usize = 3;

/// How many temporary file names `create` tries before giving up.
const TEMP_NAME_ATTEMPTS: usize = 16;

/// A keystore that keeps one file per key in a directory.
#[derive(Debug)]
pub struct FsStore {
    dir: PathBuf,
    counter: AtomicU64,
}

impl FsStore {
    /// Opens the keystore directory `path`, creating it (and its parents) with mode 0755 if it
    /// does not exist, and removes temporary files left behind by a crashed process.
    ///
    /// Fails if `path` is empty, exists but is not a directory, or cannot be read.
    pub fn open(path: impl Into<PathBuf>) -> Result<FsStore, StoreError> {
        let dir = path.into();
        if dir.as_os_str().is_empty() {
            return Err(StoreError::Io(io::Error::new(
                ErrorKind::InvalidInput,
                "no path specified",
            )));
        }
        match fs::metadata(&dir) {
            Ok(meta) => ensure_dir(&dir, &meta)?,
            Err(err) if err.kind() == ErrorKind::NotFound => {
                DirBuilder::new().recursive(true).mode(0o755).create(&dir)?;
                ensure_dir(&dir, &fs::metadata(&dir)?)?;
            }
            Err(err) => return Err(StoreError::Io(err)),
        }
        let store = FsStore {
            dir,
            counter: AtomicU64::new(0),
        };
        store.remove_temp_files()?;
        Ok(store)
    }

    /// The keystore directory, as given to [`FsStore::open`].
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Removes every `.kes-tmp-*` regular file in the directory (best effort per file).
    fn remove_temp_files(&self) -> Result<(), StoreError> {
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let is_temp = entry
                .file_name()
                .as_encoded_bytes()
                .starts_with(TEMP_PREFIX.as_bytes());
            if is_temp && entry.file_type().is_ok_and(|t| t.is_file()) {
                // Another server sharing the directory may remove it at the same time.
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// Creates a new, empty temporary file for a value of `name`, mode 0600.
    fn create_temp(&self, name: &str) -> Result<(PathBuf, File), StoreError> {
        let name_part = truncate_at_char_boundary(name, TEMP_NAME_PART_MAX);
        let pid = std::process::id();
        for _ in 0..TEMP_NAME_ATTEMPTS {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let path = self.dir.join(format!("{TEMP_PREFIX}{name_part}-{pid}-{n}"));
            match new_file(&path) {
                Ok(file) => return Ok((path, file)),
                // Same pid on another host or in another container sharing the directory.
                Err(err) if err.kind() == ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(StoreError::Io(err)),
            }
        }
        Err(StoreError::Io(io::Error::new(
            ErrorKind::AlreadyExists,
            "no unused temporary file name",
        )))
    }

    /// Upstream's create: write the final file directly. Used only where the file system does
    /// not support hard links; a crash mid-write can leave a truncated file behind.
    fn create_in_place(&self, path: &Path, value: &[u8]) -> Result<(), StoreError> {
        let file = match new_file(path) {
            Ok(file) => file,
            Err(err) if err.kind() == ErrorKind::AlreadyExists => {
                return Err(StoreError::AlreadyExists)
            }
            Err(err) => return Err(StoreError::Io(err)),
        };
        if let Err(err) = write_and_sync(file, value) {
            let _ = fs::remove_file(path);
            return Err(StoreError::Io(err));
        }
        self.sync_dir()
    }

    /// Makes the directory entries (created or removed names) durable.
    fn sync_dir(&self) -> Result<(), StoreError> {
        match File::open(&self.dir).and_then(|dir| dir.sync_all()) {
            Ok(()) => Ok(()),
            // Some file systems do not support fsync on directories.
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => Ok(()),
            Err(err) => Err(StoreError::Io(err)),
        }
    }

    /// An exclusive `flock` on the keystore directory, held until the returned file is
    /// dropped; it orders `replace` and `delete` across threads, `FsStore`s and processes.
    fn lock_dir(&self) -> Result<File, StoreError> {
        let dir = File::open(&self.dir)?;
        loop {
            // SAFETY: `dir` is an open file descriptor for the whole call.
            if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(dir);
            }
            let err = io::Error::last_os_error();
            if err.kind() != ErrorKind::Interrupted {
                return Err(StoreError::Io(err));
            }
        }
    }

    /// The value of `name` as `get` reads it, `NotFound` for anything but a regular file.
    fn read(&self, name: &str) -> Result<SecretVec, StoreError> {
        // O_NONBLOCK: opening a FIFO that happens to carry a key's name must not hang; it has
        // no effect on regular files.
        let mut file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(self.dir.join(name))
        {
            Ok(file) => file,
            Err(err) if err.kind() == ErrorKind::NotFound => return Err(StoreError::NotFound),
            Err(err) => return Err(StoreError::Io(err)),
        };
        let meta = file.metadata()?;
        if !meta.is_file() {
            // Sub-directories and special files are never keys (and never listed).
            return Err(StoreError::NotFound);
        }
        let len = usize::try_from(meta.len()).unwrap_or(usize::MAX);
        if len > VALUE_BYTES_MAX {
            return Err(StoreError::TooLarge);
        }
        read_value(&mut file, len)
    }
}

impl KeyStore for FsStore {
    fn display_name(&self) -> String {
        format!("Filesystem: {}", self.dir.display())
    }

    fn status(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        match fs::metadata(&self.dir) {
            Ok(meta) if meta.is_dir() => Ok(start.elapsed()),
            Ok(_) => Err(StoreError::Unreachable(format!(
                "'{}' is not a directory",
                self.dir.display()
            ))),
            Err(err) => Err(StoreError::Unreachable(err.to_string())),
        }
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        validate_name(name)?;
        if value.len() > VALUE_BYTES_MAX {
            return Err(StoreError::TooLarge);
        }
        let path = self.dir.join(name);
        for _ in 0..CREATE_ATTEMPTS {
            let (temp, file) = self.create_temp(name)?;
            let result = write_and_sync(file, value).and_then(|()| fs::hard_link(&temp, &path));
            // Best effort: after a successful link the value is safe under its final name, and
            // a leftover temporary file is never listed and removed at the next `open`.
            let _ = fs::remove_file(&temp);
            match result {
                Ok(()) => return self.sync_dir(),
                Err(err) if err.kind() == ErrorKind::AlreadyExists => {
                    return Err(StoreError::AlreadyExists)
                }
                // The temporary file was removed under us; start over (if the directory
                // itself is gone, `create_temp` fails next time round).
                Err(err) if err.kind() == ErrorKind::NotFound => continue,
                Err(err) if hard_links_unsupported(&err) => {
                    return self.create_in_place(&path, value)
                }
                Err(err) => return Err(StoreError::Io(err)),
            }
        }
        Err(StoreError::Io(io::Error::new(
            ErrorKind::NotFound,
            "temporary file removed before it could be linked",
        )))
    }

    fn get(&self, name: &str) -> Result<SecretVec, StoreError> {
        validate_name(name)?;
        self.read(name)
    }

    fn replace(&self, name: &str, old: &[u8], new: &[u8]) -> Result<(), StoreError> {
        validate_name(name)?;
        if new.len() > VALUE_BYTES_MAX {
            return Err(StoreError::TooLarge);
        }
        let path = self.dir.join(name);
        let _lock = self.lock_dir()?;
        if self.read(name)?.expose() != old {
            return Err(StoreError::Conflict);
        }
        for _ in 0..REPLACE_ATTEMPTS {
            let (temp, file) = self.create_temp(name)?;
            match write_and_sync(file, new).and_then(|()| fs::rename(&temp, &path)) {
                Ok(()) => return self.sync_dir(),
                // A server sharing the directory removed the temporary file while starting
                // up; start over (the key file is untouched).
                Err(err) if err.kind() == ErrorKind::NotFound => continue,
                Err(err) => {
                    let _ = fs::remove_file(&temp);
                    return Err(StoreError::Io(err));
                }
            }
        }
        Err(StoreError::Io(io::Error::new(
            ErrorKind::NotFound,
            "temporary file removed before it could be renamed",
        )))
    }

    fn replace_kind(&self) -> super::ReplaceKind {
        super::ReplaceKind::Atomic
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        validate_name(name)?;
        // Ordered with `replace`, which would otherwise rename a value back into place.
        let _lock = self.lock_dir()?;
        match fs::remove_file(self.dir.join(name)) {
            Ok(()) => self.sync_dir(),
            Err(err) if err.kind() == ErrorKind::NotFound => Err(StoreError::NotFound),
            // A sub-directory is not a key.
            Err(err) if err.raw_os_error() == Some(libc::EISDIR) => Err(StoreError::NotFound),
            Err(err) => Err(StoreError::Io(err)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            // Non-UTF-8 names, dot-files, temporary files, names with '.': never keys.
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !name.starts_with(prefix) || validate_name(&name).is_err() {
                continue;
            }
            let file_type = match entry.file_type() {
                Ok(file_type) => file_type,
                Err(err) if err.kind() == ErrorKind::NotFound => continue,
                Err(err) => return Err(StoreError::Io(err)),
            };
            // `get` follows symbolic links, so a link to a regular file is a key too.
            let regular = file_type.is_file()
                || (file_type.is_symlink()
                    && fs::metadata(entry.path()).is_ok_and(|meta| meta.is_file()));
            if regular {
                names.push(name);
            }
        }
        names.sort_unstable();
        Ok(names)
    }
}

/// Rejects names the file layout cannot represent: empty, longer than 255 bytes, or
/// containing '/', '\\', '.' or NUL.
fn validate_name(name: &str) -> Result<(), StoreError> {
    let invalid = name.is_empty()
        || name.len() > NAME_BYTES_MAX
        || name.bytes().any(|b| matches!(b, b'/' | b'\\' | b'.' | 0));
    if invalid {
        Err(StoreError::InvalidName)
    } else {
        Ok(())
    }
}

fn ensure_dir(dir: &Path, meta: &fs::Metadata) -> Result<(), StoreError> {
    if meta.is_dir() {
        Ok(())
    } else {
        Err(StoreError::Io(io::Error::new(
            ErrorKind::NotADirectory,
            format!("'{}' is not a directory", dir.display()),
        )))
    }
}

/// `open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600)`.
fn new_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

fn write_and_sync(mut file: File, value: &[u8]) -> io::Result<()> {
    file.write_all(value)?;
    file.sync_all()
}

/// Errors `link(2)` returns on file systems without hard links.
fn hard_links_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS)
    )
}

fn truncate_at_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Reads the whole file into a zeroizing buffer sized from `len_hint` (the file size), so that
/// secret bytes are not left behind in reallocated memory. Reads one byte beyond
/// [`VALUE_BYTES_MAX`] to detect a file that grew past the limit.
fn read_value(file: &mut File, len_hint: usize) -> Result<SecretVec, StoreError> {
    let limit = VALUE_BYTES_MAX + 1;
    // One spare byte so that the read reporting end-of-file needs no reallocation.
    let capacity = len_hint.saturating_add(1).min(limit);
    let mut buf = SecretVec::with_capacity(capacity);
    buf.as_mut_vec().resize(capacity, 0);
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            // The file grew since it was measured.
            if buf.len() >= limit {
                return Err(StoreError::TooLarge);
            }
            let new_capacity = buf.len().saturating_mul(2).clamp(64, limit);
            let mut bigger = SecretVec::with_capacity(new_capacity);
            bigger.as_mut_vec().extend_from_slice(buf.expose());
            bigger.as_mut_vec().resize(new_capacity, 0);
            buf = bigger; // the old buffer is zeroized on drop
        }
        match file.read(&mut buf.as_mut_vec()[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(err) => return Err(StoreError::Io(err)),
        }
    }
    buf.as_mut_vec().truncate(filled);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Arc, Barrier};

    /// The record text of a key created by upstream KES (crypto-formats.md §10.1).
    const UPSTREAM_RECORD: &[u8] = b"CiQKIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4fEAESJAogYGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn8QARoLCKWE2LsGEJWa7zoiQGEwNTA4MzdkODUwNzA1ODJjY2Y3Mzk0YjA5ODg4NDdjYzMxMmNiODgyNTliODk0ODk5ZjZmMjM5Y2YxNzkxYTU=";

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// The process umask, read without changing it (changing it would race other tests).
    fn umask() -> u32 {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("Umask:"))?;
                u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
            })
            .unwrap_or(0o022)
    }

    fn temp_files(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(TEMP_PREFIX))
            .collect()
    }

    #[test]
    fn create_get_delete_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("parent").join("keys");
        let store = FsStore::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o755 & !umask());
        assert_eq!(mode(&tmp.path().join("parent")), 0o755 & !umask());
        assert_eq!(store.path(), dir);
        assert_eq!(
            store.display_name(),
            format!("Filesystem: {}", dir.display())
        );

        store.create("my-key", b"first value").unwrap();
        let file = dir.join("my-key");
        assert_eq!(fs::read(&file).unwrap(), b"first value");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(store.get("my-key").unwrap().expose(), b"first value");

        let err = store.create("my-key", b"second value").unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists), "{err:?}");
        assert_eq!(fs::read(&file).unwrap(), b"first value");
        assert!(temp_files(&dir).is_empty());

        store.delete("my-key").unwrap();
        assert!(!file.exists());
        assert!(matches!(store.get("my-key"), Err(StoreError::NotFound)));
        assert!(matches!(store.delete("my-key"), Err(StoreError::NotFound)));
        assert!(matches!(store.get("missing"), Err(StoreError::NotFound)));

        // Empty values are values too.
        store.create("empty", b"").unwrap();
        assert!(store.get("empty").unwrap().is_empty());
    }

    #[test]
    fn reads_upstream_files() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FsStore::open(tmp.path()).unwrap();
        fs::write(tmp.path().join("minio-default-key"), UPSTREAM_RECORD).unwrap();
        assert_eq!(
            store.get("minio-default-key").unwrap().expose(),
            UPSTREAM_RECORD
        );
        assert_eq!(store.list("").unwrap(), ["minio-default-key"]);

        // And what we write is what upstream would have written.
        store.create("other-key", UPSTREAM_RECORD).unwrap();
        assert_eq!(
            fs::read(tmp.path().join("other-key")).unwrap(),
            UPSTREAM_RECORD
        );
    }

    #[test]
    fn list_filters_and_sorts() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let store = FsStore::open(dir).unwrap();
        for name in ["b-2", "a-1", "b-1", "c", "B-0", "b", "ba"] {
            store.create(name, name.as_bytes()).unwrap();
        }
        // Things in the directory that are not keys.
        fs::write(dir.join(".hidden"), b"x").unwrap();
        fs::write(dir.join(".kes-tmp-b-7-1-1"), b"x").unwrap();
        fs::write(dir.join("b.json"), b"x").unwrap();
        fs::create_dir(dir.join("b-dir")).unwrap();
        std::os::unix::fs::symlink(dir.join("does-not-exist"), dir.join("b-dangling")).unwrap();
        // A symbolic link to a regular file reads like a key, so it is listed.
        std::os::unix::fs::symlink(dir.join("c"), dir.join("b-link")).unwrap();

        assert_eq!(
            store.list("").unwrap(),
            ["B-0", "a-1", "b", "b-1", "b-2", "b-link", "ba", "c"]
        );
        assert_eq!(store.list("b-").unwrap(), ["b-1", "b-2", "b-link"]);
        assert_eq!(
            store.list("b").unwrap(),
            ["b", "b-1", "b-2", "b-link", "ba"]
        );
        assert!(store.list("d").unwrap().is_empty());
        assert!(store.list(".").unwrap().is_empty());

        // Sub-directories are not keys for get and delete either.
        assert!(matches!(store.get("b-dir"), Err(StoreError::NotFound)));
        assert!(matches!(store.delete("b-dir"), Err(StoreError::NotFound)));
        assert!(dir.join("b-dir").is_dir());
    }

    #[test]
    fn invalid_names() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FsStore::open(tmp.path()).unwrap();
        let too_long = "k".repeat(NAME_BYTES_MAX + 1);
        for name in ["", "a.b", ".hidden", "..", "a/b", "a\\b", "a\0b", &too_long] {
            let err = store.create(name, b"v").unwrap_err();
            assert!(matches!(err, StoreError::InvalidName), "{name:?}: {err:?}");
            assert!(matches!(store.get(name), Err(StoreError::InvalidName)));
            assert!(matches!(store.delete(name), Err(StoreError::InvalidName)));
        }
        assert!(fs::read_dir(tmp.path()).unwrap().next().is_none());

        // The longest valid name still fits, temporary file name included.
        let longest = "é".repeat(NAME_BYTES_MAX / 2) + "k";
        assert_eq!(longest.len(), NAME_BYTES_MAX);
        store.create(&longest, b"v").unwrap();
        assert_eq!(store.get(&longest).unwrap().expose(), b"v");
        assert_eq!(store.list("").unwrap(), [longest]);
    }

    #[test]
    fn concurrent_create_has_one_winner() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(FsStore::open(tmp.path()).unwrap());
        let barrier = Arc::new(Barrier::new(16));
        let handles: Vec<_> = (0..16u8)
            .map(|i| {
                let (store, barrier) = (store.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let value = vec![b'a' + i; 4096];
                    barrier.wait();
                    store.create("contended", &value).map(|()| value)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<&Vec<u8>> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1);
        let losers = results
            .iter()
            .filter(|r| matches!(r, Err(StoreError::AlreadyExists)))
            .count();
        assert_eq!(losers, 15);
        assert_eq!(&fs::read(tmp.path().join("contended")).unwrap(), winners[0]);
        assert_eq!(store.get("contended").unwrap().expose(), &winners[0][..]);
        assert!(temp_files(tmp.path()).is_empty());
        assert_eq!(store.list("").unwrap(), ["contended"]);
    }

    #[test]
    fn open_removes_stale_temp_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join(".kes-tmp-x-1-1"), b"half a val").unwrap();
        fs::write(dir.join("x"), b"value").unwrap();
        fs::write(dir.join(".other-dotfile"), b"kept").unwrap();
        let store = FsStore::open(dir).unwrap();
        assert!(!dir.join(".kes-tmp-x-1-1").exists());
        assert!(dir.join(".other-dotfile").exists());
        assert_eq!(store.list("").unwrap(), ["x"]);
        assert_eq!(store.get("x").unwrap().expose(), b"value");
    }

    #[test]
    fn size_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FsStore::open(tmp.path()).unwrap();
        fs::write(tmp.path().join("huge"), vec![b'x'; VALUE_BYTES_MAX + 1]).unwrap();
        assert!(matches!(store.get("huge"), Err(StoreError::TooLarge)));
        fs::write(tmp.path().join("max"), vec![b'y'; VALUE_BYTES_MAX]).unwrap();
        let value = store.get("max").unwrap();
        assert_eq!(value.len(), VALUE_BYTES_MAX);
        assert!(value.expose().iter().all(|&b| b == b'y'));

        let err = store
            .create("new", &vec![0; VALUE_BYTES_MAX + 1])
            .unwrap_err();
        assert!(matches!(err, StoreError::TooLarge), "{err:?}");
        assert!(!tmp.path().join("new").exists());
        assert!(temp_files(tmp.path()).is_empty());
    }

    #[test]
    fn read_value_handles_growth_and_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        fs::write(&path, vec![b'z'; 1000]).unwrap();
        // A stale (too small) size hint: the buffer must grow and keep every byte.
        let value = read_value(&mut File::open(&path).unwrap(), 10).unwrap();
        assert_eq!(value.expose(), &vec![b'z'; 1000][..]);
        // A file that grew past the limit after it was measured.
        fs::write(&path, vec![b'z'; VALUE_BYTES_MAX + 1]).unwrap();
        let err = read_value(&mut File::open(&path).unwrap(), 10).unwrap_err();
        assert!(matches!(err, StoreError::TooLarge), "{err:?}");
    }

    #[test]
    fn open_rejects_non_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("regular");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(FsStore::open(&file), Err(StoreError::Io(_))));
        assert!(FsStore::open(file.join("below")).is_err());
        assert!(FsStore::open("").is_err());
        assert_eq!(fs::read(&file).unwrap(), b"x");
    }

    #[test]
    fn status_probes_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let store = FsStore::open(&dir).unwrap();
        assert!(store.status().unwrap() < Duration::from_secs(5));
        fs::remove_dir(&dir).unwrap();
        assert!(matches!(store.status(), Err(StoreError::Unreachable(_))));
        let err = store.create("k", b"secret-value").unwrap_err();
        assert!(matches!(err, StoreError::Io(_)), "{err:?}");
        assert!(!err.to_string().contains("secret-value"));
    }

    #[test]
    fn get_does_not_block_on_fifo() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FsStore::open(tmp.path()).unwrap();
        let fifo = std::ffi::CString::new(
            tmp.path()
                .join("pipe")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        // SAFETY: `fifo` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(matches!(store.get("pipe"), Err(StoreError::NotFound)));
        assert!(store.list("").unwrap().is_empty());
    }

    #[test]
    fn replace_is_a_compare_and_set_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FsStore::open(tmp.path()).unwrap();
        assert_eq!(store.replace_kind(), super::super::ReplaceKind::Atomic);
        assert!(matches!(
            store.replace("k", b"a", b"b"),
            Err(StoreError::NotFound)
        ));
        assert!(!tmp.path().join("k").exists());

        // An upstream-written record is replaced in place, mode 0600, nothing else left.
        fs::write(tmp.path().join("k"), UPSTREAM_RECORD).unwrap();
        let err = store.replace("k", b"stale", b"new").unwrap_err();
        assert!(matches!(err, StoreError::Conflict), "{err:?}");
        assert_eq!(fs::read(tmp.path().join("k")).unwrap(), UPSTREAM_RECORD);
        let ring = b"kes:keyring:v1:AAAA";
        store.replace("k", UPSTREAM_RECORD, ring).unwrap();
        assert_eq!(fs::read(tmp.path().join("k")).unwrap(), ring);
        assert_eq!(store.get("k").unwrap().expose(), ring);
        assert_eq!(mode(&tmp.path().join("k")), 0o600);
        assert!(temp_files(tmp.path()).is_empty());
        assert_eq!(store.list("").unwrap(), ["k"]);
        // The old value is gone for good: replacing from it again is a conflict.
        let err = store.replace("k", UPSTREAM_RECORD, b"x").unwrap_err();
        assert!(matches!(err, StoreError::Conflict), "{err:?}");

        let err = store
            .replace("k", ring, &vec![0; VALUE_BYTES_MAX + 1])
            .unwrap_err();
        assert!(matches!(err, StoreError::TooLarge), "{err:?}");
        assert!(matches!(
            store.replace("a.b", b"", b""),
            Err(StoreError::InvalidName)
        ));
        // A sub-directory is not a key, and is not replaced by one.
        fs::create_dir(tmp.path().join("sub")).unwrap();
        assert!(matches!(
            store.replace("sub", b"", b""),
            Err(StoreError::NotFound)
        ));
        assert!(tmp.path().join("sub").is_dir());

        // A deleted key stays deleted.
        store.delete("k").unwrap();
        assert!(matches!(
            store.replace("k", ring, b"y"),
            Err(StoreError::NotFound)
        ));
        assert!(!tmp.path().join("k").exists());
        assert!(temp_files(tmp.path()).is_empty());
    }

    /// The value of the `n`th increment: its length varies, so a reader seeing half a file
    /// notices.
    fn counter_value(n: usize) -> Vec<u8> {
        format!("{n}:{}", "x".repeat(n % 1024 * 7)).into_bytes()
    }

    fn counter_of(value: &[u8]) -> usize {
        let text = std::str::from_utf8(value).expect("UTF-8");
        let (n, _) = text.split_once(':').unwrap_or_else(|| panic!("{text:?}"));
        let n: usize = n.parse().expect("a number");
        assert_eq!(value, &counter_value(n)[..], "a partial value");
        n
    }

    /// Two stores on one directory (as two servers: each `flock` is its own open file
    /// description), two threads each, increment one counter with read → replace, retrying
    /// on conflict: no increment is lost, and a reader never sees the key missing or half
    /// written.
    #[test]
    fn racing_replaces_lose_no_increment_and_readers_see_whole_values() {
        const WRITERS: usize = 4;
        const INCREMENTS: usize = 150;
        let tmp = tempfile::tempdir().unwrap();
        let stores = [
            Arc::new(FsStore::open(tmp.path()).unwrap()),
            Arc::new(FsStore::open(tmp.path()).unwrap()),
        ];
        stores[0].create("counter", &counter_value(0)).unwrap();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (store, done) = (stores[1].clone(), done.clone());
            std::thread::spawn(move || {
                let (mut reads, mut last) = (0usize, 0);
                while !done.load(Ordering::Relaxed) {
                    let value = store.get("counter").expect("the key during a replace");
                    let n = counter_of(value.expose());
                    assert!(n >= last, "went back from {last} to {n}");
                    (reads, last) = (reads + 1, n);
                }
                reads
            })
        };
        let writers: Vec<_> = (0..WRITERS)
            .map(|i| {
                let store = stores[i % 2].clone();
                std::thread::spawn(move || {
                    let mut conflicts = 0;
                    for _ in 0..INCREMENTS {
                        loop {
                            let old = store.get("counter").unwrap();
                            let new = counter_value(counter_of(old.expose()) + 1);
                            match store.replace("counter", old.expose(), &new) {
                                Ok(()) => break,
                                Err(StoreError::Conflict) => conflicts += 1,
                                Err(err) => panic!("{err}"),
                            }
                        }
                    }
                    conflicts
                })
            })
            .collect();
        let conflicts: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
        done.store(true, Ordering::Relaxed);
        let reads = reader.join().unwrap();
        let last = stores[0].get("counter").unwrap();
        assert_eq!(counter_of(last.expose()), WRITERS * INCREMENTS);
        assert!(reads > 0);
        // The writers did race (else the test proves nothing).
        assert!(conflicts > 0, "no conflicting replace");
        assert!(temp_files(tmp.path()).is_empty());
        assert_eq!(stores[1].list("").unwrap(), ["counter"]);
    }

    #[test]
    fn create_in_place_fallback() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FsStore::open(tmp.path()).unwrap();
        let path = tmp.path().join("k");
        store.create_in_place(&path, b"value").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"value");
        assert_eq!(mode(&path), 0o600);
        let err = store.create_in_place(&path, b"other").unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists), "{err:?}");
        assert_eq!(store.get("k").unwrap().expose(), b"value");
    }
}
