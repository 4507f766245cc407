//! `GET /api/v1/files` (the listing) and `GET|PATCH|DELETE
//! /api/v1/files/{id}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};

use super::auth::{admit, Caller, Permission};
use super::{extra_of, fail, file_json, internal, is_uuid, ok, MAX_TITLE_CHARS};
use crate::emulator::storage::{self, iso_ms, AccountId, FileRow, Storage};
use crate::emulator::AppState;

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

pub(super) async fn list(
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
pub(super) async fn one_file(
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

pub(super) async fn owned_file(
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
}
