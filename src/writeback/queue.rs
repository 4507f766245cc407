//! The upload worker: one tokio task that walks the journal in entry order
//! and moves each due entry one step at a time towards "finalized".
//!
//! Each step is decided from a snapshot of the entry taken under the lock,
//! performed without the lock (the remote call), and its outcome committed
//! to the journal before the next step is decided. The mount may rename,
//! unlink or rewrite the entry while a step runs; the next decision sees it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

use super::journal::{now_ms, EntryRecord, EntryState, ObsoleteReason, Progress};
use super::unchanged::UnchangedError;
use super::{duration_ms, view, EntryId, Failure, Inner, WriteBackError, WriteEvent};
use crate::remote::{FileEntry, FileId, FolderId, ProgressFn, RemoteError, UploadSource};

/// Without a content checksum, an unrecorded upload is recognised by name,
/// size and an upload date no earlier than the attempt's start minus this
/// (clock differences between us and the service).
const UNRECORDED_UPLOAD_SLACK: chrono::Duration = chrono::Duration::minutes(15);

/// Longest the worker sleeps without looking at the journal again.
const MAX_IDLE: Duration = Duration::from_secs(60);

/// Bound on steps per entry in one go; an entry that keeps changing under
/// the worker yields to the others.
const MAX_STEPS: usize = 16;

pub(super) async fn run_worker(inner: Arc<Inner>) {
    loop {
        match inner.next_job() {
            Job::Process(id) => inner.process(id).await,
            Job::Sleep(duration) => {
                tokio::select! {
                    _ = inner.wake.notified() => {}
                    _ = tokio::time::sleep(duration) => {}
                }
            }
        }
    }
}

enum Job {
    Process(EntryId),
    Sleep(Duration),
}

/// The next thing to do for one entry.
#[derive(Debug)]
enum Step {
    /// An upload's outcome was never recorded: find out whether the service has it.
    Recover,
    /// The recorded upload is of old content (or the entry was unlinked).
    DemoteUpload,
    /// The recorded upload is not where the entry now lives.
    Relocate,
    Remove(FileId),
    Upload,
    /// An empty file on a service that cannot store one: keep it locally.
    Hold,
    Finalize,
    /// A cancelled entry with nothing left to clean up.
    Drop,
    /// Nothing to do until the user releases or fsyncs the file.
    Wait,
}

impl Inner {
    fn next_job(&self) -> Job {
        let state = self.state.lock();
        let now = now_ms();
        let draining = state.draining_since.is_some();
        let mut earliest: Option<i64> = None;
        for row in state.rows.values() {
            let urgent = state.urgent.contains_key(&row.id);
            if !self.needs_step(row, urgent) {
                continue;
            }
            if urgent {
                return Job::Process(row.id);
            }
            let mut due = row.retry_at_ms;
            if row.state == EntryState::Queued && row.progress == Progress::Idle && !draining {
                due = due.max(row.not_before_ms);
            }
            if due <= now {
                return Job::Process(row.id);
            }
            earliest = Some(earliest.map_or(due, |e| e.min(due)));
        }
        let sleep = earliest
            .map(|due| Duration::from_millis(u64::try_from(due - now).unwrap_or(0)))
            .unwrap_or(MAX_IDLE);
        Job::Sleep(sleep.min(MAX_IDLE))
    }

    fn needs_step(&self, row: &EntryRecord, urgent: bool) -> bool {
        match self.decide(row) {
            Step::Wait => false,
            // An open file is uploaded early only when someone fsyncs it.
            Step::Upload if row.state == EntryState::Open => urgent,
            _ => true,
        }
    }

    fn decide(&self, row: &EntryRecord) -> Step {
        // Files a handle still reads are removed after its last close.
        let first_obsolete = row
            .obsolete
            .iter()
            .map(|(id, _)| id)
            .find(|id| !self.is_read(id))
            .cloned();
        let obsolete_left = !row.obsolete.is_empty();
        match &row.progress {
            Progress::Uploading { .. } => Step::Recover,
            Progress::Uploaded {
                generation,
                parent,
                name,
                ..
            } => {
                if row.state == EntryState::Cancelled || *generation != row.generation {
                    Step::DemoteUpload
                } else if parent != &row.parent || name != &row.name {
                    Step::Relocate
                } else if let Some(file) = first_obsolete {
                    Step::Remove(file)
                } else if row.state == EntryState::Queued && !obsolete_left {
                    Step::Finalize
                } else {
                    Step::Wait
                }
            }
            Progress::Idle => match row.state {
                EntryState::Cancelled => match first_obsolete {
                    Some(file) => Step::Remove(file),
                    None if obsolete_left => Step::Wait,
                    None => Step::Drop,
                },
                EntryState::Held => first_obsolete.map_or(Step::Wait, Step::Remove),
                // Still open: only an fsync uploads it (see `needs_step`);
                // nothing it replaces is touched before it is released.
                EntryState::Open => {
                    if row.size > 0 || self.remote.capabilities().empty_files {
                        Step::Upload
                    } else {
                        Step::Wait
                    }
                }
                EntryState::Queued => {
                    if row.size > 0 || self.remote.capabilities().empty_files {
                        Step::Upload
                    } else if let Some(file) = first_obsolete {
                        Step::Remove(file)
                    } else {
                        Step::Hold
                    }
                }
            },
        }
    }

    async fn process(self: &Arc<Self>, id: EntryId) {
        for _ in 0..MAX_STEPS {
            let Some(row) = self.state.lock().rows.get(&id).cloned() else {
                return;
            };
            let step = self.decide(&row);
            tracing::debug!(entry = %id, name = %row.name, ?step, "write-back step");
            let outcome = match step {
                Step::Wait => return,
                Step::Recover => self.recover_upload(&row).await,
                Step::DemoteUpload => self.demote_upload(id),
                Step::Relocate => self.relocate(&row).await,
                Step::Remove(file) => self.remove_obsolete(&row, file).await,
                Step::Upload => self.upload(&row).await,
                Step::Hold => self.hold(id),
                Step::Finalize => match self.finalize(id) {
                    Ok(true) => {
                        self.bump_progress();
                        return;
                    }
                    Ok(false) => Ok(()),
                    Err(err) => Err(StepError::Local(err)),
                },
                Step::Drop => self.drop_cancelled(id),
            };
            self.bump_progress();
            match outcome {
                Ok(()) => {}
                Err(StepError::Remote { error, generation }) => {
                    self.record_failure(&row, error, generation);
                    self.bump_progress();
                    return;
                }
                Err(StepError::Local(err)) => {
                    tracing::error!(entry = %id, name = %row.name, "write-back journal or staging error: {err}");
                    self.record_failure(&row, RemoteError::Fatal(err.to_string()), None);
                    self.bump_progress();
                    return;
                }
            }
        }
    }

    /// Looks for an upload whose result was never recorded (crash, or a
    /// connection lost after the service stored the file).
    async fn recover_upload(&self, row: &EntryRecord) -> Result<(), StepError> {
        let Progress::Uploading {
            generation,
            parent,
            name,
            size,
            started_ms,
        } = row.progress.clone()
        else {
            return Ok(());
        };
        let content_unchanged =
            row.generation == generation && !self.state.lock().dirty.contains(&row.id);
        let expected_hash = match self.remote.capabilities().hash {
            Some(kind) if content_unchanged => {
                let path = self.staging.path(row.id);
                tokio::task::spawn_blocking(move || super::staging::content_hash(&path, kind))
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            _ => None,
        };
        let found = self
            .find_unrecorded_copy(
                row.id,
                &parent,
                &name,
                size,
                expected_hash.as_deref(),
                started_ms,
            )
            .await
            .map_err(|error| StepError::Remote {
                error,
                generation: Some(generation),
            })?;
        match found {
            Some(file) => {
                tracing::info!(entry = %row.id, name = %name, id = %file.id,
                    "found the upload of an interrupted attempt; not uploading again");
                let file_id = file.id.clone();
                self.state.lock().uploaded_files.insert(row.id, file);
                self.modify(row.id, |r| {
                    r.progress = Progress::Uploaded {
                        id: file_id,
                        generation,
                        parent,
                        name,
                        size,
                    };
                })?;
            }
            None => {
                self.modify(row.id, |r| r.progress = Progress::Idle)?;
            }
        }
        Ok(())
    }

    async fn find_unrecorded_copy(
        &self,
        entry: EntryId,
        parent: &FolderId,
        name: &str,
        size: u64,
        expected_hash: Option<&str>,
        started_ms: i64,
    ) -> Result<Option<FileEntry>, RemoteError> {
        let listing = self.remote.list_folder(parent).await?;
        // Files some entry already accounts for are never ours to adopt.
        let known: HashSet<FileId> = {
            let state = self.state.lock();
            state
                .rows
                .values()
                .flat_map(|r| {
                    let uploaded = if r.id == entry {
                        None
                    } else {
                        r.uploaded_id().cloned()
                    };
                    r.obsolete.iter().map(|(id, _)| id.clone()).chain(uploaded)
                })
                .collect()
        };
        let started = DateTime::<Utc>::from_timestamp_millis(started_ms)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
            - UNRECORDED_UPLOAD_SLACK;
        Ok(listing
            .files
            .into_iter()
            .filter(|f| f.name == name && f.size == size && !known.contains(&f.id))
            .filter(|f| match (expected_hash, f.checksum.as_deref()) {
                (Some(expected), Some(actual)) => expected.eq_ignore_ascii_case(actual),
                _ => f.modified >= started,
            })
            .max_by_key(|f| f.modified))
    }

    fn demote_upload(&self, id: EntryId) -> Result<(), StepError> {
        self.modify(id, |row| {
            if let Progress::Uploaded { id: file, .. } = &row.progress {
                let file = file.clone();
                row.mark_obsolete(file, ObsoleteReason::StaleUpload);
                row.progress = Progress::Idle;
            }
        })?;
        self.state.lock().uploaded_files.remove(&id);
        Ok(())
    }

    async fn relocate(&self, row: &EntryRecord) -> Result<(), StepError> {
        let Progress::Uploaded {
            id: file,
            generation,
            parent: from_parent,
            name: from_name,
            size,
        } = row.progress.clone()
        else {
            return Ok(());
        };
        let caps = self.remote.capabilities();
        let same_folder = from_parent == row.parent;
        let possible = if same_folder {
            caps.rename_file
        } else {
            caps.move_file
        };
        if !possible {
            // The service cannot move it: upload again at the new place and
            // remove this copy afterwards.
            return self.demote_upload(row.id);
        }
        let result = if same_folder {
            self.remote.rename_file(&file, &row.name).await
        } else {
            let rename = (from_name != row.name).then_some(row.name.as_str());
            self.remote.move_file(&file, &row.parent, rename).await
        };
        let moved = match result {
            Ok(moved) => Some(moved),
            Err(RemoteError::NotFound(_)) => {
                // Moved by an attempt whose answer was lost (its id may have
                // changed), or removed by someone else.
                self.find_unrecorded_copy(row.id, &row.parent, &row.name, size, None, 0)
                    .await
                    .map_err(|error| StepError::Remote {
                        error,
                        generation: Some(generation),
                    })?
            }
            Err(error) => {
                return Err(StepError::Remote {
                    error,
                    generation: None,
                })
            }
        };
        match moved {
            Some(moved) => {
                let new_id = moved.id.clone();
                self.state.lock().uploaded_files.insert(row.id, moved);
                let (parent, name) = (row.parent.clone(), row.name.clone());
                self.modify(row.id, |r| {
                    r.progress = Progress::Uploaded {
                        id: new_id,
                        generation,
                        parent,
                        name,
                        size,
                    };
                })?;
            }
            None => {
                tracing::warn!(entry = %row.id, name = %row.name,
                    "the uploaded copy disappeared before it could be moved; uploading again");
                self.modify(row.id, |r| r.progress = Progress::Idle)?;
            }
        }
        Ok(())
    }

    async fn remove_obsolete(&self, row: &EntryRecord, file: FileId) -> Result<(), StepError> {
        match self.remote.remove_file(&file).await {
            Ok(()) | Err(RemoteError::NotFound(_)) => {}
            Err(error) => {
                return Err(StepError::Remote {
                    error,
                    generation: None,
                })
            }
        }
        self.modify(row.id, |r| r.obsolete.retain(|(f, _)| f != &file))?;
        Ok(())
    }

    async fn upload(&self, row: &EntryRecord) -> Result<(), StepError> {
        match self.keep_identical_base(row).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(UnchangedError::Remote(error)) if error.is_retryable() => {
                return Err(StepError::Remote {
                    error,
                    generation: None,
                })
            }
            // The comparison cannot be made: upload, which is always right.
            Err(UnchangedError::Remote(error)) => {
                tracing::debug!(entry = %row.id, %error, "cannot compare with the remote file");
            }
            Err(UnchangedError::Local(error)) => return Err(StepError::Local(error)),
        }
        let generation = row.generation;
        let (parent, name) = (row.parent.clone(), row.name.clone());
        let size = self.staging.len(row.id).map_err(WriteBackError::from)?;
        let started_ms = now_ms();
        self.modify(row.id, |r| {
            r.progress = Progress::Uploading {
                generation,
                parent: parent.clone(),
                name: name.clone(),
                size,
                started_ms,
            };
        })?;
        tracing::info!(entry = %row.id, name = %name, size, "uploading");
        let source = UploadSource::Path(self.staging.path(row.id));
        let sent = Arc::new(AtomicU64::new(0));
        self.state.lock().sending.insert(row.id, sent.clone());
        let progress: ProgressFn = Arc::new(move |so_far| sent.store(so_far, Ordering::Relaxed));
        let result = self
            .remote
            .upload(&parent, &name, source, Some(progress))
            .await;
        self.state.lock().sending.remove(&row.id);
        match result {
            Ok(file) => {
                tracing::info!(entry = %row.id, name = %name, id = %file.id, "uploaded");
                let file_id = file.id.clone();
                {
                    let mut state = self.state.lock();
                    state.uploaded_files.insert(row.id, file);
                    state.failures.remove(&row.id);
                    state
                        .succeeded_after
                        .insert(row.id, row.attempts.saturating_add(1));
                }
                self.modify(row.id, |r| {
                    r.progress = Progress::Uploaded {
                        id: file_id,
                        generation,
                        parent: parent.clone(),
                        name,
                        size,
                    };
                    r.attempts = 0;
                    r.retry_at_ms = 0;
                    r.last_error = None;
                })?;
                Ok(())
            }
            Err(error) => {
                if !error.is_retryable() {
                    // A refusal: the service stored nothing.
                    self.modify(row.id, |r| r.progress = Progress::Idle)?;
                }
                // Otherwise stay "uploading": the next attempt first checks
                // whether the service got the file before the failure.
                Err(StepError::Remote {
                    error,
                    generation: Some(generation),
                })
            }
        }
    }

    fn hold(&self, id: EntryId) -> Result<(), StepError> {
        self.modify(id, |row| {
            if row.state == EntryState::Queued && row.size == 0 {
                row.state = EntryState::Held;
            }
        })?;
        Ok(())
    }

    /// Deletes a finished entry. Re-checks under the lock, because the mount
    /// may have reopened or renamed it since the step was decided.
    fn finalize(&self, id: EntryId) -> Result<bool, WriteBackError> {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        let Some(row) = state.rows.get(&id) else {
            return Ok(true);
        };
        let writers = state.writers.get(&id).copied().unwrap_or(0);
        if writers > 0 || !matches!(self.decide(row), Step::Finalize) {
            return Ok(false);
        }
        let Progress::Uploaded {
            id: file_id, size, ..
        } = row.progress.clone()
        else {
            return Ok(false);
        };
        let parent = row.parent.clone();
        let name = row.name.clone();
        let mtime = row.mtime;
        let answered = state.uploaded_files.get(&id).cloned();
        let file = answered.unwrap_or_else(|| FileEntry {
            id: file_id,
            name,
            size,
            modified: Utc::now(),
            checksum: None,
            mime: None,
            share_link: None,
            expires: None,
        });
        // Before the journal forgets the entry: what the mount keeps about
        // the file (its mtime, its metadata record) moves to the uploaded
        // file first, and a crash in between repeats this step.
        self.emit(WriteEvent::Finalizing {
            entry: id,
            file: file.clone(),
            mtime,
        });
        state.journal.delete(id)?;
        state.uploaded_files.remove(&id);
        tracing::info!(entry = %id, name = %file.name, id = %file.id, "upload complete");
        let attempts = state.succeeded_after.get(&id).copied().unwrap_or(1);
        view::remember_finished(&mut state.finished, id, &parent, &file, attempts);
        // The hand-over happens while the entry still exists and under the
        // lock: whoever asks the queue about this entry sees either the
        // pending file or (after the lock) a mount that already shows the
        // remote file. Forgetting first left a moment where the mount's
        // node had neither, and answered stale attributes (size 0 from
        // create) or listed the uploaded file as a second inode. The
        // listener only touches the mount's own tables, never the queue.
        self.emit(WriteEvent::Finalized {
            entry: id,
            parent,
            file,
        });
        state.forget(id);
        drop(guard);
        if let Err(err) = self.staging.remove(id) {
            // Harmless: removed as an orphan at the next start.
            tracing::warn!(entry = %id, "could not remove staging file: {err}");
        }
        Ok(true)
    }

    fn drop_cancelled(&self, id: EntryId) -> Result<(), StepError> {
        let mut state = self.state.lock();
        let Some(row) = state.rows.get(&id) else {
            return Ok(());
        };
        if !matches!(self.decide(row), Step::Drop) {
            return Ok(());
        }
        state
            .journal
            .delete(id)
            .map_err(|e| StepError::Local(e.into()))?;
        state.forget(id);
        drop(state);
        self.staging
            .remove(id)
            .map_err(|e| StepError::Local(e.into()))?;
        Ok(())
    }

    fn record_failure(&self, row: &EntryRecord, error: RemoteError, generation: Option<u64>) {
        let permanent = !error.is_retryable();
        let attempts = row.attempts.saturating_add(1);
        let wait = if permanent {
            self.options.permanent_retry
        } else {
            backoff(self.options.retry_base, self.options.retry_max, attempts)
        };
        let wait = match &error {
            RemoteError::RateLimited {
                wait: Some(hint), ..
            } => wait.max(*hint),
            _ => wait,
        };
        tracing::warn!(
            entry = %row.id, name = %row.name, attempts, retry_in = ?wait,
            "write-back step failed; kept in the queue: {error}"
        );
        let message = error.to_string();
        let saved = self.modify(row.id, |r| {
            r.attempts = attempts;
            r.last_error = Some(message);
            r.retry_at_ms = now_ms().saturating_add(duration_ms(wait));
        });
        if let Err(err) = saved {
            tracing::error!(entry = %row.id, "could not record a failure in the journal: {err}");
        }
        let mut state = self.state.lock();
        // The fsync callers get this failure; the entry goes back to its
        // backoff instead of being retried at once.
        state.urgent.remove(&row.id);
        state.failure_seq += 1;
        let seq = state.failure_seq;
        state.failures.insert(
            row.id,
            Failure {
                generation,
                error,
                seq,
            },
        );
    }
}

enum StepError {
    Remote {
        error: RemoteError,
        /// The content generation an upload-related step was about.
        generation: Option<u64>,
    },
    Local(WriteBackError),
}

impl From<WriteBackError> for StepError {
    fn from(err: WriteBackError) -> Self {
        StepError::Local(err)
    }
}

/// `base * 2^(attempts-1)`, capped, with ±25 % jitter so that many entries
/// failing together do not retry in lockstep.
fn backoff(base: Duration, max: Duration, attempts: u32) -> Duration {
    let exponent = attempts.saturating_sub(1).min(20);
    let raw = base.saturating_mul(1u32 << exponent).min(max);
    let jitter = rand::thread_rng().gen_range(0.75..=1.25);
    raw.mul_f64(jitter).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let base = Duration::from_secs(2);
        let max = Duration::from_secs(60);
        for attempts in 1..40 {
            let wait = backoff(base, max, attempts);
            assert!(wait <= max, "{wait:?} over the cap");
            let nominal = base
                .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
                .min(max);
            assert!(wait >= nominal.mul_f64(0.75), "{wait:?} below {nominal:?}");
        }
    }
}
