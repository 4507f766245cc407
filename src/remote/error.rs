//! The remote layer's error type.

use std::time::Duration;

/// Every failure a backend can report, independent of the service.
///
/// Backends translate their wire errors (1fichier `#NNN` codes, fii.one
/// envelopes, file.io `code` strings, HTTP statuses) into these variants;
/// callers only ever match on these.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    #[error("file too large: {0}")]
    TooLarge(String),
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// Longer than the service stores (after its name encoding).
    #[error("name too long: {0}")]
    NameTooLong(String),
    #[error("folder not empty: {0}")]
    NotEmpty(String),
    #[error("the service cannot store empty files: {0}")]
    EmptyFile(String),
    #[error("not supported by this service: {0}")]
    Unsupported(String),
    #[error("rate limited by the service ({message}); retry after {wait:?}")]
    RateLimited {
        wait: Option<Duration>,
        message: String,
    },
    #[error("temporary failure: {0}")]
    Transient(String),
    /// A download connection refused because the account already has as
    /// many open as the service allows; one ending frees room.
    #[error("too many simultaneous downloads: {0}")]
    TooManyDownloads(String),
    #[error("{0}")]
    Fatal(String),
}

pub type RemoteResult<T> = Result<T, RemoteError>;

impl RemoteError {
    /// Whether trying the same request again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RemoteError::RateLimited { .. }
                | RemoteError::Transient(_)
                | RemoteError::TooManyDownloads(_)
        )
    }
}
