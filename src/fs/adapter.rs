//! The `fuser::Filesystem` implementation over [`super::Core`]'s state: the
//! only file that speaks FUSE, and where an [`super::Error`] becomes the
//! errno the kernel gets.
//!
//! The kernel loop thread only ever does memory work: a callback that can be
//! answered from the inode table or the caches answers at once; one that
//! needs the service clones what it needs, spawns onto the tokio runtime and
//! replies from there. So a slow service never holds up requests about
//! folders and blocks already cached.
//!
//! Every callback that changes something goes through `FilehostFs::change`,
//! the one `--read-only` check, to [`super::write`].

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fuser::consts;
use fuser::{
    FileAttr, FileType, Filesystem, KernelConfig, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow,
};
use tracing::{debug, info, warn};

use super::core::Core;
use super::error::{Errno, Error, Unsupported};
use super::inode::{Node, NodeKind, ROOT_INO};
use super::metadata_overlay;
use super::state::{Attr, DirSnapshot, FsConfig, FsState, NodeType, OpenDir};
use super::write;
use super::xattr::XATTR_PREFIX;
use crate::remote::{FileEntry, FolderId, Remote};
use crate::writeback::Recovery;

/// How far the kernel reads ahead of a sequential reader, which is also the
/// size of its read requests (FUSE caps them at 1 MiB by default).
pub const KERNEL_READ_AHEAD: u32 = 1 << 20;

/// The filesystem handed to fuser.
pub struct FilehostFs {
    /// The core's state, which the inline fast paths read directly.
    pub(crate) state: Arc<FsState>,
    pub(crate) core: Core,
    /// What the write-back journal held at start-up.
    pub recovery: Recovery,
}

impl FilehostFs {
    /// Must be called inside the tokio runtime that will serve requests.
    pub fn new(remote: Arc<dyn Remote>, root: FolderId, config: FsConfig) -> Result<Self, Error> {
        let (core, recovery) = Core::new(remote, root, config)?;
        Ok(FilehostFs {
            state: core.state.clone(),
            core,
            recovery,
        })
    }
}

impl FsState {
    fn reply_entry(&self, parent: u64, name: &str, ttl: Duration, reply: ReplyEntry) {
        match self.inodes.child(parent, name) {
            Some(node) => {
                self.inodes.remember_lookup(node.ino);
                reply.entry(&ttl, &self.file_attr(&node), 0);
            }
            None => reply.error(libc::ENOENT),
        }
    }

    /// Opens a remote file for reading. No call to the service: the size and
    /// version come from the listing.
    fn open_remote(&self, ino: u64, entry: &FileEntry, reply: ReplyOpen) {
        let (fh, unchanged) = self.open_remote_handle(ino, entry);
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

/// Runs a checked change on the runtime, never on the kernel loop, and
/// answers with its outcome; a failed check is answered at once.
fn spawn_answer<T, R, W>(
    state: &FsState,
    reply: R,
    checked: Result<W, Error>,
    answer: impl FnOnce(R, T) + Send + 'static,
) where
    T: Send + 'static,
    R: ReplyError + Send + 'static,
    W: std::future::Future<Output = Result<T, Error>> + Send + 'static,
{
    match checked {
        Err(error) => reply.reply_error(error.errno()),
        Ok(work) => {
            state.runtime.spawn(async move {
                match work.await {
                    Ok(value) => answer(reply, value),
                    Err(error) => reply.reply_error(error.errno()),
                }
            });
        }
    }
}

/// Like [`spawn_answer`] for changes that wait on the disk: they run on
/// the runtime's blocking threads.
fn spawn_blocking_answer<T, R, W>(
    state: &FsState,
    reply: R,
    checked: Result<W, Error>,
    answer: impl FnOnce(R, T) + Send + 'static,
) where
    T: Send + 'static,
    R: ReplyError + Send + 'static,
    W: FnOnce() -> Result<T, Error> + Send + 'static,
{
    match checked {
        Err(error) => reply.reply_error(error.errno()),
        Ok(work) => {
            state.runtime.spawn_blocking(move || match work() {
                Ok(value) => answer(reply, value),
                Err(error) => reply.reply_error(error.errno()),
            });
        }
    }
}

/// Answers with the node a change made, which the kernel holds a
/// reference to from then on.
fn answer_new_entry(state: &Arc<FsState>) -> impl FnOnce(ReplyEntry, Node) + Send + 'static {
    let state = state.clone();
    move |reply, node| {
        state.inodes.remember_lookup(node.ino);
        reply.entry(&state.config.dir_cache_time, &state.file_attr(&node), 0);
    }
}

fn answer_ok(reply: ReplyEmpty, (): ()) {
    reply.ok();
}

fn file_type(kind: NodeType) -> FileType {
    match kind {
        NodeType::Directory => FileType::Directory,
        NodeType::RegularFile => FileType::RegularFile,
    }
}

/// The kernel's view of a node's attributes.
fn file_attr(attr: &Attr) -> FileAttr {
    FileAttr {
        ino: attr.ino,
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: attr.mtime,
        mtime: attr.mtime,
        ctime: attr.mtime,
        crtime: attr.mtime,
        kind: file_type(attr.kind),
        perm: attr.perm,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: 0,
        blksize: attr.blksize,
        flags: 0,
    }
}

impl FsState {
    fn file_attr(&self, node: &Node) -> FileAttr {
        file_attr(&self.attr(node))
    }
}

impl FilehostFs {
    /// Hands a change to the write path. On a `--read-only` mount every
    /// change answers EROFS, before any other check; uploads journaled by
    /// an earlier mount still complete, as they never pass through here.
    fn change<R: ReplyError>(&self, reply: R, apply: impl FnOnce(&Arc<FsState>, R)) {
        if self.state.config.read_only {
            return reply.reply_error(Error::ReadOnly.errno());
        }
        apply(&self.state, reply);
    }

    /// Refuses a change the write path never makes (EROFS first on a
    /// read-only mount, like every change).
    fn refuse<R: ReplyError>(&self, reply: R, change: Unsupported) {
        self.change(reply, |_, reply| {
            reply.reply_error(Error::Unsupported(change).errno())
        });
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
            return reply.attr(&state.config.dir_cache_time, &state.file_attr(&node));
        }
        if let Some(ttl) = state.fresh_listing(node.parent) {
            let node = state.inodes.get(ino).unwrap_or(node);
            return reply.attr(&ttl, &state.file_attr(&node));
        }
        // The attributes come from the parent's listing, which has expired.
        let state = state.clone();
        self.state.runtime.spawn(async move {
            match state.ensure_listing(node.parent).await {
                Ok(ttl) => {
                    let node = state.inodes.get(ino).unwrap_or(node);
                    reply.attr(&ttl, &state.file_attr(&node));
                }
                Err(error) => {
                    // Better slightly old attributes than a failed stat.
                    debug!(ino, %error, "attribute refresh failed; answering the last known");
                    reply.attr(&Duration::from_secs(1), &state.file_attr(&node));
                }
            }
        });
    }

    fn setattr(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
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
        // atime is accepted and ignored (see `write`).
        let mtime = mtime.map(|time| match time {
            TimeOrNow::SpecificTime(time) => time,
            TimeOrNow::Now => SystemTime::now(),
        });
        let change = write::AttrChange {
            size,
            mtime,
            mode,
            uid,
            gid,
            caller_uid: Some(req.uid()),
            fh,
        };
        self.change(reply, |state, reply| {
            let answer = {
                let state = state.clone();
                move |reply: ReplyAttr, node| {
                    reply.attr(&state.config.dir_cache_time, &state.file_attr(&node))
                }
            };
            spawn_answer(state, reply, write::setattr(state, ino, change), answer)
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
            let made = write::mknod(state, parent, name, mode);
            spawn_blocking_answer(state, reply, made, answer_new_entry(state))
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
            let made = write::mkdir(state, parent, name);
            spawn_answer(state, reply, made, answer_new_entry(state))
        });
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        self.change(reply, |state, reply| {
            spawn_answer(state, reply, write::unlink(state, parent, name), answer_ok)
        });
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        self.change(reply, |state, reply| {
            spawn_answer(state, reply, write::rmdir(state, parent, name), answer_ok)
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
        self.refuse(reply, Unsupported::Symlink);
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
            let renamed = write::rename(state, parent, name, newparent, newname, flags);
            spawn_answer(state, reply, renamed, answer_ok)
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
        self.refuse(reply, Unsupported::HardLink);
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let state = &self.state;
        if let Some(error) = state.refuse_to_spend_download(ino, flags) {
            return reply.error(error.errno());
        }
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return self.change(reply, |state, reply| {
                // Kernel page cache dropped: the file's bytes now come from staging.
                let opened = Ok(write::open_for_writing(state, ino, flags));
                spawn_answer(state, reply, opened, |reply: ReplyOpen, fh| {
                    reply.opened(fh, 0)
                })
            });
        }
        let Some(node) = state.inodes.get(ino) else {
            return reply.error(libc::ENOENT);
        };
        match &node.kind {
            NodeKind::File(entry) => state.open_remote(ino, entry, reply),
            NodeKind::Folder { .. } => reply.error(libc::EISDIR),
            NodeKind::Local(_) => match write::open_local(state, ino) {
                Ok(Some(fh)) => reply.opened(fh, 0),
                // The pending file is gone: its upload finished after the
                // node was looked at, and the node now shows the remote
                // file (the queue swaps it over before forgetting the entry).
                Ok(None) => match state.inodes.get(ino).map(|node| node.kind) {
                    Some(NodeKind::File(entry)) => state.open_remote(ino, &entry, reply),
                    _ => reply.error(Error::NotFound.errno()),
                },
                Err(error) => reply.error(error.errno()),
            },
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
            // A pending file's bytes, from its staging file.
            return match write::read_unknown_handle(&self.state, fh, offset, size) {
                Ok(data) => reply.data(&data),
                Err(error) => reply.error(error.errno()),
            };
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
        match write::write(&self.state, fh, offset, data) {
            Ok(written) => reply.written(written),
            Err(error) => reply.error(error.errno()),
        }
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
        match write::flush(&self.state, fh) {
            Ok(None) => reply.ok(),
            Ok(Some(work)) => spawn_blocking_answer(&self.state, reply, Ok(work), answer_ok),
            Err(error) => reply.error(error.errno()),
        }
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
        match write::release(&self.state, fh) {
            None => reply.ok(),
            Some(work) => spawn_blocking_answer(&self.state, reply, Ok(work), answer_ok),
        }
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
        spawn_answer(&self.state, reply, write::fsync(&self.state, fh), answer_ok);
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
            if reply.add(entry.ino, resume, file_type(entry.kind), &entry.name) {
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
                &file_attr(&entry.attr),
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
        let core = self.core.clone();
        self.state.runtime.spawn(async move {
            let space = core.statfs().await;
            reply.statfs(
                space.blocks,
                space.free,
                space.free,
                space.files,
                u64::from(u32::MAX),
                space.block_size,
                space.max_name,
                space.block_size,
            );
        });
    }

    fn setxattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let Some(name) = name.to_str().map(str::to_string) else {
            return self.refuse(reply, Unsupported::SetXattr);
        };
        let value = value.to_vec();
        self.change(reply, |state, reply| {
            let set = metadata_overlay::set_xattr(state.clone(), ino, name, value, flags);
            spawn_answer(state, reply, Ok(set), answer_ok)
        });
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

    fn removexattr(&mut self, _req: &Request<'_>, ino: u64, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name.to_str().map(str::to_string) else {
            return reply.error(libc::ENODATA);
        };
        self.change(reply, |state, reply| {
            let removed = metadata_overlay::remove_xattr(state.clone(), ino, name);
            spawn_answer(state, reply, Ok(removed), answer_ok)
        });
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
            let made = write::create(state, parent, name, mode, flags);
            let answer = {
                let state = state.clone();
                move |reply: ReplyCreate, (node, fh): (Node, u64)| {
                    state.inodes.remember_lookup(node.ino);
                    let attr = state.file_attr(&node);
                    reply.created(&state.config.dir_cache_time, &attr, 0, fh, 0)
                }
            };
            spawn_blocking_answer(state, reply, made, answer)
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
            match write::fallocate(state, fh, offset, length, mode) {
                Ok(()) => reply.ok(),
                Err(error) => reply.error(error.errno()),
            }
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
        self.refuse(reply, Unsupported::CopyFileRange);
    }
}
