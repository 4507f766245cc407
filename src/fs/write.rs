//! Every callback that would change the remote, in one place.
//!
//! The mount is read-only for now: each of these answers `EROFS` (or the
//! errno a read-only filesystem gives for the call). The write-back queue in
//! `super::writeback` takes these over; the read path never calls them.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;

use fuser::{
    ReplyAttr, ReplyCreate, ReplyData, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request,
    TimeOrNow,
};

use super::adapter::FsState;

/// The parts of a `setattr` call.
#[derive(Clone, Copy, Debug)]
pub struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeOrNow>,
    pub mtime: Option<TimeOrNow>,
    pub fh: Option<u64>,
}

/// The parts of a `copy_file_range` call.
#[derive(Clone, Copy, Debug)]
pub struct CopyRange {
    pub ino_in: u64,
    pub fh_in: u64,
    pub offset_in: i64,
    pub ino_out: u64,
    pub fh_out: u64,
    pub offset_out: i64,
    pub len: u64,
    pub flags: u32,
}

pub(crate) fn setattr(
    _state: &Arc<FsState>,
    _req: &Request<'_>,
    _ino: u64,
    _change: AttrChange,
    reply: ReplyAttr,
) {
    reply.error(libc::EROFS);
}

pub(crate) fn mknod(
    _state: &Arc<FsState>,
    _req: &Request<'_>,
    _parent: u64,
    _name: &OsStr,
    _mode: u32,
    _umask: u32,
    reply: ReplyEntry,
) {
    reply.error(libc::EROFS);
}

pub(crate) fn mkdir(
    _state: &Arc<FsState>,
    _req: &Request<'_>,
    _parent: u64,
    _name: &OsStr,
    _mode: u32,
    _umask: u32,
    reply: ReplyEntry,
) {
    reply.error(libc::EROFS);
}

pub(crate) fn unlink(
    _state: &Arc<FsState>,
    _req: &Request<'_>,
    _parent: u64,
    _name: &OsStr,
    reply: ReplyEmpty,
) {
    reply.error(libc::EROFS);
}

pub(crate) fn rmdir(
    _state: &Arc<FsState>,
    _req: &Request<'_>,
    _parent: u64,
    _name: &OsStr,
    reply: ReplyEmpty,
) {
    reply.error(libc::EROFS);
}

pub(crate) fn symlink(
    _state: &Arc<FsState>,
    _req: &Request<'_>,
    _parent: u64,
    _link_name: &OsStr,
    _target: &Path,
    reply: ReplyEntry,
) {
    reply.error(libc::EROFS);
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn rename(
    _state: &Arc<FsState>,
    _req: &Request<'_>,
    _parent: u64,
    _name: &OsStr,
    _new_parent: u64,
    _new_name: &OsStr,
    _flags: u32,
    reply: ReplyEmpty,
) {
    reply.error(libc::EROFS);
}

pub(crate) fn link(
    _state: &Arc<FsState>,
    _req: &Request<'_>,
    _ino: u64,
    _new_parent: u64,
    _new_name: &OsStr,
    reply: ReplyEntry,
) {
    reply.error(libc::EROFS);
}

/// `open` with write access or `O_TRUNC`.
pub(crate) fn open_for_writing(
    _state: &Arc<FsState>,
    _req: &Request<'_>,
    _ino: u64,
    _flags: i32,
    reply: ReplyOpen,
) {
    reply.error(libc::EROFS);
}

/// `open` of a file that exists only locally (none can exist yet).
pub(crate) fn open_local(
    _state: &Arc<FsState>,
    _req: &Request<'_>,
    _ino: u64,
    _flags: i32,
    reply: ReplyOpen,
) {
    reply.error(libc::ENOENT);
}

/// `read` on a handle the read path did not open.
pub(crate) fn read_unknown_handle(
    _state: &Arc<FsState>,
    _ino: u64,
    _fh: u64,
    _offset: i64,
    _size: u32,
    reply: ReplyData,
) {
    reply.error(libc::EBADF);
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn write(
    _state: &Arc<FsState>,
    _req: &Request<'_>,
    _ino: u64,
    _fh: u64,
    _offset: i64,
    _data: &[u8],
    _write_flags: u32,
    _flags: i32,
    reply: ReplyWrite,
) {
    reply.error(libc::EROFS);
}

/// `flush` on a handle the read path did not open.
pub(crate) fn flush(
    _state: &Arc<FsState>,
    _req: &Request<'_>,
    _ino: u64,
    _fh: u64,
    _lock_owner: u64,
    reply: ReplyEmpty,
) {
    reply.error(libc::EBADF);
}

/// `release` of a handle the read path did not open.
#[allow(clippy::too_many_arguments)]
pub(crate) fn release(
    _state: &Arc<FsState>,
    _req: &Request<'_>,
    _ino: u64,
    _fh: u64,
    _flags: i32,
    _lock_owner: Option<u64>,
    _flush: bool,
    reply: ReplyEmpty,
) {
    reply.ok();
}

/// `fsync` on a handle the read path did not open.
pub(crate) fn fsync(
    _state: &Arc<FsState>,
    _req: &Request<'_>,
    _ino: u64,
    _fh: u64,
    _datasync: bool,
    reply: ReplyEmpty,
) {
    reply.error(libc::EBADF);
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn setxattr(
    _state: &Arc<FsState>,
    _req: &Request<'_>,
    _ino: u64,
    _name: &OsStr,
    _value: &[u8],
    _flags: i32,
    _position: u32,
    reply: ReplyEmpty,
) {
    reply.error(libc::EROFS);
}

pub(crate) fn removexattr(
    _state: &Arc<FsState>,
    _req: &Request<'_>,
    _ino: u64,
    _name: &OsStr,
    reply: ReplyEmpty,
) {
    reply.error(libc::EROFS);
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn create(
    _state: &Arc<FsState>,
    _req: &Request<'_>,
    _parent: u64,
    _name: &OsStr,
    _mode: u32,
    _umask: u32,
    _flags: i32,
    reply: ReplyCreate,
) {
    reply.error(libc::EROFS);
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn fallocate(
    _state: &Arc<FsState>,
    _req: &Request<'_>,
    _ino: u64,
    _fh: u64,
    _offset: i64,
    _length: i64,
    _mode: i32,
    reply: ReplyEmpty,
) {
    reply.error(libc::EROFS);
}

pub(crate) fn copy_file_range(
    _state: &Arc<FsState>,
    _req: &Request<'_>,
    _range: CopyRange,
    reply: ReplyWrite,
) {
    reply.error(libc::EROFS);
}
