//! Durable files, beneath both the state and the feature store: what identifies a backbone
//! ([`Fingerprint`]) and how far a data source was read ([`SourceRecord`]), atomic replacement
//! of a file ([`write_atomically`]) and the writer lock ([`StateLock`]).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// What identifies a backbone for a state: the model file's bytes and the tensor read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// sha256 of the ONNX file, hex.
    pub model_sha256: String,
    pub feature_tensor: String,
    pub feature_dim: usize,
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sha256 {}…, tensor '{}', {} features",
            &self.model_sha256[..12.min(self.model_sha256.len())],
            self.feature_tensor,
            self.feature_dim
        )
    }
}

/// How far a data source has been absorbed. Sources are read in a fixed order, so a later
/// `learn` on the same source resumes after `consumed` records: nothing is skipped or counted
/// twice, whether the earlier run finished or was killed after a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub id: String,
    /// Records read from the source (absorbed or skipped as undecodable).
    pub consumed: u64,
    /// Samples folded into the statistics.
    pub samples: u64,
}

/// A file being written: what [`write_atomically_to`] needs from it.
pub trait DurableWrite: Write {
    /// Flushes the bytes to stable storage (fsync).
    fn sync(&mut self) -> std::io::Result<()>;
}

impl DurableWrite for File {
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_all()
    }
}

/// Writes `bytes` to `path` so that a crash or an error leaves either the old or the new
/// complete file: temporary file in the same folder, fsync, rename, fsync of the folder.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically_to(path, bytes, Ok)
}

/// [`write_atomically`] with the temporary file wrapped by `wrap` (tests inject a full disk).
pub fn write_atomically_to<W: DurableWrite>(
    path: &Path,
    bytes: &[u8],
    wrap: impl FnOnce(File) -> std::io::Result<W>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let fail = |e: std::io::Error, tmp: &Path| {
        let _ = std::fs::remove_file(tmp);
        Error::Io {
            path: path.into(),
            error: std::io::Error::new(
                e.kind(),
                format!("could not save ({e}); the previous file, if any, is unchanged"),
            ),
        }
    };
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| fail(e, &tmp))?;
    let mut file = wrap(file).map_err(|e| fail(e, &tmp))?;
    file.write_all(bytes)
        .and_then(|_| file.sync())
        .map_err(|e| fail(e, &tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| fail(e, &tmp))?;
    // Make the rename itself durable. Not every platform can open a folder; that is not an error.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// An exclusive advisory lock that serialises writers of one state file, so that two
/// processes learning into the same state cannot lose each other's update. It locks
/// `<state>.lock` (never the state itself, which is replaced by rename) and is released when
/// dropped or when the process dies. The lock file is removed when the lock is released, so
/// no litter stays beside the state (a killed process leaves it; the next writer reuses it).
/// Readers need no lock: they always see a complete file.
#[derive(Debug)]
pub struct StateLock {
    file: File,
    path: PathBuf,
}

impl StateLock {
    pub fn lock_path(state: &Path) -> PathBuf {
        let mut name = state.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        state.with_file_name(name)
    }

    /// Takes the lock, waiting for another writer if `wait`, else failing at once.
    pub fn acquire(state: &Path, wait: bool) -> Result<Self> {
        let path = Self::lock_path(state);
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            if wait {
                file.lock().map_err(|e| Error::io(&path, e))?;
            } else {
                file.try_lock().map_err(|e| match e {
                    std::fs::TryLockError::WouldBlock => Error::Locked { path: state.into() },
                    std::fs::TryLockError::Error(e) => Error::io(&path, e),
                })?;
            }
            // The holder before us removes the file as it releases it: a lock taken on a file
            // that is no longer at `path` locks nothing, so open the path again.
            if still_at(&file, &path) {
                return Ok(StateLock { file, path });
            }
        }
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // Removed while still held, so that nobody can take a lock on it in between.
        if cfg!(unix) && still_at(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
        let _ = self.file.unlock();
    }
}

/// Whether the open `file` is the one `path` names now.
#[cfg(unix)]
fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Without inode numbers the lock file is never removed, so it is always the one at `path`.
#[cfg(not(unix))]
fn still_at(_file: &File, _path: &Path) -> bool {
    true
}

/// Lower-case hexadecimal of `bytes` (how digests are printed and stored in JSON).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of the sha256 checksum that ends state files and packs.
pub const CHECKSUM_LEN: usize = 32;

/// sha256 of `bytes`. Every digest of a whole buffer goes through this one function: sha2's
/// generic `digest` is compiled anew for each argument type and crate that calls it.
pub fn sha256(bytes: &[u8]) -> [u8; CHECKSUM_LEN] {
    Sha256::digest(bytes).into()
}

/// [`sha256`] in lower-case hexadecimal (model files, statistics digests).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&sha256(bytes))
}

/// Appends the sha256 of everything in `bytes` to it: how state files and packs end.
pub fn append_checksum(bytes: &mut Vec<u8>) {
    let digest = sha256(bytes);
    bytes.extend_from_slice(&digest);
}

/// `bytes` without the checksum that ends them, or None when they are too short for one or it
/// does not match (a damaged or truncated file).
pub fn strip_checksum(bytes: &[u8]) -> Option<&[u8]> {
    let (body, digest) = bytes.split_at(bytes.len().checked_sub(CHECKSUM_LEN)?);
    (sha256(body) == digest).then_some(body)
}
