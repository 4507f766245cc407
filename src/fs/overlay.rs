//! The pending-file overlay on listings: a folder as the mount shows it is
//! the service's listing, minus the remote files pending uploads replace,
//! plus the pending files themselves.

use std::time::Duration;

use tracing::{debug, warn};

use super::error::Error;
use super::inode::{LocalFile, NodeKind};
use super::state::FsState;
use crate::cache::meta::FetchedListing;
use crate::remote::{FileEntry, FolderId};
use crate::writeback::{PendingFile, WriteEvent};

/// Reacts to the queue's news: a finished upload turns its local node into
/// the remote file (same inode).
pub(crate) fn on_write_event(state: &FsState, event: &WriteEvent) {
    let (entry, file) = match event {
        WriteEvent::Finalizing { entry, file, mtime } => {
            return super::metadata_overlay::finish_upload(state, *entry, file, *mtime);
        }
        WriteEvent::Finalized {
            entry,
            file,
            parent,
        } => {
            // A listing of the folder requested before now lacks the file.
            if let Some(dir) = state.inodes.folder_ino(parent) {
                state.inodes.note_changed(dir);
            }
            // The new file's record (its writer's mtime at least) is to be
            // shared.
            super::metadata_sync::folder_changed(state, parent);
            (entry, file)
        }
    };
    // The node turns into the remote file before its link goes: a
    // reader that finds no link then always finds the remote file
    // (see `FsState::attr`), never a local node without a pending file.
    let ino = state.write.entry_of_entry(*entry);
    if let Some(ino) = ino {
        if let Err(error) = state.inodes.set_kind(ino, NodeKind::File(file.clone())) {
            debug!(ino, %error, "finished upload of a node no longer shown");
        }
    }
    state.write.links.lock().remove_entry(*entry);
}

/// Applies a folder listing to the inode table with the pending uploads
/// laid over it: remote files that a pending file replaces are hidden, and
/// pending files (including those found in the journal at start-up) shown.
pub(crate) fn apply_listing(
    state: &FsState,
    dir: u64,
    folder: &FolderId,
    fetched: &FetchedListing,
) -> Result<(), Error> {
    if state.inodes.applied_serial(dir) == Some(fetched.serial) {
        return Ok(());
    }
    let hidden = state.write.queue.hidden_remote_ids();
    let uploading = state.write.queue.names_uploading_in(folder);
    let is_hidden = |f: &FileEntry| hidden.contains(&f.id) || uploading.contains(&f.name);
    if fetched.listing.files.iter().any(is_hidden) {
        let mut listing = fetched.listing.clone();
        listing.files.retain(|f| !is_hidden(f));
        let visible = FetchedListing::new(listing, fetched.fresh_until, fetched.serial);
        state.inodes.apply_listing(dir, &visible)?;
    } else {
        state.inodes.apply_listing(dir, fetched)?;
    }
    for pending in state.write.queue.pending_in(folder) {
        show_pending(state, dir, &pending);
    }
    Ok(())
}

/// Makes sure a pending file has a local node in folder `dir`.
fn show_pending(state: &FsState, dir: u64, pending: &PendingFile) {
    let known = state.write.entry_of_entry(pending.id);
    if known.is_some() {
        return;
    }
    let local = LocalFile {
        size: pending.size,
        modified: pending.mtime,
    };
    // A remote file of the same name that the journal does not know yet
    // (e.g. the unrecorded copy of an interrupted upload) gives way.
    let node = match state.inodes.show_local(dir, &pending.name, local.clone()) {
        Ok(node) => node,
        Err(_) => {
            state.inodes.hide_child(dir, &pending.name);
            match state.inodes.show_local(dir, &pending.name, local) {
                Ok(node) => node,
                Err(error) => {
                    warn!(name = %pending.name, %error, "cannot show a pending file");
                    return;
                }
            }
        }
    };
    state.write.links.lock().insert(node.ino, pending.id);
}

/// How many times a listing that predates the mount's own change is
/// requested again before the table keeps its view.
const STALE_LISTING_RETRIES: usize = 3;

impl FsState {
    /// If folder `dir`'s listing is cached and fresh, makes sure the inode
    /// table shows it and returns how long it stays fresh.
    pub(crate) fn fresh_listing(&self, dir: u64) -> Option<Duration> {
        let node = self.inodes.get(dir)?;
        let folder = node.folder_id()?;
        let fetched = self.meta.fresh(folder)?;
        // Read before the check below: a change landing after it is seen.
        let before = self.inodes.changed_at(dir);
        let is_new = self.inodes.applied_serial(dir) != Some(fetched.serial);
        if is_new && fetched.serial < before {
            // Listed anew off the kernel loop.
            return None;
        }
        if super::metadata_sync::has_unread(self, &fetched) {
            // Its metadata sync file is read first, off the kernel loop.
            return None;
        }
        apply_listing(self, dir, folder, &fetched).ok()?;
        if is_new && self.inodes.changed_at(dir) != before {
            // An upload finished while the pending files were laid over
            // the listing: list again, off the kernel loop.
            return None;
        }
        Some(self.meta.remaining_ttl(&fetched))
    }

    /// Lists folder `dir` (from cache or the service) into the inode table;
    /// returns how long the listing stays fresh.
    pub async fn ensure_listing(&self, dir: u64) -> Result<Duration, Error> {
        let node = self.inodes.get(dir).ok_or(Error::NoSuchInode(dir))?;
        let folder = node.folder_id().ok_or(Error::NotADirectory)?.clone();
        // A listing requested before this mount's own last change there
        // (an upload finishing while it was in flight), or one laid over
        // pending files while an upload finished, would undo the change (the
        // file vanishing, or shown as a pending file the queue no longer
        // has): list again, a bounded number of times (a folder changed
        // without pause keeps the table's own view, see `apply_listing`).
        let mut tries = 0;
        loop {
            tries += 1;
            let last_try = tries > STALE_LISTING_RETRIES;
            let fetched = self.meta.listing(&folder).await?;
            // Read before the check below, and before the waits that
            // follow it: a change landing meanwhile (an upload finishing)
            // is seen after the listing is applied, and it is listed again.
            let before = self.inodes.changed_at(dir);
            // Only a listing not applied yet can undo anything.
            let is_new = self.inodes.applied_serial(dir) != Some(fetched.serial);
            if is_new && !last_try && fetched.serial < before {
                self.meta.invalidate(&folder);
                continue;
            }
            if is_new {
                // A listing new to this mount: what other mounts of the
                // account kept for its files meanwhile shows with it.
                tokio::task::spawn_blocking(self.metadata.reload_shared()).await?;
            }
            super::metadata_sync::read_unread(self, &folder, &fetched).await;
            apply_listing(self, dir, &folder, &fetched)?;
            if is_new && !last_try && self.inodes.changed_at(dir) != before {
                self.meta.invalidate(&folder);
                continue;
            }
            return Ok(self.meta.remaining_ttl(&fetched));
        }
    }
}
