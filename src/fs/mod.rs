//! The filesystem: the inode table, the read path and the write path over
//! the caches and the write-back queue, and the FUSE adapter that serves
//! them to the kernel.

pub mod adapter;
pub mod inode;
pub mod read;
pub mod write;

use crate::cache::block::CacheError;
use crate::remote::RemoteError;

pub use adapter::{FilehostFs, FsConfig, KERNEL_READ_AHEAD};
use inode::InodeError;
pub use read::ReadAheadConfig;
pub(crate) use write::finish_uploads;
pub use write::WriteConfig;

/// Errors of the filesystem layer, each with the errno the kernel gets.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Inode(#[from] InodeError),
    #[error("no such inode {0}")]
    NoSuchInode(u64),
    #[error("not a directory")]
    NotADirectory,
}

impl FsError {
    pub fn errno(&self) -> libc::c_int {
        match self {
            FsError::Remote(error) => error.errno(),
            FsError::Cache(error) => error.errno(),
            FsError::Inode(error) => error.errno(),
            FsError::NoSuchInode(_) => libc::ENOENT,
            FsError::NotADirectory => libc::ENOTDIR,
        }
    }
}
