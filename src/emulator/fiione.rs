//! The fii.one REST API v1 (`shared/api/fii-one.md`, section 5), written
//! from the document alone.
//!
//! Routes: the API under `/api/v1`, public `direct_link` objects under
//! `/fiione-cdn/<user>/<object>` (GET/HEAD with Range, like the real R2
//! bucket), share pages under `/fiione/s/<token>`, and the test-only admin
//! hook `POST /_emulator/fiione/folders` that creates folder ids (the public
//! API has no folder endpoints).
//!
//! Keys file lines: `fii.one KEY [permissions=upload,read,delete]
//! [plan=free|pro] [max_file_size_mb=N] [expires=RFC3339] [active=false]
//! [requests_per_hour=N] [account=NAME]`; keys naming the same `account`
//! reach the same files.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};

use super::budget::{with_retry_after, RequestBudgets};
use super::faults::InjectedFailure;
use super::keys::KeyEntry;
use super::ranges::BlobResponse;
use super::storage::{self, iso_ms, AccountId, FileRow, NewFile, StagedBlob, Storage, ROOT_FOLDER};
use super::AppState;

pub const SERVICE: &str = "fii.one";
pub const API_PREFIX: &str = "/api/v1";
const CDN_PREFIX: &str = "/fiione-cdn";
const SHARE_PREFIX: &str = "/fiione/s";

const MB: u64 = 1024 * 1024;

/// Characters escaped in an object name within a URL path: all but the
/// unreserved ones.
const OBJECT_NAME: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// Titles live in a `VarChar(255)` column.
const MAX_TITLE_CHARS: usize = 255;
const RATE_WINDOW: Duration = Duration::from_secs(3600);

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS fiione_folders (
    id TEXT PRIMARY KEY,
    account_id INTEGER,
    parent_id TEXT,
    name TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS fiione_shares (
    token TEXT PRIMARY KEY,
    file_id TEXT NOT NULL
);
"#;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Permission {
    Upload,
    Read,
    Delete,
}

/// What one key may do, from its keys-file options.
#[derive(Clone, Debug)]
struct KeyPolicy {
    upload: bool,
    read: bool,
    delete: bool,
    max_file_bytes: u64,
    expires: Option<DateTime<Utc>>,
    active: bool,
    /// Requests per rolling hour, when limited.
    hourly_limit: Option<u32>,
    /// The account the key belongs to: keys with the same `account=` option
    /// share one (a real account may hold several keys).
    account: AccountId,
}

impl KeyPolicy {
    fn from_entry(entry: &KeyEntry, plan_limits: bool) -> anyhow::Result<KeyPolicy> {
        let mut policy = KeyPolicy {
            upload: true,
            read: true,
            delete: true,
            max_file_bytes: 200 * MB,
            expires: None,
            active: true,
            hourly_limit: None,
            account: 0,
        };
        let mut plan_budget = 100;
        if let Some(plan) = entry.option("plan") {
            match plan {
                "free" => {}
                "pro" => {
                    policy.max_file_bytes = 2048 * MB;
                    plan_budget = 1000;
                }
                other => anyhow::bail!("fii.one plan must be free or pro, not {other:?}"),
            }
        }
        if plan_limits {
            policy.hourly_limit = Some(plan_budget);
        }
        if let Some(list) = entry.option("permissions") {
            policy.upload = false;
            policy.read = false;
            policy.delete = false;
            for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
                match word {
                    "upload" => policy.upload = true,
                    "read" => policy.read = true,
                    "delete" => policy.delete = true,
                    other => anyhow::bail!(
                        "fii.one permission {other:?} is not one of upload, read, delete"
                    ),
                }
            }
        }
        if let Some(mb) = entry.option("max_file_size_mb") {
            policy.max_file_bytes = mb
                .parse::<u64>()
                .with_context(|| format!("max_file_size_mb={mb:?}"))?
                * MB;
        }
        if let Some(when) = entry.option("expires") {
            policy.expires = Some(
                DateTime::parse_from_rfc3339(when)
                    .with_context(|| format!("expires={when:?} is not an RFC 3339 date"))?
                    .with_timezone(&Utc),
            );
        }
        if let Some(active) = entry.option("active") {
            policy.active = active
                .parse::<bool>()
                .with_context(|| format!("active={active:?} is not true or false"))?;
        }
        if let Some(limit) = entry.option("requests_per_hour") {
            policy.hourly_limit = Some(
                limit
                    .parse::<u32>()
                    .with_context(|| format!("requests_per_hour={limit:?}"))?,
            );
        }
        Ok(policy)
    }

    fn allows(&self, permission: Permission) -> bool {
        match permission {
            Permission::Upload => self.upload,
            Permission::Read => self.read,
            Permission::Delete => self.delete,
        }
    }
}

/// fii.one state shared by the handlers.
pub struct FiiOneState {
    policies: HashMap<String, KeyPolicy>,
    /// Requests of each rate-limited key within the last hour.
    hourly_budgets: RequestBudgets,
}

impl FiiOneState {
    /// `plan_limits` turns on the documented hourly budgets (100 free,
    /// 1000 pro) for every key; `requests_per_hour=` sets one key's budget.
    pub async fn new(
        storage: &Storage,
        keys: &[KeyEntry],
        plan_limits: bool,
    ) -> anyhow::Result<FiiOneState> {
        storage
            .call(|conn| Ok(conn.execute_batch(SCHEMA)?))
            .await
            .context("creating the fii.one tables")?;
        let mut policies = HashMap::new();
        for (n, entry) in keys.iter().filter(|e| e.service == SERVICE).enumerate() {
            // Named by position: the key itself is never printed.
            let mut policy = KeyPolicy::from_entry(entry, plan_limits)
                .with_context(|| format!("fii.one key number {} of the keys file", n + 1))?;
            let owner = match entry.option("account") {
                Some(name) => format!("account:{name}"),
                None => entry.key.clone(),
            };
            policy.account = storage
                .call(move |conn| storage::ensure_account(conn, SERVICE, &owner))
                .await?;
            policies.insert(entry.key.clone(), policy);
        }
        Ok(FiiOneState {
            policies,
            hourly_budgets: RequestBudgets::new(RATE_WINDOW),
        })
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/v1/upload", any(upload))
        .route("/api/v1/files", any(list))
        .route("/api/v1/files/{id}", any(one_file))
        .route("/fiione-cdn/{user}/{object}", any(cdn_object))
        .route("/fiione/s/{token}", get(share_page))
        .route("/_emulator/fiione/folders", post(admin_create_folder))
        .with_state(state)
}

// ---- envelope ----

fn fail(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"success": false, "error": {"message": message, "code": status.as_u16()}})),
    )
        .into_response()
}

fn ok(data: Value) -> Response {
    Json(json!({"success": true, "data": data})).into_response()
}

fn internal(message: &str, err: impl std::fmt::Display) -> Response {
    tracing::debug!("fii.one emulator: {message}: {err}");
    fail(StatusCode::INTERNAL_SERVER_ERROR, message)
}

fn too_many(wait: Duration) -> Response {
    with_retry_after(
        fail(StatusCode::TOO_MANY_REQUESTS, "Too many requests"),
        wait,
    )
}

/// The key as the real server reads it: `Bearer <key>`, else the raw
/// Authorization value, else `?key=`.
fn presented_key(headers: &HeaderMap, query: &HashMap<String, String>) -> Option<String> {
    let header_value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    match header_value {
        Some(value) => Some(value.strip_prefix("Bearer ").unwrap_or(value).to_string()),
        None => query.get("key").cloned(),
    }
}

/// A caller who passed authentication, rate limiting and the permission check.
struct Caller {
    account: AccountId,
}

/// Everything every API route does first: count, fault injection, key
/// lookup (401), hourly budget (429), permission (403).
async fn admit(
    state: &AppState,
    endpoint: &str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    permission: Permission,
    denied: &str,
) -> Result<Caller, Response> {
    if let Some(failure) = state.begin_api_call(&format!("{SERVICE}:{endpoint}")).await {
        return Err(match failure {
            InjectedFailure::RateLimited => too_many(Duration::from_secs(1)),
            InjectedFailure::ServerError(code) => fail(
                StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                "Internal server error",
            ),
        });
    }
    let unauthorized = || fail(StatusCode::UNAUTHORIZED, "Invalid or missing API key");
    let key = presented_key(headers, query).ok_or_else(unauthorized)?;
    let policy = state.fiione.policies.get(&key).ok_or_else(unauthorized)?;
    if !policy.active || policy.expires.is_some_and(|t| t <= Utc::now()) {
        return Err(unauthorized());
    }
    if let Some(limit) = policy.hourly_limit {
        if let Some(wait) = state.fiione.hourly_budgets.spend(&key, limit) {
            return Err(too_many(wait));
        }
    }
    if !policy.allows(permission) {
        return Err(fail(StatusCode::FORBIDDEN, denied));
    }
    Ok(Caller {
        account: policy.account,
    })
}

// ---- stored file attributes ----

/// What fii.one keeps beyond the shared file row, in `extra`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Extra {
    /// Object name in the CDN bucket: `<uuid>.<ext>`, fixed at upload.
    object: String,
    share_token: Option<String>,
    folder_id: Option<String>,
    created_ms: i64,
    updated_ms: i64,
}

fn extra_of(row: &FileRow) -> Extra {
    serde_json::from_value(row.extra.clone()).unwrap_or_default()
}

fn user_segment(account: AccountId) -> String {
    format!("user_{account}")
}

fn direct_link(state: &AppState, row: &FileRow, extra: &Extra) -> String {
    format!(
        "{}{CDN_PREFIX}/{}/{}",
        state.public_url,
        user_segment(row.account_id),
        percent_encoding::utf8_percent_encode(&extra.object, OBJECT_NAME)
    )
}

/// The file object of §3; `detail` adds what GET-by-id returns.
fn file_json(state: &AppState, row: &FileRow, detail: bool) -> Value {
    let extra = extra_of(row);
    let link = direct_link(state, row, &extra);
    let share = extra
        .share_token
        .as_ref()
        .map(|t| format!("{}{SHARE_PREFIX}/{t}", state.public_url));
    let mut value = json!({
        "id": row.link_id,
        "title": row.name,
        "url": link,
        "direct_link": link,
        "share_url": share,
        "size": row.size,
        "mime": row.content_type,
        "created_at": iso_ms(extra.created_ms),
    });
    if detail {
        value["folder_id"] = json!(extra.folder_id);
        value["updated_at"] = json!(iso_ms(extra.updated_ms));
    }
    value
}

/// Extension as the real upload code derives it: the text after the last
/// dot, or the whole name when it has none.
fn object_extension(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

fn is_uuid(text: &str) -> bool {
    uuid::Uuid::parse_str(text).is_ok()
}

// ---- upload ----

/// A staged upload: the blob plus what the request said about it.
struct Received {
    blob: StagedBlob,
    file_name: String,
    mime: String,
}

enum UploadFailure {
    Response(Response),
    Internal(anyhow::Error),
}

impl From<anyhow::Error> for UploadFailure {
    fn from(err: anyhow::Error) -> Self {
        UploadFailure::Internal(err)
    }
}

async fn upload(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if method != Method::POST {
        return fail(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
    }
    let caller = match admit(
        &state,
        "upload",
        &headers,
        &query,
        Permission::Upload,
        "API key does not have upload permission",
    )
    .await
    {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let key = presented_key(&headers, &query).unwrap_or_default();
    let max_bytes = state
        .fiione
        .policies
        .get(&key)
        .map(|p| p.max_file_bytes)
        .unwrap_or(200 * MB);
    let content_type = super::form::content_type(&headers);
    let essence = super::form::media_type(&content_type);
    let received = match essence.as_str() {
        "multipart/form-data" => receive_multipart(&state, &content_type, body).await,
        "application/json" => receive_json(&state, body, max_bytes).await,
        _ => {
            return fail(
                StatusCode::BAD_REQUEST,
                "Unsupported content type. Use multipart/form-data or application/json.",
            )
        }
    };
    let received = match received {
        Ok(received) => received,
        Err(UploadFailure::Response(response)) => return response,
        Err(UploadFailure::Internal(err)) => return internal("Upload failed", err),
    };
    if received.blob.size > max_bytes {
        received.blob.discard();
        return fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("File exceeds max size limit ({} MB)", max_bytes / MB),
        );
    }
    if received.file_name.chars().count() > MAX_TITLE_CHARS {
        received.blob.discard();
        return internal("Upload failed", "title longer than 255 characters");
    }
    match store(&state, caller.account, received).await {
        Ok(row) => {
            let mut data = file_json(&state, &row, false);
            data["delete_url"] = json!(format!(
                "{}{API_PREFIX}/files/{}",
                state.public_url, row.link_id
            ));
            ok(data)
        }
        Err(err) => internal("Upload failed", err),
    }
}

/// Streams one part into a blob; bytes past `limit` are counted but not
/// kept, so an oversized upload is still read to the end and answered 413.
async fn receive_multipart(
    state: &AppState,
    content_type: &str,
    body: Body,
) -> Result<Received, UploadFailure> {
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        UploadFailure::Response(fail(
            StatusCode::BAD_REQUEST,
            "No file provided. Use 'image' or 'file' field.",
        ))
    })?;
    let mut multipart = super::form::counted_multipart(body, boundary, state.stats.clone());
    let mut custom_name: Option<String> = None;
    let mut image: Option<Received> = None;
    let mut file: Option<Received> = None;
    let bad_form = |e: multer::Error| UploadFailure::Internal(anyhow::anyhow!("bad form: {e}"));
    while let Some(mut field) = multipart.next_field().await.map_err(bad_form)? {
        let name = field.name().unwrap_or("").to_string();
        match (name.as_str(), super::form::part_file_name(field.headers())) {
            ("image" | "file", Some(file_name)) => {
                let mime = field
                    .content_type()
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "application/octet-stream".into());
                let mut writer = state.storage.blob_writer()?;
                while let Some(chunk) = field.chunk().await.map_err(bad_form)? {
                    writer.write(chunk).await?;
                }
                let received = Received {
                    blob: writer.finish().await?,
                    file_name,
                    mime,
                };
                let slot = if name == "image" {
                    &mut image
                } else {
                    &mut file
                };
                if let Some(previous) = slot.replace(received) {
                    previous.blob.discard();
                }
            }
            ("name", None) => {
                custom_name = Some(field.text().await.map_err(bad_form)?);
            }
            _ => {
                // Other fields are ignored, as the real route ignores them.
                while field.chunk().await.map_err(bad_form)?.is_some() {}
            }
        }
    }
    // `formData.get('image') || formData.get('file')`
    let chosen = match (image, file) {
        (Some(image), Some(file)) => {
            file.blob.discard();
            Some(image)
        }
        (image, file) => image.or(file),
    };
    let Some(mut chosen) = chosen else {
        return Err(UploadFailure::Response(fail(
            StatusCode::BAD_REQUEST,
            "No file provided. Use 'image' or 'file' field.",
        )));
    };
    if let Some(name) = custom_name.filter(|n| !n.is_empty()) {
        chosen.file_name = name;
    }
    Ok(chosen)
}

/// The JSON form: `{"image": "<base64 or data URI>", "name": "..."}`.
async fn receive_json(
    state: &AppState,
    body: Body,
    max_bytes: u64,
) -> Result<Received, UploadFailure> {
    // Base64 is 4/3 of the data; allow that plus room for the JSON around it.
    let body_limit = (max_bytes / 3 * 4 + 4 * MB) as usize;
    let bytes = match axum::body::to_bytes(body, body_limit).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return Err(UploadFailure::Response(fail(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("File exceeds max size limit ({} MB)", max_bytes / MB),
            )))
        }
    };
    state.stats.add_bytes_received(bytes.len() as u64);
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| UploadFailure::Internal(anyhow::anyhow!("body is not JSON: {e}")))?;
    let image = value
        .get("image")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            UploadFailure::Response(fail(
                StatusCode::BAD_REQUEST,
                "No image data provided. Use base64 'image' field.",
            ))
        })?;
    let (mime, data) = split_data_uri(image);
    let decoded = decode_base64_leniently(data);
    let file_name = value
        .get("name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("upload.png")
        .to_string();
    let mut writer = state.storage.blob_writer()?;
    writer.write(Bytes::from(decoded)).await?;
    Ok(Received {
        blob: writer.finish().await?,
        file_name,
        mime: mime.unwrap_or("image/png").to_string(),
    })
}

/// Strips a `data:<mime>;base64,` prefix, returning its mime type.
fn split_data_uri(text: &str) -> (Option<&str>, &str) {
    if let Some(rest) = text.strip_prefix("data:") {
        if let Some((mime, data)) = rest.split_once(";base64,") {
            return (Some(mime).filter(|m| !m.is_empty()), data);
        }
    }
    (None, text)
}

/// Decodes base64 the way Node's `Buffer.from(s, 'base64')` does: both
/// alphabets, whitespace and stray characters skipped, padding optional.
fn decode_base64_leniently(text: &str) -> Vec<u8> {
    let cleaned: String = text
        .split('=')
        .next()
        .unwrap_or("")
        .chars()
        .filter_map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '+' | '/' => Some(c),
            '-' => Some('+'),
            '_' => Some('/'),
            _ => None,
        })
        .collect();
    // A lone trailing character carries fewer than 8 bits: Node drops it.
    let usable = cleaned.len() - usize::from(cleaned.len() % 4 == 1);
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(&cleaned[..usable])
        .unwrap_or_default()
}

async fn store(
    state: &AppState,
    account: AccountId,
    received: Received,
) -> anyhow::Result<FileRow> {
    let id = uuid::Uuid::new_v4().to_string();
    let now_ms = Utc::now().timestamp_millis();
    let extension = object_extension(&received.file_name).to_string();
    let file = NewFile {
        account_id: account,
        folder_id: ROOT_FOLDER,
        link_id: id.clone(),
        name: received.file_name,
        content_type: received.mime,
        created_at: now_ms / 1000,
        extra: serde_json::to_value(Extra {
            object: format!("{id}.{extension}"),
            share_token: None,
            folder_id: None,
            created_ms: now_ms,
            updated_ms: now_ms,
        })?,
    };
    let (mut rows, extra) = state
        .storage
        .commit_files(vec![(received.blob, file)], move |tx, rows| {
            let row = rows.first().context("no row inserted")?;
            let token = fresh_share_token(tx)?;
            tx.execute(
                "INSERT INTO fiione_shares (token, file_id) VALUES (?1, ?2)",
                params![token, row.link_id],
            )?;
            let mut extra: Extra = serde_json::from_value(row.extra.clone())?;
            extra.share_token = Some(token.clone());
            tx.execute(
                "UPDATE files SET extra = ?1 WHERE id = ?2",
                params![serde_json::to_string(&extra)?, row.id],
            )?;
            Ok(extra)
        })
        .await?;
    let mut row = rows.pop().context("no row inserted")?;
    row.extra = serde_json::to_value(extra)?;
    Ok(row)
}

fn fresh_share_token(conn: &rusqlite::Connection) -> anyhow::Result<String> {
    for _ in 0..100 {
        let token = storage::random_alnum(6);
        let taken = conn
            .query_row(
                "SELECT 1 FROM fiione_shares WHERE token = ?1",
                [&token],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !taken {
            return Ok(token);
        }
    }
    anyhow::bail!("no free share token")
}

// ---- list ----

/// JavaScript's `parseInt`: optional sign and leading digits, rest ignored.
fn parse_int_like_js(text: &str) -> Option<i64> {
    let text = text.trim_start();
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse::<i64>().ok().map(|n| sign * n)
}

async fn list(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET {
        return fail(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
    }
    let caller = match admit(
        &state,
        "files",
        &headers,
        &query,
        Permission::Read,
        "API key does not have read permission",
    )
    .await
    {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let page = parse_int_like_js(query.get("page").map_or("1", String::as_str));
    let limit =
        parse_int_like_js(query.get("limit").map_or("50", String::as_str)).map(|l| l.min(100));
    // NaN, a page below 1 or a negative limit make the real query throw.
    let (Some(page), Some(limit)) = (page, limit) else {
        return internal("Failed to list files", "page or limit is not a number");
    };
    if page < 1 || limit < 0 {
        return internal("Failed to list files", "negative skip or take");
    }
    let account = caller.account;
    let rows = state
        .storage
        .call(move |conn| storage::all_files(conn, account))
        .await;
    let mut rows = match rows {
        Ok(rows) => rows,
        Err(err) => return internal("Failed to list files", err),
    };
    rows.sort_by_key(|r| std::cmp::Reverse((extra_of(r).created_ms, r.id)));
    let total = rows.len() as i64;
    let offset = ((page - 1) * limit) as usize;
    let data: Vec<Value> = rows
        .iter()
        .skip(offset)
        .take(limit as usize)
        .map(|r| file_json(&state, r, false))
        .collect();
    // `Math.ceil(total / 0)` is Infinity, which JSON.stringify writes as null.
    let pages = if limit == 0 {
        Value::Null
    } else {
        json!((total + limit - 1) / limit)
    };
    Json(json!({
        "success": true,
        "data": data,
        "pagination": {"page": page, "limit": limit, "total": total, "pages": pages},
    }))
    .into_response()
}

// ---- one file: GET / PATCH / DELETE ----

/// The 500 message of each route on one file.
const GET_FAILED: &str = "Failed to get file";
const PATCH_FAILED: &str = "Failed to update file";
const DELETE_FAILED: &str = "Failed to delete file";

/// Admits the caller and checks the id the way all three routes do, each
/// with its own counter, permission and messages, then runs the route.
async fn one_file(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (endpoint, permission, denied, failed) = match method {
        Method::GET => (
            "files/get",
            Permission::Read,
            "No read permission",
            GET_FAILED,
        ),
        Method::PATCH => (
            "files/patch",
            Permission::Upload,
            "No edit permission",
            PATCH_FAILED,
        ),
        Method::DELETE => (
            "files/delete",
            Permission::Delete,
            "No delete permission",
            DELETE_FAILED,
        ),
        _ => return fail(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
    };
    let caller = match admit(&state, endpoint, &headers, &query, permission, denied).await {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    if !is_uuid(&id) {
        return internal(failed, "id is not a UUID");
    }
    match method {
        Method::PATCH => patch_file(&state, caller, &id, &body).await,
        Method::DELETE => delete_file(&state, caller, &id).await,
        _ => get_file(&state, caller, &id).await,
    }
}

async fn owned_file(
    state: &AppState,
    account: AccountId,
    id: &str,
) -> anyhow::Result<Option<FileRow>> {
    let id = id.to_string();
    state
        .storage
        .call(move |conn| storage::file_by_link(conn, account, &id))
        .await
}

async fn get_file(state: &AppState, caller: Caller, id: &str) -> Response {
    match owned_file(state, caller.account, id).await {
        Ok(Some(row)) => ok(file_json(state, &row, true)),
        Ok(None) => fail(StatusCode::NOT_FOUND, "File not found"),
        Err(err) => internal(GET_FAILED, err),
    }
}

async fn patch_file(state: &AppState, caller: Caller, id: &str, body: &Bytes) -> Response {
    let request: Value = match serde_json::from_slice(body) {
        Ok(value @ Value::Object(_)) => value,
        Ok(_) => return internal(PATCH_FAILED, "body is not an object"),
        Err(err) => return internal(PATCH_FAILED, err),
    };
    let row = match owned_file(state, caller.account, id).await {
        Ok(Some(row)) => row,
        Ok(None) => return fail(StatusCode::NOT_FOUND, "File not found"),
        Err(err) => return internal(PATCH_FAILED, err),
    };
    let mut name = row.name.clone();
    match request.get("name") {
        None | Some(Value::Null) => {}
        Some(Value::String(new)) if new.is_empty() => {}
        Some(Value::String(new)) => {
            if new.chars().count() > MAX_TITLE_CHARS {
                return internal(PATCH_FAILED, "title longer than 255 characters");
            }
            name = new.clone();
        }
        Some(Value::Bool(false)) => {}
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => {}
        Some(_) => return internal(PATCH_FAILED, "name is not a string"),
    }
    let mut extra = extra_of(&row);
    if let Some(folder) = request.get("folder_id") {
        match folder {
            Value::Null => extra.folder_id = None,
            Value::String(s) if s.is_empty() => extra.folder_id = None,
            Value::String(s) => {
                // Only the foreign key is checked: any existing folder will do.
                if !is_uuid(s) {
                    return internal(PATCH_FAILED, "folder_id is not a UUID");
                }
                let wanted = s.clone();
                let exists = state
                    .storage
                    .call(move |conn| {
                        Ok(conn
                            .query_row(
                                "SELECT 1 FROM fiione_folders WHERE id = ?1",
                                [&wanted],
                                |_| Ok(()),
                            )
                            .optional()?
                            .is_some())
                    })
                    .await;
                match exists {
                    Ok(true) => extra.folder_id = Some(s.clone()),
                    Ok(false) => {
                        return internal(PATCH_FAILED, "folder_id violates the foreign key")
                    }
                    Err(err) => return internal(PATCH_FAILED, err),
                }
            }
            _ => return internal(PATCH_FAILED, "folder_id is not a string"),
        }
    }
    extra.updated_ms = Utc::now().timestamp_millis();
    let row_id = row.id;
    let saved = {
        let name = name.clone();
        let extra_json = match serde_json::to_string(&extra) {
            Ok(text) => text,
            Err(err) => return internal(PATCH_FAILED, err),
        };
        state
            .storage
            .call(move |conn| {
                conn.execute(
                    "UPDATE files SET name = ?1, extra = ?2 WHERE id = ?3",
                    params![name, extra_json, row_id],
                )?;
                Ok(())
            })
            .await
    };
    if let Err(err) = saved {
        return internal(PATCH_FAILED, err);
    }
    ok(json!({
        "id": row.link_id,
        "title": name,
        "folder_id": extra.folder_id,
        "updated_at": iso_ms(extra.updated_ms),
    }))
}

async fn delete_file(state: &AppState, caller: Caller, id: &str) -> Response {
    let account = caller.account;
    let wanted = id.to_string();
    let blob_dir = state.storage.blob_dir().to_path_buf();
    let deleted = state
        .storage
        .call(move |conn| {
            let Some(row) = storage::file_by_link(conn, account, &wanted)? else {
                return Ok(None);
            };
            let tx = conn.transaction()?;
            tx.execute(
                "DELETE FROM fiione_shares WHERE file_id = ?1",
                [&row.link_id],
            )?;
            tx.execute("DELETE FROM files WHERE id = ?1", [row.id])?;
            tx.commit()?;
            Storage::remove_unreferenced_blobs(conn, &blob_dir, std::slice::from_ref(&row.blob_id));
            Ok(Some(row))
        })
        .await;
    match deleted {
        Ok(Some(row)) => ok(json!({"id": row.link_id, "deleted": true})),
        Ok(None) => fail(StatusCode::NOT_FOUND, "File not found"),
        Err(err) => internal(DELETE_FAILED, err),
    }
}

// ---- public objects and share pages ----

async fn cdn_object(
    State(state): State<Arc<AppState>>,
    Path((user, object)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, "").into_response();
    }
    state.stats.count(&format!("{SERVICE}:download"));
    state.faults.apply_latency().await;
    let not_found = || (StatusCode::NOT_FOUND, "Object not found\n").into_response();
    let Some(account) = user
        .strip_prefix("user_")
        .and_then(|n| n.parse::<AccountId>().ok())
    else {
        return not_found();
    };
    let Some(id) = object
        .get(..36)
        .filter(|id| is_uuid(id))
        .map(str::to_string)
    else {
        return not_found();
    };
    let row = match owned_file(&state, account, &id).await {
        Ok(Some(row)) if extra_of(&row).object == object => row,
        Ok(_) => return not_found(),
        Err(err) => {
            tracing::error!("fii.one emulator: {err:#}");
            return (StatusCode::INTERNAL_SERVER_ERROR, "").into_response();
        }
    };
    BlobResponse::for_file(&state, &row, None)
        .into_response(&method, &headers)
        .await
}

async fn share_page(State(state): State<Arc<AppState>>, Path(token): Path<String>) -> Response {
    state.stats.count(&format!("{SERVICE}:share"));
    let found = state
        .storage
        .call(move |conn| {
            let file_id: Option<String> = conn
                .query_row(
                    "SELECT file_id FROM fiione_shares WHERE token = ?1",
                    [&token],
                    |row| row.get(0),
                )
                .optional()?;
            match file_id {
                Some(file_id) => storage::file_by_link_any_account(conn, &file_id),
                None => Ok(None),
            }
        })
        .await;
    match found {
        Ok(Some(row)) => {
            let extra = extra_of(&row);
            let link = direct_link(&state, &row, &extra);
            let title = html_escape(&row.name);
            (
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                format!(
                    "<!doctype html><title>{title}</title><h1>{title}</h1>\
                     <p>{} bytes · <a href=\"{}\">download</a></p>\n",
                    row.size,
                    html_escape(&link)
                ),
            )
                .into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, Json(json!({"error": "Not found"}))).into_response(),
        Err(err) => internal("Failed to load share", err),
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

// ---- admin: folders ----

/// `POST /_emulator/fiione/folders {"name", "parent_id"?, "key"?}` →
/// `{"id": "<uuid>"}`: stands in for the web UI, where real folder ids come from.
async fn admin_create_folder(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(denied) = super::admin::denied(&state, &headers) {
        return denied;
    }
    let bad = |message: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"status": "KO", "message": message})),
        )
            .into_response()
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(err) => return bad(&format!("body is not JSON: {err}")),
    };
    let Some(name) = request
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return bad("\"name\" is required");
    };
    let parent = request
        .get("parent_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let account = match request.get("key").and_then(Value::as_str) {
        Some(key) => match state.fiione.policies.get(key) {
            Some(policy) => Some(policy.account),
            None => return bad("no fii.one account has that key"),
        },
        None => None,
    };
    let id = uuid::Uuid::new_v4().to_string();
    let stored = {
        let id = id.clone();
        state
            .storage
            .call(move |conn| {
                conn.execute(
                    "INSERT INTO fiione_folders (id, account_id, parent_id, name, created_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![id, account, parent, name, Utc::now().timestamp_millis()],
                )?;
                Ok(())
            })
            .await
    };
    match stored {
        Ok(()) => Json(json!({"id": id})).into_response(),
        Err(err) => internal("Failed to create folder", err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn js_parse_int() {
        assert_eq!(parse_int_like_js("2"), Some(2));
        assert_eq!(parse_int_like_js("2abc"), Some(2));
        assert_eq!(parse_int_like_js(" -3"), Some(-3));
        assert_eq!(parse_int_like_js("abc"), None);
        assert_eq!(parse_int_like_js(""), None);
    }

    #[test]
    fn extension_quirk() {
        assert_eq!(object_extension("photo.jpg"), "jpg");
        assert_eq!(object_extension("archive.tar.gz"), "gz");
        assert_eq!(object_extension("README"), "README");
    }

    #[test]
    fn data_uris_and_lenient_base64() {
        assert_eq!(
            split_data_uri("data:image/gif;base64,R0lG"),
            (Some("image/gif"), "R0lG")
        );
        assert_eq!(split_data_uri("R0lG"), (None, "R0lG"));
        assert_eq!(decode_base64_leniently("aGVsbG8="), b"hello");
        assert_eq!(decode_base64_leniently("aGVs\nbG8"), b"hello");
        assert_eq!(decode_base64_leniently("_-8"), vec![0xff, 0xef]);
    }

    #[test]
    fn key_options() {
        let entry = |options: &[(&str, &str)]| KeyEntry {
            service: SERVICE.into(),
            key: "k".into(),
            options: options
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        };
        let p = KeyPolicy::from_entry(&entry(&[("permissions", "read,upload")]), false).unwrap();
        assert!(p.read && p.upload && !p.delete);
        assert_eq!(p.hourly_limit, None);
        let p = KeyPolicy::from_entry(&entry(&[("plan", "pro")]), true).unwrap();
        assert_eq!(p.hourly_limit, Some(1000));
        assert_eq!(p.max_file_bytes, 2048 * MB);
        assert!(KeyPolicy::from_entry(&entry(&[("permissions", "write")]), false).is_err());
        assert!(KeyPolicy::from_entry(&entry(&[("plan", "gold")]), false).is_err());
    }
}
