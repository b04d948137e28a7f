//! Which file a file source's position belongs to.
//!
//! A byte offset alone says nothing once the file at a path is replaced
//! (log rotation) or cut short (copytruncate): resuming at it in another file
//! skips that file's first lines. So a position travels with the
//! [`FileIdentity`] of the file it was read from (device, inode and a
//! fingerprint of the first bytes), is saved with it in the client's state,
//! and a source compares it with what it finds at the path before it
//! resumes.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How many of a file's first bytes its fingerprint covers at most.
pub const FINGERPRINT_BYTES: u64 = 1024;

/// One file, as a file source tells it apart from another at the same path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    /// The device the file is on.
    pub dev: u64,
    /// Its inode on that device.
    pub ino: u64,
    /// How many of its first bytes the fingerprint covers: all of them while
    /// the file is shorter than [`FINGERPRINT_BYTES`], so that a short file
    /// that grows still matches (the fingerprint is taken again as it grows).
    pub fingerprint_len: u64,
    /// CRC-32 of the first `fingerprint_len` bytes: tells a file apart from
    /// one that reuses its inode, and from itself cut short and written anew.
    pub fingerprint: u32,
}

/// How a file found at a path relates to a remembered one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sameness {
    /// The same file (it may have grown).
    Same,
    /// The same inode with other first bytes, or shorter than its
    /// fingerprint: truncated (and possibly written again).
    Truncated,
    /// Another file.
    Other,
}

impl FileIdentity {
    /// The identity of the open `file`.
    pub fn of(file: &File) -> io::Result<Self> {
        let meta = file.metadata()?;
        let (dev, ino) = dev_ino(&meta);
        let fingerprint_len = meta.len().min(FINGERPRINT_BYTES);
        let fingerprint = fingerprint(file, fingerprint_len)?.unwrap_or(0);
        Ok(Self {
            dev,
            ino,
            fingerprint_len,
            fingerprint,
        })
    }

    /// Whether `file` is this file, judged by its inode and first bytes.
    pub fn compare(&self, file: &File) -> io::Result<Sameness> {
        let meta = file.metadata()?;
        if dev_ino(&meta) != (self.dev, self.ino) {
            return Ok(Sameness::Other);
        }
        Ok(match fingerprint(file, self.fingerprint_len)? {
            Some(print) if print == self.fingerprint => Sameness::Same,
            _ => Sameness::Truncated,
        })
    }

    /// Whether `meta` is of a file with this device and inode.
    pub fn same_inode(&self, meta: &std::fs::Metadata) -> bool {
        dev_ino(meta) == (self.dev, self.ino)
    }

    /// Takes the fingerprint again while it covers less than
    /// [`FINGERPRINT_BYTES`] and the file has grown; `true` if it changed.
    pub fn refresh(&mut self, file: &File) -> io::Result<bool> {
        if self.fingerprint_len >= FINGERPRINT_BYTES {
            return Ok(false);
        }
        let len = file.metadata()?.len().min(FINGERPRINT_BYTES);
        if len <= self.fingerprint_len {
            return Ok(false);
        }
        match fingerprint(file, len)? {
            Some(print) => {
                self.fingerprint_len = len;
                self.fingerprint = print;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Looks for this file in `dir` (where a rotated file usually goes:
    /// `x.1`, `x-20261124`), by inode and fingerprint.
    pub fn find_in(&self, dir: &Path) -> Option<(PathBuf, File)> {
        let entries = std::fs::read_dir(dir).ok()?;
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() || !self.same_inode(&meta) {
                continue;
            }
            let path = entry.path();
            let Ok(file) = File::open(&path) else {
                continue;
            };
            if matches!(self.compare(&file), Ok(Sameness::Same)) {
                return Some((path, file));
            }
        }
        None
    }
}

/// CRC-32 of the first `len` bytes of `file`, `None` if it is shorter.
/// Reads with `pread`, so a reader's position in the file is untouched.
fn fingerprint(file: &File, len: u64) -> io::Result<Option<u32>> {
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
    let mut filled = 0;
    while filled < buf.len() {
        let n = read_at(file, &mut buf[filled..], filled as u64)?;
        if n == 0 {
            return Ok(None);
        }
        filled += n;
    }
    Ok(Some(crc32fast::hash(&buf)))
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    file.read_at(buf, offset)
}

#[cfg(not(unix))]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::windows::fs::FileExt;
    file.seek_read(buf, offset)
}

#[cfg(unix)]
fn dev_ino(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn dev_ino(_meta: &std::fs::Metadata) -> (u64, u64) {
    // No inodes: the fingerprint alone tells files apart.
    (0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_short_file_that_grows_stays_the_same_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("in.log");
        std::fs::write(&path, "one\n").expect("write");
        let file = File::open(&path).expect("open");
        let mut id = FileIdentity::of(&file).expect("identity");
        assert_eq!(id.fingerprint_len, 4);
        let mut append = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("append");
        append.write_all("x".repeat(2000).as_bytes()).expect("grow");
        assert_eq!(id.compare(&file).expect("compare"), Sameness::Same);
        assert!(id.refresh(&file).expect("refresh"));
        assert_eq!(id.fingerprint_len, FINGERPRINT_BYTES);
        assert_eq!(id.compare(&file).expect("compare"), Sameness::Same);
    }

    #[test]
    fn truncation_rotation_and_a_reused_inode_are_told_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("in.log");
        std::fs::write(&path, "first line\nsecond line\n").expect("write");
        let id = FileIdentity::of(&File::open(&path).expect("open")).expect("identity");

        // copytruncate, then new lines: same inode, other first bytes.
        std::fs::write(&path, "other line\n").expect("truncate");
        let file = File::open(&path).expect("open");
        assert_eq!(id.compare(&file).expect("compare"), Sameness::Truncated);
        std::fs::write(&path, "").expect("truncate");
        let file = File::open(&path).expect("open");
        assert_eq!(id.compare(&file).expect("compare"), Sameness::Truncated);

        // Rotation: renamed away, a new file at the path.
        std::fs::write(&path, "first line\nsecond line\n").expect("write");
        let id = FileIdentity::of(&File::open(&path).expect("open")).expect("identity");
        std::fs::rename(&path, dir.path().join("in.log.1")).expect("rotate");
        std::fs::write(&path, "first line\nsecond line\n").expect("new file");
        let file = File::open(&path).expect("open");
        assert_eq!(id.compare(&file).expect("compare"), Sameness::Other);
        let (found, _) = id.find_in(dir.path()).expect("the rotated file is found");
        assert_eq!(found, dir.path().join("in.log.1"));
    }
}
