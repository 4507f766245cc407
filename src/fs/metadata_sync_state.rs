//! What the metadata sync of a mount remembers (the work itself:
//! `metadata_sync`): the folders whose sync file is to be written and when,
//! the sync files already merged here, those that could not be read, and
//! the writer task.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cache::meta::FetchedListing;
use crate::remote::{FileEntry, FileId, FolderId};

/// A folder's file is written at the latest this long after its first
/// unwritten change, however often changes keep coming.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// First wait after a failed write; doubles up to `RETRY_MAX`.
const RETRY_BASE: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(300);
/// A sync file that could not be read is tried again after this long.
const READ_RETRY: Duration = Duration::from_secs(60);

/// SHA-256 of a sync file's bytes.
pub(crate) type Digest32 = [u8; 32];

/// How a write of one folder's sync file ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteOutcome {
    /// Written (or nothing needed writing).
    Done,
    /// Failed; retried after a growing wait.
    Failed,
    /// The file there must not be replaced: not retried until the folder
    /// changes again.
    Refused,
}

/// The metadata sync's memory for one mount.
pub(crate) struct MetadataSync {
    /// Wait after a folder's last change before its file is written.
    debounce: Duration,
    /// Folders with changes not written yet.
    changed: Mutex<HashMap<FolderId, Unwritten>>,
    /// Wakes the writer when a folder changed.
    wake: Arc<Notify>,
    /// Sync files whose records are merged here (read, or written by this
    /// mount), with the digest of their bytes: a listing showing only
    /// these needs no download, and a write that would upload the same
    /// bytes again is skipped.
    merged: Mutex<HashMap<FileId, Digest32>>,
    /// Sync files that could not be read, and when to try again.
    unreadable: Mutex<HashMap<FileId, Instant>>,
    /// Sync files being downloaded by a reader now.
    reading: Mutex<HashSet<FileId>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Clone, Copy, Debug)]
struct Unwritten {
    first: Instant,
    due: Instant,
    /// Bumped by every change: a write only clears the changes it saw.
    generation: u64,
    failures: u32,
}

impl MetadataSync {
    /// Folders' files are written `debounce` after their last change.
    pub(crate) fn new(debounce: Duration) -> MetadataSync {
        MetadataSync {
            debounce,
            changed: Mutex::new(HashMap::new()),
            wake: Arc::new(Notify::new()),
            merged: Mutex::new(HashMap::new()),
            unreadable: Mutex::new(HashMap::new()),
            reading: Mutex::new(HashSet::new()),
            writer: Mutex::new(None),
        }
    }

    /// Keeps the writer task (a second one is not started).
    pub(crate) fn start_writer(&self, spawn: impl FnOnce() -> JoinHandle<()>) {
        let mut writer = self.writer.lock();
        if writer.is_none() {
            *writer = Some(spawn());
        }
    }

    /// Stops the writer and waits until it is gone.
    pub(crate) async fn stop_writer(&self) {
        let writer = self.writer.lock().take();
        if let Some(writer) = writer {
            writer.abort();
            let _ = writer.await;
        }
    }

    /// What wakes the writer.
    pub(crate) fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Folder `folder` holds a node whose record changed.
    pub(crate) fn changed(&self, folder: &FolderId) {
        self.changed_at(folder, Instant::now());
    }

    fn changed_at(&self, folder: &FolderId, now: Instant) {
        let mut changed = self.changed.lock();
        let unwritten = changed.entry(folder.clone()).or_insert(Unwritten {
            first: now,
            due: now,
            generation: 0,
            failures: 0,
        });
        unwritten.generation += 1;
        if unwritten.failures == 0 {
            unwritten.due = (now + self.debounce).min(unwritten.first + MAX_DELAY);
        }
        drop(changed);
        self.wake.notify_one();
    }

    /// The next folder due for writing and the change it covers; else
    /// when the next one is due, if any folder is waiting.
    pub(crate) fn next_due(&self) -> Result<(FolderId, u64), Option<Instant>> {
        self.next_due_at(Instant::now())
    }

    fn next_due_at(&self, now: Instant) -> Result<(FolderId, u64), Option<Instant>> {
        let changed = self.changed.lock();
        let earliest = changed.iter().min_by_key(|(_, unwritten)| unwritten.due);
        match earliest {
            Some((folder, unwritten)) if unwritten.due <= now => {
                Ok((folder.clone(), unwritten.generation))
            }
            Some((_, unwritten)) => Err(Some(unwritten.due)),
            None => Err(None),
        }
    }

    /// Every folder waiting (at unmount: written now, due or not).
    pub(crate) fn all_waiting(&self) -> Vec<(FolderId, u64)> {
        self.changed
            .lock()
            .iter()
            .map(|(folder, unwritten)| (folder.clone(), unwritten.generation))
            .collect()
    }

    pub(crate) fn waiting_count(&self) -> usize {
        self.changed.lock().len()
    }

    /// A write of `folder` that covered change `generation` ended.
    pub(crate) fn written(&self, folder: &FolderId, generation: u64, outcome: WriteOutcome) {
        self.written_at(folder, generation, outcome, Instant::now());
    }

    fn written_at(&self, folder: &FolderId, generation: u64, outcome: WriteOutcome, now: Instant) {
        let mut changed = self.changed.lock();
        let Some(unwritten) = changed.get_mut(folder) else {
            return;
        };
        match outcome {
            WriteOutcome::Done if unwritten.generation == generation => {
                changed.remove(folder);
            }
            WriteOutcome::Done => {
                // Changed again meanwhile: written once more when due.
                unwritten.first = now;
                unwritten.failures = 0;
            }
            WriteOutcome::Refused => {
                changed.remove(folder);
            }
            WriteOutcome::Failed => {
                unwritten.failures += 1;
                let exponent = unwritten.failures.saturating_sub(1).min(16);
                let wait = RETRY_BASE.saturating_mul(1 << exponent).min(RETRY_MAX);
                unwritten.due = now + wait;
            }
        }
    }

    /// The sync files of `fetched` that should be read now.
    pub(crate) fn unread(&self, fetched: &FetchedListing) -> Vec<FileEntry> {
        self.unread_at(fetched, Instant::now())
    }

    fn unread_at(&self, fetched: &FetchedListing, now: Instant) -> Vec<FileEntry> {
        if fetched.sync_files.is_empty() {
            return Vec::new();
        }
        let merged = self.merged.lock();
        let unreadable = self.unreadable.lock();
        fetched
            .sync_files
            .iter()
            .filter(|file| !merged.contains_key(&file.id))
            .filter(|file| unreadable.get(&file.id).is_none_or(|retry| *retry <= now))
            .cloned()
            .collect()
    }

    /// Of `files`, those no other reader is downloading now; they are
    /// this caller's until [`MetadataSync::read_done`].
    pub(crate) fn claim_reads(&self, files: Vec<FileEntry>) -> Vec<FileEntry> {
        let mut reading = self.reading.lock();
        files
            .into_iter()
            .filter(|file| reading.insert(file.id.clone()))
            .collect()
    }

    /// A claimed read ended: merged (with the file's digest) or not.
    pub(crate) fn read_done(&self, file: &FileId, merged: Option<Digest32>) {
        self.read_done_at(file, merged, Instant::now());
    }

    fn read_done_at(&self, file: &FileId, merged: Option<Digest32>, now: Instant) {
        self.reading.lock().remove(file);
        match merged {
            Some(digest) => self.merged(file, digest),
            None => {
                self.unreadable
                    .lock()
                    .insert(file.clone(), now + READ_RETRY);
            }
        }
    }

    /// `file`'s records are merged here (read, or written by this mount).
    pub(crate) fn merged(&self, file: &FileId, digest: Digest32) {
        self.merged.lock().insert(file.clone(), digest);
    }

    pub(crate) fn is_merged(&self, file: &FileId) -> bool {
        self.merged.lock().contains_key(file)
    }

    /// Whether `file` is merged here and holds exactly `digest`.
    pub(crate) fn holds(&self, file: &FileId, digest: &Digest32) -> bool {
        self.merged.lock().get(file) == Some(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_debounced_capped_retried_and_cleared() {
        let sync = MetadataSync::new(Duration::from_secs(5));
        let folder = FolderId("7".into());
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        assert_eq!(sync.next_due_at(at(0)), Err(None));
        sync.changed_at(&folder, at(0));
        assert_eq!(sync.next_due_at(at(4)), Err(Some(at(5))));
        // Every change pushes the write back, up to a minute after the first.
        for step in 1..=30 {
            sync.changed_at(&folder, at(4 * step));
        }
        assert_eq!(
            sync.next_due_at(at(120)).map(|(f, _)| f),
            Ok(folder.clone())
        );
        assert_eq!(sync.next_due_at(at(59)), Err(Some(at(60))));
        // A failure waits, then longer; a change meanwhile keeps the wait.
        let (_, generation) = sync.next_due_at(at(120)).unwrap();
        sync.written_at(&folder, generation, WriteOutcome::Failed, at(120));
        assert_eq!(sync.next_due_at(at(120)), Err(Some(at(122))));
        sync.changed_at(&folder, at(121));
        let (_, generation) = sync.next_due_at(at(122)).unwrap();
        sync.written_at(&folder, generation, WriteOutcome::Failed, at(122));
        assert_eq!(sync.next_due_at(at(122)), Err(Some(at(126))));
        // A write that raced a newer change leaves the folder waiting.
        let (_, generation) = sync.next_due_at(at(126)).unwrap();
        sync.changed_at(&folder, at(126));
        sync.written_at(&folder, generation, WriteOutcome::Done, at(127));
        assert_eq!(sync.waiting_count(), 1);
        let (_, generation) = sync.next_due_at(at(127)).unwrap();
        sync.written_at(&folder, generation, WriteOutcome::Done, at(128));
        assert_eq!(sync.waiting_count(), 0);
        // A refused write is not retried until the next change.
        sync.changed_at(&folder, at(130));
        let (_, generation) = sync.all_waiting()[0].clone();
        sync.written_at(&folder, generation, WriteOutcome::Refused, at(131));
        assert_eq!(sync.waiting_count(), 0);
        // Booking a folder nobody waits for changes nothing.
        sync.written_at(&folder, 1, WriteOutcome::Failed, at(132));
        assert_eq!(sync.next_due_at(at(500)), Err(None));
    }

    #[test]
    fn reads_are_claimed_once_and_failed_ones_retried_later() {
        use crate::remote::Listing;
        let sync = MetadataSync::new(Duration::ZERO);
        let file = |id: &str| FileEntry {
            id: FileId(id.into()),
            name: crate::metadata::sync::SYNC_FILE_NAME.into(),
            size: 10,
            modified: chrono::DateTime::UNIX_EPOCH,
            checksum: None,
            mime: None,
            share_link: None,
            expires: None,
        };
        let listing = Listing {
            folders: Vec::new(),
            files: vec![file("a"), file("b")],
        };
        let fetched = FetchedListing::new(listing, std::time::Instant::now(), 1);
        let now = Instant::now();
        let unread = sync.unread_at(&fetched, now);
        assert_eq!(unread.len(), 2);
        let claimed = sync.claim_reads(unread.clone());
        assert_eq!(claimed.len(), 2);
        assert!(sync.claim_reads(unread).is_empty(), "claimed once");
        sync.read_done_at(&FileId("a".into()), Some([1; 32]), now);
        sync.read_done_at(&FileId("b".into()), None, now);
        assert!(sync.unread_at(&fetched, now).is_empty());
        assert!(sync.is_merged(&FileId("a".into())));
        assert!(sync.holds(&FileId("a".into()), &[1; 32]));
        assert!(!sync.holds(&FileId("a".into()), &[2; 32]));
        let again = sync.unread_at(&fetched, now + READ_RETRY);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].id, FileId("b".into()));
    }
}
