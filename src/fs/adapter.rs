//! The `fuser::Filesystem` implementation over [`super::Core`]: the only
//! file that speaks FUSE, and where an [`super::Error`] becomes the errno
//! the kernel gets (logged once, at the error's level).
//!
//! A thin bridge: each callback either answers inline from one of the
//! core's memory-only fast paths (`*_now`, [`Core::start_read`]: fresh
//! listings, cached blocks, the keep-cache decisions) or spawns the core's
//! async method on the tokio runtime and replies from there. The kernel
//! loop thread never waits on the network, so a slow service never holds up
//! requests about folders and blocks already cached.

use std::ffi::OsStr;
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    BsdFileFlags, CopyFileRangeFlags, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tracing::{debug, info};

use super::attr::{Attr, NodeType};
use super::core::{Core, Entry, Opened, ReadStart};
use super::error::{Errno, Error, Unsupported};
use super::file_data::AttrChange;
use super::state::{FsConfig, FsState};
use crate::remote::{FolderId, Remote};
use crate::writeback::Recovery;

/// How far the kernel reads ahead of a sequential reader, which is also the
/// size of its read requests (FUSE caps them at 1 MiB by default).
pub const KERNEL_READ_AHEAD: u32 = 1 << 20;

/// The filesystem handed to fuser.
pub struct FilehostFs {
    /// The core's state, for the mount command's start and end.
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

    /// Runs `work` on the runtime, never on the kernel loop, and answers
    /// with its outcome.
    fn spawn<T, R>(
        &self,
        op: &'static str,
        reply: R,
        work: impl Future<Output = Result<T, Error>> + Send + 'static,
        answer: impl FnOnce(R, T) + Send + 'static,
    ) where
        R: ReplyError + Send + 'static,
    {
        self.state.runtime.spawn(async move {
            match work.await {
                Ok(value) => answer(reply, value),
                Err(error) => fail(op, reply, &error),
            }
        });
    }
}

/// Answers a failed operation with its errno: the one place an
/// [`Error`] reaches the kernel, logged here once at its level.
fn fail<R: ReplyError>(op: &'static str, reply: R, error: &Error) {
    let errno = error.errno();
    match error.level() {
        tracing::Level::ERROR => tracing::error!(op, errno, %error, "operation failed"),
        tracing::Level::WARN => tracing::warn!(op, errno, %error, "operation failed"),
        tracing::Level::INFO => tracing::info!(op, errno, %error, "operation failed"),
        tracing::Level::DEBUG => tracing::debug!(op, errno, %error, "operation failed"),
        _ => tracing::trace!(op, errno, %error, "operation failed"),
    }
    reply.reply_error(fuser::Errno::from_i32(errno));
}

/// Answers `reply` with `answer` or the error.
fn respond<T, R: ReplyError>(
    op: &'static str,
    reply: R,
    result: Result<T, Error>,
    answer: impl FnOnce(R, T),
) {
    match result {
        Ok(value) => answer(reply, value),
        Err(error) => fail(op, reply, &error),
    }
}

/// fuser's reply types each have their own `error`; this lets one helper
/// answer a failure whatever the reply type.
pub(crate) trait ReplyError {
    fn reply_error(self, errno: fuser::Errno);
}

macro_rules! impl_reply_error {
    ($($reply:ty),*) => {
        $(impl ReplyError for $reply {
            fn reply_error(self, errno: fuser::Errno) {
                self.error(errno);
            }
        })*
    };
}

impl_reply_error!(
    ReplyAttr,
    ReplyCreate,
    ReplyData,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyEmpty,
    ReplyEntry,
    ReplyOpen,
    ReplyWrite,
    ReplyXattr
);

fn reply_xattr(value: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(fuser::Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

fn reply_entry(reply: ReplyEntry, entry: Entry) {
    reply.entry(&entry.ttl, &file_attr(&entry.attr), Generation(0));
}

fn reply_attr(reply: ReplyAttr, entry: Entry) {
    reply.attr(&entry.ttl, &file_attr(&entry.attr));
}

fn reply_ok(reply: ReplyEmpty, (): ()) {
    reply.ok();
}

fn reply_opened(reply: ReplyOpen, opened: Opened) {
    let flags = if opened.keep_cache {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::empty()
    };
    reply.opened(FileHandle(opened.fh), flags);
}

/// A folder handle lets the kernel cache the listing; it may keep the one
/// it has when ours is unchanged.
fn reply_opened_dir(reply: ReplyOpen, opened: Opened) {
    let flags = if opened.keep_cache {
        FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::FOPEN_CACHE_DIR
    };
    reply.opened(FileHandle(opened.fh), flags);
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
        ino: INodeNo(attr.ino),
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

/// A kernel offset or length as the core's `fallocate` takes it (`off_t`,
/// as `fallocate(2)` does): EINVAL past `i64::MAX`.
fn signed(value: u64) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| Error::InvalidArgument)
}

/// A folder listing position: one past the last entry is as good as any
/// larger one, so offsets past `i64::MAX` list nothing.
fn dir_offset(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}

/// The resume offset of a listed entry, which the listing counts from 1.
fn resume_offset(resume: i64) -> u64 {
    u64::try_from(resume).unwrap_or(0)
}

impl Filesystem for FilehostFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        for capability in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_AUTO_INVAL_DATA,
        ] {
            if config.add_capabilities(capability).is_err() {
                debug!(?capability, "kernel lacks a FUSE capability");
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
        let stats = self.core.cache_stats();
        info!(
            memory_hits = stats.memory_hits,
            disk_hits = stats.disk_hits,
            remote_requests = stats.remote_requests,
            remote_bytes = stats.remote_bytes,
            "filesystem released"
        );
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let parent = parent.0;
        if let Some(answer) = self.core.lookup_now(parent, name) {
            return respond("lookup", reply, answer, reply_entry);
        }
        let (core, name) = (self.core.clone(), name.to_owned());
        let work = async move { core.lookup_entry(parent, &name).await };
        self.spawn("lookup", reply, work, reply_entry);
    }

    // fuser's default `batch_forget` calls this once per node (its
    // `ForgetOne` is not exported, so it cannot be overridden anyway).
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.core.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let ino = ino.0;
        if let Some(answer) = self.core.getattr_now(ino) {
            return respond("getattr", reply, answer, reply_attr);
        }
        let core = self.core.clone();
        let work = async move { core.getattr_entry(ino).await };
        self.spawn("getattr", reply, work, reply_attr);
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let ino = ino.0;
        let fh = fh.map(|fh| fh.0);
        // atime is accepted and ignored (see `file_data`).
        let mtime = mtime.map(|time| match time {
            TimeOrNow::SpecificTime(time) => time,
            TimeOrNow::Now => SystemTime::now(),
        });
        let change = AttrChange {
            size,
            mtime,
            mode,
            uid,
            gid,
            caller_uid: Some(req.uid()),
            fh,
        };
        let core = self.core.clone();
        let work = async move {
            let attr = core.setattr(ino, change).await?;
            Ok(Entry {
                attr,
                ttl: core.attr_ttl(),
            })
        };
        self.spawn("setattr", reply, work, reply_attr);
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let parent = parent.0;
        let (core, name) = (self.core.clone(), name.to_owned());
        let work = async move {
            let attr = core.mknod(parent, &name, mode).await?;
            Ok(core.new_entry(attr))
        };
        self.spawn("mknod", reply, work, reply_entry);
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let parent = parent.0;
        let (core, name) = (self.core.clone(), name.to_owned());
        let work = async move {
            let attr = core.mkdir(parent, &name).await?;
            Ok(core.new_entry(attr))
        };
        self.spawn("mkdir", reply, work, reply_entry);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let parent = parent.0;
        let (core, name) = (self.core.clone(), name.to_owned());
        let work = async move { core.unlink(parent, &name).await };
        self.spawn("unlink", reply, work, reply_ok);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let parent = parent.0;
        let (core, name) = (self.core.clone(), name.to_owned());
        let work = async move { core.rmdir(parent, &name).await };
        self.spawn("rmdir", reply, work, reply_ok);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let refusal = self.core.refusal_of_name(Unsupported::Symlink, link_name);
        fail("symlink", reply, &refusal);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (parent, newparent, flags) = (parent.0, newparent.0, flags.bits());
        let core = self.core.clone();
        let (name, newname) = (name.to_owned(), newname.to_owned());
        let work = async move { core.rename(parent, &name, newparent, &newname, flags).await };
        self.spawn("rename", reply, work, reply_ok);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let refusal = self.core.refusal_of_name(Unsupported::HardLink, newname);
        fail("link", reply, &refusal);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let (ino, flags) = (ino.0, flags.0);
        if let Some(answer) = self.core.open_now(ino, flags) {
            return respond("open", reply, answer, reply_opened);
        }
        let core = self.core.clone();
        let work = async move { core.open_file(ino, flags).await };
        self.spawn("open", reply, work, reply_opened);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.core.start_read(fh.0, offset, size) {
            Ok(ReadStart::Ready(data)) => reply.data(&data),
            Ok(ReadStart::Fetch(fetch)) => {
                self.spawn("read", reply, fetch.finish(), |reply, data| {
                    reply.data(&data)
                })
            }
            Err(error) => fail("read", reply, &error),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let written = self.core.write(fh.0, offset, data);
        respond("write", reply, written, |reply, written| {
            reply.written(written)
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let fh = fh.0;
        let core = self.core.clone();
        self.spawn(
            "flush",
            reply,
            async move { core.flush(fh).await },
            reply_ok,
        );
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let fh = fh.0;
        let core = self.core.clone();
        self.spawn(
            "release",
            reply,
            async move { core.release(fh).await },
            reply_ok,
        );
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let fh = fh.0;
        let core = self.core.clone();
        self.spawn(
            "fsync",
            reply,
            async move { core.fsync(fh).await },
            reply_ok,
        );
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let ino = ino.0;
        if let Some(answer) = self.core.opendir_now(ino) {
            return respond("opendir", reply, answer, reply_opened_dir);
        }
        let core = self.core.clone();
        let work = async move { core.opendir(ino).await };
        self.spawn("opendir", reply, work, reply_opened_dir);
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let open = match self.core.dir_handle(fh.0) {
            Ok(open) => open,
            Err(error) => return fail("readdir", reply, &error),
        };
        for (resume, entry) in open.snapshot.entries_from(dir_offset(offset)) {
            let (ino, resume) = (INodeNo(entry.ino), resume_offset(resume));
            if reply.add(ino, resume, file_type(entry.kind), &entry.name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let open = match self.core.dir_handle(fh.0) {
            Ok(open) => open,
            Err(error) => return fail("readdirplus", reply, &error),
        };
        let snapshot = &open.snapshot;
        for (resume, entry) in snapshot.entries_from(dir_offset(offset)) {
            if reply.add(
                INodeNo(entry.ino),
                resume_offset(resume),
                &entry.name,
                &snapshot.ttl,
                &file_attr(&entry.attr),
                Generation(0),
            ) {
                break;
            }
            // The kernel takes a reference on every entry it was given but
            // `.` and `..` (the first two).
            if resume > 2 {
                self.core.listed(entry.ino);
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.core.releasedir(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
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
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let (core, ino) = (self.core.clone(), ino.0);
        let (name, value) = (name.to_owned(), value.to_vec());
        let work = async move { core.setxattr(ino, &name, &value, flags).await };
        self.spawn("setxattr", reply, work, reply_ok);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let ino = ino.0;
        let answer = move |reply, value: Vec<u8>| reply_xattr(&value, size, reply);
        if let Some(value) = self.core.getxattr_now(ino, name) {
            return respond("getxattr", reply, value, answer);
        }
        let (core, name) = (self.core.clone(), name.to_owned());
        let work = async move { core.getxattr(ino, &name).await };
        self.spawn("getxattr", reply, work, answer);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let ino = ino.0;
        respond(
            "listxattr",
            reply,
            self.core.listxattr(ino),
            |reply, names| {
                let mut list = Vec::new();
                for name in names {
                    list.extend_from_slice(name.as_bytes());
                    list.push(0);
                }
                reply_xattr(&list, size, reply);
            },
        );
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (core, ino) = (self.core.clone(), ino.0);
        let name = name.to_owned();
        let work = async move { core.removexattr(ino, &name).await };
        self.spawn("removexattr", reply, work, reply_ok);
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let parent = parent.0;
        let (core, name) = (self.core.clone(), name.to_owned());
        let work = async move {
            let (attr, fh) = core.create(parent, &name, mode, flags).await?;
            Ok((core.new_entry(attr), fh))
        };
        self.spawn("create", reply, work, |reply, (entry, fh)| {
            let attr = file_attr(&entry.attr);
            reply.created(
                &entry.ttl,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            )
        });
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let grown = signed(offset).and_then(|offset| {
            let length = signed(length)?;
            self.core.fallocate(fh.0, offset, length, mode)
        });
        respond("fallocate", reply, grown, reply_ok);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        fail(
            "copy_file_range",
            reply,
            &self.core.refusal(Unsupported::CopyFileRange),
        );
    }
}
