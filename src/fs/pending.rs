//! The write path's state: which inode shows which pending file, and
//! where the write-back queue keeps its staging files.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use crate::remote::Remote;
use crate::writeback::{EntryId, Recovery, WriteBack, WriteBackError, WriteBackOptions};

/// Write-path settings of a mount.
#[derive(Clone, Debug)]
pub struct WriteConfig {
    /// The mount's cache dir; staging files go to `<dir>/staging`. Without
    /// one, a per-remote dir under the user's cache dir is used, since
    /// pending uploads must survive the process.
    pub cache_dir: Option<PathBuf>,
    /// The remote's name in the config file; names the journal's owner.
    pub remote_name: Option<String>,
    /// What this mount is (remote path and mount point). Without a cache
    /// dir, each distinct mount gets its own staging dir, so several mounts
    /// of one remote can run at once; the same mount finds its pending
    /// uploads again.
    pub scope: Option<String>,
    /// Upload this long after the last close (`--write-back`).
    pub delay: Duration,
    /// Longest wait for pending uploads at unmount (`--write-back-wait`).
    pub unmount_wait: Duration,
}

impl Default for WriteConfig {
    fn default() -> Self {
        WriteConfig {
            cache_dir: None,
            remote_name: None,
            scope: None,
            delay: Duration::from_secs(5),
            unmount_wait: Duration::from_secs(60),
        }
    }
}

/// The write path's part of the filesystem state.
pub(crate) struct WriteState {
    pub queue: WriteBack,
    pub unmount_wait: Duration,
    /// The staging dir is ours (no `--cache-dir`): removed when left empty.
    pub(crate) default_dir: bool,
    pub(crate) links: Mutex<Links>,
    /// Serializes the opens for writing of each inode, so two opens never
    /// both copy one remote file into staging (other files are not held up).
    pub(crate) opening: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
}

/// Which inode shows which pending file.
#[derive(Default)]
pub(crate) struct Links {
    pub(crate) by_ino: HashMap<u64, EntryId>,
    pub(crate) by_entry: HashMap<EntryId, u64>,
}

impl Links {
    pub(crate) fn insert(&mut self, ino: u64, entry: EntryId) {
        if let Some(old) = self.by_ino.insert(ino, entry) {
            self.by_entry.remove(&old);
        }
        self.by_entry.insert(entry, ino);
    }

    pub(crate) fn remove_ino(&mut self, ino: u64) -> Option<EntryId> {
        let entry = self.by_ino.remove(&ino)?;
        self.by_entry.remove(&entry);
        Some(entry)
    }

    pub(crate) fn remove_entry(&mut self, entry: EntryId) -> Option<u64> {
        let ino = self.by_entry.remove(&entry)?;
        self.by_ino.remove(&ino);
        Some(ino)
    }
}

impl WriteState {
    /// Opens the write-back journal of the remote (resuming what a previous
    /// mount left) and starts its upload worker on the current runtime.
    pub fn open(
        config: &WriteConfig,
        remote: Arc<dyn Remote>,
    ) -> Result<(WriteState, Recovery), WriteBackError> {
        let identity = format!(
            "{}:{}",
            remote.service(),
            config.remote_name.as_deref().unwrap_or("unnamed")
        );
        let dir = config
            .cache_dir
            .clone()
            .unwrap_or_else(|| default_write_dir(&identity, config.scope.as_deref()));
        let mut options = WriteBackOptions::new(identity);
        options.delay = config.delay;
        let (queue, recovery) = WriteBack::open(&dir, remote, options)?;
        queue.start();
        Ok((
            WriteState {
                queue,
                unmount_wait: config.unmount_wait,
                default_dir: config.cache_dir.is_none(),
                links: Mutex::new(Links::default()),
                opening: Mutex::new(HashMap::new()),
            },
            recovery,
        ))
    }

    pub(crate) fn entry_of(&self, ino: u64) -> Option<EntryId> {
        self.links.lock().by_ino.get(&ino).copied()
    }

    /// Size and mtime of a local node, from its pending file.
    pub fn local_attr(&self, ino: u64) -> Option<(u64, SystemTime)> {
        let entry = self.entry_of(ino)?;
        let pending = self.queue.attr(entry)?;
        Some((pending.size, pending.mtime))
    }
}

/// `$XDG_CACHE_HOME/filehostfs/writeback/<service>-<remote>-<scope hash>`:
/// where pending uploads live when the mount has no `--cache-dir`.
fn default_write_dir(identity: &str, scope: Option<&str>) -> PathBuf {
    let safe: String = identity
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = match scope {
        Some(scope) => {
            let digest = <sha2::Sha256 as sha2::Digest>::digest(scope.as_bytes());
            format!("{safe}-{}", &hex::encode(digest)[..12])
        }
        None => safe,
    };
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("filehostfs")
        .join("writeback")
        .join(name)
}

impl WriteState {
    pub(crate) fn entry_of_entry(&self, entry: EntryId) -> Option<u64> {
        self.links.lock().by_entry.get(&entry).copied()
    }
}
