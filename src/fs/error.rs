//! The filesystem's error type and the one place where a failure of any
//! layer becomes an errno. The layers below (`remote`, `cache`,
//! `writeback`) keep their own typed errors and know nothing of errnos:
//! the CLI uses them too.

use crate::cache::block::CacheError;
use crate::metadata::MetadataError;
use crate::remote::RemoteError;
use crate::writeback::WriteBackError;

use super::inode::InodeError;

/// A failed filesystem operation: what failed (its source) and so the
/// errno the kernel gets and how loudly it is logged.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Inode(#[from] InodeError),
    #[error(transparent)]
    WriteBack(#[from] WriteBackError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("no such inode {0}")]
    NoSuchInode(u64),
    #[error("not a directory")]
    NotADirectory,
    #[error("no such file or folder")]
    NotFound,
    #[error("is a folder")]
    IsADirectory,
    #[error("already exists")]
    AlreadyExists,
    #[error("folder not empty")]
    NotEmpty,
    /// What the service cannot store or do (devices, links, folders on a
    /// service without them, a copy that would spend limited downloads).
    #[error("not permitted on this service")]
    NotPermitted,
    /// A move the service cannot make: `mv` then copies and deletes.
    #[error("cannot move across folders on this service")]
    CrossDevice,
    #[error("larger than the service allows")]
    FileTooLarge,
    #[error("no such open file handle")]
    BadHandle,
    #[error("invalid argument")]
    InvalidArgument,
    /// Reading would spend one of a file's limited downloads
    /// (`--consume-downloads` not given).
    #[error("reading would spend one of the file's limited downloads")]
    DownloadsLimited,
    #[error("no such extended attribute")]
    NoAttribute,
    #[error("operation not supported")]
    OperationNotSupported,
    /// `--read-only`.
    #[error("read-only mount")]
    ReadOnly,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("a background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("{0:?} is not supported")]
    Unsupported(Unsupported),
}

impl Error {
    /// How loudly a failure is logged: the service or the disk failing
    /// (EIO, ENOSPC, EFBIG, ...) is worth a warning; an answer about the
    /// caller's own request (no such name, no such attribute, a refused
    /// change) is not: `ls -l` alone asks for attributes that do not exist
    /// on every file.
    pub fn level(&self) -> tracing::Level {
        match self.errno() {
            libc::ENOENT
            | libc::ENOTDIR
            | libc::EEXIST
            | libc::ENOTEMPTY
            | libc::EISDIR
            | libc::ENODATA
            | libc::EOPNOTSUPP
            | libc::EROFS
            | libc::EPERM
            | libc::EXDEV
            | libc::EINVAL
            | libc::ENAMETOOLONG
            | libc::EBADF
            | libc::ENOSYS
            | libc::EACCES => tracing::Level::DEBUG,
            _ => tracing::Level::WARN,
        }
    }
}

/// The errno of a failure. Implemented here, for the error types of every
/// layer, so the mapping lives in one file.
pub trait Errno {
    fn errno(&self) -> libc::c_int;
}

impl Errno for Error {
    fn errno(&self) -> libc::c_int {
        match self {
            Error::Remote(error) => error.errno(),
            Error::Cache(error) => error.errno(),
            Error::Inode(error) => error.errno(),
            Error::WriteBack(error) => error.errno(),
            Error::Metadata(error) => error.errno(),
            Error::NoSuchInode(_) => libc::ENOENT,
            Error::NotADirectory => libc::ENOTDIR,
            Error::NotFound => libc::ENOENT,
            Error::IsADirectory => libc::EISDIR,
            Error::AlreadyExists => libc::EEXIST,
            Error::NotEmpty => libc::ENOTEMPTY,
            Error::NotPermitted => libc::EPERM,
            Error::CrossDevice => libc::EXDEV,
            Error::FileTooLarge => libc::EFBIG,
            Error::BadHandle => libc::EBADF,
            Error::InvalidArgument => libc::EINVAL,
            Error::DownloadsLimited => libc::EACCES,
            Error::NoAttribute => libc::ENODATA,
            Error::OperationNotSupported => libc::EOPNOTSUPP,
            Error::ReadOnly => libc::EROFS,
            Error::Io(error) => error.errno(),
            Error::Task(_) => libc::EIO,
            Error::Unsupported(change) => change.errno(),
        }
    }
}

impl Errno for RemoteError {
    fn errno(&self) -> libc::c_int {
        match self {
            RemoteError::NotFound(_) => libc::ENOENT,
            RemoteError::AlreadyExists(_) => libc::EEXIST,
            RemoteError::PermissionDenied(_) => libc::EACCES,
            RemoteError::QuotaExceeded(_) => libc::ENOSPC,
            RemoteError::TooLarge(_) => libc::EFBIG,
            RemoteError::InvalidName(_) => libc::EINVAL,
            RemoteError::NameTooLong(_) => libc::ENAMETOOLONG,
            RemoteError::NotEmpty(_) => libc::ENOTEMPTY,
            RemoteError::Unsupported(_) => libc::ENOTSUP,
            RemoteError::EmptyFile(_)
            | RemoteError::RateLimited { .. }
            | RemoteError::Transient(_)
            | RemoteError::TooManyDownloads(_)
            | RemoteError::Fatal(_) => libc::EIO,
        }
    }
}

impl Errno for CacheError {
    fn errno(&self) -> libc::c_int {
        match self {
            CacheError::Remote(error) => error.errno(),
            CacheError::Abandoned { .. } => libc::EIO,
        }
    }
}

impl Errno for InodeError {
    fn errno(&self) -> libc::c_int {
        match self {
            InodeError::NoSuchInode(_) => libc::ENOENT,
            InodeError::NotAFolder(_) => libc::ENOTDIR,
            InodeError::Exists(_) => libc::EEXIST,
        }
    }
}

/// A failed upload is EIO (fsync's contract) except for the refusals the
/// user can act on.
impl Errno for WriteBackError {
    fn errno(&self) -> libc::c_int {
        match self {
            WriteBackError::Remote(
                error @ (RemoteError::QuotaExceeded(_)
                | RemoteError::TooLarge(_)
                | RemoteError::InvalidName(_)
                | RemoteError::NameTooLong(_)),
            ) => error.errno(),
            WriteBackError::Io(error) => error.errno(),
            WriteBackError::UnknownEntry(_) => libc::ENOENT,
            _ => libc::EIO,
        }
    }
}

/// What `setxattr(2)` and `chmod(2)` answer for the store's refusals; a
/// database that cannot be written is EIO.
impl Errno for MetadataError {
    fn errno(&self) -> libc::c_int {
        match self {
            MetadataError::XattrNotSupported(_) => libc::ENOTSUP,
            MetadataError::XattrNameTooLong(_) => libc::ERANGE,
            MetadataError::XattrTooLarge { .. } => libc::E2BIG,
            MetadataError::InvalidMode(_) => libc::EINVAL,
            MetadataError::Database(_) | MetadataError::SchemaTooNew { .. } => libc::EIO,
        }
    }
}

impl Errno for std::io::Error {
    fn errno(&self) -> libc::c_int {
        self.raw_os_error().unwrap_or(libc::EIO)
    }
}

/// Changes the write path never makes, each refused with the errno that
/// tells programs what to do instead.
#[derive(Clone, Copy, Debug)]
pub enum Unsupported {
    HardLink,
    Symlink,
    SetXattr,
    RemoveXattr,
    CopyFileRange,
}

impl Errno for Unsupported {
    fn errno(&self) -> libc::c_int {
        match self {
            // A file has exactly one name on the services.
            Unsupported::HardLink => libc::EPERM,
            // File hosts store files and folders only.
            Unsupported::Symlink => libc::EPERM,
            // The services keep no extended attributes; ours are read-only facts.
            Unsupported::SetXattr | Unsupported::RemoveXattr => libc::ENOTSUP,
            // The kernel then copies through read and write, which we serve.
            Unsupported::CopyFileRange => libc::ENOSYS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_about_the_request_are_quiet_failures_of_the_service_are_not() {
        for quiet in [
            Error::NotFound,
            Error::NoAttribute,
            Error::OperationNotSupported,
            Error::ReadOnly,
            Error::Unsupported(Unsupported::Symlink),
            Error::CrossDevice,
        ] {
            assert_eq!(quiet.level(), tracing::Level::DEBUG, "{quiet:?}");
        }
        let failed = Error::Remote(RemoteError::Transient("timed out".into()));
        assert_eq!(failed.level(), tracing::Level::WARN);
        assert_eq!(
            Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC)).level(),
            tracing::Level::WARN
        );
    }
}
