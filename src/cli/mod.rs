//! Command-line interface: argument definitions and dispatch.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub mod commands;
pub mod demo;
pub mod mount;
pub mod rc;

use crate::emulator;

#[derive(Debug, Parser)]
#[command(
    name = "filehostfs",
    version,
    about = "Mount file-hosting accounts (1fichier, fii.one, file.io) as a local folder",
    long_about = None
)]
pub struct Cli {
    /// Config file naming the remotes (default: $XDG_CONFIG_HOME/filehostfs/config.toml).
    #[arg(long, global = true, env = "FILEHOSTFS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the local emulator of the services' HTTP APIs.
    Serve(Box<emulator::ServeArgs>),
    /// Mount REMOTE:[path] on MOUNTPOINT (foreground until unmounted).
    Mount(mount::MountArgs),
    /// Start an emulator with sample data and mount it: zero setup.
    Demo(demo::DemoArgs),
    /// List a remote folder.
    Ls(commands::LsArgs),
    /// Upload a local file or tree to a remote.
    Put(commands::PutArgs),
    /// Download a remote file or folder.
    Get(commands::GetArgs),
    /// Create a remote folder (and its parents).
    Mkdir(commands::MkdirArgs),
    /// Remove a remote file, or a folder with -r.
    Rm(commands::RmArgs),
    /// Move or rename a remote file or folder.
    Mv(commands::MvArgs),
    /// Print a file's direct download link.
    Link(commands::LinkArgs),
    /// Show the account's space used and total.
    About(commands::AboutArgs),
    /// Call an operation of a mount's control API (mounted with --rc).
    Rc(rc::RcArgs),
    /// Summarize what a mount is doing (mounted with --rc).
    Status(rc::StatusArgs),
}

/// Logs go to stderr, filtered by `RUST_LOG` (default: info for this crate).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("filehostfs=info,warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config;
    match cli.command {
        Command::Serve(args) => emulator::run_serve(*args),
        Command::Mount(args) => mount::run_mount(config, args),
        Command::Demo(args) => demo::run_demo(args),
        Command::Ls(args) => commands::run_ls(config, args),
        Command::Put(args) => commands::run_put(config, args),
        Command::Get(args) => commands::run_get(config, args),
        Command::Mkdir(args) => commands::run_mkdir(config, args),
        Command::Rm(args) => commands::run_rm(config, args),
        Command::Mv(args) => commands::run_mv(config, args),
        Command::Link(args) => commands::run_link(config, args),
        Command::About(args) => commands::run_about(config, args),
        Command::Rc(args) => rc::run_rc_command(args),
        Command::Status(args) => rc::run_status_command(args),
    }
}
