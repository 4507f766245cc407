//! Errors of the block cache.

use crate::remote::RemoteError;

/// Errors of the cache layer. Disk-tier problems never surface: a block that
/// cannot be read back from disk is fetched again from the service.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("the fetch of block {index} of {file} was abandoned")]
    Abandoned { file: String, index: u64 },
}

pub type CacheResult<T> = Result<T, CacheError>;
