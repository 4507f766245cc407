//! file.io backend (see `shared/api/file-io.md`).
//!
//! file.io is an outbox, not a drive: every file has a one-time (or
//! few-times) link and an expiry, and fetching its bytes spends one of its
//! downloads, possibly deleting it before the person it was meant for gets
//! it. So this backend:
//! - keeps a local copy of everything it uploads and reads those files from
//!   that copy, never from the service;
//! - reads any other file only as one whole-file download (a ranged request
//!   may count as a download of its own), kept locally afterwards;
//! - reports [`Remote::read_consumes_download`] so the filesystem can refuse
//!   to spend a download without the user's consent;
//! - lists only live files (not expired, downloads left).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use parking_lot::Mutex;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::http::{self, HttpSettings};
use super::pacer::{Pacer, PacerConfig, Retry};
use super::secret::ApiKey;
use super::{
    ByteStream, Capabilities, DirectLink, FileEntry, FileId, FolderEntry, FolderId, Listing,
    ProgressFn, Remote, RemoteError, RemoteResult, SpaceInfo, UploadSource, NAME_MAX_BYTES,
};

/// The real service.
pub const DEFAULT_API_URL: &str = "https://file.io";

/// Files per listing request.
const PAGE_LIMIT: usize = 100;

/// Tolerance between the clock stamping local copies and the one timing
/// listings (the same machine, but file systems round timestamps).
const COPY_CLOCK_SLACK: Duration = Duration::from_secs(1);

const ROOT_ID: &str = "";

/// Upload options the service applies to each new file. `None` leaves the
/// choice to the service (14 days, one download, auto-delete).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UploadOptions {
    /// `expires` as the service reads it: `1h`, `2d`, `1w`, an ISO-8601 date...
    pub expires: Option<String>,
    pub max_downloads: Option<u32>,
    pub auto_delete: Option<bool>,
}

/// How to reach one file.io account.
#[derive(Clone, Debug)]
pub struct FileIoSettings {
    /// Service root, e.g. `https://file.io`.
    pub api_url: String,
    pub key: ApiKey,
    pub upload: UploadOptions,
    /// Where the copies of files uploaded from this machine are kept (one
    /// directory per account).
    pub local_copies: PathBuf,
    /// Default: [`default_pacer`].
    pub pacer: PacerConfig,
    pub http: HttpSettings,
}

impl FileIoSettings {
    /// The real service with its default upload options.
    pub fn new(key: ApiKey, local_copies: PathBuf) -> Self {
        FileIoSettings {
            api_url: DEFAULT_API_URL.to_string(),
            key,
            upload: UploadOptions::default(),
            local_copies,
            pacer: default_pacer(),
            http: HttpSettings::default(),
        }
    }
}

/// The free plan's documented limit: one request per minute. Paid plans
/// allow more; the config file's `rate`/`burst` raise it.
pub fn default_pacer() -> PacerConfig {
    PacerConfig {
        rate_per_sec: 1.0 / 60.0,
        burst: 1,
        ..PacerConfig::default()
    }
}

const CLASS_API: &str = "api";

/// Checks an `expires` value before it is sent, so that a typo in a config
/// file or on the command line fails at once rather than at the first write.
pub fn check_expires(value: &str) -> Result<(), String> {
    let value = value.trim();
    if DateTime::parse_from_rfc3339(value).is_ok()
        || chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").is_ok()
    {
        return Ok(());
    }
    let digits = value.chars().take_while(|c| c.is_ascii_digit()).count();
    let (number, unit) = value.split_at(digits);
    let known_unit = matches!(unit, "s" | "min" | "h" | "d" | "w" | "m" | "y");
    match number.parse::<u64>() {
        Ok(n) if n > 0 && known_unit => Ok(()),
        _ => Err(format!(
            "invalid file.io expiry {value:?}: use a number and a unit (s, min, h, d, w, m = months, y), e.g. 1d, or an ISO-8601 date"
        )),
    }
}

/// One file.io account.
pub struct FileIo {
    http: reqwest::Client,
    /// Same identity as `http` but without the idle read timeout: sending a
    /// large file outlasts it. Each upload gets a deadline scaled to its size.
    upload_http: reqwest::Client,
    http_settings: HttpSettings,
    /// Without the key: links are public and may be handed to anyone.
    public_http: reqwest::Client,
    api_url: String,
    pacer: Pacer,
    upload_options: UploadOptions,
    local_copies: PathBuf,
    capabilities: Capabilities,
    /// One lock per file being fetched, so concurrent reads of a foreign file
    /// spend one download, not one each.
    fetching: Mutex<HashMap<FileId, Arc<tokio::sync::Mutex<()>>>>,
    links: Mutex<HashMap<FileId, String>>,
}

impl fmt::Debug for FileIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileIo")
            .field("api_url", &self.api_url)
            .field("local_copies", &self.local_copies)
            .finish_non_exhaustive()
    }
}

// ---- wire format (client side, written from the document) ----

#[derive(Debug, Deserialize)]
struct WireError {
    code: Option<String>,
    message: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireFile {
    key: String,
    name: Option<String>,
    size: Option<u64>,
    link: Option<String>,
    expires: Option<String>,
    downloads: Option<u64>,
    max_downloads: Option<u64>,
    auto_delete: Option<bool>,
    mime_type: Option<String>,
    created: Option<String>,
    modified: Option<String>,
}

/// The listing's file array is `nodes` in the published definition and
/// `files` in some clients; accept either.
#[derive(Debug, Deserialize)]
struct WireList {
    success: bool,
    nodes: Option<Vec<WireFile>>,
    files: Option<Vec<WireFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMe {
    success: bool,
    max_storage_bytes: Option<u64>,
    used_storage_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct WireSuccess {
    success: bool,
}

#[derive(Debug, Deserialize)]
struct WireUploaded {
    success: bool,
    #[serde(flatten)]
    file: WireFile,
}

impl FileIo {
    pub fn new(settings: FileIoSettings) -> RemoteResult<Self> {
        if settings.key.is_empty() {
            return Err(RemoteError::Fatal("the file.io API key is empty".into()));
        }
        if let Some(expires) = &settings.upload.expires {
            check_expires(expires).map_err(RemoteError::Fatal)?;
        }
        if settings.upload.max_downloads == Some(0) {
            return Err(RemoteError::Fatal(
                "file.io max_downloads must be at least 1".into(),
            ));
        }
        std::fs::create_dir_all(&settings.local_copies).map_err(|e| {
            RemoteError::Fatal(format!(
                "cannot create the local copies folder {}: {e}",
                settings.local_copies.display()
            ))
        })?;
        let api_url = http::checked_api_url("file.io", &settings.api_url)?;
        let headers = http::bearer_headers(&settings.key)?;
        let build_error =
            |e: reqwest::Error| RemoteError::Fatal(format!("cannot build the HTTP client: {e}"));
        let http = http::client_builder(&settings.http)
            .default_headers(headers.clone())
            .build()
            .map_err(build_error)?;
        let upload_http = http::upload_client_builder(&settings.http)
            .default_headers(headers)
            .build()
            .map_err(build_error)?;
        let public_http = http::client_builder(&settings.http)
            .build()
            .map_err(build_error)?;
        Ok(FileIo {
            http,
            upload_http,
            http_settings: settings.http.clone(),
            public_http,
            api_url,
            pacer: Pacer::new(settings.pacer),
            upload_options: settings.upload,
            local_copies: settings.local_copies,
            capabilities: Capabilities {
                folders: false,
                rename_file: false,
                move_file: false,
                rename_folder: false,
                move_folder: false,
                duplicate_names: true,
                empty_files: true,
                downloads_consume: true,
                files_expire: true,
                max_file_size: None,
                hash: None,
                max_name_bytes: NAME_MAX_BYTES,
            },
            fetching: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.api_url, path))
            .header(reqwest::header::ACCEPT, "application/json")
    }

    /// One request, paced and retried while retrying is harmless.
    async fn paced<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> RemoteResult<T> {
        self.pacer
            .run(CLASS_API, Retry::Idempotent, || self.call(build(), what))
            .await
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        request: RequestBuilder,
        what: &str,
    ) -> RemoteResult<T> {
        let response = request.send().await.map_err(|e| transport_error(what, e))?;
        let status = response.status();
        let retry_after = http::retry_after(response.headers());
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(what, e))?;
        if !status.is_success() {
            let wire: Option<WireError> = serde_json::from_slice(&body).ok();
            return Err(map_error(status, wire, retry_after, what));
        }
        serde_json::from_slice(&body).map_err(|e| {
            RemoteError::Transient(format!(
                "{what}: file.io answered {status} with an unexpected body ({e})"
            ))
        })
    }

    /// Where the copy of a file uploaded from this machine lives. Keys are
    /// `[A-Za-z0-9]`; anything else is not a file.io key.
    fn local_copy_path(&self, file: &FileId) -> Option<PathBuf> {
        if file.0.is_empty() || !file.0.chars().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        Some(self.local_copies.join(&file.0))
    }

    fn has_local_copy(&self, file: &FileId) -> bool {
        self.local_copy_path(file).is_some_and(|p| p.is_file())
    }

    async fn live_files(&self) -> RemoteResult<Vec<WireFile>> {
        let mut files: Vec<WireFile> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut offset = 0usize;
        // Bounded: an account never holds more pages than this.
        for _ in 0..10_000 {
            let list: WireList = self
                .paced("list files", || {
                    self.request(Method::GET, "/")
                        .query(&[("offset", offset), ("limit", PAGE_LIMIT)])
                })
                .await?;
            if !list.success {
                return Err(RemoteError::Transient(
                    "list files: file.io answered success=false".into(),
                ));
            }
            let page = list.nodes.or(list.files).unwrap_or_default();
            let count = page.len();
            for file in page {
                if seen.insert(file.key.clone()) {
                    files.push(file);
                }
            }
            if count < PAGE_LIMIT {
                break;
            }
            offset += count;
        }
        let now = Utc::now();
        files.retain(|f| is_live(f, now));
        Ok(files)
    }

    fn entry(&self, file: WireFile) -> FileEntry {
        if let Some(link) = &file.link {
            self.links
                .lock()
                .insert(FileId(file.key.clone()), link.clone());
        }
        entry_from_wire(file)
    }

    /// Removes local copies of files the service no longer has, so the
    /// folder does not grow without bound.
    ///
    /// A copy kept after `listed_from` (an upload that finished while the
    /// listing was read, in this process or another) is left alone: the
    /// listing may predate it.
    fn prune_local_copies(&self, live: &HashSet<&str>, listed_from: SystemTime) {
        let Ok(dir) = std::fs::read_dir(&self.local_copies) else {
            return;
        };
        let cutoff = listed_from - COPY_CLOCK_SLACK;
        for item in dir.flatten() {
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') || live.contains(name) {
                continue;
            }
            let kept_at = item.metadata().and_then(|m| m.modified());
            if kept_at.map_or(true, |t| t >= cutoff) {
                continue;
            }
            if let Err(e) = std::fs::remove_file(item.path()) {
                tracing::debug!("cannot remove the stale local copy {name}: {e}");
            }
        }
    }

    /// Spends one download of `file` and keeps its bytes as a local copy.
    async fn fetch_whole(&self, file: &FileId, destination: &Path) -> RemoteResult<()> {
        let url = self.link_of(file);
        let response = self
            .public_http
            .get(&url)
            .header(reqwest::header::ACCEPT, "*/*")
            .send()
            .await
            .map_err(|e| transport_error("download", e))?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = http::retry_after(response.headers());
            let body = response.bytes().await.unwrap_or_default();
            let wire: Option<WireError> = serde_json::from_slice(&body).ok();
            return Err(map_error(status, wire, retry_after, "download"));
        }
        let partial = destination.with_file_name(format!(".{}.part", file.0));
        let result = async {
            let mut out = tokio::fs::File::create(&partial).await?;
            let mut body = response.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| {
                    // The download has been counted already; asking again
                    // would spend another one, so do not retry silently.
                    std::io::Error::other(format!(
                        "the download of {file} was cut; file.io has counted it: {}",
                        e.without_url()
                    ))
                })?;
                out.write_all(&chunk).await?;
            }
            out.sync_all().await?;
            tokio::fs::rename(&partial, destination).await
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(RemoteError::Fatal(format!("download {file}: {e}")));
        }
        Ok(())
    }

    fn upload_form(
        &self,
        name: &str,
        body: reqwest::Body,
        size: u64,
    ) -> RemoteResult<reqwest::multipart::Form> {
        let part = reqwest::multipart::Part::stream_with_length(body, size)
            .file_name(name.to_string())
            .mime_str("application/octet-stream")
            .map_err(|e| RemoteError::Fatal(format!("upload: {e}")))?;
        let mut form = reqwest::multipart::Form::new().part("file", part);
        let options = &self.upload_options;
        if let Some(expires) = &options.expires {
            form = form.text("expires", expires.clone());
        }
        if let Some(max) = options.max_downloads {
            form = form.text("maxDownloads", max.to_string());
        }
        if let Some(auto_delete) = options.auto_delete {
            form = form.text("autoDelete", auto_delete.to_string());
        }
        Ok(form)
    }

    fn link_of(&self, file: &FileId) -> String {
        self.links
            .lock()
            .get(file)
            .cloned()
            .unwrap_or_else(|| format!("{}/{}", self.api_url, file.0))
    }

    /// Copies the upload source into the local copies folder, so the bytes
    /// sent are exactly the bytes kept.
    async fn stage(&self, source: UploadSource) -> RemoteResult<tempfile::TempPath> {
        let staged = tempfile::Builder::new()
            .prefix(".upload-")
            .tempfile_in(&self.local_copies)
            .map_err(|e| RemoteError::Fatal(format!("cannot stage the upload: {e}")))?
            .into_temp_path();
        let io = |e: std::io::Error| RemoteError::Fatal(format!("cannot stage the upload: {e}"));
        match source {
            UploadSource::Path(path) => {
                tokio::fs::copy(&path, &staged).await.map_err(io)?;
            }
            UploadSource::Reader { reader, size } => {
                let mut out = tokio::fs::File::create(&staged).await.map_err(io)?;
                let copied = tokio::io::copy(&mut reader.take(size), &mut out)
                    .await
                    .map_err(io)?;
                if copied != size {
                    return Err(RemoteError::Fatal(format!(
                        "the upload source ended after {copied} of {size} bytes"
                    )));
                }
                out.sync_all().await.map_err(io)?;
            }
        }
        Ok(staged)
    }
}

fn parse_time(text: Option<&str>) -> Option<DateTime<Utc>> {
    text.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Whether a listed file can still be downloaded.
fn is_live(file: &WireFile, now: DateTime<Utc>) -> bool {
    let expired = parse_time(file.expires.as_deref()).is_some_and(|t| t <= now);
    // Without autoDelete the service keeps a file past its download limit.
    let used_up = file.auto_delete != Some(false)
        && matches!((file.downloads, file.max_downloads), (Some(d), Some(m)) if d >= m);
    !expired && !used_up
}

fn entry_from_wire(file: WireFile) -> FileEntry {
    let modified = parse_time(file.modified.as_deref())
        .or_else(|| parse_time(file.created.as_deref()))
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    FileEntry {
        name: super::names::from_free_text(file.name.as_deref().unwrap_or(""), &file.key),
        id: FileId(file.key),
        size: file.size.unwrap_or(0),
        modified,
        checksum: None,
        mime: file.mime_type,
        share_link: file.link,
        expires: parse_time(file.expires.as_deref()),
    }
}

fn transport_error(what: &str, error: reqwest::Error) -> RemoteError {
    RemoteError::Transient(format!("{what}: {}", error.without_url()))
}

/// Maps a file.io error answer (`success,status,code,message,help,key`) to
/// the common error type, keyed off the HTTP status and `code`.
fn map_error(
    status: StatusCode,
    wire: Option<WireError>,
    retry_after: Option<Duration>,
    what: &str,
) -> RemoteError {
    let (code, message) = match wire {
        Some(w) => (w.code.unwrap_or_default(), w.message),
        None => (String::new(), None),
    };
    let detail = match (message, code.is_empty()) {
        (Some(m), false) => format!("{m} ({code})"),
        (Some(m), true) => m,
        (None, false) => code.clone(),
        (None, true) => format!("file.io answered {status}"),
    };
    let message = format!("{what}: {detail}");
    if code == "FILE_NOT_FOUND" {
        return RemoteError::NotFound(message);
    }
    if code == "TOO_MANY_REQUESTS" {
        return RemoteError::RateLimited {
            wait: retry_after,
            message,
        };
    }
    match status.as_u16() {
        401 => RemoteError::PermissionDenied(format!("{message} (check the file.io API key)")),
        403 => RemoteError::PermissionDenied(message),
        404 | 410 => RemoteError::NotFound(message),
        413 => RemoteError::TooLarge(message),
        429 => RemoteError::RateLimited {
            wait: retry_after,
            message,
        },
        408 | 500..=599 => RemoteError::Transient(message),
        _ => RemoteError::Fatal(message),
    }
}

fn no_folders(what: &str) -> RemoteError {
    RemoteError::Unsupported(format!("{what}: file.io has no folders"))
}

fn check_root(folder: &FolderId) -> RemoteResult<()> {
    if folder.0 == ROOT_ID {
        Ok(())
    } else {
        Err(RemoteError::NotFound(format!(
            "file.io has only its root folder, not {:?}",
            folder.0
        )))
    }
}

/// A stream over `offset .. offset + len` of a local file.
async fn local_range(path: &Path, offset: u64, len: u64) -> RemoteResult<ByteStream> {
    let io = |e: std::io::Error| RemoteError::Fatal(format!("read {}: {e}", path.display()));
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    let size = file.metadata().await.map_err(io)?.len();
    let start = offset.min(size);
    file.seek(SeekFrom::Start(start)).await.map_err(io)?;
    let reader = file.take(len.min(size - start));
    let stream = tokio_util::io::ReaderStream::new(reader)
        .map(|chunk| chunk.map_err(|e| RemoteError::Fatal(format!("read local copy: {e}"))));
    Ok(Box::pin(stream))
}

#[async_trait]
impl Remote for FileIo {
    fn service(&self) -> &'static str {
        "file.io"
    }

    fn pacer(&self) -> Option<&Pacer> {
        Some(&self.pacer)
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn check_name(&self, name: &str) -> RemoteResult<()> {
        check_file_name(name)
    }

    fn root(&self) -> FolderId {
        FolderId(ROOT_ID.to_string())
    }

    async fn list_folder(&self, folder: &FolderId) -> RemoteResult<Listing> {
        check_root(folder)?;
        let listed_from = SystemTime::now();
        let files = self.live_files().await?;
        self.prune_local_copies(&files.iter().map(|f| f.key.as_str()).collect(), listed_from);
        Ok(Listing {
            folders: Vec::new(),
            files: files.into_iter().map(|f| self.entry(f)).collect(),
        })
    }

    async fn stat_file(&self, file: &FileId) -> RemoteResult<FileEntry> {
        // There is no metadata-only request: GET /{key} would download it.
        let files = self.live_files().await?;
        files
            .into_iter()
            .find(|f| f.key == file.0)
            .map(|f| self.entry(f))
            .ok_or_else(|| RemoteError::NotFound(format!("file.io has no live file {file}")))
    }

    async fn create_folder(&self, _parent: &FolderId, name: &str) -> RemoteResult<FolderEntry> {
        Err(no_folders(&format!("create folder {name:?}")))
    }

    async fn remove_folder(&self, folder: &FolderId) -> RemoteResult<()> {
        check_root(folder)?;
        Err(no_folders("remove the root folder"))
    }

    async fn remove_file(&self, file: &FileId) -> RemoteResult<()> {
        let path = format!("/{}", file.0);
        let attempts = AtomicU32::new(0);
        let answer: WireSuccess = self
            .pacer
            .run(CLASS_API, Retry::Idempotent, || async {
                let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
                let request = self.request(Method::DELETE, &path);
                match self.call::<WireSuccess>(request, "delete file").await {
                    // An earlier attempt may have deleted it before failing
                    // to bring the answer back.
                    Err(RemoteError::NotFound(_)) if attempt > 1 => {
                        Ok(WireSuccess { success: true })
                    }
                    other => other,
                }
            })
            .await?;
        if !answer.success {
            return Err(RemoteError::Transient(
                "delete file: file.io answered success=false".into(),
            ));
        }
        if let Some(path) = self.local_copy_path(file) {
            let _ = tokio::fs::remove_file(path).await;
        }
        self.links.lock().remove(file);
        Ok(())
    }

    async fn rename_file(&self, _file: &FileId, _new_name: &str) -> RemoteResult<FileEntry> {
        Err(RemoteError::Unsupported(
            "file.io cannot rename files: a file keeps the name it was uploaded with".into(),
        ))
    }

    async fn move_file(
        &self,
        _file: &FileId,
        _destination: &FolderId,
        _new_name: Option<&str>,
    ) -> RemoteResult<FileEntry> {
        Err(RemoteError::Unsupported(
            "file.io cannot move or rename files".into(),
        ))
    }

    async fn rename_folder(&self, _folder: &FolderId, _new_name: &str) -> RemoteResult<()> {
        Err(no_folders("rename folder"))
    }

    async fn move_folder(&self, _folder: &FolderId, _destination: &FolderId) -> RemoteResult<()> {
        Err(no_folders("move folder"))
    }

    async fn upload(
        &self,
        parent: &FolderId,
        name: &str,
        source: UploadSource,
        progress: Option<ProgressFn>,
    ) -> RemoteResult<FileEntry> {
        check_root(parent)?;
        check_file_name(name)?;
        let staged = self.stage(source).await?;
        let staged_path = staged.to_path_buf();
        let uploaded: WireUploaded = self
            .pacer
            .run(CLASS_API, Retry::Idempotent, || async {
                let source = UploadSource::Path(staged_path.clone());
                let (body, size) = http::upload_body(source, progress.clone()).await?;
                let request = self
                    .upload_http
                    .post(format!("{}/", self.api_url))
                    .header(reqwest::header::ACCEPT, "application/json")
                    .timeout(http::upload_deadline(&self.http_settings, size))
                    .multipart(self.upload_form(name, body, size)?);
                self.call(request, "upload").await
            })
            .await?;
        if !uploaded.success {
            return Err(RemoteError::Transient(
                "upload: file.io answered success=false".into(),
            ));
        }
        let id = FileId(uploaded.file.key.clone());
        match self.local_copy_path(&id) {
            Some(path) => {
                // Stamped now, so a listing read during the upload does
                // not take the copy for a stale one.
                let kept = staged.persist(&path).map_err(|e| e.error).and_then(|_| {
                    std::fs::File::options()
                        .write(true)
                        .open(&path)?
                        .set_modified(SystemTime::now())
                });
                if let Err(e) = kept {
                    tracing::warn!("cannot keep the local copy of {name:?}: {e}");
                }
            }
            None => tracing::warn!("file.io returned an unusual key for {name:?}"),
        }
        Ok(self.entry(uploaded.file))
    }

    async fn direct_link(&self, file: &FileId) -> RemoteResult<DirectLink> {
        Ok(DirectLink {
            url: self.link_of(file),
            valid_until: None,
        })
    }

    fn invalidate_link(&self, file: &FileId) {
        self.links.lock().remove(file);
    }

    fn read_consumes_download(&self, file: &FileId) -> bool {
        !self.has_local_copy(file)
    }

    async fn download_range(
        &self,
        file: &FileId,
        offset: u64,
        len: u64,
    ) -> RemoteResult<ByteStream> {
        let path = self
            .local_copy_path(file)
            .ok_or_else(|| RemoteError::NotFound(format!("{file:?} is not a file.io key")))?;
        if !path.is_file() {
            let lock = self
                .fetching
                .lock()
                .entry(file.clone())
                .or_default()
                .clone();
            let _guard = lock.lock().await;
            if !path.is_file() {
                tracing::info!("downloading {file} from file.io: this spends one of its downloads");
                // A 429 was not counted, so it is retried; any other failure
                // may have been, so it is not.
                self.pacer
                    .run(CLASS_API, Retry::Idempotent, || async {
                        match self.fetch_whole(file, &path).await {
                            Err(RemoteError::Transient(m)) => Err(RemoteError::Fatal(format!(
                                "{m} (not retried: file.io may have counted the download)"
                            ))),
                            other => other,
                        }
                    })
                    .await?;
            }
        }
        local_range(&path, offset, len).await
    }

    async fn about(&self) -> RemoteResult<SpaceInfo> {
        let me: WireMe = self
            .paced("account", || self.request(Method::GET, "/me"))
            .await?;
        if !me.success {
            return Err(RemoteError::Transient(
                "account: file.io answered success=false".into(),
            ));
        }
        Ok(SpaceInfo {
            used: me.used_storage_bytes.unwrap_or(0),
            total: me.max_storage_bytes.filter(|&t| t > 0),
        })
    }
}

/// Checks a local name before it is uploaded. file.io documents no limit
/// on names, so the one local file systems apply holds (`NAME_MAX`).
fn check_file_name(name: &str) -> RemoteResult<()> {
    if name.is_empty() || name.contains(['/', '\0']) {
        return Err(RemoteError::InvalidName(format!("{name:?}")));
    }
    if name.len() > NAME_MAX_BYTES as usize {
        return Err(RemoteError::NameTooLong(format!(
            "{name:?} has more than {NAME_MAX_BYTES} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_values_are_checked() {
        for ok in [
            "1d",
            "2w",
            "1m",
            "1y",
            "30s",
            "6h",
            "15min",
            "2026-12-01T00:00:00Z",
            "2026-12-01",
        ] {
            assert!(check_expires(ok).is_ok(), "{ok}");
        }
        for bad in ["", "d", "0d", "1x", "soon", "-1d", "1.5d"] {
            assert!(check_expires(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_documented_upload_answer_parses() {
        let body = r#"{"success":true,"status":200,"id":"73098a90-3eb2-11ee-b46c-e3d7b7473aec","key":"wcZ1UtYXYQd3",
 "path":"/","nodeType":"file","name":"correct-a-cell.csv","title":null,"description":null,
 "size":83096491,"link":"https://file.io/wcZ1UtYXYQd3","private":false,
 "expires":"2023-09-02T17:04:25.005Z","downloads":0,"maxDownloads":1,"autoDelete":true,
 "planId":0,"screeningStatus":"pending","mimeType":"application/octet-stream",
 "created":"2023-08-19T17:04:25.005Z","modified":"2023-08-19T17:04:25.005Z"}"#;
        let uploaded: WireUploaded = serde_json::from_str(body).unwrap();
        assert!(uploaded.success);
        let entry = entry_from_wire(uploaded.file);
        assert_eq!(entry.id, FileId("wcZ1UtYXYQd3".into()));
        assert_eq!(entry.name, "correct-a-cell.csv");
        assert_eq!(entry.size, 83096491);
        assert_eq!(
            entry.share_link.as_deref(),
            Some("https://file.io/wcZ1UtYXYQd3")
        );
        assert_eq!(
            entry.expires.map(|t| t.to_rfc3339()),
            Some("2023-09-02T17:04:25.005+00:00".into())
        );
    }

    #[test]
    fn listings_accept_nodes_or_files() {
        let a: WireList =
            serde_json::from_str(r#"{"success":true,"nodes":[{"key":"abc"}],"count":1}"#).unwrap();
        assert_eq!(a.nodes.unwrap().len(), 1);
        let b: WireList =
            serde_json::from_str(r#"{"success":true,"files":[{"key":"abc"}],"count":1}"#).unwrap();
        assert_eq!(b.files.unwrap().len(), 1);
    }

    #[test]
    fn expired_and_used_up_files_are_not_live() {
        let now = Utc::now();
        let file = |expires: &str, downloads, max| WireFile {
            key: "k".into(),
            name: None,
            size: None,
            link: None,
            expires: Some(expires.into()),
            downloads: Some(downloads),
            max_downloads: Some(max),
            auto_delete: Some(true),
            mime_type: None,
            created: None,
            modified: None,
        };
        let later = (now + chrono::Duration::hours(1)).to_rfc3339();
        let earlier = (now - chrono::Duration::seconds(1)).to_rfc3339();
        assert!(is_live(&file(&later, 0, 1), now));
        assert!(!is_live(&file(&earlier, 0, 1), now));
        assert!(!is_live(&file(&later, 1, 1), now));
        assert!(is_live(&file(&later, 1, 3), now));
    }

    #[test]
    fn errors_map_to_the_common_kinds() {
        let wire = |code: &str| {
            Some(WireError {
                code: Some(code.into()),
                message: Some("m".into()),
            })
        };
        let e = map_error(StatusCode::NOT_FOUND, wire("FILE_NOT_FOUND"), None, "x");
        assert!(matches!(e, RemoteError::NotFound(_)));
        let e = map_error(
            StatusCode::TOO_MANY_REQUESTS,
            wire("TOO_MANY_REQUESTS"),
            Some(Duration::from_secs(2)),
            "x",
        );
        assert!(matches!(e, RemoteError::RateLimited { wait: Some(w), .. } if w.as_secs() == 2));
        assert!(matches!(
            map_error(StatusCode::UNAUTHORIZED, None, None, "x"),
            RemoteError::PermissionDenied(_)
        ));
        assert!(matches!(
            map_error(StatusCode::PAYLOAD_TOO_LARGE, None, None, "x"),
            RemoteError::TooLarge(_)
        ));
        assert!(map_error(StatusCode::BAD_GATEWAY, None, None, "x").is_retryable());
        assert!(
            !map_error(StatusCode::BAD_REQUEST, wire("INVALID_EXPIRES"), None, "x").is_retryable()
        );
    }
}
