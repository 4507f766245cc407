//! The FUSE adapter: inode table, read path, write path.

pub mod writeback;

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct MountArgs {
    /// REMOTE:[path] to mount.
    pub remote: String,
    /// Where to mount it.
    pub mountpoint: PathBuf,
}

pub fn run_mount(_config: Option<PathBuf>, _args: MountArgs) -> anyhow::Result<()> {
    anyhow::bail!("mount is not built yet")
}
