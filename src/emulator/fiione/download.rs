//! Public `direct_link` objects under `/fiione-cdn/` (GET/HEAD with Range,
//! like the real R2 bucket) and share pages under `/fiione/s/`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rusqlite::OptionalExtension;
use serde_json::json;

use super::files::owned_file;
use super::{direct_link, extra_of, internal, is_uuid, SERVICE};
use crate::emulator::ranges::BlobResponse;
use crate::emulator::storage::{self, AccountId};
use crate::emulator::AppState;

// ---- public objects and share pages ----

pub(super) async fn cdn_object(
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
    let slot = match method {
        Method::GET => match state.acquire_download(row.account_id) {
            Some(slot) => Some(slot),
            None => return slow_down(),
        },
        _ => None,
    };
    BlobResponse::for_file(&state, &row, None)
        .with_slot(slot)
        .into_response(&method, &headers)
        .await
}

/// What the R2 bucket behind `cdn.fii.one` answers when asked for more
/// than it serves at once: 429 with an S3-style error document, no
/// `Retry-After`.
fn slow_down() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::CONTENT_TYPE, "application/xml")],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
         <Message>Reduce your concurrent request rate for the same object.</Message></Error>\n",
    )
        .into_response()
}

pub(super) async fn share_page(
    State(state): State<Arc<AppState>>,
    Path(token): Path<String>,
) -> Response {
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
