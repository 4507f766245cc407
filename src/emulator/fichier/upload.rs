//! The three-step upload: `upload/get_upload_server.cgi` hands out a node
//! host and an id, `POST /upload.cgi?id=` streams the multipart body to disk,
//! `GET /end.pl?xid=` reports the links.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};

use super::{
    bearer_key, content_type_for, error_response, html_escape, json_response, validate_name,
    ApiError, Caller, LINK_ID_LEN, SERVICE,
};
use crate::emulator::storage::{self, NewFile, StagedBlob, ROOT_FOLDER};
use crate::emulator::AppState;

/// Results are kept this long for end.pl, as the service does (~2 h).
const RESULT_KEPT: Duration = Duration::from_secs(2 * 3600);
/// How long an issued upload id stays usable (the service bounds an upload
/// process to 4 hours).
const UPLOAD_WINDOW: Duration = Duration::from_secs(4 * 3600);
/// The service's per-upload file count limit.
const MAX_FILES_PER_UPLOAD: usize = 500;
/// The service's per-file size limit (300 GB).
const MAX_FILE_BYTES: u64 = 300_000_000_000;
/// Text fields are tiny; anything longer is abuse.
const MAX_TEXT_FIELD: usize = 64 * 1024;

pub async fn get_upload_server(state: &AppState, caller: &Caller) -> anyhow::Result<Value> {
    let id = storage::random_alnum(10);
    let account = caller.account;
    let session = id.clone();
    state
        .storage
        .call(move |conn| {
            let now = storage::now_unix();
            // Forget results past their keeping time and ids never used
            // within the service's 4-hour upload window.
            conn.execute(
                "DELETE FROM upload_sessions WHERE service = ?1 AND \
                 ((completed_at IS NOT NULL AND completed_at < ?2) OR \
                  (completed_at IS NULL AND created_at < ?3))",
                params![
                    SERVICE,
                    now - RESULT_KEPT.as_secs() as i64,
                    now - UPLOAD_WINDOW.as_secs() as i64
                ],
            )?;
            conn.execute(
                "INSERT INTO upload_sessions (id, service, account_id, created_at) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![session, SERVICE, account, now],
            )?;
            Ok(())
        })
        .await?;
    Ok(json!({"url": upload_host(state), "id": id}))
}

/// The bare `host[:port]` of the public URL (clients prepend the scheme).
fn upload_host(state: &AppState) -> String {
    let url = url::Url::parse(&state.public_url).ok();
    match url {
        Some(url) => {
            let host = url.host_str().unwrap_or("127.0.0.1").to_string();
            match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        }
        None => "127.0.0.1".to_string(),
    }
}

struct Session {
    account_id: Option<i64>,
    completed: bool,
}

async fn load_session(state: &AppState, id: String) -> anyhow::Result<Option<Session>> {
    state
        .storage
        .call(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT account_id, completed_at IS NOT NULL FROM upload_sessions \
                     WHERE id = ?1 AND service = ?2 AND created_at >= ?3",
                    params![
                        id,
                        SERVICE,
                        storage::now_unix() - UPLOAD_WINDOW.as_secs() as i64
                    ],
                    |row| {
                        Ok(Session {
                            account_id: row.get(0)?,
                            completed: row.get(1)?,
                        })
                    },
                )
                .optional()?)
        })
        .await
}

/// One file part fully received and staged.
struct ReceivedFile {
    name: String,
    blob: StagedBlob,
}

fn discard_all(files: Vec<ReceivedFile>) {
    for file in files {
        file.blob.discard();
    }
}

pub async fn upload_cgi(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    state.stats.count(&format!("{SERVICE}:upload"));
    state.faults.apply_latency().await;
    if method != Method::POST {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Method {method} not allowed #702"),
        )
        .into_response();
    }
    match receive_upload(&state, &query, &headers, body).await {
        Ok(xid) => {
            let location = format!("{}/end.pl?xid={xid}", state.public_url);
            let page =
                format!("<html><body><a href=\"{location}\">Upload complete</a></body></html>\n");
            let mut response = (StatusCode::FOUND, page).into_response();
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            response
        }
        Err(err) => error_response(err),
    }
}

async fn receive_upload(
    state: &Arc<AppState>,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> anyhow::Result<String> {
    let xid = query
        .get("id")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("missing id"))?;
    let session = load_session(state, xid.clone())
        .await?
        .ok_or_else(|| ApiError::refused("Unknown upload id #713"))?;
    if session.completed {
        return Err(ApiError::refused("Upload id already used #713").into());
    }

    // Without a key the files go to an anonymous upload, not the account.
    let account_id = match bearer_key(headers) {
        None => state.fichier.anonymous_account,
        Some(key) => {
            let account = state
                .account(SERVICE, key)
                .ok_or_else(|| ApiError::refused("No such user #93"))?;
            if session.account_id.is_some_and(|id| id != account.id) {
                return Err(ApiError::refused("Upload id belongs to another account #713").into());
            }
            account.id
        }
    };

    if headers.get(header::CONTENT_LENGTH).is_none() {
        return Err(ApiError::new(
            StatusCode::LENGTH_REQUIRED,
            "Content-Length required (full size of the upload) #719",
        )
        .into());
    }
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
        .ok_or_else(|| ApiError::bad_request("body must be multipart/form-data"))?;

    let mut multipart =
        crate::emulator::form::counted_multipart(body, boundary, state.stats.clone());

    let mut did: Option<String> = None;
    let mut received: Vec<ReceivedFile> = Vec::new();
    let outcome: anyhow::Result<()> = async {
        while let Some(mut field) = multipart
            .next_field()
            .await
            .map_err(|e| ApiError::bad_request(format!("multipart: {e}")))?
        {
            let field_name = field.name().unwrap_or("").to_string();
            if field_name == "file[]" {
                if received.len() >= MAX_FILES_PER_UPLOAD {
                    return Err(ApiError::refused("Too many files in one upload #715").into());
                }
                let name = field
                    .file_name()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::bad_request("file[] part without a file name"))?;
                validate_name(&name)?;
                let mut writer = state.storage.blob_writer()?;
                let mut size = 0u64;
                while let Some(chunk) = field
                    .chunk()
                    .await
                    .map_err(|e| ApiError::bad_request(format!("multipart: {e}")))?
                {
                    size += chunk.len() as u64;
                    if size > MAX_FILE_BYTES {
                        return Err(ApiError::refused("File too large #720").into());
                    }
                    writer.write(chunk).await?;
                }
                let blob = writer.finish().await?;
                received.push(ReceivedFile { name, blob });
            } else {
                // did, mail, dpass, domain, message...: small text fields.
                let mut text = Vec::new();
                while let Some(chunk) = field
                    .chunk()
                    .await
                    .map_err(|e| ApiError::bad_request(format!("multipart: {e}")))?
                {
                    text.extend_from_slice(&chunk);
                    if text.len() > MAX_TEXT_FIELD {
                        return Err(ApiError::bad_request(format!("{field_name} too long")).into());
                    }
                }
                if field_name == "did" {
                    did = Some(String::from_utf8_lossy(&text).trim().to_string());
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(err) = outcome {
        discard_all(received);
        return Err(err);
    }
    if received.is_empty() {
        return Err(ApiError::refused("No file received #718").into());
    }
    if received.iter().any(|f| f.blob.size == 0) {
        discard_all(received);
        return Err(ApiError::refused("Empty files are not allowed #712").into());
    }

    let upload_bytes: u64 = received.iter().map(|f| f.blob.size).sum();
    let quota = state
        .accounts
        .values()
        .find(|a| a.id == account_id)
        .and_then(|a| a.entry.option("quota"))
        .and_then(|q| q.parse::<u64>().ok());
    let requested_folder = did.and_then(|d| d.parse::<i64>().ok());
    let file_count = received.len();
    let placement = state
        .storage
        .call(move |conn| {
            // An unknown or invalid did puts the files in the root (§4.13).
            let folder = match requested_folder {
                Some(id) if storage::folder_exists(conn, account_id, id)? => id,
                _ => ROOT_FOLDER,
            };
            let used = storage::used_bytes(conn, account_id)?;
            let mut links = Vec::with_capacity(file_count);
            while links.len() < file_count {
                let candidate = storage::fresh_link_id(conn, LINK_ID_LEN)?;
                if !links.contains(&candidate) {
                    links.push(candidate);
                }
            }
            Ok((folder, used, links))
        })
        .await;
    let (folder_id, used, mut link_ids) = match placement {
        Ok(p) => p,
        Err(err) => {
            discard_all(received);
            return Err(err);
        }
    };
    if quota.is_some_and(|q| used + upload_bytes > q) {
        discard_all(received);
        return Err(ApiError::refused("Not enough space in the account #721").into());
    }

    let anonymous = account_id == state.fichier.anonymous_account;
    let now = storage::now_unix();
    let staged: Vec<(StagedBlob, NewFile)> = received
        .into_iter()
        .map(|file| {
            let link_id = link_ids
                .pop()
                .unwrap_or_else(|| storage::random_lower_alnum(LINK_ID_LEN));
            let extra = if anonymous {
                json!({"remove_code": storage::random_lower_alnum(16)})
            } else {
                json!({})
            };
            let new_file = NewFile {
                account_id,
                folder_id,
                link_id,
                content_type: content_type_for(&file.name),
                name: file.name,
                created_at: now,
                extra,
            };
            (file.blob, new_file)
        })
        .collect();

    let public_url = state.public_url.clone();
    let session_id = xid.clone();
    state
        .storage
        .commit_files(staged, move |tx, rows| {
            let links: Vec<Value> = rows
                .iter()
                .map(|row| {
                    let remove = row
                        .extra
                        .get("remove_code")
                        .and_then(Value::as_str)
                        .map(|code| format!("{public_url}/remove/{}/{code}", row.link_id))
                        .unwrap_or_default();
                    json!({
                        "download": format!("{public_url}/?{}", row.link_id),
                        "filename": row.name,
                        "remove": remove,
                        "size": row.size.to_string(),
                        "whirlpool": row.whirlpool,
                    })
                })
                .collect();
            let result = json!({"incoming": 0, "links": links});
            tx.execute(
                "UPDATE upload_sessions SET completed_at = ?1, result = ?2 WHERE id = ?3",
                params![now, result.to_string(), session_id],
            )?;
            Ok(())
        })
        .await?;
    Ok(xid)
}

/// `GET /end.pl?xid=`: JSON with the `JSON: 1` header or `?JSON=1`, HTML otherwise.
pub async fn end_pl(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    state.stats.count(&format!("{SERVICE}:end"));
    state.faults.apply_latency().await;
    if method != Method::GET {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Method {method} not allowed #702"),
        )
        .into_response();
    }
    let wants_json = headers
        .get("JSON")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "1")
        || query.get("JSON").is_some_and(|v| v == "1");
    let xid = query.get("xid").cloned().unwrap_or_default();
    let result = state
        .storage
        .call(move |conn| {
            let row: Option<(i64, String)> = conn
                .query_row(
                    "SELECT completed_at, result FROM upload_sessions \
                     WHERE id = ?1 AND service = ?2 AND result IS NOT NULL",
                    params![xid, SERVICE],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            Ok(row)
        })
        .await;
    let result = match result {
        Ok(Some((completed_at, text)))
            if storage::now_unix() - completed_at < RESULT_KEPT.as_secs() as i64 =>
        {
            serde_json::from_str::<Value>(&text)
                .unwrap_or_else(|_| json!({"incoming": 0, "links": []}))
        }
        Ok(_) => json!({"incoming": 0, "links": []}),
        Err(err) => return error_response(err),
    };
    if wants_json {
        return json_response(StatusCode::OK, &result, false);
    }
    let mut page =
        String::from("<!DOCTYPE html>\n<html><head><title>Upload</title></head><body>\n");
    match result.get("links").and_then(Value::as_array) {
        Some(links) if !links.is_empty() => {
            page.push_str("<table>\n");
            for link in links {
                let download = link.get("download").and_then(Value::as_str).unwrap_or("");
                let name = link.get("filename").and_then(Value::as_str).unwrap_or("");
                page.push_str(&format!(
                    "<tr><td>{}</td><td><a href=\"{}\">{}</a></td></tr>\n",
                    html_escape(name),
                    html_escape(download),
                    html_escape(download)
                ));
            }
            page.push_str("</table>\n");
        }
        _ => page.push_str("<p>No upload found.</p>\n"),
    }
    page.push_str("</body></html>\n");
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response()
}
