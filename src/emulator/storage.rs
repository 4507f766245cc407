//! Durable storage shared by every emulated service.
//!
//! Metadata lives in one SQLite database (WAL, `synchronous=FULL`); file
//! contents live in blob files named by a random content id. A blob is
//! written to `tmp/`, fsynced, renamed into `blobs/` and only then referenced
//! from a committed transaction, so after a `kill -9` the database never
//! points at a half-written blob. Blobs that no row references (a crash
//! between rename and commit, or the last reference deleted) are removed at
//! start-up and on delete.
//!
//! Accounts are keyed by `(service, api key)`; folders and files belong to an
//! account, so a service module only ever sees its own caller's data.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::mpsc;
use whirlpool::{Digest, Whirlpool};

/// Account row id.
pub type AccountId = i64;

/// Folder id as the services expose it; 0 is every account's root.
pub type FolderId = i64;

pub const ROOT_FOLDER: FolderId = 0;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY,
    service TEXT NOT NULL,
    api_key TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (service, api_key)
);
CREATE TABLE IF NOT EXISTS folders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    parent_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS folders_by_parent ON folders(account_id, parent_id);
CREATE TABLE IF NOT EXISTS blobs (
    id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    whirlpool TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    folder_id INTEGER NOT NULL,
    link_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    blob_id TEXT NOT NULL REFERENCES blobs(id),
    content_type TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS files_by_folder ON files(account_id, folder_id);
CREATE INDEX IF NOT EXISTS files_by_blob ON files(blob_id);
CREATE TABLE IF NOT EXISTS folder_shares (
    folder_id INTEGER PRIMARY KEY REFERENCES folders(id) ON DELETE CASCADE,
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    pass TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS upload_sessions (
    id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    account_id INTEGER,
    created_at INTEGER NOT NULL,
    completed_at INTEGER,
    result TEXT
);
CREATE TABLE IF NOT EXISTS remote_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    folder_id INTEGER NOT NULL,
    request TEXT NOT NULL,
    requested_at INTEGER NOT NULL,
    executed_at INTEGER,
    result TEXT
);
"#;

/// One stored file as every service sees it; services add their own
/// attributes in `extra` (a JSON object).
#[derive(Clone, Debug)]
pub struct FileRow {
    pub id: i64,
    pub account_id: AccountId,
    pub folder_id: FolderId,
    pub link_id: String,
    pub name: String,
    pub blob_id: String,
    pub size: u64,
    pub whirlpool: String,
    pub content_type: String,
    /// Unix seconds.
    pub created_at: i64,
    pub extra: serde_json::Value,
}

#[derive(Clone, Debug)]
pub struct FolderRow {
    pub id: FolderId,
    pub account_id: AccountId,
    pub parent_id: FolderId,
    pub name: String,
    pub created_at: i64,
}

/// A blob fully written to `tmp/` and fsynced, not yet visible.
#[derive(Debug)]
pub struct StagedBlob {
    pub temp_path: PathBuf,
    pub size: u64,
    pub whirlpool: String,
}

/// A file to insert together with its blob.
#[derive(Clone, Debug)]
pub struct NewFile {
    pub account_id: AccountId,
    pub folder_id: FolderId,
    pub link_id: String,
    pub name: String,
    pub content_type: String,
    pub created_at: i64,
    pub extra: serde_json::Value,
}

pub struct Storage {
    conn: Arc<Mutex<Connection>>,
    blob_dir: PathBuf,
    tmp_dir: PathBuf,
    /// Holds an exclusive `flock` on `DATA_DIR/lock` while the store is open:
    /// a second server on the same data dir would delete this one's
    /// in-progress uploads at start-up. The kernel drops it on any exit.
    _lock: std::fs::File,
}

/// Takes the data dir's lock, or explains who holds it.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = data_dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !locked {
        anyhow::bail!(
            "data dir {} is in use by another filehostfs serve",
            data_dir.display()
        );
    }
    Ok(file)
}

const FILE_COLUMNS: &str = "f.id, f.account_id, f.folder_id, f.link_id, f.name, f.blob_id, \
     b.size, b.whirlpool, f.content_type, f.created_at, f.extra";

fn file_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
    let extra: String = row.get(10)?;
    Ok(FileRow {
        id: row.get(0)?,
        account_id: row.get(1)?,
        folder_id: row.get(2)?,
        link_id: row.get(3)?,
        name: row.get(4)?,
        blob_id: row.get(5)?,
        size: row.get::<_, i64>(6)? as u64,
        whirlpool: row.get(7)?,
        content_type: row.get(8)?,
        created_at: row.get(9)?,
        extra: serde_json::from_str(&extra).unwrap_or(serde_json::Value::Null),
    })
}

fn folder_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<FolderRow> {
    Ok(FolderRow {
        id: row.get(0)?,
        account_id: row.get(1)?,
        parent_id: row.get(2)?,
        name: row.get(3)?,
        created_at: row.get(4)?,
    })
}

pub fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Milliseconds since the epoch as JavaScript's `toISOString()` writes them
/// (`2026-01-31T12:00:00.000Z`), the time format of the fii.one and file.io
/// APIs.
pub fn iso_ms(ms: i64) -> String {
    use chrono::TimeZone;
    chrono::Utc
        .timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Storage {
    /// Opens (creating if needed) the store in `data_dir`, discards any
    /// half-written upload left by a crash and garbage-collects blobs that no
    /// committed row references.
    pub fn open(data_dir: &Path) -> anyhow::Result<Storage> {
        let lock = lock_data_dir(data_dir)?;
        let blob_dir = data_dir.join("blobs");
        let tmp_dir = data_dir.join("tmp");
        std::fs::create_dir_all(&blob_dir)
            .with_context(|| format!("creating {}", blob_dir.display()))?;
        if tmp_dir.exists() {
            std::fs::remove_dir_all(&tmp_dir)
                .with_context(|| format!("clearing {}", tmp_dir.display()))?;
        }
        std::fs::create_dir_all(&tmp_dir)
            .with_context(|| format!("creating {}", tmp_dir.display()))?;

        let db_path = data_dir.join("emulator.sqlite");
        let conn = Connection::open(&db_path)
            .with_context(|| format!("opening database {}", db_path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA).context("creating the schema")?;

        let storage = Storage {
            conn: Arc::new(Mutex::new(conn)),
            blob_dir,
            tmp_dir,
            _lock: lock,
        };
        storage.collect_orphan_blobs()?;
        Ok(storage)
    }

    /// Runs `f` with the database on the blocking pool, so a commit's fsync
    /// never stalls the async workers.
    pub async fn call<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> anyhow::Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock();
            f(&mut guard)
        })
        .await
        .context("database task panicked")?
    }

    pub fn blob_path(&self, blob_id: &str) -> PathBuf {
        self.blob_dir.join(blob_id)
    }

    /// Starts writing a new blob; bytes are hashed and written on a blocking
    /// thread while the caller keeps streaming.
    pub fn blob_writer(&self) -> anyhow::Result<BlobWriter> {
        BlobWriter::create(&self.tmp_dir)
    }

    /// Makes staged blobs visible and inserts their file rows in one
    /// transaction. `after_insert` runs inside that transaction (e.g. to
    /// record the upload result) so a crash leaves all or nothing.
    pub async fn commit_files<T, F>(
        &self,
        staged: Vec<(StagedBlob, NewFile)>,
        after_insert: F,
    ) -> anyhow::Result<(Vec<FileRow>, T)>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>, &[FileRow]) -> anyhow::Result<T> + Send + 'static,
    {
        let blob_dir = self.blob_dir.clone();
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut placed = Vec::with_capacity(staged.len());
            for (blob, file) in staged {
                let blob_id = uuid::Uuid::new_v4().simple().to_string();
                let final_path = blob_dir.join(&blob_id);
                std::fs::rename(&blob.temp_path, &final_path)
                    .with_context(|| format!("moving {} into place", blob.temp_path.display()))?;
                placed.push((blob_id, blob, file));
            }
            // The renames must be durable before rows point at them.
            std::fs::File::open(&blob_dir)
                .and_then(|dir| dir.sync_all())
                .context("syncing the blob directory")?;

            let mut guard = conn.lock();
            let tx = guard.transaction()?;
            let mut rows = Vec::with_capacity(placed.len());
            for (blob_id, blob, file) in placed {
                tx.execute(
                    "INSERT INTO blobs (id, size, whirlpool) VALUES (?1, ?2, ?3)",
                    params![blob_id, blob.size as i64, blob.whirlpool],
                )?;
                tx.execute(
                    "INSERT INTO files (account_id, folder_id, link_id, name, blob_id, \
                     content_type, created_at, extra) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        file.account_id,
                        file.folder_id,
                        file.link_id,
                        file.name,
                        blob_id,
                        file.content_type,
                        file.created_at,
                        file.extra.to_string()
                    ],
                )?;
                rows.push(FileRow {
                    id: tx.last_insert_rowid(),
                    account_id: file.account_id,
                    folder_id: file.folder_id,
                    link_id: file.link_id,
                    name: file.name,
                    blob_id,
                    size: blob.size,
                    whirlpool: blob.whirlpool.clone(),
                    content_type: file.content_type,
                    created_at: file.created_at,
                    extra: file.extra,
                });
            }
            let extra = after_insert(&tx, &rows)?;
            tx.commit()?;
            Ok((rows, extra))
        })
        .await
        .context("database task panicked")?
    }

    /// Deletes blob files that no file row references.
    pub fn collect_orphan_blobs(&self) -> anyhow::Result<()> {
        let conn = self.conn.lock();
        conn.execute(
            "DELETE FROM blobs WHERE id NOT IN (SELECT blob_id FROM files)",
            [],
        )?;
        let mut stmt = conn.prepare("SELECT 1 FROM blobs WHERE id = ?1")?;
        for entry in std::fs::read_dir(&self.blob_dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !stmt.exists([name])? {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// Removes the blob files of `blob_ids` that are no longer referenced.
    pub fn remove_unreferenced_blobs(conn: &Connection, blob_dir: &Path, blob_ids: &[String]) {
        for blob_id in blob_ids {
            let still_used = conn
                .query_row(
                    "SELECT 1 FROM files WHERE blob_id = ?1 LIMIT 1",
                    [blob_id],
                    |_| Ok(()),
                )
                .optional()
                .unwrap_or(Some(()))
                .is_some();
            if !still_used {
                let _ = conn.execute("DELETE FROM blobs WHERE id = ?1", [blob_id]);
                let _ = std::fs::remove_file(blob_dir.join(blob_id));
            }
        }
    }

    pub fn blob_dir(&self) -> &Path {
        &self.blob_dir
    }
}

// ---- queries shared by the services (run inside `Storage::call`) ----

/// Returns the account id for `(service, key)`, creating the account.
/// Every account: (id, service, key).
pub fn all_accounts(conn: &Connection) -> anyhow::Result<Vec<(AccountId, String, String)>> {
    let mut statement = conn.prepare("SELECT id, service, api_key FROM accounts")?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn ensure_account(
    conn: &Connection,
    service: &str,
    api_key: &str,
) -> anyhow::Result<AccountId> {
    conn.execute(
        "INSERT OR IGNORE INTO accounts (service, api_key, created_at) VALUES (?1, ?2, ?3)",
        params![service, api_key, now_unix()],
    )?;
    Ok(conn.query_row(
        "SELECT id FROM accounts WHERE service = ?1 AND api_key = ?2",
        params![service, api_key],
        |row| row.get(0),
    )?)
}

pub fn folder(
    conn: &Connection,
    account: AccountId,
    id: FolderId,
) -> anyhow::Result<Option<FolderRow>> {
    Ok(conn
        .query_row(
            "SELECT id, account_id, parent_id, name, created_at FROM folders \
             WHERE id = ?1 AND account_id = ?2",
            params![id, account],
            folder_from_row,
        )
        .optional()?)
}

/// Whether `id` names a folder of the account (the root always exists).
pub fn folder_exists(conn: &Connection, account: AccountId, id: FolderId) -> anyhow::Result<bool> {
    Ok(id == ROOT_FOLDER || folder(conn, account, id)?.is_some())
}

pub fn subfolders(
    conn: &Connection,
    account: AccountId,
    parent: FolderId,
) -> anyhow::Result<Vec<FolderRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, account_id, parent_id, name, created_at FROM folders \
         WHERE account_id = ?1 AND parent_id = ?2 ORDER BY id",
    )?;
    let rows = stmt
        .query_map(params![account, parent], folder_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn subfolder_named(
    conn: &Connection,
    account: AccountId,
    parent: FolderId,
    name: &str,
) -> anyhow::Result<Option<FolderRow>> {
    Ok(conn
        .query_row(
            "SELECT id, account_id, parent_id, name, created_at FROM folders \
             WHERE account_id = ?1 AND parent_id = ?2 AND name = ?3",
            params![account, parent, name],
            folder_from_row,
        )
        .optional()?)
}

pub fn create_folder(
    conn: &Connection,
    account: AccountId,
    parent: FolderId,
    name: &str,
) -> anyhow::Result<FolderRow> {
    let created_at = now_unix();
    conn.execute(
        "INSERT INTO folders (account_id, parent_id, name, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![account, parent, name, created_at],
    )?;
    Ok(FolderRow {
        id: conn.last_insert_rowid(),
        account_id: account,
        parent_id: parent,
        name: name.to_string(),
        created_at,
    })
}

/// Folder names from the root down to `id` (empty for the root).
pub fn folder_path(
    conn: &Connection,
    account: AccountId,
    mut id: FolderId,
) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    // Bounded walk: a corrupt cycle must not hang the server.
    for _ in 0..10_000 {
        if id == ROOT_FOLDER {
            names.reverse();
            return Ok(names);
        }
        match folder(conn, account, id)? {
            Some(row) => {
                names.push(row.name);
                id = row.parent_id;
            }
            None => break,
        }
    }
    anyhow::bail!("folder {id} has no path to the root")
}

/// Whether `candidate` is `ancestor` or lies below it.
pub fn is_within(
    conn: &Connection,
    account: AccountId,
    candidate: FolderId,
    ancestor: FolderId,
) -> anyhow::Result<bool> {
    let mut id = candidate;
    for _ in 0..10_000 {
        if id == ancestor {
            return Ok(true);
        }
        if id == ROOT_FOLDER {
            return Ok(false);
        }
        match folder(conn, account, id)? {
            Some(row) => id = row.parent_id,
            None => return Ok(false),
        }
    }
    Ok(false)
}

pub fn files_in_folder(
    conn: &Connection,
    account: AccountId,
    folder: FolderId,
) -> anyhow::Result<Vec<FileRow>> {
    let sql = format!(
        "SELECT {FILE_COLUMNS} FROM files f JOIN blobs b ON b.id = f.blob_id \
         WHERE f.account_id = ?1 AND f.folder_id = ?2 ORDER BY f.id"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt
        .query_map(params![account, folder], file_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn all_files(conn: &Connection, account: AccountId) -> anyhow::Result<Vec<FileRow>> {
    let sql = format!(
        "SELECT {FILE_COLUMNS} FROM files f JOIN blobs b ON b.id = f.blob_id \
         WHERE f.account_id = ?1 ORDER BY f.id"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt
        .query_map(params![account], file_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn file_by_link(
    conn: &Connection,
    account: AccountId,
    link_id: &str,
) -> anyhow::Result<Option<FileRow>> {
    let sql = format!(
        "SELECT {FILE_COLUMNS} FROM files f JOIN blobs b ON b.id = f.blob_id \
         WHERE f.account_id = ?1 AND f.link_id = ?2"
    );
    Ok(conn
        .query_row(&sql, params![account, link_id], file_from_row)
        .optional()?)
}

/// A file by its link, whoever owns it (public pages need no key).
pub fn file_by_link_any_account(
    conn: &Connection,
    link_id: &str,
) -> anyhow::Result<Option<FileRow>> {
    let sql = format!(
        "SELECT {FILE_COLUMNS} FROM files f JOIN blobs b ON b.id = f.blob_id WHERE f.link_id = ?1"
    );
    Ok(conn
        .query_row(&sql, params![link_id], file_from_row)
        .optional()?)
}

pub fn file_by_id(conn: &Connection, id: i64) -> anyhow::Result<Option<FileRow>> {
    let sql = format!(
        "SELECT {FILE_COLUMNS} FROM files f JOIN blobs b ON b.id = f.blob_id WHERE f.id = ?1"
    );
    Ok(conn
        .query_row(&sql, params![id], file_from_row)
        .optional()?)
}

/// Sum of the sizes of the account's files.
pub fn used_bytes(conn: &Connection, account: AccountId) -> anyhow::Result<u64> {
    let used: i64 = conn.query_row(
        "SELECT COALESCE(SUM(b.size), 0) FROM files f JOIN blobs b ON b.id = f.blob_id \
         WHERE f.account_id = ?1",
        params![account],
        |row| row.get(0),
    )?;
    Ok(used as u64)
}

/// Whether a link id is already taken (by any account of any service).
pub fn link_taken(conn: &Connection, link_id: &str) -> anyhow::Result<bool> {
    Ok(conn
        .query_row("SELECT 1 FROM files WHERE link_id = ?1", [link_id], |_| {
            Ok(())
        })
        .optional()?
        .is_some())
}

/// Random lower-case alphanumeric string of `len` characters.
pub fn random_lower_alnum(len: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

/// Random mixed-case alphanumeric string of `len` characters.
pub fn random_alnum(len: usize) -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::thread_rng(), len)
}

/// A link id no file uses yet.
pub fn fresh_link_id(conn: &Connection, len: usize) -> anyhow::Result<String> {
    for _ in 0..100 {
        let candidate = random_lower_alnum(len);
        if !link_taken(conn, &candidate)? {
            return Ok(candidate);
        }
    }
    anyhow::bail!("could not find a free link id")
}

// ---- blob writing ----

/// Streams one upload into a temp file on a blocking thread, hashing it
/// (Whirlpool, as 1fichier reports) on the way. Memory use is bounded by the
/// channel depth, whatever the file size.
pub struct BlobWriter {
    sender: Option<mpsc::Sender<Bytes>>,
    worker: Option<tokio::task::JoinHandle<std::io::Result<StagedBlob>>>,
    temp_path: PathBuf,
}

impl BlobWriter {
    fn create(tmp_dir: &Path) -> anyhow::Result<BlobWriter> {
        let temp_path = tmp_dir.join(format!("upload-{}", uuid::Uuid::new_v4().simple()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp_path)
            .with_context(|| format!("creating {}", temp_path.display()))?;
        let (sender, mut receiver) = mpsc::channel::<Bytes>(32);
        let path_for_worker = temp_path.clone();
        let worker = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            let mut hasher = Whirlpool::new();
            let mut size = 0u64;
            while let Some(chunk) = receiver.blocking_recv() {
                hasher.update(&chunk);
                out.write_all(&chunk)?;
                size += chunk.len() as u64;
            }
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            Ok(StagedBlob {
                temp_path: path_for_worker,
                size,
                whirlpool: hex::encode(hasher.finalize()),
            })
        });
        Ok(BlobWriter {
            sender: Some(sender),
            worker: Some(worker),
            temp_path,
        })
    }

    pub async fn write(&mut self, chunk: Bytes) -> anyhow::Result<()> {
        let sender = self
            .sender
            .as_ref()
            .context("blob writer already finished")?;
        if sender.send(chunk).await.is_err() {
            // The worker stopped early: report its I/O error.
            self.sender = None;
            let worker = self.worker.take().context("blob writer already finished")?;
            return match worker.await.context("blob writer panicked")? {
                Err(err) => Err(anyhow::Error::new(err).context("writing the upload")),
                Ok(_) => Err(anyhow::anyhow!("blob writer stopped early")),
            };
        }
        Ok(())
    }

    /// Flushes and fsyncs the temp file; the blob stays invisible until
    /// [`Storage::commit_files`].
    pub async fn finish(mut self) -> anyhow::Result<StagedBlob> {
        self.sender = None;
        let worker = self.worker.take().context("blob writer already finished")?;
        let staged = worker
            .await
            .context("blob writer panicked")?
            .context("writing the upload")?;
        Ok(staged)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Abandoned mid-way (client went away, refused upload): the partial
        // file must not linger. After `finish` the StagedBlob owns the path.
        if self.worker.is_some() {
            self.sender = None;
            let _ = std::fs::remove_file(&self.temp_path);
        }
    }
}

impl StagedBlob {
    /// Deletes a staged blob that will not be committed.
    pub fn discard(self) {
        drop(self);
    }
}

impl Drop for StagedBlob {
    fn drop(&mut self) {
        // After a commit the file was renamed away and this is a no-op; if
        // the upload was abandoned it removes the temp file.
        let _ = std::fs::remove_file(&self.temp_path);
    }
}
