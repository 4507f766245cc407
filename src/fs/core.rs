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
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use parking_lot::Mutex;

use super::attr::Attr;
use super::dir_snapshot::OpenDir;
use super::error::{Error, Unsupported};
use super::file_data::{self, AttrChange};
use super::handles::{Handle, HandleTable};
use super::inode::{InodeTable, NodeKind, ROOT_INO};
use super::kept_metadata::MetadataOverlay;
use super::metadata_overlay;
use super::metadata_sync;
use super::metadata_sync_state::MetadataSync;
use super::namespace;
use super::overlay::on_write_event;
use super::pending::WriteState;
use super::read::{OpenFile, ReadPlan};
use super::state::{FsConfig, FsState};
use super::xattr::XATTR_PREFIX;
use crate::cache::block::BlockCache;
use crate::cache::meta::MetaCache;
use crate::cache::tracked_remote::TrackedRemote;
use crate::remote::{FileId, FolderId, Remote};
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

/// A node as a lookup or getattr answers it: its attributes and how long
/// the kernel may trust them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub attr: Attr,
    pub ttl: Duration,
}

/// An open handle and whether the kernel may keep what it cached for the
/// file (its pages) or folder (its listing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    pub keep_cache: bool,
}

/// Where an extended attribute's value comes from.
enum XattrSource {
    Value(Vec<u8>),
    /// The file's direct link, asked of the service.
    Link(FileId),
}

/// How a read goes on after its memory-only part ([`Core::start_read`]).
pub enum ReadStart {
    /// The bytes, at hand.
    Ready(Bytes),
    /// Blocks to fetch from the service first.
    Fetch(RemoteRead),
}

/// A read of a remote file that waits on the service.
pub struct RemoteRead {
    file: Arc<OpenFile>,
    offset: u64,
    len: u64,
    plan: ReadPlan,
}

impl RemoteRead {
    pub async fn finish(self) -> Result<Bytes, Error> {
        Ok(self.file.read(self.offset, self.len, self.plan).await?)
    }
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
        let listing_clock = meta.serial_clock();
        // Changes made from here on outdate saved listings (warm restarts).
        let remote = TrackedRemote::wrap(remote, &meta);
        let (write, recovery) = WriteState::open(&config.write, remote.clone())?;
        let metadata = MetadataOverlay::open(config.metadata_db.as_deref())?;
        // A service whose files vanish once downloaded (file.io) cannot
        // carry a file every mount reads: the CLI refuses the option there.
        let sync = (config.metadata_sync && !remote.capabilities().downloads_consume)
            .then(|| MetadataSync::new(config.write.delay));
        let state = Arc::new(FsState {
            remote,
            meta,
            blocks,
            inodes: InodeTable::new(root).with_listing_clock(listing_clock),
            config,
            runtime: tokio::runtime::Handle::current(),
            handles: HandleTable::new(),
            opened_content: Mutex::new(HashMap::new()),
            kernel_listings: Mutex::new(HashMap::new()),
            mounted_at: SystemTime::now(),
            write,
            metadata: Arc::new(metadata),
            sync,
        });
        metadata_sync::start(&state);
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
        metadata_sync::stop(&self.state).await;
        self.state.write.queue.stop_and_wait().await;
    }

    /// Unmount: releases the handles still open and waits (at most the
    /// configured `unmount_wait`, or until `stop`) for pending uploads.
    pub async fn finish(&self, stop: impl std::future::Future<Output = ()>) {
        super::unmount::finish_uploads(&self.state, stop).await;
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
        Ok(self.lookup_entry(parent, name).await?.attr)
    }

    /// [`Core::lookup`] with the time the answer stays valid.
    pub async fn lookup_entry(&self, parent: u64, name: &OsStr) -> Result<Entry, Error> {
        let name = self.lookup_name(parent, name)?;
        let ttl = self.state.ensure_listing(parent).await?;
        self.child_entry(parent, name, ttl)
    }

    /// [`Core::lookup_entry`] from memory: `None` when the folder's
    /// listing must be fetched first.
    pub fn lookup_now(&self, parent: u64, name: &OsStr) -> Option<Result<Entry, Error>> {
        let name = match self.lookup_name(parent, name) {
            Ok(name) => name,
            Err(error) => return Some(Err(error)),
        };
        let ttl = self.state.fresh_listing(parent)?;
        Some(self.child_entry(parent, name, ttl))
    }

    /// The checks of a lookup that need no listing.
    fn lookup_name<'n>(&self, parent: u64, name: &'n OsStr) -> Result<&'n str, Error> {
        // Remote names are UTF-8; anything else cannot exist there.
        let name = name.to_str().ok_or(Error::NotFound)?;
        let node = self.state.inodes.get(parent).ok_or(Error::NotFound)?;
        if !node.is_dir() {
            return Err(Error::NotADirectory);
        }
        // A name the service could never store is not there: ENAMETOOLONG
        // (POSIX), without fetching the listing.
        if self.state.inodes.child(parent, name).is_none() {
            namespace::refuse_too_long(&self.state, name)?;
        }
        Ok(name)
    }

    fn child_entry(&self, parent: u64, name: &str, ttl: Duration) -> Result<Entry, Error> {
        let state = &self.state;
        let node = state.inodes.child(parent, name).ok_or(Error::NotFound)?;
        state.inodes.remember_lookup(node.ino);
        Ok(Entry {
            attr: state.attr(&node),
            ttl,
        })
    }

    /// Drops `count` references to `ino` taken by lookups.
    pub fn forget(&self, ino: u64, count: u64) {
        self.state.inodes.forget(ino, count);
    }

    /// Attributes of `ino`, refreshed with its folder's listing when that
    /// has expired (the last known ones when the refresh fails).
    pub async fn getattr(&self, ino: u64) -> Result<Attr, Error> {
        Ok(self.getattr_entry(ino).await?.attr)
    }

    /// [`Core::getattr`] with the time the answer stays valid.
    pub async fn getattr_entry(&self, ino: u64) -> Result<Entry, Error> {
        let state = &self.state;
        if let Some(answer) = self.getattr_now(ino) {
            return answer;
        }
        // The attributes come from the parent's listing, which has expired.
        let node = state.inodes.get(ino).ok_or(Error::NotFound)?;
        match state.ensure_listing(node.parent).await {
            Ok(ttl) => {
                let node = state.inodes.get(ino).unwrap_or(node);
                Ok(Entry {
                    attr: state.attr(&node),
                    ttl,
                })
            }
            Err(error) => {
                // Better slightly old attributes than a failed stat.
                tracing::debug!(ino, %error, "attribute refresh failed; answering the last known");
                Ok(Entry {
                    attr: state.attr(&node),
                    ttl: Duration::from_secs(1),
                })
            }
        }
    }

    /// [`Core::getattr_entry`] from memory: `None` when the parent's
    /// listing has expired.
    pub fn getattr_now(&self, ino: u64) -> Option<Result<Entry, Error>> {
        let state = &self.state;
        let Some(node) = state.inodes.get(ino) else {
            return Some(Err(Error::NotFound));
        };
        if ino == ROOT_INO || matches!(node.kind, NodeKind::Local(_)) {
            return Some(Ok(Entry {
                attr: state.attr(&node),
                ttl: self.attr_ttl(),
            }));
        }
        let ttl = state.fresh_listing(node.parent)?;
        let node = state.inodes.get(ino).unwrap_or(node);
        Some(Ok(Entry {
            attr: state.attr(&node),
            ttl,
        }))
    }

    /// Changes size, mtime, mode and owner (kept in the metadata store:
    /// the services keep none of them); atime is accepted and ignored.
    pub async fn setattr(&self, ino: u64, change: AttrChange) -> Result<Attr, Error> {
        self.writable()?;
        let node = file_data::setattr(&self.state, ino, change)?.await?;
        Ok(self.state.attr(&node))
    }

    /// The entries of folder `ino` (without `.` and `..`).
    pub async fn readdir(&self, ino: u64) -> Result<Vec<(String, Attr)>, Error> {
        let state = &self.state;
        self.check_dir(ino)?;
        let ttl = state.ensure_listing(ino).await?;
        let snapshot = state.snapshot(ino, ttl)?;
        Ok(snapshot
            .entries
            .into_iter()
            .skip(2)
            .map(|entry| (entry.name, entry.attr))
            .collect())
    }

    fn check_dir(&self, ino: u64) -> Result<(), Error> {
        let node = self.state.inodes.get(ino).ok_or(Error::NotFound)?;
        if !node.is_dir() {
            return Err(Error::NotADirectory);
        }
        Ok(())
    }

    /// Opens folder `ino`: a handle on a snapshot of its entries, which
    /// the readdirs through it serve ([`Core::dir_handle`]).
    pub async fn opendir(&self, ino: u64) -> Result<Opened, Error> {
        self.check_dir(ino)?;
        let ttl = self.state.ensure_listing(ino).await?;
        self.open_snapshot(ino, ttl)
    }

    /// [`Core::opendir`] from memory: `None` when the listing must be
    /// fetched first.
    pub fn opendir_now(&self, ino: u64) -> Option<Result<Opened, Error>> {
        if let Err(error) = self.check_dir(ino) {
            return Some(Err(error));
        }
        let ttl = self.state.fresh_listing(ino)?;
        Some(self.open_snapshot(ino, ttl))
    }

    fn open_snapshot(&self, ino: u64, ttl: Duration) -> Result<Opened, Error> {
        let snapshot = self.state.snapshot(ino, ttl)?;
        let (fh, keep_cache) = self.state.open_snapshot(ino, snapshot);
        Ok(Opened { fh, keep_cache })
    }

    /// The open folder behind handle `fh`.
    pub(crate) fn dir_handle(&self, fh: u64) -> Result<Arc<OpenDir>, Error> {
        self.state.handles.directory(fh).ok_or(Error::BadHandle)
    }

    /// The kernel took a reference on a node a readdirplus listed.
    pub fn listed(&self, ino: u64) {
        self.state.inodes.remember_lookup(ino);
    }

    /// `releasedir`.
    pub fn releasedir(&self, fh: u64) {
        if let Some(Handle::Directory(open)) = self.state.handles.remove(fh) {
            self.state.closed_dir(&open);
        }
    }

    /// Opens `ino` with `open(2)` flags; the new handle.
    pub async fn open(&self, ino: u64, flags: i32) -> Result<u64, Error> {
        Ok(self.open_file(ino, flags).await?.fh)
    }

    /// [`Core::open`], saying whether the kernel may keep the file's pages.
    pub async fn open_file(&self, ino: u64, flags: i32) -> Result<Opened, Error> {
        match self.open_now(ino, flags) {
            Some(answer) => answer,
            None => {
                let fh = file_data::open_for_writing(&self.state, ino, flags).await?;
                // The kernel's pages go: the file's bytes now come from staging.
                Ok(Opened {
                    fh,
                    keep_cache: false,
                })
            }
        }
    }

    /// [`Core::open_file`] from memory: `None` for an open for writing,
    /// which stages the file first.
    pub fn open_now(&self, ino: u64, flags: i32) -> Option<Result<Opened, Error>> {
        let state = &self.state;
        if let Some(error) = state.refuse_to_spend_download(ino, flags) {
            return Some(Err(error));
        }
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return match self.writable() {
                Ok(()) => None,
                Err(error) => Some(Err(error)),
            };
        }
        let Some(node) = state.inodes.get(ino) else {
            return Some(Err(Error::NotFound));
        };
        let remote = |entry| {
            let (fh, keep_cache) = state.open_remote_handle(ino, entry);
            Ok(Opened { fh, keep_cache })
        };
        Some(match &node.kind {
            NodeKind::File(entry) => remote(entry),
            NodeKind::Folder { .. } => Err(Error::IsADirectory),
            NodeKind::Local(_) => match file_data::open_local(state, ino) {
                Ok(Some(fh)) => Ok(Opened {
                    fh,
                    keep_cache: false,
                }),
                // The pending file is gone: its upload finished after the
                // node was looked at, and the node now shows the remote
                // file (the queue swaps it over before forgetting the entry).
                Ok(None) => match state.inodes.get(ino).map(|node| node.kind) {
                    Some(NodeKind::File(entry)) => remote(&entry),
                    _ => Err(Error::NotFound),
                },
                Err(error) => Err(error),
            },
        })
    }

    /// Up to `size` bytes of the open file `fh` from `offset`.
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes, Error> {
        match self.start_read(fh, offset, size)? {
            ReadStart::Ready(data) => Ok(data),
            ReadStart::Fetch(fetch) => fetch.finish().await,
        }
    }

    /// The memory-only part of a read: the bytes when they are at hand
    /// (cached blocks, staging files on the local disk), or the fetch that
    /// brings them.
    pub fn start_read(&self, fh: u64, offset: u64, size: u32) -> Result<ReadStart, Error> {
        let handle = self.state.handles.get(fh).ok_or(Error::BadHandle)?;
        match handle {
            Handle::RemoteReader(file) => {
                let len = u64::from(size);
                let plan = file.plan(offset, len);
                Ok(match file.read_cached(offset, len) {
                    Some(data) => ReadStart::Ready(data),
                    None => ReadStart::Fetch(RemoteRead {
                        file,
                        offset,
                        len,
                        plan,
                    }),
                })
            }
            // A pending file's bytes, from its staging file.
            Handle::StagedWriter(writer) => Ok(ReadStart::Ready(
                file_data::read_staged(&writer, offset, size)?.into(),
            )),
            Handle::PendingReader(reader) => Ok(ReadStart::Ready(
                file_data::read_pending(&reader, offset, size)?.into(),
            )),
            Handle::Directory(_) => Err(Error::BadHandle),
        }
    }

    /// Writes `data` at `offset` through write handle `fh` (at the end
    /// for `O_APPEND` handles); the bytes written.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, Error> {
        file_data::write(&self.state, fh, offset, data)
    }

    /// `close(2)` of one descriptor: written bytes become durable locally.
    pub async fn flush(&self, fh: u64) -> Result<(), Error> {
        match self.state.handles.get(fh).ok_or(Error::BadHandle)? {
            Handle::StagedWriter(writer) => {
                let work = file_data::flush(&self.state, writer);
                tokio::task::spawn_blocking(work).await?
            }
            Handle::RemoteReader(_) | Handle::PendingReader(_) => Ok(()),
            Handle::Directory(_) => Err(Error::BadHandle),
        }
    }

    /// The last close of a handle: a written file is queued for upload.
    pub async fn release(&self, fh: u64) -> Result<(), Error> {
        match self.state.handles.remove(fh) {
            Some(Handle::StagedWriter(writer)) => {
                tokio::task::spawn_blocking(file_data::release(writer)).await?
            }
            Some(Handle::Directory(open)) => {
                self.state.closed_dir(&open);
                Ok(())
            }
            Some(Handle::RemoteReader(_) | Handle::PendingReader(_)) | None => Ok(()),
        }
    }

    /// Returns once the service holds the file's current content.
    pub async fn fsync(&self, fh: u64) -> Result<(), Error> {
        let entry = match self.state.handles.get(fh).ok_or(Error::BadHandle)? {
            Handle::StagedWriter(writer) => writer.entry,
            Handle::PendingReader(reader) => reader.entry,
            Handle::RemoteReader(_) => return Ok(()),
            Handle::Directory(_) => return Err(Error::BadHandle),
        };
        file_data::fsync(&self.state, entry).await
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
        let work = file_data::create(&self.state, parent, name, mode, flags)?;
        let (node, fh) = tokio::task::spawn_blocking(work).await??;
        self.state.inodes.remember_lookup(node.ino);
        metadata_overlay::keep_create_mode(&self.state, node.ino, mode).await?;
        Ok((self.state.attr(&node), fh))
    }

    /// `mknod` of a regular file (other kinds: `EPERM`).
    pub async fn mknod(&self, parent: u64, name: &OsStr, mode: u32) -> Result<Attr, Error> {
        self.writable()?;
        let work = file_data::mknod(&self.state, parent, name, mode)?;
        let node = tokio::task::spawn_blocking(work).await??;
        self.state.inodes.remember_lookup(node.ino);
        metadata_overlay::keep_create_mode(&self.state, node.ino, mode).await?;
        Ok(self.state.attr(&node))
    }

    pub async fn mkdir(&self, parent: u64, name: &OsStr) -> Result<Attr, Error> {
        self.writable()?;
        let node = namespace::mkdir(&self.state, parent, name)?.await?;
        self.state.inodes.remember_lookup(node.ino);
        Ok(self.state.attr(&node))
    }

    pub async fn unlink(&self, parent: u64, name: &OsStr) -> Result<(), Error> {
        self.writable()?;
        namespace::unlink(&self.state, parent, name)?.await
    }

    pub async fn rmdir(&self, parent: u64, name: &OsStr) -> Result<(), Error> {
        self.writable()?;
        namespace::rmdir(&self.state, parent, name)?.await
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
        namespace::rename(&self.state, parent, name, new_parent, new_name, flags)?.await
    }

    /// Grows the file behind write handle `fh` to at least `offset + length`.
    /// (`offset` and `length` as `fallocate(2)` takes them: negative ones
    /// are EINVAL.)
    pub fn fallocate(&self, fh: u64, offset: i64, length: i64, mode: i32) -> Result<(), Error> {
        self.writable()?;
        file_data::fallocate(&self.state, fh, offset, length, mode)
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
            max_name: self.state.remote.capabilities().max_name_bytes,
        }
    }

    /// The value of extended attribute `name` of `ino`.
    pub async fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>, Error> {
        match self.xattr_source(ino, name)? {
            XattrSource::Value(value) => Ok(value),
            XattrSource::Link(id) => Ok(self.state.remote.direct_link(&id).await?.url.into_bytes()),
        }
    }

    /// [`Core::getxattr`] from memory: `None` when the value must be
    /// asked of the service.
    pub fn getxattr_now(&self, ino: u64, name: &OsStr) -> Option<Result<Vec<u8>, Error>> {
        match self.xattr_source(ino, name) {
            Ok(XattrSource::Value(value)) => Some(Ok(value)),
            Ok(XattrSource::Link(_)) => None,
            Err(error) => Some(Err(error)),
        }
    }

    fn xattr_source(&self, ino: u64, name: &OsStr) -> Result<XattrSource, Error> {
        let state = &self.state;
        let node = state.inodes.get(ino).ok_or(Error::NotFound)?;
        let name = name.to_str().ok_or(Error::NoAttribute)?;
        if !name.starts_with("user.") {
            // Only the user namespace exists here. Saying so (rather than
            // "no such attribute") lets tools like `ls -l` stop asking for
            // SELinux labels and ACLs after the first file of the mount.
            return Err(Error::OperationNotSupported);
        }
        if let Some((_, value)) = state
            .local_xattrs(&node)
            .into_iter()
            .find(|(n, _)| n == name)
        {
            return Ok(XattrSource::Value(value));
        }
        let NodeKind::File(entry) = &node.kind else {
            return Err(Error::NoAttribute);
        };
        if name != format!("{XATTR_PREFIX}link") {
            return Err(Error::NoAttribute);
        }
        Ok(XattrSource::Link(entry.id.clone()))
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

    /// Why a change this filesystem never makes is refused (EROFS first on
    /// a read-only mount, like every change).
    pub fn refusal(&self, change: Unsupported) -> Error {
        match self.writable() {
            Err(error) => error,
            Ok(()) => Error::Unsupported(change),
        }
    }

    /// [`Core::refusal`] of a change that would create `name` (a symlink,
    /// a hard link): a name too long for the service is ENAMETOOLONG
    /// first, as for every new name.
    pub fn refusal_of_name(&self, change: Unsupported, name: &OsStr) -> Error {
        if let Err(error) = self.writable() {
            return error;
        }
        match name
            .to_str()
            .map(|name| namespace::refuse_too_long(&self.state, name))
        {
            Some(Err(error)) => error,
            _ => Error::Unsupported(change),
        }
    }

    /// The block cache's counters (logged when the filesystem goes).
    pub fn cache_stats(&self) -> crate::cache::block::BlockCacheStats {
        self.state.blocks.stats()
    }

    /// A node a change just made, as the kernel is told of it.
    pub fn new_entry(&self, attr: Attr) -> Entry {
        Entry {
            attr,
            ttl: self.attr_ttl(),
        }
    }

    /// How long the kernel may trust attributes and entries it was given.
    pub fn attr_ttl(&self) -> Duration {
        self.state.config.dir_cache_time
    }
}
