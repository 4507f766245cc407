//! The metadata store of a mount and its in-memory copy: `stat` is
//! answered on the kernel loop, so it never reads the database. Every
//! record is loaded when the mount starts; each change is written to the
//! store (fsync'd) before it is applied in memory. Other mounts of the
//! account on this machine share the store: when one of them changed it,
//! the copy is loaded again at the next listing fetched from the service
//! ([`MetadataOverlay::reload_shared`]). How records are laid over what
//! the services report: `metadata_overlay`.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};
use tracing::warn;

use crate::metadata::{
    ContentGuard, Metadata, MetadataChange, MetadataError, MetadataStore, Record, RecordKey,
};
use crate::remote::FileEntry;
use crate::writeback::EntryId;

/// The metadata store of a mount and its in-memory copy.
pub(crate) struct MetadataOverlay {
    store: Arc<MetadataStore>,
    records: Arc<RwLock<HashMap<RecordKey, Record>>>,
    /// The store's data version the copy was loaded at (it changes when
    /// another mount writes); held while the copy is updated, so a reload
    /// never drops a change of this mount made meanwhile.
    loaded_at: Arc<Mutex<i64>>,
    /// The remote file each copy opened for writing started from: while
    /// the copy is unchanged, a change made through it (GNU `touch` opens
    /// the file, then sets its times) also applies to that file, which
    /// stays when the copy is dropped unchanged.
    pub(crate) copied_from: Mutex<HashMap<EntryId, FileEntry>>,
    /// Pending records moved to their uploaded file, newest last: a change
    /// decided for a pending key just before its upload finished (`chmod`
    /// racing the write-back) follows the record instead of landing on a
    /// key nothing reads any more. Only touched under `loaded_at`, like
    /// the moves themselves; bounded, since such a race spans a moment.
    moved: Mutex<VecDeque<(RecordKey, RecordKey, ContentGuard)>>,
}

/// How many recent moves [`MetadataOverlay::moved`] remembers.
const REMEMBERED_MOVES: usize = 1024;

impl MetadataOverlay {
    /// Opens the store at `path` (none: an in-memory store that lives as
    /// long as the mount) and loads every record.
    pub(crate) fn open(path: Option<&Path>) -> Result<MetadataOverlay, MetadataError> {
        let store = MetadataStore::open(path.unwrap_or(Path::new(":memory:")))?;
        let version = store.data_version()?;
        let records = store.all()?.into_iter().collect();
        Ok(MetadataOverlay {
            store: Arc::new(store),
            records: Arc::new(RwLock::new(records)),
            loaded_at: Arc::new(Mutex::new(version)),
            copied_from: Mutex::new(HashMap::new()),
            moved: Mutex::new(VecDeque::new()),
        })
    }

    /// What is kept for `key`, if it was set for the content `guard` names.
    pub(crate) fn get(&self, key: &RecordKey, guard: &ContentGuard) -> Option<Metadata> {
        let records = self.records.read();
        let record = records.get(key)?;
        (&record.guard == guard).then(|| record.metadata.clone())
    }

    /// Applies `change` durably, then in memory. Blocks on the disk.
    pub(crate) fn change(
        &self,
        key: &RecordKey,
        guard: &ContentGuard,
        change: &MetadataChange,
    ) -> Result<(), MetadataError> {
        let _loading = self.loaded_at.lock();
        let (key, guard) = self.follow_move(key, guard);
        let record = self.store.update(&key, &guard, change, SystemTime::now())?;
        self.records.write().insert(key, record);
        Ok(())
    }

    /// Where the record of `key` lives now (its own place unless an upload
    /// moved it). Called under `loaded_at`.
    fn follow_move(&self, key: &RecordKey, guard: &ContentGuard) -> (RecordKey, ContentGuard) {
        let moved = self.moved.lock();
        match moved.iter().rev().find(|(from, _, _)| from == key) {
            Some((_, to, to_guard)) => (to.clone(), to_guard.clone()),
            None => (key.clone(), guard.clone()),
        }
    }

    /// Work that loads the records again if another mount changed the
    /// store since they were loaded (blocks on the disk: run it off the
    /// async workers).
    pub(crate) fn reload_shared(&self) -> impl FnOnce() + Send + 'static {
        let (store, records, loaded_at) = (
            self.store.clone(),
            self.records.clone(),
            self.loaded_at.clone(),
        );
        move || {
            let mut loaded = loaded_at.lock();
            let reloaded = store.data_version().and_then(|version| {
                if version == *loaded {
                    return Ok(None);
                }
                Ok(Some((version, store.all()?)))
            });
            match reloaded {
                Ok(Some((version, all))) => {
                    *records.write() = all.into_iter().collect();
                    *loaded = version;
                }
                Ok(None) => {}
                Err(error) => warn!(%error, "cannot read the metadata other mounts changed"),
            }
        }
    }

    /// Moves the record of `from` to `to` (an upload gave a pending file
    /// its remote id). Blocks on the disk.
    pub(crate) fn rekey(
        &self,
        from: &RecordKey,
        to: &RecordKey,
        guard: &ContentGuard,
    ) -> Result<(), MetadataError> {
        let _loading = self.loaded_at.lock();
        {
            let mut moved = self.moved.lock();
            if moved.len() == REMEMBERED_MOVES {
                moved.pop_front();
            }
            moved.push_back((from.clone(), to.clone(), guard.clone()));
        }
        if self.store.rekey(from, to, guard)? {
            let mut records = self.records.write();
            if let Some(mut record) = records.remove(from) {
                record.guard = guard.clone();
                records.insert(to.clone(), record);
            }
        }
        Ok(())
    }

    /// Drops the record of `key` (its file or folder is gone). Blocks.
    pub(crate) fn forget(&self, key: &RecordKey) {
        let _loading = self.loaded_at.lock();
        if let Err(error) = self.store.forget(key) {
            warn!(%key, %error, "cannot drop a metadata record");
        }
        self.records.write().remove(key);
    }

    /// The records of `wanted` kept for the content each guard names, as
    /// the store has them (other mounts on this machine share it): what a
    /// folder's sync file carries. Blocks on the disk.
    pub(crate) fn stored(
        &self,
        wanted: &[(RecordKey, ContentGuard)],
    ) -> Result<HashMap<RecordKey, Record>, MetadataError> {
        self.store.get_many(wanted)
    }

    /// Takes `incoming`, a record another machine shared for the content
    /// the listing shows now, if it wins (last writer wins). A record kept
    /// for other content is stale and gives way whatever its time. Durably,
    /// then in memory; returns whether it was taken. Blocks on the disk.
    pub(crate) fn merge_synced(
        &self,
        key: &RecordKey,
        incoming: &Record,
    ) -> Result<bool, MetadataError> {
        let _loading = self.loaded_at.lock();
        let kept = self.store.records(std::slice::from_ref(key))?;
        if kept
            .iter()
            .any(|(_, record)| record.guard != incoming.guard)
        {
            self.store.forget(key)?;
            self.records.write().remove(key);
        }
        let taken = self.store.merge_synced(key, incoming)?;
        if taken {
            self.records.write().insert(key.clone(), incoming.clone());
        }
        Ok(taken)
    }

    /// The pending entries that have a record (recovery drops those whose
    /// entry is gone).
    pub(crate) fn pending_entries(&self) -> Vec<u64> {
        self.records
            .read()
            .keys()
            .filter_map(|key| match key {
                RecordKey::Pending(entry) => Some(*entry),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::FileId;

    fn uploaded() -> FileEntry {
        FileEntry {
            id: FileId("uploaded".into()),
            name: "f".into(),
            size: 3,
            modified: chrono::Utc::now(),
            checksum: Some("abc".into()),
            mime: None,
            share_link: None,
            expires: None,
        }
    }

    /// `chmod` of a file whose upload finishes meanwhile: the change was
    /// decided for the pending key, and lands after the record moved.
    #[test]
    fn a_change_for_a_pending_key_after_its_upload_follows_the_record() {
        let overlay = MetadataOverlay::open(None).unwrap();
        let pending = RecordKey::Pending(7);
        let file = uploaded();
        let (key, guard) = (
            RecordKey::File(file.id.clone()),
            ContentGuard::for_file(&file),
        );
        let mtime = MetadataChange {
            mtime_ns: Some(1_000),
            ..MetadataChange::default()
        };
        overlay
            .change(&pending, &ContentGuard::Pending, &mtime)
            .unwrap();
        overlay.rekey(&pending, &key, &guard).unwrap();
        let chmod = MetadataChange {
            mode: Some(0o600),
            ..MetadataChange::default()
        };
        overlay
            .change(&pending, &ContentGuard::Pending, &chmod)
            .unwrap();
        let kept = overlay
            .get(&key, &guard)
            .expect("the uploaded file's record");
        assert_eq!(kept.mode, Some(0o600));
        assert_eq!(kept.mtime_ns, Some(1_000));
        assert!(overlay.pending_entries().is_empty());
    }
}
