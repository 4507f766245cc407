//! Staging files: the local bytes of every pending file, one file per journal
//! entry, under `<cache dir>/staging/`.
//!
//! The directory is locked (`flock`) for as long as a mount uses it, so two
//! mounts sharing a cache dir can never upload the same pending file twice.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use sha2::Digest;

use super::EntryId;
use crate::remote::HashKind;

const DATA_SUFFIX: &str = ".data";

pub struct StagingDir {
    dir: PathBuf,
    // Held open for the flock; released when the mount ends.
    _lock: File,
}

#[derive(Debug, thiserror::Error)]
pub enum StagingOpenError {
    #[error("cannot use staging dir {dir}: {source}")]
    Io { dir: PathBuf, source: io::Error },
    #[error("staging dir {0} is in use by another filehostfs mount")]
    Locked(PathBuf),
}

impl StagingDir {
    /// Creates `<cache_dir>/staging` (mode 0700) and locks it.
    pub fn open(cache_dir: &Path) -> Result<StagingDir, StagingOpenError> {
        let dir = cache_dir.join("staging");
        let io_err = |source| StagingOpenError::Io {
            dir: dir.clone(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join("lock"))
            .map_err(io_err)?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            return Err(if err.kind() == io::ErrorKind::WouldBlock {
                StagingOpenError::Locked(dir)
            } else {
                io_err(err)
            });
        }
        Ok(StagingDir { dir, _lock: lock })
    }

    pub fn journal_path(&self) -> PathBuf {
        self.dir.join("journal.db")
    }

    pub fn path(&self, id: EntryId) -> PathBuf {
        self.dir.join(format!("{}{DATA_SUFFIX}", id.0))
    }

    /// Creates the (empty) staging file of a new entry.
    pub fn create(&self, id: EntryId) -> io::Result<()> {
        OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(self.path(id))?;
        self.sync_dir()
    }

    pub fn open_rw(&self, id: EntryId) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(id))
    }

    pub fn open_read(&self, id: EntryId) -> io::Result<File> {
        File::open(self.path(id))
    }

    pub fn exists(&self, id: EntryId) -> bool {
        self.path(id).is_file()
    }

    pub fn len(&self, id: EntryId) -> io::Result<u64> {
        Ok(fs::metadata(self.path(id))?.len())
    }

    pub fn remove(&self, id: EntryId) -> io::Result<()> {
        match fs::remove_file(self.path(id)) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// Makes creations and removals of staging files durable.
    pub fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    /// Removes staging files that belong to no journal entry (left by a crash
    /// between removing a finished entry's row and its file) and returns how
    /// many there were.
    pub fn remove_orphans(&self, known: &HashSet<EntryId>) -> io::Result<usize> {
        let mut removed = 0;
        for dirent in fs::read_dir(&self.dir)? {
            let dirent = dirent?;
            let name = dirent.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(DATA_SUFFIX))
                .and_then(|n| n.parse::<i64>().ok())
            else {
                continue;
            };
            if !known.contains(&EntryId(id)) {
                fs::remove_file(dirent.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// The content hash of a staging file in the form the service reports
/// (lower-case hex). Reads the whole file: call from a blocking context.
pub fn content_hash(path: &Path, kind: HashKind) -> io::Result<String> {
    match kind {
        HashKind::Whirlpool => hash_file::<whirlpool::Whirlpool>(path),
        HashKind::Sha256 => hash_file::<sha2::Sha256>(path),
    }
}

fn hash_file<D: Digest>(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = D::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_mount_of_the_same_cache_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = StagingDir::open(dir.path()).unwrap();
        match StagingDir::open(dir.path()) {
            Err(StagingOpenError::Locked(_)) => {}
            other => panic!("expected Locked, got {:?}", other.err()),
        }
        drop(first);
        StagingDir::open(dir.path()).expect("lock is released with the first owner");
    }

    #[test]
    fn orphans_are_removed_and_known_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        let staging = StagingDir::open(dir.path()).unwrap();
        staging.create(EntryId(1)).unwrap();
        staging.create(EntryId(2)).unwrap();
        let known: HashSet<_> = [EntryId(2)].into_iter().collect();
        assert_eq!(staging.remove_orphans(&known).unwrap(), 1);
        assert!(!staging.exists(EntryId(1)));
        assert!(staging.exists(EntryId(2)));
        assert!(staging
            .journal_path()
            .parent()
            .unwrap()
            .join("lock")
            .exists());
    }

    #[test]
    fn hashes_match_known_digests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"abc").unwrap();
        assert_eq!(
            content_hash(&path, HashKind::Sha256).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // ISO/IEC 10118-3 test vector for "abc".
        assert_eq!(
            content_hash(&path, HashKind::Whirlpool).unwrap(),
            "4e2448a4c6f486bb16b6562c73b4020bf3043e3a731bce721ae1b303d97e6d4c\
             7181eebdb6c57e277d0e34957114cbd6c797fc9d95d8b582d225292076d4eef5"
        );
    }
}
