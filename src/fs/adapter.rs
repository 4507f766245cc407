//! The `fuser::Filesystem` implementation.
//!
//! The kernel loop thread only ever does memory work: a callback that can be
//! answered from the inode table or the caches answers at once; one that
//! needs the service clones what it needs, spawns onto the tokio runtime and
//! replies from there. So a slow service never holds up requests about
//! folders and blocks already cached.
//!
//! Every callback that changes something goes through `FilehostFs::change`,
//! the one `--read-only` check, to [`super::write`].

use std::collections::HashMap;
use std::ffi::OsStr;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fuser::consts;
use fuser::{
    FileAttr, FileType, Filesystem, KernelConfig, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow,
};
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tracing::{debug, info, warn};

use super::inode::{InodeTable, Node, NodeKind, ROOT_INO};
use super::read::{OpenFile, ReadAheadConfig};
use super::{write, FsError};
use crate::cache::block::{BlockCache, BlockCacheConfig};
use crate::cache::meta::MetaCache;
use crate::cache::{ContentKey, FileSource};
use crate::remote::{FileEntry, FolderId, Remote};
use crate::writeback::Recovery;

/// Settings of a mounted filesystem.
#[derive(Clone, Debug)]
pub struct FsConfig {
    pub cache: BlockCacheConfig,
    pub read_ahead: ReadAheadConfig,
    pub dir_cache_time: Duration,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits removed from 0666 (files) and 0777 (folders).
    pub umask: u16,
    pub write: write::WriteConfig,
    /// `--read-only`: every change answers EROFS.
    pub read_only: bool,
    /// Whether files whose reading spends a limited download (file.io) may
    /// be opened for reading (`--consume-downloads`).
    pub consume_downloads: bool,
}

/// `EACCES` when opening `ino` would read a file whose every read spends
/// one of its limited downloads (file.io) and the user has not allowed that
/// with `--consume-downloads`. Truncating opens read nothing and pass.
fn refuse_to_spend_download(state: &FsState, ino: u64, flags: i32) -> Option<libc::c_int> {
    if state.config.consume_downloads || flags & libc::O_TRUNC != 0 {
        return None;
    }
    let node = state.inodes.get(ino)?;
    let NodeKind::File(entry) = &node.kind else {
        return None;
    };
    if !state.remote.read_consumes_download(&entry.id) {
        return None;
    }
    warn!(
        file = %entry.name,
        "refusing to open {:?}: it was not uploaded from this machine, and reading it would \
         spend one of its {} downloads (possibly deleting it); mount with --consume-downloads \
         to allow that",
        entry.name,
        state.remote.service()
    );
    Some(libc::EACCES)
}

/// How far the kernel reads ahead of a sequential reader, which is also the
/// size of its read requests (FUSE caps them at 1 MiB by default).
pub const KERNEL_READ_AHEAD: u32 = 1 << 20;

/// The prefix of every extended attribute the mount exposes.
pub const XATTR_PREFIX: &str = "user.filehostfs.";

/// State shared by the kernel loop and the tasks it spawns.
pub(crate) struct FsState {
    pub remote: Arc<dyn Remote>,
    pub meta: MetaCache,
    pub blocks: BlockCache,
    pub inodes: InodeTable,
    pub config: FsConfig,
    pub runtime: Handle,
    pub files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    dirs: Mutex<HashMap<u64, Arc<OpenDir>>>,
    next_handle: AtomicU64,
    /// The content each inode had when last opened, to tell the kernel it
    /// may keep its page cache when the content is unchanged.
    opened_content: Mutex<HashMap<u64, ContentKey>>,
    /// What the kernel's copy of each folder's listing holds.
    kernel_listings: Mutex<HashMap<u64, KernelListing>>,
    mounted_at: SystemTime,
    pub write: write::WriteState,
}

/// An open folder handle.
struct OpenDir {
    dir: u64,
    snapshot: DirSnapshot,
}

/// A folder's entries as they were at opendir, served to the readdir calls
/// that follow so their offsets stay meaningful.
struct DirSnapshot {
    entries: Vec<DirEntry>,
    /// How long the kernel may trust the entries' attributes.
    ttl: Duration,
}

impl DirSnapshot {
    /// Identifies the entries as the kernel caches them (names, inodes and
    /// kinds; attributes have their own time-to-live).
    fn fingerprint(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for entry in &self.entries {
            entry.ino.hash(&mut hasher);
            entry.name.hash(&mut hasher);
            (entry.kind as u8).hash(&mut hasher);
        }
        hasher.finish()
    }

    /// The entries from the kernel's readdir `offset` on, each with the
    /// offset that resumes after it.
    fn entries_from(&self, offset: i64) -> impl Iterator<Item = (i64, &DirEntry)> {
        let start = usize::try_from(offset).unwrap_or(0);
        self.entries
            .iter()
            .enumerate()
            .skip(start)
            .map(|(i, entry)| ((i + 1) as i64, entry))
    }
}

/// The listing a folder's open handles serve, so the kernel may keep the
/// listing it cached (FOPEN_CACHE_DIR) only while ours is still the same.
/// A warm `ls` then costs no readdir at all.
#[derive(Default)]
struct KernelListing {
    /// `None` once handles with different listings were open at the same
    /// time: the kernel may have cached either, so the next opendir makes
    /// it start over.
    fingerprint: Option<u64>,
    open_handles: usize,
}

/// One entry of a folder snapshot.
struct DirEntry {
    ino: u64,
    kind: FileType,
    name: String,
    attr: FileAttr,
}

/// The filesystem handed to fuser.
pub struct FilehostFs {
    pub(crate) state: Arc<FsState>,
    /// What the write-back journal held at start-up.
    pub recovery: Recovery,
}

impl FilehostFs {
    /// Must be called inside the tokio runtime that will serve requests.
    pub fn new(remote: Arc<dyn Remote>, root: FolderId, config: FsConfig) -> std::io::Result<Self> {
        let blocks = BlockCache::new(remote.clone(), config.cache.clone())?;
        let meta = MetaCache::new(remote.clone(), config.dir_cache_time);
        let (write, recovery) = write::WriteState::open(&config.write, remote.clone())
            .map_err(std::io::Error::other)?;
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
        });
        let events = Arc::downgrade(&state);
        state.write.queue.set_listener(Arc::new(move |event| {
            if let Some(state) = events.upgrade() {
                write::on_write_event(&state, event);
            }
        }));
        Ok(FilehostFs { state, recovery })
    }
}

impl FsState {
    pub fn new_handle(&self) -> u64 {
        self.next_handle.fetch_add(1, Ordering::Relaxed)
    }

    /// Attributes of a node as the kernel sees them.
    pub fn attr(&self, node: &Node) -> FileAttr {
        let (kind, size, mtime, base_perm, nlink) = match &node.kind {
            NodeKind::Folder { created, .. } => (
                FileType::Directory,
                0,
                created.map_or(self.mounted_at, SystemTime::from),
                0o777,
                2,
            ),
            NodeKind::File(entry) => (
                FileType::RegularFile,
                entry.size,
                SystemTime::from(entry.modified),
                0o666,
                1,
            ),
            NodeKind::Local(local) => match self.write.local_attr(node.ino) {
                Some((size, modified)) => (FileType::RegularFile, size, modified, 0o666, 1),
                None => {
                    // The pending file is gone: its upload finished (the
                    // node has just become the remote file, whose size the
                    // kernel must see, not the 0 the node was created
                    // with), or it was unlinked.
                    if let Some(now) = self.inodes.get(node.ino) {
                        if !matches!(now.kind, NodeKind::Local(_)) {
                            return self.attr(&now);
                        }
                    }
                    (FileType::RegularFile, local.size, local.modified, 0o666, 1)
                }
            },
        };
        FileAttr {
            ino: node.ino,
            size,
            blocks: size.div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind,
            perm: base_perm & !self.config.umask & 0o7777,
            nlink,
            uid: self.config.uid,
            gid: self.config.gid,
            rdev: 0,
            blksize: self.blocks.block_size().min(1 << 20) as u32,
            flags: 0,
        }
    }

    /// If folder `dir`'s listing is cached and fresh, makes sure the inode
    /// table shows it and returns how long it stays fresh.
    fn fresh_listing(&self, dir: u64) -> Option<Duration> {
        let node = self.inodes.get(dir)?;
        let folder = node.folder_id()?;
        let fetched = self.meta.fresh(folder)?;
        write::apply_listing(self, dir, folder, &fetched).ok()?;
        Some(self.meta.remaining_ttl(&fetched))
    }

    /// Lists folder `dir` (from cache or the service) into the inode table;
    /// returns how long the listing stays fresh.
    pub async fn ensure_listing(&self, dir: u64) -> Result<Duration, FsError> {
        let node = self.inodes.get(dir).ok_or(FsError::NoSuchInode(dir))?;
        let folder = node.folder_id().ok_or(FsError::NotADirectory)?.clone();
        let fetched = self.meta.listing(&folder).await?;
        write::apply_listing(self, dir, &folder, &fetched)?;
        Ok(self.meta.remaining_ttl(&fetched))
    }

    fn reply_entry(&self, parent: u64, name: &str, ttl: Duration, reply: ReplyEntry) {
        match self.inodes.child(parent, name) {
            Some(node) => {
                self.inodes.remember_lookup(node.ino);
                reply.entry(&ttl, &self.attr(&node), 0);
            }
            None => reply.error(libc::ENOENT),
        }
    }

    /// A snapshot of a folder for one opendir..releasedir.
    fn snapshot(&self, dir: u64, ttl: Duration) -> Result<DirSnapshot, FsError> {
        let node = self.inodes.get(dir).ok_or(FsError::NoSuchInode(dir))?;
        let parent = self.inodes.get(node.parent).unwrap_or_else(|| node.clone());
        let mut entries = Vec::new();
        for (name, n) in [(".", &node), ("..", &parent)] {
            entries.push(DirEntry {
                ino: n.ino,
                kind: FileType::Directory,
                name: name.to_string(),
                attr: self.attr(n),
            });
        }
        for child in self.inodes.children(dir)? {
            let attr = self.attr(&child);
            entries.push(DirEntry {
                ino: child.ino,
                kind: attr.kind,
                name: child.name,
                attr,
            });
        }
        Ok(DirSnapshot { entries, ttl })
    }

    /// Opens a remote file for reading. No call to the service: the size and
    /// version come from the listing.
    fn open_remote(&self, ino: u64, entry: &FileEntry, reply: ReplyOpen) {
        let source = FileSource::for_entry(entry);
        let unchanged = self
            .opened_content
            .lock()
            .insert(ino, source.key.clone())
            .is_some_and(|previous| previous == source.key);
        let file = OpenFile::new(ino, source, self.blocks.clone(), self.config.read_ahead);
        let fh = self.new_handle();
        self.files.lock().insert(fh, file);
        let flags = if unchanged {
            consts::FOPEN_KEEP_CACHE
        } else {
            0
        };
        reply.opened(fh, flags);
    }

    /// Opens a handle on a snapshot of folder `dir` and answers the kernel
    /// with the flags that let it reuse its cached listing when unchanged.
    fn open_snapshot(&self, dir: u64, snapshot: DirSnapshot, reply: ReplyOpen) {
        let fingerprint = snapshot.fingerprint();
        let fh = self.new_handle();
        self.dirs
            .lock()
            .insert(fh, Arc::new(OpenDir { dir, snapshot }));
        let keep = {
            let mut listings = self.kernel_listings.lock();
            let listing = listings.entry(dir).or_default();
            let keep = listing.fingerprint == Some(fingerprint);
            if listing.open_handles == 0 {
                listing.fingerprint = Some(fingerprint);
            } else if !keep {
                listing.fingerprint = None;
            }
            listing.open_handles += 1;
            keep
        };
        let flags = if keep {
            consts::FOPEN_CACHE_DIR | consts::FOPEN_KEEP_CACHE
        } else {
            consts::FOPEN_CACHE_DIR
        };
        reply.opened(fh, flags);
    }

    fn open_dir(&self, fh: u64) -> Option<Arc<OpenDir>> {
        self.dirs.lock().get(&fh).cloned()
    }

    fn close_snapshot(&self, fh: u64) {
        let Some(open) = self.dirs.lock().remove(&fh) else {
            return;
        };
        let mut listings = self.kernel_listings.lock();
        if let Some(listing) = listings.get_mut(&open.dir) {
            listing.open_handles = listing.open_handles.saturating_sub(1);
        }
    }

    /// Extended attributes of a node, except the direct link (which needs
    /// the service): name and value pairs.
    fn local_xattrs(&self, node: &Node) -> Vec<(String, Vec<u8>)> {
        let mut attrs = Vec::new();
        match &node.kind {
            NodeKind::Folder { id, .. } => {
                attrs.push((format!("{XATTR_PREFIX}id"), id.0.clone().into_bytes()));
            }
            NodeKind::File(entry) => {
                attrs.push((format!("{XATTR_PREFIX}id"), entry.id.0.clone().into_bytes()));
                if let Some(checksum) = &entry.checksum {
                    attrs.push((
                        format!("{XATTR_PREFIX}checksum"),
                        checksum.clone().into_bytes(),
                    ));
                }
                if let Some(link) = &entry.share_link {
                    attrs.push((
                        format!("{XATTR_PREFIX}share_link"),
                        link.clone().into_bytes(),
                    ));
                }
                if let Some(mime) = &entry.mime {
                    attrs.push((format!("{XATTR_PREFIX}mime"), mime.clone().into_bytes()));
                }
                // When the service deletes the file on its own (file.io).
                if let Some(expires) = entry.expires {
                    attrs.push((
                        format!("{XATTR_PREFIX}expires"),
                        expires.to_rfc3339().into_bytes(),
                    ));
                }
            }
            NodeKind::Local(_) => attrs.extend(write::pending_xattrs(self, node.ino)),
        }
        attrs
    }
}

fn reply_xattr(value: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(libc::ERANGE);
    } else {
        reply.data(value);
    }
}

fn reply_bytes(data: &Bytes, reply: ReplyData) {
    reply.data(data);
}

/// fuser's reply types each have their own `error`; this lets one helper
/// refuse a change whatever the reply type.
pub(crate) trait ReplyError {
    fn reply_error(self, errno: libc::c_int);
}

macro_rules! impl_reply_error {
    ($($reply:ty),*) => {
        $(impl ReplyError for $reply {
            fn reply_error(self, errno: libc::c_int) {
                self.error(errno);
            }
        })*
    };
}

impl_reply_error!(
    ReplyAttr,
    ReplyCreate,
    ReplyEmpty,
    ReplyEntry,
    ReplyOpen,
    ReplyWrite
);

impl FilehostFs {
    /// Hands a change to the write path. On a `--read-only` mount every
    /// change answers EROFS, before any other check; uploads journaled by
    /// an earlier mount still complete, as they never pass through here.
    fn change<R: ReplyError>(&self, reply: R, apply: impl FnOnce(&Arc<FsState>, R)) {
        if self.state.config.read_only {
            return reply.reply_error(libc::EROFS);
        }
        apply(&self.state, reply);
    }

    /// Refuses a change the write path never makes (EROFS first on a
    /// read-only mount, like every change).
    fn refuse<R: ReplyError>(&self, reply: R, change: write::Unsupported) {
        self.change(reply, |_, reply| reply.reply_error(change.errno()));
    }
}

impl Filesystem for FilehostFs {
    fn init(&mut self, _req: &Request<'_>, config: &mut KernelConfig) -> Result<(), libc::c_int> {
        for capability in [
            consts::FUSE_DO_READDIRPLUS,
            consts::FUSE_PARALLEL_DIROPS,
            consts::FUSE_AUTO_INVAL_DATA,
        ] {
            if config.add_capabilities(capability).is_err() {
                debug!(capability, "kernel lacks a FUSE capability");
            }
        }
        // Let the kernel send larger reads and keep more of them in flight.
        let readahead = match config.set_max_readahead(KERNEL_READ_AHEAD) {
            Ok(_) => KERNEL_READ_AHEAD,
            Err(nearest) => {
                let _ = config.set_max_readahead(nearest);
                nearest
            }
        };
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        debug!(readahead, "FUSE session initialised");
        Ok(())
    }

    fn destroy(&mut self) {
        let stats = self.state.blocks.stats();
        info!(
            memory_hits = stats.memory_hits,
            disk_hits = stats.disk_hits,
            remote_requests = stats.remote_requests,
            remote_bytes = stats.remote_bytes,
            "filesystem released"
        );
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        // Remote names are UTF-8; anything else cannot exist there.
        let Some(name) = name.to_str().map(str::to_owned) else {
            return reply.error(libc::ENOENT);
        };
        let state = &self.state;
        match state.inodes.get(parent) {
            None => return reply.error(libc::ENOENT),
            Some(node) if !node.is_dir() => return reply.error(libc::ENOTDIR),
            Some(_) => {}
        }
        if let Some(ttl) = state.fresh_listing(parent) {
            return state.reply_entry(parent, &name, ttl, reply);
        }
        let state = state.clone();
        self.state.runtime.spawn(async move {
            match state.ensure_listing(parent).await {
                Ok(ttl) => state.reply_entry(parent, &name, ttl, reply),
                Err(error) => {
                    debug!(parent, %name, %error, "lookup failed");
                    reply.error(error.errno())
                }
            }
        });
    }

    fn forget(&mut self, _req: &Request<'_>, ino: u64, nlookup: u64) {
        self.state.inodes.forget(ino, nlookup);
    }

    fn batch_forget(&mut self, _req: &Request<'_>, nodes: &[fuser::fuse_forget_one]) {
        for node in nodes {
            self.state.inodes.forget(node.nodeid, node.nlookup);
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let state = &self.state;
        let Some(node) = state.inodes.get(ino) else {
            return reply.error(libc::ENOENT);
        };
        if ino == ROOT_INO || matches!(node.kind, NodeKind::Local(_)) {
            return reply.attr(&state.config.dir_cache_time, &state.attr(&node));
        }
        if let Some(ttl) = state.fresh_listing(node.parent) {
            let node = state.inodes.get(ino).unwrap_or(node);
            return reply.attr(&ttl, &state.attr(&node));
        }
        // The attributes come from the parent's listing, which has expired.
        let state = state.clone();
        self.state.runtime.spawn(async move {
            match state.ensure_listing(node.parent).await {
                Ok(ttl) => {
                    let node = state.inodes.get(ino).unwrap_or(node);
                    reply.attr(&ttl, &state.attr(&node));
                }
                Err(error) => {
                    // Better slightly old attributes than a failed stat.
                    debug!(ino, %error, "attribute refresh failed; answering the last known");
                    reply.attr(&Duration::from_secs(1), &state.attr(&node));
                }
            }
        });
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        // Mode, owner and atime are accepted and ignored (see `write`).
        let change = write::AttrChange { size, mtime, fh };
        self.change(reply, |state, reply| {
            write::setattr(state, ino, change, reply)
        });
    }

    fn mknod(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        self.change(reply, |state, reply| {
            write::mknod(state, parent, name, mode, reply)
        });
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.change(reply, |state, reply| {
            write::mkdir(state, parent, name, reply)
        });
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        self.change(reply, |state, reply| {
            write::unlink(state, parent, name, reply)
        });
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        self.change(reply, |state, reply| {
            write::rmdir(state, parent, name, reply)
        });
    }

    fn symlink(
        &mut self,
        _req: &Request<'_>,
        _parent: u64,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        self.refuse(reply, write::Unsupported::Symlink);
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        self.change(reply, |state, reply| {
            write::rename(state, parent, name, newparent, newname, flags, reply)
        });
    }

    fn link(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _newparent: u64,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.refuse(reply, write::Unsupported::HardLink);
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let state = &self.state;
        if let Some(errno) = refuse_to_spend_download(state, ino, flags) {
            return reply.error(errno);
        }
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return self.change(reply, |state, reply| {
                write::open_for_writing(state, ino, flags, reply)
            });
        }
        let Some(node) = state.inodes.get(ino) else {
            return reply.error(libc::ENOENT);
        };
        match &node.kind {
            NodeKind::File(entry) => state.open_remote(ino, entry, reply),
            NodeKind::Folder { .. } => reply.error(libc::EISDIR),
            NodeKind::Local(_) => {
                let Some(reply) = write::open_local(state, ino, reply) else {
                    return;
                };
                match state.inodes.get(ino).map(|node| node.kind) {
                    Some(NodeKind::File(entry)) => state.open_remote(ino, &entry, reply),
                    _ => reply.error(libc::ENOENT),
                }
            }
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let Some(file) = self.state.files.lock().get(&fh).cloned() else {
            return write::read_unknown_handle(&self.state, fh, offset, size, reply);
        };
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(libc::EINVAL);
        };
        let len = u64::from(size);
        let plan = file.plan(offset, len);
        if let Some(data) = file.read_cached(offset, len) {
            return reply_bytes(&data, reply);
        }
        self.state.runtime.spawn(async move {
            match file.read(offset, len, plan).await {
                Ok(data) => reply_bytes(&data, reply),
                Err(error) => {
                    warn!(ino, offset, len, %error, "read failed");
                    reply.error(error.errno())
                }
            }
        });
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        write::write(&self.state, fh, offset, data, reply);
    }

    fn flush(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _lock_owner: u64,
        reply: ReplyEmpty,
    ) {
        if self.state.files.lock().contains_key(&fh) {
            return reply.ok();
        }
        write::flush(&self.state, fh, reply);
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if self.state.files.lock().remove(&fh).is_some() {
            return reply.ok();
        }
        write::release(&self.state, fh, reply);
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if self.state.files.lock().contains_key(&fh) {
            return reply.ok();
        }
        write::fsync(&self.state, fh, reply);
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let state = &self.state;
        match state.inodes.get(ino) {
            None => return reply.error(libc::ENOENT),
            Some(node) if !node.is_dir() => return reply.error(libc::ENOTDIR),
            Some(_) => {}
        }
        if let Some(ttl) = state.fresh_listing(ino) {
            return match state.snapshot(ino, ttl) {
                Ok(snapshot) => state.open_snapshot(ino, snapshot, reply),
                Err(error) => reply.error(error.errno()),
            };
        }
        let state = state.clone();
        self.state.runtime.spawn(async move {
            let snapshot = match state.ensure_listing(ino).await {
                Ok(ttl) => state.snapshot(ino, ttl),
                Err(error) => Err(error),
            };
            match snapshot {
                Ok(snapshot) => state.open_snapshot(ino, snapshot, reply),
                Err(error) => {
                    warn!(ino, %error, "cannot list folder");
                    reply.error(error.errno())
                }
            }
        });
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let Some(open) = self.state.open_dir(fh) else {
            return reply.error(libc::EBADF);
        };
        for (resume, entry) in open.snapshot.entries_from(offset) {
            if reply.add(entry.ino, resume, entry.kind, &entry.name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let Some(open) = self.state.open_dir(fh) else {
            return reply.error(libc::EBADF);
        };
        let snapshot = &open.snapshot;
        for (resume, entry) in snapshot.entries_from(offset) {
            if reply.add(
                entry.ino,
                resume,
                &entry.name,
                &snapshot.ttl,
                &entry.attr,
                0,
            ) {
                break;
            }
            // The kernel takes a reference on every entry but `.` and `..`
            // (the first two).
            if resume > 2 {
                self.state.inodes.remember_lookup(entry.ino);
            }
        }
        reply.ok();
    }

    fn releasedir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        reply: ReplyEmpty,
    ) {
        self.state.close_snapshot(fh);
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        const BLOCK: u64 = 4096;
        // When the service does not tell its total, report plenty of room
        // rather than a full disk that would stop file managers from copying.
        const UNKNOWN_TOTAL: u64 = 1 << 50;
        let state = self.state.clone();
        self.state.runtime.spawn(async move {
            let (used, total) = match state.meta.about().await {
                Ok(info) => (info.used, info.total.unwrap_or(info.used + UNKNOWN_TOTAL)),
                Err(error) => {
                    warn!(%error, "cannot read account space");
                    (0, 0)
                }
            };
            let blocks = total / BLOCK;
            let free = total.saturating_sub(used) / BLOCK;
            let files = state.inodes.len() as u64;
            reply.statfs(
                blocks,
                free,
                free,
                files,
                u64::from(u32::MAX),
                BLOCK as u32,
                255,
                BLOCK as u32,
            );
        });
    }

    fn setxattr(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.refuse(reply, write::Unsupported::SetXattr);
    }

    fn getxattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        let state = &self.state;
        let Some(node) = state.inodes.get(ino) else {
            return reply.error(libc::ENOENT);
        };
        let Some(name) = name.to_str() else {
            return reply.error(libc::ENODATA);
        };
        if !name.starts_with("user.") {
            // Only the user namespace exists here. Saying so (rather than
            // "no such attribute") lets tools like `ls -l` stop asking for
            // SELinux labels and ACLs after the first file of the mount.
            return reply.error(libc::ENOTSUP);
        }
        if let Some((_, value)) = state
            .local_xattrs(&node)
            .into_iter()
            .find(|(n, _)| n == name)
        {
            return reply_xattr(&value, size, reply);
        }
        let NodeKind::File(entry) = &node.kind else {
            return reply.error(libc::ENODATA);
        };
        if name != format!("{XATTR_PREFIX}link") {
            return reply.error(libc::ENODATA);
        }
        let id = entry.id.clone();
        let remote = state.remote.clone();
        self.state.runtime.spawn(async move {
            match remote.direct_link(&id).await {
                Ok(link) => reply_xattr(link.url.as_bytes(), size, reply),
                Err(error) => reply.error(error.errno()),
            }
        });
    }

    fn listxattr(&mut self, _req: &Request<'_>, ino: u64, size: u32, reply: ReplyXattr) {
        let state = &self.state;
        let Some(node) = state.inodes.get(ino) else {
            return reply.error(libc::ENOENT);
        };
        let mut names: Vec<String> = state
            .local_xattrs(&node)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        if matches!(node.kind, NodeKind::File(_)) {
            names.push(format!("{XATTR_PREFIX}link"));
        }
        let mut list = Vec::new();
        for name in names {
            list.extend_from_slice(name.as_bytes());
            list.push(0);
        }
        reply_xattr(&list, size, reply);
    }

    fn removexattr(&mut self, _req: &Request<'_>, _ino: u64, _name: &OsStr, reply: ReplyEmpty) {
        self.refuse(reply, write::Unsupported::RemoveXattr);
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.change(reply, |state, reply| {
            write::create(state, parent, name, mode, flags, reply)
        });
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.change(reply, |state, reply| {
            write::fallocate(state, fh, offset, length, mode, reply)
        });
    }

    fn copy_file_range(
        &mut self,
        _req: &Request<'_>,
        _ino_in: u64,
        _fh_in: u64,
        _offset_in: i64,
        _ino_out: u64,
        _fh_out: u64,
        _offset_out: i64,
        _len: u64,
        _flags: u32,
        reply: ReplyWrite,
    ) {
        self.refuse(reply, write::Unsupported::CopyFileRange);
    }
}
