//! `POST /fileio/`: multipart bodies streamed to a staged blob, checked
//! against the account's upload limit, and stored under a fresh key.

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::Context;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;

use super::auth::{admit, Caller};
use super::options::Options;
use super::{bad_request, details, error, server_error, Extra, DEFAULT_MAX_UPLOAD, KEY_LEN};
use crate::emulator::storage::{self, AccountId, FileRow, NewFile, StagedBlob, ROOT_FOLDER};
use crate::emulator::AppState;

// ---- multipart bodies ----

pub(super) struct Upload {
    pub(super) blob: StagedBlob,
    pub(super) file_name: String,
    pub(super) mime: String,
}

pub(super) struct Form {
    pub(super) file: Option<Upload>,
    pub(super) fields: HashMap<String, String>,
}

/// Reads a multipart or url-encoded body (or none). A file part larger
/// than `max_bytes` is read to the end, then refused with 413.
pub(super) async fn read_form(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    max_bytes: u64,
) -> Result<Form, Response> {
    let content_type = crate::emulator::form::content_type(headers);
    let essence = crate::emulator::form::media_type(&content_type);
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
    let mut multipart =
        crate::emulator::form::counted_multipart(body, boundary, state.stats.clone());
    let bad = |e: multer::Error| bad_request(&format!("Malformed multipart body: {e}"));
    let mut too_large = false;
    while let Some(mut field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_string();
        match (
            name.as_str(),
            crate::emulator::form::part_file_name(field.headers()),
        ) {
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

pub(super) fn max_upload(state: &AppState, caller: &Caller) -> u64 {
    caller
        .key
        .as_ref()
        .and_then(|k| state.fileio.policies.get(k))
        .map_or(DEFAULT_MAX_UPLOAD, |p| p.max_upload_bytes)
}

pub(super) async fn upload(
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
