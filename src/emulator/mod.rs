//! `filehostfs serve`: a local HTTP server that speaks the services' APIs.
//!
//! Layout: [`storage`] (SQLite metadata + blob files), [`ranges`] (Range/HEAD
//! serving of a blob), [`link`] (latency, pace and download limit of a
//! hoster-like link, with [`pacing`] and [`slots`]), [`stats`], [`faults`],
//! [`flood`], [`budget`], [`form`], [`admin`] are shared by the services; each service has its own
//! module ([`fichier`], [`fiione`], [`fileio`]) that builds its routes on top
//! of [`AppState`]. Choices made where the API
//! documents are uncertain are listed in `src/emulator/README.md`.

pub mod admin;
pub mod budget;
pub mod faults;
pub mod fichier;
pub mod fiione;
pub mod fileio;
pub mod flood;
pub mod form;
pub mod keys;
pub mod link;
pub mod pacing;
pub mod ranges;
pub mod slots;
pub mod stats;
pub mod storage;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use clap::Parser;

use self::faults::{FaultSettings, Faults};
use self::flood::{Flood, FloodSettings};
use self::keys::KeyEntry;
use self::link::Link;
pub use self::link::{LinkProfile, LinkSettings};
use self::slots::DownloadSlot;
use self::stats::Stats;
use self::storage::{AccountId, Storage};

/// How `folder/mv.cgi` treats a request carrying both `rename` and
/// `destination_folder_id` (the document's §4.5 conflict).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FolderMoveMode {
    /// Move and rename in one call (what rclone relies on).
    MoveAndRename,
    /// `rename` wins: rename in place, ignore the destination (the official text).
    RenameOnly,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on, HOST:PORT (or just PORT for 127.0.0.1). Port 0
    /// picks a free port. The bound address is the first line printed on
    /// stdout, followed by one "SERVICE BASE_URL" line per service.
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// Directory holding the database, file contents, and generated keys.
    /// Default: $XDG_DATA_HOME/filehostfs/emulator.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Accounts, one per line: a bare API key (a 1fichier account) or
    /// "SERVICE KEY [OPTION=VALUE ...]". Without it a keys file with one
    /// generated key is created in the data dir (and reused next time).
    #[arg(long, value_name = "FILE")]
    pub keys_file: Option<PathBuf>,

    /// File whose first line is the key for /_emulator/* admin endpoints.
    /// Without it one is generated into the data dir.
    #[arg(long, value_name = "FILE")]
    pub admin_key_file: Option<PathBuf>,

    /// Base from which every URL the emulator hands out is built (file
    /// links, download links, upload host), e.g. when reached through a
    /// proxy. Default: http(s)://<bound address>.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,

    /// PEM certificate chain: serve HTTPS instead of HTTP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Seconds a download link from get_token stays valid.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub link_expiry_secs: u64,

    /// Turn flood control off (for benchmarks and most tests).
    #[arg(long)]
    pub no_flood_control: bool,

    /// API calls allowed per caller (API key, else IP) in any one second.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub flood_rate: u32,

    /// Number in the flood answer "Flood detected: IP Locked #N" (374, or 412 as newer).
    #[arg(long, default_value_t = 374, value_name = "N")]
    pub flood_code: u32,

    /// Seconds a caller stays locked out after exceeding the rate (0: no lock).
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub flood_lock_secs: u64,

    /// Minimum seconds between two user/info calls of one account.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub user_info_interval_secs: u64,

    /// Minimum seconds between two whole-account listings (file/ls folder_id -1).
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    pub list_all_interval_secs: u64,

    /// folder/mv with both rename and destination_folder_id.
    #[arg(long, value_enum, default_value = "move-and-rename")]
    pub folder_move_mode: FolderMoveMode,

    /// A named set of link settings: `hoster` = 20 ms one-way latency
    /// (40 ms round trip), 20MiB per download connection, 8 concurrent
    /// downloads per account. The --link-* flags below override its values.
    #[arg(long, value_enum, value_name = "NAME")]
    pub profile: Option<LinkProfile>,

    /// Link: one-way delay in milliseconds, applied to each request before
    /// it is handled and to each answer before its first byte (so twice
    /// this is the round trip a client sees). 0 = none.
    #[arg(long, value_name = "MS")]
    pub link_latency_ms: Option<u64>,

    /// Link: pace of each download connection (GET on a direct link), on
    /// its own, in bytes per second: `20MiB`, `20M`, `500k` or a number.
    /// 0 = unpaced.
    #[arg(long, value_name = "RATE", value_parser = link::parse_rate)]
    pub download_rate_per_connection: Option<u64>,

    /// Link: concurrent download connections allowed per account; one more
    /// gets the service's refusal (see src/emulator/README.md). 0 = no limit.
    #[arg(long, value_name = "N")]
    pub max_downloads_per_key: Option<u32>,

    /// Fault: fraction (0.0-1.0) of API calls answered with a 5xx.
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION")]
    pub fault_error_rate: f64,

    /// Fault: fraction (0.0-1.0) of direct downloads answered with a 5xx.
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION")]
    pub fault_download_error_rate: f64,

    /// Fault: the first N API calls get the flood answer.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub fault_rate_limit_burst: u64,

    /// Fault: milliseconds added before every answer.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub fault_latency_ms: u64,

    /// Fault: drop download connections after N body bytes.
    #[arg(long, value_name = "BYTES")]
    pub fault_cut_body_after: Option<u64>,

    /// Fault: hand out download links that have already expired.
    #[arg(long)]
    pub fault_expire_links: bool,

    /// fii.one: enforce the documented hourly request budgets (100 free,
    /// 1000 pro) on every key; a key's `requests_per_hour=` option sets its own.
    #[arg(long)]
    pub fiione_rate_limit: bool,

    /// file.io: requests per minute allowed to each caller (key, else IP)
    /// without a `rate_limit=` option of its own; 0 = unlimited. The
    /// default is the documented free-plan limit.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub fileio_rate_limit: u32,

    /// file.io: whether HEAD and ranged GETs spend a download like a full GET.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub fileio_partial_reads_consume: bool,
}

fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = value.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    value
        .parse::<SocketAddr>()
        .map_err(|e| format!("{value:?} is not HOST:PORT or PORT: {e}"))
}

/// Parses only `ServeArgs`, so `Default` has exactly the CLI's defaults.
#[derive(Parser)]
struct ServeArgsOnly {
    #[command(flatten)]
    args: ServeArgs,
}

impl Default for ServeArgs {
    fn default() -> Self {
        ServeArgsOnly::parse_from(["serve"]).args
    }
}

impl ServeArgs {
    /// The link settings the server starts with: the profile's, each
    /// overridden by its flag when given.
    pub fn link_settings(&self) -> LinkSettings {
        let base = self.profile.map(LinkProfile::settings).unwrap_or_default();
        LinkSettings {
            latency_ms: self.link_latency_ms.unwrap_or(base.latency_ms),
            download_rate_per_connection: self
                .download_rate_per_connection
                .unwrap_or(base.download_rate_per_connection),
            max_downloads_per_key: self
                .max_downloads_per_key
                .unwrap_or(base.max_downloads_per_key),
        }
    }
}

/// Settings the handlers consult.
#[derive(Clone, Debug)]
pub struct Settings {
    pub link_expiry: Duration,
    pub flood_code: u32,
    pub user_info_interval: Duration,
    pub list_all_interval: Duration,
    pub folder_move_mode: FolderMoveMode,
}

/// One account known from the keys file.
#[derive(Clone, Debug)]
pub struct Account {
    pub id: AccountId,
    pub entry: KeyEntry,
}

/// Everything the handlers share.
pub struct AppState {
    pub storage: Storage,
    pub stats: Arc<Stats>,
    pub faults: Faults,
    pub link: Link,
    /// Account id → `"<service>:<key>"`, the name download counters use.
    pub account_names: HashMap<AccountId, String>,
    pub flood: Flood,
    /// (service, key) → account.
    pub accounts: HashMap<(String, String), Account>,
    /// No trailing slash.
    pub public_url: String,
    pub admin_key: String,
    pub settings: Settings,
    pub fichier: fichier::FichierState,
    pub fiione: fiione::FiiOneState,
    pub fileio: fileio::FileIoState,
}

impl AppState {
    pub fn account(&self, service: &str, key: &str) -> Option<&Account> {
        self.accounts.get(&(service.to_string(), key.to_string()))
    }

    /// Counts an API call under `counter` (`"<service>:<endpoint>"`), waits
    /// the injected latency and draws the injected failure it suffers, if any.
    pub async fn begin_api_call(&self, counter: &str) -> Option<faults::InjectedFailure> {
        self.stats.count(counter);
        self.faults.apply_latency().await;
        self.faults.draw_api_failure()
    }

    /// A download slot of the account owning the file, or `None` when the
    /// account already has the most concurrent downloads the link allows
    /// (the caller answers with its service's refusal).
    pub fn acquire_download(&self, owner: AccountId) -> Option<DownloadSlot> {
        let name = self
            .account_names
            .get(&owner)
            .cloned()
            .unwrap_or_else(|| format!("account #{owner}"));
        self.link
            .slots
            .acquire(&name, self.link.max_downloads_per_key())
    }
}

/// A running emulator, in-process.
pub struct RunningEmulator {
    pub addr: SocketAddr,
    /// Base every handed-out URL starts with (no trailing slash).
    pub public_url: String,
    /// (service name, API base URL), in the order printed.
    pub services: Vec<(String, String)>,
    /// The accounts from the keys file.
    pub keys: Vec<KeyEntry>,
    pub keys_file: PathBuf,
    pub admin_key: String,
    pub admin_key_file: PathBuf,
    pub data_dir: PathBuf,
    handle: axum_server::Handle,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningEmulator {
    /// The API base URL of `service` (e.g. "1fichier").
    pub fn service_url(&self, service: &str) -> Option<&str> {
        self.services
            .iter()
            .find(|(name, _)| name == service)
            .map(|(_, url)| url.as_str())
    }

    /// The API keys of `service`'s accounts.
    pub fn keys_for(&self, service: &str) -> Vec<String> {
        self.keys
            .iter()
            .filter(|k| k.service == service)
            .map(|k| k.key.clone())
            .collect()
    }

    /// The lines `filehostfs serve` prints on stdout.
    pub fn banner(&self) -> String {
        let mut out = format!("{}\n", self.addr);
        for (name, url) in &self.services {
            out.push_str(&format!("{name} {url}\n"));
        }
        out
    }

    /// Stops accepting connections, lets running requests finish for up to
    /// a second, and waits for the server task.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.handle.graceful_shutdown(Some(Duration::from_secs(1)));
        self.server
            .await
            .context("server task panicked")?
            .context("server failed")?;
        Ok(())
    }

    /// Waits until the server stops on its own (an I/O failure).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.server)
            .await
            .context("server task panicked")?
            .context("server failed")
    }
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    let base = dirs::data_dir().context("no data directory; pass --data-dir")?;
    Ok(base.join("filehostfs").join("emulator"))
}

/// Reads the keys file, or creates `DATA_DIR/keys.txt` with one generated
/// 1fichier key (reusing it if it already exists).
fn load_or_create_keys(
    args: &ServeArgs,
    data_dir: &Path,
) -> anyhow::Result<(Vec<KeyEntry>, PathBuf, bool)> {
    if let Some(path) = &args.keys_file {
        return Ok((keys::load_keys(path)?, path.clone(), false));
    }
    let path = data_dir.join("keys.txt");
    let created = !path.exists();
    if created {
        keys::write_private(&path, &format!("{}\n", keys::generate_key()))?;
    }
    Ok((keys::load_keys(&path)?, path, created))
}

fn load_or_create_admin_key(
    args: &ServeArgs,
    data_dir: &Path,
) -> anyhow::Result<(String, PathBuf, bool)> {
    let (path, created) = match &args.admin_key_file {
        Some(path) => (path.clone(), false),
        None => {
            let path = data_dir.join("admin.key");
            let created = !path.exists();
            if created {
                keys::write_private(&path, &format!("{}\n", keys::generate_key()))?;
            }
            (path, created)
        }
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading admin key file {}", path.display()))?;
    let key = text.lines().next().unwrap_or("").trim().to_string();
    if key.is_empty() {
        anyhow::bail!("admin key file {} is empty", path.display());
    }
    Ok((key, path, created))
}

/// Starts the emulator inside the current tokio runtime and returns once it
/// is listening.
pub async fn start(args: ServeArgs) -> anyhow::Result<RunningEmulator> {
    // Several emulators (or a client) may share the process: only the first
    // install wins, and any installed ring provider is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();

    if !(0.0..=1.0).contains(&args.fault_error_rate) {
        anyhow::bail!("--fault-error-rate must be within 0.0..=1.0");
    }
    if !(0.0..=1.0).contains(&args.fault_download_error_rate) {
        anyhow::bail!("--fault-download-error-rate must be within 0.0..=1.0");
    }
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => default_data_dir()?,
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;

    // First, so a second server on this data dir stops before touching it.
    let storage = Storage::open(&data_dir)?;
    let (key_entries, keys_file, keys_created) = load_or_create_keys(&args, &data_dir)?;
    let (admin_key, admin_key_file, admin_created) = load_or_create_admin_key(&args, &data_dir)?;
    if keys_created {
        eprintln!(
            "filehostfs serve: created keys file {}",
            keys_file.display()
        );
    }
    if admin_created {
        eprintln!(
            "filehostfs serve: created admin key file {}",
            admin_key_file.display()
        );
    }

    let accounts = {
        let entries = key_entries.clone();
        storage
            .call(move |conn| {
                let mut accounts = HashMap::new();
                for entry in entries {
                    let id = storage::ensure_account(conn, &entry.service, &entry.key)?;
                    accounts.insert(
                        (entry.service.clone(), entry.key.clone()),
                        Account { id, entry },
                    );
                }
                Ok(accounts)
            })
            .await?
    };

    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("binding {}", args.listen))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .with_context(|| {
                    format!(
                        "loading TLS cert {} / key {}",
                        cert.display(),
                        key.display()
                    )
                })?,
        ),
        (None, None) => None,
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    };
    let public_url = match &args.public_url {
        Some(url) => {
            let parsed = url::Url::parse(url).with_context(|| format!("--public-url {url:?}"))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                anyhow::bail!("--public-url must be an http(s) URL with a host");
            }
            url.trim_end_matches('/').to_string()
        }
        None => {
            let scheme = if tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{addr}")
        }
    };

    let fichier_state = fichier::FichierState::new(&storage).await?;
    let fiione_state =
        fiione::FiiOneState::new(&storage, &key_entries, args.fiione_rate_limit).await?;
    let fileio_state = fileio::FileIoState::new(
        &storage,
        &key_entries,
        args.fileio_rate_limit,
        args.fileio_partial_reads_consume,
    )
    .await?;
    let account_names = storage
        .call(|conn| storage::all_accounts(conn))
        .await?
        .into_iter()
        .map(|(id, service, key)| match key.as_str() {
            "" => (id, format!("{service}:(anonymous)")),
            _ => (id, format!("{service}:{key}")),
        })
        .collect();
    let state = Arc::new(AppState {
        storage,
        stats: Arc::new(Stats::default()),
        faults: Faults::new(FaultSettings {
            error_rate: args.fault_error_rate,
            download_error_rate: args.fault_download_error_rate,
            download_error_burst: 0,
            rate_limit_burst: args.fault_rate_limit_burst,
            latency_ms: args.fault_latency_ms,
            cut_body_after: args.fault_cut_body_after,
            expire_links: args.fault_expire_links,
        }),
        link: Link::new(args.link_settings()),
        account_names,
        flood: Flood::new(FloodSettings {
            enabled: !args.no_flood_control,
            requests_per_second: args.flood_rate.max(1),
            lock: Duration::from_secs(args.flood_lock_secs),
        }),
        accounts,
        public_url: public_url.clone(),
        admin_key: admin_key.clone(),
        settings: Settings {
            link_expiry: Duration::from_secs(args.link_expiry_secs),
            flood_code: args.flood_code,
            user_info_interval: Duration::from_secs(args.user_info_interval_secs),
            list_all_interval: Duration::from_secs(args.list_all_interval_secs),
            folder_move_mode: args.folder_move_mode,
        },
        fichier: fichier_state,
        fiione: fiione_state,
        fileio: fileio_state,
    });

    let services = [
        (fichier::SERVICE, fichier::API_PREFIX),
        (fiione::SERVICE, fiione::API_PREFIX),
        (fileio::SERVICE, fileio::API_PREFIX),
    ]
    .iter()
    .map(|(name, prefix)| (name.to_string(), format!("{public_url}{prefix}")))
    .collect();
    let app = router(state);

    let handle = axum_server::Handle::new();
    let make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    let server = match tls {
        Some(config) => {
            let server = axum_server::from_tcp_rustls(listener, config).handle(handle.clone());
            tokio::spawn(async move { server.serve(make_service).await })
        }
        None => {
            let server = axum_server::from_tcp(listener).handle(handle.clone());
            tokio::spawn(async move { server.serve(make_service).await })
        }
    };
    tracing::info!("emulator listening on {addr}, public URL {public_url}");

    Ok(RunningEmulator {
        addr,
        public_url,
        services,
        keys: key_entries,
        keys_file,
        admin_key,
        admin_key_file,
        data_dir,
        handle,
        server,
    })
}

/// Every route of every service plus the admin API.
fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(admin::router(state.clone()))
        .merge(fichier::router(state.clone()))
        .merge(fiione::router(state.clone()))
        .merge(fileio::router(state.clone()))
        .layer(axum::middleware::from_fn_with_state(
            state,
            link::delay_answers,
        ))
}

/// The `serve` subcommand: start, print the address and service lines, run
/// until Ctrl-C or SIGTERM.
pub fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let mut running = start(args).await?;
        {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(running.banner().as_bytes())?;
            stdout.flush()?;
        }
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let stopped_on_its_own = tokio::select! {
            result = running.wait() => Some(result),
            _ = tokio::signal::ctrl_c() => None,
            _ = terminate.recv() => None,
        };
        match stopped_on_its_own {
            Some(result) => result,
            None => running.shutdown().await,
        }
    })
}
