//! Start-up recovery: what a previous mount left in the journal becomes
//! the queue's rows again (see the crash-recovery notes in the module doc).

use std::collections::{BTreeMap, HashSet};

use super::journal::{now_ms, EntryRecord, EntryState, Journal, ObsoleteReason, Progress};
use super::staging::StagingDir;
use super::{EntryId, PendingFile, Recovery, WriteBackError};

/// Loads every journaled entry, drops those that cannot be completed,
/// requeues those whose writer died, and removes orphan staging files.
pub(super) fn recover(
    journal: Journal,
    staging: &StagingDir,
) -> Result<(Journal, BTreeMap<EntryId, EntryRecord>, Recovery), WriteBackError> {
    let mut journal = journal;
    let mut recovery = Recovery::default();
    let mut rows = BTreeMap::new();
    let now = now_ms();
    for mut record in journal.load_all()? {
        let content_needed = match &record.progress {
            Progress::Uploaded { generation, .. } => {
                *generation != record.generation || record.state == EntryState::Open
            }
            _ => record.state != EntryState::Cancelled,
        };
        if content_needed && !staging.exists(record.id) {
            tracing::error!(
                entry = %record.id, name = %record.name,
                "staging file of a pending upload is missing; dropping the entry and leaving the remote untouched"
            );
            journal.delete(record.id)?;
            recovery.lost.push(PendingFile::from_record(&record));
            continue;
        }
        let never_released_copy = record.state == EntryState::Open
            && record.generation == 0
            && record
                .obsolete
                .iter()
                .any(|(_, r)| *r == ObsoleteReason::Base);
        if never_released_copy {
            // A remote file opened for writing and never closed: its
            // staging copy may be half-filled, and nothing written to it
            // was ever promised durable. The remote version stays.
            tracing::warn!(
                entry = %record.id, name = %record.name,
                "discarding unreleased writes to an existing file (the process stopped while it was open)"
            );
            journal.delete(record.id)?;
            recovery.lost.push(PendingFile::from_record(&record));
            continue;
        }
        if record.state == EntryState::Open {
            // The writer died with a new file open: keep what reached the
            // staging file, as a new generation (it may differ from any
            // upload recorded earlier).
            record.state = EntryState::Queued;
            record.size = staging.len(record.id)?;
            record.generation += 1;
            record.not_before_ms = now;
            journal.save(&record)?;
        }
        if record.state == EntryState::Held && record.obsolete.is_empty() {
            recovery.placeholders += 1;
        } else {
            recovery.resumed.push(PendingFile::from_record(&record));
        }
        rows.insert(record.id, record);
    }
    let known: HashSet<EntryId> = rows.keys().copied().collect();
    recovery.orphans_removed = staging.remove_orphans(&known)?;
    if !recovery.resumed.is_empty() {
        tracing::info!(
            count = recovery.resumed.len(),
            "resuming pending uploads from the write-back journal"
        );
    }
    Ok((journal, rows, recovery))
}
