//! `core/version`: which program answers.

use serde::{Deserialize, Serialize};

/// The program's name and version, and the platform it runs on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub name: String,
    pub version: String,
    pub os: String,
    pub arch: String,
}

impl VersionInfo {
    /// This build's version.
    pub fn current() -> Self {
        VersionInfo {
            name: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
        }
    }
}
