//! The metadata store's SQLite database (design: see the module above).
//!
//! Schema (version 1, in `PRAGMA user_version`):
//!
//! ```text
//! records(kind TEXT, key TEXT,                 -- file | folder | pending, and its id
//!         guard TEXT,                          -- ContentGuard, one line
//!         mtime_ns INTEGER, mode INTEGER, uid INTEGER, gid INTEGER,  -- NULL = not set
//!         changed_ns INTEGER,                  -- last change, for last-writer-wins
//!         PRIMARY KEY (kind, key))
//! xattrs(kind TEXT, key TEXT, name TEXT, value BLOB, PRIMARY KEY (kind, key, name))
//! ```
//!
//! Every change is one immediate transaction (taking the write lock up
//! front, so two mounts never deadlock upgrading a read to a write).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tracing::warn;

use super::record::check_xattr_name;
use super::sync::newer;
use super::{ContentGuard, Metadata, MetadataChange, MetadataError, Record, RecordKey};

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL CHECK (kind IN ('file', 'folder', 'pending')),
    key TEXT NOT NULL,
    guard TEXT NOT NULL,
    mtime_ns INTEGER,
    mode INTEGER,
    uid INTEGER,
    gid INTEGER,
    changed_ns INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS xattrs (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (kind, key, name)
);
";

/// How long a call waits for another mount holding the database's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct MetadataStore {
    conn: Mutex<Connection>,
}

type Result<T> = std::result::Result<T, MetadataError>;

impl MetadataStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<MetadataStore> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL + FULL: each commit is fsync'd before it returns.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(MetadataError::SchemaTooNew {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        conn.execute_batch(SCHEMA)?;
        if version < SCHEMA_VERSION {
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        Ok(MetadataStore {
            conn: Mutex::new(conn),
        })
    }

    /// A number that changes whenever another connection (another mount)
    /// committed a change since this one last asked; this connection's own
    /// changes leave it as it is (SQLite's `data_version`).
    pub fn data_version(&self) -> Result<i64> {
        let conn = self.conn.lock();
        Ok(conn.pragma_query_value(None, "data_version", |row| row.get(0))?)
    }

    /// The record of `key` if it was set for the content `guard` names.
    pub fn get(&self, key: &RecordKey, guard: &ContentGuard) -> Result<Option<Record>> {
        let conn = self.conn.lock();
        Ok(read_record(&conn, key)?.filter(|record| &record.guard == guard))
    }

    /// The records of many keys at once (a folder's listing), each only if
    /// set for the content its guard names.
    pub fn get_many(
        &self,
        wanted: &[(RecordKey, ContentGuard)],
    ) -> Result<HashMap<RecordKey, Record>> {
        let mut conn = self.conn.lock();
        // One read transaction: one consistent snapshot, one lock round.
        let tx = conn.transaction()?;
        let mut found = HashMap::new();
        for (key, guard) in wanted {
            if let Some(record) = read_record(&tx, key)?.filter(|r| &r.guard == guard) {
                found.insert(key.clone(), record);
            }
        }
        tx.commit()?;
        Ok(found)
    }

    /// The records of `keys` whatever content they were set for: what a
    /// folder's sync file carries (the other side checks the guards).
    pub fn records(&self, keys: &[RecordKey]) -> Result<Vec<(RecordKey, Record)>> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let mut found = Vec::new();
        for key in keys {
            if let Some(record) = read_record(&tx, key)? {
                found.push((key.clone(), record));
            }
        }
        tx.commit()?;
        Ok(found)
    }

    /// Every record kept, whatever content it was set for: a mount loads
    /// them once at start so `stat` never waits on the disk.
    pub fn all(&self) -> Result<Vec<(RecordKey, Record)>> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let keys = {
            let mut statement = tx.prepare("SELECT kind, key FROM records")?;
            let rows = statement
                .query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows
        };
        let mut found = Vec::new();
        for (kind, id) in keys {
            let key = match kind.as_str() {
                "file" => RecordKey::File(crate::remote::FileId(id)),
                "folder" => RecordKey::Folder(crate::remote::FolderId(id)),
                _ => match id.parse() {
                    Ok(entry) => RecordKey::Pending(entry),
                    Err(_) => continue,
                },
            };
            if let Some(record) = read_record(&tx, &key)? {
                found.push((key, record));
            }
        }
        tx.commit()?;
        Ok(found)
    }

    /// Applies `change` to the record of `key` for the content `guard`
    /// names, creating it if needed. A record kept for other content is
    /// replaced: the change is about what the id holds now. Returns the
    /// record as stored once the call returns it is on disk.
    pub fn update(
        &self,
        key: &RecordKey,
        guard: &ContentGuard,
        change: &MetadataChange,
        changed_at: SystemTime,
    ) -> Result<Record> {
        change.validate()?;
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let previous = read_record(&tx, key)?;
        let mut changed_ns = nanos_since_epoch(changed_at);
        let mut metadata = Metadata::default();
        if let Some(previous) = previous {
            // A local change always supersedes the local state, even if the
            // clock stepped back since it was written.
            changed_ns = changed_ns.max(previous.changed_ns.saturating_add(1));
            if &previous.guard == guard {
                metadata = previous.metadata;
            }
        }
        metadata.apply(change);
        let record = Record {
            guard: guard.clone(),
            metadata,
            changed_ns,
        };
        write_record(&tx, key, &record)?;
        tx.commit()?;
        Ok(record)
    }

    /// Moves the record of `from` to `to`, now guarded by `guard` (an upload
    /// finished: the pending file, or the file it replaced, has a new id).
    /// A record `to` already had is replaced. Returns whether `from` had one;
    /// when it had none, `to` is left alone.
    pub fn rekey(&self, from: &RecordKey, to: &RecordKey, guard: &ContentGuard) -> Result<bool> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(mut record) = read_record(&tx, from)? else {
            return Ok(false);
        };
        delete_record(&tx, from)?;
        record.guard = guard.clone();
        write_record(&tx, to, &record)?;
        tx.commit()?;
        Ok(true)
    }

    /// Drops the record of `key` (the file or folder is gone, or its pending
    /// upload was cancelled). Returns whether there was one.
    pub fn forget(&self, key: &RecordKey) -> Result<bool> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existed = delete_record(&tx, key)?;
        tx.commit()?;
        Ok(existed)
    }

    /// Takes `incoming` (read from another machine's sync file) if it wins
    /// over what is kept for `key` under "last writer wins". Returns whether
    /// the store changed.
    pub fn merge_synced(&self, key: &RecordKey, incoming: &Record) -> Result<bool> {
        if let Some(mode) = incoming.metadata.mode {
            if mode & !0o7777 != 0 {
                return Err(MetadataError::InvalidMode(mode));
            }
        }
        for name in incoming.metadata.xattrs.keys() {
            check_xattr_name(name)?;
        }
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let kept = read_record(&tx, key)?;
        let wins = match &kept {
            None => true,
            Some(kept) => kept != incoming && newer(kept, incoming) == incoming,
        };
        if wins {
            write_record(&tx, key, incoming)?;
            tx.commit()?;
        }
        Ok(wins)
    }

    /// The write-back entries that have a pending record (recovery after a
    /// crash forgets those whose entry no longer exists).
    pub fn pending_entries(&self) -> Result<Vec<u64>> {
        let conn = self.conn.lock();
        let mut statement = conn.prepare("SELECT key FROM records WHERE kind = 'pending'")?;
        let keys = statement
            .query_map([], |row| row.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut entries: Vec<u64> = keys.into_iter().filter_map(|k| k.parse().ok()).collect();
        entries.sort_unstable();
        Ok(entries)
    }
}

/// Reads one record; a row this program cannot make sense of (written by a
/// broken or foreign tool) counts as no record, so it can never crash a
/// mount, and the next change overwrites it.
fn read_record(conn: &Connection, key: &RecordKey) -> Result<Option<Record>> {
    let (kind, id) = key.columns();
    type Row = (
        String,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        i64,
    );
    let row: Option<Row> = conn
        .query_row(
            "SELECT guard, mtime_ns, mode, uid, gid, changed_ns FROM records
             WHERE kind = ?1 AND key = ?2",
            params![kind, id],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                ))
            },
        )
        .optional()?;
    let Some((guard, mtime_ns, mode, uid, gid, changed_ns)) = row else {
        return Ok(None);
    };
    let as_u32 = |value: Option<i64>| -> std::result::Result<Option<u32>, ()> {
        value.map(|v| u32::try_from(v).map_err(|_| ())).transpose()
    };
    let (Some(guard), Ok(mode), Ok(uid), Ok(gid)) = (
        ContentGuard::decode(&guard),
        as_u32(mode),
        as_u32(uid),
        as_u32(gid),
    ) else {
        warn!(%key, "ignoring an unreadable metadata record");
        return Ok(None);
    };
    let mut statement = conn.prepare_cached(
        "SELECT name, value FROM xattrs WHERE kind = ?1 AND key = ?2 ORDER BY name",
    )?;
    let xattrs = statement
        .query_map(params![kind, id], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(Record {
        guard,
        metadata: Metadata {
            mtime_ns,
            mode,
            uid,
            gid,
            xattrs,
        },
        changed_ns,
    }))
}

fn write_record(conn: &Connection, key: &RecordKey, record: &Record) -> Result<()> {
    delete_record(conn, key)?;
    let (kind, id) = key.columns();
    let metadata = &record.metadata;
    conn.execute(
        "INSERT INTO records (kind, key, guard, mtime_ns, mode, uid, gid, changed_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            kind,
            id,
            record.guard.encode(),
            metadata.mtime_ns,
            metadata.mode,
            metadata.uid,
            metadata.gid,
            record.changed_ns
        ],
    )?;
    let mut statement =
        conn.prepare_cached("INSERT INTO xattrs (kind, key, name, value) VALUES (?1, ?2, ?3, ?4)")?;
    for (name, value) in &metadata.xattrs {
        statement.execute(params![kind, id, name, value])?;
    }
    Ok(())
}

fn delete_record(conn: &Connection, key: &RecordKey) -> Result<bool> {
    let (kind, id) = key.columns();
    conn.execute(
        "DELETE FROM xattrs WHERE kind = ?1 AND key = ?2",
        params![kind, id],
    )?;
    let rows = conn.execute(
        "DELETE FROM records WHERE kind = ?1 AND key = ?2",
        params![kind, id],
    )?;
    Ok(rows > 0)
}

/// Nanoseconds since the Unix epoch (negative before it), saturating.
fn nanos_since_epoch(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_nanos())
            .map(|n| -n)
            .unwrap_or(i64::MIN),
    }
}
