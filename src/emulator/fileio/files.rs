//! The caller's files: the listing (`GET /fileio/`), PATCH (options), PUT
//! (new contents under the same key) and DELETE, and the purge of files
//! that can no longer be downloaded.

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::Context;
use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use rusqlite::params;
use serde_json::{json, Value};

use super::auth::{admit, Caller};
use super::options::Options;
use super::upload::{max_upload, read_form, Upload};
use super::{
    bad_request, details, extra_of, is_live, not_found, server_error, unauthorized, Extra,
};
use crate::emulator::storage::{self, AccountId, FileRow, NewFile, Storage, ROOT_FOLDER};
use crate::emulator::AppState;

/// Deletes rows of files that can no longer be downloaded.
pub(super) fn purge(
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
pub(super) async fn live_files(
    state: &AppState,
    account: AccountId,
) -> anyhow::Result<Vec<FileRow>> {
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

pub(super) async fn list(
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

pub(super) async fn update(
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

pub(super) async fn delete(
    state: &AppState,
    peer: SocketAddr,
    key: &str,
    headers: &HeaderMap,
) -> Response {
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
