//! `folder/*.cgi`: the folder tree (integer ids, root 0).

use serde_json::{json, Value};

use super::{list_item, paris_date, validate_name, ApiError, Caller, Req};
use crate::emulator::storage::{self, FolderId, ROOT_FOLDER};
use crate::emulator::{AppState, FolderMoveMode};

fn folder_json(folder: &storage::FolderRow) -> Value {
    json!({
        "id": folder.id,
        "name": folder.name,
        "create_date": paris_date(folder.created_at),
        "pass": 0,
    })
}

pub async fn ls(state: &AppState, caller: &Caller, req: Req) -> anyhow::Result<Value> {
    let folder_id = req.int("folder_id")?;
    req.no_sharing("sharing_user")?;
    let with_files = req.flag("files")?;
    let account = caller.account;
    let (folder, shared, subfolders, files) = state
        .storage
        .call(move |conn| {
            let folder = if folder_id == ROOT_FOLDER {
                None
            } else {
                Some(storage::folder(conn, account, folder_id)?.ok_or_else(ApiError::not_found)?)
            };
            let shared = folder_id != ROOT_FOLDER && is_shared(conn, account, folder_id)?;
            let subfolders = storage::subfolders(conn, account, folder_id)?;
            let files = if with_files {
                storage::files_in_folder(conn, account, folder_id)?
            } else {
                Vec::new()
            };
            Ok((folder, shared, subfolders, files))
        })
        .await?;

    let mut out = json!({
        "status": "OK",
        "folder_id": folder_id,
        "name": folder.as_ref().map(|f| f.name.as_str()).unwrap_or(""),
        "pass": 0,
        "shared": u8::from(shared),
    });
    if let Some(folder) = &folder {
        out["create_date"] = json!(paris_date(folder.created_at));
    }
    // Empty lists are left out: the document says they may be absent.
    if !subfolders.is_empty() {
        out["sub_folders"] = subfolders.iter().map(folder_json).collect();
    }
    if with_files {
        out["files"] = json!(files.len());
        if !files.is_empty() {
            out["items"] = files.iter().map(|f| list_item(state, f)).collect();
        }
    }
    Ok(out)
}

pub async fn mkdir(state: &AppState, caller: &Caller, req: Req) -> anyhow::Result<Value> {
    let name = req.string("name")?;
    let parent = req.int("folder_id")?;
    req.no_sharing("sharing_user")?;
    validate_name(&name)?;
    let account = caller.account;
    let folder = state
        .storage
        .call(move |conn| {
            let tx = conn.transaction()?;
            if !storage::folder_exists(&tx, account, parent)? {
                return Err(ApiError::not_found().into());
            }
            if storage::subfolder_named(&tx, account, parent, &name)?.is_some() {
                return Err(ApiError::refused("Folder already exists #704").into());
            }
            let folder = storage::create_folder(&tx, account, parent, &name)?;
            tx.commit()?;
            Ok(folder)
        })
        .await?;
    Ok(json!({"status": "OK", "folder_id": folder.id, "name": folder.name}))
}

pub async fn rm(state: &AppState, caller: &Caller, req: Req) -> anyhow::Result<Value> {
    let folder_id = req.int("folder_id")?;
    if folder_id == ROOT_FOLDER {
        return Err(ApiError::refused("The root folder cannot be removed or moved #706").into());
    }
    let account = caller.account;
    state
        .storage
        .call(move |conn| {
            let tx = conn.transaction()?;
            storage::folder(&tx, account, folder_id)?.ok_or_else(ApiError::not_found)?;
            if !storage::subfolders(&tx, account, folder_id)?.is_empty()
                || !storage::files_in_folder(&tx, account, folder_id)?.is_empty()
            {
                return Err(ApiError::refused("Folder not empty #705").into());
            }
            tx.execute(
                "DELETE FROM folders WHERE id = ?1 AND account_id = ?2",
                rusqlite::params![folder_id, account],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await?;
    Ok(json!({"status": "OK", "message": "Folder removed"}))
}

pub async fn mv(state: &AppState, caller: &Caller, req: Req) -> anyhow::Result<Value> {
    let folder_id = req.int("folder_id")?;
    let destination = req.opt_int("destination_folder_id")?;
    let rename = req.opt_string("rename")?;
    req.no_sharing("destination_user")?;
    if folder_id == ROOT_FOLDER {
        return Err(ApiError::refused("The root folder cannot be removed or moved #706").into());
    }
    if let Some(name) = &rename {
        validate_name(name)?;
    }
    // Which members count (see FolderMoveMode and the README).
    let destination = match (state.settings.folder_move_mode, &rename) {
        (FolderMoveMode::RenameOnly, Some(_)) => None,
        _ => destination,
    };
    if destination.is_none() && rename.is_none() {
        return Err(ApiError::bad_request("destination_folder_id or rename required").into());
    }
    let account = caller.account;
    let (old_name, new_name) = state
        .storage
        .call(move |conn| {
            let tx = conn.transaction()?;
            let folder =
                storage::folder(&tx, account, folder_id)?.ok_or_else(ApiError::not_found)?;
            let target_parent: FolderId = destination.unwrap_or(folder.parent_id);
            if !storage::folder_exists(&tx, account, target_parent)? {
                return Err(ApiError::not_found().into());
            }
            if storage::is_within(&tx, account, target_parent, folder_id)? {
                return Err(ApiError::refused("A folder cannot move into itself #707").into());
            }
            let new_name = rename.unwrap_or_else(|| folder.name.clone());
            if storage::subfolder_named(&tx, account, target_parent, &new_name)?.is_some() {
                return Err(ApiError::refused("Folder already exists #704").into());
            }
            tx.execute(
                "UPDATE folders SET parent_id = ?1, name = ?2 WHERE id = ?3 AND account_id = ?4",
                rusqlite::params![target_parent, new_name, folder_id, account],
            )?;
            tx.commit()?;
            Ok((folder.name, new_name))
        })
        .await?;
    Ok(json!({
        "status": "OK",
        "message": "Folder moved",
        "old_name": old_name,
        "new_name": new_name,
    }))
}

/// The password of a shared folder (`""` when none), `None` if not shared.
fn share_of(
    conn: &rusqlite::Connection,
    account: storage::AccountId,
    folder_id: FolderId,
) -> anyhow::Result<Option<String>> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .query_row(
            "SELECT pass FROM folder_shares WHERE folder_id = ?1 AND account_id = ?2",
            rusqlite::params![folder_id, account],
            |row| row.get(0),
        )
        .optional()?)
}

pub fn is_shared(
    conn: &rusqlite::Connection,
    account: storage::AccountId,
    folder_id: FolderId,
) -> anyhow::Result<bool> {
    Ok(share_of(conn, account, folder_id)?.is_some())
}

/// `folder/share.cgi` (§5): publish a folder at `<public-url>/dir/<id>`.
pub async fn share(state: &AppState, caller: &Caller, req: Req) -> anyhow::Result<Value> {
    let folder_id = req.int("folder_id")?;
    let shared = match req.opt_int("share")? {
        Some(0) => false,
        Some(1) => true,
        Some(_) => return Err(ApiError::bad_request("share must be 0 or 1").into()),
        None => return Err(ApiError::bad_request("missing share").into()),
    };
    let pass = req.opt_string("pass")?.unwrap_or_default();
    // Sharing with other accounts (groupware) is not emulated.
    match req.0.get("shares") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) if items.is_empty() => {}
        Some(Value::Array(_)) => return Err(ApiError::refused("Resource not allowed #631").into()),
        Some(_) => return Err(ApiError::bad_request("shares must be an array").into()),
    }
    if folder_id == ROOT_FOLDER {
        return Err(ApiError::refused("The root folder cannot be shared #706").into());
    }
    let account = caller.account;
    state
        .storage
        .call(move |conn| {
            let tx = conn.transaction()?;
            storage::folder(&tx, account, folder_id)?.ok_or_else(ApiError::not_found)?;
            if shared {
                tx.execute(
                    "INSERT INTO folder_shares (folder_id, account_id, pass) VALUES (?1, ?2, ?3) \
                     ON CONFLICT(folder_id) DO UPDATE SET pass = excluded.pass",
                    rusqlite::params![folder_id, account, pass],
                )?;
            } else {
                tx.execute(
                    "DELETE FROM folder_shares WHERE folder_id = ?1 AND account_id = ?2",
                    rusqlite::params![folder_id, account],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await?;
    let mut out = json!({
        "status": "OK",
        "message": if shared { "Folder shared" } else { "Folder no longer shared" },
    });
    if shared {
        out["url"] = json!(format!("{}/dir/{folder_id}", state.public_url));
    }
    Ok(out)
}

/// What a visitor of `/dir/<id>` may see.
pub enum PublicListing {
    NotShared,
    NeedsPassword,
    WrongPassword,
    Files(Vec<storage::FileRow>),
}

/// Files of a shared folder for a visitor who gave `pass` (if any).
pub async fn public_listing(
    state: &AppState,
    folder_id: FolderId,
    pass: Option<String>,
) -> anyhow::Result<PublicListing> {
    state
        .storage
        .call(move |conn| {
            use rusqlite::OptionalExtension;
            let share: Option<(storage::AccountId, String)> = conn
                .query_row(
                    "SELECT account_id, pass FROM folder_shares WHERE folder_id = ?1",
                    rusqlite::params![folder_id],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            let Some((account, expected)) = share else {
                return Ok(PublicListing::NotShared);
            };
            if !expected.is_empty() {
                match pass {
                    None => return Ok(PublicListing::NeedsPassword),
                    Some(given) if given != expected => return Ok(PublicListing::WrongPassword),
                    Some(_) => {}
                }
            }
            Ok(PublicListing::Files(storage::files_in_folder(
                conn, account, folder_id,
            )?))
        })
        .await
}
