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

mod auth;
mod download;
mod files;
mod folders;
mod upload;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use self::auth::KeyPolicy;
use self::download::{cdn_object, share_page};
use self::files::{list, one_file};
use self::folders::admin_create_folder;
use self::upload::upload;
use super::budget::{with_retry_after, RequestBudgets};
use super::keys::KeyEntry;
use super::storage::{self, iso_ms, AccountId, FileRow, Storage};
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_quirk() {
        assert_eq!(object_extension("photo.jpg"), "jpg");
        assert_eq!(object_extension("archive.tar.gz"), "gz");
        assert_eq!(object_extension("README"), "README");
    }
}
