//! One entry of the upload queue as the control API shows it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where an upload stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueState {
    /// Written and closed, waiting for its turn (or its write-back delay).
    Queued,
    /// Being sent now; `progress_bytes` grows.
    Uploading,
    /// Failed; tried again at `next_try`.
    Retrying,
    /// Failed for good (e.g. the service refused the file); kept locally.
    Failed,
    /// Uploaded; shown for a while so a watcher sees it finish.
    Done,
}

impl QueueState {
    /// The name used in JSON, metrics labels and the status page.
    pub fn name(self) -> &'static str {
        match self {
            QueueState::Queued => "queued",
            QueueState::Uploading => "uploading",
            QueueState::Retrying => "retrying",
            QueueState::Failed => "failed",
            QueueState::Done => "done",
        }
    }

    pub const ALL: [QueueState; 5] = [
        QueueState::Queued,
        QueueState::Uploading,
        QueueState::Retrying,
        QueueState::Failed,
        QueueState::Done,
    ];

    /// Whether the upload still has to happen.
    pub fn is_pending(self) -> bool {
        !matches!(self, QueueState::Done | QueueState::Failed)
    }
}

/// A file waiting to be uploaded (or just uploaded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueItem {
    /// Stable while the item is queued; `vfs/queue-retry` takes it.
    pub id: u64,
    /// The file's name (last path component).
    pub name: String,
    /// Its path in the mount.
    pub path: String,
    pub size: u64,
    pub state: QueueState,
    /// Attempts so far, including a running one.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When the next attempt is due (retrying or delayed items).
    pub next_try: Option<DateTime<Utc>>,
    /// Bytes sent in the current attempt.
    pub progress_bytes: u64,
}
