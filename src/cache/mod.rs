//! Block cache (memory LRU + optional disk spill) and metadata cache.
//!
//! Both caches sit between the FUSE adapter and the `Remote` layer and never
//! call back up: the adapter asks, the caches fetch through the remote.

pub mod block;
pub mod listing_store;
pub mod meta;
pub mod tracked_remote;

use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::remote::{FileEntry, FileId};
use crate::state_dir::RemoteIdentity;

/// `$XDG_CACHE_HOME/filehostfs/blocks/<account>` (`~/.cache/...`): the disk
/// cache of a mount given no cache directory, one per account so a restart
/// (or another mount of the same account) finds the blocks again. `None`
/// when the user has no cache directory.
pub fn default_disk_dir(identity: &RemoteIdentity) -> Option<PathBuf> {
    Some(
        dirs::cache_dir()?
            .join("filehostfs")
            .join("blocks")
            .join(identity.as_str()),
    )
}

/// Identifies one version of one file's content: the remote id plus what the
/// service tells us about the bytes (size, date, checksum). When any of them
/// changes the key changes, so stale cached blocks are simply never asked for
/// again (and age out of the LRU tiers).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentKey(Arc<str>);

impl ContentKey {
    pub fn for_entry(entry: &FileEntry) -> Self {
        Self::new(
            &entry.id,
            entry.size,
            entry.modified.timestamp(),
            entry.modified.timestamp_subsec_nanos(),
            entry.checksum.as_deref(),
        )
    }

    pub fn new(
        id: &FileId,
        size: u64,
        modified_secs: i64,
        modified_nanos: u32,
        checksum: Option<&str>,
    ) -> Self {
        let mut hasher = Sha256::new();
        // Length-prefix every part so no two different tuples hash alike.
        for part in [
            id.0.as_bytes(),
            &size.to_le_bytes(),
            &modified_secs.to_le_bytes(),
            &modified_nanos.to_le_bytes(),
            checksum.unwrap_or("").as_bytes(),
        ] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        // 128 bits are plenty to keep distinct file versions apart and keep
        // the disk tier's file names short.
        let digest = hasher.finalize();
        ContentKey(hex::encode(&digest[..16]).into())
    }

    /// Lower-case hex, safe to use as a file name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a key back from its file-name form (disk tier index rebuild).
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 32
            && text
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| ContentKey(text.into()))
    }
}

/// What the block cache needs to know to fetch one file's bytes.
#[derive(Clone, Debug)]
pub struct FileSource {
    pub id: FileId,
    pub size: u64,
    pub key: ContentKey,
}

impl FileSource {
    pub fn for_entry(entry: &FileEntry) -> Self {
        FileSource {
            id: entry.id.clone(),
            size: entry.size,
            key: ContentKey::for_entry(entry),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_key_changes_with_any_part() {
        let id = FileId("https://example/?abc".into());
        let base = ContentKey::new(&id, 10, 100, 0, Some("aa"));
        assert_eq!(base, ContentKey::new(&id, 10, 100, 0, Some("aa")));
        assert_ne!(base, ContentKey::new(&id, 11, 100, 0, Some("aa")));
        assert_ne!(base, ContentKey::new(&id, 10, 101, 0, Some("aa")));
        assert_ne!(base, ContentKey::new(&id, 10, 100, 1, Some("aa")));
        assert_ne!(base, ContentKey::new(&id, 10, 100, 0, Some("ab")));
        assert_ne!(base, ContentKey::new(&id, 10, 100, 0, None));
        let other = FileId("https://example/?abd".into());
        assert_ne!(base, ContentKey::new(&other, 10, 100, 0, Some("aa")));
    }

    #[test]
    fn content_key_round_trips_through_its_text() {
        let key = ContentKey::new(&FileId("x".into()), 1, 2, 3, None);
        assert_eq!(ContentKey::parse(key.as_str()), Some(key));
        assert_eq!(ContentKey::parse("not-a-key"), None);
        assert_eq!(ContentKey::parse(&"A".repeat(32)), None);
    }
}
