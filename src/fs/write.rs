//! Every change, in one place: the write path. Each operation checks what
//! it can at once and returns the rest as work (a future, or blocking work
//! for what waits on the disk) answering `Result<_, fs::Error>`, so the
//! adapter runs it off the kernel loop and [`super::Core`] simply awaits it.
//!
//! Writes never go to the service directly. A file opened for writing gets
//! a staging file through the write-back queue ([`crate::writeback`]); its
//! inode becomes a *local* node (listed, stat'ed and read from the staging
//! file) until the queue has uploaded it, when it turns back into the
//! remote file. Namespace changes (mkdir, rmdir, unlink, rename of remote
//! entries) go to the service at once.
//!
//! Choices where POSIX and the services disagree:
//! - mtime, mode and owner are kept by the mount's metadata store (the
//!   services store none of them; see `metadata_overlay`); atime changes
//!   are accepted and ignored (the mount is `noatime`). Only root may give
//!   a file to another owner (POSIX `chown`): others get `EPERM`.
//! - symlink, hard links, device nodes and FIFOs: `EPERM` (the services store
//!   none of them); extended attributes cannot be set (`ENOTSUP`);
//!   `RENAME_EXCHANGE` is refused (`EINVAL`); a move across folders on a
//!   service that cannot move files answers `EXDEV`, so `mv` copies instead.
//! - A rename onto an existing file moves the source first and removes the
//!   replaced file after, so the name is never missing.
//! - Empty files on services that cannot store them are placeholders kept
//!   by the write-back journal (see [`crate::writeback`]).

use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tracing::{debug, info, warn};

use std::future::Future;

use super::error::Error;
use super::inode::{LocalFile, Node, NodeKind};
use super::pending::{ReadHandle, WriteHandle, WriteState};
use super::state::FsState;
use crate::cache::FileSource;
use crate::remote::{FileEntry, FolderId, RemoteError};
use crate::writeback::{EntryId, Replaced, StagedHandle, WriteBackError};

/// `renameat2` flags (linux/fs.h).
const RENAME_NOREPLACE: u32 = 1;
const RENAME_EXCHANGE: u32 = 2;

/// How much of a remote file is copied into staging per block-cache read
/// when it is opened for writing without `O_TRUNC`.
const FILL_CHUNK: u64 = 8 << 20;

fn utf8_name(name: &OsStr) -> Result<String, Error> {
    // Remote names are UTF-8: anything else cannot be stored.
    name.to_str()
        .map(str::to_owned)
        .ok_or(Error::InvalidArgument)
}

/// A name for a new file or folder: EINVAL when the service could never
/// store it (after the remote layer's reversible encoding).
fn storable_name(state: &FsState, name: &OsStr) -> Result<String, Error> {
    let name = utf8_name(name)?;
    state.remote.check_name(&name)?;
    Ok(name)
}

fn folder_of(state: &FsState, ino: u64) -> Result<FolderId, Error> {
    let node = state.inodes.get(ino).ok_or(Error::NotFound)?;
    node.folder_id().cloned().ok_or(Error::NotADirectory)
}

fn too_large(state: &FsState, end: u64) -> bool {
    state
        .remote
        .capabilities()
        .max_file_size
        .is_some_and(|max| end > max)
}

/// The node `name` stands for in folder `parent`: ENOENT when there is
/// none (a name that is not UTF-8 cannot be there).
fn existing_child(state: &FsState, parent: u64, name: &OsStr) -> Result<(String, Node), Error> {
    let name = name.to_str().map(str::to_owned).ok_or(Error::NotFound)?;
    let node = state.inodes.child(parent, &name).ok_or(Error::NotFound)?;
    Ok((name, node))
}

/// What the write path keeps of a `setattr` call (atime is accepted and
/// ignored; see the module comment).
#[derive(Clone, Copy, Debug, Default)]
pub struct AttrChange {
    pub size: Option<u64>,
    pub mtime: Option<SystemTime>,
    /// Permission bits (file type bits are ignored).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The user asking, when known: a change of owner by anyone but root
    /// is refused (`EPERM`). `None`: a trusted caller (tests, tools).
    pub caller_uid: Option<u32>,
    /// The handle a truncation goes through, if the caller has one open.
    pub fh: Option<u64>,
}

/// Gives `ino` a staged file open for writing: the pending file it already
/// shows, or a new one copied from (or, with `truncate`, replacing) the
/// remote file it shows.
async fn stage_for_writing(
    state: &Arc<FsState>,
    ino: u64,
    truncate: bool,
) -> Result<StagedHandle, Error> {
    let lock = state.write.opening.lock().entry(ino).or_default().clone();
    let result = {
        let _one_at_a_time = lock.lock().await;
        stage_for_writing_locked(state, ino, truncate).await
    };
    let mut opening = state.write.opening.lock();
    // Ours and the map's: nobody else is waiting on this inode.
    if Arc::strong_count(&lock) == 2 {
        opening.remove(&ino);
    }
    result
}

async fn stage_for_writing_locked(
    state: &Arc<FsState>,
    ino: u64,
    truncate: bool,
) -> Result<StagedHandle, Error> {
    if let Some(entry) = state.write.entry_of(ino) {
        let queue = state.write.queue.clone();
        match tokio::task::spawn_blocking(move || queue.open_pending(entry, truncate)).await? {
            Ok(staged) => return Ok(staged),
            // Finalized just now: the node is the remote file (read below).
            Err(WriteBackError::UnknownEntry(_)) => {}
            Err(error) => return Err(error.into()),
        }
    }
    let node = state.inodes.get(ino).ok_or(Error::NotFound)?;
    let file = match &node.kind {
        NodeKind::File(file) => file.clone(),
        NodeKind::Folder { .. } => return Err(Error::IsADirectory),
        // A local node without a pending file: unlinked meanwhile.
        NodeKind::Local(_) => return Err(Error::NotFound),
    };
    if !truncate && !state.config.consume_downloads && state.remote.read_consumes_download(&file.id)
    {
        // Copying it into staging would spend one of its limited downloads.
        warn!(name = %node.name, "refusing to modify a file whose downloads are limited (mount with --consume-downloads to allow it)");
        return Err(Error::DownloadsLimited);
    }
    let folder = folder_of(state, node.parent)?;
    let staged = state
        .write
        .queue
        .open_remote(&folder, &node.name, file.id.clone(), truncate)?;
    if !truncate {
        if let Err(errno) = copy_into_staging(state, &file, &staged).await {
            if let Err(error) = staged.discard() {
                warn!(%error, "cannot discard a staging copy");
            }
            return Err(errno);
        }
    }
    let carried = (state.clone(), file.clone(), staged.id());
    tokio::task::spawn_blocking(move || {
        let (state, file, entry) = carried;
        super::metadata_overlay::carry_to_pending(&state, &file, entry)
    })
    .await?;
    state.write.links.lock().insert(ino, staged.id());
    let local = LocalFile {
        size: if truncate { 0 } else { file.size },
        modified: SystemTime::from(file.modified),
    };
    let _ = state.inodes.set_kind(ino, NodeKind::Local(local));
    Ok(staged)
}

/// Copies a remote file's bytes into a fresh staging file through the
/// block cache (blocks already cached are not fetched again).
async fn copy_into_staging(
    state: &Arc<FsState>,
    file: &FileEntry,
    staged: &StagedHandle,
) -> Result<(), Error> {
    let source = FileSource::for_entry(file);
    let block_size = state.blocks.block_size();
    let mut offset = 0;
    while offset < file.size {
        let len = FILL_CHUNK.min(file.size - offset);
        let last_block = (offset + len - 1) / block_size;
        let data = state.blocks.read(&source, offset, len, last_block).await?;
        if data.is_empty() {
            // The service sent nothing where the file has bytes (EIO).
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        staged.fill_at(&data, offset)?;
        offset += data.len() as u64;
    }
    Ok(())
}

fn register_handle(state: &FsState, ino: u64, staged: StagedHandle, append: bool) -> u64 {
    let fh = state.new_handle();
    let handle = WriteHandle {
        ino,
        entry: staged.id(),
        append,
        staged: Mutex::new(Some(staged)),
    };
    state.write.handles.lock().insert(fh, Arc::new(handle));
    fh
}

fn write_handle(state: &FsState, fh: u64) -> Option<Arc<WriteHandle>> {
    state.write.handles.lock().get(&fh).cloned()
}

/// `setattr`: checked at once; the returned change runs on the runtime.
pub(crate) fn setattr(
    state: &Arc<FsState>,
    ino: u64,
    change: AttrChange,
) -> Result<impl Future<Output = Result<Node, Error>> + Send + 'static, Error> {
    let node = state.inodes.get(ino).ok_or(Error::NotFound)?;
    if let Some(size) = change.size {
        if node.is_dir() {
            return Err(Error::IsADirectory);
        }
        if too_large(state, size) {
            return Err(Error::FileTooLarge);
        }
    }
    let wanted = super::metadata_overlay::MetadataTimeAndOwner {
        mtime: change.mtime,
        mode: change.mode,
        uid: change.uid,
        gid: change.gid,
        caller_uid: change.caller_uid,
    };
    let kept = super::metadata_overlay::attr_change(state, &node, wanted)?;
    let state = state.clone();
    Ok(async move {
        if let Some(size) = change.size {
            truncate(&state, ino, change.fh, size).await?;
        }
        super::metadata_overlay::keep(&state, ino, kept).await?;
        state.inodes.get(ino).ok_or(Error::NotFound)
    })
}

async fn truncate(state: &Arc<FsState>, ino: u64, fh: Option<u64>, size: u64) -> Result<(), Error> {
    if let Some(handle) = fh.and_then(|fh| write_handle(state, fh)) {
        let staged = handle.staged.lock();
        let staged = staged.as_ref().ok_or(Error::BadHandle)?;
        return staged.set_len(size).map_err(Error::from);
    }
    if let Some(NodeKind::File(file)) = state.inodes.get(ino).map(|n| n.kind) {
        if file.size == size {
            return Ok(());
        }
    }
    let staged = stage_for_writing(state, ino, size == 0).await?;
    tokio::task::spawn_blocking(move || {
        staged.set_len(size)?;
        staged.release().map_err(Error::from)
    })
    .await?
}

/// `mknod` of a regular file: an empty pending file. The returned work
/// touches the disk: run it off the async workers.
pub(crate) fn mknod(
    state: &Arc<FsState>,
    parent: u64,
    name: &OsStr,
    mode: u32,
) -> Result<impl FnOnce() -> Result<Node, Error> + Send + 'static, Error> {
    if mode & libc::S_IFMT != libc::S_IFREG {
        // Devices, FIFOs and sockets cannot be stored by a file host.
        return Err(Error::NotPermitted);
    }
    let name = storable_name(state, name)?;
    let state = state.clone();
    Ok(move || {
        let (node, staged) = new_pending_file(&state, parent, &name)?;
        staged.release()?;
        Ok(node)
    })
}

/// A new, empty pending file `name` in folder `parent`, open for writing.
fn new_pending_file(
    state: &FsState,
    parent: u64,
    name: &str,
) -> Result<(Node, StagedHandle), Error> {
    let folder = folder_of(state, parent)?;
    if state.inodes.child(parent, name).is_some() {
        return Err(Error::AlreadyExists);
    }
    let staged = state.write.queue.create(&folder, name, None)?;
    let local = LocalFile {
        size: 0,
        modified: SystemTime::now(),
    };
    match state.inodes.insert_local(parent, name, local) {
        Ok(node) => {
            state.write.links.lock().insert(node.ino, staged.id());
            Ok((node, staged))
        }
        Err(error) => {
            if let Err(undo) = staged.discard() {
                warn!(%undo, "cannot discard a pending file");
            }
            Err(error.into())
        }
    }
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
        if source.is_dir() {
            rename_folder(&state, &source, target.as_ref(), &moved).await
        } else {
            rename_file(&state, &source, target.as_ref(), &moved).await
        }
    })
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
    if !same_folder {
        state.remote.move_folder(&folder, &moved.new_folder).await?;
    }
    if moved.name != moved.new_name {
        state.remote.rename_folder(&folder, &moved.new_name).await?;
    }
    state
        .inodes
        .rename_child(moved.parent, &moved.name, moved.new_parent, &moved.new_name)?;
    Ok(())
}

/// `open` with write access or `O_TRUNC`: the returned work stages the
/// file and gives the new handle.
pub(crate) fn open_for_writing(
    state: &Arc<FsState>,
    ino: u64,
    flags: i32,
) -> impl Future<Output = Result<u64, Error>> + Send + 'static {
    let truncate = flags & libc::O_TRUNC != 0;
    let append = flags & libc::O_APPEND != 0;
    let state = state.clone();
    async move {
        let staged = stage_for_writing(&state, ino, truncate).await?;
        Ok(register_handle(&state, ino, staged, append))
    }
}

pub(crate) fn open_local(state: &Arc<FsState>, ino: u64) -> Result<Option<u64>, Error> {
    let Some(entry) = state.write.entry_of(ino) else {
        return Ok(None);
    };
    match state.write.queue.open_read(entry) {
        Ok(file) => {
            let fh = state.new_handle();
            state
                .write
                .readers
                .lock()
                .insert(fh, Arc::new(ReadHandle { entry, file }));
            Ok(Some(fh))
        }
        Err(WriteBackError::UnknownEntry(_)) => Ok(None),
        Err(WriteBackError::Io(error)) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error.into()),
    }
}

pub(crate) fn read_unknown_handle(
    state: &Arc<FsState>,
    fh: u64,
    offset: i64,
    size: u32,
) -> Result<Vec<u8>, Error> {
    let offset = u64::try_from(offset).map_err(|_| Error::InvalidArgument)?;
    let mut buf = vec![0u8; size as usize];
    let read = if let Some(handle) = write_handle(state, fh) {
        let staged = handle.staged.lock();
        let staged = staged.as_ref().ok_or(Error::BadHandle)?;
        staged.read_at(&mut buf, offset)?
    } else if let Some(reader) = state.write.readers.lock().get(&fh).cloned() {
        read_full_at(&reader.file, &mut buf, offset)?
    } else {
        return Err(Error::BadHandle);
    };
    buf.truncate(read);
    Ok(buf)
}

fn read_full_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(done)
}

/// `write`: a local write to the staging file (page cache), no network;
/// answers the bytes written.
pub(crate) fn write(state: &Arc<FsState>, fh: u64, offset: i64, data: &[u8]) -> Result<u32, Error> {
    let handle = write_handle(state, fh).ok_or(Error::BadHandle)?;
    let offset = u64::try_from(offset).map_err(|_| Error::InvalidArgument)?;
    let staged = handle.staged.lock();
    let staged = staged.as_ref().ok_or(Error::BadHandle)?;
    let offset = if handle.append { staged.len()? } else { offset };
    if too_large(state, offset.saturating_add(data.len() as u64)) {
        return Err(Error::FileTooLarge);
    }
    staged.write_at(data, offset)?;
    Ok(data.len() as u32)
}

/// `flush` (every `close(2)`): the written bytes are made durable locally
/// and journaled before `close` returns. The returned work touches the
/// disk: run it off the async workers.
pub(crate) fn flush(
    state: &Arc<FsState>,
    fh: u64,
) -> Result<Option<impl FnOnce() -> Result<(), Error> + Send + 'static>, Error> {
    let Some(handle) = write_handle(state, fh) else {
        return if state.write.readers.lock().contains_key(&fh) {
            Ok(None)
        } else {
            Err(Error::BadHandle)
        };
    };
    let queue = state.write.queue.clone();
    // Without holding the handle: writes through it are never kept waiting.
    Ok(Some(move || match queue.commit(handle.entry) {
        // Saved locally either way; a refusal the service already gave
        // for this file is reported, since fsync is not always called.
        Ok(()) => match queue.last_refusal(handle.entry) {
            Some(refusal) => Err(refusal.into()),
            None => Ok(()),
        },
        Err(WriteBackError::UnknownEntry(_)) => Ok(()),
        Err(error) => Err(error.into()),
    }))
}

/// `release` of a write handle: the last one queues the upload. The
/// returned work touches the disk: run it off the async workers.
pub(crate) fn release(
    state: &Arc<FsState>,
    fh: u64,
) -> Option<impl FnOnce() -> Result<(), Error> + Send + 'static> {
    if state.write.readers.lock().remove(&fh).is_some() {
        return None;
    }
    let handle = state.write.handles.lock().remove(&fh)?;
    Some(move || {
        let staged = handle.staged.lock().take();
        match staged.map(StagedHandle::release) {
            Some(Ok(())) | None => Ok(()),
            Some(Err(error)) => {
                warn!(ino = handle.ino, entry = %handle.entry, %error, "release failed");
                Err(error.into())
            }
        }
    })
}

/// `fsync`: returns once the service has confirmed the file's current
/// content (EIO, ENOSPC, EFBIG or EINVAL when the upload failed; the file
/// stays queued).
pub(crate) fn fsync(
    state: &Arc<FsState>,
    fh: u64,
) -> Result<impl Future<Output = Result<(), Error>> + Send + 'static, Error> {
    let entry = match write_handle(state, fh) {
        Some(handle) => handle.entry,
        None => match state.write.readers.lock().get(&fh) {
            Some(reader) => reader.entry,
            None => return Err(Error::BadHandle),
        },
    };
    let queue = state.write.queue.clone();
    Ok(async move {
        // The local part (syncing the staging file) off the async workers.
        let committer = queue.clone();
        let committed = tokio::task::spawn_blocking(move || committer.commit(entry)).await;
        if let Ok(Err(error)) = committed {
            return Err(error.into());
        }
        match queue.wait_durable(entry).await {
            Ok(()) => Ok(()),
            Err(error) => {
                warn!(%entry, %error, "fsync: upload not confirmed");
                Err(error.into())
            }
        }
    })
}

/// `create`: a new pending file and a write handle on it. The returned
/// work touches the disk: run it off the async workers.
pub(crate) fn create(
    state: &Arc<FsState>,
    parent: u64,
    name: &OsStr,
    mode: u32,
    flags: i32,
) -> Result<impl FnOnce() -> Result<(Node, u64), Error> + Send + 'static, Error> {
    if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
        return Err(Error::NotPermitted);
    }
    let name = storable_name(state, name)?;
    let append = flags & libc::O_APPEND != 0;
    let state = state.clone();
    Ok(move || {
        let (node, staged) = new_pending_file(&state, parent, &name)?;
        let fh = register_handle(&state, node.ino, staged, append);
        Ok((node, fh))
    })
}

pub(crate) fn fallocate(
    state: &Arc<FsState>,
    fh: u64,
    offset: i64,
    length: i64,
    mode: i32,
) -> Result<(), Error> {
    if mode != 0 {
        // Punching holes and the like mean nothing for an upload.
        return Err(Error::OperationNotSupported);
    }
    let (Ok(offset), Ok(length)) = (u64::try_from(offset), u64::try_from(length)) else {
        return Err(Error::InvalidArgument);
    };
    let handle = write_handle(state, fh).ok_or(Error::BadHandle)?;
    let end = offset.saturating_add(length);
    if too_large(state, end) {
        return Err(Error::FileTooLarge);
    }
    let staged = handle.staged.lock();
    let staged = staged.as_ref().ok_or(Error::BadHandle)?;
    if end > staged.len()? {
        staged.set_len(end)?;
    }
    Ok(())
}

/// At unmount: waits (bounded) for the queue and says what is left.
/// `stop` ends the wait early (a second Ctrl-C): what is pending then stays
/// journaled, as after a timeout.
pub(crate) async fn finish_uploads(
    write: &WriteState,
    stop: impl std::future::Future<Output = ()>,
) {
    // The kernel sends nothing more: handles it did not release (the
    // session ended first) are released here, so their files get queued.
    let leftover: Vec<Arc<WriteHandle>> = write.handles.lock().drain().map(|(_, h)| h).collect();
    for handle in leftover {
        if let Some(staged) = handle.staged.lock().take() {
            if let Err(error) = staged.release() {
                warn!(entry = %handle.entry, %error, "releasing a file at unmount failed");
            }
        }
    }
    let outstanding = write.queue.outstanding();
    if outstanding > 0 {
        eprintln!(
            "filehostfs: waiting up to {}s for {outstanding} pending upload(s)...",
            write.unmount_wait.as_secs()
        );
    }
    let report = tokio::select! {
        report = write.queue.drain(write.unmount_wait) => report,
        () = stop => {
            eprintln!("filehostfs: stop requested; not waiting for the uploads");
            write.queue.drain(Duration::ZERO).await
        }
    };
    if write.queue.pending().is_empty() && report.left.is_empty() {
        // Nothing journaled (not even a placeholder): leave no trace.
        let dir = write.queue.staging_dir();
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            debug!(dir = %dir.display(), %error, "cannot remove the empty staging dir");
        }
        if write.default_dir {
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
    if report.left.is_empty() {
        if outstanding > 0 {
            eprintln!("filehostfs: all uploads complete");
        }
        info!("write-back queue drained");
        return;
    }
    eprintln!(
        "filehostfs: {} upload(s) left journaled in {}; the next mount with this cache dir completes them:",
        report.left.len(),
        write.queue.staging_dir().display()
    );
    for pending in &report.left {
        let reason = pending
            .last_error
            .as_deref()
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default();
        eprintln!("  {} ({} bytes){reason}", pending.name, pending.size);
    }
}
