//! `/_emulator/*`: counters, fault and link settings, for tests and benchmarks.
//! Every call needs `Authorization: Bearer <admin key>`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::faults::FaultUpdate;
use super::link::LinkUpdate;
use super::AppState;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/_emulator/stats", get(stats))
        .route("/_emulator/stats/reset", post(reset_stats))
        .route("/_emulator/faults", get(get_faults).post(set_faults))
        .route("/_emulator/link", get(get_link).post(set_link))
        .with_state(state)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"status": "KO", "message": message}))).into_response()
}

/// The refusal to send unless the bearer token is the admin key (compared
/// in constant time).
pub(crate) fn denied(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return Some(error(StatusCode::UNAUTHORIZED, "admin key required"));
    };
    let expected = state.admin_key.as_bytes();
    let given = presented.as_bytes();
    let mut diff = expected.len() ^ given.len();
    for (i, b) in expected.iter().enumerate() {
        diff |= (b ^ given.get(i).copied().unwrap_or(0)) as usize;
    }
    if diff != 0 {
        return Some(error(StatusCode::FORBIDDEN, "wrong admin key"));
    }
    None
}

async fn stats(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(denied) = denied(&state, &headers) {
        return denied;
    }
    let mut snapshot = json!(state.stats.snapshot());
    snapshot["downloads"] = json!(state.link.slots.snapshot());
    Json(snapshot).into_response()
}

async fn reset_stats(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(denied) = denied(&state, &headers) {
        return denied;
    }
    state.stats.reset();
    state.link.slots.reset();
    Json(json!({"status": "OK"})).into_response()
}

async fn get_faults(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(denied) = denied(&state, &headers) {
        return denied;
    }
    Json(state.faults.get()).into_response()
}

async fn set_faults(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(denied) = denied(&state, &headers) {
        return denied;
    }
    let update: FaultUpdate = match serde_json::from_slice(&body) {
        Ok(update) => update,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("bad fault settings: {err}"),
            )
        }
    };
    match state.faults.update(update) {
        Ok(settings) => Json(settings).into_response(),
        Err(message) => error(StatusCode::BAD_REQUEST, &message),
    }
}

async fn get_link(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(denied) = denied(&state, &headers) {
        return denied;
    }
    Json(state.link.get()).into_response()
}

async fn set_link(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(denied) = denied(&state, &headers) {
        return denied;
    }
    let update: LinkUpdate = match serde_json::from_slice(&body) {
        Ok(update) => update,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("bad link settings: {err}"),
            )
        }
    };
    match state.link.update(update) {
        Ok(settings) => Json(settings).into_response(),
        Err(message) => error(StatusCode::BAD_REQUEST, &message),
    }
}
