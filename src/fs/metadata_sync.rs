//! `--metadata-sync`: the metadata store's records shared between machines
//! through one hidden file per remote folder (its name and format:
//! [`crate::metadata::sync`]; the listing layer keeps it out of every
//! listing, see [`crate::cache::meta`]).
//!
//! # Reading
//!
//! When a folder's listing is fetched and shows a sync file this mount has
//! not read yet, the file is downloaded (it is small) and its records are
//! merged into the store before the listing answers: last writer wins per
//! file, by each record's own change time. A record whose content guard
//! does not name what the listing shows now (the file was replaced by
//! another client) is ignored, as is a record of a file the folder does
//! not hold.
//!
//! # Writing
//!
//! A change kept through this mount (`touch`, `chmod`, `chown`, `setfattr`,
//! an upload that finished, a move into another folder) marks the folder
//! showing the node as changed. A folder's file is written once no change
//! has come for the write-back delay (`--write-back`), or at the latest a
//! minute after its first unwritten change, and at unmount. Writing lists
//! the folder anew, merges the sync files it shows (so another machine's
//! records are never dropped), uploads the new file through the remote's
//! pacer, then removes the files it replaces: the name is never missing on
//! the service, and two machines writing at once leave two files, which the
//! next reader merges and the next writer replaces. A failed write is
//! logged and retried with a growing wait; the records stay in the local
//! store whatever happens. A file of a newer format, or one another program
//! wrote under our name, is never replaced; a damaged one (not JSON of the
//! expected shape) is.
//!
//! The mount root's own record goes into its own file (its parent is not
//! part of the mount); every other node's into its parent folder's file.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::error::Error;
use super::inode::ROOT_INO;
use super::metadata_sync_state::{Digest32, WriteOutcome};
use super::state::FsState;
use crate::cache::meta::FetchedListing;
use crate::metadata::sync::{decode, encode, FolderRecords, SyncFormatError, SYNC_FILE_NAME};
use crate::metadata::{ContentGuard, Record, RecordKey};
use crate::remote::pacer::{with_priority, Priority};
use crate::remote::{FileEntry, FileId, FolderId, RemoteError, UploadSource};

/// Larger sync files are not read (about 300,000 records): a file of that
/// size was not written by this program.
const MAX_SYNC_FILE: u64 = 64 << 20;

/// What a write of one folder did.
#[derive(Debug, PartialEq, Eq)]
enum Written {
    /// A new file uploaded (and the old ones removed).
    Uploaded,
    /// The file on the service already holds these records.
    Unchanged,
    /// No record to share: the old files were removed, none uploaded.
    Emptied,
    /// Nothing to share and no file there (or the folder is gone).
    Nothing,
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Fs(#[from] Error),
    #[error("sync file {id}: {source}")]
    Format { id: FileId, source: SyncFormatError },
    #[error("sync file {0} is larger than any this program writes")]
    TooLarge(FileId),
}

impl SyncError {
    /// A folder whose file must not be replaced: retrying later does not
    /// help, only a newer program (or removing the foreign file) does.
    fn refuses_writing(&self) -> bool {
        matches!(
            self,
            SyncError::Format {
                source: SyncFormatError::TooNew(_) | SyncFormatError::NotOurs(_),
                ..
            } | SyncError::TooLarge(_)
        )
    }
}

/// Starts the mount's sync writer (with `--metadata-sync`). It holds the
/// state only while it works, so the mount's end ends it too.
pub(crate) fn start(state: &Arc<FsState>) {
    if let Some(sync) = &state.sync {
        let state = Arc::downgrade(state);
        sync.start_writer(move || tokio::spawn(run_writer(state)));
    }
}

/// Where the record of node `ino` is shared: the folder showing it (the
/// mount root's own record: its own folder).
fn folder_showing(state: &FsState, ino: u64) -> Option<FolderId> {
    let node = state.inodes.get(ino)?;
    if ino == ROOT_INO {
        return node.folder_id().cloned();
    }
    state.inodes.get(node.parent)?.folder_id().cloned()
}

/// A node's record changed through this mount: its folder's sync file is
/// to be written (nothing without `--metadata-sync`).
pub(crate) fn node_changed(state: &FsState, ino: u64) {
    if let (Some(sync), Some(folder)) = (&state.sync, folder_showing(state, ino)) {
        sync.changed(&folder);
    }
}

/// Folder `folder` gained a node with a record (an upload finished, a
/// file moved in).
pub(crate) fn folder_changed(state: &FsState, folder: &FolderId) {
    if let Some(sync) = &state.sync {
        sync.changed(folder);
    }
}

/// Whether `fetched` shows sync files this mount should read before
/// answering from it.
pub(crate) fn has_unread(state: &FsState, fetched: &FetchedListing) -> bool {
    state
        .sync
        .as_ref()
        .is_some_and(|sync| !sync.unread(fetched).is_empty())
}

/// Reads the sync files `fetched` (the listing of `folder`) shows that this
/// mount has not merged yet, and merges their records. Failures are
/// logged: the listing answers anyway.
pub(crate) async fn read_unread(state: &FsState, folder: &FolderId, fetched: &FetchedListing) {
    let Some(sync) = &state.sync else {
        return;
    };
    for file in sync.claim_reads(sync.unread(fetched)) {
        let outcome = read_one(state, folder, fetched, &file).await;
        match &outcome {
            Ok((_, taken)) => {
                debug!(folder = %folder, file = %file.id, taken, "merged a metadata sync file")
            }
            // Replaced by its writer since the listing.
            Err(SyncError::Remote(RemoteError::NotFound(_))) => {
                debug!(folder = %folder, file = %file.id, "metadata sync file gone")
            }
            Err(error) => {
                warn!(folder = %folder, file = %file.id, %error, "cannot read the folder's metadata sync file")
            }
        }
        sync.read_done(&file.id, outcome.ok().map(|(digest, _)| digest));
    }
}

/// Downloads and merges one sync file: its digest and how many records won.
async fn read_one(
    state: &FsState,
    folder: &FolderId,
    fetched: &FetchedListing,
    file: &FileEntry,
) -> Result<(Digest32, usize), SyncError> {
    let bytes = download(state, file).await?;
    let decoded = decode(&bytes).map_err(|source| SyncError::Format {
        id: file.id.clone(),
        source,
    })?;
    if decoded.skipped > 0 {
        debug!(file = %file.id, skipped = decoded.skipped, "skipped unreadable records of a metadata sync file");
    }
    let current = current_guards(folder, fetched);
    let applicable: Vec<(RecordKey, Record)> = decoded
        .records
        .into_iter()
        .filter(|(key, record)| current.get(key) == Some(&record.guard))
        .collect();
    let metadata = state.metadata.clone();
    let taken = tokio::task::spawn_blocking(move || {
        let mut taken = 0;
        for (key, record) in &applicable {
            match metadata.merge_synced(key, record) {
                Ok(true) => taken += 1,
                Ok(false) => {}
                Err(error) => warn!(%key, %error, "cannot keep a synced metadata record"),
            }
        }
        taken
    })
    .await
    .map_err(Error::from)?;
    Ok((digest_of(&bytes), taken))
}

async fn download(state: &FsState, file: &FileEntry) -> Result<Vec<u8>, SyncError> {
    if file.size > MAX_SYNC_FILE {
        return Err(SyncError::TooLarge(file.id.clone()));
    }
    let mut stream = state.remote.download_range(&file.id, 0, file.size).await?;
    let mut bytes = Vec::with_capacity(file.size as usize);
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk?);
        if bytes.len() as u64 > MAX_SYNC_FILE {
            return Err(SyncError::TooLarge(file.id.clone()));
        }
    }
    Ok(bytes)
}

/// The key and current content guard of everything a folder's sync file
/// may describe: the files and folders its listing shows, and the folder.
fn current_guards(folder: &FolderId, fetched: &FetchedListing) -> HashMap<RecordKey, ContentGuard> {
    let listing = &fetched.listing;
    let files = listing.files.iter().map(|file| {
        (
            RecordKey::File(file.id.clone()),
            ContentGuard::for_file(file),
        )
    });
    let folders = listing
        .folders
        .iter()
        .map(|child| &child.id)
        .chain(std::iter::once(folder))
        .map(|id| (RecordKey::Folder(id.clone()), ContentGuard::Folder));
    files.chain(folders).collect()
}

fn digest_of(bytes: &[u8]) -> Digest32 {
    Sha256::digest(bytes).into()
}

/// Writes one folder's sync file (see the module).
async fn write_folder(state: &FsState, folder: &FolderId) -> Result<Written, SyncError> {
    let Some(sync) = &state.sync else {
        return Ok(Written::Nothing);
    };
    let fetched = match state.meta.fetch_now(folder).await {
        Ok(fetched) => fetched,
        // The folder is gone, and its records with it.
        Err(RemoteError::NotFound(_)) => return Ok(Written::Nothing),
        Err(error) => return Err(error.into()),
    };
    // Everything the service holds now is merged first; a file that cannot
    // be read is not replaced (the write is retried).
    let mut old = Vec::new();
    for file in &fetched.sync_files {
        if !sync.is_merged(&file.id) {
            match read_one(state, folder, &fetched, file).await {
                Ok((digest, _)) => sync.merged(&file.id, digest),
                // Replaced by another machine since the listing.
                Err(SyncError::Remote(RemoteError::NotFound(_))) => continue,
                // Damaged: nothing in it can be kept, so it is replaced.
                Err(
                    error @ SyncError::Format {
                        source: SyncFormatError::Malformed(_),
                        ..
                    },
                ) => warn!(folder = %folder, %error, "replacing a damaged metadata sync file"),
                Err(error) => return Err(error),
            }
        }
        old.push(file.id.clone());
    }
    let wanted: Vec<(RecordKey, ContentGuard)> =
        current_guards(folder, &fetched).into_iter().collect();
    let metadata = state.metadata.clone();
    let records: FolderRecords = tokio::task::spawn_blocking(move || metadata.stored(&wanted))
        .await
        .map_err(Error::from)?
        .map_err(Error::from)?
        .into_iter()
        .collect::<BTreeMap<_, _>>();
    if records.is_empty() {
        if old.is_empty() {
            return Ok(Written::Nothing);
        }
        remove_all(state, folder, &old).await;
        return Ok(Written::Emptied);
    }
    let bytes = encode(&records);
    let digest = digest_of(&bytes);
    if let [only] = old.as_slice() {
        if sync.holds(only, &digest) {
            return Ok(Written::Unchanged);
        }
    }
    let size = bytes.len() as u64;
    let source = UploadSource::Reader {
        reader: Box::pin(std::io::Cursor::new(bytes)),
        size,
    };
    let uploaded = state
        .remote
        .upload(folder, SYNC_FILE_NAME, source, None)
        .await?;
    sync.merged(&uploaded.id, digest);
    debug!(folder = %folder, records = records.len(), file = %uploaded.id, "wrote the folder's metadata sync file");
    let replaced: Vec<FileId> = old.into_iter().filter(|id| *id != uploaded.id).collect();
    remove_all(state, folder, &replaced).await;
    Ok(Written::Uploaded)
}

/// Removes replaced sync files; one that stays is merged and replaced by
/// the next write.
async fn remove_all(state: &FsState, folder: &FolderId, files: &[FileId]) {
    for file in files {
        match state.remote.remove_file(file).await {
            Ok(()) | Err(RemoteError::NotFound(_)) => {}
            Err(error) => {
                warn!(folder = %folder, %file, %error, "cannot remove a replaced metadata sync file")
            }
        }
    }
}

/// Writes one folder now and books the outcome.
async fn write_and_book(state: &FsState, folder: FolderId, generation: u64) {
    let outcome = match write_folder(state, &folder).await {
        Ok(written) => {
            debug!(folder = %folder, ?written, "metadata sync");
            WriteOutcome::Done
        }
        Err(error) if error.refuses_writing() => {
            warn!(
                folder = %folder, %error,
                "not sharing this folder's metadata: its sync file is not one this program may replace"
            );
            WriteOutcome::Refused
        }
        Err(error) => {
            warn!(folder = %folder, %error, "cannot write the folder's metadata sync file; retrying later");
            WriteOutcome::Failed
        }
    };
    if let Some(sync) = &state.sync {
        sync.written(&folder, generation, outcome);
    }
}

/// The writer: writes each changed folder when it is due.
async fn run_writer(state: Weak<FsState>) {
    loop {
        let Some(strong) = state.upgrade() else {
            return;
        };
        let Some(sync) = &strong.sync else {
            return;
        };
        match sync.next_due() {
            Ok((folder, generation)) => {
                // Nobody waits on it: reads waiting for the pacer go first.
                let write = write_and_book(&strong, folder, generation);
                with_priority(Priority::Background, write).await
            }
            Err(next) => {
                // A change made meanwhile left a permit: no wake-up is lost.
                let wake = sync.wake();
                drop(strong);
                match next {
                    Some(due) => {
                        tokio::select! {
                            () = wake.notified() => {}
                            () = tokio::time::sleep_until(due) => {}
                        }
                    }
                    None => wake.notified().await,
                }
            }
        }
    }
}

/// Stops the writer (a killed mount).
pub(crate) async fn stop(state: &FsState) {
    if let Some(sync) = &state.sync {
        sync.stop_writer().await;
    }
}

/// At unmount: writes every changed folder now (one attempt each), until
/// `deadline`.
pub(crate) async fn write_all(state: &FsState, deadline: Instant) {
    let Some(sync) = &state.sync else {
        return;
    };
    // The writer would race this for the same folders.
    sync.stop_writer().await;
    for (folder, generation) in sync.all_waiting() {
        let write = write_and_book(state, folder, generation);
        if tokio::time::timeout_at(deadline, write).await.is_err() {
            break;
        }
    }
    let left = sync.waiting_count();
    if left > 0 {
        warn!(
            folders = left,
            "metadata changes of some folders were not shared before unmount; they stay in \
             this machine's store and are shared with each folder's next change"
        );
    } else {
        info!("metadata sync: nothing left to share");
    }
}
