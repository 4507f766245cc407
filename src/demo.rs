//! `filehostfs demo MOUNTPOINT`: embedded emulator + seeded data + mount.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where to mount the demo account.
    pub mountpoint: PathBuf,
}

pub fn run_demo(_args: DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("demo is not built yet")
}
