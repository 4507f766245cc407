//! The file.io API (`shared/api/file-io.md`, section 5), written from the
//! document alone, under its own prefix: `/fileio/` (upload, list),
//! `/fileio/{key}` (download, PUT, PATCH, DELETE) and `/fileio/me`.
//!
//! Keys file lines: `file.io KEY [plan=free|pro] [rate_limit=N]
//! [max_upload_bytes=N] [max_storage_bytes=N]` (`rate_limit` in requests per
//! minute, 0 = unlimited; without it the serve-wide default applies).
//!
//! Choices where the document is uncertain: `maxDownloads` deletes a file
//! only together with `autoDelete` (without it the file lives until it
//! expires); downloads are served directly
//! (no 302); error codes other than FILE_NOT_FOUND and TOO_MANY_REQUESTS are
//! BAD_REQUEST, UNAUTHORIZED, FILE_TOO_LARGE and METHOD_NOT_ALLOWED; a 429
//! carries `Retry-After`; whether HEAD and ranged GETs count as downloads is
//! a serve flag (they do by default).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use base64::Engine as _;
use chrono::{DateTime, Months, NaiveDate, Utc};
use rusqlite::params;
use serde_json::{json, Value};

use super::budget::{with_retry_after, RequestBudgets};
use super::faults::InjectedFailure;
use super::keys::KeyEntry;
use super::ranges::BlobResponse;
use super::storage::{self, iso_ms, AccountId, FileRow, NewFile, StagedBlob, Storage, ROOT_FOLDER};
use super::AppState;

pub const SERVICE: &str = "file.io";
pub const API_PREFIX: &str = "/fileio";

const KEY_LEN: usize = 12;
const DEFAULT_LIFETIME_DAYS: i64 = 14;
const DEFAULT_MAX_UPLOAD: u64 = 2 * 1024 * 1024 * 1024;
const RATE_WINDOW: Duration = Duration::from_secs(60);
const HELP_BASE: &str = "https://file.io/help/api/errors/";

/// Limits of one keyed account, from its keys-file options.
#[derive(Clone, Debug)]
struct AccountPolicy {
    plan_id: u32,
    rate_limit: Option<u32>,
    max_upload_bytes: u64,
    max_storage_bytes: u64,
}

impl AccountPolicy {
    fn from_entry(entry: &KeyEntry) -> anyhow::Result<AccountPolicy> {
        let number = |name: &str| -> anyhow::Result<Option<u64>> {
            entry
                .option(name)
                .map(|v| v.parse::<u64>().with_context(|| format!("{name}={v:?}")))
                .transpose()
        };
        let plan_id = match entry.option("plan").unwrap_or("free") {
            "free" => 0,
            "pro" => 1,
            other => anyhow::bail!("file.io plan must be free or pro, not {other:?}"),
        };
        Ok(AccountPolicy {
            plan_id,
            rate_limit: number("rate_limit")?
                .map(|n| u32::try_from(n).context("rate_limit too large"))
                .transpose()?,
            max_upload_bytes: number("max_upload_bytes")?.unwrap_or(DEFAULT_MAX_UPLOAD),
            max_storage_bytes: number("max_storage_bytes")?.unwrap_or(0),
        })
    }
}

/// file.io state shared by the handlers.
pub struct FileIoState {
    policies: HashMap<String, AccountPolicy>,
    /// Requests per minute for callers without a `rate_limit=` of their own
    /// (anonymous callers are told apart by IP); 0 = unlimited.
    default_rate_limit: u32,
    /// Whether HEAD and ranged GETs spend a download like a full GET.
    partial_reads_consume: bool,
    /// Requests of each caller within the last minute.
    minute_budgets: RequestBudgets,
    /// Owner of anonymous uploads (the empty key never authenticates).
    anonymous_account: AccountId,
}

impl FileIoState {
    pub async fn new(
        storage: &Storage,
        keys: &[KeyEntry],
        default_rate_limit: u32,
        partial_reads_consume: bool,
    ) -> anyhow::Result<FileIoState> {
        let mut policies = HashMap::new();
        for (n, entry) in keys.iter().filter(|e| e.service == SERVICE).enumerate() {
            // Named by position: the key itself is never printed.
            let policy = AccountPolicy::from_entry(entry)
                .with_context(|| format!("file.io key number {} of the keys file", n + 1))?;
            policies.insert(entry.key.clone(), policy);
        }
        let anonymous_account = storage
            .call(|conn| storage::ensure_account(conn, SERVICE, ""))
            .await?;
        Ok(FileIoState {
            policies,
            default_rate_limit,
            partial_reads_consume,
            minute_budgets: RequestBudgets::new(RATE_WINDOW),
            anonymous_account,
        })
    }

    /// Records one request of `caller`; the wait until the next is allowed
    /// when the per-minute budget is spent. A limit of 0 means unlimited.
    fn over_limit(&self, caller: &str, limit: u32) -> Option<Duration> {
        if limit == 0 {
            return None;
        }
        self.minute_budgets.spend(caller, limit)
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/fileio", any(root))
        .route("/fileio/", any(root))
        .route("/fileio/me", any(me))
        .route("/fileio/{key}", any(one_file))
        .with_state(state)
}

// ---- answers ----

fn error(status: StatusCode, code: &str, message: &str, key: Option<&str>) -> Response {
    (
        status,
        Json(json!({
            "success": false,
            "status": status.as_u16(),
            "code": code,
            "message": message,
            "help": format!("{HELP_BASE}{code}"),
            "key": key,
        })),
    )
        .into_response()
}

fn not_found(key: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "FILE_NOT_FOUND",
        "File not found",
        Some(key),
    )
}

fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "BAD_REQUEST", message, None)
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "A valid API key is required",
        None,
    )
}

fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "Method not allowed",
        None,
    )
}

fn server_error(err: impl std::fmt::Display) -> Response {
    tracing::error!("file.io emulator: {err}");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL_ERROR",
        "Internal error",
        None,
    )
}

fn too_many(wait: Duration) -> Response {
    let response = error(
        StatusCode::TOO_MANY_REQUESTS,
        "TOO_MANY_REQUESTS",
        "Too many requests",
        None,
    );
    with_retry_after(response, wait)
}

// ---- callers ----

/// The key from `Authorization: Bearer KEY` or Basic with the key as user name.
fn presented_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_string()).filter(|k| !k.is_empty());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let user = text.split(':').next().unwrap_or("");
        return Some(user.to_string()).filter(|k| !k.is_empty());
    }
    None
}

/// Who is calling: an account, or nobody (anonymous).
struct Caller {
    account: Option<AccountId>,
    key: Option<String>,
}

/// Counting, fault injection, authentication (a presented key must be
/// valid) and the per-minute rate limit, shared by every route.
async fn admit(
    state: &AppState,
    endpoint: &str,
    headers: &HeaderMap,
    peer: SocketAddr,
    key_required: bool,
) -> Result<Caller, Response> {
    if let Some(failure) = state.begin_api_call(&format!("{SERVICE}:{endpoint}")).await {
        return Err(match failure {
            InjectedFailure::RateLimited => too_many(Duration::from_secs(1)),
            InjectedFailure::ServerError(code) => error(
                StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                "INTERNAL_ERROR",
                "Internal error",
                None,
            ),
        });
    }
    let caller = match presented_key(headers) {
        Some(key) => match state.account(SERVICE, &key) {
            Some(account) => Caller {
                account: Some(account.id),
                key: Some(key),
            },
            None => return Err(unauthorized()),
        },
        None if key_required => return Err(unauthorized()),
        None => Caller {
            account: None,
            key: None,
        },
    };
    let (identity, limit) = match &caller.key {
        Some(key) => (
            format!("key:{key}"),
            state
                .fileio
                .policies
                .get(key)
                .and_then(|p| p.rate_limit)
                .unwrap_or(state.fileio.default_rate_limit),
        ),
        None => (format!("ip:{}", peer.ip()), state.fileio.default_rate_limit),
    };
    if let Some(wait) = state.fileio.over_limit(&identity, limit) {
        return Err(too_many(wait));
    }
    Ok(caller)
}

// ---- stored attributes ----

/// What file.io keeps beyond the shared file row, in `extra`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Extra {
    uuid: String,
    expires_ms: i64,
    downloads: u64,
    max_downloads: u64,
    auto_delete: bool,
    created_ms: i64,
    modified_ms: i64,
    plan_id: u32,
    /// The last allowed download has been handed out; the row goes as soon
    /// as that download ends.
    consumed: bool,
}

fn extra_of(row: &FileRow) -> Extra {
    serde_json::from_value(row.extra.clone()).unwrap_or_default()
}

/// Whether the file can still be downloaded at `now_ms`. The download
/// limit only removes a file with `autoDelete`; without it the file stays
/// until it expires.
fn is_live(extra: &Extra, now_ms: i64) -> bool {
    !extra.consumed
        && extra.expires_ms > now_ms
        && (!extra.auto_delete || extra.downloads < extra.max_downloads)
}

fn details(state: &AppState, row: &FileRow) -> Value {
    let extra = extra_of(row);
    json!({
        "success": true,
        "status": 200,
        "id": extra.uuid,
        "key": row.link_id,
        "path": "/",
        "nodeType": "file",
        "name": row.name,
        "title": null,
        "description": null,
        "size": row.size,
        "link": format!("{}{API_PREFIX}/{}", state.public_url, row.link_id),
        "private": false,
        "expires": iso_ms(extra.expires_ms),
        "downloads": extra.downloads,
        "maxDownloads": extra.max_downloads,
        "autoDelete": extra.auto_delete,
        "planId": extra.plan_id,
        "screeningStatus": "pending",
        "mimeType": row.content_type,
        "created": iso_ms(extra.created_ms),
        "modified": iso_ms(extra.modified_ms),
    })
}

// ---- the upload options ----

/// `expires`: `<n><unit>` (s, min, h, d, w, m = months, y) or an ISO-8601
/// date/time; the instant it means, counted from `now`.
fn parse_expires(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    let bad = || format!("Invalid expires value {text:?}");
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0).ok_or_else(bad)?.and_utc());
    }
    let digits = text.chars().take_while(char::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let n: u32 = number.parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(bad());
    }
    let seconds = |s: i64| chrono::Duration::try_seconds(s).ok_or_else(bad);
    let n64 = i64::from(n);
    let at = match unit {
        "s" => now + seconds(n64)?,
        "min" => now + seconds(n64 * 60)?,
        "h" => now + seconds(n64 * 3600)?,
        "d" => now + seconds(n64 * 86_400)?,
        "w" => now + seconds(n64 * 7 * 86_400)?,
        "m" => now.checked_add_months(Months::new(n)).ok_or_else(bad)?,
        "y" => now
            .checked_add_months(Months::new(n.checked_mul(12).ok_or_else(bad)?))
            .ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    Ok(at)
}

/// The three options as given in one request (form fields win over query
/// parameters); `None` = not given.
#[derive(Debug, Default)]
struct Options {
    expires: Option<String>,
    max_downloads: Option<String>,
    auto_delete: Option<String>,
}

impl Options {
    fn gather(form: &HashMap<String, String>, query: &HashMap<String, String>) -> Options {
        let pick = |name: &str| form.get(name).or_else(|| query.get(name)).cloned();
        Options {
            expires: pick("expires"),
            max_downloads: pick("maxDownloads"),
            auto_delete: pick("autoDelete"),
        }
    }

    /// Applies the given options to `extra`; omitted ones are reset to the
    /// defaults when `reset` (PUT, upload) and kept otherwise (PATCH).
    fn apply(&self, extra: &mut Extra, reset: bool, now: DateTime<Utc>) -> Result<(), String> {
        match &self.expires {
            Some(text) => {
                let at = parse_expires(text, now)?;
                if at <= now {
                    return Err(format!("expires {text:?} is in the past"));
                }
                extra.expires_ms = at.timestamp_millis();
            }
            None if reset => {
                extra.expires_ms =
                    (now + chrono::Duration::days(DEFAULT_LIFETIME_DAYS)).timestamp_millis();
            }
            None => {}
        }
        match &self.max_downloads {
            Some(text) => match text.trim().parse::<u64>() {
                Ok(n) if n >= 1 => extra.max_downloads = n,
                _ => {
                    return Err(format!(
                        "maxDownloads must be a positive integer, not {text:?}"
                    ))
                }
            },
            None if reset => extra.max_downloads = 1,
            None => {}
        }
        match &self.auto_delete {
            Some(text) => match text.trim().to_ascii_lowercase().as_str() {
                "true" => extra.auto_delete = true,
                "false" => extra.auto_delete = false,
                _ => return Err(format!("autoDelete must be true or false, not {text:?}")),
            },
            None if reset => extra.auto_delete = true,
            None => {}
        }
        Ok(())
    }
}

// ---- multipart bodies ----

struct Upload {
    blob: StagedBlob,
    file_name: String,
    mime: String,
}

struct Form {
    file: Option<Upload>,
    fields: HashMap<String, String>,
}

/// Reads a multipart or url-encoded body (or none). A file part larger
/// than `max_bytes` is read to the end, then refused with 413.
async fn read_form(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    max_bytes: u64,
) -> Result<Form, Response> {
    let content_type = super::form::content_type(headers);
    let essence = super::form::media_type(&content_type);
    let mut form = Form {
        file: None,
        fields: HashMap::new(),
    };
    if essence == "application/x-www-form-urlencoded" {
        let bytes = axum::body::to_bytes(body, 64 * 1024)
            .await
            .map_err(|_| bad_request("form too large"))?;
        form.fields = url::form_urlencoded::parse(&bytes).into_owned().collect();
        return Ok(form);
    }
    if essence != "multipart/form-data" {
        return Ok(form);
    }
    let boundary = multer::parse_boundary(&content_type)
        .map_err(|_| bad_request("Malformed multipart body"))?;
    let mut multipart = super::form::counted_multipart(body, boundary, state.stats.clone());
    let bad = |e: multer::Error| bad_request(&format!("Malformed multipart body: {e}"));
    let mut too_large = false;
    while let Some(mut field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_string();
        match (name.as_str(), super::form::part_file_name(field.headers())) {
            ("file", Some(file_name)) => {
                let mime = field
                    .content_type()
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "application/octet-stream".into());
                let mut writer = state.storage.blob_writer().map_err(server_error)?;
                let mut size = 0u64;
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    size += chunk.len() as u64;
                    if size > max_bytes {
                        too_large = true;
                        continue;
                    }
                    writer.write(chunk).await.map_err(server_error)?;
                }
                if too_large {
                    drop(writer);
                    continue;
                }
                let blob = writer.finish().await.map_err(server_error)?;
                if let Some(previous) = form.file.replace(Upload {
                    blob,
                    file_name,
                    mime,
                }) {
                    previous.blob.discard();
                }
            }
            (_, None) => {
                let text = field.text().await.map_err(bad)?;
                form.fields.insert(name, text);
            }
            _ => while field.chunk().await.map_err(bad)?.is_some() {},
        }
    }
    if too_large {
        if let Some(upload) = form.file.take() {
            upload.blob.discard();
        }
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "FILE_TOO_LARGE",
            &format!("The file exceeds the {max_bytes}-byte upload limit of this plan"),
            None,
        ));
    }
    Ok(form)
}

fn max_upload(state: &AppState, caller: &Caller) -> u64 {
    caller
        .key
        .as_ref()
        .and_then(|k| state.fileio.policies.get(k))
        .map_or(DEFAULT_MAX_UPLOAD, |p| p.max_upload_bytes)
}

// ---- routes ----

async fn root(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match method {
        Method::POST => upload(&state, peer, &query, &headers, body).await,
        Method::GET => list(&state, peer, &query, &headers).await,
        _ => method_not_allowed(),
    }
}

async fn upload(
    state: &AppState,
    peer: SocketAddr,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let caller = match admit(state, "upload", headers, peer, false).await {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let form = match read_form(state, headers, body, max_upload(state, &caller)).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let Some(file) = form.file else {
        return bad_request("No file provided: send it as the multipart part \"file\"");
    };
    let now = Utc::now();
    let mut extra = Extra {
        uuid: uuid::Uuid::now_v1(&[0x02, 0x46, 0x8a, 0xce, 0x13, 0x57]).to_string(),
        created_ms: now.timestamp_millis(),
        modified_ms: now.timestamp_millis(),
        plan_id: caller
            .key
            .as_ref()
            .and_then(|k| state.fileio.policies.get(k))
            .map_or(0, |p| p.plan_id),
        ..Extra::default()
    };
    if let Err(message) = Options::gather(&form.fields, query).apply(&mut extra, true, now) {
        file.blob.discard();
        return bad_request(&message);
    }
    let account = caller.account.unwrap_or(state.fileio.anonymous_account);
    match store_new(state, account, file, extra).await {
        Ok(row) => Json(details(state, &row)).into_response(),
        Err(err) => server_error(format!("{err:#}")),
    }
}

async fn store_new(
    state: &AppState,
    account: AccountId,
    file: Upload,
    extra: Extra,
) -> anyhow::Result<FileRow> {
    let key = {
        let mut found = None;
        for _ in 0..100 {
            let candidate = storage::random_alnum(KEY_LEN);
            let probe = candidate.clone();
            if !state
                .storage
                .call(move |conn| storage::link_taken(conn, &probe))
                .await?
            {
                found = Some(candidate);
                break;
            }
        }
        found.context("no free file key")?
    };
    let new = NewFile {
        account_id: account,
        folder_id: ROOT_FOLDER,
        link_id: key,
        name: file.file_name,
        content_type: file.mime,
        created_at: extra.created_ms / 1000,
        extra: serde_json::to_value(&extra)?,
    };
    let (mut rows, ()) = state
        .storage
        .commit_files(vec![(file.blob, new)], |_, _| Ok(()))
        .await?;
    rows.pop().context("no row inserted")
}

/// Deletes rows of files that can no longer be downloaded.
fn purge(
    conn: &rusqlite::Connection,
    blob_dir: &std::path::Path,
    rows: &[FileRow],
) -> anyhow::Result<()> {
    let mut blobs = Vec::new();
    for row in rows {
        conn.execute("DELETE FROM files WHERE id = ?1", [row.id])?;
        blobs.push(row.blob_id.clone());
    }
    Storage::remove_unreferenced_blobs(conn, blob_dir, &blobs);
    Ok(())
}

/// The caller's live files; dead ones (expired, used up) are purged on the way.
async fn live_files(state: &AppState, account: AccountId) -> anyhow::Result<Vec<FileRow>> {
    let blob_dir = state.storage.blob_dir().to_path_buf();
    state
        .storage
        .call(move |conn| {
            let now_ms = Utc::now().timestamp_millis();
            let (live, dead): (Vec<FileRow>, Vec<FileRow>) = storage::all_files(conn, account)?
                .into_iter()
                .partition(|r| is_live(&extra_of(r), now_ms));
            // A consumed file still being downloaded is removed by its guard.
            let dead: Vec<FileRow> = dead.into_iter().filter(|r| !extra_of(r).consumed).collect();
            purge(conn, &blob_dir, &dead)?;
            Ok(live)
        })
        .await
}

async fn list(
    state: &AppState,
    peer: SocketAddr,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let caller = match admit(state, "list", headers, peer, true).await {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let number = |name: &str, default: usize| -> Result<usize, String> {
        match query.get(name) {
            None => Ok(default),
            Some(text) => text
                .trim()
                .parse::<usize>()
                .map_err(|_| format!("{name} must be a non-negative integer")),
        }
    };
    let (offset, limit) = match (number("offset", 0), number("limit", 100)) {
        (Ok(o), Ok(l)) => (o, l),
        (Err(message), _) | (_, Err(message)) => return bad_request(&message),
    };
    let Some(account) = caller.account else {
        return unauthorized();
    };
    let mut rows = match live_files(state, account).await {
        Ok(rows) => rows,
        Err(err) => return server_error(format!("{err:#}")),
    };
    if let Some(search) = query.get("search").filter(|s| !s.is_empty()) {
        let needle = search.to_lowercase();
        rows.retain(|r| r.name.to_lowercase().contains(&needle));
    }
    let sort = query.get("sort").map_or("-created", String::as_str);
    let (descending, field) = match sort.strip_prefix('-') {
        Some(field) => (true, field),
        None => (false, sort),
    };
    match field {
        "name" => rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id))),
        "size" => rows.sort_by_key(|r| (r.size, r.id)),
        "created" => rows.sort_by_key(|r| (extra_of(r).created_ms, r.id)),
        "expires" => rows.sort_by_key(|r| (extra_of(r).expires_ms, r.id)),
        other => return bad_request(&format!("cannot sort by {other:?}")),
    }
    if descending {
        rows.reverse();
    }
    let nodes: Vec<Value> = rows
        .iter()
        .skip(offset)
        .take(limit)
        .map(|r| {
            let mut node = details(state, r);
            if let Some(map) = node.as_object_mut() {
                map.remove("success");
                map.remove("status");
            }
            node
        })
        .collect();
    let size: u64 = rows.iter().skip(offset).take(limit).map(|r| r.size).sum();
    Json(json!({
        "success": true,
        "status": 200,
        "nodes": nodes,
        "count": nodes.len(),
        "size": size,
    }))
    .into_response()
}

async fn me(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET {
        return method_not_allowed();
    }
    let caller = match admit(&state, "me", &headers, peer, true).await {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let (Some(account), Some(key)) = (caller.account, caller.key) else {
        return unauthorized();
    };
    let policy = state.fileio.policies.get(&key).cloned();
    let used = match live_files(&state, account).await {
        Ok(rows) => rows.iter().map(|r| r.size).sum::<u64>(),
        Err(err) => return server_error(format!("{err:#}")),
    };
    let rate_limit = policy
        .as_ref()
        .and_then(|p| p.rate_limit)
        .unwrap_or(state.fileio.default_rate_limit);
    Json(json!({
        "success": true,
        "status": 200,
        "planId": policy.as_ref().map_or(0, |p| p.plan_id),
        "maxUploadBytes": policy.as_ref().map_or(DEFAULT_MAX_UPLOAD, |p| p.max_upload_bytes),
        "maxStorageBytes": policy.as_ref().map_or(0, |p| p.max_storage_bytes),
        "usedStorageBytes": used,
        "rateLimit": rate_limit,
        "customDomain": null,
        "directDownload": null,
        "paymentCustomerId": null,
        "paymentSubscriptionId": null,
    }))
    .into_response()
}

async fn one_file(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match method {
        Method::GET | Method::HEAD => download(&state, peer, &key, &method, &headers).await,
        Method::PUT => update(&state, peer, &key, &query, &headers, body, true).await,
        Method::PATCH => update(&state, peer, &key, &query, &headers, body, false).await,
        Method::DELETE => delete(&state, peer, &key, &headers).await,
        _ => method_not_allowed(),
    }
}

/// Removes a consumed file once its last download is over.
struct ConsumedGuard {
    state: Arc<AppState>,
    row: FileRow,
}

impl Drop for ConsumedGuard {
    fn drop(&mut self) {
        let state = self.state.clone();
        let row = self.row.clone();
        let blob_dir = state.storage.blob_dir().to_path_buf();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let result = state
                .storage
                .call(move |conn| purge(conn, &blob_dir, std::slice::from_ref(&row)))
                .await;
            if let Err(err) = result {
                tracing::error!("file.io emulator: removing a consumed file: {err:#}");
            }
        });
    }
}

async fn download(
    state: &Arc<AppState>,
    peer: SocketAddr,
    key: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Response {
    if let Err(response) = admit(state, "download", headers, peer, false).await {
        return response;
    }
    let partial = *method == Method::HEAD || headers.contains_key(header::RANGE);
    let counts = !partial || state.fileio.partial_reads_consume;
    let wanted = key.to_string();
    let blob_dir = state.storage.blob_dir().to_path_buf();
    // Check, count and (at the limit) mark consumed in one transaction, so
    // two concurrent downloads cannot both take the last one.
    let outcome = state
        .storage
        .call(move |conn| {
            let tx = conn.transaction()?;
            let Some(mut row) = storage::file_by_link_any_account(&tx, &wanted)? else {
                return Ok(None);
            };
            let mut extra = extra_of(&row);
            let now_ms = Utc::now().timestamp_millis();
            if !is_live(&extra, now_ms) {
                if !extra.consumed {
                    purge(&tx, &blob_dir, std::slice::from_ref(&row))?;
                }
                tx.commit()?;
                return Ok(None);
            }
            if counts {
                extra.downloads += 1;
                if extra.downloads >= extra.max_downloads && extra.auto_delete {
                    extra.consumed = true;
                }
                row.extra = serde_json::to_value(&extra)?;
                tx.execute(
                    "UPDATE files SET extra = ?1 WHERE id = ?2",
                    params![row.extra.to_string(), row.id],
                )?;
            }
            tx.commit()?;
            Ok(Some((row, extra.consumed)))
        })
        .await;
    let (row, consumed) = match outcome {
        Ok(Some(found)) => found,
        Ok(None) => return not_found(key),
        Err(err) => return server_error(format!("{err:#}")),
    };
    let guard: Option<Box<dyn Send + Sync>> = consumed.then(|| {
        Box::new(ConsumedGuard {
            state: state.clone(),
            row: row.clone(),
        }) as Box<dyn Send + Sync>
    });
    BlobResponse::for_file(state, &row, guard)
        .into_response(method, headers)
        .await
}

async fn owned_live_file(
    state: &AppState,
    account: AccountId,
    key: &str,
) -> anyhow::Result<Option<FileRow>> {
    let wanted = key.to_string();
    let now_ms = Utc::now().timestamp_millis();
    let row = state
        .storage
        .call(move |conn| storage::file_by_link(conn, account, &wanted))
        .await?;
    Ok(row.filter(|r| is_live(&extra_of(r), now_ms)))
}

/// [`admit`] for a route on one file of the caller's own: a key is
/// required, and a file that is someone else's, or no longer live, is 404.
async fn admit_owner(
    state: &AppState,
    endpoint: &str,
    headers: &HeaderMap,
    peer: SocketAddr,
    key: &str,
) -> Result<(Caller, FileRow), Response> {
    let caller = admit(state, endpoint, headers, peer, true).await?;
    let Some(account) = caller.account else {
        return Err(unauthorized());
    };
    match owned_live_file(state, account, key).await {
        Ok(Some(row)) => Ok((caller, row)),
        Ok(None) => Err(not_found(key)),
        Err(err) => Err(server_error(format!("{err:#}"))),
    }
}

async fn update(
    state: &AppState,
    peer: SocketAddr,
    key: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
    replace: bool,
) -> Response {
    let (caller, row) = match admit_owner(state, "update", headers, peer, key).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let form = match read_form(state, headers, body, max_upload(state, &caller)).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let now = Utc::now();
    let mut extra = extra_of(&row);
    if let Err(message) = Options::gather(&form.fields, query).apply(&mut extra, replace, now) {
        if let Some(upload) = form.file {
            upload.blob.discard();
        }
        return bad_request(&message);
    }
    extra.modified_ms = now.timestamp_millis();
    let result = match form.file {
        Some(upload) => {
            extra.downloads = 0;
            replace_content(state, &row, upload, extra).await
        }
        None => {
            let row_id = row.id;
            let text = extra_json(&extra);
            state
                .storage
                .call(move |conn| {
                    conn.execute(
                        "UPDATE files SET extra = ?1 WHERE id = ?2",
                        params![text, row_id],
                    )?;
                    Ok(())
                })
                .await
        }
    };
    if let Err(err) = result {
        return server_error(format!("{err:#}"));
    }
    match owned_live_file(state, row.account_id, key).await {
        Ok(Some(row)) => Json(details(state, &row)).into_response(),
        Ok(None) => not_found(key),
        Err(err) => server_error(format!("{err:#}")),
    }
}

fn extra_json(extra: &Extra) -> String {
    serde_json::to_string(extra).unwrap_or_else(|_| "{}".into())
}

/// Swaps a file's contents: the new row is inserted under a temporary key
/// and takes over the old key in the same transaction.
async fn replace_content(
    state: &AppState,
    old: &FileRow,
    upload: Upload,
    extra: Extra,
) -> anyhow::Result<()> {
    let temporary = format!("replacing-{}", uuid::Uuid::new_v4().simple());
    let new = NewFile {
        account_id: old.account_id,
        folder_id: ROOT_FOLDER,
        link_id: temporary,
        name: upload.file_name,
        content_type: upload.mime,
        created_at: old.created_at,
        extra: serde_json::to_value(&extra)?,
    };
    let old_id = old.id;
    let key = old.link_id.clone();
    state
        .storage
        .commit_files(vec![(upload.blob, new)], move |tx, rows| {
            let row = rows.first().context("no row inserted")?;
            tx.execute("DELETE FROM files WHERE id = ?1", [old_id])?;
            tx.execute(
                "UPDATE files SET link_id = ?1 WHERE id = ?2",
                params![key, row.id],
            )?;
            Ok(())
        })
        .await?;
    let old_blob = old.blob_id.clone();
    let blob_dir = state.storage.blob_dir().to_path_buf();
    state
        .storage
        .call(move |conn| {
            Storage::remove_unreferenced_blobs(conn, &blob_dir, &[old_blob]);
            Ok(())
        })
        .await
}

async fn delete(state: &AppState, peer: SocketAddr, key: &str, headers: &HeaderMap) -> Response {
    let row = match admit_owner(state, "delete", headers, peer, key).await {
        Ok((_, row)) => row,
        Err(response) => return response,
    };
    let blob_dir = state.storage.blob_dir().to_path_buf();
    let result = state
        .storage
        .call(move |conn| purge(conn, &blob_dir, std::slice::from_ref(&row)))
        .await;
    match result {
        Ok(()) => Json(json!({"success": true, "status": 200})).into_response(),
        Err(err) => server_error(format!("{err:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use chrono::TimeZone;

    #[test]
    fn expiry_formats() {
        let now = Utc.with_ymd_and_hms(2026, 1, 31, 12, 0, 0).unwrap();
        let at = |t: &str| parse_expires(t, now).map(|d| d.to_rfc3339());
        assert_eq!(at("30s").unwrap(), "2026-01-31T12:00:30+00:00");
        assert_eq!(at("15min").unwrap(), "2026-01-31T12:15:00+00:00");
        assert_eq!(at("2h").unwrap(), "2026-01-31T14:00:00+00:00");
        assert_eq!(at("1d").unwrap(), "2026-02-01T12:00:00+00:00");
        assert_eq!(at("2w").unwrap(), "2026-02-14T12:00:00+00:00");
        // `m` is months, as in the original API; the end of month clamps.
        assert_eq!(at("1m").unwrap(), "2026-02-28T12:00:00+00:00");
        assert_eq!(at("1y").unwrap(), "2027-01-31T12:00:00+00:00");
        assert_eq!(at("2026-03-01").unwrap(), "2026-03-01T00:00:00+00:00");
        assert_eq!(
            at("2026-03-01T10:00:00Z").unwrap(),
            "2026-03-01T10:00:00+00:00"
        );
        for bad in ["", "d", "0d", "1x", "tomorrow", "-1d", "1.5d", "1 d"] {
            assert!(parse_expires(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn put_resets_and_patch_keeps() {
        let now = Utc::now();
        let mut extra = Extra {
            max_downloads: 5,
            auto_delete: false,
            expires_ms: 1,
            ..Extra::default()
        };
        let only_max = Options {
            max_downloads: Some("3".into()),
            ..Options::default()
        };
        only_max.apply(&mut extra, false, now).unwrap();
        assert_eq!(
            (extra.max_downloads, extra.auto_delete, extra.expires_ms),
            (3, false, 1)
        );
        only_max.apply(&mut extra, true, now).unwrap();
        assert!(extra.auto_delete);
        assert!(extra.expires_ms > now.timestamp_millis());
        assert!(Options {
            auto_delete: Some("maybe".into()),
            ..Options::default()
        }
        .apply(&mut extra, false, now)
        .is_err());
    }

    #[test]
    fn basic_and_bearer_keys() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(presented_key(&headers).as_deref(), Some("abc"));
        let basic = base64::engine::general_purpose::STANDARD.encode("abc:");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {basic}")).unwrap(),
        );
        assert_eq!(presented_key(&headers).as_deref(), Some("abc"));
    }
}
