//! The `mount` command: its arguments, the daemon fork, signal handling,
//! the allocator and kernel read-ahead tuning around a FUSE session.

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tracing::{debug, info, warn};

use crate::cache::block::BlockCacheConfig;
use crate::cache::listing_store::ListingStore;
use crate::cache::meta::MetaCache;
use crate::config::{Config, RemotePath};
use crate::control::{ControlPaths, Counters, RcOptions, RcServer, RecentErrors};
use crate::fs::{
    FilehostFs, FsConfig, MountControl, MountIdentity, ReadAheadConfig, WriteConfig,
    KERNEL_READ_AHEAD,
};
use crate::remote::counting::CountingRemote;
use crate::remote::resolve::Resolved;
use crate::remote::{FolderId, Remote};
use crate::state_dir::StateDir;

use super::{stop_signals, systemd};

const MIB: u64 = 1 << 20;

#[derive(Debug, Clone, clap::Args)]
pub struct MountArgs {
    /// REMOTE:[path] to mount (a remote named in the config file, and
    /// optionally a folder inside it).
    pub remote: String,
    /// Where to mount it (an existing empty folder).
    pub mountpoint: PathBuf,
    #[command(flatten)]
    pub options: MountOptions,
    /// Detach into the background once the mount is ready.
    #[arg(long)]
    pub daemon: bool,
    /// Where a background (--daemon) mount writes its log.
    #[arg(long, value_name = "FILE", requires = "daemon")]
    pub log_file: Option<PathBuf>,
    /// Start with empty listing caches instead of answering from the
    /// listings the last run saved in the remote's state dir (which are
    /// then forgotten, and none are saved).
    #[arg(long)]
    pub no_saved_listings: bool,
    /// Print a systemd unit (Type=notify) running this same mount in the
    /// foreground, and exit without mounting.
    #[arg(long, conflicts_with = "daemon")]
    pub print_systemd_unit: bool,
    /// Print "ready" on standard output once the mount answers, or
    /// "failed: " and the reason it could not start (used by --daemon).
    #[arg(long, hide = true)]
    pub notify_ready: bool,
}

/// Read-ahead window when none is given: eight 16 MiB requests in flight,
/// enough for eight connections paced at 20 MiB/s each to spend under 5 %
/// of their time on a request's round trip (40 ms), while the memory cache
/// still holds as much again behind the reader.
const DEFAULT_READ_AHEAD: u64 = 128 * MIB;

/// Cache, read-ahead and permission settings of a mount (shared with `demo`).
#[derive(Debug, Clone, clap::Args)]
pub struct MountOptions {
    /// Size of the blocks files are fetched and cached in (e.g. 1M, 512K).
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub block_size: u64,
    /// Memory the block cache may hold.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub cache_max_memory: u64,
    /// Keep fetched blocks on disk here (and pending uploads); they survive
    /// remounts. Default for the blocks: the user's cache directory, one
    /// folder per account.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Disk the on-disk cache may use (least recently used blocks go first,
    /// files' heads and tails last).
    #[arg(long, default_value = "10G", value_parser = parse_size)]
    pub cache_max_size: u64,
    /// Keep fetched blocks in memory only.
    #[arg(long)]
    pub no_disk_cache: bool,
    /// How long folder listings and attributes are trusted (e.g. 5m, 30s, 0).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub dir_cache_time: Duration,
    /// Largest read-ahead window of a sequentially read file (0 disables
    /// it; default 128M, at most half of --cache-max-memory).
    #[arg(long, value_parser = parse_size)]
    pub read_ahead_max: Option<u64>,
    /// Largest read-ahead request.
    #[arg(long, default_value = "16M", value_parser = parse_size)]
    pub read_ahead_request: u64,
    /// Most read-ahead connections open at once across the mount; the set
    /// grows up to this while more connections bring more throughput (a
    /// remote's `max_streams` lowers it).
    #[arg(long, default_value_t = 8, alias = "read-ahead-concurrency", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub max_streams: usize,
    /// Most read-ahead connections one open file uses at once.
    #[arg(long, default_value_t = 8, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub max_streams_per_file: usize,
    /// Owner of every file (default: the user mounting).
    #[arg(long)]
    pub uid: Option<u32>,
    /// Group of every file (default: the group of the user mounting).
    #[arg(long)]
    pub gid: Option<u32>,
    /// Permission bits removed from 0666 (files) and 0777 (folders), in octal.
    #[arg(long, default_value = "022", value_parser = parse_umask)]
    pub umask: u16,
    /// Let other users access the mount (needs user_allow_other in /etc/fuse.conf).
    #[arg(long)]
    pub allow_other: bool,
    /// How long after a file is closed its upload starts, so an editor that
    /// saves twice uploads once (e.g. 5s, 500ms, 0).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub write_back: Duration,
    /// At unmount, how long to wait for pending uploads; those not done by
    /// then stay journaled and are completed by the next mount.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub write_back_wait: Duration,
    /// Refuse every change (EROFS); uploads left by an earlier mount still
    /// complete.
    #[arg(long)]
    pub read_only: bool,
    /// file.io: allow reading files that were not uploaded from this
    /// machine. Each such read spends one of the file's downloads (and may
    /// delete it); without this option opening them fails with EACCES.
    #[arg(long)]
    pub consume_downloads: bool,
    /// Where this remote's durable state lives (mtimes, modes and extended
    /// attributes set through the mount, the saved listings); overrides the remote's
    /// `state_dir` (default: `$XDG_STATE_HOME/filehostfs/<account>`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Share the metadata kept for this account (mtimes, modes, owners,
    /// `user.*` attributes) with other machines mounting it with this
    /// option: one hidden file per folder, written a little after changes
    /// (last writer wins per file). Also the remote's `metadata_sync` key.
    /// Not for file.io.
    #[arg(long)]
    pub metadata_sync: bool,
    /// file.io: lifetime of each file written (1h, 2d, 1w, 1m = a month, 1y,
    /// or a date); overrides the remote's `expires`.
    #[arg(long, value_name = "WHEN", value_parser = parse_expires)]
    pub expires: Option<String>,
    /// file.io: downloads each written file allows; overrides `max_downloads`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_downloads: Option<u32>,
    /// file.io: delete a file once its downloads are used up (true/false);
    /// overrides `auto_delete`.
    #[arg(long, value_name = "BOOL")]
    pub auto_delete: Option<bool>,
    #[command(flatten)]
    pub rc: RcOptions,
}

fn parse_expires(text: &str) -> Result<String, String> {
    crate::remote::fileio::check_expires(text).map(|()| text.trim().to_string())
}

impl MountOptions {
    /// The file.io upload options given on the command line.
    pub fn upload_overrides(&self) -> crate::remote::fileio::UploadOptions {
        crate::remote::fileio::UploadOptions {
            expires: self.expires.clone(),
            max_downloads: self.max_downloads,
            auto_delete: self.auto_delete,
        }
    }

    /// The filesystem settings these options describe, checked for sense.
    pub fn fs_config(&self) -> anyhow::Result<FsConfig> {
        anyhow::ensure!(self.block_size >= 4096, "--block-size must be at least 4K");
        anyhow::ensure!(
            self.block_size <= 64 * MIB,
            "--block-size must be at most 64M"
        );
        anyhow::ensure!(
            self.cache_max_memory >= 2 * self.block_size,
            "--cache-max-memory must hold at least two blocks"
        );
        // Read-ahead lands in the memory cache: it must not evict itself
        // before the reader gets there.
        let half_the_cache = self.cache_max_memory / 2;
        let read_ahead = match self.read_ahead_max {
            None => DEFAULT_READ_AHEAD.min(half_the_cache),
            Some(asked) if asked > half_the_cache => {
                warn!(
                    read_ahead = half_the_cache,
                    "--read-ahead-max lowered to half of --cache-max-memory"
                );
                half_the_cache
            }
            Some(asked) => asked,
        };
        Ok(FsConfig {
            cache: BlockCacheConfig {
                block_size: self.block_size,
                max_memory: self.cache_max_memory,
                disk: self
                    .cache_dir
                    .clone()
                    .filter(|_| !self.no_disk_cache)
                    .map(|dir| (dir, self.cache_max_size)),
                max_streams: self.max_streams,
            },
            read_ahead: ReadAheadConfig {
                max_blocks: read_ahead / self.block_size,
                max_blocks_per_request: (self.read_ahead_request / self.block_size).max(1),
                max_streams_per_file: self.max_streams_per_file,
            },
            dir_cache_time: self.dir_cache_time,
            // SAFETY: getuid/getgid cannot fail and touch no memory.
            uid: self.uid.unwrap_or_else(|| unsafe { libc::getuid() }),
            gid: self.gid.unwrap_or_else(|| unsafe { libc::getgid() }),
            umask: self.umask,
            write: WriteConfig {
                cache_dir: self.cache_dir.clone(),
                remote_name: None,
                scope: None,
                delay: self.write_back,
                unmount_wait: self.write_back_wait,
            },
            read_only: self.read_only,
            consume_downloads: self.consume_downloads,
            metadata_db: None,
            metadata_sync: self.metadata_sync,
        })
    }

    /// The FUSE session's set-up: the mount options, who may use the mount
    /// (`allow_other`), and one thread reading the kernel's requests (the
    /// callbacks hand anything slow to the runtime, so one is enough).
    /// `spec` (`REMOTE:[path]`) names the mount's source.
    fn fuse_config(&self, spec: &str) -> fuser::Config {
        let mut mount_options = vec![
            fuser::MountOption::FSName(mount_source(spec)),
            fuser::MountOption::Subtype("filehostfs".into()),
            fuser::MountOption::DefaultPermissions,
            fuser::MountOption::NoDev,
            fuser::MountOption::NoSuid,
            fuser::MountOption::NoAtime,
        ];
        if self.read_only {
            mount_options.push(fuser::MountOption::RO);
        }
        let acl = if self.allow_other {
            fuser::SessionACL::All
        } else {
            fuser::SessionACL::Owner
        };
        let mut config = fuser::Config::default();
        config.mount_options = mount_options;
        config.acl = acl;
        config.n_threads = Some(1);
        config
    }
}

/// The source a mount shows in the mount table (`df`, `findmnt`): its spec,
/// as sshfs shows `user@host:path`, so that `mount -a` finds an fstab
/// line's mount in place instead of stacking another one on it. A spec
/// the mount options could not carry as it is (a comma or backslash, which
/// fusermount3 reads as separators and escapes; a blank) shows as
/// `filehostfs`.
fn mount_source(spec: &str) -> String {
    let plain = !spec.is_empty()
        && !spec
            .chars()
            .any(|c| c == ',' || c == '\\' || c.is_whitespace() || c.is_control());
    if plain {
        spec.to_string()
    } else {
        "filehostfs".to_string()
    }
}

/// Parses sizes such as `4096`, `512K`, `1M`, `1MiB`, `10G`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 4096, 512K, 1M, 10G)"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("{text:?}: unknown size unit {unit:?}")),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses durations such as `0`, `90` (seconds), `500ms`, `30s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 30s, 5m, 1h)"))?;
    let duration = match unit.trim() {
        "" | "s" => Duration::from_secs(number),
        "ms" => Duration::from_millis(number),
        "m" => Duration::from_secs(number.saturating_mul(60)),
        "h" => Duration::from_secs(number.saturating_mul(3600)),
        "d" => Duration::from_secs(number.saturating_mul(86_400)),
        _ => return Err(format!("{text:?}: unknown duration unit {unit:?}")),
    };
    Ok(duration)
}

fn parse_umask(text: &str) -> Result<u16, String> {
    u16::from_str_radix(text.trim(), 8)
        .ok()
        .filter(|mask| *mask <= 0o777)
        .ok_or_else(|| format!("{text:?} is not an octal umask such as 022"))
}

/// What the background half of `--daemon` (`--notify-ready`) tells its
/// parent on standard output: this line once the mount answers, or
/// [`FAILED_PREFIX`] and the reason it could not start.
const READY_LINE: &str = "ready";
const FAILED_PREFIX: &str = "failed: ";

pub fn run_mount(config_path: Option<PathBuf>, args: MountArgs) -> anyhow::Result<()> {
    if args.print_systemd_unit {
        return print_systemd_unit(&args);
    }
    if args.daemon {
        return run_in_background(&args);
    }
    let notify = args.notify_ready;
    let result = mount_in_foreground(config_path, args);
    if let (true, Err(error)) = (notify, &result) {
        // The parent is waiting for a line; after "ready" it is gone and
        // this write fails, which is fine.
        let reason = format!("{error:#}").replace('\n', " ");
        let mut stdout = std::io::stdout();
        let _ = writeln!(stdout, "{FAILED_PREFIX}{reason}");
        let _ = stdout.flush();
    }
    result
}

/// Mounts and serves until unmounted or stopped (see [`serve`]).
fn mount_in_foreground(config_path: Option<PathBuf>, args: MountArgs) -> anyhow::Result<()> {
    let mut fs_config = args.options.fs_config()?;
    let remote_name = RemotePath::parse(&args.remote)?.remote;
    if fs_config.cache.disk.is_none() && !args.options.no_disk_cache {
        let dir = default_disk_cache_dir(config_path.as_deref(), &remote_name)?;
        fs_config.cache.disk = Some((dir, args.options.cache_max_size));
    }
    fs_config.write.remote_name = Some(remote_name.clone());
    let mountpoint = std::fs::canonicalize(&args.mountpoint).unwrap_or(args.mountpoint.clone());
    fs_config.write.scope = Some(format!("{} on {}", args.remote, mountpoint.display()));
    let runtime = build_runtime()?;
    let (source, remote_max_streams, state_dir) = runtime.block_on(open_mount_root(
        config_path.as_deref(),
        &args.remote,
        &args.options,
        !args.no_saved_listings,
    ))?;
    fs_config.metadata_db = Some(state_dir.metadata_db());
    fs_config.metadata_sync |= Config::load(config_path.as_deref())?
        .remote(&remote_name)?
        .metadata_sync;
    if fs_config.metadata_sync && source.remote.capabilities().downloads_consume {
        anyhow::bail!(
            "--metadata-sync: {}",
            crate::config::METADATA_SYNC_ON_FILEIO
        );
    }
    if let Some(limit) = remote_max_streams {
        fs_config.cache.max_streams = fs_config.cache.max_streams.min(limit);
    }
    let notify = args.notify_ready;
    serve(
        &runtime,
        source,
        &args.remote,
        &args.mountpoint,
        fs_config,
        &args.options,
        move || {
            if notify {
                let mut stdout = std::io::stdout();
                let _ = writeln!(stdout, "{READY_LINE}");
                let _ = stdout.flush();
            }
        },
    )
}

pub fn build_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .thread_name("filehostfs-worker")
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Where a mount without `--cache-dir` keeps its disk cache: the account's
/// folder under the user's cache directory, so every restart finds it.
fn default_disk_cache_dir(
    config_path: Option<&Path>,
    remote_name: &str,
) -> anyhow::Result<PathBuf> {
    let identity = Config::load(config_path)?.remote(remote_name)?.identity()?;
    crate::cache::default_disk_dir(&identity)
        .context("cannot find the user's cache directory; pass --cache-dir or --no-disk-cache")
}

/// What a mount serves.
pub struct MountSource {
    pub remote: Arc<dyn Remote>,
    /// The folder shown at the mount's root.
    pub root: FolderId,
    /// Where listings are saved for the next start, if anywhere.
    pub listings: Option<Arc<ListingStore>>,
}

/// Opens the remote named in `spec` (`REMOTE:[path]`), finds the folder
/// to mount, opens the listings saved for warm restarts (`saved`), and
/// tells the remote's `max_streams` limit, if it sets one.
async fn open_mount_root(
    config_path: Option<&Path>,
    spec: &str,
    options: &MountOptions,
    saved: bool,
) -> anyhow::Result<(MountSource, Option<usize>, StateDir)> {
    let target = RemotePath::parse(spec)?;
    let mut config = Config::load(config_path)?;
    config.override_upload_options(&target.remote, &options.upload_overrides())?;
    let state_dir = match &options.state_dir {
        Some(dir) => StateDir::open_at(dir.clone())
            .with_context(|| format!("--state-dir {}", dir.display()))?,
        None => config.remote(&target.remote)?.state_dir()?,
    };
    let remote = config.open_remote(&target.remote)?;
    let listings = open_listing_store(&state_dir, saved);
    let max_streams = config.remote(&target.remote)?.max_streams;
    // Through the saved listings: a restart finds its folder without a call.
    let resolver = MetaCache::new(remote.clone(), options.dir_cache_time);
    if let Some(store) = &listings {
        resolver.persist_in(store.clone());
    }
    let root = match resolver.resolve(&target.path).await {
        Ok(Resolved::Folder { id, .. }) => id,
        Ok(Resolved::File { .. }) => {
            anyhow::bail!("{spec} is a file, not a folder: mount the folder holding it")
        }
        Err(error) => return Err(anyhow::Error::new(error).context(format!("cannot open {spec}"))),
    };
    let source = MountSource {
        remote,
        root,
        listings,
    };
    Ok((source, max_streams, state_dir))
}

/// The listings saved in the mount's state dir (`--state-dir`, else the
/// remote's), which a restarted mount answers from at once. Turned off
/// (`--no-saved-listings`), they are forgotten so a later run cannot serve
/// them either. Without a usable store the mount goes on, listing every
/// folder again next time.
fn open_listing_store(state_dir: &StateDir, saved: bool) -> Option<Arc<ListingStore>> {
    match ListingStore::open(&state_dir.listings_db()) {
        Ok(store) if saved => Some(Arc::new(store)),
        Ok(store) => {
            if let Err(error) = store.clear() {
                warn!(%error, "cannot forget the saved listings");
            }
            None
        }
        Err(error) => {
            if saved {
                warn!(error = %format!("{error:#}"), "listings are not saved for the next start");
            }
            None
        }
    }
}

/// Mounts `source` on `mountpoint` and serves it until the mount
/// goes away (`fusermount3 -u`, `umount`) or the process is asked to stop
/// (Ctrl-C, SIGTERM) or its control API's `mount/unmount`, which unmounts
/// cleanly; a second request detaches a busy mount, or stops waiting for
/// uploads (they stay journaled for the next mount). SIGHUP drops the
/// listing caches. `spec` is the `REMOTE:[path]` mounted. `on_ready` runs
/// once the mount answers (a stat of the mountpoint went through it).
#[allow(clippy::too_many_arguments)]
pub fn serve(
    runtime: &tokio::runtime::Runtime,
    source: MountSource,
    spec: &str,
    mountpoint: &Path,
    fs_config: FsConfig,
    options: &MountOptions,
    on_ready: impl FnOnce() + Send + 'static,
) -> anyhow::Result<()> {
    let _enter = runtime.enter();
    release_freed_blocks_to_the_system(options.block_size);
    let MountSource {
        remote,
        root,
        listings,
    } = source;
    let counters = Arc::new(Counters::new());
    let errors = Arc::new(RecentErrors::default());
    let remote = Arc::new(CountingRemote::new(
        remote,
        counters.clone(),
        errors.clone(),
    ));
    let filesystem = FilehostFs::new(remote.clone(), root, fs_config)
        .context("cannot set up the caches and the write-back journal")?;
    if let Some(store) = listings {
        filesystem.state.meta.persist_in(store);
    }
    let blocks = filesystem.state.blocks.clone();
    let fs_state = filesystem.state.clone();
    report_recovery(&filesystem);
    // Resolved before mounting: afterwards, looking at the path would ask
    // the mount itself, which does not serve requests yet.
    let canonical = std::fs::canonicalize(mountpoint).unwrap_or(mountpoint.to_path_buf());
    // The control API starts before the mount so that a bad option or a
    // busy socket fails the command before anything is mounted.
    let (unmount_request, unmount_requested) = tokio::sync::oneshot::channel::<()>();
    let paths = ControlPaths::from_env();
    let control = if let Some(listen) = options.rc.resolve(&canonical, &paths)? {
        let target = RemotePath::parse(spec).ok();
        let identity = MountIdentity {
            remote: target
                .as_ref()
                .map_or(spec.to_string(), |t| t.remote.clone()),
            remote_path: target.map(|t| t.path).unwrap_or_default(),
            mountpoint: canonical.display().to_string(),
        };
        let surface = MountControl::new(
            &filesystem.core,
            remote,
            counters,
            errors,
            identity,
            Box::new(move || {
                let _ = unmount_request.send(());
            }),
        );
        let server = runtime
            .block_on(RcServer::start(
                Arc::new(surface),
                listen,
                &canonical,
                &paths,
            ))
            .context("cannot start the control API")?;
        info!(endpoint = ?server.endpoint(), "control API listening");
        Some(server)
    } else {
        None
    };
    let mut session = fuser::Session::new(filesystem, mountpoint, &options.fuse_config(spec))
        .with_context(|| format!("cannot mount on {}", mountpoint.display()))?;
    info!(mountpoint = %mountpoint.display(), "mounted");
    let session_over = Arc::new(AtomicBool::new(false));
    let listener = {
        let mut unmounter = session.unmount_callable();
        let session_over = session_over.clone();
        let shown = canonical.clone();
        let meta = fs_state.meta.clone();
        stop_signals::listen(
            move |count| {
                if session_over.load(Ordering::SeqCst) {
                    // The drain below watches the count itself.
                    return;
                }
                if count == 1 {
                    info!(mountpoint = %shown.display(), "stop requested; unmounting");
                    systemd::stopping();
                    if let Err(error) = unmounter.unmount() {
                        warn!(%error, "unmount failed");
                    }
                } else {
                    detach(&shown);
                }
            },
            move || {
                meta.invalidate_all();
                info!("SIGHUP: listing caches dropped; folders are listed again on next access");
            },
        )
        .context("cannot listen for signals")?
    };
    // Ready means answering: readiness (systemd's READY=1, `on_ready`) is
    // told once a stat of the mountpoint has gone through the session. The
    // kernel applies the read-ahead of the session's INIT reply over what
    // sysfs says, so the raise waits for that first answer too. A mount
    // that cannot answer its own stat is taken down, and the run fails.
    let unanswered: Arc<std::sync::Mutex<Option<std::io::Error>>> = Arc::default();
    {
        let answering = canonical.clone();
        let unanswered = unanswered.clone();
        let mut unmounter = session.unmount_callable();
        std::thread::spawn(move || match std::fs::metadata(&answering) {
            Ok(_) => {
                systemd::ready(&answering);
                raise_kernel_read_ahead(&answering);
                on_ready();
            }
            Err(error) => {
                warn!(mountpoint = %answering.display(), %error, "the mount does not answer; unmounting");
                *unanswered.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
                if let Err(error) = unmounter.unmount() {
                    warn!(%error, "unmount failed");
                }
            }
        });
    }
    // `mount/unmount` of the control API: the same unmount as a first stop
    // request.
    let control_unmount = {
        let mut unmounter = session.unmount_callable();
        let shown = canonical.clone();
        runtime.spawn(async move {
            if unmount_requested.await.is_ok() {
                info!(mountpoint = %shown.display(), "unmount requested through the control API");
                systemd::stopping();
                if let Err(error) = unmounter.unmount() {
                    warn!(%error, "unmount failed");
                }
            }
        })
    };
    let result = session.run();
    session_over.store(true, Ordering::SeqCst);
    control_unmount.abort();
    if let Some(server) = control {
        runtime.block_on(server.stop());
    }
    systemd::stopping();
    let requests = listener.requests.clone();
    let seen = requests.count();
    let progress = runtime.spawn(report_drain_progress(fs_state.write.queue.clone()));
    runtime.block_on(crate::fs::finish_uploads(
        &fs_state,
        requests.more_than(seen),
    ));
    progress.abort();
    let settle = tokio::time::timeout(Duration::from_secs(30), blocks.wait_for_disk_writes());
    if runtime.block_on(settle).is_err() {
        warn!("gave up waiting for the disk cache writes");
    }
    drop(listener);
    info!(mountpoint = %mountpoint.display(), "unmounted");
    result.context("the FUSE session failed")?;
    let unanswered = unanswered.lock().unwrap_or_else(|e| e.into_inner()).take();
    match unanswered {
        Some(error) => Err(anyhow::Error::new(error).context(format!(
            "the mount on {} did not answer",
            canonical.display()
        ))),
        None => Ok(()),
    }
}

/// Blocks are allocated and freed at the rate data streams through the
/// cache. glibc's default moves its mmap threshold up to the size of the
/// last freed large chunk, so after the first evicted block every block
/// lands in the per-thread heap arenas, where freed blocks linger and
/// fragment: the resident size then grows well past `--cache-max-memory`.
/// A threshold fixed at the block size keeps each block its own mapping,
/// returned to the system when evicted, so the resident size tracks the
/// cache bound, while the smaller buffers of the HTTP client (a few hundred
/// KiB, allocated and freed for every read from the network) stay in the
/// heap and reuse its memory instead of faulting in fresh pages each time.
fn release_freed_blocks_to_the_system(block_size: u64) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's initial threshold, and its largest (HEAP_MAX_SIZE / 2).
        const SMALLEST: u64 = 128 << 10;
        const LARGEST: u64 = 32 << 20;
        let threshold = block_size.clamp(SMALLEST, LARGEST) as libc::c_int;
        // SAFETY: mallopt only changes allocator tuning parameters; it runs
        // before the mount serves any request.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, threshold);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = block_size;
}

/// The kernel's read-ahead on a FUSE mount starts at 128 KiB and the
/// filesystem can only lower it, so a sequential reader costs one round
/// trip through the mount per 128 KiB. The mount's backing device (its own,
/// gone at unmount) lets root raise it to the 1 MiB the session negotiated:
/// a quarter of the requests, and about 15 % more throughput on a cold
/// sequential read. Without the permission reads work as before.
fn raise_kernel_read_ahead(mountpoint: &Path) {
    let Some(device) = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|table| mount_device(&table, mountpoint))
    else {
        debug!(mountpoint = %mountpoint.display(), "mount not found in /proc/self/mountinfo");
        return;
    };
    let knob = format!("/sys/class/bdi/{device}/read_ahead_kb");
    let kib = KERNEL_READ_AHEAD / 1024;
    match std::fs::write(&knob, format!("{kib}\n")) {
        Ok(()) => debug!(%knob, kib, "kernel read-ahead raised"),
        Err(error) => info!(
            %knob,
            %error,
            "kernel read-ahead stays at 128 KiB (raising it needs root); sequential reads are slower"
        ),
    }
}

/// The `major:minor` device of the last mount on `mountpoint` in a
/// /proc/self/mountinfo table (whose paths escape space, tab, newline and
/// backslash as octal).
fn mount_device(table: &str, mountpoint: &Path) -> Option<String> {
    let wanted = mountpoint.to_str()?;
    let escaped = wanted
        .replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
        .replace('\n', "\\012");
    table.lines().rev().find_map(|line| {
        let mut fields = line.split(' ');
        let device = fields.nth(2)?;
        let mount_point = fields.nth(1)?;
        (mount_point == escaped).then(|| device.to_string())
    })
}

/// Tells the user what the write-back journal held from a previous mount.
fn report_recovery(filesystem: &FilehostFs) {
    let recovery = &filesystem.recovery;
    let dir = filesystem.state.write.queue.staging_dir();
    // Stderr may be a closed pipe: the mount must not care.
    let _ = writeln!(
        std::io::stderr(),
        "filehostfs: resumed {} pending upload(s) from {}",
        recovery.resumed.len(),
        dir.display()
    );
    for pending in &recovery.resumed {
        info!(name = %pending.name, size = pending.size, "resuming pending upload");
    }
    if recovery.placeholders > 0 {
        info!(
            count = recovery.placeholders,
            "empty files kept as local placeholders"
        );
    }
    for lost in &recovery.lost {
        warn!(name = %lost.name, "a pending file could not be recovered (see the log above)");
    }
}

/// A second stop request while the mount is still busy (files open, a
/// shell inside it): detach it now (`fusermount3 -uz`); the process ends
/// once the last open file is closed. Uploads are then drained as usual.
fn detach(mountpoint: &Path) {
    warn!(mountpoint = %mountpoint.display(), "stop requested again; detaching the busy mount");
    let detached = Command::new("fusermount3")
        .arg("-uz")
        .arg(mountpoint)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match detached {
        Ok(status) if status.success() => {}
        Ok(status) => warn!(%status, "fusermount3 -uz failed"),
        Err(error) => warn!(%error, "cannot run fusermount3"),
    }
}

/// While uploads drain at stop, tells the service manager how many are
/// left, once a second.
async fn report_drain_progress(queue: crate::writeback::WriteBack) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let left = queue.outstanding();
        if left > 0 {
            systemd::status(&format!("stopping: waiting for {left} upload(s)"));
        }
    }
}

/// This process's `filehostfs` command line (program name excluded) minus the flags in
/// `flags` and the options in `valued` with their values.
fn forwarded_args(flags: &[&str], valued: &[&str]) -> Vec<std::ffi::OsString> {
    let mut kept = Vec::new();
    let mut skip_value = false;
    for arg in super::command_line() {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        let text = arg.to_string_lossy();
        if flags.iter().any(|flag| text == *flag) {
            continue;
        }
        if valued.iter().any(|option| text == *option) {
            skip_value = true;
            continue;
        }
        if valued
            .iter()
            .any(|option| text.starts_with(&format!("{option}=")))
        {
            continue;
        }
        kept.push(arg);
    }
    kept
}

/// `--print-systemd-unit`: the unit of a foreground notify service running
/// this command line; a user unit unless run as root.
fn print_systemd_unit(args: &MountArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let command_line = forwarded_args(&["--print-systemd-unit", "--daemon"], &["--log-file"]);
    let working_dir = std::env::current_dir().context("cannot read the current directory")?;
    // SAFETY: geteuid cannot fail and touches no memory.
    let user = unsafe { libc::geteuid() } != 0;
    let unit = systemd::unit(
        &exe,
        &command_line,
        &working_dir,
        &format!(
            "filehostfs: {} on {}",
            args.remote,
            args.mountpoint.display()
        ),
        args.options.write_back_wait,
        user,
    );
    std::io::stdout()
        .write_all(unit.as_bytes())
        .context("cannot write the unit")
}

/// `--daemon`: runs the same mount as a detached child process and returns
/// once the child's mount answers, or fails with the child's reason.
fn run_in_background(args: &MountArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let child_args = forwarded_args(&["--daemon"], &["--log-file"]);
    let stderr = match &args.log_file {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log file {}", path.display()))?,
        ),
        None => Stdio::null(),
    };
    let mut command = Command::new(exe);
    command
        .args(child_args)
        .arg("--notify-ready")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    // SAFETY: setsid is async-signal-safe; the child leaves our session so
    // closing this terminal does not stop the mount.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .context("cannot start the background mount")?;
    let stdout = child.stdout.take().expect("stdout is piped");
    // One line: "ready" once the mount answers, or why it could not start;
    // nothing at all if it died (end of file).
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("cannot read from the background mount")?;
    let line = line.trim_end();
    if line == READY_LINE {
        println!(
            "filehostfs: {} mounted on {} (pid {})",
            args.remote,
            args.mountpoint.display(),
            child.id()
        );
        return Ok(());
    }
    let status = child.wait()?;
    let reason = match line.strip_prefix(FAILED_PREFIX) {
        Some(reason) => reason.to_string(),
        None => format!("the background mount ended ({status}) before it answered"),
    };
    anyhow::bail!(
        "{reason}{}",
        match &args.log_file {
            Some(path) => format!(" (log: {})", path.display()),
            None => String::new(),
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_of_a_mount_is_found_in_mountinfo() {
        let table = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
36 22 0:39 / /tmp/a\\040b rw,nosuid,nodev - fuse filehostfs rw,user_id=0
37 22 0:40 / /tmp/a rw - fuse filehostfs rw
38 36 0:41 / /tmp/a\\040b rw - fuse filehostfs rw
";
        // The newest mount on a path wins; octal escapes are matched.
        assert_eq!(
            mount_device(table, Path::new("/tmp/a b")).as_deref(),
            Some("0:41")
        );
        assert_eq!(
            mount_device(table, Path::new("/tmp/a")).as_deref(),
            Some("0:40")
        );
        assert_eq!(mount_device(table, Path::new("/tmp/b")), None);
        assert_eq!(mount_device("garbage\n\n1 2", Path::new("/tmp/a")), None);
    }

    #[test]
    fn a_mount_shows_its_spec_as_source_when_the_options_can_carry_it() {
        assert_eq!(mount_source("work:media/films"), "work:media/films");
        assert_eq!(mount_source("work:"), "work:");
        assert_eq!(mount_source("work:a,b"), "filehostfs");
        assert_eq!(mount_source("work:a b"), "filehostfs");
        assert_eq!(mount_source("work:a\\b"), "filehostfs");
        assert_eq!(mount_source(""), "filehostfs");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("10g"), Ok(10 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("1X").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn umask_parses_octal() {
        assert_eq!(parse_umask("022"), Ok(0o022));
        assert_eq!(parse_umask("77"), Ok(0o077));
        assert!(parse_umask("8").is_err());
        assert!(parse_umask("1777").is_err());
    }
}
