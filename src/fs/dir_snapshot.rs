//! Open folders: the snapshot of a folder's entries its readdirs serve,
//! and what the kernel's cached copy of each listing holds.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use super::attr::{Attr, NodeType};

/// An open folder handle.
pub(crate) struct OpenDir {
    pub(crate) dir: u64,
    pub(crate) snapshot: DirSnapshot,
}

/// A folder's entries as they were at opendir, served to the readdir calls
/// that follow so their offsets stay meaningful.
pub(crate) struct DirSnapshot {
    pub(crate) entries: Vec<DirEntry>,
    /// How long the kernel may trust the entries' attributes.
    pub(crate) ttl: Duration,
}

impl DirSnapshot {
    /// Identifies the entries as the kernel caches them (names, inodes and
    /// kinds; attributes have their own time-to-live).
    pub(crate) fn fingerprint(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for entry in &self.entries {
            entry.ino.hash(&mut hasher);
            entry.name.hash(&mut hasher);
            (entry.kind as u8).hash(&mut hasher);
        }
        hasher.finish()
    }

    /// The entries from the kernel's readdir `offset` on, each with the
    /// offset that resumes after it.
    pub(crate) fn entries_from(&self, offset: i64) -> impl Iterator<Item = (i64, &DirEntry)> {
        let start = usize::try_from(offset).unwrap_or(0);
        self.entries
            .iter()
            .enumerate()
            .skip(start)
            .map(|(i, entry)| ((i + 1) as i64, entry))
    }
}

/// The listing a folder's open handles serve, so the kernel may keep the
/// listing it cached (FOPEN_CACHE_DIR) only while ours is still the same.
/// A warm `ls` then costs no readdir at all.
#[derive(Default)]
pub(crate) struct KernelListing {
    /// `None` once handles with different listings were open at the same
    /// time: the kernel may have cached either, so the next opendir makes
    /// it start over.
    pub(crate) fingerprint: Option<u64>,
    pub(crate) open_handles: usize,
}

/// One entry of a folder snapshot.
pub(crate) struct DirEntry {
    pub(crate) ino: u64,
    pub(crate) kind: NodeType,
    pub(crate) name: String,
    pub(crate) attr: Attr,
}
