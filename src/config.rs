//! The config file naming remotes (TOML, one table per remote, like
//! rclone.conf):
//!
//! ```toml
//! [work]
//! type = "1fichier"
//! api_url = "http://127.0.0.1:8080/v1"   # optional; the real service by default
//! key_file = "/path/to/key"              # or key = "...", or env FILEHOSTFS_WORK_KEY
//!
//! [pics]
//! type = "fii.one"
//! plan = "free"               # free | pro: upload size limit and hourly budget
//! requests_per_hour = 100     # optional; default: the plan's budget
//!
//! [outbox]
//! type = "file.io"
//! expires = "1w"              # each upload's expiry (default: the service's 14 days)
//! max_downloads = 1           # downloads before the file is deleted
//! auto_delete = true
//! local_copies = "/path"      # copies of files uploaded from here (default: data dir)
//! ```
//!
//! Any remote may also set `ca_cert = "/path/ca.pem"`: certificates (PEM)
//! trusted for its HTTPS connections in addition to the bundled roots and
//! the system's trust store, and `state_dir = "/path"`: where its durable
//! state lives (default: `$XDG_STATE_HOME/filehostfs/<service>-<hash>`, see
//! `crate::state_dir`), and `max_streams = N`: the most download
//! connections a mount of it opens at once (say the account's limit here
//! when the service has one; the mount's `--max-streams` bounds it too),
//! and `metadata_sync = true`: every mount of it shares the metadata it
//! keeps (mtimes, modes, owners, `user.*` attributes) with other machines,
//! like the mount's `--metadata-sync` (not for file.io).
//!
//! Where it is read from: `--config FILE`, else `$FILEHOSTFS_CONFIG`, else
//! `$XDG_CONFIG_HOME/filehostfs/config.toml` (`~/.config/...`).
//!
//! The API key comes from the environment variable `FILEHOSTFS_<NAME>_KEY`
//! (the remote's name upper-cased, other characters than letters and digits
//! turned into `_`) when set, else from `key`, else from the file `key_file`
//! (`~/` is the home folder; other relative paths are relative to the config
//! file). A config file holding a
//! `key` must not be readable by group or others. The key is never printed:
//! [`ApiKey`] redacts itself and parse errors quote no source text.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;

use crate::remote::fichier::{Fichier, FichierOptions};
use crate::remote::fiione::{self, FiiOne, FiiOnePlan, FiiOneSettings};
use crate::remote::fileio::{self, FileIo, FileIoSettings, UploadOptions};
use crate::remote::http::{HttpSettings, TrustedCertificates};
use crate::remote::pacer::PacerConfig;
use crate::remote::{ApiKey, Remote};
use crate::state_dir::{default_state_base, RemoteIdentity, StateDir};

/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "FILEHOSTFS_CONFIG";

/// Why metadata sync is refused on file.io (config key and mount option).
pub const METADATA_SYNC_ON_FILEIO: &str = "metadata_sync cannot be used with file.io: \
     each download of a file spends one of its downloads (by default its only one) and \
     file.io has no folders, so a shared metadata file would be gone after the first mount read it";

/// One remote's table, as written in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemote {
    #[serde(rename = "type")]
    kind: String,
    api_url: Option<String>,
    key: Option<String>,
    key_file: Option<PathBuf>,
    rate: Option<f64>,
    burst: Option<u32>,
    retries: Option<u32>,
    retry_backoff: Option<f64>,
    flood_wait: Option<f64>,
    link_ttl: Option<f64>,
    connect_timeout: Option<f64>,
    ca_cert: Option<PathBuf>,
    read_timeout: Option<f64>,
    plan: Option<String>,
    requests_per_hour: Option<u32>,
    max_streams: Option<usize>,
    expires: Option<String>,
    max_downloads: Option<u32>,
    auto_delete: Option<bool>,
    local_copies: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    metadata_sync: Option<bool>,
}

/// One remote's settings. Durations are given in seconds in the file.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    pub name: String,
    /// The service: "1fichier" (other services add their names here).
    pub kind: String,
    /// API base URL; `None` = the real service.
    pub api_url: Option<String>,
    key: Option<ApiKey>,
    pub key_file: Option<PathBuf>,
    /// Requests per second over all endpoints.
    pub rate: Option<f64>,
    pub burst: Option<u32>,
    /// Attempts per operation (first one included).
    pub retries: Option<u32>,
    /// First retry wait (doubles each retry).
    pub retry_backoff: Option<Duration>,
    /// Wait after a flood answer (1fichier: 30 s).
    pub flood_wait: Option<Duration>,
    /// Lifetime of a direct-download link.
    pub link_ttl: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    /// PEM file of certificates trusted in addition to the bundled and the
    /// system's roots.
    pub ca_cert: Option<PathBuf>,
    /// fii.one: the account's plan (upload size limit, hourly budget).
    pub plan: Option<FiiOnePlan>,
    /// fii.one: API requests allowed per hour (default: the plan's budget).
    pub requests_per_hour: Option<u32>,
    /// Most download connections a mount opens at once.
    pub max_streams: Option<usize>,
    /// file.io: the options given to each upload.
    pub upload: UploadOptions,
    /// file.io: where copies of the files uploaded from here are kept.
    pub local_copies: Option<PathBuf>,
    /// Where this account's durable state lives (default: see
    /// [`crate::state_dir`]).
    pub state_dir: Option<PathBuf>,
    /// Mounts share their metadata records with other machines (the
    /// mount's `--metadata-sync`); refused for file.io.
    pub metadata_sync: bool,
}

/// All remotes of one config file.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// The file read (or that would have been read, when it does not exist).
    pub path: Option<PathBuf>,
    remotes: BTreeMap<String, RemoteConfig>,
}

/// The default config file location.
pub fn default_config_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("filehostfs").join("config.toml"))
}

/// The env variable that may hold the key of remote `name`.
pub fn key_env_var(name: &str) -> String {
    let upper: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("FILEHOSTFS_{upper}_KEY")
}

fn seconds(value: Option<f64>, field: &str, remote: &str) -> anyhow::Result<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(_) => bail!("remote {remote}: {field} must be a number of seconds >= 0"),
    }
}

impl Config {
    /// Reads the config from `path`, else from `$FILEHOSTFS_CONFIG`, else
    /// from the default location. A missing default file gives an empty
    /// config; a missing file that was named explicitly is an error.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let env_path = std::env::var_os(CONFIG_ENV)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let (path, explicit) = match (path, env_path) {
            (Some(p), _) => (p.to_path_buf(), true),
            (None, Some(p)) => (p, true),
            (None, None) => match default_config_path() {
                Some(p) => (p, false),
                None => return Ok(Config::default()),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Config {
                    path: Some(path),
                    remotes: BTreeMap::new(),
                })
            }
            Err(e) => return Err(anyhow!("config file {}: {e}", path.display())),
        };
        let config = Config::parse(&text, Some(&path))?;
        if config.remotes.values().any(|r| r.key.is_some()) {
            check_private(&path)?;
        }
        Ok(config)
    }

    /// Parses config text; `path` is used for messages and relative key files.
    pub fn parse(text: &str, path: Option<&Path>) -> anyhow::Result<Config> {
        let shown = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "config".to_string());
        // toml's own error text quotes the offending line, which could hold
        // a key: report only the position and the reason.
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            match line {
                Some(line) => anyhow!("{shown}: line {line}: {}", e.message()),
                None => anyhow!("{shown}: {}", e.message()),
            }
        })?;
        let base_dir = path.and_then(Path::parent).map(Path::to_path_buf);
        let mut remotes = BTreeMap::new();
        for (name, value) in table {
            if !valid_remote_name(&name) {
                bail!("{shown}: [{name}]: remote names may only hold letters, digits, '-', '_' and '.'");
            }
            let toml::Value::Table(t) = value else {
                bail!("{shown}: {name}: expected a [{name}] table describing a remote");
            };
            let raw: RawRemote = toml::Value::Table(t)
                .try_into()
                .map_err(|e: toml::de::Error| anyhow!("{shown}: [{name}]: {}", e.message()))?;
            if raw.key.is_some() && raw.key_file.is_some() {
                bail!("{shown}: [{name}]: set either key or key_file, not both");
            }
            let key_file = raw.key_file.map(|f| expand_home(&f, base_dir.as_deref()));
            let plan = match raw.plan.as_deref() {
                None => None,
                Some(text) => Some(FiiOnePlan::parse(text).ok_or_else(|| {
                    anyhow!("{shown}: [{name}]: plan must be \"free\" or \"pro\"")
                })?),
            };
            if let Some(expires) = &raw.expires {
                fileio::check_expires(expires).map_err(|e| anyhow!("{shown}: [{name}]: {e}"))?;
            }
            if raw.max_downloads == Some(0) {
                bail!("{shown}: [{name}]: max_downloads must be at least 1");
            }
            if raw.requests_per_hour == Some(0) {
                bail!("{shown}: [{name}]: requests_per_hour must be at least 1");
            }
            if raw.max_streams == Some(0) {
                bail!("{shown}: [{name}]: max_streams must be at least 1");
            }
            let only_for = |set: bool, field: &str, kind: &str| -> anyhow::Result<()> {
                if set && raw.kind != kind {
                    bail!("{shown}: [{name}]: {field} only applies to type = \"{kind}\"");
                }
                Ok(())
            };
            only_for(raw.plan.is_some(), "plan", "fii.one")?;
            only_for(
                raw.requests_per_hour.is_some(),
                "requests_per_hour",
                "fii.one",
            )?;
            only_for(raw.expires.is_some(), "expires", "file.io")?;
            only_for(raw.max_downloads.is_some(), "max_downloads", "file.io")?;
            only_for(raw.auto_delete.is_some(), "auto_delete", "file.io")?;
            only_for(raw.local_copies.is_some(), "local_copies", "file.io")?;
            if raw.metadata_sync == Some(true) && raw.kind == "file.io" {
                bail!("{shown}: [{name}]: {METADATA_SYNC_ON_FILEIO}");
            }
            let local_copies = raw
                .local_copies
                .map(|f| expand_home(&f, base_dir.as_deref()));
            let remote = RemoteConfig {
                plan,
                requests_per_hour: raw.requests_per_hour,
                max_streams: raw.max_streams,
                upload: UploadOptions {
                    expires: raw.expires,
                    max_downloads: raw.max_downloads,
                    auto_delete: raw.auto_delete,
                },
                local_copies,
                state_dir: raw.state_dir.map(|d| expand_home(&d, base_dir.as_deref())),
                metadata_sync: raw.metadata_sync.unwrap_or(false),
                kind: raw.kind,
                api_url: raw.api_url,
                key: raw.key.map(ApiKey::new),
                key_file,
                rate: raw.rate,
                burst: raw.burst,
                retries: raw.retries,
                retry_backoff: seconds(raw.retry_backoff, "retry_backoff", &name)?,
                flood_wait: seconds(raw.flood_wait, "flood_wait", &name)?,
                link_ttl: seconds(raw.link_ttl, "link_ttl", &name)?,
                connect_timeout: seconds(raw.connect_timeout, "connect_timeout", &name)?,
                read_timeout: seconds(raw.read_timeout, "read_timeout", &name)?,
                ca_cert: raw.ca_cert.map(|f| expand_home(&f, base_dir.as_deref())),
                name: name.clone(),
            };
            if let Some(rate) = remote.rate {
                if !(rate.is_finite() && rate > 0.0) {
                    bail!(
                        "{shown}: [{name}]: rate must be a positive number of requests per second"
                    );
                }
            }
            remotes.insert(name, remote);
        }
        Ok(Config {
            path: path.map(Path::to_path_buf),
            remotes,
        })
    }

    pub fn remote_names(&self) -> impl Iterator<Item = &str> {
        self.remotes.keys().map(String::as_str)
    }

    /// The settings of remote `name`.
    pub fn remote(&self, name: &str) -> anyhow::Result<&RemoteConfig> {
        self.remotes.get(name).ok_or_else(|| {
            let place = match &self.path {
                Some(p) => format!("in {}", p.display()),
                None => "(no config file)".to_string(),
            };
            let known: Vec<&str> = self.remote_names().collect();
            if known.is_empty() {
                anyhow!("no remote named {name:?} {place}")
            } else {
                anyhow!(
                    "no remote named {name:?} {place} (known: {})",
                    known.join(", ")
                )
            }
        })
    }

    /// Replaces the file.io upload options of remote `name` with those set
    /// in `options` (e.g. from `mount --expires`); an error for a remote of
    /// another type, where they would mean nothing.
    pub fn override_upload_options(
        &mut self,
        name: &str,
        options: &UploadOptions,
    ) -> anyhow::Result<()> {
        if *options == UploadOptions::default() {
            return Ok(());
        }
        self.remote(name)?;
        let remote = self
            .remotes
            .get_mut(name)
            .ok_or_else(|| anyhow!("no remote named {name:?}"))?;
        if remote.kind != "file.io" {
            bail!(
                "--expires, --max-downloads and --auto-delete apply to file.io remotes; {name} is {}",
                remote.kind
            );
        }
        if let Some(expires) = &options.expires {
            fileio::check_expires(expires).map_err(|e| anyhow!(e))?;
            remote.upload.expires = Some(expires.clone());
        }
        if let Some(max) = options.max_downloads {
            if max == 0 {
                bail!("--max-downloads must be at least 1");
            }
            remote.upload.max_downloads = Some(max);
        }
        if let Some(auto_delete) = options.auto_delete {
            remote.upload.auto_delete = Some(auto_delete);
        }
        Ok(())
    }

    /// Builds the backend for remote `name`.
    pub fn open_remote(&self, name: &str) -> anyhow::Result<Arc<dyn Remote>> {
        let remote = self.remote(name)?;
        // Each service adds its arm here.
        match remote.kind.as_str() {
            "1fichier" => {
                let backend = Fichier::new(remote.fichier_options()?)
                    .with_context(|| format!("remote {name}"))?;
                Ok(Arc::new(backend))
            }
            "fii.one" => {
                let backend = FiiOne::new(remote.fiione_settings()?)
                    .with_context(|| format!("remote {name}"))?;
                Ok(Arc::new(backend))
            }
            "file.io" => {
                let backend = FileIo::new(remote.fileio_settings()?)
                    .with_context(|| format!("remote {name}"))?;
                Ok(Arc::new(backend))
            }
            other => bail!(
                "remote {name}: unknown type {other:?} (supported: 1fichier, fii.one, file.io)"
            ),
        }
    }
}

/// `$XDG_DATA_HOME/filehostfs/file.io/<remote>-<account>`: one folder per
/// account (named by a hash of its service URL and key, never the key), so
/// a changed key or URL does not mix two accounts' files.
fn default_local_copies(name: &str, api_url: &str, key: &ApiKey) -> anyhow::Result<PathBuf> {
    use sha2::{Digest, Sha256};
    let base = dirs::data_local_dir()
        .ok_or_else(|| anyhow!("remote {name}: no data directory; set local_copies"))?;
    let mut hash = Sha256::new();
    hash.update(api_url.as_bytes());
    hash.update([0]);
    hash.update(key.expose().as_bytes());
    let account = hex::encode(&hash.finalize()[..8]);
    Ok(base
        .join("filehostfs")
        .join("file.io")
        .join(format!("{name}-{account}")))
}

/// `~/x` → `$HOME/x`; other relative paths are relative to `base_dir` (the
/// config file's folder), so a config works from any current directory.
fn expand_home(path: &Path, base_dir: Option<&Path>) -> PathBuf {
    if let Ok(rest) = path.strip_prefix("~") {
        if let Some(home) = dirs::home_dir() {
            return home.join(rest);
        }
    }
    match base_dir {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

fn valid_remote_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Refuses a key-holding config file that others can read.
#[cfg(unix)]
fn check_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("config file {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "config file {} holds an API key but is readable by others (mode {:o}); \
             run `chmod 600 {}` or move the key to a key_file or the environment",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

impl RemoteConfig {
    /// The API key, from the environment, the config, or the key file.
    pub fn api_key(&self) -> anyhow::Result<ApiKey> {
        let var = key_env_var(&self.name);
        if let Some(value) = std::env::var_os(&var) {
            let key = ApiKey::new(value.to_string_lossy().into_owned());
            if !key.is_empty() {
                return Ok(key);
            }
        }
        if let Some(key) = &self.key {
            return Ok(key.clone());
        }
        if let Some(file) = &self.key_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("remote {}: key_file {}", self.name, file.display()))?;
            let key = ApiKey::new(text);
            if key.is_empty() {
                bail!("remote {}: key_file {} is empty", self.name, file.display());
            }
            return Ok(key);
        }
        bail!(
            "remote {} has no API key: set key_file in its table, or the environment variable {var}",
            self.name
        )
    }

    /// This account's state directory, created if missing: the configured
    /// `state_dir`, else `$XDG_STATE_HOME/filehostfs/<identity>`.
    pub fn state_dir(&self) -> anyhow::Result<StateDir> {
        let opened = match &self.state_dir {
            Some(dir) => StateDir::open_at(dir.clone()),
            None => {
                let base = default_state_base().ok_or_else(|| {
                    anyhow!("remote {}: no state directory; set state_dir", self.name)
                })?;
                StateDir::open(&base, &self.identity()?)
            }
        };
        opened.with_context(|| format!("remote {}: state directory", self.name))
    }

    /// Names this account (service, API URL actually used, key) for paths.
    pub fn identity(&self) -> anyhow::Result<RemoteIdentity> {
        let default_url = match self.kind.as_str() {
            "1fichier" => crate::remote::fichier::DEFAULT_API_URL,
            "fii.one" => fiione::DEFAULT_API_URL,
            "file.io" => fileio::DEFAULT_API_URL,
            _ => "",
        };
        let api_url = self.api_url.as_deref().unwrap_or(default_url);
        Ok(RemoteIdentity::new(&self.kind, api_url, &self.api_key()?))
    }

    /// Pacing and retry settings, from the defaults and this table.
    pub fn pacer_config(&self) -> PacerConfig {
        self.pacer_config_from(PacerConfig::default())
    }

    /// Pacing and retry settings: `base` (a service's own defaults) with
    /// this table's settings on top.
    pub fn pacer_config_from(&self, base: PacerConfig) -> PacerConfig {
        let mut pacer = base;
        if let Some(rate) = self.rate {
            pacer.rate_per_sec = rate;
        }
        if let Some(burst) = self.burst {
            pacer.burst = burst.max(1);
        }
        if let Some(retries) = self.retries {
            pacer.max_attempts = retries.max(1);
        }
        if let Some(backoff) = self.retry_backoff {
            pacer.initial_backoff = backoff;
            pacer.max_backoff = pacer.max_backoff.max(backoff);
        }
        if let Some(wait) = self.flood_wait {
            pacer.max_server_wait = pacer.max_server_wait.max(wait);
        }
        pacer
    }

    /// Timeouts and trust of the remote's HTTP client; reads `ca_cert`.
    pub fn http_settings(&self) -> anyhow::Result<HttpSettings> {
        let mut http = HttpSettings::default();
        if let Some(path) = &self.ca_cert {
            http.extra_roots =
                Some(TrustedCertificates::load(path).map_err(|e| anyhow!("[{}]: {e}", self.name))?);
        }
        if let Some(t) = self.connect_timeout {
            http.connect_timeout = t;
        }
        if let Some(t) = self.read_timeout {
            http.read_timeout = t;
        }
        Ok(http)
    }

    pub fn fiione_settings(&self) -> anyhow::Result<FiiOneSettings> {
        let mut settings = FiiOneSettings::new(self.api_key()?);
        if let Some(url) = &self.api_url {
            settings.api_url = url.clone();
        }
        if let Some(plan) = self.plan {
            settings.plan = plan;
        }
        let per_hour = self
            .requests_per_hour
            .unwrap_or(settings.plan.hourly_request_budget());
        settings.pacer = self.pacer_config_from(fiione::hourly_pacer(per_hour));
        settings.http = self.http_settings()?;
        if let Some(backoff) = self.retry_backoff {
            settings.download.retry_backoff = backoff;
        }
        Ok(settings)
    }

    pub fn fileio_settings(&self) -> anyhow::Result<FileIoSettings> {
        let key = self.api_key()?;
        let api_url = self
            .api_url
            .clone()
            .unwrap_or_else(|| fileio::DEFAULT_API_URL.to_string());
        let local_copies = match &self.local_copies {
            Some(dir) => dir.clone(),
            None => default_local_copies(&self.name, &api_url, &key)?,
        };
        let mut settings = FileIoSettings::new(key, local_copies);
        settings.api_url = api_url;
        settings.upload = self.upload.clone();
        settings.pacer = self.pacer_config_from(fileio::default_pacer());
        settings.http = self.http_settings()?;
        Ok(settings)
    }

    pub fn fichier_options(&self) -> anyhow::Result<FichierOptions> {
        let mut options = FichierOptions::new(self.api_key()?);
        if let Some(url) = &self.api_url {
            options.api_url = url.clone();
        }
        options.pacer = self.pacer_config();
        options.http = self.http_settings()?;
        if let Some(backoff) = self.retry_backoff {
            options.download.retry_backoff = backoff;
        }
        if let Some(wait) = self.flood_wait {
            options.flood_wait = wait;
        }
        if let Some(ttl) = self.link_ttl {
            options.link_ttl = ttl;
            options.link_margin = options.link_margin.min(ttl / 10);
        }
        Ok(options)
    }
}

/// `REMOTE:path` as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemotePath {
    pub remote: String,
    /// Slash-separated, without leading or trailing slashes; empty = root.
    pub path: String,
}

impl RemotePath {
    pub fn parse(text: &str) -> anyhow::Result<RemotePath> {
        let Some((remote, path)) = text.split_once(':') else {
            bail!("{text}: expected REMOTE:path (e.g. work:docs/report.pdf)");
        };
        if !valid_remote_name(remote) {
            bail!("{text}: {remote:?} is not a remote name");
        }
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        if parts.iter().any(|p| *p == "." || *p == "..") {
            bail!("{text}: '.' and '..' are not allowed in remote paths");
        }
        Ok(RemotePath {
            remote: remote.to_string(),
            path: parts.join("/"),
        })
    }

    pub fn is_root(&self) -> bool {
        self.path.is_empty()
    }

    /// The last component (empty for the root).
    pub fn leaf(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }

    /// The path of the parent folder.
    pub fn parent(&self) -> RemotePath {
        RemotePath {
            remote: self.remote.clone(),
            path: self
                .path
                .rsplit_once('/')
                .map(|(p, _)| p.to_string())
                .unwrap_or_default(),
        }
    }

    pub fn join(&self, name: &str) -> RemotePath {
        RemotePath {
            remote: self.remote.clone(),
            path: if self.path.is_empty() {
                name.to_string()
            } else {
                format!("{}/{name}", self.path)
            },
        }
    }
}

impl fmt::Display for RemotePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.remote, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_paths() {
        let p = RemotePath::parse("work:/a//b/").unwrap();
        assert_eq!(p.remote, "work");
        assert_eq!(p.path, "a/b");
        assert_eq!(p.leaf(), "b");
        assert_eq!(p.parent().to_string(), "work:a");
        assert_eq!(p.join("c").to_string(), "work:a/b/c");
        assert!(RemotePath::parse("work:").unwrap().is_root());
        assert!(RemotePath::parse("nocolon").is_err());
        assert!(RemotePath::parse(":x").is_err());
        assert!(RemotePath::parse("w:a/../b").is_err());
        // Only the first colon separates the remote.
        assert_eq!(RemotePath::parse("w:a:b").unwrap().path, "a:b");
    }

    #[test]
    fn metadata_sync_is_a_key_refused_for_file_io() {
        let c = Config::parse(
            "[a]\ntype = \"1fichier\"\nkey = \"k\"\nmetadata_sync = true\n\
             [b]\ntype = \"fii.one\"\nkey = \"k\"\n",
            None,
        )
        .unwrap();
        assert!(c.remote("a").unwrap().metadata_sync);
        assert!(!c.remote("b").unwrap().metadata_sync);
        let refused = Config::parse(
            "[o]\ntype = \"file.io\"\nkey = \"k\"\nmetadata_sync = true\n",
            None,
        )
        .unwrap_err();
        assert!(format!("{refused:#}").contains("file.io"), "{refused:#}");
        // Saying no is fine everywhere.
        Config::parse(
            "[o]\ntype = \"file.io\"\nkey = \"k\"\nmetadata_sync = false\n",
            None,
        )
        .unwrap();
    }

    #[test]
    fn state_dir_is_configurable_and_named_by_the_account() {
        let tmp = tempfile::tempdir().unwrap();
        let config_path = tmp.path().join("config.toml");
        let c = Config::parse(
            "[statea]\ntype = \"1fichier\"\nkey = \"k1\"\n\
             [stateb]\ntype = \"1fichier\"\nkey = \"k1\"\napi_url = \"https://api.1fichier.com/v1\"\n\
             [statec]\ntype = \"1fichier\"\nkey = \"k2\"\n\
             [stated]\ntype = \"fii.one\"\nkey = \"k1\"\nstate_dir = \"state/d\"\n",
            Some(&config_path),
        )
        .unwrap();
        let identity = |name: &str| c.remote(name).unwrap().identity().unwrap();
        // Spelling out the default URL, or another remote name, is the same account.
        assert_eq!(identity("statea"), identity("stateb"));
        assert_ne!(identity("statea"), identity("statec"));
        assert!(identity("stated").as_str().starts_with("fii.one-"));
        let configured = c.remote("stated").unwrap().state_dir().unwrap();
        assert_eq!(configured.path(), tmp.path().join("state").join("d"));
        assert!(configured.path().is_dir());
    }

    #[test]
    fn fiione_and_fileio_tables() {
        let c = Config::parse(
            "[pics]\ntype = \"fii.one\"\nkey = \"k\"\nplan = \"pro\"\n\
             [pics2]\ntype = \"fii.one\"\nkey = \"k\"\nrequests_per_hour = 36\nrate = 9\n\
             [out]\ntype = \"file.io\"\nkey = \"k\"\nexpires = \"1w\"\nmax_downloads = 3\n\
             auto_delete = false\nlocal_copies = \"copies\"\n",
            Some(Path::new("/etc/fh/config.toml")),
        )
        .unwrap();
        let pics = c.remote("pics").unwrap().fiione_settings().unwrap();
        assert_eq!(pics.plan, FiiOnePlan::Pro);
        // The pro budget: 1000 requests in any hour, burst included.
        let hourly = pics.pacer.rate_per_sec * 3600.0 + f64::from(pics.pacer.burst);
        assert!((hourly - 1000.0).abs() < 1e-6, "{hourly}");
        let pics2 = c.remote("pics2").unwrap().fiione_settings().unwrap();
        assert_eq!(pics2.pacer.rate_per_sec, 9.0);
        assert_eq!(pics2.plan, FiiOnePlan::Free);
        let out = c.remote("out").unwrap().fileio_settings().unwrap();
        assert_eq!(out.upload.expires.as_deref(), Some("1w"));
        assert_eq!(out.upload.max_downloads, Some(3));
        assert_eq!(out.upload.auto_delete, Some(false));
        assert_eq!(out.local_copies, Path::new("/etc/fh/copies"));
        assert_eq!(out.api_url, fileio::DEFAULT_API_URL);

        for bad in [
            "[x]\ntype = \"fii.one\"\nplan = \"gold\"\n",
            "[x]\ntype = \"file.io\"\nexpires = \"someday\"\n",
            "[x]\ntype = \"file.io\"\nmax_downloads = 0\n",
            "[x]\ntype = \"1fichier\"\nexpires = \"1d\"\n",
            "[x]\ntype = \"file.io\"\nplan = \"free\"\n",
        ] {
            assert!(Config::parse(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn upload_options_can_be_overridden_for_file_io_only() {
        let mut c = Config::parse(
            "[out]\ntype = \"file.io\"\nkey = \"k\"\nexpires = \"1w\"\nmax_downloads = 3\n\
             local_copies = \"/tmp/x\"\n[pics]\ntype = \"fii.one\"\nkey = \"k\"\n",
            None,
        )
        .unwrap();
        let wanted = UploadOptions {
            expires: Some("1s".into()),
            max_downloads: None,
            auto_delete: Some(false),
        };
        c.override_upload_options("out", &wanted).unwrap();
        let upload = c.remote("out").unwrap().fileio_settings().unwrap().upload;
        assert_eq!(upload.expires.as_deref(), Some("1s"));
        assert_eq!(upload.max_downloads, Some(3));
        assert_eq!(upload.auto_delete, Some(false));
        assert!(c.override_upload_options("pics", &wanted).is_err());
        assert!(c
            .override_upload_options("pics", &UploadOptions::default())
            .is_ok());
        let bad = UploadOptions {
            expires: Some("soon".into()),
            ..UploadOptions::default()
        };
        assert!(c.override_upload_options("out", &bad).is_err());
    }

    #[test]
    fn env_var_names() {
        assert_eq!(key_env_var("work"), "FILEHOSTFS_WORK_KEY");
        assert_eq!(key_env_var("my-box.2"), "FILEHOSTFS_MY_BOX_2_KEY");
    }

    #[test]
    fn parse_errors_do_not_quote_the_key() {
        let err = Config::parse("[w]\ntype = \"1fichier\"\nkey = \"SECRETKEY\" oops\n", None)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("SECRETKEY"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn tables_are_checked() {
        assert!(Config::parse("[w]\ntype = \"1fichier\"\nkye = 1\n", None).is_err());
        assert!(Config::parse("w = 1\n", None).is_err());
        assert!(Config::parse(
            "[w]\ntype = \"1fichier\"\nkey = \"a\"\nkey_file = \"b\"\n",
            None
        )
        .is_err());
        let c = Config::parse(
            "[w]\ntype = \"1fichier\"\nkey_file = \"k\"\nrate = 5\nflood_wait = 0.5\n",
            Some(Path::new("/etc/fh/config.toml")),
        )
        .unwrap();
        let r = c.remote("w").unwrap();
        assert_eq!(r.key_file.as_deref(), Some(Path::new("/etc/fh/k")));
        if let Some(home) = dirs::home_dir() {
            assert_eq!(
                expand_home(Path::new("~/keys/w"), Some(Path::new("/etc"))),
                home.join("keys/w")
            );
        }
        assert_eq!(r.pacer_config().rate_per_sec, 5.0);
        assert_eq!(r.flood_wait, Some(Duration::from_millis(500)));
        let err = c.remote("nope").unwrap_err().to_string();
        assert!(err.contains("known: w"), "{err}");
    }

    #[test]
    fn debug_output_hides_inline_keys() {
        let c = Config::parse("[w]\ntype = \"1fichier\"\nkey = \"SECRETKEY\"\n", None).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("SECRETKEY"), "{shown}");
        assert_eq!(
            c.remote("w").unwrap().api_key().unwrap().expose(),
            "SECRETKEY"
        );
    }

    #[cfg(unix)]
    #[test]
    fn readable_config_with_a_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[w]\ntype = \"1fichier\"\nkey = \"SECRETKEY\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!err.contains("SECRETKEY"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Config::load(Some(&path)).is_ok());
        // Without an inline key, a readable file is fine.
        std::fs::write(&path, "[w]\ntype = \"1fichier\"\nkey_file = \"k\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Config::load(Some(&path)).is_ok());
    }
}
