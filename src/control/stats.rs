//! `vfs/stats`: everything a person watching the mount wants in one answer.

use serde::{Deserialize, Serialize};

use super::{CounterSnapshot, Counters, RecentError, RecentErrors, TransferRates};

/// The mount's activity and resources at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    pub counters: CounterSnapshot,
    pub rates: TransferRates,
    pub cache: CacheUsage,
    pub pacer: PacerStatus,
    /// Oldest first.
    pub recent_errors: Vec<RecentError>,
}

impl StatsSnapshot {
    /// Builds the snapshot from the shared counters and errors plus what
    /// only the cache and the pacer know.
    pub fn collect(
        counters: &Counters,
        errors: &RecentErrors,
        cache: CacheUsage,
        pacer: PacerStatus,
    ) -> Self {
        StatsSnapshot {
            counters: counters.snapshot(),
            rates: counters.rates(),
            cache,
            pacer,
            recent_errors: errors.list(),
        }
    }
}

/// The local cache's size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheUsage {
    /// Bytes of file data on disk.
    pub used_bytes: u64,
    /// The configured bound, when there is one.
    pub limit_bytes: Option<u64>,
    /// Files with cached data.
    pub files: u64,
    /// Folder listings held.
    pub listings: u64,
}

/// The request pacer's budget: services limit requests per time window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacerStatus {
    /// Requests sent in the last hour.
    pub requests_last_hour: u64,
    /// The service's hourly budget, when it has one.
    pub budget_per_hour: Option<u64>,
    /// Requests left in the current window before the pacer waits.
    pub budget_left: Option<u64>,
    /// Requests waiting for the pacer right now.
    pub waiting: u64,
}
