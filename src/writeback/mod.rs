//! Write-back: staged files, their journal, and the upload queue.
//!
//! Whatever is written through the mount lands in a *staging file* under
//! `<cache dir>/staging/` (never in memory). Each staged file is one *entry*
//! of an SQLite journal next to the staging files; the entry knows where the
//! file must end up (parent folder id + local name), which remote files it
//! replaces (its *base*, and files a rename replaced), its size and mtime.
//!
//! # Life of an entry
//!
//! ```text
//!   create / open for write ──► Open ──(last release)──► Queued ──(delay)──► upload
//!                                ▲                          │                  │
//!                                └──── open for write ──────┘                  ▼
//!   Uploaded: rename/move it to the current target if that changed, remove
//!   the obsolete remote files (base, replaced files, stale uploads), then
//!   delete the entry and its staging file ("finalize").
//! ```
//!
//! Every `close(2)` (FUSE flush, [`StagedHandle::flush`]) fsyncs the staging
//! file and journals what was written as a new *generation* before it
//! returns, so a file is safe on disk once `close` returned. `release` of
//! the last writer then commits the entry as `Queued` (fsync'd by SQLite),
//! with a not-before time of now + the write-back delay, so an editor that
//! saves twice uploads once.
//! One tokio task (the queue worker) uploads due entries in entry order,
//! streaming from the staging file.
//!
//! # Crash recovery: why nothing is lost or duplicated
//!
//! The worker's remote steps are each bracketed by journal commits:
//!
//! 1. commit `progress = uploading(generation, target, size, start time)`;
//! 2. upload; 3. commit `progress = uploaded(remote id, generation, target)`;
//! 4. if the entry was renamed meanwhile, rename/move the upload and commit
//!    its new id and place; 5. remove each obsolete remote file, committing
//!    its removal from the list one by one (a "not found" counts as removed);
//! 6. delete the entry row, then its staging file.
//!
//! A crash anywhere leaves a journal that names the next step:
//! - before 1 completes: the entry is still queued; it is uploaded again.
//! - between 1 and 3 (the service may or may not have the file): on the next
//!   attempt the worker lists the target folder and looks for a file with
//!   the upload's name and size that no entry knows about, whose checksum
//!   equals the staging file's (Whirlpool/SHA-256 as the service reports;
//!   services without checksums: uploaded no earlier than the recorded start
//!   time minus a slack). If found it is adopted as the upload (no duplicate);
//!   otherwise the upload is done again. The same check runs after an upload
//!   that failed with a retryable error, since the service may have stored
//!   the file before the connection broke.
//! - between 3 and 5: the upload is recorded, so it is never repeated; the
//!   move and the removals are simply done (again).
//! - between 5 and 6: the entry is finalized again; a staging file without an
//!   entry is removed at start-up.
//!
//! Because the new content is uploaded before any obsolete file is removed,
//! the name is never missing on the service (on services with duplicate
//! names both versions are briefly listed; the mount hides the old one).
//!
//! Content that changes while an upload is in flight bumps the entry's
//! `generation` at release; an upload of an older generation becomes an
//! obsolete file itself and the new content is uploaded, so no edit is ever
//! lost to a concurrent upload.
//!
//! Entries that were still open when the process died are queued on
//! recovery with whatever reached the staging file (content that was never
//! released carries no durability promise, but is kept rather than dropped).
//!
//! # Unchanged content
//!
//! A copy of a remote file whose content ends up identical to that file
//! (same size and checksum, or same bytes where reading is free) is not
//! uploaded: the upload step records the remote file itself as the upload,
//! so it keeps its id and link (see `unchanged`).
//!
//! # Failures
//!
//! The Remote layer retries transient failures itself. When an upload still
//! fails, the entry stays queued with its reason logged and in the journal,
//! and is tried again with exponential backoff (`retry_base`..`retry_max`).
//! Refusals that will not go away by retrying (quota exceeded, file too
//! large, impossible name) keep the staged file and are retried after
//! `permanent_retry`; they surface to `fsync` as ENOSPC / EFBIG / EINVAL.
//! Nothing is ever dropped.
//!
//! # Empty files
//!
//! A service without `Capabilities::empty_files` (1fichier) cannot store a
//! zero-byte file. Such a file becomes a *placeholder*: a journaled entry in
//! state `Held` with an empty staging file, listed and stat'ed by the mount
//! (also after a remount with the same cache dir) and uploaded as soon as it
//! gets content. If the empty file replaced a remote file (`: > file`), that
//! remote file is removed, since its old content no longer exists locally.
//! `fsync` of a placeholder succeeds: it is durable in the journal, which is
//! as durable as an empty file can be on such a service.

mod journal;
mod queue;
mod recovery;
mod staging;
mod unchanged;
mod view;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use journal::{now_ms, EntryRecord, Journal, NewEntry, Progress};
pub use journal::{EntryState, ObsoleteReason};
use staging::{StagingDir, StagingOpenError};
pub use view::{FinishedUpload, QueuedUpload, UploadStage};

use crate::remote::{FileEntry, FileId, FolderId, Remote, RemoteError, RemoteResult};

/// Identifies one pending file for as long as it is pending. Ids grow with
/// creation time and give the upload order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId(pub i64);

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Tunables of the write-back queue.
#[derive(Clone, Debug)]
pub struct WriteBackOptions {
    /// Names the remote this journal belongs to (e.g. `1fichier:work`); a
    /// journal written for another remote is refused, so a cache dir reused
    /// for another account cannot upload files there.
    pub remote_identity: String,
    /// How long after the last close the upload starts (`--write-back`).
    pub delay: Duration,
    /// First wait after a failed attempt; doubles up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Wait after a refusal that retrying soon would not cure (quota, size, name).
    pub permanent_retry: Duration,
}

impl WriteBackOptions {
    pub fn new(remote_identity: impl Into<String>) -> Self {
        WriteBackOptions {
            remote_identity: remote_identity.into(),
            delay: Duration::from_secs(5),
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
            permanent_retry: Duration::from_secs(900),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriteBackError {
    #[error("write-back journal: {0}")]
    Journal(#[from] rusqlite::Error),
    #[error("staging file: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Staging(#[from] StagingOpenError),
    #[error("the write-back journal in {dir} belongs to remote {found:?}, not {expected:?}; use another --cache-dir")]
    ForeignJournal {
        dir: PathBuf,
        found: String,
        expected: String,
    },
    #[error("no pending file {0}")]
    UnknownEntry(EntryId),
    #[error("upload failed: {0}")]
    Remote(#[from] RemoteError),
}

/// A pending file as the mount shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingFile {
    pub id: EntryId,
    pub parent: FolderId,
    pub name: String,
    pub size: u64,
    pub mtime: SystemTime,
    pub state: EntryState,
    /// Why the last attempt failed, while it has not succeeded since.
    pub last_error: Option<String>,
}

impl PendingFile {
    fn from_record(record: &EntryRecord) -> Self {
        PendingFile {
            id: record.id,
            parent: record.parent.clone(),
            name: record.name.clone(),
            size: record.size,
            mtime: record.mtime,
            state: record.state,
            last_error: record.last_error.clone(),
        }
    }
}

/// What the journal held when it was opened.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Pending uploads (and cleanups) found and queued again.
    pub resumed: Vec<PendingFile>,
    /// Empty-file placeholders kept from before.
    pub placeholders: usize,
    /// Entries dropped without touching the remote: their staging file had
    /// vanished (deleted by hand), or they were copies of remote files still
    /// open for writing when the process stopped (never released).
    pub lost: Vec<PendingFile>,
    /// Staging files that belonged to no entry, removed.
    pub orphans_removed: usize,
}

/// Result of waiting for the queue at unmount.
#[derive(Debug, Default)]
pub struct DrainReport {
    /// Entries still journaled: uploaded by the next mount of the same cache dir.
    pub left: Vec<PendingFile>,
}

/// What a rename of a pending file replaces at its new place.
#[derive(Clone, Debug)]
pub enum Replaced {
    Nothing,
    /// A remote file: removed once the renamed file's content is uploaded.
    Remote(FileId),
    /// Another pending file: cancelled, and whatever it would have replaced
    /// is replaced by the renamed file instead.
    Pending(EntryId),
}

/// Something the mount's caches need to know. (Folder changes need no
/// event: the mount updates its inode table itself for each change it
/// makes, and a listing it cached is never applied again, only refetched.)
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum WriteEvent {
    /// The entry's upload is recorded and about to be finalized (delivered
    /// again after a crash before the entry is forgotten): `mtime` is the
    /// pending file's, which the service does not keep.
    Finalizing {
        entry: EntryId,
        file: FileEntry,
        mtime: SystemTime,
    },
    /// The entry is done: its content is the remote file `file` in `parent`.
    Finalized {
        entry: EntryId,
        parent: FolderId,
        file: FileEntry,
    },
}

pub type Listener = Arc<dyn Fn(&WriteEvent) + Send + Sync>;

/// The write-back queue of one mount. Cheap to clone.
#[derive(Clone)]
pub struct WriteBack {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    remote: Arc<dyn Remote>,
    options: WriteBackOptions,
    staging: StagingDir,
    state: Mutex<State>,
    /// Wakes the worker when an entry becomes due earlier than it planned.
    wake: Notify,
    /// Bumped after every step of the worker; fsync and drain wait on it.
    progress_tx: watch::Sender<u64>,
    listener: RwLock<Option<Listener>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    /// Remote files that open handles of the mount read, and how many:
    /// the queue removes none of them before the last is closed.
    reading: Mutex<HashMap<FileId, usize>>,
}

struct State {
    journal: Journal,
    rows: BTreeMap<EntryId, EntryRecord>,
    /// Open write handles per entry.
    writers: HashMap<EntryId, usize>,
    /// Written since the last release/fsync (not yet a new generation).
    dirty: HashSet<EntryId>,
    /// Copies of a remote file opened for writing and not modified (yet):
    /// released unchanged, they are dropped instead of uploaded again.
    clean_copies: HashSet<EntryId>,
    /// fsync callers waiting per entry: uploaded now, whatever the delay.
    urgent: HashMap<EntryId, usize>,
    failures: HashMap<EntryId, Failure>,
    failure_seq: u64,
    /// What the service answered for the latest upload of an entry.
    uploaded_files: HashMap<EntryId, FileEntry>,
    /// Set while unmounting: the write-back delay no longer applies, and
    /// entries that failed after this sequence number are not waited for.
    draining_since: Option<u64>,
    /// The latest finished uploads, newest last, for watchers of the queue.
    finished: std::collections::VecDeque<FinishedUpload>,
    /// Bytes sent so far by each upload running now.
    sending: HashMap<EntryId, Arc<std::sync::atomic::AtomicU64>>,
    /// Attempts the latest upload of an entry took, until it is finalized.
    succeeded_after: HashMap<EntryId, u32>,
    /// The remote file each copy opened for writing started from, and
    /// where it was then: content found identical to it keeps it instead
    /// of being uploaded. (Not journaled: after a restart such an entry
    /// is uploaded, as before.)
    bases: HashMap<EntryId, BaseFile>,
}

/// A remote file opened for writing, as it was listed at `parent/name`.
#[derive(Clone, Debug)]
struct BaseFile {
    parent: FolderId,
    name: String,
    file: FileEntry,
}

#[derive(Clone, Debug)]
struct Failure {
    /// The content generation whose upload failed (None: a cleanup step).
    generation: Option<u64>,
    error: RemoteError,
    seq: u64,
}

impl WriteBack {
    /// Opens the staging dir and journal under `cache_dir`, recovering
    /// whatever a previous mount left. Call [`WriteBack::start`] inside a
    /// tokio runtime to begin uploading.
    pub fn open(
        cache_dir: &Path,
        remote: Arc<dyn Remote>,
        options: WriteBackOptions,
    ) -> Result<(WriteBack, Recovery), WriteBackError> {
        let staging = StagingDir::open(cache_dir)?;
        let journal = Journal::open(&staging.journal_path())?;
        match journal.meta("remote")? {
            None => journal.set_meta("remote", &options.remote_identity)?,
            Some(found) if found != options.remote_identity => {
                return Err(WriteBackError::ForeignJournal {
                    dir: cache_dir.to_path_buf(),
                    found,
                    expected: options.remote_identity.clone(),
                })
            }
            Some(_) => {}
        }
        let (journal, rows, recovery) = recovery::recover(journal, &staging)?;
        let (progress_tx, _) = watch::channel(0);
        let inner = Inner {
            remote,
            options,
            staging,
            state: Mutex::new(State {
                journal,
                rows,
                writers: HashMap::new(),
                dirty: HashSet::new(),
                clean_copies: HashSet::new(),
                urgent: HashMap::new(),
                failures: HashMap::new(),
                failure_seq: 0,
                uploaded_files: HashMap::new(),
                draining_since: None,
                finished: std::collections::VecDeque::new(),
                sending: HashMap::new(),
                succeeded_after: HashMap::new(),
                bases: HashMap::new(),
            }),
            wake: Notify::new(),
            progress_tx,
            listener: RwLock::new(None),
            worker: Mutex::new(None),
            reading: Mutex::new(HashMap::new()),
        };
        Ok((
            WriteBack {
                inner: Arc::new(inner),
            },
            recovery,
        ))
    }

    /// Starts the upload worker on the current tokio runtime (idempotent).
    pub fn start(&self) {
        let mut worker = self.inner.worker.lock();
        if worker.is_none() {
            *worker = Some(tokio::spawn(queue::run_worker(self.inner.clone())));
        }
    }

    /// Registers the callback told about finished entries.
    /// `Finalized` is delivered while the queue's lock is held (so the mount
    /// can swap its node over atomically): the callback must not call back
    /// into the queue.
    pub fn set_listener(&self, listener: Listener) {
        *self.inner.listener.write() = Some(listener);
    }

    /// A new, empty file at `parent/name`, open for writing. `replaces` is a
    /// remote file of that name it supersedes (removed after the upload).
    pub fn create(
        &self,
        parent: &FolderId,
        name: &str,
        replaces: Option<FileId>,
    ) -> Result<StagedHandle, WriteBackError> {
        let obsolete = replaces
            .map(|id| vec![(id, ObsoleteReason::Base)])
            .unwrap_or_default();
        self.inner.new_entry(parent, name, obsolete, true)
    }

    /// Opens the remote file `base` (at `parent/name`) for writing. With
    /// `truncate` the staged file starts empty; otherwise the caller must
    /// fill it with the current bytes ([`StagedHandle::fill`]) before
    /// letting anyone write, and [`StagedHandle::discard`] it if that fails.
    /// Whatever is written, content that ends up identical to `base` is
    /// not uploaded: `base` stays, with its id and link.
    pub fn open_remote(
        &self,
        parent: &FolderId,
        name: &str,
        base: &FileEntry,
        truncate: bool,
    ) -> Result<StagedHandle, WriteBackError> {
        let obsolete = vec![(base.id.clone(), ObsoleteReason::Base)];
        let handle = self.inner.new_entry(parent, name, obsolete, truncate)?;
        let mut state = self.inner.state.lock();
        if !truncate {
            state.clean_copies.insert(handle.id);
        }
        let place = BaseFile {
            parent: parent.clone(),
            name: name.to_string(),
            file: base.clone(),
        };
        state.bases.insert(handle.id, place);
        drop(state);
        Ok(handle)
    }

    /// Whether `id` is a copy of a remote file opened for writing and not
    /// changed: released so, it is dropped and the remote file stays.
    pub fn is_clean_copy(&self, id: EntryId) -> bool {
        let state = self.inner.state.lock();
        state.clean_copies.contains(&id)
            && state.rows.get(&id).is_some_and(|row| row.generation == 0)
    }

    /// Opens a pending file for writing again.
    pub fn open_pending(
        &self,
        id: EntryId,
        truncate: bool,
    ) -> Result<StagedHandle, WriteBackError> {
        let file = match self.inner.staging.open_rw(id) {
            Ok(file) => file,
            // Finalized since the caller looked it up: its staging file goes
            // right after the entry.
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(WriteBackError::UnknownEntry(id))
            }
            Err(error) => return Err(error.into()),
        };
        {
            let mut guard = self.inner.state.lock();
            let state = &mut *guard;
            let Some(row) = state.rows.get(&id) else {
                return Err(WriteBackError::UnknownEntry(id));
            };
            if row.state == EntryState::Cancelled {
                return Err(WriteBackError::UnknownEntry(id));
            }
            let mut updated = row.clone();
            updated.state = EntryState::Open;
            state.journal.save(&updated)?;
            state.rows.insert(id, updated);
            *state.writers.entry(id).or_default() += 1;
        }
        let handle = StagedHandle {
            inner: self.inner.clone(),
            id,
            file,
            released: false,
        };
        if truncate {
            handle.set_len(0)?;
        }
        Ok(handle)
    }

    /// A read-only view of a pending file's bytes (stays readable even if
    /// the entry finishes and its staging file is removed meanwhile).
    pub fn open_read(&self, id: EntryId) -> Result<File, WriteBackError> {
        if !self.inner.state.lock().rows.contains_key(&id) {
            return Err(WriteBackError::UnknownEntry(id));
        }
        Ok(self.inner.staging.open_read(id)?)
    }

    /// Current attributes of a pending file (None once finalized or unlinked).
    pub fn attr(&self, id: EntryId) -> Option<PendingFile> {
        let state = self.inner.state.lock();
        state
            .rows
            .get(&id)
            .filter(|row| row.is_live())
            .map(PendingFile::from_record)
    }

    /// The pending files that live in `parent`, in entry order.
    pub fn pending_in(&self, parent: &FolderId) -> Vec<PendingFile> {
        let state = self.inner.state.lock();
        state
            .rows
            .values()
            .filter(|row| row.is_live() && &row.parent == parent)
            .map(PendingFile::from_record)
            .collect()
    }

    /// The pending file called `name` in `parent`, if any.
    pub fn find(&self, parent: &FolderId, name: &str) -> Option<PendingFile> {
        let state = self.inner.state.lock();
        state
            .rows
            .values()
            .rev()
            .find(|row| row.is_live() && &row.parent == parent && row.name == name)
            .map(PendingFile::from_record)
    }

    /// Every pending file (including placeholders), in entry order.
    pub fn pending(&self) -> Vec<PendingFile> {
        let state = self.inner.state.lock();
        state
            .rows
            .values()
            .filter(|row| row.is_live())
            .map(PendingFile::from_record)
            .collect()
    }

    /// Remote files that a listing must not show: versions being replaced,
    /// and uploads not yet finalized (the pending entry stands for them).
    pub fn hidden_remote_ids(&self) -> HashSet<FileId> {
        let state = self.inner.state.lock();
        let mut hidden = HashSet::new();
        for row in state.rows.values() {
            hidden.extend(row.obsolete.iter().map(|(id, _)| id.clone()));
            hidden.extend(row.uploaded_id().cloned());
        }
        hidden
    }

    /// Names in `parent` that an upload in flight is writing to. The
    /// service may list such a file (partly received, or stored but not yet
    /// answered) before its id is known here; the pending entry stands for
    /// it, so a listing must not show it as a separate file (a second inode
    /// under a name the pending file may already have been renamed from).
    pub fn names_uploading_in(&self, parent: &FolderId) -> HashSet<String> {
        let state = self.inner.state.lock();
        state
            .rows
            .values()
            .filter_map(|row| match &row.progress {
                Progress::Uploading {
                    parent: into, name, ..
                } if into == parent => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    /// Moves a pending file to `new_parent/new_name`; an upload in flight
    /// ends up there too.
    pub fn rename(
        &self,
        id: EntryId,
        new_parent: &FolderId,
        new_name: &str,
        replaced: Replaced,
    ) -> Result<(), WriteBackError> {
        let mut guard = self.inner.state.lock();
        let state = &mut *guard;
        let Some(row) = state.rows.get(&id).filter(|r| r.is_live()) else {
            return Err(WriteBackError::UnknownEntry(id));
        };
        let mut updated = row.clone();
        updated.parent = new_parent.clone();
        updated.name = new_name.to_string();
        let mut saves = Vec::new();
        let mut deletes = Vec::new();
        match replaced {
            Replaced::Nothing => {}
            Replaced::Remote(file) => updated.mark_obsolete(file, ObsoleteReason::Replaced),
            Replaced::Pending(other) if other == id => {}
            Replaced::Pending(other) => {
                if let Some(other_row) = state.rows.get(&other) {
                    let mut other_row = other_row.clone();
                    // The renamed file takes over what the replaced one would
                    // have removed; the replaced entry only has to clean up
                    // its own upload, if it made one.
                    for (file, _) in other_row.obsolete.drain(..) {
                        updated.mark_obsolete(file, ObsoleteReason::Replaced);
                    }
                    let idle = other_row.progress == Progress::Idle;
                    let writers = state.writers.get(&other).copied().unwrap_or(0);
                    if idle && writers == 0 {
                        deletes.push(other);
                    } else {
                        other_row.state = EntryState::Cancelled;
                        saves.push(other_row);
                    }
                }
            }
        }
        saves.push(updated);
        state.journal.apply(&saves, &deletes)?;
        // A renamed copy must be uploaded at its new place even if unchanged.
        state.clean_copies.remove(&id);
        for row in saves {
            state.rows.insert(row.id, row);
        }
        for gone in &deletes {
            state.forget(*gone);
            if let Err(err) = self.inner.staging.remove(*gone) {
                tracing::warn!(entry = %gone, "could not remove staging file: {err}");
            }
        }
        drop(guard);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Unlinks a pending file: its upload is cancelled, and whatever it had
    /// replaced or already uploaded is removed from the service.
    pub fn unlink(&self, id: EntryId) -> Result<(), WriteBackError> {
        let mut guard = self.inner.state.lock();
        let state = &mut *guard;
        let Some(row) = state.rows.get(&id).filter(|r| r.is_live()) else {
            return Err(WriteBackError::UnknownEntry(id));
        };
        let writers = state.writers.get(&id).copied().unwrap_or(0);
        if row.progress == Progress::Idle && row.obsolete.is_empty() && writers == 0 {
            state.journal.delete(id)?;
            state.forget(id);
            drop(guard);
            self.inner.staging.remove(id)?;
        } else {
            let mut updated = row.clone();
            updated.state = EntryState::Cancelled;
            state.journal.save(&updated)?;
            state.rows.insert(id, updated);
            drop(guard);
            self.inner.wake.notify_one();
        }
        self.inner.bump_progress();
        Ok(())
    }

    /// Keeps the queue from removing the remote file `file` until the
    /// returned hold is dropped: a handle that reads a file goes on reading
    /// it when the file is unlinked or replaced meanwhile, as POSIX wants of
    /// an open descriptor (the removal waits for the last reader).
    pub fn hold_while_read(&self, file: &FileId) -> ReadHold {
        *self.inner.reading.lock().entry(file.clone()).or_default() += 1;
        ReadHold {
            inner: self.inner.clone(),
            file: file.clone(),
        }
    }

    /// Whether a handle of the mount reads the remote file `file`.
    pub fn is_read(&self, file: &FileId) -> bool {
        self.inner.is_read(file)
    }

    /// Removes the remote file `file` (shown as `name` in `parent`) once no
    /// handle reads it. The removal is journaled before this returns, so
    /// it happens even if the process dies first; the file is hidden from
    /// listings meanwhile.
    pub fn remove_once_unread(
        &self,
        parent: &FolderId,
        name: &str,
        file: FileId,
    ) -> Result<(), WriteBackError> {
        {
            let mut state = self.inner.state.lock();
            let record = state.journal.insert(NewEntry {
                parent,
                name,
                state: EntryState::Cancelled,
                mtime: SystemTime::now(),
                obsolete: vec![(file, ObsoleteReason::Replaced)],
            })?;
            state.rows.insert(record.id, record);
        }
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Sets the mtime shown for a pending file (the service keeps its own
    /// upload date once the file is uploaded).
    pub fn set_mtime(&self, id: EntryId, mtime: SystemTime) -> Result<(), WriteBackError> {
        self.inner
            .modify(id, |row| row.mtime = mtime)?
            .ok_or(WriteBackError::UnknownEntry(id))
    }

    /// Truncates or extends a pending file that no handle is needed for
    /// (`truncate(2)` by path).
    pub fn truncate(&self, id: EntryId, size: u64) -> Result<(), WriteBackError> {
        let handle = self.open_pending(id, false)?;
        handle.set_len(size)?;
        handle.release()
    }

    /// The service's last refusal of this entry (quota, size, name) while it
    /// has not been uploaded since: `close` reports it, as NFS reports
    /// write-back errors at close.
    pub fn last_refusal(&self, id: EntryId) -> Option<WriteBackError> {
        let state = self.inner.state.lock();
        let failure = state.failures.get(&id)?;
        matches!(
            failure.error,
            RemoteError::QuotaExceeded(_)
                | RemoteError::TooLarge(_)
                | RemoteError::InvalidName(_)
                | RemoteError::NameTooLong(_)
        )
        .then(|| WriteBackError::Remote(failure.error.clone()))
    }

    /// Makes everything written to the entry so far durable locally (staging
    /// file synced, new generation journaled). Blocking disk work.
    pub fn commit(&self, id: EntryId) -> Result<(), WriteBackError> {
        self.inner.commit_dirty(id)
    }

    /// Waits until the current content of the entry is stored by the service
    /// (fsync). Content written by open handles is included.
    pub async fn wait_durable(&self, id: EntryId) -> Result<(), WriteBackError> {
        self.inner.wait_durable(id).await
    }

    /// Number of entries that still have work to do (placeholders excluded).
    pub fn outstanding(&self) -> usize {
        let state = self.inner.state.lock();
        state.rows.values().filter(|row| row.has_work()).count()
    }

    /// Unmount: uploads everything due now (ignoring the write-back delay),
    /// waiting at most `timeout`, then stops the worker. Entries refused
    /// during the wait (or whose next retry falls after the deadline), and
    /// those not done in time, stay journaled.
    pub async fn drain(&self, timeout: Duration) -> DrainReport {
        self.inner.drain(timeout).await
    }

    /// Where the staging files and the journal live.
    pub fn staging_dir(&self) -> PathBuf {
        self.inner
            .staging
            .journal_path()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// The remote's capabilities (what the queue can ask of it).
    pub fn capabilities(&self) -> &crate::remote::Capabilities {
        self.inner.remote.capabilities()
    }

    /// Stops the worker without waiting; the journal keeps everything.
    pub fn stop(&self) {
        if let Some(worker) = self.inner.worker.lock().take() {
            worker.abort();
        }
    }

    /// Stops the upload worker and returns once it is gone (and with it
    /// its hold on the staging dir, when this was the last handle).
    pub async fn stop_and_wait(&self) {
        let worker = self.inner.worker.lock().take();
        if let Some(worker) = worker {
            worker.abort();
            let _ = worker.await;
        }
    }
}

impl EntryRecord {
    /// Not cancelled: still shown in the mount and open to changes.
    fn is_live(&self) -> bool {
        self.state != EntryState::Cancelled
    }

    /// Records a remote file the queue must remove, once.
    fn mark_obsolete(&mut self, file: FileId, reason: ObsoleteReason) {
        if !self.obsolete.iter().any(|(f, _)| f == &file) {
            self.obsolete.push((file, reason));
        }
    }

    /// Whether the queue still has something to do for this entry.
    fn has_work(&self) -> bool {
        !(self.state == EntryState::Held && self.obsolete.is_empty())
    }
}

impl State {
    fn forget(&mut self, id: EntryId) {
        self.rows.remove(&id);
        self.writers.remove(&id);
        self.dirty.remove(&id);
        self.clean_copies.remove(&id);
        self.urgent.remove(&id);
        self.failures.remove(&id);
        self.uploaded_files.remove(&id);
        self.sending.remove(&id);
        self.succeeded_after.remove(&id);
        self.bases.remove(&id);
    }
}

impl Inner {
    fn is_read(&self, file: &FileId) -> bool {
        self.reading.lock().contains_key(file)
    }

    fn new_entry(
        self: &Arc<Self>,
        parent: &FolderId,
        name: &str,
        obsolete: Vec<(FileId, ObsoleteReason)>,
        dirty: bool,
    ) -> Result<StagedHandle, WriteBackError> {
        let mut state = self.state.lock();
        let record = state.journal.insert(NewEntry {
            parent,
            name,
            state: EntryState::Open,
            mtime: SystemTime::now(),
            obsolete,
        })?;
        let id = record.id;
        let file = match self
            .staging
            .create(id)
            .and_then(|()| self.staging.open_rw(id))
        {
            Ok(file) => file,
            Err(err) => {
                if let Err(undo) = state.journal.delete(id) {
                    tracing::warn!(entry = %id, "could not undo a failed create: {undo}");
                }
                return Err(err.into());
            }
        };
        state.rows.insert(id, record);
        state.writers.insert(id, 1);
        if dirty {
            state.dirty.insert(id);
        }
        Ok(StagedHandle {
            inner: self.clone(),
            id,
            file,
            released: false,
        })
    }

    /// Applies `change` to the row and commits it; `None` if the entry is gone.
    fn modify<R>(
        &self,
        id: EntryId,
        change: impl FnOnce(&mut EntryRecord) -> R,
    ) -> Result<Option<R>, WriteBackError> {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        let Some(row) = state.rows.get_mut(&id) else {
            return Ok(None);
        };
        let mut updated = row.clone();
        let result = change(&mut updated);
        state.journal.save(&updated)?;
        *row = updated;
        Ok(Some(result))
    }

    fn bump_progress(&self) {
        self.progress_tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn emit(&self, event: WriteEvent) {
        let listener = self.listener.read().clone();
        if let Some(listener) = listener {
            listener(&event);
        }
    }

    /// Makes everything written so far a committed generation.
    fn commit_dirty(&self, id: EntryId) -> Result<(), WriteBackError> {
        let was_dirty = self.state.lock().dirty.contains(&id);
        if !was_dirty {
            return Ok(());
        }
        // Data first, then the journal that claims it.
        if let Ok(file) = self.staging.open_read(id) {
            file.sync_data()?;
        }
        let mut guard = self.state.lock();
        let state = &mut *guard;
        if !state.rows.get(&id).is_some_and(EntryRecord::is_live) {
            // Unlinked: the queue may have dropped the entry and its staging
            // file while a handle still writes to it. Nothing is kept.
            state.dirty.remove(&id);
            return Ok(());
        }
        // Under the lock, so no write or resize lands between the measure
        // and the row that records it.
        let size = self.staging.len(id)?;
        if !state.dirty.remove(&id) {
            return Ok(());
        }
        if let Some(row) = state.rows.get(&id) {
            let mut updated = row.clone();
            updated.generation += 1;
            updated.size = size;
            updated.attempts = 0;
            updated.retry_at_ms = 0;
            state.journal.save(&updated)?;
            state.rows.insert(id, updated);
        }
        Ok(())
    }

    async fn wait_durable(&self, id: EntryId) -> Result<(), WriteBackError> {
        self.commit_dirty(id)?;
        let mut progress_rx = self.progress_tx.subscribe();
        let (target, start_seq) = {
            let mut state = self.state.lock();
            let Some(row) = state.rows.get(&id) else {
                // Finalized already (or never pending): durable.
                return Ok(());
            };
            let placeholder = row.size == 0 && !self.remote.capabilities().empty_files;
            let unchanged_copy = state.clean_copies.contains(&id) && row.generation == 0;
            if row.state == EntryState::Cancelled || placeholder || unchanged_copy {
                return Ok(());
            }
            let target = row.generation;
            *state.urgent.entry(id).or_default() += 1;
            (target, state.failure_seq)
        };
        self.wake.notify_one();
        let _urgent = UrgentGuard { inner: self, id };
        loop {
            {
                let state = self.state.lock();
                let Some(row) = state.rows.get(&id) else {
                    return Ok(());
                };
                if let Progress::Uploaded { generation, .. } = &row.progress {
                    if *generation >= target {
                        return Ok(());
                    }
                }
                if row.state == EntryState::Cancelled {
                    return Ok(());
                }
                if let Some(failure) = state.failures.get(&id) {
                    if failure.seq > start_seq && failure.generation.is_some_and(|g| g >= target) {
                        return Err(WriteBackError::Remote(failure.error.clone()));
                    }
                }
            }
            if progress_rx.changed().await.is_err() {
                return Err(WriteBackError::Remote(RemoteError::Fatal(
                    "the write-back queue stopped".into(),
                )));
            }
        }
    }

    async fn drain(self: &Arc<Self>, timeout: Duration) -> DrainReport {
        let mut progress_rx = self.progress_tx.subscribe();
        let since = {
            let mut state = self.state.lock();
            let seq = state.failure_seq;
            state.draining_since = Some(seq);
            seq
        };
        self.wake.notify_one();
        let deadline = tokio::time::Instant::now() + timeout;
        let deadline_ms = now_ms().saturating_add(duration_ms(timeout));
        // Without a worker nothing would progress: report at once.
        let worker_running = self.worker.lock().is_some();
        loop {
            if !worker_running {
                break;
            }
            let waiting = {
                let state = self.state.lock();
                state
                    .rows
                    .values()
                    .filter(|row| row.has_work())
                    // Not worth waiting for: refused since the drain began,
                    // or not retried again before the deadline.
                    .filter(|row| {
                        state.failures.get(&row.id).is_none_or(|f| {
                            f.seq <= since
                                || (f.error.is_retryable() && row.retry_at_ms <= deadline_ms)
                        })
                    })
                    .count()
            };
            if waiting == 0 {
                break;
            }
            match tokio::time::timeout_at(deadline, progress_rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => break,
            }
        }
        let worker = self.worker.lock().take();
        if let Some(worker) = worker {
            worker.abort();
            let _ = worker.await;
        }
        let state = self.state.lock();
        DrainReport {
            left: state
                .rows
                .values()
                .filter(|row| row.has_work())
                .map(PendingFile::from_record)
                .collect(),
        }
    }

    fn release(&self, id: EntryId, file: &File) -> Result<(), WriteBackError> {
        let last = {
            let mut state = self.state.lock();
            let count = state.writers.entry(id).or_default();
            *count = count.saturating_sub(1);
            let last = *count == 0;
            if last {
                state.writers.remove(&id);
            }
            last
        };
        if !last {
            return Ok(());
        }
        // The staged bytes reach the disk before the journal says they are queued.
        file.sync_data()?;
        self.staging.sync_dir()?;
        let mut guard = self.state.lock();
        let state = &mut *guard;
        if state.writers.get(&id).is_some_and(|&count| count > 0) {
            // Reopened for writing during the syncs: that handle's release
            // queues the file, with whatever it changes.
            return Ok(());
        }
        // Measured under the lock: a handle opened during the syncs may have
        // resized the file, and a size taken before would overwrite its.
        let size = file.metadata()?.len();
        let Some(row) = state.rows.get(&id) else {
            return Ok(());
        };
        if row.state == EntryState::Cancelled {
            return Ok(());
        }
        if state.clean_copies.remove(&id) && row.generation == 0 && row.progress == Progress::Idle {
            // Opened for writing but never changed: nothing to upload.
            state.journal.delete(id)?;
            state.forget(id);
            self.staging.remove(id)?;
            // An unmount may be waiting for this entry (a copy the kernel
            // released while the queue drains): it is done.
            self.bump_progress();
            return Ok(());
        }
        let mut updated = row.clone();
        if state.dirty.remove(&id) {
            updated.generation += 1;
            updated.attempts = 0;
            updated.retry_at_ms = 0;
        }
        updated.size = size;
        updated.state = EntryState::Queued;
        updated.not_before_ms = now_ms().saturating_add(duration_ms(self.options.delay));
        state.journal.save(&updated)?;
        state.rows.insert(id, updated);
        drop(guard);
        self.wake.notify_one();
        self.bump_progress();
        Ok(())
    }
}

struct UrgentGuard<'a> {
    inner: &'a Inner,
    id: EntryId,
}

impl Drop for UrgentGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.inner.state.lock();
        if let Some(count) = state.urgent.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                state.urgent.remove(&self.id);
            }
        }
    }
}

/// Keeps a remote file from being removed by the queue while a handle
/// reads it ([`WriteBack::hold_while_read`]).
pub struct ReadHold {
    inner: Arc<Inner>,
    file: FileId,
}

impl Drop for ReadHold {
    fn drop(&mut self) {
        let mut reading = self.inner.reading.lock();
        let last = match reading.get_mut(&self.file) {
            Some(count) => {
                *count -= 1;
                *count == 0
            }
            None => false,
        };
        if last {
            reading.remove(&self.file);
            drop(reading);
            // A removal may have waited for this reader.
            self.inner.wake.notify_one();
        }
    }
}

/// A write handle on a staged file. Writes go to the staging file; the
/// entry is committed to the upload queue when the last handle is released.
/// Dropping a handle without [`StagedHandle::release`] releases it too.
pub struct StagedHandle {
    inner: Arc<Inner>,
    id: EntryId,
    file: File,
    released: bool,
}

impl StagedHandle {
    pub fn id(&self) -> EntryId {
        self.id
    }

    /// Reads up to `buf.len()` bytes at `offset`; fewer only at end of file.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        read_full_at(&self.file, buf, offset)
    }

    pub fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(data, offset)?;
        let end = offset.saturating_add(data.len() as u64);
        let mut state = self.inner.state.lock();
        if let Some(row) = state.rows.get_mut(&self.id) {
            row.size = row.size.max(end);
            row.mtime = SystemTime::now();
        }
        state.dirty.insert(self.id);
        state.clean_copies.remove(&self.id);
        Ok(())
    }

    pub fn set_len(&self, size: u64) -> io::Result<()> {
        self.file.set_len(size)?;
        let mut state = self.inner.state.lock();
        if let Some(row) = state.rows.get_mut(&self.id) {
            row.size = size;
            row.mtime = SystemTime::now();
        }
        state.dirty.insert(self.id);
        state.clean_copies.remove(&self.id);
        Ok(())
    }

    /// Current size of the staged file.
    pub fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Copies a remote file's current bytes into the (fresh, empty) staging
    /// file, so writes at any offset work on it. Not a modification.
    pub async fn fill<S>(&self, mut bytes: S) -> Result<(), WriteBackError>
    where
        S: Stream<Item = RemoteResult<Bytes>> + Unpin,
    {
        let mut offset = 0u64;
        while let Some(chunk) = bytes.next().await {
            let chunk = chunk?;
            self.file.write_all_at(&chunk, offset)?;
            offset += chunk.len() as u64;
        }
        let mut state = self.inner.state.lock();
        if let Some(row) = state.rows.get_mut(&self.id) {
            row.size = row.size.max(offset);
        }
        Ok(())
    }

    /// Writes initial content (the current bytes of the remote file being
    /// opened) at `offset`; like [`StagedHandle::fill`], not a modification.
    pub fn fill_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(data, offset)?;
        let end = offset.saturating_add(data.len() as u64);
        let mut state = self.inner.state.lock();
        if let Some(row) = state.rows.get_mut(&self.id) {
            row.size = row.size.max(end);
        }
        Ok(())
    }

    /// Makes everything written so far durable locally (staging file synced,
    /// journal updated) without ending the handle: `close(2)` calls this
    /// through FUSE's flush, so a file is safe once `close` returned.
    pub fn flush(&self) -> Result<(), WriteBackError> {
        self.inner.commit_dirty(self.id)
    }

    /// Durably records the handle's writes and, for the last handle, queues
    /// the upload (after the write-back delay). Returns once the journal is
    /// on disk.
    pub fn release(mut self) -> Result<(), WriteBackError> {
        self.released = true;
        self.inner.release(self.id, &self.file)
    }

    /// Abandons a handle from [`WriteBack::open_remote`] whose fill failed:
    /// the entry disappears as if never opened, the remote file untouched.
    pub fn discard(mut self) -> Result<(), WriteBackError> {
        self.released = true;
        let mut state = self.inner.state.lock();
        state.journal.delete(self.id)?;
        state.forget(self.id);
        drop(state);
        self.inner.staging.remove(self.id)?;
        Ok(())
    }
}

impl Drop for StagedHandle {
    fn drop(&mut self) {
        if !self.released {
            if let Err(err) = self.inner.release(self.id, &self.file) {
                tracing::error!(entry = %self.id, "releasing a staged file failed: {err}");
            }
        }
    }
}

fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(done)
}

fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
