//! Rewrites that change nothing: a remote file opened for writing and
//! closed with the very bytes it had (`rsync --inplace`, an editor saving
//! unchanged text, `cp` of the same file over itself) is not uploaded
//! again. The upload step first compares the staged bytes with the file
//! the copy started from; when they are the same, that file is recorded as
//! the entry's upload, so it keeps its id and share link and nothing is
//! sent or removed.
//!
//! What "the same" means depends on what the service tells:
//! - a content checksum (1fichier's Whirlpool): same size and the staged
//!   file's checksum, computed with the service's algorithm, equal to it;
//! - no checksum, and reading is free (fii.one; file.io files this machine
//!   keeps a copy of): same size, then the bytes read and compared,
//!   stopping at the first difference (a download costs less than the
//!   upload it saves, and keeps the link);
//! - no checksum, and reading would spend one of a file's limited
//!   downloads (other file.io files): never compared, the file is
//!   uploaded as any other change.
//!
//! The remote file is then asked for once more (it may have been removed
//! or replaced by another client meanwhile): only a file still there with
//! the same size and checksum is kept.

use futures::StreamExt;
use tokio::io::AsyncReadExt;

use super::journal::{EntryRecord, ObsoleteReason, Progress};
use super::{BaseFile, Inner, WriteBackError};
use crate::remote::{FileEntry, RemoteError};

/// Bytes read from the staging file per comparison step.
const COMPARE_CHUNK: usize = 1 << 20;

impl Inner {
    /// Records the entry's base file as its upload when the staged content
    /// is identical to it. Answers whether it did (then there is nothing
    /// to upload).
    pub(super) async fn keep_identical_base(
        &self,
        row: &EntryRecord,
    ) -> Result<bool, UnchangedError> {
        let Some(base) = self.state.lock().bases.get(&row.id).cloned() else {
            return Ok(false);
        };
        let still_replaced = row
            .obsolete
            .iter()
            .any(|(id, reason)| id == &base.file.id && *reason == ObsoleteReason::Base);
        let size = self.staging.len(row.id).map_err(WriteBackError::from)?;
        if !still_replaced || size != base.file.size || !self.same_content(row, &base).await? {
            return Ok(false);
        }
        let current = match self.remote.stat_file(&base.file.id).await {
            Ok(current) if current.size == size && same_checksum(&current, &base.file) => current,
            Ok(_) | Err(RemoteError::NotFound(_)) => return Ok(false),
            Err(error) => return Err(UnchangedError::Remote(error)),
        };
        tracing::info!(entry = %row.id, name = %row.name, id = %base.file.id,
            "content identical to the remote file; keeping it instead of uploading");
        let generation = row.generation;
        self.state.lock().uploaded_files.insert(row.id, current);
        self.modify(row.id, |r| {
            r.obsolete.retain(|(id, _)| id != &base.file.id);
            r.progress = Progress::Uploaded {
                id: base.file.id.clone(),
                generation,
                parent: base.parent.clone(),
                name: base.name.clone(),
                size,
            };
            r.attempts = 0;
            r.retry_at_ms = 0;
            r.last_error = None;
        })?;
        Ok(true)
    }

    /// Whether the staged bytes (already known to have the base's size)
    /// are the base's content.
    async fn same_content(
        &self,
        row: &EntryRecord,
        base: &BaseFile,
    ) -> Result<bool, UnchangedError> {
        let capabilities = self.remote.capabilities();
        if let (Some(kind), Some(expected)) = (capabilities.hash, base.file.checksum.clone()) {
            let path = self.staging.path(row.id);
            let staged =
                tokio::task::spawn_blocking(move || super::staging::content_hash(&path, kind))
                    .await
                    .map_err(|error| WriteBackError::Io(std::io::Error::other(error)))?
                    .map_err(WriteBackError::from)?;
            return Ok(staged.eq_ignore_ascii_case(&expected));
        }
        if base.file.size == 0 || self.remote.read_consumes_download(&base.file.id) {
            return Ok(false);
        }
        self.same_bytes(row, &base.file).await
    }

    /// Downloads `file` and compares it with the staged bytes, stopping at
    /// the first difference.
    async fn same_bytes(
        &self,
        row: &EntryRecord,
        file: &FileEntry,
    ) -> Result<bool, UnchangedError> {
        let staged = self
            .staging
            .open_read(row.id)
            .map_err(WriteBackError::from)?;
        let mut staged = tokio::fs::File::from_std(staged);
        let mut remote = self
            .remote
            .download_range(&file.id, 0, file.size)
            .await
            .map_err(UnchangedError::Remote)?;
        let mut buffer = vec![0u8; COMPARE_CHUNK];
        let mut compared = 0u64;
        while let Some(chunk) = remote.next().await {
            let chunk = chunk.map_err(UnchangedError::Remote)?;
            for piece in chunk.chunks(COMPARE_CHUNK) {
                let local = &mut buffer[..piece.len()];
                // A short staging file (changed meanwhile) is a difference.
                if staged.read_exact(local).await.is_err() || local != piece {
                    return Ok(false);
                }
                compared += piece.len() as u64;
            }
        }
        Ok(compared == file.size)
    }
}

/// Checksums agree, or the service gives none to compare.
fn same_checksum(a: &FileEntry, b: &FileEntry) -> bool {
    match (&a.checksum, &b.checksum) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        _ => true,
    }
}

/// Why the comparison could not be made: the service failed, or the
/// staging file or journal could not be read or written.
pub(super) enum UnchangedError {
    Remote(RemoteError),
    Local(WriteBackError),
}

impl From<WriteBackError> for UnchangedError {
    fn from(error: WriteBackError) -> Self {
        UnchangedError::Local(error)
    }
}
