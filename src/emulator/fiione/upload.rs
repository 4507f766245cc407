//! `POST /api/v1/upload`: multipart or JSON (base64, data URIs) bodies,
//! staged, checked against the key's size limit, and stored.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use chrono::Utc;
use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};

use super::auth::{admit, presented_key, Permission};
use super::{
    fail, file_json, internal, object_extension, ok, Extra, API_PREFIX, MAX_TITLE_CHARS, MB,
};
use crate::emulator::storage::{self, AccountId, FileRow, NewFile, StagedBlob, ROOT_FOLDER};
use crate::emulator::AppState;

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

pub(super) async fn upload(
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
    let content_type = crate::emulator::form::content_type(&headers);
    let essence = crate::emulator::form::media_type(&content_type);
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
    let mut multipart =
        crate::emulator::form::counted_multipart(body, boundary, state.stats.clone());
    let mut custom_name: Option<String> = None;
    let mut image: Option<Received> = None;
    let mut file: Option<Received> = None;
    let bad_form = |e: multer::Error| UploadFailure::Internal(anyhow::anyhow!("bad form: {e}"));
    while let Some(mut field) = multipart.next_field().await.map_err(bad_form)? {
        let name = field.name().unwrap_or("").to_string();
        match (
            name.as_str(),
            crate::emulator::form::part_file_name(field.headers()),
        ) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
