//! The queue as a person watching it sees it: each pending upload with its
//! stage, attempts, last error and next try, the uploads finished lately,
//! and a way to try one again now instead of at its next try.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::journal::{now_ms, EntryRecord, EntryState, Progress};
use super::{EntryId, State, WriteBack, WriteBackError};
use crate::remote::{FileEntry, FolderId};

/// How many finished uploads are remembered.
const FINISHED_KEPT: usize = 100;
/// How long a finished upload stays in the view.
const FINISHED_SHOWN: Duration = Duration::from_secs(3600);

/// Where a pending upload stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadStage {
    /// Still open for writing.
    Writing,
    /// Closed, waiting for its write-back delay or its turn.
    Waiting,
    /// Being sent (or its outcome being checked) now.
    Uploading,
    /// The last attempt failed for a reason that may pass; tried again at
    /// `next_try`.
    Retrying,
    /// The service refused it (quota, size, name); tried again much later.
    Refused,
    /// An empty file the service cannot store, kept locally.
    Held,
}

/// One pending upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedUpload {
    pub id: EntryId,
    pub parent: FolderId,
    pub name: String,
    pub size: u64,
    pub stage: UploadStage,
    /// Failed attempts since the content last changed.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When the next attempt is due, if it is not now.
    pub next_try: Option<SystemTime>,
    /// Bytes of the running attempt sent so far.
    pub sent_bytes: u64,
}

/// An upload that completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinishedUpload {
    pub id: EntryId,
    pub parent: FolderId,
    pub name: String,
    pub size: u64,
    pub at: SystemTime,
    /// Attempts it took, the successful one included.
    pub attempts: u32,
}

/// Called by the worker as it finalizes an entry.
pub(super) fn remember_finished(
    finished: &mut VecDeque<FinishedUpload>,
    id: EntryId,
    parent: &FolderId,
    file: &FileEntry,
    attempts: u32,
) {
    if finished.len() == FINISHED_KEPT {
        finished.pop_front();
    }
    finished.push_back(FinishedUpload {
        id,
        parent: parent.clone(),
        name: file.name.clone(),
        size: file.size,
        at: SystemTime::now(),
        attempts,
    });
}

fn stage_of(state: &State, row: &EntryRecord, now: i64) -> UploadStage {
    // The failure itself is known only to this process; after a restart
    // the journal still has the message and the next try.
    let failure = state.failures.get(&row.id);
    if row.retry_at_ms > now && (failure.is_some() || row.last_error.is_some()) {
        return match failure {
            Some(failure) if !failure.error.is_retryable() => UploadStage::Refused,
            _ => UploadStage::Retrying,
        };
    }
    match (row.state, &row.progress) {
        (EntryState::Held, _) => UploadStage::Held,
        (_, Progress::Uploading { .. } | Progress::Uploaded { .. }) => UploadStage::Uploading,
        (EntryState::Open, _) => UploadStage::Writing,
        _ => UploadStage::Waiting,
    }
}

fn time_of(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl WriteBack {
    /// The pending uploads in upload order (cancelled entries left out).
    pub fn queued(&self) -> Vec<QueuedUpload> {
        let state = self.inner.state.lock();
        let now = now_ms();
        state
            .rows
            .values()
            .filter(|row| row.is_live())
            .map(|row| {
                let stage = stage_of(&state, row, now);
                let due = match stage {
                    UploadStage::Retrying | UploadStage::Refused => row.retry_at_ms,
                    UploadStage::Waiting => row.retry_at_ms.max(row.not_before_ms),
                    _ => 0,
                };
                QueuedUpload {
                    id: row.id,
                    parent: row.parent.clone(),
                    name: row.name.clone(),
                    size: row.size,
                    stage,
                    attempts: row.attempts,
                    last_error: row.last_error.clone(),
                    next_try: (due > now).then(|| time_of(due)),
                    sent_bytes: state
                        .sending
                        .get(&row.id)
                        .map_or(0, |sent| sent.load(Ordering::Relaxed)),
                }
            })
            .collect()
    }

    /// Uploads finished within the last hour, oldest first.
    pub fn finished(&self) -> Vec<FinishedUpload> {
        let mut state = self.inner.state.lock();
        let now = SystemTime::now();
        let expired = |done: &FinishedUpload| {
            now.duration_since(done.at)
                .is_ok_and(|age| age > FINISHED_SHOWN)
        };
        while state.finished.front().is_some_and(expired) {
            state.finished.pop_front();
        }
        state.finished.iter().cloned().collect()
    }

    /// Makes entry `id` due now, whatever its delay or backoff. `Ok(false)`
    /// when it is being uploaded already (nothing to hurry).
    pub fn retry_now(&self, id: EntryId) -> Result<bool, WriteBackError> {
        let running = {
            let state = self.inner.state.lock();
            let row = state
                .rows
                .get(&id)
                .filter(|row| row.is_live())
                .ok_or(WriteBackError::UnknownEntry(id))?;
            stage_of(&state, row, now_ms()) == UploadStage::Uploading
        };
        if running {
            return Ok(false);
        }
        let now = now_ms();
        self.inner.modify(id, |row| {
            row.retry_at_ms = row.retry_at_ms.min(now);
            row.not_before_ms = row.not_before_ms.min(now);
        })?;
        self.inner.wake.notify_one();
        Ok(true)
    }
}
