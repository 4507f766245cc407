//! The filesystem as plain Rust: one method per operation, each answering
//! a `Result<_, fs::Error>`, on any [`Remote`], without FUSE or a kernel.
//! The FUSE adapter serves the same state to the kernel (adding its own
//! inline fast paths); tests drive a [`Core`] directly.
//!
//! A `Core` owns the write-back journal of its staging dir. [`Core::kill`]
//! stops it as a killed process would stop; a new `Core` on the same
//! staging dir then recovers what the journal holds.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::runtime::Handle;

use super::error::Error;
use super::inode::{InodeTable, NodeKind, ROOT_INO};
use super::kept_metadata::MetadataOverlay;
use super::metadata_overlay;
use super::overlay::on_write_event;
use super::pending::WriteState;
use super::state::{Attr, FsConfig, FsState};
use super::write::{self, AttrChange};
use super::xattr::XATTR_PREFIX;
use crate::cache::block::BlockCache;
use crate::cache::meta::MetaCache;
use crate::remote::{FolderId, Remote};
use crate::writeback::Recovery;

/// Space of the account, as `statfs` reports it (in `block_size` units).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaceStats {
    pub blocks: u64,
    pub free: u64,
    pub files: u64,
    pub block_size: u32,
    pub max_name: u32,
}

/// The filesystem core. Cheap to clone: clones share one state.
#[derive(Clone)]
pub struct Core {
    pub(crate) state: Arc<FsState>,
}

impl Core {
    /// Opens the caches and the write-back journal (resuming what an
    /// earlier core or mount left) and starts the upload worker. Must be
    /// called inside the tokio runtime that will run the operations.
    pub fn new(
        remote: Arc<dyn Remote>,
        root: FolderId,
        config: FsConfig,
    ) -> Result<(Core, Recovery), Error> {
        let blocks = BlockCache::new(remote.clone(), config.cache.clone())?;
        let meta = MetaCache::new(remote.clone(), config.dir_cache_time);
        let (write, recovery) = WriteState::open(&config.write, remote.clone())?;
        let metadata = MetadataOverlay::open(config.metadata_db.as_deref())?;
        let state = Arc::new(FsState {
            remote,
            meta,
            blocks,
            inodes: InodeTable::new(root),
            config,
            runtime: Handle::current(),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            opened_content: Mutex::new(HashMap::new()),
            kernel_listings: Mutex::new(HashMap::new()),
            mounted_at: SystemTime::now(),
            write,
            metadata,
        });
        metadata_overlay::drop_orphans(&state);
        let events = Arc::downgrade(&state);
        state.write.queue.set_listener(Arc::new(move |event| {
            if let Some(state) = events.upgrade() {
                on_write_event(&state, event);
            }
        }));
        Ok((Core { state }, recovery))
    }

    /// The root folder's inode.
    pub fn root(&self) -> u64 {
        ROOT_INO
    }

    /// Stops at once, as a killed process stops: no pending upload is
    /// waited for; the journal and the staging files stay for the next
    /// core on the same staging dir, which may be opened once this
    /// returns (and every clone of this core is dropped).
    pub async fn kill(self) {
        self.state.write.queue.stop_and_wait().await;
    }

    /// Unmount: releases the handles still open and waits (at most the
    /// configured `unmount_wait`, or until `stop`) for pending uploads.
    pub async fn finish(&self, stop: impl std::future::Future<Output = ()>) {
        write::finish_uploads(&self.state.write, stop).await;
    }

    /// `--read-only` refuses every change before any other check.
    fn writable(&self) -> Result<(), Error> {
        if self.state.config.read_only {
            return Err(Error::ReadOnly);
        }
        Ok(())
    }

    /// The node `name` in folder `parent`; the caller now holds a
    /// reference to it (released with [`Core::forget`]).
    pub async fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, Error> {
        // Remote names are UTF-8; anything else cannot exist there.
        let name = name.to_str().ok_or(Error::NotFound)?;
        let state = &self.state;
        let node = state.inodes.get(parent).ok_or(Error::NotFound)?;
        if !node.is_dir() {
            return Err(Error::NotADirectory);
        }
        state.ensure_listing(parent).await?;
        let node = state.inodes.child(parent, name).ok_or(Error::NotFound)?;
        state.inodes.remember_lookup(node.ino);
        Ok(state.attr(&node))
    }

    /// Drops `count` references to `ino` taken by lookups.
    pub fn forget(&self, ino: u64, count: u64) {
        self.state.inodes.forget(ino, count);
    }

    /// Attributes of `ino`, refreshed with its folder's listing when that
    /// has expired (the last known ones when the refresh fails).
    pub async fn getattr(&self, ino: u64) -> Result<Attr, Error> {
        let state = &self.state;
        let node = state.inodes.get(ino).ok_or(Error::NotFound)?;
        if ino == ROOT_INO || matches!(node.kind, NodeKind::Local(_)) {
            return Ok(state.attr(&node));
        }
        if let Err(error) = state.ensure_listing(node.parent).await {
            tracing::debug!(ino, %error, "attribute refresh failed; answering the last known");
        }
        let node = state.inodes.get(ino).unwrap_or(node);
        Ok(state.attr(&node))
    }

    /// Changes size, mtime, mode and owner (kept in the metadata store:
    /// the services keep none of them); atime is accepted and ignored.
    pub async fn setattr(&self, ino: u64, change: AttrChange) -> Result<Attr, Error> {
        self.writable()?;
        let node = write::setattr(&self.state, ino, change)?.await?;
        Ok(self.state.attr(&node))
    }

    /// The entries of folder `ino` (without `.` and `..`).
    pub async fn readdir(&self, ino: u64) -> Result<Vec<(String, Attr)>, Error> {
        let state = &self.state;
        let node = state.inodes.get(ino).ok_or(Error::NotFound)?;
        if !node.is_dir() {
            return Err(Error::NotADirectory);
        }
        let ttl = state.ensure_listing(ino).await?;
        let snapshot = state.snapshot(ino, ttl)?;
        Ok(snapshot
            .entries
            .into_iter()
            .skip(2)
            .map(|entry| (entry.name, entry.attr))
            .collect())
    }

    /// Opens `ino` with `open(2)` flags; the new handle.
    pub async fn open(&self, ino: u64, flags: i32) -> Result<u64, Error> {
        let state = &self.state;
        if let Some(error) = state.refuse_to_spend_download(ino, flags) {
            return Err(error);
        }
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            self.writable()?;
            return write::open_for_writing(state, ino, flags).await;
        }
        let node = state.inodes.get(ino).ok_or(Error::NotFound)?;
        match &node.kind {
            NodeKind::File(entry) => Ok(state.open_remote_handle(ino, entry).0),
            NodeKind::Folder { .. } => Err(Error::IsADirectory),
            NodeKind::Local(_) => match write::open_local(state, ino)? {
                Some(fh) => Ok(fh),
                // Uploaded meanwhile: the node now shows the remote file.
                None => match state.inodes.get(ino).map(|node| node.kind) {
                    Some(NodeKind::File(entry)) => Ok(state.open_remote_handle(ino, &entry).0),
                    _ => Err(Error::NotFound),
                },
            },
        }
    }

    /// Up to `size` bytes of the open file `fh` from `offset`.
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes, Error> {
        let file = self.state.files.lock().get(&fh).cloned();
        let Some(file) = file else {
            let offset = i64::try_from(offset).map_err(|_| Error::InvalidArgument)?;
            return Ok(write::read_unknown_handle(&self.state, fh, offset, size)?.into());
        };
        let len = u64::from(size);
        let plan = file.plan(offset, len);
        if let Some(data) = file.read_cached(offset, len) {
            return Ok(data);
        }
        Ok(file.read(offset, len, plan).await?)
    }

    /// Writes `data` at `offset` through write handle `fh` (at the end
    /// for `O_APPEND` handles); the bytes written.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, Error> {
        let offset = i64::try_from(offset).map_err(|_| Error::InvalidArgument)?;
        write::write(&self.state, fh, offset, data)
    }

    /// `close(2)` of one descriptor: written bytes become durable locally.
    pub async fn flush(&self, fh: u64) -> Result<(), Error> {
        if self.state.files.lock().contains_key(&fh) {
            return Ok(());
        }
        match write::flush(&self.state, fh)? {
            Some(work) => tokio::task::spawn_blocking(work).await?,
            None => Ok(()),
        }
    }

    /// The last close of a handle: a written file is queued for upload.
    pub async fn release(&self, fh: u64) -> Result<(), Error> {
        if self.state.files.lock().remove(&fh).is_some() {
            return Ok(());
        }
        match write::release(&self.state, fh) {
            Some(work) => tokio::task::spawn_blocking(work).await?,
            None => Ok(()),
        }
    }

    /// Returns once the service holds the file's current content.
    pub async fn fsync(&self, fh: u64) -> Result<(), Error> {
        if self.state.files.lock().contains_key(&fh) {
            return Ok(());
        }
        write::fsync(&self.state, fh)?.await
    }

    /// A new empty file `name` in `parent`, open for writing: its
    /// attributes and handle.
    pub async fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(Attr, u64), Error> {
        self.writable()?;
        let work = write::create(&self.state, parent, name, mode, flags)?;
        let (node, fh) = tokio::task::spawn_blocking(work).await??;
        self.state.inodes.remember_lookup(node.ino);
        Ok((self.state.attr(&node), fh))
    }

    /// `mknod` of a regular file (other kinds: `EPERM`).
    pub async fn mknod(&self, parent: u64, name: &OsStr, mode: u32) -> Result<Attr, Error> {
        self.writable()?;
        let work = write::mknod(&self.state, parent, name, mode)?;
        let node = tokio::task::spawn_blocking(work).await??;
        self.state.inodes.remember_lookup(node.ino);
        Ok(self.state.attr(&node))
    }

    pub async fn mkdir(&self, parent: u64, name: &OsStr) -> Result<Attr, Error> {
        self.writable()?;
        let node = write::mkdir(&self.state, parent, name)?.await?;
        self.state.inodes.remember_lookup(node.ino);
        Ok(self.state.attr(&node))
    }

    pub async fn unlink(&self, parent: u64, name: &OsStr) -> Result<(), Error> {
        self.writable()?;
        write::unlink(&self.state, parent, name)?.await
    }

    pub async fn rmdir(&self, parent: u64, name: &OsStr) -> Result<(), Error> {
        self.writable()?;
        write::rmdir(&self.state, parent, name)?.await
    }

    /// `renameat2` (`flags`: `RENAME_NOREPLACE`; `RENAME_EXCHANGE` is
    /// refused).
    pub async fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<(), Error> {
        self.writable()?;
        write::rename(&self.state, parent, name, new_parent, new_name, flags)?.await
    }

    /// Grows the file behind write handle `fh` to at least `offset + length`.
    pub fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> Result<(), Error> {
        self.writable()?;
        let offset = i64::try_from(offset).map_err(|_| Error::InvalidArgument)?;
        let length = i64::try_from(length).map_err(|_| Error::InvalidArgument)?;
        write::fallocate(&self.state, fh, offset, length, mode)
    }

    /// The account's space.
    pub async fn statfs(&self) -> SpaceStats {
        const BLOCK: u64 = 4096;
        // When the service does not tell its total, report plenty of room
        // rather than a full disk that would stop file managers from copying.
        const UNKNOWN_TOTAL: u64 = 1 << 50;
        let (used, total) = match self.state.meta.about().await {
            Ok(info) => (info.used, info.total.unwrap_or(info.used + UNKNOWN_TOTAL)),
            Err(error) => {
                tracing::warn!(%error, "cannot read account space");
                (0, 0)
            }
        };
        SpaceStats {
            blocks: total / BLOCK,
            free: total.saturating_sub(used) / BLOCK,
            files: self.state.inodes.len() as u64,
            block_size: BLOCK as u32,
            max_name: 255,
        }
    }

    /// The value of extended attribute `name` of `ino`.
    pub async fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>, Error> {
        let state = &self.state;
        let node = state.inodes.get(ino).ok_or(Error::NotFound)?;
        let name = name.to_str().ok_or(Error::NoAttribute)?;
        if !name.starts_with("user.") {
            // Only the user namespace exists here.
            return Err(Error::OperationNotSupported);
        }
        if let Some((_, value)) = state
            .local_xattrs(&node)
            .into_iter()
            .find(|(n, _)| n == name)
        {
            return Ok(value);
        }
        let NodeKind::File(entry) = &node.kind else {
            return Err(Error::NoAttribute);
        };
        if name != format!("{XATTR_PREFIX}link") {
            return Err(Error::NoAttribute);
        }
        Ok(state.remote.direct_link(&entry.id).await?.url.into_bytes())
    }

    /// The names of the extended attributes of `ino`.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<String>, Error> {
        let state = &self.state;
        let node = state.inodes.get(ino).ok_or(Error::NotFound)?;
        let mut names: Vec<String> = state
            .local_xattrs(&node)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        if matches!(node.kind, NodeKind::File(_)) {
            names.push(format!("{XATTR_PREFIX}link"));
        }
        Ok(names)
    }

    /// Sets a `user.*` extended attribute (`flags`: `XATTR_CREATE`,
    /// `XATTR_REPLACE`); ours (`user.filehostfs.*`) are read-only facts.
    pub async fn setxattr(
        &self,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> Result<(), Error> {
        self.writable()?;
        let name = name.to_str().ok_or(Error::OperationNotSupported)?;
        metadata_overlay::set_xattr(
            self.state.clone(),
            ino,
            name.to_string(),
            value.to_vec(),
            flags,
        )
        .await
    }

    pub async fn removexattr(&self, ino: u64, name: &OsStr) -> Result<(), Error> {
        self.writable()?;
        let name = name.to_str().ok_or(Error::NoAttribute)?;
        metadata_overlay::remove_xattr(self.state.clone(), ino, name.to_string()).await
    }

    /// How long the kernel may trust attributes and entries it was given.
    pub fn attr_ttl(&self) -> Duration {
        self.state.config.dir_cache_time
    }
}
