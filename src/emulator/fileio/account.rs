//! `GET /fileio/me`: the account's plan, limits and usage.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::auth::admit;
use super::files::live_files;
use super::{method_not_allowed, server_error, unauthorized, DEFAULT_MAX_UPLOAD};
use crate::emulator::AppState;

pub(super) async fn me(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET {
        return method_not_allowed();
    }
    let caller = match admit(&state, "me", &headers, peer, true).await {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let (Some(account), Some(key)) = (caller.account, caller.key) else {
        return unauthorized();
    };
    let policy = state.fileio.policies.get(&key).cloned();
    let used = match live_files(&state, account).await {
        Ok(rows) => rows.iter().map(|r| r.size).sum::<u64>(),
        Err(err) => return server_error(format!("{err:#}")),
    };
    let rate_limit = policy
        .as_ref()
        .and_then(|p| p.rate_limit)
        .unwrap_or(state.fileio.default_rate_limit);
    Json(json!({
        "success": true,
        "status": 200,
        "planId": policy.as_ref().map_or(0, |p| p.plan_id),
        "maxUploadBytes": policy.as_ref().map_or(DEFAULT_MAX_UPLOAD, |p| p.max_upload_bytes),
        "maxStorageBytes": policy.as_ref().map_or(0, |p| p.max_storage_bytes),
        "usedStorageBytes": used,
        "rateLimit": rate_limit,
        "customDomain": null,
        "directDownload": null,
        "paymentCustomerId": null,
        "paymentSubscriptionId": null,
    }))
    .into_response()
}
