//! The write-back journal: one SQLite database next to the staging files.
//!
//! Every pending file is one row of `entries`; the remote files that must be
//! removed once the row's new content is safely uploaded are rows of
//! `obsolete`. Each change is one transaction committed with
//! `synchronous=FULL` in WAL mode, so a change the caller saw succeed is on
//! disk even if the process is killed right after.
//!
//! Schema (version 1, stored in `PRAGMA user_version`):
//!
//! ```text
//! meta(key TEXT PRIMARY KEY, value TEXT)        -- "remote": whose journal this is
//! entries(
//!   id INTEGER PRIMARY KEY AUTOINCREMENT,       -- also the upload order
//!   parent TEXT, name TEXT,                     -- where the file must end up
//!   state TEXT,                                 -- open | queued | held | cancelled
//!   size INTEGER, mtime_ns INTEGER,
//!   generation INTEGER,                         -- bumped when released content changed
//!   not_before_ms INTEGER,                      -- write-back delay: upload not before
//!   retry_at_ms INTEGER, attempts INTEGER, last_error TEXT,
//!   progress TEXT,                              -- idle | uploading | uploaded
//!   up_generation INTEGER, up_parent TEXT, up_name TEXT,
//!   up_size INTEGER, up_started_ms INTEGER,     -- what the upload in progress sends
//!   up_id TEXT)                                 -- the remote file an upload produced
//! obsolete(entry INTEGER, file_id TEXT, reason TEXT, PRIMARY KEY(entry, file_id))
//! ```

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::EntryId;
use crate::remote::{FileId, FolderId};

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    parent TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'queued', 'held', 'cancelled')),
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    not_before_ms INTEGER NOT NULL,
    retry_at_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    progress TEXT NOT NULL CHECK (progress IN ('idle', 'uploading', 'uploaded')),
    up_generation INTEGER,
    up_parent TEXT,
    up_name TEXT,
    up_size INTEGER,
    up_started_ms INTEGER,
    up_id TEXT
);
CREATE TABLE IF NOT EXISTS obsolete (
    entry INTEGER NOT NULL REFERENCES entries(id) ON DELETE CASCADE,
    file_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (entry, file_id)
);
";

/// What the user did with a pending file last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryState {
    /// At least one handle may write to it; never finalized in this state.
    Open,
    /// Closed; to be uploaded once the write-back delay has passed.
    Queued,
    /// An empty file on a service that cannot store empty files: kept as a
    /// local placeholder until it gets content.
    Held,
    /// Unlinked while pending: whatever was uploaded for it, and the files it
    /// replaced, are to be removed.
    Cancelled,
}

impl EntryState {
    fn as_str(self) -> &'static str {
        match self {
            EntryState::Open => "open",
            EntryState::Queued => "queued",
            EntryState::Held => "held",
            EntryState::Cancelled => "cancelled",
        }
    }

    fn parse(text: &str) -> rusqlite::Result<Self> {
        Ok(match text {
            "open" => EntryState::Open,
            "queued" => EntryState::Queued,
            "held" => EntryState::Held,
            "cancelled" => EntryState::Cancelled,
            other => return Err(bad_column(format!("unknown entry state {other:?}"))),
        })
    }
}

/// How far the upload of a pending file got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    Idle,
    /// An upload was started with these parameters and its result is not
    /// recorded. After a crash the service may or may not hold the file.
    Uploading {
        generation: u64,
        parent: FolderId,
        name: String,
        size: u64,
        started_ms: i64,
    },
    /// The service holds content of `generation` as `id` at `parent/name`.
    Uploaded {
        id: FileId,
        generation: u64,
        parent: FolderId,
        name: String,
        size: u64,
    },
}

/// Why a remote file is to be removed after the entry's upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObsoleteReason {
    /// The remote file the pending content replaces.
    Base,
    /// A file that a rename of the pending file replaced.
    Replaced,
    /// An earlier upload of this entry whose content has since changed.
    StaleUpload,
}

impl ObsoleteReason {
    fn as_str(self) -> &'static str {
        match self {
            ObsoleteReason::Base => "base",
            ObsoleteReason::Replaced => "replaced",
            ObsoleteReason::StaleUpload => "stale-upload",
        }
    }

    fn parse(text: &str) -> rusqlite::Result<Self> {
        Ok(match text {
            "base" => ObsoleteReason::Base,
            "replaced" => ObsoleteReason::Replaced,
            "stale-upload" => ObsoleteReason::StaleUpload,
            other => return Err(bad_column(format!("unknown obsolete reason {other:?}"))),
        })
    }
}

/// One pending file as the journal stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryRecord {
    pub id: EntryId,
    pub parent: FolderId,
    pub name: String,
    pub state: EntryState,
    pub size: u64,
    pub mtime: SystemTime,
    pub generation: u64,
    pub not_before_ms: i64,
    pub retry_at_ms: i64,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub progress: Progress,
    pub obsolete: Vec<(FileId, ObsoleteReason)>,
}

impl EntryRecord {
    /// The remote file this entry's upload produced, if any.
    pub fn uploaded_id(&self) -> Option<&FileId> {
        match &self.progress {
            Progress::Uploaded { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// A new row, before the journal assigns its id.
pub struct NewEntry<'a> {
    pub parent: &'a FolderId,
    pub name: &'a str,
    pub state: EntryState,
    pub mtime: SystemTime,
    pub obsolete: Vec<(FileId, ObsoleteReason)>,
}

pub struct Journal {
    conn: Connection,
}

impl Journal {
    /// Opens (creating if needed) the journal at `path`.
    pub fn open(path: &Path) -> rusqlite::Result<Journal> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // WAL + FULL: each commit is fsync'd before it returns.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(bad_column(format!(
                "journal schema version {version} is newer than this program understands ({SCHEMA_VERSION})"
            )));
        }
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Journal { conn })
    }

    pub fn meta(&self, key: &str) -> rusqlite::Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()
    }

    pub fn set_meta(&self, key: &str, value: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Records a new pending file and returns it with its id.
    pub fn insert(&mut self, new: NewEntry<'_>) -> rusqlite::Result<EntryRecord> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO entries (parent, name, state, size, mtime_ns, generation,
                                  not_before_ms, retry_at_ms, attempts, progress)
             VALUES (?1, ?2, ?3, 0, ?4, 0, 0, 0, 0, 'idle')",
            params![
                new.parent.0,
                new.name,
                new.state.as_str(),
                system_time_to_ns(new.mtime)
            ],
        )?;
        let id = EntryId(tx.last_insert_rowid());
        write_obsolete(&tx, id, &new.obsolete)?;
        tx.commit()?;
        Ok(EntryRecord {
            id,
            parent: new.parent.clone(),
            name: new.name.to_string(),
            state: new.state,
            size: 0,
            mtime: new.mtime,
            generation: 0,
            not_before_ms: 0,
            retry_at_ms: 0,
            attempts: 0,
            last_error: None,
            progress: Progress::Idle,
            obsolete: new.obsolete,
        })
    }

    /// Writes every column of `record` (and its obsolete list) in one transaction.
    pub fn save(&mut self, record: &EntryRecord) -> rusqlite::Result<()> {
        self.apply(std::slice::from_ref(record), &[])
    }

    /// Saves `records` and deletes `deleted` atomically: a crash leaves
    /// either all of it or none of it.
    pub fn apply(&mut self, records: &[EntryRecord], deleted: &[EntryId]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        for record in records {
            save_in(&tx, record)?;
        }
        for id in deleted {
            tx.execute("DELETE FROM obsolete WHERE entry = ?1", [id.0])?;
            tx.execute("DELETE FROM entries WHERE id = ?1", [id.0])?;
        }
        tx.commit()
    }

    pub fn delete(&mut self, id: EntryId) -> rusqlite::Result<()> {
        self.apply(&[], &[id])
    }

    /// Every row, in upload order.
    pub fn load_all(&self) -> rusqlite::Result<Vec<EntryRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, parent, name, state, size, mtime_ns, generation, not_before_ms,
                    retry_at_ms, attempts, last_error, progress, up_generation, up_parent,
                    up_name, up_size, up_started_ms, up_id
             FROM entries ORDER BY id",
        )?;
        let mut records = stmt
            .query_map([], record_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut obsolete_stmt = self
            .conn
            .prepare("SELECT file_id, reason FROM obsolete WHERE entry = ?1 ORDER BY rowid")?;
        for record in &mut records {
            record.obsolete = obsolete_stmt
                .query_map([record.id.0], |row| {
                    let reason: String = row.get(1)?;
                    Ok((FileId(row.get(0)?), ObsoleteReason::parse(&reason)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
        }
        Ok(records)
    }
}

fn save_in(tx: &Transaction<'_>, record: &EntryRecord) -> rusqlite::Result<()> {
    let (progress, up_generation, up_parent, up_name, up_size, up_started_ms, up_id) =
        match &record.progress {
            Progress::Idle => ("idle", None, None, None, None, None, None),
            Progress::Uploading {
                generation,
                parent,
                name,
                size,
                started_ms,
            } => (
                "uploading",
                Some(to_i64(*generation)),
                Some(parent.0.clone()),
                Some(name.clone()),
                Some(to_i64(*size)),
                Some(*started_ms),
                None,
            ),
            Progress::Uploaded {
                id,
                generation,
                parent,
                name,
                size,
            } => (
                "uploaded",
                Some(to_i64(*generation)),
                Some(parent.0.clone()),
                Some(name.clone()),
                Some(to_i64(*size)),
                None,
                Some(id.0.clone()),
            ),
        };
    let changed = tx.execute(
        "UPDATE entries SET parent = ?2, name = ?3, state = ?4, size = ?5, mtime_ns = ?6,
                generation = ?7, not_before_ms = ?8, retry_at_ms = ?9, attempts = ?10,
                last_error = ?11, progress = ?12, up_generation = ?13, up_parent = ?14,
                up_name = ?15, up_size = ?16, up_started_ms = ?17, up_id = ?18
         WHERE id = ?1",
        params![
            record.id.0,
            record.parent.0,
            record.name,
            record.state.as_str(),
            to_i64(record.size),
            system_time_to_ns(record.mtime),
            to_i64(record.generation),
            record.not_before_ms,
            record.retry_at_ms,
            record.attempts,
            record.last_error,
            progress,
            up_generation,
            up_parent,
            up_name,
            up_size,
            up_started_ms,
            up_id,
        ],
    )?;
    if changed != 1 {
        return Err(rusqlite::Error::QueryReturnedNoRows);
    }
    tx.execute("DELETE FROM obsolete WHERE entry = ?1", [record.id.0])?;
    write_obsolete(tx, record.id, &record.obsolete)
}

fn write_obsolete(
    tx: &Transaction<'_>,
    id: EntryId,
    obsolete: &[(FileId, ObsoleteReason)],
) -> rusqlite::Result<()> {
    let mut stmt =
        tx.prepare("INSERT OR IGNORE INTO obsolete (entry, file_id, reason) VALUES (?1, ?2, ?3)")?;
    for (file, reason) in obsolete {
        stmt.execute(params![id.0, file.0, reason.as_str()])?;
    }
    Ok(())
}

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<EntryRecord> {
    let state: String = row.get(3)?;
    let progress: String = row.get(11)?;
    let up_generation: Option<i64> = row.get(12)?;
    let up_parent: Option<String> = row.get(13)?;
    let up_name: Option<String> = row.get(14)?;
    let up_size: Option<i64> = row.get(15)?;
    let up_started_ms: Option<i64> = row.get(16)?;
    let up_id: Option<String> = row.get(17)?;
    let missing = |what: &str| bad_column(format!("{progress} entry without {what}"));
    let progress = match progress.as_str() {
        "idle" => Progress::Idle,
        "uploading" => Progress::Uploading {
            generation: to_u64(up_generation.ok_or_else(|| missing("up_generation"))?),
            parent: FolderId(up_parent.ok_or_else(|| missing("up_parent"))?),
            name: up_name.ok_or_else(|| missing("up_name"))?,
            size: to_u64(up_size.ok_or_else(|| missing("up_size"))?),
            started_ms: up_started_ms.ok_or_else(|| missing("up_started_ms"))?,
        },
        "uploaded" => Progress::Uploaded {
            id: FileId(up_id.ok_or_else(|| missing("up_id"))?),
            generation: to_u64(up_generation.ok_or_else(|| missing("up_generation"))?),
            parent: FolderId(up_parent.ok_or_else(|| missing("up_parent"))?),
            name: up_name.ok_or_else(|| missing("up_name"))?,
            size: to_u64(up_size.ok_or_else(|| missing("up_size"))?),
        },
        other => return Err(bad_column(format!("unknown progress {other:?}"))),
    };
    Ok(EntryRecord {
        id: EntryId(row.get(0)?),
        parent: FolderId(row.get(1)?),
        name: row.get(2)?,
        state: EntryState::parse(&state)?,
        size: to_u64(row.get(4)?),
        mtime: ns_to_system_time(row.get(5)?),
        generation: to_u64(row.get(6)?),
        not_before_ms: row.get(7)?,
        retry_at_ms: row.get(8)?,
        attempts: row.get(9)?,
        last_error: row.get(10)?,
        progress,
        obsolete: Vec::new(),
    })
}

fn bad_column(message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        Box::<dyn std::error::Error + Send + Sync>::from(message),
    )
}

// SQLite integers are i64; sizes and generations never come near 2^63.
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

pub fn system_time_to_ns(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

pub fn ns_to_system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// Milliseconds since the Unix epoch: the journal's clock (it must survive restarts).
pub fn now_ms() -> i64 {
    system_time_to_ns(SystemTime::now()) / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(journal: &mut Journal) -> EntryRecord {
        journal
            .insert(NewEntry {
                parent: &FolderId("7".into()),
                name: "report.txt",
                state: EntryState::Open,
                mtime: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
                obsolete: vec![(FileId("https://x/?old".into()), ObsoleteReason::Base)],
            })
            .unwrap()
    }

    #[test]
    fn rows_survive_reopening_with_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        let mut journal = Journal::open(&path).unwrap();
        let mut record = sample(&mut journal);
        record.state = EntryState::Queued;
        record.size = 12345;
        record.generation = 3;
        record.not_before_ms = 42;
        record.retry_at_ms = 43;
        record.attempts = 2;
        record.last_error = Some("quota exceeded".into());
        record.progress = Progress::Uploaded {
            id: FileId("https://x/?new".into()),
            generation: 3,
            parent: FolderId("7".into()),
            name: "report.txt".into(),
            size: 12345,
        };
        record
            .obsolete
            .push((FileId("https://x/?other".into()), ObsoleteReason::Replaced));
        journal.save(&record).unwrap();
        drop(journal);

        let journal = Journal::open(&path).unwrap();
        assert_eq!(journal.load_all().unwrap(), vec![record]);
    }

    #[test]
    fn uploading_progress_round_trips_and_delete_removes_obsolete() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(&dir.path().join("j.db")).unwrap();
        let mut first = sample(&mut journal);
        let second = sample(&mut journal);
        assert!(second.id > first.id, "ids give the upload order");
        first.progress = Progress::Uploading {
            generation: 1,
            parent: FolderId("0".into()),
            name: "a b".into(),
            size: 9,
            started_ms: -5,
        };
        journal.save(&first).unwrap();
        journal.delete(second.id).unwrap();
        let rows = journal.load_all().unwrap();
        assert_eq!(rows, vec![first]);
        let orphans: i64 = journal
            .conn
            .query_row(
                "SELECT COUNT(*) FROM obsolete WHERE entry = ?1",
                [second.id.0],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(orphans, 0);
    }

    #[test]
    fn saving_a_deleted_row_fails_instead_of_resurrecting_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(&dir.path().join("j.db")).unwrap();
        let record = sample(&mut journal);
        journal.delete(record.id).unwrap();
        assert!(journal.save(&record).is_err());
        assert!(journal.load_all().unwrap().is_empty());
    }

    #[test]
    fn meta_values_replace_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("j.db")).unwrap();
        assert_eq!(journal.meta("remote").unwrap(), None);
        journal.set_meta("remote", "1fichier:a").unwrap();
        journal.set_meta("remote", "1fichier:b").unwrap();
        assert_eq!(
            journal.meta("remote").unwrap().as_deref(),
            Some("1fichier:b")
        );
    }

    #[test]
    fn times_before_and_after_the_epoch_round_trip() {
        for ns in [-1_500_000_000_123, 0, 1, 1_700_000_000_999_999_999] {
            assert_eq!(system_time_to_ns(ns_to_system_time(ns)), ns);
        }
    }
}
