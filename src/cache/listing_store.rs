//! Persisted listings: each folder's last listing, kept in the remote's
//! state directory so a restarted mount answers `ls` and `stat` at once from
//! what it last knew and revalidates in the background (stale-while-
//! revalidate), instead of listing every folder again before it can answer.
//!
//! One SQLite database (`listings.db`), one row per folder:
//!
//! ```text
//! listings(folder TEXT PRIMARY KEY,
//!          format INTEGER,      -- LISTING_FORMAT of the program that wrote it
//!          fetched_ms INTEGER,  -- when the listing was fetched, ms since the epoch
//!          body TEXT)           -- the Listing as JSON
//! ```
//!
//! The account's space figures (what `statfs` shows) are kept beside them,
//! so a restart neither asks for them again nor exceeds a service's limit
//! on that call (1fichier: `user/info` once per five minutes) by forgetting
//! when it last asked:
//!
//! ```text
//! account_space(id INTEGER PRIMARY KEY,  -- always 0: one row
//!               fetched_ms INTEGER, used INTEGER,
//!               total INTEGER)           -- NULL when the service does not say
//! ```
//!
//! The stored time is wall-clock time (an `Instant` means nothing after a
//! restart): the caller turns it back into an age. A listing is a cache, so
//! durability is relaxed (`synchronous=NORMAL`: a crash may lose the last
//! saves, never corrupt the file) and anything unreadable, a row of another
//! format or a corrupt body, is treated as absent, dropped, and fetched
//! again. Several mounts of one account may share the database (busy timeout).
//! Calls block on disk: async callers run them on a blocking thread.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use tracing::warn;

use crate::remote::{FolderId, Listing, SpaceInfo};

/// Bumped whenever `Listing`'s serialised shape changes incompatibly: rows
/// of any other format are ignored.
pub const LISTING_FORMAT: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS listings (
    folder TEXT PRIMARY KEY,
    format INTEGER NOT NULL,
    fetched_ms INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS account_space (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    fetched_ms INTEGER NOT NULL,
    used INTEGER NOT NULL,
    total INTEGER
);
";

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ListingStoreError {
    #[error("listing database: {0}")]
    Database(#[from] rusqlite::Error),
}

type Result<T> = std::result::Result<T, ListingStoreError>;

/// A listing as it was saved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredListing {
    pub listing: Listing,
    /// When the listing was fetched from the service (millisecond precision).
    pub fetched_at: SystemTime,
}

pub struct ListingStore {
    conn: Mutex<Connection>,
}

impl ListingStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<ListingStore> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(ListingStore {
            conn: Mutex::new(conn),
        })
    }

    /// Keeps `listing` as `folder`'s last listing, replacing the previous one.
    pub fn save(&self, folder: &FolderId, listing: &Listing, fetched_at: SystemTime) -> Result<()> {
        let body = serde_json::to_string(listing).expect("a listing is always valid JSON");
        self.conn.lock().execute(
            "INSERT INTO listings (folder, format, fetched_ms, body) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(folder) DO UPDATE SET
                 format = excluded.format, fetched_ms = excluded.fetched_ms, body = excluded.body",
            params![
                folder.0,
                LISTING_FORMAT,
                millis_since_epoch(fetched_at),
                body
            ],
        )?;
        Ok(())
    }

    /// `folder`'s last saved listing, if there is a usable one.
    pub fn load(&self, folder: &FolderId) -> Result<Option<StoredListing>> {
        let conn = self.conn.lock();
        use rusqlite::types::Value;
        // Read as plain values: a row of the wrong types (a foreign write) is
        // unreadable, not an error.
        let row: Option<(Value, Value, Value)> = conn
            .query_row(
                "SELECT format, fetched_ms, body FROM listings WHERE folder = ?1",
                [&folder.0],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        let Some((format, fetched_ms, body)) = row else {
            return Ok(None);
        };
        let stored = match (&format, &fetched_ms, &body) {
            (Value::Integer(LISTING_FORMAT), Value::Integer(ms), Value::Text(text)) => {
                serde_json::from_str::<Listing>(text)
                    .ok()
                    .map(|listing| StoredListing {
                        listing,
                        fetched_at: time_of_millis(*ms),
                    })
            }
            _ => None,
        };
        if stored.is_none() {
            warn!(folder = %folder, format = ?format, "dropping an unreadable saved listing");
            // Only the row as read: another mount may have saved a good one since.
            conn.execute(
                "DELETE FROM listings
                 WHERE folder = ?1 AND format IS ?2 AND fetched_ms IS ?3 AND body IS ?4",
                params![folder.0, format, fetched_ms, body],
            )?;
        }
        Ok(stored)
    }

    /// Forgets `folder`'s listing (the folder is gone). Returns whether one
    /// was saved.
    pub fn drop_folder(&self, folder: &FolderId) -> Result<bool> {
        let rows = self
            .conn
            .lock()
            .execute("DELETE FROM listings WHERE folder = ?1", [&folder.0])?;
        Ok(rows > 0)
    }

    /// Forgets every listing and the space figures (SIGHUP, or persisted
    /// listings turned off).
    pub fn clear(&self) -> Result<()> {
        self.conn
            .lock()
            .execute_batch("DELETE FROM listings; DELETE FROM account_space;")?;
        Ok(())
    }

    /// Keeps the account's space figures, replacing the previous ones.
    pub fn save_space(&self, space: SpaceInfo, fetched_at: SystemTime) -> Result<()> {
        let stored = |bytes: u64| i64::try_from(bytes).unwrap_or(i64::MAX);
        self.conn.lock().execute(
            "INSERT INTO account_space (id, fetched_ms, used, total) VALUES (0, ?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET
                 fetched_ms = excluded.fetched_ms, used = excluded.used, total = excluded.total",
            params![
                millis_since_epoch(fetched_at),
                stored(space.used),
                space.total.map(stored)
            ],
        )?;
        Ok(())
    }

    /// The account's last saved space figures and when they were fetched.
    pub fn load_space(&self) -> Result<Option<(SpaceInfo, SystemTime)>> {
        let row: Option<(i64, i64, Option<i64>)> = self
            .conn
            .lock()
            .query_row(
                "SELECT fetched_ms, used, total FROM account_space WHERE id = 0",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        let bytes = |stored: i64| u64::try_from(stored).ok();
        Ok(row.and_then(|(fetched_ms, used, total)| {
            let space = SpaceInfo {
                used: bytes(used)?,
                total: match total {
                    Some(total) => Some(bytes(total)?),
                    None => None,
                },
            };
            Some((space, time_of_millis(fetched_ms)))
        }))
    }
}

fn millis_since_epoch(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis())
            .map(|ms| -ms)
            .unwrap_or(i64::MIN),
    }
}

fn time_of_millis(ms: i64) -> SystemTime {
    let magnitude = Duration::from_millis(ms.unsigned_abs());
    let time = if ms >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    };
    time.unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::{FileEntry, FileId, FolderEntry};
    use chrono::TimeZone;

    fn sample_listing(files: usize) -> Listing {
        Listing {
            folders: vec![FolderEntry {
                id: FolderId("7".into()),
                name: "Séries ＂quoted＂".into(),
                created: Some(chrono::Utc.timestamp_opt(1_600_000_000, 0).unwrap()),
            }],
            files: (0..files)
                .map(|i| FileEntry {
                    id: FileId(format!("https://1fichier.com/?id{i}")),
                    name: format!("episode {i}.mkv"),
                    size: 1 << (i % 40),
                    modified: chrono::Utc
                        .timestamp_opt(1_700_000_000 + i as i64, 123_456_789)
                        .unwrap(),
                    checksum: (i % 2 == 0).then(|| format!("{i:0128x}")),
                    mime: Some("video/x-matroska".into()),
                    share_link: Some(format!("https://1fichier.com/?id{i}")),
                    expires: (i % 3 == 0)
                        .then(|| chrono::Utc.timestamp_opt(1_800_000_000, 0).unwrap()),
                })
                .collect(),
        }
    }

    fn open(dir: &tempfile::TempDir) -> ListingStore {
        ListingStore::open(&dir.path().join("listings.db")).unwrap()
    }

    #[test]
    fn saved_listings_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let fetched = UNIX_EPOCH + Duration::from_millis(1_765_000_000_123);
        let root = FolderId("0".into());
        let other = FolderId("7".into());
        {
            let store = open(&dir);
            assert_eq!(store.load(&root).unwrap(), None);
            store.save(&root, &sample_listing(50), fetched).unwrap();
            store.save(&other, &Listing::default(), fetched).unwrap();
        }
        let store = open(&dir);
        let loaded = store.load(&root).unwrap().unwrap();
        assert_eq!(loaded.listing, sample_listing(50));
        assert_eq!(loaded.fetched_at, fetched);
        assert_eq!(
            store.load(&other).unwrap().unwrap().listing,
            Listing::default()
        );
    }

    #[test]
    fn save_replaces_and_drop_and_clear_forget() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let a = FolderId("a".into());
        let b = FolderId("b".into());
        let early = UNIX_EPOCH + Duration::from_secs(100);
        let late = UNIX_EPOCH + Duration::from_secs(200);
        store.save(&a, &sample_listing(3), early).unwrap();
        store.save(&a, &sample_listing(1), late).unwrap();
        let loaded = store.load(&a).unwrap().unwrap();
        assert_eq!(loaded.listing, sample_listing(1));
        assert_eq!(loaded.fetched_at, late);
        store.save(&b, &sample_listing(2), late).unwrap();
        assert!(store.drop_folder(&a).unwrap());
        assert!(!store.drop_folder(&a).unwrap());
        assert_eq!(store.load(&a).unwrap(), None);
        assert!(store.load(&b).unwrap().is_some());
        store.clear().unwrap();
        assert_eq!(store.load(&b).unwrap(), None);
    }

    #[test]
    fn space_figures_survive_reopening_and_clear_forgets_them() {
        let dir = tempfile::tempdir().unwrap();
        let fetched = UNIX_EPOCH + Duration::from_millis(1_765_000_000_456);
        {
            let store = open(&dir);
            assert_eq!(store.load_space().unwrap(), None);
            let first = SpaceInfo {
                used: 5,
                total: Some(10),
            };
            store.save_space(first, fetched).unwrap();
            let unknown_total = SpaceInfo {
                used: u64::MAX,
                total: None,
            };
            store.save_space(unknown_total, fetched).unwrap();
        }
        let store = open(&dir);
        let (space, at) = store.load_space().unwrap().unwrap();
        assert_eq!(space.total, None);
        assert_eq!(space.used, i64::MAX as u64, "clamped to what SQLite holds");
        assert_eq!(at, fetched);
        store.clear().unwrap();
        assert_eq!(store.load_space().unwrap(), None);
    }

    #[test]
    fn corrupt_and_old_format_rows_are_ignored_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let good = FolderId("good".into());
        store
            .save(&good, &sample_listing(2), SystemTime::now())
            .unwrap();
        {
            let raw = Connection::open(dir.path().join("listings.db")).unwrap();
            use rusqlite::types::Value;
            let listing_text = serde_json::to_string(&sample_listing(1)).unwrap();
            let rows: [(&str, Value, Value); 5] = [
                (
                    "truncated",
                    LISTING_FORMAT.into(),
                    "{\"folders\":[".to_string().into(),
                ),
                (
                    "wrong-shape",
                    LISTING_FORMAT.into(),
                    "[1,2,3]".to_string().into(),
                ),
                (
                    "old-format",
                    (LISTING_FORMAT + 1).into(),
                    listing_text.clone().into(),
                ),
                ("blob", LISTING_FORMAT.into(), vec![0xffu8, 0, 0xfe].into()),
                ("text-format", "one".to_string().into(), listing_text.into()),
            ];
            for (folder, format, body) in rows {
                raw.execute(
                    "INSERT INTO listings (folder, format, fetched_ms, body) VALUES (?1, ?2, 0, ?3)",
                    params![folder, format, body],
                )
                .unwrap();
            }
        }
        for folder in [
            "truncated",
            "wrong-shape",
            "old-format",
            "blob",
            "text-format",
        ] {
            let folder = FolderId(folder.into());
            assert_eq!(store.load(&folder).unwrap(), None, "{folder}");
        }
        let left: i64 = store
            .conn
            .lock()
            .query_row("SELECT COUNT(*) FROM listings", [], |row| row.get(0))
            .unwrap();
        assert_eq!(left, 1, "unreadable rows are dropped");
        assert_eq!(
            store.load(&good).unwrap().unwrap().listing,
            sample_listing(2)
        );
    }

    #[test]
    fn two_handles_on_one_database_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(&dir);
        let second = open(&dir);
        let folder = FolderId("0".into());
        first
            .save(&folder, &sample_listing(4), SystemTime::now())
            .unwrap();
        assert_eq!(
            second.load(&folder).unwrap().unwrap().listing,
            sample_listing(4)
        );
        second.clear().unwrap();
        assert_eq!(first.load(&folder).unwrap(), None);
    }

    fn arbitrary_listing() -> impl proptest::strategy::Strategy<Value = Listing> {
        use proptest::prelude::*;
        // Any date chrono writes as RFC 3339 (years 0 to 9999), any nanos.
        let date = (0i64..253_402_300_799, 0u32..1_000_000_000)
            .prop_map(|(secs, nanos)| chrono::Utc.timestamp_opt(secs, nanos).unwrap());
        let file = (
            "\\PC{0,12}",
            "\\PC{0,12}",
            any::<u64>(),
            date.clone(),
            proptest::option::of("[0-9a-f]{0,16}"),
            proptest::option::of(date.clone()),
        )
            .prop_map(|(id, name, size, modified, checksum, expires)| FileEntry {
                id: FileId(id),
                name,
                size,
                modified,
                checksum,
                mime: None,
                share_link: None,
                expires,
            });
        let folder = ("\\PC{0,8}", "\\PC{0,12}", proptest::option::of(date)).prop_map(
            |(id, name, created)| FolderEntry {
                id: FolderId(id),
                name,
                created,
            },
        );
        (
            proptest::collection::vec(folder, 0..4),
            proptest::collection::vec(file, 0..6),
        )
            .prop_map(|(folders, files)| Listing { folders, files })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]
        #[test]
        fn any_listing_round_trips(listing in arbitrary_listing(), folder in "\\PC{0,10}") {
            let dir = tempfile::tempdir().unwrap();
            let store = open(&dir);
            let folder = FolderId(folder);
            let fetched = UNIX_EPOCH + Duration::from_millis(1_765_000_000_000);
            store.save(&folder, &listing, fetched).unwrap();
            let loaded = store.load(&folder).unwrap().unwrap();
            proptest::prop_assert_eq!(loaded.listing, listing);
            proptest::prop_assert_eq!(loaded.fetched_at, fetched);
        }
    }

    #[test]
    fn times_before_the_epoch_round_trip() {
        for ms in [0, 1, -1, -86_400_000, 1_765_000_000_123] {
            assert_eq!(millis_since_epoch(time_of_millis(ms)), ms);
        }
    }
}
