//! What is mounted where.

use serde::{Deserialize, Serialize};

/// The mount and its remote, as the status page's header shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountInfo {
    /// The remote's name in the config file.
    pub remote: String,
    /// The service behind it: `1fichier`, `fii.one` or `file.io`.
    pub service: String,
    /// The folder of the remote that is mounted (`""` for its root).
    pub remote_path: String,
    /// Where it is mounted.
    pub mountpoint: String,
    pub read_only: bool,
    /// The account's space, when the service reports it.
    pub space: Option<SpaceUsage>,
}

/// Account space in bytes; services that report no quota leave `total` out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceUsage {
    pub used_bytes: u64,
    pub total_bytes: Option<u64>,
}

impl SpaceUsage {
    /// Bytes left, when the total is known.
    pub fn free_bytes(&self) -> Option<u64> {
        self.total_bytes
            .map(|total| total.saturating_sub(self.used_bytes))
    }
}
