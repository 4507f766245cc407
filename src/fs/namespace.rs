//! Namespace changes: mkdir, rmdir, unlink and rename. They go to the
//! service at once (a pending file is moved or cancelled in the write-back
//! queue instead). Each checks what it can at once and returns the rest as
//! a future answering `Result<_, fs::Error>`, which the adapter runs off
//! the kernel loop and [`super::Core`] simply awaits.
//!
//! Choices where POSIX and the services disagree:
//! - `RENAME_EXCHANGE` is refused (`EINVAL`); a move across folders on a
//!   service that cannot move files answers `EXDEV`, so `mv` copies instead.
//! - A rename onto an existing file moves the source first and removes the
//!   replaced file after, so the name is never missing.
//! - mkdir on a service without folders: `EPERM`.
//! - the metadata sync file's name (`.filehostfs-metadata.json`) cannot be
//!   given to a new file or folder, nor be a rename's target: `EPERM`.

use std::ffi::OsStr;
use std::future::Future;
use std::sync::Arc;

use tracing::debug;

use super::error::Error;
use super::inode::{Node, NodeKind};
use super::state::FsState;
use crate::metadata::sync::SYNC_FILE_NAME;
use crate::remote::{FolderId, RemoteError};
use crate::writeback::{EntryId, Replaced, WriteBackError};

/// `renameat2` flags (linux/fs.h).
const RENAME_NOREPLACE: u32 = 1;
const RENAME_EXCHANGE: u32 = 2;
fn utf8_name(name: &OsStr) -> Result<String, Error> {
    // Remote names are UTF-8: anything else cannot be stored.
    name.to_str()
        .map(str::to_owned)
        .ok_or(Error::InvalidArgument)
}

/// A name for a new file or folder: EINVAL when the service could never
/// store it (after the remote layer's reversible encoding), ENAMETOOLONG
/// when it is too long for the service; EPERM for the metadata sync file's
/// name, reserved in every folder of every mount (the listing layer hides a
/// file of that name: one created here would vanish).
pub(super) fn storable_name(state: &FsState, name: &OsStr) -> Result<String, Error> {
    let name = utf8_name(name)?;
    if name == SYNC_FILE_NAME {
        return Err(Error::NotPermitted);
    }
    state.remote.check_name(&name)?;
    Ok(name)
}

/// ENAMETOOLONG when `name` is longer than the service stores; any other
/// objection to the name is left to the operation.
pub(super) fn refuse_too_long(state: &FsState, name: &str) -> Result<(), Error> {
    match state.remote.check_name(name) {
        Err(error @ RemoteError::NameTooLong(_)) => Err(error.into()),
        _ => Ok(()),
    }
}

pub(super) fn folder_of(state: &FsState, ino: u64) -> Result<FolderId, Error> {
    let node = state.inodes.get(ino).ok_or(Error::NotFound)?;
    node.folder_id().cloned().ok_or(Error::NotADirectory)
}

/// The node `name` stands for in folder `parent`: ENOENT when there is
/// none (a name that is not UTF-8 cannot be there).
fn existing_child(state: &FsState, parent: u64, name: &OsStr) -> Result<(String, Node), Error> {
    let name = name.to_str().map(str::to_owned).ok_or(Error::NotFound)?;
    let node = state.inodes.child(parent, &name).ok_or(Error::NotFound)?;
    Ok((name, node))
}

pub(crate) fn mkdir(
    state: &Arc<FsState>,
    parent: u64,
    name: &OsStr,
) -> Result<impl Future<Output = Result<Node, Error>> + Send + 'static, Error> {
    let name = storable_name(state, name)?;
    let folder = folder_of(state, parent)?;
    if !state.remote.capabilities().folders {
        return Err(Error::NotPermitted);
    }
    if state.inodes.child(parent, &name).is_some() {
        return Err(Error::AlreadyExists);
    }
    let state = state.clone();
    Ok(async move {
        match state.remote.create_folder(&folder, &name).await {
            Ok(created) => Ok(state.inodes.insert_folder(parent, &name, &created)?),
            Err(error) => {
                debug!(%name, %error, "mkdir failed");
                Err(error.into())
            }
        }
    })
}

pub(crate) fn unlink(
    state: &Arc<FsState>,
    parent: u64,
    name: &OsStr,
) -> Result<impl Future<Output = Result<(), Error>> + Send + 'static, Error> {
    let (name, node) = existing_child(state, parent, name)?;
    let state = state.clone();
    Ok(async move {
        remove_file_node(&state, &node).await?;
        state.inodes.remove_child(parent, &name);
        Ok(())
    })
}

/// Removes what a file node stands for: cancels its pending upload (and
/// the remote version it replaced), or removes the remote file.
async fn remove_file_node(state: &Arc<FsState>, node: &Node) -> Result<(), Error> {
    if let Some(entry) = state.write.entry_of(node.ino) {
        let queue = state.write.queue.clone();
        tokio::task::spawn_blocking(move || queue.unlink(entry)).await??;
        state.write.links.lock().remove_ino(node.ino);
        return Ok(());
    }
    match &node.kind {
        NodeKind::File(file) if state.write.queue.is_read(&file.id) => {
            // Open handles go on reading it (POSIX): the queue removes it
            // after their last close, or at the next start if the process
            // dies first.
            let folder = folder_of(state, node.parent)?;
            let (queue, name, id) = (
                state.write.queue.clone(),
                node.name.clone(),
                file.id.clone(),
            );
            tokio::task::spawn_blocking(move || queue.remove_once_unread(&folder, &name, id))
                .await??;
            Ok(())
        }
        NodeKind::File(file) => match state.remote.remove_file(&file.id).await {
            Ok(()) | Err(RemoteError::NotFound(_)) => Ok(()),
            Err(error) => Err(error.into()),
        },
        NodeKind::Folder { .. } => Err(Error::IsADirectory),
        NodeKind::Local(_) => Ok(()),
    }
}

pub(crate) fn rmdir(
    state: &Arc<FsState>,
    parent: u64,
    name: &OsStr,
) -> Result<impl Future<Output = Result<(), Error>> + Send + 'static, Error> {
    let (name, node) = existing_child(state, parent, name)?;
    let folder = node.folder_id().cloned().ok_or(Error::NotADirectory)?;
    let state = state.clone();
    Ok(async move {
        remove_empty_folder(&state, node.ino, &folder).await?;
        state.inodes.remove_child(parent, &name);
        Ok(())
    })
}

async fn remove_empty_folder(
    state: &Arc<FsState>,
    ino: u64,
    folder: &FolderId,
) -> Result<(), Error> {
    // Look at the folder as it is now, not as a cached listing remembers it.
    state.meta.invalidate(folder);
    state.ensure_listing(ino).await?;
    let has_children = !state.inodes.children(ino)?.is_empty();
    if has_children || !state.write.queue.pending_in(folder).is_empty() {
        return Err(Error::NotEmpty);
    }
    match state.remote.remove_folder(folder).await {
        Ok(()) | Err(RemoteError::NotFound(_)) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

pub(crate) fn rename(
    state: &Arc<FsState>,
    parent: u64,
    name: &OsStr,
    new_parent: u64,
    new_name: &OsStr,
    flags: u32,
) -> Result<impl Future<Output = Result<(), Error>> + Send + 'static, Error> {
    if flags & RENAME_EXCHANGE != 0 || flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0 {
        return Err(Error::InvalidArgument);
    }
    let name = name.to_str().map(str::to_owned).ok_or(Error::NotFound)?;
    let new_name = storable_name(state, new_name)?;
    let source = state.inodes.child(parent, &name).ok_or(Error::NotFound)?;
    let target = state.inodes.child(new_parent, &new_name);
    let mut same_node = false;
    if let Some(target) = &target {
        if target.ino == source.ino {
            same_node = true;
        } else if flags & RENAME_NOREPLACE != 0 {
            return Err(Error::AlreadyExists);
        } else {
            match (source.is_dir(), target.is_dir()) {
                (true, false) => return Err(Error::NotADirectory),
                (false, true) => return Err(Error::IsADirectory),
                _ => {}
            }
        }
    }
    if source.is_dir() && is_within(state, new_parent, source.ino) {
        // Into itself: refused before anything (such as a replaced empty
        // folder) is removed.
        return Err(Error::InvalidArgument);
    }
    let new_folder = if same_node {
        None
    } else {
        Some(folder_of(state, new_parent)?)
    };
    let state = state.clone();
    Ok(async move {
        // Renaming a file onto itself changes nothing.
        let Some(new_folder) = new_folder else {
            return Ok(());
        };
        let moved = Move {
            parent,
            name,
            new_parent,
            new_folder,
            new_name,
        };
        let renamed = if source.is_dir() {
            rename_folder(&state, &source, target.as_ref(), &moved).await
        } else {
            rename_file(&state, &source, target.as_ref(), &moved).await
        };
        if renamed.is_ok() && moved.parent != moved.new_parent {
            // Its record now belongs in the new folder's sync file.
            super::metadata_sync::folder_changed(&state, &moved.new_folder);
        }
        renamed
    })
}

/// Whether folder `ino` is `ancestor` or lies below it.
fn is_within(state: &FsState, mut ino: u64, ancestor: u64) -> bool {
    // Bounded: a parent chain is never longer than the inode table.
    for _ in 0..=state.inodes.len() {
        if ino == ancestor {
            return true;
        }
        match state.inodes.get(ino) {
            Some(node) if node.parent != ino => ino = node.parent,
            _ => return false,
        }
    }
    false
}

struct Move {
    parent: u64,
    name: String,
    new_parent: u64,
    new_folder: FolderId,
    new_name: String,
}

async fn rename_file(
    state: &Arc<FsState>,
    source: &Node,
    target: Option<&Node>,
    moved: &Move,
) -> Result<(), Error> {
    // The nodes as they are now, not as the kernel loop saw them: an upload
    // may have finished since, turning a pending file into the remote one
    // (whose stale local snapshot would make the rename fail with ENOENT,
    // or leave the replaced remote file behind as a duplicate).
    let source = &state.inodes.get(source.ino).ok_or(Error::NotFound)?;
    let target = target.and_then(|t| state.inodes.get(t.ino));
    let target = target.as_ref();
    let target_entry = target.and_then(|t| state.write.entry_of(t.ino));
    let pending_renamed = match state.write.entry_of(source.ino) {
        Some(entry) => rename_pending(state, entry, target, target_entry, moved).await?,
        None => false,
    };
    if !pending_renamed {
        // Re-read: the pending file may have been finalized just before
        // the queue was asked to move it.
        let source = state.inodes.get(source.ino).ok_or(Error::NotFound)?;
        let target = target.and_then(|t| state.inodes.get(t.ino));
        rename_remote_file(state, &source, target.as_ref(), moved).await?;
    }
    state
        .inodes
        .rename_child(moved.parent, &moved.name, moved.new_parent, &moved.new_name)?;
    Ok(())
}

/// Moves a pending file; false when it turned out to be finalized already
/// (the caller then moves the remote file).
async fn rename_pending(
    state: &Arc<FsState>,
    entry: EntryId,
    target: Option<&Node>,
    target_entry: Option<EntryId>,
    moved: &Move,
) -> Result<bool, Error> {
    // A pending file: the queue uploads it to the new place (or moves
    // what it already uploaded) and removes what it replaces.
    let replaced = match (target, target_entry) {
        (_, Some(pending)) => Replaced::Pending(pending),
        (
            Some(Node {
                kind: NodeKind::File(file),
                ..
            }),
            None,
        ) => Replaced::Remote(file.id.clone()),
        _ => Replaced::Nothing,
    };
    let queue = state.write.queue.clone();
    let (folder, name) = (moved.new_folder.clone(), moved.new_name.clone());
    match tokio::task::spawn_blocking(move || queue.rename(entry, &folder, &name, replaced)).await?
    {
        Ok(()) => {}
        Err(WriteBackError::UnknownEntry(_)) => return Ok(false),
        Err(error) => return Err(error.into()),
    }
    if let Some(target) = target {
        state.write.links.lock().remove_ino(target.ino);
    }
    Ok(true)
}

/// Moves a file that is on the service (not pending).
async fn rename_remote_file(
    state: &Arc<FsState>,
    source: &Node,
    target: Option<&Node>,
    moved: &Move,
) -> Result<(), Error> {
    let NodeKind::File(file) = &source.kind else {
        return Err(Error::NotFound);
    };
    let caps = state.remote.capabilities();
    let same_folder = moved.parent == moved.new_parent;
    if (same_folder && !caps.rename_file) || (!same_folder && !caps.move_file) {
        // `mv` copies and deletes when told the move cannot be done.
        // Not where reading spends downloads (file.io): the copy would
        // be a new upload under a new link, and deleting the original
        // would kill the link already handed out. Refuse instead.
        return Err(if caps.downloads_consume {
            Error::NotPermitted
        } else {
            Error::CrossDevice
        });
    }
    // Without duplicate names the target must go first; with them it
    // goes last, so the name is never missing.
    let remove_target_first = !caps.duplicate_names;
    if remove_target_first {
        if let Some(target) = target {
            remove_file_node(state, target).await?;
        }
    }
    let renamed = if same_folder {
        state.remote.rename_file(&file.id, &moved.new_name).await
    } else {
        let new_name = (moved.name != moved.new_name).then_some(moved.new_name.as_str());
        state
            .remote
            .move_file(&file.id, &moved.new_folder, new_name)
            .await
    }?;
    if !remove_target_first {
        if let Some(target) = target {
            remove_file_node(state, target).await?;
        }
    }
    let _ = state
        .inodes
        .set_kind(source.ino, NodeKind::File(renamed.clone()));
    Ok(())
}

async fn rename_folder(
    state: &Arc<FsState>,
    source: &Node,
    target: Option<&Node>,
    moved: &Move,
) -> Result<(), Error> {
    let folder = source.folder_id().cloned().ok_or(Error::NotADirectory)?;
    let caps = state.remote.capabilities();
    let same_folder = moved.parent == moved.new_parent;
    if (same_folder && !caps.rename_folder) || (!same_folder && !caps.move_folder) {
        return Err(Error::CrossDevice);
    }
    if let Some(target) = target {
        // POSIX: a folder may replace an empty folder.
        let target_folder = target.folder_id().cloned().ok_or(Error::NotADirectory)?;
        remove_empty_folder(state, target.ino, &target_folder).await?;
    }
    if same_folder {
        state.remote.rename_folder(&folder, &moved.new_name).await?;
    } else if moved.name == moved.new_name {
        state.remote.move_folder(&folder, &moved.new_folder).await?;
    } else {
        move_and_rename_folder(state, &folder, moved).await?;
    }
    state
        .inodes
        .rename_child(moved.parent, &moved.name, moved.new_parent, &moved.new_name)?;
    Ok(())
}

/// A folder move with a new name takes two calls, and a folder name may
/// not repeat within a folder: the order is chosen so that neither call
/// meets a sibling of the same name (through a temporary name when the
/// new folder has one of the old name and the old folder one of the new).
async fn move_and_rename_folder(
    state: &Arc<FsState>,
    folder: &FolderId,
    moved: &Move,
) -> Result<(), Error> {
    let folder_named = |parent: u64, name: &str| {
        state
            .inodes
            .child(parent, name)
            .is_some_and(|node| node.is_dir())
    };
    if !folder_named(moved.new_parent, &moved.name) {
        state.remote.move_folder(folder, &moved.new_folder).await?;
        state.remote.rename_folder(folder, &moved.new_name).await?;
    } else if !folder_named(moved.parent, &moved.new_name) {
        state.remote.rename_folder(folder, &moved.new_name).await?;
        state.remote.move_folder(folder, &moved.new_folder).await?;
    } else {
        let temporary = (1..100)
            .map(|n| format!("{}.moving-{n}", moved.new_name))
            .find(|name| !folder_named(moved.parent, name) && !folder_named(moved.new_parent, name))
            .ok_or(Error::AlreadyExists)?;
        state.remote.rename_folder(folder, &temporary).await?;
        state.remote.move_folder(folder, &moved.new_folder).await?;
        state.remote.rename_folder(folder, &moved.new_name).await?;
    }
    Ok(())
}
