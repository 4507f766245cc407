//! `remote/request.cgi`, `remote/ls.cgi`, `remote/info.cgi`: the service
//! fetches URLs into the account. The emulator fetches them itself, and only
//! from loopback addresses, so it can never be used to reach the network.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rusqlite::{params, OptionalExtension};
use serde_json::{json, Map, Value};

use super::{
    content_type_for, file_url, paris_date, validate_name, ApiError, Caller, Req, LINK_ID_LEN,
};
use crate::emulator::storage::{self, AccountId, NewFile};
use crate::emulator::AppState;

/// Most URLs one request may carry (the emulator's bound).
const MAX_URLS: usize = 100;
/// A fetch that has not finished by then fails.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3600);

/// Whether `url` is http(s) to a loopback host.
fn loopback_url(url: &str) -> Option<url::Url> {
    let parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return None;
    }
    let loopback = match parsed.host()? {
        url::Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => IpAddr::V4(ip).is_loopback(),
        url::Host::Ipv6(ip) => IpAddr::V6(ip).is_loopback(),
    };
    loopback.then_some(parsed)
}

pub async fn request(state: &Arc<AppState>, caller: &Caller, req: Req) -> anyhow::Result<Value> {
    let urls = req.string_array("urls")?;
    let folder_id = req.int("folder_id")?;
    let headers: Map<String, Value> = match req.0.get("headers") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return Err(ApiError::bad_request("headers must be an object").into()),
    };
    if headers.values().any(|v| !v.is_string()) {
        return Err(ApiError::bad_request("headers values must be strings").into());
    }
    if urls.len() > MAX_URLS {
        return Err(ApiError::bad_request(format!("at most {MAX_URLS} urls")).into());
    }
    for url in &urls {
        if loopback_url(url).is_none() {
            return Err(ApiError::refused(format!(
                "Only loopback http(s) URLs can be fetched by the emulator: {url} #714"
            ))
            .into());
        }
    }
    let account = caller.account;
    let now = storage::now_unix();
    let stored_request = json!({"urls": urls, "headers": headers});
    let id = state
        .storage
        .call(move |conn| {
            if !storage::folder_exists(conn, account, folder_id)? {
                return Err(ApiError::not_found().into());
            }
            conn.execute(
                "INSERT INTO remote_requests (account_id, folder_id, request, requested_at) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![account, folder_id, stored_request.to_string(), now],
            )?;
            Ok(conn.last_insert_rowid())
        })
        .await?;

    let task_state = state.clone();
    let task_urls = urls.clone();
    let task_headers = headers.clone();
    tokio::spawn(async move {
        let results = fetch_all(&task_state, account, folder_id, &task_urls, &task_headers).await;
        let finished = storage::now_unix();
        let result = Value::Array(results);
        let stored = task_state
            .storage
            .call(move |conn| {
                conn.execute(
                    "UPDATE remote_requests SET executed_at = ?1, result = ?2 WHERE id = ?3",
                    params![finished, result.to_string(), id],
                )?;
                Ok(())
            })
            .await;
        if let Err(err) = stored {
            tracing::error!("recording remote request {id}: {err:#}");
        }
    });

    Ok(json!({
        "status": "OK",
        "id": id,
        "date": paris_date(now),
        "urls": urls,
        "headers": headers,
    }))
}

async fn fetch_all(
    state: &Arc<AppState>,
    account: AccountId,
    folder_id: i64,
    urls: &[String],
    headers: &Map<String, Value>,
) -> Vec<Value> {
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(FETCH_TIMEOUT)
        .no_proxy()
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            return urls
                .iter()
                .map(|url| json!({"status": "KO", "url": url, "download_link": "", "message": err.to_string()}))
                .collect()
        }
    };
    let mut results = Vec::with_capacity(urls.len());
    for url in urls {
        match fetch_one(state, &client, account, folder_id, url, headers).await {
            Ok(link) => results.push(json!({
                "status": "OK", "url": url, "download_link": link, "message": "",
            })),
            Err(err) => results.push(json!({
                "status": "KO", "url": url, "download_link": "", "message": format!("{err:#}"),
            })),
        }
    }
    results
}

/// The file name a fetched URL is stored under: the last path segment.
fn name_from_url(url: &url::Url) -> String {
    let segment = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or("");
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .to_string();
    if decoded.is_empty() {
        "download".to_string()
    } else {
        decoded
    }
}

async fn fetch_one(
    state: &Arc<AppState>,
    client: &reqwest::Client,
    account: AccountId,
    folder_id: i64,
    url: &str,
    headers: &Map<String, Value>,
) -> anyhow::Result<String> {
    let parsed = loopback_url(url).ok_or_else(|| anyhow::anyhow!("not a loopback URL"))?;
    let name = name_from_url(&parsed);
    validate_name(&name).map_err(|e| anyhow::anyhow!(e.message))?;
    let mut request = client.get(parsed);
    for (key, value) in headers {
        if let Some(value) = value.as_str() {
            request = request.header(key.as_str(), value);
        }
    }
    let response = request.send().await?;
    if !response.status().is_success() {
        anyhow::bail!("HTTP {}", response.status());
    }
    let mut writer = state.storage.blob_writer()?;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        writer.write(chunk?).await?;
    }
    let blob = writer.finish().await?;
    if blob.size == 0 {
        anyhow::bail!("Empty files are not allowed #712");
    }
    let link_id = state
        .storage
        .call(|conn| storage::fresh_link_id(conn, LINK_ID_LEN))
        .await?;
    let new_file = NewFile {
        account_id: account,
        // The folder may have been removed while fetching: fall back to root.
        folder_id,
        link_id: link_id.clone(),
        content_type: content_type_for(&name),
        name,
        created_at: storage::now_unix(),
        extra: json!({}),
    };
    let folder_still_there = {
        let folder = folder_id;
        state
            .storage
            .call(move |conn| storage::folder_exists(conn, account, folder))
            .await?
    };
    let new_file = if folder_still_there {
        new_file
    } else {
        NewFile {
            folder_id: storage::ROOT_FOLDER,
            ..new_file
        }
    };
    state
        .storage
        .commit_files(vec![(blob, new_file)], |_, _| Ok(()))
        .await?;
    Ok(file_url(state, &link_id))
}

pub async fn ls(state: &AppState, caller: &Caller) -> anyhow::Result<Value> {
    let account = caller.account;
    let rows = state
        .storage
        .call(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT id, requested_at, executed_at FROM remote_requests \
                 WHERE account_id = ?1 ORDER BY id",
            )?;
            let rows = stmt
                .query_map(params![account], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, Option<i64>>(2)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await?;
    let data: Vec<Value> = rows
        .into_iter()
        .map(|(id, requested, executed)| {
            json!({
                "id": id,
                "request_date": paris_date(requested),
                "execution_date": executed.map(paris_date),
            })
        })
        .collect();
    Ok(json!({"status": "OK", "data": data}))
}

pub async fn info(state: &AppState, caller: &Caller, req: Req) -> anyhow::Result<Value> {
    let id = req.int("id")?;
    let account = caller.account;
    let row = state
        .storage
        .call(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT request, requested_at, executed_at, result FROM remote_requests \
                     WHERE id = ?1 AND account_id = ?2",
                    params![id, account],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, Option<i64>>(2)?,
                            row.get::<_, Option<String>>(3)?,
                        ))
                    },
                )
                .optional()?)
        })
        .await?;
    let (request, requested, executed, result) = row.ok_or_else(ApiError::not_found)?;
    let request: Value = serde_json::from_str(&request).unwrap_or(Value::Null);
    let result: Value = result
        .and_then(|r| serde_json::from_str(&r).ok())
        .unwrap_or_else(|| json!([]));
    Ok(json!({
        "status": "OK",
        "id": id,
        "request_date": paris_date(requested),
        "execution_date": executed.map(paris_date),
        "links": request.get("urls").cloned().unwrap_or_else(|| json!([])),
        "result": result,
    }))
}
