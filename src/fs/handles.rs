//! The one table of open handles. A handle is one of four things, decided
//! at open and looked up once per call: `read`, `flush`, `release` and
//! `fsync` dispatch on what it is instead of probing several tables.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::dir_snapshot::OpenDir;
use super::read::OpenFile;
use crate::writeback::{EntryId, StagedHandle};

/// What an open handle is.
#[derive(Clone)]
pub(crate) enum Handle {
    /// A file on the service, read through the block cache.
    RemoteReader(Arc<OpenFile>),
    /// A file opened for writing: its staging file.
    StagedWriter(Arc<WriteHandle>),
    /// A pending file (not uploaded yet) opened read-only.
    PendingReader(Arc<ReadHandle>),
    /// An open folder and the listing snapshot its readdirs serve.
    Directory(Arc<OpenDir>),
}

/// An open file handle with write access.
pub(crate) struct WriteHandle {
    pub(crate) ino: u64,
    pub(crate) entry: EntryId,
    pub(crate) append: bool,
    /// `None` once released.
    pub(crate) staged: Mutex<Option<StagedHandle>>,
}

/// A read-only handle on a pending file.
pub(crate) struct ReadHandle {
    pub(crate) entry: EntryId,
    pub(crate) file: std::fs::File,
}

/// Every open handle of the filesystem, by number.
pub(crate) struct HandleTable {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Handle>>,
}

impl HandleTable {
    pub(crate) fn new() -> HandleTable {
        HandleTable {
            // 0 is what the kernel sends when it has no handle.
            next: AtomicU64::new(1),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Registers an open handle; its number.
    pub(crate) fn insert(&self, handle: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.open.lock().insert(fh, handle);
        fh
    }

    pub(crate) fn get(&self, fh: u64) -> Option<Handle> {
        self.open.lock().get(&fh).cloned()
    }

    /// The write handle `fh`, if that is what it is.
    pub(crate) fn writer(&self, fh: u64) -> Option<Arc<WriteHandle>> {
        match self.get(fh)? {
            Handle::StagedWriter(handle) => Some(handle),
            _ => None,
        }
    }

    /// The folder handle `fh`, if that is what it is.
    pub(crate) fn directory(&self, fh: u64) -> Option<Arc<OpenDir>> {
        match self.get(fh)? {
            Handle::Directory(open) => Some(open),
            _ => None,
        }
    }

    pub(crate) fn remove(&self, fh: u64) -> Option<Handle> {
        self.open.lock().remove(&fh)
    }

    /// Takes every handle that `which` picks out of the table.
    fn take_all(&self, which: impl Fn(&Handle) -> bool) -> Vec<Handle> {
        let mut open = self.open.lock();
        let picked: Vec<u64> = open
            .iter()
            .filter(|(_, handle)| which(handle))
            .map(|(fh, _)| *fh)
            .collect();
        picked.iter().filter_map(|fh| open.remove(fh)).collect()
    }

    /// Closes every handle that reads a remote file (at unmount, for the
    /// handles the kernel never released): removals that waited for them
    /// can then be done before the queue is drained.
    pub(crate) fn close_remote_readers(&self) {
        drop(self.take_all(|handle| matches!(handle, Handle::RemoteReader(_))));
    }

    /// Takes every write handle out of the table (at unmount, for the
    /// handles the kernel never released).
    pub(crate) fn drain_writers(&self) -> Vec<Arc<WriteHandle>> {
        self.take_all(|handle| matches!(handle, Handle::StagedWriter(_)))
            .into_iter()
            .filter_map(|handle| match handle {
                Handle::StagedWriter(writer) => Some(writer),
                _ => None,
            })
            .collect()
    }
}
