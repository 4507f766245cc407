//! Who may call: the key as the real server reads it, its keys-file policy
//! (permissions, plan, expiry, hourly budget), and the check every API route
//! runs first.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};

use super::{fail, too_many, MB, SERVICE};
use crate::emulator::faults::InjectedFailure;
use crate::emulator::keys::KeyEntry;
use crate::emulator::storage::AccountId;
use crate::emulator::AppState;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Permission {
    Upload,
    Read,
    Delete,
}

/// What one key may do, from its keys-file options.
#[derive(Clone, Debug)]
pub(super) struct KeyPolicy {
    pub(super) upload: bool,
    pub(super) read: bool,
    pub(super) delete: bool,
    pub(super) max_file_bytes: u64,
    pub(super) expires: Option<DateTime<Utc>>,
    pub(super) active: bool,
    /// Requests per rolling hour, when limited.
    pub(super) hourly_limit: Option<u32>,
    /// The account the key belongs to: keys with the same `account=` option
    /// share one (a real account may hold several keys).
    pub(super) account: AccountId,
}

impl KeyPolicy {
    pub(super) fn from_entry(entry: &KeyEntry, plan_limits: bool) -> anyhow::Result<KeyPolicy> {
        let mut policy = KeyPolicy {
            upload: true,
            read: true,
            delete: true,
            max_file_bytes: 200 * MB,
            expires: None,
            active: true,
            hourly_limit: None,
            account: 0,
        };
        let mut plan_budget = 100;
        if let Some(plan) = entry.option("plan") {
            match plan {
                "free" => {}
                "pro" => {
                    policy.max_file_bytes = 2048 * MB;
                    plan_budget = 1000;
                }
                other => anyhow::bail!("fii.one plan must be free or pro, not {other:?}"),
            }
        }
        if plan_limits {
            policy.hourly_limit = Some(plan_budget);
        }
        if let Some(list) = entry.option("permissions") {
            policy.upload = false;
            policy.read = false;
            policy.delete = false;
            for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
                match word {
                    "upload" => policy.upload = true,
                    "read" => policy.read = true,
                    "delete" => policy.delete = true,
                    other => anyhow::bail!(
                        "fii.one permission {other:?} is not one of upload, read, delete"
                    ),
                }
            }
        }
        if let Some(mb) = entry.option("max_file_size_mb") {
            policy.max_file_bytes = mb
                .parse::<u64>()
                .with_context(|| format!("max_file_size_mb={mb:?}"))?
                * MB;
        }
        if let Some(when) = entry.option("expires") {
            policy.expires = Some(
                DateTime::parse_from_rfc3339(when)
                    .with_context(|| format!("expires={when:?} is not an RFC 3339 date"))?
                    .with_timezone(&Utc),
            );
        }
        if let Some(active) = entry.option("active") {
            policy.active = active
                .parse::<bool>()
                .with_context(|| format!("active={active:?} is not true or false"))?;
        }
        if let Some(limit) = entry.option("requests_per_hour") {
            policy.hourly_limit = Some(
                limit
                    .parse::<u32>()
                    .with_context(|| format!("requests_per_hour={limit:?}"))?,
            );
        }
        Ok(policy)
    }

    fn allows(&self, permission: Permission) -> bool {
        match permission {
            Permission::Upload => self.upload,
            Permission::Read => self.read,
            Permission::Delete => self.delete,
        }
    }
}

/// The key as the real server reads it: `Bearer <key>`, else the raw
/// Authorization value, else `?key=`.
pub(super) fn presented_key(
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Option<String> {
    let header_value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    match header_value {
        Some(value) => Some(value.strip_prefix("Bearer ").unwrap_or(value).to_string()),
        None => query.get("key").cloned(),
    }
}

/// A caller who passed authentication, rate limiting and the permission check.
pub(super) struct Caller {
    pub(super) account: AccountId,
}

/// Everything every API route does first: count, fault injection, key
/// lookup (401), hourly budget (429), permission (403).
pub(super) async fn admit(
    state: &AppState,
    endpoint: &str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    permission: Permission,
    denied: &str,
) -> Result<Caller, Response> {
    if let Some(failure) = state.begin_api_call(&format!("{SERVICE}:{endpoint}")).await {
        return Err(match failure {
            InjectedFailure::RateLimited => too_many(Duration::from_secs(1)),
            InjectedFailure::ServerError(code) => fail(
                StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                "Internal server error",
            ),
        });
    }
    let unauthorized = || fail(StatusCode::UNAUTHORIZED, "Invalid or missing API key");
    let key = presented_key(headers, query).ok_or_else(unauthorized)?;
    let policy = state.fiione.policies.get(&key).ok_or_else(unauthorized)?;
    if !policy.active || policy.expires.is_some_and(|t| t <= Utc::now()) {
        return Err(unauthorized());
    }
    if let Some(limit) = policy.hourly_limit {
        if let Some(wait) = state.fiione.hourly_budgets.spend(&key, limit) {
            return Err(too_many(wait));
        }
    }
    if !policy.allows(permission) {
        return Err(fail(StatusCode::FORBIDDEN, denied));
    }
    Ok(Caller {
        account: policy.account,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_options() {
        let entry = |options: &[(&str, &str)]| KeyEntry {
            service: SERVICE.into(),
            key: "k".into(),
            options: options
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        };
        let p = KeyPolicy::from_entry(&entry(&[("permissions", "read,upload")]), false).unwrap();
        assert!(p.read && p.upload && !p.delete);
        assert_eq!(p.hourly_limit, None);
        let p = KeyPolicy::from_entry(&entry(&[("plan", "pro")]), true).unwrap();
        assert_eq!(p.hourly_limit, Some(1000));
        assert_eq!(p.max_file_bytes, 2048 * MB);
        assert!(KeyPolicy::from_entry(&entry(&[("permissions", "write")]), false).is_err());
        assert!(KeyPolicy::from_entry(&entry(&[("plan", "gold")]), false).is_err());
    }
}
