//! fii.one backend (REST API v1, see `shared/api/fii-one.md`).
//!
//! What the service's public API allows shapes this backend:
//! - there is no folder API: the account is presented as one flat root that
//!   holds every file of the account (files the web UI filed into folders
//!   included, since the listing ignores folders);
//! - the listing is paginated newest first, at most 100 per page, and may
//!   change while we walk it;
//! - a file's `direct_link` is a public URL that never expires and is not
//!   changed by a rename, so reads go straight to it with `Range`;
//! - titles are free text and may repeat; the id tells files apart.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::http::{self, DownloadSettings, HttpSettings};
use super::linked_download::{self, DirectLinks};
use super::pacer::{Pacer, PacerConfig, Retry};
use super::secret::ApiKey;
use super::{
    ByteStream, Capabilities, DirectLink, FileEntry, FileId, FolderEntry, FolderId, Listing,
    ProgressFn, Remote, RemoteError, RemoteResult, SpaceInfo, UploadSource,
};

/// The real service's API root.
pub const DEFAULT_API_URL: &str = "https://fii.one/api/v1";

/// The server caps `limit` at 100; asking for the cap keeps page walks short.
const PAGE_LIMIT: u64 = 100;

/// Titles live in a `VarChar(255)` column; longer ones make the server fail.
const MAX_TITLE_CHARS: usize = 255;

const ROOT_ID: &str = "";

/// The account's plan, which sets the upload size limit and the hourly
/// request budget the developers page documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FiiOnePlan {
    Free,
    Pro,
}

impl FiiOnePlan {
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "free" => Some(FiiOnePlan::Free),
            "pro" => Some(FiiOnePlan::Pro),
            _ => None,
        }
    }

    /// Largest upload the plan accepts (developers page: 200 MB free, 2 GB pro).
    pub fn max_file_size(self) -> u64 {
        const MB: u64 = 1024 * 1024;
        match self {
            FiiOnePlan::Free => 200 * MB,
            FiiOnePlan::Pro => 2048 * MB,
        }
    }

    /// API requests per hour the plan allows (developers page).
    pub fn hourly_request_budget(self) -> u32 {
        match self {
            FiiOnePlan::Free => 100,
            FiiOnePlan::Pro => 1000,
        }
    }
}

/// Pacing that keeps any rolling hour within `per_hour` requests: a token
/// bucket of `burst` tokens refilled at `rate` lets through at most
/// `burst + rate * 3600` requests in an hour, so the two share the budget.
pub fn hourly_pacer(per_hour: u32) -> PacerConfig {
    let per_hour = per_hour.max(2);
    let burst = (per_hour / 10).clamp(1, 50);
    PacerConfig {
        rate_per_sec: f64::from(per_hour - burst) / 3600.0,
        burst,
        ..PacerConfig::default()
    }
}

/// How to reach one fii.one account.
#[derive(Clone, Debug)]
pub struct FiiOneSettings {
    /// API root, e.g. `https://fii.one/api/v1`.
    pub api_url: String,
    pub key: ApiKey,
    pub plan: FiiOnePlan,
    /// Default: the plan's hourly budget ([`hourly_pacer`]).
    pub pacer: PacerConfig,
    pub http: HttpSettings,
    pub download: DownloadSettings,
}

impl FiiOneSettings {
    /// The real service, free plan, paced to its hourly budget.
    pub fn new(key: ApiKey) -> Self {
        let plan = FiiOnePlan::Free;
        FiiOneSettings {
            api_url: DEFAULT_API_URL.to_string(),
            key,
            plan,
            pacer: hourly_pacer(plan.hourly_request_budget()),
            http: HttpSettings::default(),
            download: DownloadSettings::default(),
        }
    }
}

/// One fii.one account.
#[derive(Clone)]
pub struct FiiOne {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// Same identity as `http` but without the idle read timeout: sending a
    /// large file outlasts it. Each upload gets a deadline scaled to its size.
    upload_http: reqwest::Client,
    http_settings: HttpSettings,
    public_http: reqwest::Client,
    api_url: String,
    pacer: Pacer,
    download: DownloadSettings,
    capabilities: Capabilities,
    /// `direct_link` of every file seen so far; they never expire.
    direct_links: Mutex<HashMap<FileId, String>>,
}

impl fmt::Debug for FiiOne {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FiiOne")
            .field("api_url", &self.inner.api_url)
            .finish_non_exhaustive()
    }
}

/// Every request counts against the one hourly budget.
const CLASS_API: &str = "api";

// ---- wire format (client side, written from the document) ----

#[derive(Debug, Deserialize)]
struct Envelope<T> {
    success: bool,
    data: Option<T>,
    error: Option<WireError>,
    pagination: Option<Pagination>,
}

#[derive(Debug, Deserialize)]
struct WireError {
    message: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
struct Pagination {
    total: u64,
}

#[derive(Clone, Debug, Deserialize)]
struct WireFile {
    id: String,
    title: Option<String>,
    direct_link: Option<String>,
    url: Option<String>,
    share_url: Option<String>,
    size: Option<u64>,
    mime: Option<String>,
    created_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WirePatched {
    id: String,
}

#[derive(Debug, Deserialize)]
struct WireDeleted {
    id: String,
}

impl FiiOne {
    pub fn new(settings: FiiOneSettings) -> RemoteResult<Self> {
        if settings.key.is_empty() {
            return Err(RemoteError::Fatal("the fii.one API key is empty".into()));
        }
        let api_url = http::checked_api_url("fii.one", &settings.api_url)?;
        let headers = http::bearer_headers(&settings.key)?;
        let client = http::client_builder(&settings.http)
            .default_headers(headers.clone())
            .build()
            .map_err(|e| RemoteError::Fatal(format!("cannot build the HTTP client: {e}")))?;
        let upload_client = http::upload_client_builder(&settings.http)
            .default_headers(headers)
            .build()
            .map_err(|e| RemoteError::Fatal(format!("cannot build the HTTP client: {e}")))?;
        // The direct links are public CDN URLs: never send them the key.
        let public_client = http::client_builder(&settings.http)
            .build()
            .map_err(|e| RemoteError::Fatal(format!("cannot build the HTTP client: {e}")))?;
        Ok(FiiOne {
            inner: Arc::new(Inner {
                http: client,
                upload_http: upload_client,
                http_settings: settings.http.clone(),
                public_http: public_client,
                api_url,
                pacer: Pacer::new(settings.pacer),
                download: settings.download,
                capabilities: Capabilities {
                    folders: false,
                    rename_file: true,
                    move_file: false,
                    rename_folder: false,
                    move_folder: false,
                    duplicate_names: true,
                    empty_files: true,
                    downloads_consume: false,
                    files_expire: false,
                    max_file_size: Some(settings.plan.max_file_size()),
                    hash: None,
                    // Titles are up to 255 characters, so every name of up
                    // to 255 bytes fits.
                    max_name_bytes: MAX_TITLE_CHARS as u32,
                },
                direct_links: Mutex::new(HashMap::new()),
            }),
        })
    }
}

impl Inner {
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.api_url, path))
            .header(reqwest::header::ACCEPT, "application/json")
    }

    /// Sends one API request and unwraps the `success/data/error` envelope.
    async fn call<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        what: &str,
    ) -> RemoteResult<(T, Option<Pagination>)> {
        let response = request.send().await.map_err(|e| transport_error(what, e))?;
        let status = response.status();
        let retry_after = http::retry_after(response.headers());
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(what, e))?;
        let envelope: Option<Envelope<T>> = serde_json::from_slice(&body).ok();
        match envelope {
            Some(Envelope {
                success: true,
                data: Some(data),
                pagination,
                ..
            }) if status.is_success() => Ok((data, pagination)),
            Some(envelope) => {
                let message = envelope.error.and_then(|e| e.message);
                Err(map_error(status, message, retry_after, what))
            }
            None if status.is_success() => Err(RemoteError::Transient(format!(
                "{what}: fii.one answered {status} with a body that is not its JSON envelope"
            ))),
            None => Err(map_error(status, None, retry_after, what)),
        }
    }

    fn remember_link(&self, file: &WireFile) {
        if let Some(link) = file.direct_link.as_ref().or(file.url.as_ref()) {
            self.direct_links
                .lock()
                .insert(FileId(file.id.clone()), link.clone());
        }
    }

    fn entry(&self, file: WireFile) -> FileEntry {
        self.remember_link(&file);
        entry_from_wire(file)
    }

    /// One request, paced and retried while retrying is harmless.
    async fn paced<T: DeserializeOwned>(
        &self,
        what: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> RemoteResult<(T, Option<Pagination>)> {
        self.pacer
            .run(CLASS_API, Retry::Idempotent, || self.call(build(), what))
            .await
    }

    async fn fetch_page(&self, page: u64) -> RemoteResult<Page> {
        let (files, pagination): (Vec<WireFile>, _) = self
            .paced("list files", || {
                self.request(Method::GET, "/files")
                    .query(&[("page", page), ("limit", PAGE_LIMIT)])
            })
            .await?;
        let total = match pagination {
            Some(p) => p.total,
            None => {
                return Err(RemoteError::Transient(
                    "list files: fii.one answered without pagination".into(),
                ))
            }
        };
        Ok(Page { files, total })
    }

    async fn all_files(&self) -> RemoteResult<Vec<WireFile>> {
        walk_pages(PAGE_LIMIT, |page| self.fetch_page(page)).await
    }
}

/// One page of the listing as fetched at one moment.
struct Page {
    files: Vec<WireFile>,
    total: u64,
}

/// Walks a newest-first paginated listing that may change between page
/// fetches, returning each file once (deduplicated by id, latest data wins).
///
/// New uploads land on page 1 and push older files down, which only repeats
/// files (harmless after dedup). Deletions pull older files up, so a file can
/// slip from page k+1 onto page k between the two fetches and be missed. A
/// file's position can rise by at most the drop of `total` between two
/// fetches, so whenever `total` falls we step back far enough to re-read the
/// positions those files can now occupy.
async fn walk_pages<F, Fut>(limit: u64, mut fetch: F) -> RemoteResult<Vec<WireFile>>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = RemoteResult<Page>>,
{
    let mut order: Vec<String> = Vec::new();
    let mut seen: HashMap<String, WireFile> = HashMap::new();
    // totals[i] = `total` seen when page i+1 was last fetched.
    let mut totals: Vec<u64> = Vec::new();
    let mut page: u64 = 1;
    let mut fetches: u64 = 0;
    let mut budget: Option<u64> = None;
    loop {
        let fetched = fetch(page).await?;
        fetches += 1;
        let count = fetched.files.len() as u64;
        for file in fetched.files {
            if !seen.contains_key(&file.id) {
                order.push(file.id.clone());
            }
            seen.insert(file.id.clone(), file);
        }
        let budget = *budget.get_or_insert_with(|| 3 * fetched.total.div_ceil(limit) + 10);
        totals.truncate(page as usize - 1);
        totals.push(fetched.total);
        if page > 1 {
            let before = totals[page as usize - 2];
            if fetched.total < before {
                if fetches >= budget {
                    tracing::warn!(
                        "fii.one listing kept shrinking while it was read; it may miss files"
                    );
                    break;
                }
                let drop = before - fetched.total;
                page = page.saturating_sub(drop.div_ceil(limit)).max(1);
                continue;
            }
        }
        if count < limit || page * limit >= fetched.total || fetches >= budget {
            if fetches >= budget && page * limit < fetched.total {
                tracing::warn!("fii.one listing changed too often while it was read");
            }
            break;
        }
        page += 1;
    }
    Ok(order
        .into_iter()
        .filter_map(|id| seen.remove(&id))
        .collect())
}

fn parse_time(text: Option<&str>) -> DateTime<Utc> {
    text.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

fn entry_from_wire(file: WireFile) -> FileEntry {
    let name = super::names::from_free_text(file.title.as_deref().unwrap_or(""), &file.id);
    FileEntry {
        id: FileId(file.id),
        name,
        size: file.size.unwrap_or(0),
        modified: parse_time(file.created_at.as_deref()),
        checksum: None,
        mime: file.mime,
        share_link: file.share_url,
        expires: None,
    }
}

/// Checks a local name before it becomes a title.
fn check_title(name: &str) -> RemoteResult<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(RemoteError::InvalidName(format!("{name:?}")));
    }
    if name.chars().count() > MAX_TITLE_CHARS {
        return Err(RemoteError::NameTooLong(format!(
            "fii.one titles are limited to {MAX_TITLE_CHARS} characters"
        )));
    }
    Ok(())
}

/// The server stores ids in a `uuid` column and answers 500 for anything
/// else; a malformed id can never name a file, so say so without asking.
fn check_id(file: &FileId) -> RemoteResult<()> {
    uuid::Uuid::parse_str(&file.0)
        .map(|_| ())
        .map_err(|_| RemoteError::NotFound(format!("no fii.one file has the id {:?}", file.0)))
}

fn transport_error(what: &str, error: reqwest::Error) -> RemoteError {
    // reqwest's Display includes the URL; our URLs never carry the key.
    RemoteError::Transient(format!("{what}: {}", error.without_url()))
}

/// Maps a fii.one error answer to the common error type.
fn map_error(
    status: StatusCode,
    message: Option<String>,
    retry_after: Option<Duration>,
    what: &str,
) -> RemoteError {
    let message = format!(
        "{what}: {}",
        message.unwrap_or_else(|| format!("fii.one answered {status}"))
    );
    match status.as_u16() {
        401 => RemoteError::PermissionDenied(format!("{message} (check the fii.one API key)")),
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

fn not_supported(what: &str) -> RemoteError {
    RemoteError::Unsupported(format!(
        "{what}: fii.one's public API has no folders (the account is one flat folder)"
    ))
}

fn check_root(folder: &FolderId) -> RemoteResult<()> {
    if folder.0 == ROOT_ID {
        Ok(())
    } else {
        Err(RemoteError::NotFound(format!(
            "fii.one has only its root folder, not {:?}",
            folder.0
        )))
    }
}

impl Inner {
    async fn stat(&self, file: &FileId) -> RemoteResult<FileEntry> {
        check_id(file)?;
        let path = format!("/files/{}", file.0);
        let (data, _): (WireFile, _) = self
            .paced("get file", || self.request(Method::GET, &path))
            .await?;
        Ok(self.entry(data))
    }

    async fn link_url(&self, file: &FileId) -> RemoteResult<String> {
        let known = self.direct_links.lock().get(file).cloned();
        if let Some(url) = known {
            return Ok(url);
        }
        self.stat(file).await?;
        self.direct_links.lock().get(file).cloned().ok_or_else(|| {
            RemoteError::Transient(format!("fii.one gave no direct_link for {file}"))
        })
    }

    async fn upload_once(
        &self,
        name: &str,
        body: reqwest::Body,
        size: u64,
    ) -> RemoteResult<FileEntry> {
        let part = reqwest::multipart::Part::stream_with_length(body, size)
            .file_name(name.to_string())
            .mime_str("application/octet-stream")
            .map_err(|e| RemoteError::Fatal(format!("upload: {e}")))?;
        // The `name` field carries the exact title: multipart parsers do not
        // all round-trip part file names.
        let form = reqwest::multipart::Form::new()
            .text("name", name.to_string())
            .part("file", part);
        let request = self
            .upload_http
            .post(format!("{}/upload", self.api_url))
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(http::upload_deadline(&self.http_settings, size))
            .multipart(form);
        let (data, _): (WireFile, _) = self.call(request, "upload").await?;
        Ok(self.entry(data))
    }
}

/// fii.one's links never expire; a refused one means the file is gone or
/// renamed away, so it is asked from the API again rather than trusted.
#[async_trait]
impl DirectLinks for Inner {
    async fn link(&self, file: &FileId) -> RemoteResult<DirectLink> {
        Ok(DirectLink {
            url: self.link_url(file).await?,
            valid_until: None,
        })
    }

    fn forget_link(&self, file: &FileId) {
        self.direct_links.lock().remove(file);
    }
}

#[async_trait]
impl Remote for FiiOne {
    fn service(&self) -> &'static str {
        "fii.one"
    }

    fn pacer(&self) -> Option<&Pacer> {
        Some(&self.inner.pacer)
    }

    fn capabilities(&self) -> &Capabilities {
        &self.inner.capabilities
    }

    fn check_name(&self, name: &str) -> RemoteResult<()> {
        check_title(name)
    }

    fn root(&self) -> FolderId {
        FolderId(ROOT_ID.to_string())
    }

    async fn list_folder(&self, folder: &FolderId) -> RemoteResult<Listing> {
        check_root(folder)?;
        let files = self.inner.all_files().await?;
        Ok(Listing {
            folders: Vec::new(),
            files: files.into_iter().map(|f| self.inner.entry(f)).collect(),
        })
    }

    async fn stat_file(&self, file: &FileId) -> RemoteResult<FileEntry> {
        self.inner.stat(file).await
    }

    async fn create_folder(&self, _parent: &FolderId, name: &str) -> RemoteResult<FolderEntry> {
        Err(not_supported(&format!("create folder {name:?}")))
    }

    async fn remove_folder(&self, folder: &FolderId) -> RemoteResult<()> {
        check_root(folder)?;
        Err(not_supported("remove the root folder"))
    }

    async fn remove_file(&self, file: &FileId) -> RemoteResult<()> {
        check_id(file)?;
        let inner = &self.inner;
        let path = format!("/files/{}", file.0);
        let attempts = AtomicU32::new(0);
        let result = inner
            .pacer
            .run(CLASS_API, Retry::Idempotent, || async {
                let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
                let request = inner.request(Method::DELETE, &path);
                match inner.call::<WireDeleted>(request, "delete file").await {
                    // An earlier attempt may have deleted it before failing
                    // to bring the answer back.
                    Err(RemoteError::NotFound(_)) if attempt > 1 => Ok(None),
                    other => other.map(|(deleted, _)| Some(deleted)),
                }
            })
            .await?;
        if let Some(deleted) = result {
            if deleted.id != file.0 {
                return Err(RemoteError::Fatal(format!(
                    "delete file: fii.one confirmed the deletion of {} instead of {}",
                    deleted.id, file.0
                )));
            }
        }
        inner.direct_links.lock().remove(file);
        Ok(())
    }

    async fn rename_file(&self, file: &FileId, new_name: &str) -> RemoteResult<FileEntry> {
        check_id(file)?;
        check_title(new_name)?;
        let path = format!("/files/{}", file.0);
        let body = serde_json::json!({ "name": new_name });
        let (patched, _): (WirePatched, _) = self
            .inner
            .paced("rename file", || {
                self.inner.request(Method::PATCH, &path).json(&body)
            })
            .await?;
        // The PATCH answer carries only id/title/folder_id; the rest comes
        // from the file itself.
        self.inner.stat(&FileId(patched.id)).await
    }

    async fn move_file(
        &self,
        file: &FileId,
        destination: &FolderId,
        new_name: Option<&str>,
    ) -> RemoteResult<FileEntry> {
        // Everything is in the one root, so a "move" within it is a rename.
        check_root(destination)?;
        match new_name {
            Some(name) => self.rename_file(file, name).await,
            None => self.inner.stat(file).await,
        }
    }

    async fn rename_folder(&self, _folder: &FolderId, _new_name: &str) -> RemoteResult<()> {
        Err(not_supported("rename folder"))
    }

    async fn move_folder(&self, _folder: &FolderId, _destination: &FolderId) -> RemoteResult<()> {
        Err(not_supported("move folder"))
    }

    async fn upload(
        &self,
        parent: &FolderId,
        name: &str,
        source: UploadSource,
        progress: Option<ProgressFn>,
    ) -> RemoteResult<FileEntry> {
        check_root(parent)?;
        check_title(name)?;
        let inner = &self.inner;
        let size = match &source {
            UploadSource::Path(path) => tokio::fs::metadata(path)
                .await
                .map_err(|e| RemoteError::Fatal(format!("cannot read {}: {e}", path.display())))?
                .len(),
            UploadSource::Reader { size, .. } => *size,
        };
        if let Some(max) = inner.capabilities.max_file_size {
            if size > max {
                return Err(RemoteError::TooLarge(format!(
                    "{name:?} is {size} bytes; the fii.one plan accepts at most {max}"
                )));
            }
        }
        match source {
            UploadSource::Path(path) => {
                inner
                    .pacer
                    .run(CLASS_API, Retry::Idempotent, || async {
                        let source = UploadSource::Path(path.clone());
                        let (body, size) = http::upload_body(source, progress.clone()).await?;
                        inner.upload_once(name, body, size).await
                    })
                    .await
            }
            reader => {
                let (body, size) = http::upload_body(reader, progress).await?;
                let body = Mutex::new(Some(body));
                inner
                    .pacer
                    .run(CLASS_API, Retry::Once, || async {
                        let body = body.lock().take().ok_or_else(|| {
                            RemoteError::Fatal("a streamed upload cannot be sent twice".into())
                        })?;
                        inner.upload_once(name, body, size).await
                    })
                    .await
            }
        }
    }

    async fn direct_link(&self, file: &FileId) -> RemoteResult<DirectLink> {
        DirectLinks::link(&*self.inner, file).await
    }

    fn invalidate_link(&self, file: &FileId) {
        self.inner.forget_link(file);
    }

    async fn download_range(
        &self,
        file: &FileId,
        offset: u64,
        len: u64,
    ) -> RemoteResult<ByteStream> {
        linked_download::download_range(
            self.inner.clone(),
            self.inner.public_http.clone(),
            file,
            offset,
            len,
            self.inner.download.clone(),
        )
        .await
    }

    async fn about(&self) -> RemoteResult<SpaceInfo> {
        // The API reports no storage figures; the used space is what the
        // listing adds up to.
        let files = self.inner.all_files().await?;
        Ok(SpaceInfo {
            used: files.iter().filter_map(|f| f.size).sum(),
            total: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn wire(id: &str) -> WireFile {
        WireFile {
            id: id.to_string(),
            title: Some(format!("{id}.bin")),
            direct_link: None,
            url: None,
            share_url: None,
            size: Some(1),
            mime: None,
            created_at: None,
        }
    }

    /// A newest-first list that a test can change between page fetches.
    struct Shelf {
        files: Vec<String>,
        next: u64,
    }

    impl Shelf {
        fn new(count: u64) -> Self {
            let mut shelf = Shelf {
                files: Vec::new(),
                next: 0,
            };
            for _ in 0..count {
                shelf.add();
            }
            shelf
        }
        fn add(&mut self) -> String {
            let id = format!("f{:05}", self.next);
            self.next += 1;
            self.files.insert(0, id.clone());
            id
        }
        fn page(&self, page: u64, limit: u64) -> Page {
            let start = ((page - 1) * limit) as usize;
            let files = self
                .files
                .iter()
                .skip(start)
                .take(limit as usize)
                .map(|id| wire(id))
                .collect();
            Page {
                files,
                total: self.files.len() as u64,
            }
        }
    }

    async fn walk_with_churn(
        count: u64,
        limit: u64,
        churn: impl Fn(&mut Shelf, u64) + Send + Sync,
    ) -> (Vec<String>, Vec<String>, Vec<String>) {
        let shelf = Arc::new(Mutex::new(Shelf::new(count)));
        let original: Vec<String> = shelf.lock().files.clone();
        let fetches = Arc::new(Mutex::new(0u64));
        let listed = walk_pages(limit, |page| {
            let shelf = shelf.clone();
            let fetches = fetches.clone();
            let churn = &churn;
            async move {
                let mut shelf = shelf.lock();
                let result = shelf.page(page, limit);
                let n = {
                    let mut f = fetches.lock();
                    *f += 1;
                    *f
                };
                churn(&mut shelf, n);
                Ok(result)
            }
        })
        .await
        .unwrap();
        let now = shelf.lock().files.clone();
        (
            original,
            now,
            listed.into_iter().map(|f| f.id).collect::<Vec<_>>(),
        )
    }

    fn assert_complete(original: &[String], now: &[String], listed: &[String]) {
        let mut unique = listed.to_vec();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), listed.len(), "a file was listed twice");
        for id in original.iter().filter(|id| now.contains(id)) {
            assert!(
                listed.contains(id),
                "{id} existed throughout but was missed"
            );
        }
    }

    #[tokio::test]
    async fn walk_without_churn_lists_everything_once() {
        let (original, now, listed) = walk_with_churn(250, 100, |_, _| {}).await;
        assert_eq!(listed, original);
        assert_complete(&original, &now, &listed);
    }

    #[tokio::test]
    async fn walk_survives_uploads_between_pages() {
        let (original, now, listed) = walk_with_churn(250, 100, |shelf, _| {
            for _ in 0..7 {
                shelf.add();
            }
        })
        .await;
        assert_complete(&original, &now, &listed);
    }

    #[tokio::test]
    async fn walk_survives_deletes_between_pages() {
        // Deleting newer files pulls older ones up across the page boundary.
        let (original, now, listed) = walk_with_churn(250, 100, |shelf, n| {
            if n <= 3 {
                for _ in 0..5 {
                    shelf.files.remove(0);
                }
            }
        })
        .await;
        assert_complete(&original, &now, &listed);
    }

    #[tokio::test]
    async fn walk_survives_mixed_churn() {
        let (original, now, listed) = walk_with_churn(250, 100, |shelf, n| {
            if n <= 6 {
                shelf.add();
                shelf.add();
                let victim = 10 + (n as usize * 13) % 50;
                shelf.files.remove(victim);
                shelf.files.remove(victim);
                shelf.files.remove(victim);
            }
        })
        .await;
        assert_complete(&original, &now, &listed);
    }

    #[tokio::test]
    async fn walk_survives_a_large_drop() {
        // More deletions than a page between two fetches.
        let (original, now, listed) = walk_with_churn(250, 100, |shelf, n| {
            if n == 2 {
                shelf.files.drain(0..120);
            }
        })
        .await;
        assert_complete(&original, &now, &listed);
    }

    #[tokio::test]
    async fn walk_of_an_empty_account_asks_once() {
        let (_, _, listed) = walk_with_churn(0, 100, |_, _| {}).await;
        assert!(listed.is_empty());
    }

    #[test]
    fn errors_map_to_the_common_kinds() {
        let e = map_error(
            StatusCode::FORBIDDEN,
            Some("No delete permission".into()),
            None,
            "x",
        );
        assert!(
            matches!(e, RemoteError::PermissionDenied(ref m) if m.contains("No delete permission"))
        );
        let e = map_error(StatusCode::UNAUTHORIZED, None, None, "x");
        assert!(matches!(e, RemoteError::PermissionDenied(_)));
        let e = map_error(
            StatusCode::NOT_FOUND,
            Some("File not found".into()),
            None,
            "x",
        );
        assert!(matches!(e, RemoteError::NotFound(_)));
        let e = map_error(StatusCode::PAYLOAD_TOO_LARGE, None, None, "x");
        assert!(matches!(e, RemoteError::TooLarge(_)));
        let e = map_error(
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many requests".into()),
            Some(Duration::from_secs(3)),
            "x",
        );
        assert!(
            matches!(e, RemoteError::RateLimited { wait: Some(w), .. } if w == Duration::from_secs(3))
        );
        assert!(map_error(StatusCode::INTERNAL_SERVER_ERROR, None, None, "x").is_retryable());
        assert!(!map_error(StatusCode::BAD_REQUEST, None, None, "x").is_retryable());
    }

    #[test]
    fn titles_are_checked_before_sending() {
        assert!(check_title("ok.txt").is_ok());
        assert!(check_title("").is_err());
        assert!(check_title(&"é".repeat(255)).is_ok());
        assert!(check_title(&"é".repeat(256)).is_err());
        assert!(check_id(&FileId("not-a-uuid".into())).is_err());
        assert!(check_id(&FileId("3f1c2b9e-8a7d-4e51-9c0a-2b6f5d4e3a21".into())).is_ok());
    }

    #[test]
    fn wire_file_parses_the_documented_example() {
        let body = r#"{"success":true,"data":{"id":"3f1c2b9e-8a7d-4e51-9c0a-2b6f5d4e3a21","title":"my-image.jpg",
 "url":"https://cdn.fii.one/u/a.jpg","direct_link":"https://cdn.fii.one/u/a.jpg",
 "share_url":"https://fii.one/s/aB3xKp","size":245760,"mime":"image/jpeg",
 "created_at":"2026-05-03T10:00:00.000Z"}}"#;
        let envelope: Envelope<WireFile> = serde_json::from_str(body).unwrap();
        let entry = entry_from_wire(envelope.data.unwrap());
        assert_eq!(entry.name, "my-image.jpg");
        assert_eq!(entry.size, 245760);
        assert_eq!(
            entry.share_link.as_deref(),
            Some("https://fii.one/s/aB3xKp")
        );
        assert_eq!(entry.modified.to_rfc3339(), "2026-05-03T10:00:00+00:00");
    }
}
