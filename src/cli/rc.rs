//! The `rc` and `status` commands: clients of a running mount's control API.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::control::client::{run_rc, run_status, RcClientArgs};
use crate::control::ControlPaths;

#[derive(Debug, Clone, clap::Args)]
pub struct RcArgs {
    /// The operation, e.g. vfs/refresh, vfs/forget, vfs/stats, vfs/queue,
    /// vfs/queue-retry, core/version, mount/unmount.
    pub operation: String,
    /// Parameters as key=value (values that parse as JSON are taken as such:
    /// recursive=true, id=3).
    pub params: Vec<String>,
    #[command(flatten)]
    pub client: RcClientArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The mount to report on (default: the only mount serving a control API).
    pub mountpoint: Option<PathBuf>,
    #[command(flatten)]
    pub client: RcClientArgs,
}

fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn run_rc_command(args: RcArgs) -> anyhow::Result<()> {
    let paths = ControlPaths::from_env();
    let mut out = std::io::stdout().lock();
    client_runtime()?.block_on(run_rc(
        &args.client,
        &paths,
        &args.operation,
        &args.params,
        &mut out,
    ))?;
    Ok(())
}

pub fn run_status_command(args: StatusArgs) -> anyhow::Result<()> {
    let paths = ControlPaths::from_env();
    let mut out = std::io::stdout().lock();
    client_runtime()?.block_on(run_status(
        &args.client,
        &paths,
        args.mountpoint.as_deref(),
        &mut out,
    ))?;
    Ok(())
}
