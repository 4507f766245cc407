//! Who is calling: the key as the real server reads it (Bearer or Basic),
//! the account's keys-file limits, and the check every route runs first
//! (key, per-minute budget).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine as _;

use super::{error, too_many, unauthorized, DEFAULT_MAX_UPLOAD, SERVICE};
use crate::emulator::faults::InjectedFailure;
use crate::emulator::keys::KeyEntry;
use crate::emulator::storage::AccountId;
use crate::emulator::AppState;

/// Limits of one keyed account, from its keys-file options.
#[derive(Clone, Debug)]
pub(super) struct AccountPolicy {
    pub(super) plan_id: u32,
    pub(super) rate_limit: Option<u32>,
    pub(super) max_upload_bytes: u64,
    pub(super) max_storage_bytes: u64,
}

impl AccountPolicy {
    pub(super) fn from_entry(entry: &KeyEntry) -> anyhow::Result<AccountPolicy> {
        let number = |name: &str| -> anyhow::Result<Option<u64>> {
            entry
                .option(name)
                .map(|v| v.parse::<u64>().with_context(|| format!("{name}={v:?}")))
                .transpose()
        };
        let plan_id = match entry.option("plan").unwrap_or("free") {
            "free" => 0,
            "pro" => 1,
            other => anyhow::bail!("file.io plan must be free or pro, not {other:?}"),
        };
        Ok(AccountPolicy {
            plan_id,
            rate_limit: number("rate_limit")?
                .map(|n| u32::try_from(n).context("rate_limit too large"))
                .transpose()?,
            max_upload_bytes: number("max_upload_bytes")?.unwrap_or(DEFAULT_MAX_UPLOAD),
            max_storage_bytes: number("max_storage_bytes")?.unwrap_or(0),
        })
    }
}

// ---- callers ----

/// The key from `Authorization: Bearer KEY` or Basic with the key as user name.
fn presented_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_string()).filter(|k| !k.is_empty());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let user = text.split(':').next().unwrap_or("");
        return Some(user.to_string()).filter(|k| !k.is_empty());
    }
    None
}

/// Who is calling: an account, or nobody (anonymous).
pub(super) struct Caller {
    pub(super) account: Option<AccountId>,
    pub(super) key: Option<String>,
}

/// Counting, fault injection, authentication (a presented key must be
/// valid) and the per-minute rate limit, shared by every route.
pub(super) async fn admit(
    state: &AppState,
    endpoint: &str,
    headers: &HeaderMap,
    peer: SocketAddr,
    key_required: bool,
) -> Result<Caller, Response> {
    if let Some(failure) = state.begin_api_call(&format!("{SERVICE}:{endpoint}")).await {
        return Err(match failure {
            InjectedFailure::RateLimited => too_many(Duration::from_secs(1)),
            InjectedFailure::ServerError(code) => error(
                StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                "INTERNAL_ERROR",
                "Internal error",
                None,
            ),
        });
    }
    let caller = match presented_key(headers) {
        Some(key) => match state.account(SERVICE, &key) {
            Some(account) => Caller {
                account: Some(account.id),
                key: Some(key),
            },
            None => return Err(unauthorized()),
        },
        None if key_required => return Err(unauthorized()),
        None => Caller {
            account: None,
            key: None,
        },
    };
    let (identity, limit) = match &caller.key {
        Some(key) => (
            format!("key:{key}"),
            state
                .fileio
                .policies
                .get(key)
                .and_then(|p| p.rate_limit)
                .unwrap_or(state.fileio.default_rate_limit),
        ),
        None => (format!("ip:{}", peer.ip()), state.fileio.default_rate_limit),
    };
    if let Some(wait) = state.fileio.over_limit(&identity, limit) {
        return Err(too_many(wait));
    }
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn basic_and_bearer_keys() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(presented_key(&headers).as_deref(), Some("abc"));
        let basic = base64::engine::general_purpose::STANDARD.encode("abc:");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {basic}")).unwrap(),
        );
        assert_eq!(presented_key(&headers).as_deref(), Some("abc"));
    }
}
