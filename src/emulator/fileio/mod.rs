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

mod account;
mod auth;
mod download;
mod files;
mod options;
mod upload;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use serde_json::{json, Value};

use self::account::me;
use self::auth::AccountPolicy;
use self::download::download;
use self::files::{delete, list, update};
use self::upload::upload;
use super::budget::{with_retry_after, RequestBudgets};
use super::keys::KeyEntry;
use super::storage::{self, iso_ms, AccountId, FileRow, Storage};
use super::AppState;

pub const SERVICE: &str = "file.io";
pub const API_PREFIX: &str = "/fileio";

const KEY_LEN: usize = 12;
const DEFAULT_LIFETIME_DAYS: i64 = 14;
const DEFAULT_MAX_UPLOAD: u64 = 2 * 1024 * 1024 * 1024;
const RATE_WINDOW: Duration = Duration::from_secs(60);
const HELP_BASE: &str = "https://file.io/help/api/errors/";

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

/// The documented 429 body, for a download past the account's concurrent
/// downloads: without `Retry-After`, since no wait would be honest (the
/// slot frees when another download ends).
fn too_many_downloads() -> Response {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        "TOO_MANY_REQUESTS",
        "Too many requests",
        None,
    )
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
