//! The control API: a small HTTP server beside a mount that shows what the
//! mount is doing (stats, upload queue, recent errors, a status page,
//! Prometheus metrics) and lets a person steer it (refresh a folder, forget
//! cached data, retry an upload, unmount).
//!
//! The server knows nothing of the filesystem's internals: it calls a
//! [`ControlSurface`] that the mount implements, and layers report their
//! activity through the lock-free [`Counters`] and [`RecentErrors`]. The
//! wire shape follows rclone's rc: `POST /<operation>` with a JSON object of
//! parameters, answered with JSON; errors are `{"error": ..., "status": N}`.

mod api_error;
pub mod client;
mod counters;
mod metrics;
mod mount_info;
mod operations;
mod options;
mod page;
mod paths;
mod queue;
mod recent_errors;
mod server;
mod stats;
mod surface;
mod token;
mod version;

pub use api_error::ApiError;
pub use counters::{CounterSnapshot, Counters, RequestKind, TransferRates};
pub use metrics::render_metrics;
pub use mount_info::{MountInfo, SpaceUsage};
pub use operations::{
    ForgetParams, QueueRetryParams, RefreshParams, StatsResponse, UnmountParams,
    MAX_UNMOUNT_TIMEOUT_SECS,
};
pub use options::{RcListen, RcOptions, RcOptionsError};
pub use paths::{ControlPaths, MountRecord};
pub use queue::{QueueItem, QueueState};
pub use recent_errors::{RecentError, RecentErrors};
pub use server::{RcEndpoint, RcServer, RcServerError};
pub use stats::{CacheUsage, PacerStatus, StatsSnapshot};
pub use surface::{ControlError, ControlSurface, ForgetReport, RefreshReport, UnmountReport};
pub use token::{load_or_create_token, tokens_match, TokenError};
pub use version::VersionInfo;
