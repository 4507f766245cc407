//! Command-line interface: argument definitions and dispatch.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;

use clap::{Parser, Subcommand};

pub mod commands;
pub mod demo;
pub mod fstab;
pub mod mount;
pub mod rc;
pub mod stop_signals;
pub mod systemd;

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

/// The command line as `filehostfs` sees it (program name excluded): the
/// process's own, or the one the mount(8) helper translated its arguments
/// into. `--daemon` and `--print-systemd-unit` repeat it.
static COMMAND_LINE: OnceLock<Vec<OsString>> = OnceLock::new();

/// What [`parse`] made of the process's arguments.
pub enum Invocation {
    Run(Box<Cli>),
    /// The mount helper's `-f` (fake): nothing to do.
    Nothing,
}

/// Parses the process's arguments, as `filehostfs` or as the mount helper
/// (`mount.fuse.filehostfs`, or `filehostfs REMOTE:path DIR -o ...` from
/// `mount.fuse3`; see [`fstab`]); clap's usual exit on `--help` or a bad
/// argument.
pub fn parse() -> anyhow::Result<Invocation> {
    let mut args = std::env::args_os();
    let program = args.next().unwrap_or_else(|| "filehostfs".into());
    let mut line: Vec<OsString> = args.collect();
    if fstab::invoked_as_helper(&program) || fstab::run_by_mount_fuse(&line) {
        line = match fstab::translate(&line)? {
            fstab::HelperRequest::Mount(line) => line,
            fstab::HelperRequest::Fake => return Ok(Invocation::Nothing),
        };
    }
    let cli = Cli::parse_from(std::iter::once(OsString::from("filehostfs")).chain(line.clone()));
    let _ = COMMAND_LINE.set(line);
    Ok(Invocation::Run(Box::new(cli)))
}

/// The command line this process runs (see [`COMMAND_LINE`]).
pub fn command_line() -> Vec<OsString> {
    COMMAND_LINE
        .get()
        .cloned()
        .unwrap_or_else(|| std::env::args_os().skip(1).collect())
}

/// Logs go to stderr, filtered by `RUST_LOG` (default: info for this crate),
/// coloured only when stderr is a terminal (a log file or journald gets
/// plain text). A failed write (stderr a closed pipe: `... | tee log` and
/// `tee` died first) drops the line silently: the subscriber would
/// otherwise report it with `eprintln!`, which panics on that same pipe.
pub fn init_logging() {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("filehostfs=info,warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false)
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
