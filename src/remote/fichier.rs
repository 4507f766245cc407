//! The 1fichier.com backend (API v1), written from `shared/api/1fichier.md`.
//!
//! Wire rules this client follows: every call is a JSON `POST` to
//! `<api_url>/<group>/<action>.cgi` with `Authorization: Bearer <key>` and
//! `Content-Type: application/json` (also on the body-less
//! `get_upload_server`); answers use lower-case keys; numbers may arrive as
//! strings and are accepted either way; dates are French local time; errors
//! are `{"status":"KO","message":"... #NNN"}` and are classified from the code
//! and the text. Files are identified by their link URL, folders by integer
//! ids (root 0). Uploads go to the bare host returned by `get_upload_server`,
//! reached with the scheme of `api_url`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Europe::Paris;
use parking_lot::Mutex;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::http::{self, DownloadSettings, HttpSettings};
use super::linked_download::{self, DirectLinks};
use super::names;
use super::pacer::{ClassLimit, Pacer, PacerConfig, Retry};
use super::secret::ApiKey;
use super::{
    ByteStream, Capabilities, DirectLink, FileEntry, FileId, FolderEntry, FolderId, HashKind,
    Listing, ProgressFn, Remote, RemoteError, RemoteResult, SpaceInfo, UploadSource,
};

/// The real service's API base.
pub const DEFAULT_API_URL: &str = "https://api.1fichier.com/v1";

/// Largest file 1fichier accepts (300 GB, §4.13).
const MAX_FILE_SIZE: u64 = 300_000_000_000;
/// Longest folder name the service accepts (§4.3), applied to files too.
const MAX_NAME_CHARS: usize = 250;
/// Every local name of at most this many bytes fits in `MAX_NAME_CHARS`
/// once encoded: the encoding turns each ASCII byte into one character and
/// each other character (two bytes or more in UTF-8) into at most two, so
/// a name never has more characters after encoding than it has bytes.
/// Longer names made of multi-byte characters can still fit and are
/// accepted (`check_name` counts characters, as the service does).
const MAX_NAME_BYTES: u32 = MAX_NAME_CHARS as u32;
/// Pacer class of `user/info.cgi`, limited far below the overall rate.
const CLASS_ACCOUNT: &str = "1fichier:user/info";
const CLASS_API: &str = "1fichier:api";

/// Settings of one 1fichier remote.
#[derive(Clone, Debug)]
pub struct FichierOptions {
    /// API base, e.g. `https://api.1fichier.com/v1`.
    pub api_url: String,
    pub key: ApiKey,
    pub pacer: PacerConfig,
    pub http: HttpSettings,
    pub download: DownloadSettings,
    /// Wait after a `Flood detected` (#374/#412) answer; the document says 30 s.
    pub flood_wait: Duration,
    /// Wait after an account-level flood lock (`User Locked`, #38 on user/info).
    pub account_flood_wait: Duration,
    /// How long a direct-download link stays valid (5 minutes).
    pub link_ttl: Duration,
    /// A cached link is replaced this long before it expires.
    pub link_margin: Duration,
    /// `user/info` is asked at most once per this interval; `about()` answers
    /// from the last result in between.
    pub account_info_interval: Duration,
}

impl FichierOptions {
    pub fn new(key: ApiKey) -> Self {
        FichierOptions {
            api_url: DEFAULT_API_URL.to_string(),
            key,
            pacer: PacerConfig::default(),
            http: HttpSettings::default(),
            download: DownloadSettings::default(),
            flood_wait: Duration::from_secs(30),
            account_flood_wait: Duration::from_secs(300),
            link_ttl: Duration::from_secs(300),
            link_margin: Duration::from_secs(30),
            account_info_interval: Duration::from_secs(300),
        }
    }
}

/// Where one upload goes: the node's base URL and the upload id.
struct UploadNode {
    base: String,
    id: String,
}

/// A 1fichier account.
#[derive(Clone)]
pub struct Fichier {
    inner: Arc<Inner>,
}

struct CachedLink {
    url: String,
    valid_until: Instant,
}

struct Inner {
    api_url: String,
    /// `http` or `https`, copied from `api_url` for the upload node.
    scheme: String,
    options: FichierOptions,
    client: reqwest::Client,
    /// For upload.cgi: no idle timeout while the file is being sent.
    upload_client: reqwest::Client,
    pacer: Pacer,
    links: Mutex<HashMap<FileId, CachedLink>>,
    /// One token request at a time per file (see `direct_link`).
    link_gates: Mutex<HashMap<FileId, Arc<tokio::sync::Mutex<()>>>>,
    account_info: Mutex<Option<(Instant, SpaceInfo)>>,
    capabilities: Capabilities,
}

impl std::fmt::Debug for Fichier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fichier")
            .field("api_url", &self.inner.api_url)
            .finish_non_exhaustive()
    }
}

impl Fichier {
    pub fn new(options: FichierOptions) -> RemoteResult<Self> {
        let api_url = http::checked_api_url("1fichier", &options.api_url)?;
        // The upload node is a bare host: it is reached with the API's scheme.
        let scheme = if api_url
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("https:"))
        {
            "https"
        } else {
            "http"
        }
        .to_string();
        if options.key.is_empty() {
            return Err(RemoteError::Fatal("the API key is empty".into()));
        }
        // Sent client-wide like the reference client does: the API, the
        // upload node and the download servers all accept it.
        let headers = http::bearer_headers(&options.key)?;
        // upload.cgi answers 302 to end.pl, which must be fetched with the
        // `JSON: 1` header to give JSON: redirects stop there.
        let redirects = || {
            reqwest::redirect::Policy::custom(|attempt| {
                if attempt.url().path().ends_with("/end.pl") || attempt.previous().len() >= 10 {
                    attempt.stop()
                } else {
                    attempt.follow()
                }
            })
        };
        let build_error =
            |e: reqwest::Error| RemoteError::Fatal(format!("cannot build the HTTP client: {e}"));
        let client = http::client_builder(&options.http)
            .default_headers(headers.clone())
            .redirect(redirects())
            .build()
            .map_err(build_error)?;
        // Upload nodes are other hosts than the API, so their own pool costs
        // no connection reuse.
        let upload_client = http::upload_client_builder(&options.http)
            .default_headers(headers)
            .redirect(redirects())
            .build()
            .map_err(build_error)?;
        let pacer = Pacer::new(options.pacer.clone()).with_class_limit(
            CLASS_ACCOUNT,
            ClassLimit::once_per(options.account_info_interval),
        );
        let capabilities = Capabilities {
            folders: true,
            rename_file: true,
            move_file: true,
            rename_folder: true,
            move_folder: true,
            duplicate_names: true,
            empty_files: false,
            downloads_consume: false,
            files_expire: false,
            max_file_size: Some(MAX_FILE_SIZE),
            hash: Some(HashKind::Whirlpool),
            max_name_bytes: MAX_NAME_BYTES,
        };
        Ok(Fichier {
            inner: Arc::new(Inner {
                api_url,
                scheme,
                options,
                client,
                upload_client,
                pacer,
                links: Mutex::new(HashMap::new()),
                link_gates: Mutex::new(HashMap::new()),
                account_info: Mutex::new(None),
                capabilities,
            }),
        })
    }
}

// ---------------------------------------------------------------------------
// Wire helpers

/// Converts a 1fichier date (French local time, `YYYY-MM-DD HH:MM:SS`) to
/// UTC. In the autumn hour that occurs twice the earlier (summer time) one
/// is taken; a time inside the spring gap is read with the offset in force
/// before the gap (02:30 on the change day is 01:30 UTC).
pub fn parse_french_time(text: &str) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S").ok()?;
    match Paris.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        chrono::LocalResult::Ambiguous(earlier, _) => Some(earlier.with_timezone(&Utc)),
        chrono::LocalResult::None => {
            let before_gap = Paris
                .from_local_datetime(&(naive - chrono::Duration::hours(1)))
                .earliest()?;
            Some(before_gap.with_timezone(&Utc) + chrono::Duration::hours(1))
        }
    }
}

/// An unsigned number sent either as a JSON number or as a string.
fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A signed integer id sent either as a number or as a string.
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

/// The trailing `#NNN` of an error message.
fn error_code(message: &str) -> Option<u32> {
    let hash = message.rfind('#')?;
    let digits: String = message[hash + 1..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    if digits.is_empty() || digits.len() > 4 {
        return None;
    }
    digits.parse().ok()
}

/// Classifies a KO answer of the API (`status` is the HTTP status).
fn classify(status: StatusCode, message: &str, options: &FichierOptions) -> RemoteError {
    let code = error_code(message);
    let lower = message.to_ascii_lowercase();
    let msg = message.to_string();
    if lower.contains("flood") || matches!(code, Some(374 | 412 | 38)) {
        let account_lock =
            code == Some(38) || lower.contains("user locked") || lower.contains("user apk locked");
        let wait = if account_lock {
            options.account_flood_wait
        } else {
            options.flood_wait
        };
        return RemoteError::RateLimited {
            wait: Some(wait),
            message: msg,
        };
    }
    match code {
        Some(93) => {
            return RemoteError::Fatal(format!(
            "{msg} (the API key is unknown, or the account is locked until its password is reset)"
        ))
        }
        Some(186) | Some(200) => return RemoteError::Fatal(msg),
        Some(469) => return RemoteError::NotFound(msg),
        Some(631) | Some(620) => return RemoteError::PermissionDenied(msg),
        Some(887) => {
            return RemoteError::RateLimited {
                wait: Some(options.account_flood_wait),
                message: msg,
            }
        }
        _ => {}
    }
    if lower.contains("not authenticated") {
        RemoteError::Fatal(msg)
    } else if lower.contains("ip locked") {
        RemoteError::RateLimited {
            wait: Some(Duration::from_secs(3600)),
            message: msg,
        }
    } else if lower.contains("not found") || lower.contains("no such") {
        RemoteError::NotFound(msg)
    } else if lower.contains("not empty") {
        RemoteError::NotEmpty(msg)
    } else if lower.contains("already exist") {
        RemoteError::AlreadyExists(msg)
    } else if lower.contains("quota") || lower.contains("not enough space") {
        RemoteError::QuotaExceeded(msg)
    } else if lower.contains("too large") || lower.contains("too big") {
        RemoteError::TooLarge(msg)
    } else if lower.contains("empty file") {
        RemoteError::EmptyFile(msg)
    } else if lower.contains("name") && (lower.contains("invalid") || lower.contains("forbidden")) {
        RemoteError::InvalidName(msg)
    } else if lower.contains("not allowed")
        || lower.contains("forbidden")
        || lower.contains("denied")
    {
        RemoteError::PermissionDenied(msg)
    } else {
        match status.as_u16() {
            404 | 410 => RemoteError::NotFound(msg),
            429 => RemoteError::RateLimited {
                wait: None,
                message: msg,
            },
            500..=599 => RemoteError::Transient(msg),
            _ => RemoteError::Fatal(msg),
        }
    }
}

fn parse_folder_id(folder: &FolderId) -> RemoteResult<i64> {
    folder
        .0
        .parse::<i64>()
        .ok()
        .filter(|id| *id >= 0)
        .ok_or_else(|| RemoteError::NotFound(format!("no folder with id {folder}")))
}

/// Checks a local name before it is sent.
fn check_name(name: &str) -> RemoteResult<String> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(RemoteError::InvalidName(format!(
            "{name:?} is not a valid name"
        )));
    }
    let encoded = names::encode(name);
    if encoded.chars().count() > MAX_NAME_CHARS {
        return Err(RemoteError::NameTooLong(format!(
            "{name:?} is longer than {MAX_NAME_CHARS} characters once encoded"
        )));
    }
    Ok(encoded)
}

/// A file object of `file/ls` or `file/info`, plus the folder it is in when
/// the answer says so.
fn file_entry(obj: &Value) -> RemoteResult<(FileEntry, Option<FolderId>)> {
    let url = text(obj, "url")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| RemoteError::Fatal(format!("file without a url in the answer: {obj}")))?;
    let name = text(obj, "filename").unwrap_or_default();
    let modified = match text(obj, "date") {
        Some(d) => parse_french_time(d).unwrap_or_else(|| {
            tracing::warn!(date = d, url, "unreadable date from 1fichier");
            DateTime::UNIX_EPOCH
        }),
        None => DateTime::UNIX_EPOCH,
    };
    let mime = text(obj, "content-type")
        .or_else(|| text(obj, "content_type"))
        .filter(|m| !m.is_empty())
        .map(str::to_string);
    let checksum = text(obj, "checksum")
        .filter(|c| !c.is_empty())
        .map(str::to_ascii_lowercase);
    let folder = obj
        .get("folder_id")
        .and_then(integer)
        .map(|id| FolderId(id.to_string()));
    Ok((
        FileEntry {
            id: FileId(url.to_string()),
            name: names::decode(name),
            size: obj.get("size").and_then(number).unwrap_or(0),
            modified,
            checksum,
            mime,
            share_link: Some(url.to_string()),
            expires: None,
        },
        folder,
    ))
}

fn items<'a>(answer: &'a Value, key: &str) -> &'a [Value] {
    answer
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The `sub_folders` of a `folder/ls` answer (absent when there are none).
fn subfolders(answer: &Value) -> RemoteResult<Vec<FolderEntry>> {
    items(answer, "sub_folders")
        .iter()
        .map(|f| {
            let id = f.get("id").and_then(integer).ok_or_else(|| {
                RemoteError::Fatal(format!("sub-folder without an id in the answer: {f}"))
            })?;
            Ok(FolderEntry {
                id: FolderId(id.to_string()),
                name: names::decode(text(f, "name").unwrap_or_default()),
                created: text(f, "create_date").and_then(parse_french_time),
            })
        })
        .collect()
}

/// The files of a `folder/ls` answer asked with `files: 1`, or `None` when
/// it does not tell them (then `file/ls` must be asked).
fn files_of_folder_answer(answer: &Value) -> Option<RemoteResult<Vec<FileEntry>>> {
    match (answer.get("items"), answer.get("files").and_then(number)) {
        (Some(Value::Array(list)), _) => Some(
            list.iter()
                .map(|f| file_entry(f).map(|(entry, _)| entry))
                .collect(),
        ),
        (_, Some(0)) => Some(Ok(Vec::new())),
        _ => None,
    }
}

/// A bare `host[:port]` as `get_upload_server` must return it.
fn valid_upload_host(host: &str) -> bool {
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

fn valid_upload_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 10 && id.chars().all(|c| c.is_ascii_alphanumeric())
}

// ---------------------------------------------------------------------------
// Calls

impl Inner {
    fn endpoint_url(&self, endpoint: &str) -> String {
        format!("{}/{endpoint}", self.api_url)
    }

    /// One request to an API endpoint, unpaced; the answer's JSON on success.
    async fn request_once(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        what: &str,
    ) -> RemoteResult<Value> {
        let mut request = self
            .client
            .request(method, url)
            .header(CONTENT_TYPE, "application/json");
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().await.map_err(http::transport_error)?;
        self.read_answer(response, what).await
    }

    async fn read_answer(&self, response: reqwest::Response, what: &str) -> RemoteResult<Value> {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(http::transport_error)?;
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        if let Some(answer) = &parsed {
            if text(answer, "status").is_some_and(|s| s.eq_ignore_ascii_case("KO")) {
                let message = text(answer, "message").unwrap_or("request refused");
                tracing::debug!(what, %status, message, "1fichier refused the request");
                return Err(classify(status, message, &self.options));
            }
        }
        if !status.is_success() {
            return Err(http::status_error(status, &headers, what));
        }
        parsed.ok_or_else(|| {
            let snippet: String = String::from_utf8_lossy(&body).chars().take(120).collect();
            RemoteError::Fatal(format!("{what}: answer is not JSON: {snippet:?}"))
        })
    }

    /// A paced, retried `POST` of `body` to `endpoint`.
    async fn call(&self, endpoint: &str, body: Value, retry: Retry) -> RemoteResult<Value> {
        let class = if endpoint == "user/info.cgi" {
            CLASS_ACCOUNT
        } else {
            CLASS_API
        };
        let url = self.endpoint_url(endpoint);
        self.pacer
            .run(class, retry, || {
                self.request_once(Method::POST, &url, Some(&body), endpoint)
            })
            .await
    }

    /// A paced call that changes something. It is retried like a read, but
    /// when an attempt that follows a 5xx or a lost connection is refused,
    /// `check` looks at the current state: the earlier attempt may have been
    /// carried out with only its answer lost, in which case the change is done.
    async fn change<T, C, CF>(&self, endpoint: &str, body: Value, check: C) -> RemoteResult<Value>
    where
        C: Fn() -> CF,
        CF: std::future::Future<Output = Option<T>>,
    {
        let failures = AtomicU32::new(0);
        let url = self.endpoint_url(endpoint);
        let result = self
            .pacer
            .run(CLASS_API, Retry::Idempotent, || async {
                let outcome = self
                    .request_once(Method::POST, &url, Some(&body), endpoint)
                    .await;
                // A flood answer means the request was not carried out; a
                // 5xx or a lost connection leaves that open.
                if matches!(outcome, Err(RemoteError::Transient(_))) {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                outcome
            })
            .await;
        match result {
            Err(err) if !err.is_retryable() && failures.load(Ordering::SeqCst) > 0 => {
                if check().await.is_some() {
                    tracing::debug!(endpoint, "an earlier attempt had succeeded");
                    Ok(Value::Null)
                } else {
                    Err(err)
                }
            }
            other => other,
        }
    }

    async fn list_subfolders(&self, folder: i64) -> RemoteResult<Vec<FolderEntry>> {
        let answer = self
            .call(
                "folder/ls.cgi",
                json!({ "folder_id": folder }),
                Retry::Idempotent,
            )
            .await?;
        subfolders(&answer)
    }

    /// Sub-folders and files of a folder. `folder/ls` with `files: 1` also
    /// returns the files (`items`, with their count in `files`), saving a
    /// call; only when an answer has neither is `file/ls` asked.
    async fn list_both(&self, folder: i64) -> RemoteResult<Listing> {
        let answer = self
            .call(
                "folder/ls.cgi",
                json!({ "folder_id": folder, "files": 1 }),
                Retry::Idempotent,
            )
            .await?;
        let folders = subfolders(&answer)?;
        let files = match files_of_folder_answer(&answer) {
            Some(files) => files?,
            None => self.list_files(folder).await?,
        };
        Ok(Listing { folders, files })
    }

    async fn list_files(&self, folder: i64) -> RemoteResult<Vec<FileEntry>> {
        let answer = self
            .call(
                "file/ls.cgi",
                json!({ "folder_id": folder }),
                Retry::Idempotent,
            )
            .await?;
        items(&answer, "items")
            .iter()
            .map(|f| file_entry(f).map(|(entry, _)| entry))
            .collect()
    }

    async fn info(&self, file: &FileId) -> RemoteResult<(FileEntry, Option<FolderId>)> {
        let answer = self
            .call("file/info.cgi", json!({ "url": file.0 }), Retry::Idempotent)
            .await?;
        file_entry(&answer)
    }

    async fn create_folder(&self, parent: &FolderId, name: &str) -> RemoteResult<FolderEntry> {
        let parent_id = parse_folder_id(parent)?;
        let encoded = check_name(name)?;
        // The service's answer to a duplicate folder name is not documented;
        // look first so the caller always gets AlreadyExists.
        let find = || async {
            self.list_subfolders(parent_id)
                .await
                .ok()?
                .into_iter()
                .find(|f| f.name == name)
        };
        if let Some(existing) = find().await {
            return Err(RemoteError::AlreadyExists(format!(
                "a folder named {name:?} already exists (id {})",
                existing.id
            )));
        }
        let answer = self
            .change(
                "folder/mkdir.cgi",
                json!({ "name": encoded, "folder_id": parent_id }),
                find,
            )
            .await?;
        let id = match answer.get("folder_id").and_then(integer) {
            Some(id) => FolderId(id.to_string()),
            // Only after a lost answer: the folder exists, find its id.
            None => find()
                .await
                .map(|f| f.id)
                .ok_or_else(|| RemoteError::Fatal("mkdir answered without a folder_id".into()))?,
        };
        Ok(FolderEntry {
            id,
            name: name.to_string(),
            created: Some(Utc::now()),
        })
    }

    async fn remove_folder(&self, folder: &FolderId) -> RemoteResult<()> {
        let id = parse_folder_id(folder)?;
        if id == 0 {
            return Err(RemoteError::PermissionDenied(
                "the root folder cannot be removed".into(),
            ));
        }
        // Never rely on the server to refuse a non-empty folder: a server
        // that deleted recursively would lose data.
        let inside = self.list_both(id).await?;
        if !inside.folders.is_empty() || !inside.files.is_empty() {
            return Err(RemoteError::NotEmpty(format!(
                "folder {folder} holds {} folders and {} files",
                inside.folders.len(),
                inside.files.len()
            )));
        }
        let gone = || async {
            matches!(
                self.list_subfolders(id).await,
                Err(RemoteError::NotFound(_))
            )
            .then_some(())
        };
        self.change("folder/rm.cgi", json!({ "folder_id": id }), gone)
            .await?;
        Ok(())
    }

    async fn remove_file(&self, file: &FileId) -> RemoteResult<()> {
        let gone = || async {
            matches!(self.info(file).await, Err(RemoteError::NotFound(_))).then_some(())
        };
        let answer = self
            .change("file/rm.cgi", json!({ "files": [{ "url": file.0 }] }), gone)
            .await?;
        if answer.get("removed").and_then(number) == Some(0) {
            return Err(RemoteError::NotFound(format!("no file {file}")));
        }
        Ok(())
    }

    async fn rename_file(&self, file: &FileId, new_name: &str) -> RemoteResult<FileEntry> {
        let encoded = check_name(new_name)?;
        let renamed = || async {
            let (entry, _) = self.info(file).await.ok()?;
            (entry.name == new_name).then_some(())
        };
        let answer = self
            .change(
                "file/rename.cgi",
                json!({ "urls": [{ "url": file.0, "filename": encoded }], "pretty": 0 }),
                renamed,
            )
            .await?;
        let url = items(&answer, "urls")
            .first()
            .and_then(|u| text(u, "url"))
            .map(|u| FileId(u.to_string()))
            .unwrap_or_else(|| file.clone());
        self.forget_link(file);
        Ok(self.info(&url).await?.0)
    }

    async fn move_file(
        &self,
        file: &FileId,
        destination: &FolderId,
        new_name: Option<&str>,
    ) -> RemoteResult<FileEntry> {
        let dest_id = parse_folder_id(destination)?;
        let (current, folder) = self.info(file).await?;
        let target_name = new_name.unwrap_or(&current.name);
        if folder.as_ref() == Some(destination) {
            // A move within a folder is a rename for this service.
            if target_name == current.name {
                return Ok(current);
            }
            return self.rename_file(file, target_name).await;
        }
        let mut body = json!({ "urls": [file.0], "destination_folder_id": dest_id });
        // The service refuses a `rename` equal to the current name.
        if target_name != current.name {
            body["rename"] = Value::String(check_name(target_name)?);
        }
        let moved = || async {
            let (entry, folder) = self.info(file).await.ok()?;
            (folder.as_ref() == Some(destination) && entry.name == target_name).then_some(())
        };
        let answer = self.change("file/mv.cgi", body, moved).await?;
        let url = items(&answer, "urls")
            .first()
            .and_then(|u| u.as_str().or_else(|| text(u, "url")))
            .map(|u| FileId(u.to_string()))
            .unwrap_or_else(|| file.clone());
        self.forget_link(file);
        Ok(self.info(&url).await?.0)
    }

    async fn rename_folder(&self, folder: &FolderId, new_name: &str) -> RemoteResult<()> {
        let id = parse_folder_id(folder)?;
        if id == 0 {
            return Err(RemoteError::PermissionDenied(
                "the root folder cannot be renamed".into(),
            ));
        }
        let encoded = check_name(new_name)?;
        // `rename` alone renames in place (destination members are ignored
        // with it, so they are not sent).
        let body = json!({ "folder_id": id, "destination_user": "", "rename": encoded });
        self.change("folder/mv.cgi", body, || async { None::<()> })
            .await?;
        Ok(())
    }

    async fn move_folder(&self, folder: &FolderId, destination: &FolderId) -> RemoteResult<()> {
        let id = parse_folder_id(folder)?;
        let dest = parse_folder_id(destination)?;
        if id == 0 {
            return Err(RemoteError::PermissionDenied(
                "the root folder cannot be moved".into(),
            ));
        }
        if id == dest {
            return Err(RemoteError::InvalidName(
                "a folder cannot be moved into itself".into(),
            ));
        }
        let body =
            json!({ "folder_id": id, "destination_folder_id": dest, "destination_user": "" });
        self.change("folder/mv.cgi", body, || async { None::<()> })
            .await?;
        Ok(())
    }

    async fn upload(
        &self,
        parent: &FolderId,
        name: &str,
        source: UploadSource,
        progress: Option<ProgressFn>,
    ) -> RemoteResult<FileEntry> {
        let parent_id = parse_folder_id(parent)?;
        let encoded = check_name(name)?;
        match source {
            UploadSource::Path(path) => {
                let size = tokio::fs::metadata(&path)
                    .await
                    .map_err(|e| RemoteError::Fatal(format!("{}: {e}", path.display())))?
                    .len();
                self.check_upload_size(name, size)?;
                // A path can be read again, so a failed upload starts over.
                self.pacer
                    .run(CLASS_API, Retry::Idempotent, || async {
                        let node = self.upload_node().await?;
                        let source = UploadSource::Path(path.clone());
                        let (body, size) = http::upload_body(source, progress.clone()).await?;
                        self.send_upload(&node, parent_id, &encoded, body, size)
                            .await
                    })
                    .await
            }
            UploadSource::Reader { reader, size } => {
                self.check_upload_size(name, size)?;
                // The node can be asked for again; the stream is sent once.
                let node = self
                    .pacer
                    .run(CLASS_API, Retry::Idempotent, || self.upload_node())
                    .await?;
                let (body, size) =
                    http::upload_body(UploadSource::Reader { reader, size }, progress).await?;
                self.send_upload(&node, parent_id, &encoded, body, size)
                    .await
            }
        }
    }

    fn check_upload_size(&self, name: &str, size: u64) -> RemoteResult<()> {
        if size == 0 {
            return Err(RemoteError::EmptyFile(format!(
                "{name:?} is empty; 1fichier cannot store empty files"
            )));
        }
        if size > MAX_FILE_SIZE {
            return Err(RemoteError::TooLarge(format!(
                "{name:?} is {size} bytes; 1fichier accepts at most {MAX_FILE_SIZE}"
            )));
        }
        Ok(())
    }

    /// Step 1 of an upload (unpaced): the node to send to and the upload id.
    async fn upload_node(&self) -> RemoteResult<UploadNode> {
        let server = self
            .request_once(
                Method::GET,
                &self.endpoint_url("upload/get_upload_server.cgi"),
                None,
                "upload/get_upload_server.cgi",
            )
            .await?;
        let host = text(&server, "url").unwrap_or_default();
        let id = text(&server, "id").unwrap_or_default();
        if !valid_upload_host(host) || !valid_upload_id(id) {
            return Err(RemoteError::Fatal(format!(
                "unexpected answer from get_upload_server: {server}"
            )));
        }
        Ok(UploadNode {
            base: format!("{}://{host}", self.scheme),
            id: id.to_string(),
        })
    }

    /// Steps 2 and 3 of an upload: send the bytes, then read the result.
    async fn send_upload(
        &self,
        node: &UploadNode,
        parent_id: i64,
        encoded_name: &str,
        body: reqwest::Body,
        size: u64,
    ) -> RemoteResult<FileEntry> {
        let part = reqwest::multipart::Part::stream_with_length(body, size)
            .file_name(encoded_name.to_string())
            .mime_str("application/octet-stream")
            .map_err(http::transport_error)?;
        let form = reqwest::multipart::Form::new()
            .percent_encode_noop()
            .text("did", parent_id.to_string())
            .part("file[]", part);
        let response = self
            .upload_client
            .post(format!("{}/upload.cgi?id={}", node.base, node.id))
            .timeout(http::upload_deadline(&self.options.http, size))
            .multipart(form)
            .send()
            .await
            .map_err(http::transport_error)?;
        let status = response.status();
        if !(status.is_success() || status.is_redirection()) {
            // A KO body gives the precise reason.
            self.read_answer(response, "upload.cgi").await?;
            return Err(RemoteError::Transient(format!("upload.cgi: HTTP {status}")));
        }
        drop(response);

        let link = self.upload_result(node, encoded_name).await?;
        let url = text(&link, "download")
            .filter(|u| !u.is_empty())
            .ok_or_else(|| RemoteError::Fatal(format!("upload result without a link: {link}")))?;
        let stored_size = link.get("size").and_then(number).unwrap_or(size);
        if stored_size != size {
            return Err(RemoteError::Transient(format!(
                "the service stored {stored_size} bytes of {size}"
            )));
        }
        Ok(FileEntry {
            id: FileId(url.to_string()),
            name: names::decode(text(&link, "filename").unwrap_or(encoded_name)),
            size,
            modified: DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap_or_default(),
            checksum: text(&link, "whirlpool")
                .filter(|c| !c.is_empty())
                .map(str::to_ascii_lowercase),
            mime: Some("application/octet-stream".to_string()),
            share_link: Some(url.to_string()),
            expires: None,
        })
    }

    /// Step 3: `end.pl` describes the stored file. The bytes are on the
    /// service by now, so a failure here is retried on its own (the result
    /// is kept for hours) rather than by sending the file again.
    async fn upload_result(&self, node: &UploadNode, encoded_name: &str) -> RemoteResult<Value> {
        let url = format!("{}/end.pl?xid={}", node.base, node.id);
        self.pacer
            .run(CLASS_API, Retry::Idempotent, || async {
                let response = self
                    .client
                    .get(&url)
                    .header("JSON", "1")
                    .header(CONTENT_TYPE, "application/json")
                    .send()
                    .await
                    .map_err(http::transport_error)?;
                let result = self.read_answer(response, "end.pl").await?;
                let links = items(&result, "links");
                links
                    .iter()
                    .find(|l| text(l, "filename") == Some(encoded_name))
                    .or_else(|| links.first())
                    .cloned()
                    .ok_or_else(|| {
                        RemoteError::Transient("the upload node reported no uploaded file".into())
                    })
            })
            .await
    }

    fn cached_link(&self, file: &FileId) -> Option<DirectLink> {
        let links = self.links.lock();
        let cached = links.get(file)?;
        (cached.valid_until > Instant::now()).then(|| DirectLink {
            url: cached.url.clone(),
            valid_until: Some(cached.valid_until),
        })
    }

    async fn direct_link(&self, file: &FileId) -> RemoteResult<DirectLink> {
        if let Some(link) = self.cached_link(file) {
            return Ok(link);
        }
        // Readers of one file that all miss the cache wait for a single
        // token request instead of each spending one of the few API calls
        // per second.
        let gate = self
            .link_gates
            .lock()
            .entry(file.clone())
            .or_default()
            .clone();
        let result = {
            let _turn = gate.lock().await;
            match self.cached_link(file) {
                Some(link) => Ok(link),
                None => self.fetch_link(file).await,
            }
        };
        let mut gates = self.link_gates.lock();
        // Only this call and the map hold the gate: nobody waits on it.
        if Arc::strong_count(&gate) <= 2 {
            gates.remove(file);
        }
        result
    }

    async fn fetch_link(&self, file: &FileId) -> RemoteResult<DirectLink> {
        let asked_at = Instant::now();
        // No `single: 1`: the link is cached and shared by parallel range
        // reads, which a single-use link would refuse.
        let answer = self
            .call(
                "download/get_token.cgi",
                json!({ "url": file.0 }),
                Retry::Idempotent,
            )
            .await?;
        let ok = text(&answer, "status").is_none_or(|s| s.eq_ignore_ascii_case("OK"));
        let url = text(&answer, "url")
            .filter(|u| !u.is_empty() && ok)
            .ok_or_else(|| RemoteError::Fatal(format!("get_token gave no link: {answer}")))?;
        let lifetime = self
            .options
            .link_ttl
            .saturating_sub(self.options.link_margin);
        let valid_until = asked_at + lifetime;
        let mut links = self.links.lock();
        if links.len() > 4096 {
            links.retain(|_, l| l.valid_until > asked_at);
        }
        links.insert(
            file.clone(),
            CachedLink {
                url: url.to_string(),
                valid_until,
            },
        );
        Ok(DirectLink {
            url: url.to_string(),
            valid_until: Some(valid_until),
        })
    }

    async fn about(&self) -> RemoteResult<SpaceInfo> {
        if let Some((at, info)) = *self.account_info.lock() {
            if at.elapsed() < self.options.account_info_interval {
                return Ok(info);
            }
        }
        let answer = self
            .call("user/info.cgi", json!({}), Retry::Idempotent)
            .await?;
        let used = answer.get("cold_storage").and_then(number).unwrap_or(0);
        let total = answer.get("available_cold_storage").and_then(number);
        let info = SpaceInfo { used, total };
        *self.account_info.lock() = Some((Instant::now(), info));
        Ok(info)
    }
}

#[async_trait]
impl DirectLinks for Inner {
    async fn link(&self, file: &FileId) -> RemoteResult<DirectLink> {
        self.direct_link(file).await
    }

    fn forget_link(&self, file: &FileId) {
        self.links.lock().remove(file);
    }
}

#[async_trait]
impl Remote for Fichier {
    fn service(&self) -> &'static str {
        "1fichier"
    }

    fn pacer(&self) -> Option<&Pacer> {
        Some(&self.inner.pacer)
    }

    fn check_name(&self, name: &str) -> RemoteResult<()> {
        check_name(name).map(drop)
    }

    fn capabilities(&self) -> &Capabilities {
        &self.inner.capabilities
    }

    fn root(&self) -> FolderId {
        FolderId("0".to_string())
    }

    async fn list_folder(&self, folder: &FolderId) -> RemoteResult<Listing> {
        let id = parse_folder_id(folder)?;
        self.inner.list_both(id).await
    }

    async fn stat_file(&self, file: &FileId) -> RemoteResult<FileEntry> {
        Ok(self.inner.info(file).await?.0)
    }

    async fn create_folder(&self, parent: &FolderId, name: &str) -> RemoteResult<FolderEntry> {
        self.inner.create_folder(parent, name).await
    }

    async fn remove_folder(&self, folder: &FolderId) -> RemoteResult<()> {
        self.inner.remove_folder(folder).await
    }

    async fn remove_file(&self, file: &FileId) -> RemoteResult<()> {
        self.inner.remove_file(file).await?;
        self.inner.forget_link(file);
        Ok(())
    }

    async fn rename_file(&self, file: &FileId, new_name: &str) -> RemoteResult<FileEntry> {
        self.inner.rename_file(file, new_name).await
    }

    async fn move_file(
        &self,
        file: &FileId,
        destination: &FolderId,
        new_name: Option<&str>,
    ) -> RemoteResult<FileEntry> {
        self.inner.move_file(file, destination, new_name).await
    }

    async fn rename_folder(&self, folder: &FolderId, new_name: &str) -> RemoteResult<()> {
        self.inner.rename_folder(folder, new_name).await
    }

    async fn move_folder(&self, folder: &FolderId, destination: &FolderId) -> RemoteResult<()> {
        self.inner.move_folder(folder, destination).await
    }

    async fn upload(
        &self,
        parent: &FolderId,
        name: &str,
        source: UploadSource,
        progress: Option<ProgressFn>,
    ) -> RemoteResult<FileEntry> {
        self.inner.upload(parent, name, source, progress).await
    }

    async fn direct_link(&self, file: &FileId) -> RemoteResult<DirectLink> {
        self.inner.direct_link(file).await
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
            self.inner.client.clone(),
            file,
            offset,
            len,
            self.inner.options.download.clone(),
        )
        .await
    }

    async fn about(&self) -> RemoteResult<SpaceInfo> {
        self.inner.about().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn french_times_convert_to_utc_across_dst() {
        // Winter (CET, +01:00) and summer (CEST, +02:00).
        assert_eq!(
            parse_french_time("2024-01-15 12:00:00"),
            Some(utc("2024-01-15T11:00:00Z"))
        );
        assert_eq!(
            parse_french_time("2024-07-15 12:00:00"),
            Some(utc("2024-07-15T10:00:00Z"))
        );
        // 2024-10-27 02:30 happens twice; the first (CEST) is taken.
        assert_eq!(
            parse_french_time("2024-10-27 02:30:00"),
            Some(utc("2024-10-27T00:30:00Z"))
        );
        // 2024-03-31 02:30 does not exist (clocks jump 02:00 -> 03:00).
        assert_eq!(
            parse_french_time("2024-03-31 02:30:00"),
            Some(utc("2024-03-31T01:30:00Z"))
        );
        assert_eq!(
            parse_french_time("2024-03-31 03:00:00"),
            Some(utc("2024-03-31T01:00:00Z"))
        );
        assert_eq!(parse_french_time("yesterday"), None);
    }

    #[test]
    fn numbers_arrive_as_numbers_or_strings() {
        assert_eq!(number(&json!(12)), Some(12));
        assert_eq!(number(&json!("12")), Some(12));
        assert_eq!(number(&json!(" 7 ")), Some(7));
        assert_eq!(number(&json!(null)), None);
        assert_eq!(integer(&json!("-1")), Some(-1));
    }

    #[test]
    fn error_codes_are_read_from_messages() {
        assert_eq!(error_code("Flood detected: IP Locked #374"), Some(374));
        assert_eq!(error_code("No such user #93"), Some(93));
        assert_eq!(error_code("no code here"), None);
        assert_eq!(error_code("Owner locked #620 "), Some(620));
    }

    #[test]
    fn messages_map_to_error_kinds() {
        let o = FichierOptions::new(ApiKey::new("k"));
        let forbidden = StatusCode::FORBIDDEN;
        assert!(matches!(
            classify(forbidden, "Flood detected: IP Locked #374", &o),
            RemoteError::RateLimited { wait: Some(w), .. } if w == o.flood_wait
        ));
        assert!(matches!(
            classify(forbidden, "Flood detected: something new #999", &o),
            RemoteError::RateLimited { .. }
        ));
        assert!(matches!(
            classify(forbidden, "Flood detected: IP Locked #38", &o),
            RemoteError::RateLimited { wait: Some(w), .. } if w == o.account_flood_wait
        ));
        assert!(matches!(
            classify(forbidden, "No such user #93", &o),
            RemoteError::Fatal(_)
        ));
        assert!(matches!(
            classify(forbidden, "IP blocked #186", &o),
            RemoteError::Fatal(_)
        ));
        assert!(matches!(
            classify(StatusCode::NOT_FOUND, "Resource not found #469", &o),
            RemoteError::NotFound(_)
        ));
        assert!(matches!(
            classify(forbidden, "Resource not allowed #631", &o),
            RemoteError::PermissionDenied(_)
        ));
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, "Something broke", &o),
            RemoteError::Transient(_)
        ));
        assert!(!classify(forbidden, "No such user #93", &o).is_retryable());
    }

    #[test]
    fn file_objects_from_listing_and_info() {
        let listed = json!({"pass":0,"acl":0,"size":"12","filename":"a＄b.txt",
            "checksum":"ABCDEF","cdn":0,"url":"https://1fichier.com/?abc",
            "date":"2021-06-22 14:57:25","content-type":"text/plain"});
        let (entry, folder) = file_entry(&listed).unwrap();
        assert_eq!(entry.id, FileId("https://1fichier.com/?abc".into()));
        assert_eq!(entry.name, "a$b.txt");
        assert_eq!(entry.size, 12);
        assert_eq!(entry.modified, utc("2021-06-22T12:57:25Z"));
        assert_eq!(entry.checksum.as_deref(), Some("abcdef"));
        assert_eq!(entry.mime.as_deref(), Some("text/plain"));
        assert_eq!(folder, None);
        let info = json!({"url":"https://1fichier.com/?abc","filename":"x","size":5,
            "date":"2024-01-02 10:11:12","folder_id":"1234","content_type":"application/pdf"});
        let (entry, folder) = file_entry(&info).unwrap();
        assert_eq!(folder, Some(FolderId("1234".into())));
        assert_eq!(entry.mime.as_deref(), Some("application/pdf"));
        assert!(file_entry(&json!({"filename": "no url"})).is_err());
    }

    #[test]
    fn folder_answers_with_or_without_files() {
        let with = json!({"folder_id": 0, "files": 1, "items": [
            {"url": "https://1fichier.com/?a", "filename": "a", "size": 1, "date": "2024-01-02 10:11:12"}
        ]});
        assert_eq!(files_of_folder_answer(&with).unwrap().unwrap().len(), 1);
        let empty = json!({"folder_id": 0, "files": "0"});
        assert!(files_of_folder_answer(&empty).unwrap().unwrap().is_empty());
        // A service that ignored `files: 1` says nothing about files.
        let silent = json!({"folder_id": 0, "sub_folders": []});
        assert!(files_of_folder_answer(&silent).is_none());
        let counted_only = json!({"folder_id": 0, "files": 3});
        assert!(files_of_folder_answer(&counted_only).is_none());
    }

    #[test]
    fn upload_node_answers_are_checked() {
        assert!(valid_upload_host("up2.1fichier.com"));
        assert!(valid_upload_host("127.0.0.1:8080"));
        assert!(!valid_upload_host("https://up2.1fichier.com"));
        assert!(!valid_upload_host("evil.com/path"));
        assert!(valid_upload_id("Fhl1aZERQv"));
        assert!(!valid_upload_id("Fhl1aZERQv1"));
        assert!(!valid_upload_id("a/b"));
    }

    #[test]
    fn names_are_checked_before_sending() {
        assert!(check_name("").is_err());
        assert!(check_name("..").is_err());
        assert!(check_name("a/b").is_err());
        assert!(matches!(
            check_name(&"x".repeat(251)),
            Err(RemoteError::NameTooLong(_))
        ));
        assert!(check_name(&"x".repeat(250)).is_ok());
        // 250 characters once encoded: `$` becomes one full-width character,
        // a look-alike two (escaped).
        assert!(check_name(&"$".repeat(250)).is_ok());
        assert!(check_name(&format!("{}＄", "x".repeat(248))).is_ok());
        assert!(check_name(&format!("{}＄", "x".repeat(249))).is_err());
        // More than 250 bytes, at most 250 characters: accepted.
        assert!(check_name(&"é".repeat(200)).is_ok());
        assert_eq!(check_name(" a$").unwrap(), "␠a＄");
    }
}
