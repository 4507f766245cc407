//! Pages anyone can open without a key: `https://1fichier.com/dir/<id>`
//! (§4.16), a shared folder's file list — `?json=1` (GET) or a form
//! `json=1&pass=...` (POST) gives JSON `[{filename, link, size}]`, otherwise
//! HTML — and `https://1fichier.com/?<id>`, a file link's landing page.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::folders::{public_listing, PublicListing};
use super::{error_response, file_url, json_response, ApiError, SERVICE};
use crate::emulator::AppState;

/// Form bodies here are a few short fields.
const MAX_FORM_BYTES: usize = 16 * 1024;

pub async fn public_dir(
    State(state): State<Arc<AppState>>,
    Path(folder): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.stats.count(&format!("{SERVICE}:dir"));
    state.faults.apply_latency().await;
    let mut params = query;
    match method {
        Method::GET => {}
        Method::POST => {
            let is_form = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
            if !is_form || body.len() > MAX_FORM_BYTES {
                return ApiError::bad_request("expected a short urlencoded form").into_response();
            }
            params.extend(url::form_urlencoded::parse(&body).into_owned());
        }
        _ => {
            return ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("Method {method} not allowed #702"),
            )
            .into_response()
        }
    }
    let wants_json = params.get("json").is_some_and(|v| v == "1");
    let Ok(folder_id) = folder.parse::<i64>() else {
        return ApiError::not_found().into_response();
    };
    let listing = match public_listing(&state, folder_id, params.get("pass").cloned()).await {
        Ok(listing) => listing,
        Err(err) => return error_response(err),
    };
    let files = match listing {
        PublicListing::NotShared => return ApiError::not_found().into_response(),
        PublicListing::NeedsPassword => {
            return ApiError::refused("Password not provided. Resource not allowed #631")
                .into_response()
        }
        PublicListing::WrongPassword => {
            return ApiError::refused("Invalid password. Resource not allowed #631").into_response()
        }
        PublicListing::Files(files) => files,
    };
    if wants_json {
        let items: Vec<Value> = files
            .iter()
            .map(|f| json!({"filename": f.name, "link": file_url(&state, &f.link_id), "size": f.size}))
            .collect();
        return json_response(StatusCode::OK, &Value::Array(items), false);
    }
    let mut page =
        String::from("<!DOCTYPE html>\n<html><head><title>Folder</title></head><body><table>\n");
    for f in &files {
        page.push_str(&format!(
            "<tr><td><a href=\"{}\">{}</a></td><td>{}</td></tr>\n",
            super::html_escape(&file_url(&state, &f.link_id)),
            super::html_escape(&f.name),
            f.size
        ));
    }
    page.push_str("</table></body></html>\n");
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response()
}

/// GET on a file link (`<public-url>/?<id>`): the page a person sees.
pub async fn file_page(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    method: Method,
) -> Response {
    state.stats.count(&format!("{SERVICE}:page"));
    state.faults.apply_latency().await;
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n").into_response();
    }
    let link_id = query.filter(|q| {
        (5..=20).contains(&q.len())
            && q.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    });
    let file = match link_id {
        None => None,
        Some(link_id) => match state
            .storage
            .call(move |conn| crate::emulator::storage::file_by_link_any_account(conn, &link_id))
            .await
        {
            Ok(file) => file,
            Err(err) => return error_response(err),
        },
    };
    let (status, body) = match file {
        Some(f) => (
            StatusCode::OK,
            format!(
                "<p>File: {}</p><p>Size: {} bytes</p>",
                super::html_escape(&f.name),
                f.size
            ),
        ),
        None => (
            StatusCode::NOT_FOUND,
            "<p>The requested file could not be found.</p>".to_string(),
        ),
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!("<!DOCTYPE html>\n<html><head><title>1fichier emulator</title></head><body>{body}</body></html>\n"),
    )
        .into_response()
}
