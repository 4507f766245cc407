//! `user/info.cgi`: account information and quota.

use serde_json::{json, Value};

use super::{paris_date, Caller, SERVICE};
use crate::emulator::flood::FloodVerdict;
use crate::emulator::storage;
use crate::emulator::AppState;

/// Quota reported when the keys file sets none: 100 TiB.
const DEFAULT_QUOTA: u64 = 100 << 40;

pub async fn user_info(state: &AppState, caller: &Caller) -> anyhow::Result<Value> {
    let limit = ("user/info", state.settings.user_info_interval);
    if state.flood.check_endpoint(&caller.key, limit) != FloodVerdict::Allowed {
        // The document quotes #38 for this endpoint's own limit.
        return Err(super::ApiError::refused("Flood detected: IP Locked #38").into());
    }
    let entry = state
        .account(SERVICE, &caller.key)
        .map(|a| a.entry.clone())
        .ok_or_else(|| super::ApiError::refused("No such user #93"))?;
    let account = caller.account;
    let used = state
        .storage
        .call(move |conn| storage::used_bytes(conn, account))
        .await?;
    let quota = entry
        .option("quota")
        .and_then(|q| q.parse::<u64>().ok())
        .unwrap_or(DEFAULT_QUOTA);
    let email = entry
        .option("email")
        .map(str::to_string)
        .unwrap_or_else(|| format!("account{account}@emulator.invalid"));
    let offer = match entry.option("offer") {
        Some("free") => "0",
        _ => "1",
    };
    let subscription_end = paris_date(storage::now_unix() + 365 * 24 * 3600);
    let available = quota.saturating_sub(used);
    // Types follow rclone's struct (strings where it decodes strings).
    Ok(json!({
        "status": "OK",
        "email": email,
        "offer": offer,
        "subscription_end": subscription_end,
        "2fa": "0",
        "mail_rm": "0",
        "ftp_mode": "0",
        "ftp_did": 0,
        "ftp_report": "0",
        "ru_report": "0",
        "default_domain": 0,
        "default_port": "0",
        "default_port_files": "0",
        "page_limit": 1000,
        "download_menu": "0",
        "use_cdn": "0",
        "cdn": "0",
        "upload_forbidden": "0",
        "stats_date": paris_date(storage::now_unix()),
        "default_quota": quota,
        "default_cold_storage_quota": quota,
        "hot_storage": 0,
        "cold_storage": used,
        "allowed_cold_storage": quota,
        "available_cold_storage": quota,
        "available_storage": available,
        "overquota": 0,
    }))
}
