//! File data: create, open, write, truncate, flush, fsync and release.
//! Each operation checks what it can at once and returns the rest as work
//! (a future, or blocking work for what waits on the disk) answering
//! `Result<_, fs::Error>`, so the adapter runs it off the kernel loop and
//! [`super::Core`] simply awaits it.
//!
//! Writes never go to the service directly. A file opened for writing gets
//! a staging file through the write-back queue ([`crate::writeback`]); its
//! inode becomes a *local* node (listed, stat'ed and read from the staging
//! file) until the queue has uploaded it, when it turns back into the
//! remote file.
//!
//! Choices where POSIX and the services disagree:
//! - mtime, mode and owner are kept by the mount's metadata store (the
//!   services store none of them; see `metadata_overlay`); atime changes
//!   are accepted and ignored (the mount is `noatime`). Only root may give
//!   a file to another owner (POSIX `chown`): others get `EPERM`.
//! - symlink, hard links, device nodes and FIFOs: `EPERM` (the services store
//!   none of them); `user.*` extended attributes are kept by the metadata
//!   store, our own `user.filehostfs.*` cannot be set (`ENOTSUP`).
//! - Empty files on services that cannot store them are placeholders kept
//!   by the write-back journal (see [`crate::writeback`]).

use std::ffi::OsStr;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use tracing::warn;

use super::error::Error;
use super::handles::{Handle, ReadHandle, WriteHandle};
use super::inode::{LocalFile, Node, NodeKind};
use super::namespace::{folder_of, storable_name};
use super::state::FsState;
use crate::cache::FileSource;
use crate::remote::FileEntry;
use crate::writeback::{EntryId, StagedHandle, WriteBackError};

/// How much of a remote file is copied into staging per block-cache read
/// when it is opened for writing without `O_TRUNC`.
const FILL_CHUNK: u64 = 8 << 20;
fn too_large(state: &FsState, end: u64) -> bool {
    state
        .remote
        .capabilities()
        .max_file_size
        .is_some_and(|max| end > max)
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
        .open_remote(&folder, &node.name, &file, truncate)?;
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
    let handle = WriteHandle {
        ino,
        entry: staged.id(),
        append,
        staged: Mutex::new(Some(staged)),
    };
    state.handles.insert(Handle::StagedWriter(Arc::new(handle)))
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
    if let Some(handle) = fh.and_then(|fh| state.handles.writer(fh)) {
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
    // A name too long is refused first, whatever the node would have been.
    let name = storable_name(state, name)?;
    if mode & libc::S_IFMT != libc::S_IFREG {
        // Devices, FIFOs and sockets cannot be stored by a file host.
        return Err(Error::NotPermitted);
    }
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

/// A read-only handle on the pending file `ino` shows; `None` when there
/// is none (its upload finished: the node is the remote file now).
pub(crate) fn open_local(state: &Arc<FsState>, ino: u64) -> Result<Option<u64>, Error> {
    let Some(entry) = state.write.entry_of(ino) else {
        return Ok(None);
    };
    match state.write.queue.open_read(entry) {
        Ok(file) => {
            let reader = Arc::new(ReadHandle { entry, file });
            Ok(Some(state.handles.insert(Handle::PendingReader(reader))))
        }
        Err(WriteBackError::UnknownEntry(_)) => Ok(None),
        Err(WriteBackError::Io(error)) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// Up to `size` bytes from `offset` of the staging file behind a write
/// handle.
pub(crate) fn read_staged(handle: &WriteHandle, offset: u64, size: u32) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; size as usize];
    let staged = handle.staged.lock();
    let staged = staged.as_ref().ok_or(Error::BadHandle)?;
    let read = staged.read_at(&mut buf, offset)?;
    buf.truncate(read);
    Ok(buf)
}

/// Up to `size` bytes from `offset` of a pending file opened read-only.
pub(crate) fn read_pending(reader: &ReadHandle, offset: u64, size: u32) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; size as usize];
    let read = read_full_at(&reader.file, &mut buf, offset)?;
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
pub(crate) fn write(state: &Arc<FsState>, fh: u64, offset: u64, data: &[u8]) -> Result<u32, Error> {
    let handle = state.handles.writer(fh).ok_or(Error::BadHandle)?;
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
    handle: Arc<WriteHandle>,
) -> impl FnOnce() -> Result<(), Error> + Send + 'static {
    let queue = state.write.queue.clone();
    // Without holding the handle: writes through it are never kept waiting.
    move || match queue.commit(handle.entry) {
        // Saved locally either way; a refusal the service already gave
        // for this file is reported, since fsync is not always called.
        Ok(()) => match queue.last_refusal(handle.entry) {
            Some(refusal) => Err(refusal.into()),
            None => Ok(()),
        },
        Err(WriteBackError::UnknownEntry(_)) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// `release` of a write handle: the last one queues the upload. The
/// returned work touches the disk: run it off the async workers.
pub(crate) fn release(
    handle: Arc<WriteHandle>,
) -> impl FnOnce() -> Result<(), Error> + Send + 'static {
    move || {
        let staged = handle.staged.lock().take();
        match staged.map(StagedHandle::release) {
            Some(Ok(())) | None => Ok(()),
            Some(Err(error)) => {
                warn!(ino = handle.ino, entry = %handle.entry, %error, "release failed");
                Err(error.into())
            }
        }
    }
}

/// `fsync`: returns once the service has confirmed the file's current
/// content (EIO, ENOSPC, EFBIG or EINVAL when the upload failed; the file
/// stays queued).
pub(crate) fn fsync(
    state: &Arc<FsState>,
    entry: EntryId,
) -> impl Future<Output = Result<(), Error>> + Send + 'static {
    let queue = state.write.queue.clone();
    async move {
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
    }
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
    let handle = state.handles.writer(fh).ok_or(Error::BadHandle)?;
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
