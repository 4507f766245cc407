//! What the control API asks of a mount. The mount implements this trait on
//! its core; the server only translates HTTP into these calls.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{MountInfo, QueueItem, StatsSnapshot, VersionInfo};

/// Why an operation failed; each kind maps to one HTTP status in the server.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ControlError {
    /// The parameters are well-formed but name something impossible (400).
    #[error("{0}")]
    InvalidParams(String),
    /// The file, folder or queue item does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state, e.g. retrying an
    /// upload that is already running (409).
    #[error("{0}")]
    Conflict(String),
    /// The mount cannot answer now, e.g. it is shutting down (503).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else, e.g. the remote failed during a refresh (500).
    #[error("{0}")]
    Internal(String),
}

/// What `vfs/refresh` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshReport {
    /// Folders listed again from the remote.
    pub dirs_listed: u64,
    /// Entries seen in those listings.
    pub entries_seen: u64,
}

/// What `vfs/forget` dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetReport {
    /// Cached entries (listings, attributes, file data) dropped.
    pub entries_dropped: u64,
    /// Bytes of cached file data dropped.
    pub bytes_dropped: u64,
}

/// What `mount/unmount` did before answering.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmountReport {
    /// Whether the unmount was started (the mount stops right after answering).
    pub unmounting: bool,
    /// Uploads still pending when the wait ended; non-zero means the
    /// timeout ran out and they stay in the persistent queue.
    pub uploads_pending: u64,
}

/// Operations a mount offers to the control API.
///
/// Calls come from the server's tasks, never from the FUSE loop; an
/// implementation may await the network but should stay within the pacer's
/// budget (a refresh lists through the same pacer as the kernel's requests).
/// Paths are relative to the mount's root, `/`-separated, already checked to
/// hold no `..` or empty components; `""` is the root.
#[async_trait]
pub trait ControlSurface: Send + Sync + 'static {
    /// The remote, service, mountpoint and account space (served from what
    /// the mount already knows; must not wait on the network for long).
    async fn mount_info(&self) -> MountInfo;

    /// Lists `dir` again from the remote (and every folder below it when
    /// `recursive`), replacing cached listings before their TTL runs out.
    async fn refresh(&self, dir: &str, recursive: bool) -> Result<RefreshReport, ControlError>;

    /// Drops a file or folder (and everything below it) from the caches;
    /// the next access fetches it again.
    async fn forget(&self, path: &str) -> Result<ForgetReport, ControlError>;

    /// Cache use and hit rates, bytes and requests by kind, pacer waits and
    /// budget, transfer rates, recent errors.
    async fn stats(&self) -> StatsSnapshot;

    /// Pending uploads (and recently finished ones, so a watcher sees them
    /// complete), oldest first.
    async fn queue(&self) -> Vec<QueueItem>;

    /// Retries queue item `id` now instead of at its next try.
    async fn queue_retry(&self, id: u64) -> Result<QueueItem, ControlError>;

    /// Waits up to `timeout` for pending uploads, then starts the unmount.
    async fn unmount(&self, timeout: Duration) -> Result<UnmountReport, ControlError>;

    /// The program's version; a surface has no reason to override it.
    fn version(&self) -> VersionInfo {
        VersionInfo::current()
    }
}
