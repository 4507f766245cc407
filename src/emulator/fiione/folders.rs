//! `POST /_emulator/fiione/folders`: the test-only stand-in for the web UI,
//! where real folder ids come from (the public API has no folder endpoints).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use rusqlite::params;
use serde_json::{json, Value};

use super::internal;
use crate::emulator::AppState;

// ---- admin: folders ----

/// `POST /_emulator/fiione/folders {"name", "parent_id"?, "key"?}` →
/// `{"id": "<uuid>"}`: stands in for the web UI, where real folder ids come from.
pub(super) async fn admin_create_folder(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(denied) = crate::emulator::admin::denied(&state, &headers) {
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
