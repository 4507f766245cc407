//! `GET|HEAD /fileio/{key}`: a download, counted against `maxDownloads`;
//! a used-up auto-deleting file is removed once its last download ends.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, HeaderMap, Method};
use axum::response::Response;
use chrono::Utc;
use rusqlite::params;

use super::auth::admit;
use super::files::purge;
use super::{extra_of, is_live, not_found, server_error, too_many_downloads};
use crate::emulator::ranges::BlobResponse;
use crate::emulator::slots::DownloadSlot;
use crate::emulator::storage::{self, FileRow};
use crate::emulator::AppState;

/// Removes a consumed file once its last download is over.
struct ConsumedGuard {
    state: Arc<AppState>,
    row: FileRow,
}

impl Drop for ConsumedGuard {
    fn drop(&mut self) {
        let state = self.state.clone();
        let row = self.row.clone();
        let blob_dir = state.storage.blob_dir().to_path_buf();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let result = state
                .storage
                .call(move |conn| purge(conn, &blob_dir, std::slice::from_ref(&row)))
                .await;
            if let Err(err) = result {
                tracing::error!("file.io emulator: removing a consumed file: {err:#}");
            }
        });
    }
}

enum Lookup {
    Found {
        /// Boxed: a row is large next to the other answers.
        row: Box<FileRow>,
        consumed: bool,
        slot: Option<DownloadSlot>,
    },
    /// Unknown, expired or used up.
    Gone,
    /// The owner's account already has the most downloads the link allows.
    Busy,
}

pub(super) async fn download(
    state: &Arc<AppState>,
    peer: SocketAddr,
    key: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Response {
    if let Err(response) = admit(state, "download", headers, peer, false).await {
        return response;
    }
    let partial = *method == Method::HEAD || headers.contains_key(header::RANGE);
    let counts = !partial || state.fileio.partial_reads_consume;
    let wanted = key.to_string();
    let blob_dir = state.storage.blob_dir().to_path_buf();
    let takes_slot = *method == Method::GET;
    let slots = state.clone();
    // Check, take a download slot, count and (at the limit) mark consumed
    // in one transaction, so two concurrent downloads cannot both take the
    // last one, and a refused connection spends nothing.
    let outcome = state
        .storage
        .call(move |conn| {
            let tx = conn.transaction()?;
            let Some(mut row) = storage::file_by_link_any_account(&tx, &wanted)? else {
                return Ok(Lookup::Gone);
            };
            let mut extra = extra_of(&row);
            let now_ms = Utc::now().timestamp_millis();
            if !is_live(&extra, now_ms) {
                if !extra.consumed {
                    purge(&tx, &blob_dir, std::slice::from_ref(&row))?;
                }
                tx.commit()?;
                return Ok(Lookup::Gone);
            }
            let slot = match takes_slot {
                true => match slots.acquire_download(row.account_id) {
                    Some(slot) => Some(slot),
                    None => return Ok(Lookup::Busy),
                },
                false => None,
            };
            if counts {
                extra.downloads += 1;
                if extra.downloads >= extra.max_downloads && extra.auto_delete {
                    extra.consumed = true;
                }
                row.extra = serde_json::to_value(&extra)?;
                tx.execute(
                    "UPDATE files SET extra = ?1 WHERE id = ?2",
                    params![row.extra.to_string(), row.id],
                )?;
            }
            tx.commit()?;
            Ok(Lookup::Found {
                row: Box::new(row),
                consumed: extra.consumed,
                slot,
            })
        })
        .await;
    let (row, consumed, slot) = match outcome {
        Ok(Lookup::Found {
            row,
            consumed,
            slot,
        }) => (*row, consumed, slot),
        Ok(Lookup::Gone) => return not_found(key),
        Ok(Lookup::Busy) => return too_many_downloads(),
        Err(err) => return server_error(format!("{err:#}")),
    };
    let guard: Option<Box<dyn Send + Sync>> = consumed.then(|| {
        Box::new(ConsumedGuard {
            state: state.clone(),
            row: row.clone(),
        }) as Box<dyn Send + Sync>
    });
    BlobResponse::for_file(state, &row, guard)
        .with_slot(slot)
        .into_response(method, headers)
        .await
}
