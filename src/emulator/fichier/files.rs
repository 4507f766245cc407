//! `file/*.cgi`: files identified by their link URL.

use rusqlite::params;
use serde_json::{json, Value};

use super::{
    file_url, link_id_of, list_item, paris_date, parse_paris_date, validate_name, ApiError, Caller,
    Req, LINK_ID_LEN,
};
use crate::emulator::flood::FloodVerdict;
use crate::emulator::storage::{self, FileRow};
use crate::emulator::AppState;

/// `folder_id` value that lists every file of the account.
const WHOLE_ACCOUNT: i64 = -1;

/// Link ids of `urls`; a URL that is not one of our file links is a
/// missing resource, as an unknown link is on the real service.
fn link_ids(state: &AppState, urls: &[String]) -> Result<Vec<String>, ApiError> {
    urls.iter()
        .map(|url| link_id_of(state, url).ok_or_else(ApiError::not_found))
        .collect()
}

fn date_filter(req: &Req, name: &str) -> Result<Option<i64>, ApiError> {
    match req.opt_string(name)? {
        None => Ok(None),
        Some(text) => parse_paris_date(&text)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("{name} must be YYYY-MM-DD HH:MM:SS"))),
    }
}

pub async fn ls(state: &AppState, caller: &Caller, req: Req) -> anyhow::Result<Value> {
    let folder_id = req.int("folder_id")?;
    req.no_sharing("sharing_user")?;
    let sent_before = date_filter(&req, "sent_before")?;
    let sent_after = date_filter(&req, "sent_after")?;
    if folder_id == WHOLE_ACCOUNT {
        let limit = ("file/ls -1", state.settings.list_all_interval);
        if state.flood.enabled()
            && state.flood.check_endpoint(&caller.key, limit) != FloodVerdict::Allowed
        {
            return Err(super::flood_error(state).into());
        }
    }
    let account = caller.account;
    let files = state
        .storage
        .call(move |conn| {
            if folder_id == WHOLE_ACCOUNT {
                return storage::all_files(conn, account);
            }
            if !storage::folder_exists(conn, account, folder_id)? {
                return Err(ApiError::not_found().into());
            }
            storage::files_in_folder(conn, account, folder_id)
        })
        .await?;
    let items: Vec<Value> = files
        .iter()
        .filter(|f| sent_before.is_none_or(|t| f.created_at < t))
        .filter(|f| sent_after.is_none_or(|t| f.created_at > t))
        .map(|f| list_item(state, f))
        .collect();
    let mut out = json!({"status": "OK", "count": items.len()});
    if !items.is_empty() {
        out["items"] = Value::Array(items);
    }
    Ok(out)
}

pub async fn info(state: &AppState, caller: &Caller, req: Req) -> anyhow::Result<Value> {
    let url = req.string("url")?;
    let link_id = link_id_of(state, &url).ok_or_else(ApiError::not_found)?;
    let account = caller.account;
    let (file, path) = state
        .storage
        .call(move |conn| {
            let file =
                storage::file_by_link(conn, account, &link_id)?.ok_or_else(ApiError::not_found)?;
            let path = storage::folder_path(conn, account, file.folder_id)?.join("/");
            Ok((file, path))
        })
        .await?;
    Ok(json!({
        "status": "OK",
        "url": file_url(state, &file.link_id),
        "filename": file.name,
        "size": file.size,
        "date": paris_date(file.created_at),
        "folder_id": file.folder_id,
        "path": path,
        "checksum": file.whirlpool,
        "content_type": file.content_type,
        "description": "",
        "pass": 0,
        "no_ssl": 0,
        "inline": 0,
        "cdn": 0,
        "acl": {"ip": [], "country": [], "email": [], "premium": 0},
    }))
}

/// Looks every link up; any missing one fails the whole call before a
/// change is made.
fn all_files(
    conn: &rusqlite::Connection,
    account: storage::AccountId,
    link_ids: &[String],
) -> anyhow::Result<Vec<FileRow>> {
    link_ids
        .iter()
        .map(|id| {
            storage::file_by_link(conn, account, id)?.ok_or_else(|| ApiError::not_found().into())
        })
        .collect()
}

pub async fn rm(state: &AppState, caller: &Caller, req: Req) -> anyhow::Result<Value> {
    let items = req.array("files")?;
    if items.is_empty() {
        return Err(ApiError::bad_request("files is empty").into());
    }
    let mut urls = Vec::with_capacity(items.len());
    for item in items {
        let url = item
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad_request("files[] items need a url string"))?;
        urls.push(url.to_string());
    }
    let ids = link_ids(state, &urls)?;
    let account = caller.account;
    let blob_dir = state.storage.blob_dir().to_path_buf();
    let removed = state
        .storage
        .call(move |conn| {
            let tx = conn.transaction()?;
            let files = all_files(&tx, account, &ids)?;
            for file in &files {
                tx.execute("DELETE FROM files WHERE id = ?1", params![file.id])?;
            }
            tx.commit()?;
            let blobs: Vec<String> = files.iter().map(|f| f.blob_id.clone()).collect();
            storage::Storage::remove_unreferenced_blobs(conn, &blob_dir, &blobs);
            Ok(files.len())
        })
        .await?;
    Ok(json!({"status": "OK", "removed": removed, "urls": urls}))
}

/// What file/mv.cgi and file/cp.cgi both read: the files (`urls`), the
/// folder they go to, and an optional new name for a single file.
struct Placement {
    link_ids: Vec<String>,
    destination: storage::FolderId,
    rename: Option<String>,
}

impl Placement {
    /// Reads the destination from `folder_field`; sharing with another
    /// account (`sharing_field`) is refused.
    fn read(
        state: &AppState,
        req: &Req,
        folder_field: &str,
        sharing_field: &str,
    ) -> Result<Placement, ApiError> {
        let urls = req.string_array("urls")?;
        let destination = req.int(folder_field)?;
        let rename = req.opt_string("rename")?;
        req.no_sharing(sharing_field)?;
        if rename.is_some() && urls.len() != 1 {
            return Err(ApiError::refused("rename needs exactly one URL #711"));
        }
        if let Some(name) = &rename {
            validate_name(name)?;
        }
        Ok(Placement {
            link_ids: link_ids(state, &urls)?,
            destination,
            rename,
        })
    }

    /// The files to place, once the destination is known to be a folder
    /// of `account`.
    fn files(
        &self,
        conn: &rusqlite::Connection,
        account: storage::AccountId,
    ) -> anyhow::Result<Vec<FileRow>> {
        if !storage::folder_exists(conn, account, self.destination)? {
            return Err(ApiError::not_found().into());
        }
        all_files(conn, account, &self.link_ids)
    }
}

pub async fn mv(state: &AppState, caller: &Caller, req: Req) -> anyhow::Result<Value> {
    let placement = Placement::read(state, &req, "destination_folder_id", "destination_user")?;
    let account = caller.account;
    let moved = state
        .storage
        .call(move |conn| {
            let tx = conn.transaction()?;
            let files = placement.files(&tx, account)?;
            for file in &files {
                if file.folder_id == placement.destination {
                    return Err(ApiError::refused(
                        "File already in this folder; use file/rename.cgi #710",
                    )
                    .into());
                }
                if placement.rename.as_deref() == Some(file.name.as_str()) {
                    return Err(ApiError::refused("Rename to the same name refused #709").into());
                }
            }
            let mut moved = Vec::with_capacity(files.len());
            for file in files {
                // A moved file gets a new link (the document leaves this
                // open; clients must use the URL returned here).
                let new_link = storage::fresh_link_id(&tx, LINK_ID_LEN)?;
                let name = placement.rename.clone().unwrap_or(file.name);
                tx.execute(
                    "UPDATE files SET folder_id = ?1, name = ?2, link_id = ?3 WHERE id = ?4",
                    params![placement.destination, name, new_link, file.id],
                )?;
                moved.push((new_link, name));
            }
            tx.commit()?;
            Ok(moved)
        })
        .await?;
    let mut out = json!({
        "status": "OK",
        "moved": moved.len(),
        "urls": moved.iter().map(|(link, _)| file_url(state, link)).collect::<Vec<_>>(),
    });
    if let [(_, name)] = moved.as_slice() {
        out["filename"] = json!(name);
    }
    Ok(out)
}

pub async fn rename(state: &AppState, caller: &Caller, req: Req) -> anyhow::Result<Value> {
    let items = req.array("urls")?;
    if items.is_empty() {
        return Err(ApiError::bad_request("urls is empty").into());
    }
    let mut wanted = Vec::with_capacity(items.len());
    for item in items {
        let url = item.get("url").and_then(Value::as_str);
        let name = item.get("filename").and_then(Value::as_str);
        let (Some(url), Some(name)) = (url, name) else {
            return Err(ApiError::bad_request("urls[] items need url and filename strings").into());
        };
        validate_name(name)?;
        wanted.push((url.to_string(), name.to_string()));
    }
    let resolved: Vec<(String, Option<String>, String)> = wanted
        .into_iter()
        .map(|(url, name)| {
            let id = link_id_of(state, &url);
            (url, id, name)
        })
        .collect();
    let account = caller.account;
    let renamed = state
        .storage
        .call(move |conn| {
            let tx = conn.transaction()?;
            let mut renamed = Vec::new();
            for (url, link_id, new_name) in resolved {
                let Some(link_id) = link_id else { continue };
                let Some(file) = storage::file_by_link(&tx, account, &link_id)? else {
                    continue;
                };
                if file.name == new_name {
                    continue;
                }
                tx.execute(
                    "UPDATE files SET name = ?1 WHERE id = ?2",
                    params![new_name, file.id],
                )?;
                renamed.push(json!({
                    "url": url,
                    "old_filename": file.name,
                    "new_filename": new_name,
                }));
            }
            if renamed.is_empty() {
                return Err(ApiError::refused("No file has been renamed #312").into());
            }
            tx.commit()?;
            Ok(renamed)
        })
        .await?;
    Ok(json!({"status": "OK", "renamed": renamed.len(), "urls": renamed}))
}

pub async fn cp(state: &AppState, caller: &Caller, req: Req) -> anyhow::Result<Value> {
    let placement = Placement::read(state, &req, "folder_id", "sharing_user")?;
    let account = caller.account;
    let now = storage::now_unix();
    let copies = state
        .storage
        .call(move |conn| {
            let tx = conn.transaction()?;
            let files = placement.files(&tx, account)?;
            let mut copies = Vec::with_capacity(files.len());
            for file in files {
                let new_link = storage::fresh_link_id(&tx, LINK_ID_LEN)?;
                let name = placement
                    .rename
                    .clone()
                    .unwrap_or_else(|| file.name.clone());
                // The copy shares the blob: contents are immutable.
                tx.execute(
                    "INSERT INTO files (account_id, folder_id, link_id, name, blob_id, \
                     content_type, created_at, extra) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        account,
                        placement.destination,
                        new_link,
                        name,
                        file.blob_id,
                        file.content_type,
                        now,
                        file.extra.to_string()
                    ],
                )?;
                copies.push((file.link_id, new_link, name));
            }
            tx.commit()?;
            Ok(copies)
        })
        .await?;
    let mut out = json!({
        "status": "OK",
        "copied": copies.len(),
        "urls": copies
            .iter()
            .map(|(from, to, _)| json!({"from_url": file_url(state, from), "to_url": file_url(state, to)}))
            .collect::<Vec<_>>(),
    });
    if let [(_, _, name)] = copies.as_slice() {
        out["filename"] = json!(name);
    }
    Ok(out)
}
