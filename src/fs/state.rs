//! The state every operation shares: caches, the inode table, the handle
//! table and the write path's part, and how a node's attributes derive
//! from them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tracing::warn;

use super::attr::{Attr, NodeType};
use super::dir_snapshot::{DirEntry, DirSnapshot, KernelListing, OpenDir};
use super::error::Error;
use super::handles::{Handle, HandleTable};
use super::inode::{InodeTable, Node, NodeKind};
use super::kept_metadata::MetadataOverlay;
use super::metadata_sync_state::MetadataSync;
use super::pending::{WriteConfig, WriteState};
use super::read::{OpenFile, ReadAheadConfig};
use crate::cache::block::{BlockCache, BlockCacheConfig};
use crate::cache::meta::MetaCache;
use crate::cache::{ContentKey, FileSource};
use crate::remote::{FileEntry, Remote};

/// Settings of a mounted filesystem.
#[derive(Clone, Debug)]
pub struct FsConfig {
    pub cache: BlockCacheConfig,
    pub read_ahead: ReadAheadConfig,
    pub dir_cache_time: Duration,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits removed from 0666 (files) and 0777 (folders).
    pub umask: u16,
    pub write: WriteConfig,
    /// `--read-only`: every change answers EROFS.
    pub read_only: bool,
    /// Whether files whose reading spends a limited download (file.io) may
    /// be opened for reading (`--consume-downloads`).
    pub consume_downloads: bool,
    /// The metadata store's database (mtime, mode, owner, `user.*`
    /// attributes; see [`crate::metadata`]), in the remote's state dir.
    /// `None`: kept in memory for as long as the filesystem lives.
    pub metadata_db: Option<std::path::PathBuf>,
    /// `--metadata-sync`: share the metadata records with other machines
    /// through one hidden file per remote folder (see `metadata_sync`).
    pub metadata_sync: bool,
}

/// State shared by the kernel loop and the tasks it spawns.
pub(crate) struct FsState {
    pub remote: Arc<dyn Remote>,
    pub meta: MetaCache,
    pub blocks: BlockCache,
    pub inodes: InodeTable,
    pub config: FsConfig,
    pub runtime: tokio::runtime::Handle,
    /// Every open file and folder handle.
    pub(crate) handles: HandleTable,
    /// The content each inode had when last opened, to tell the kernel it
    /// may keep its page cache when the content is unchanged.
    pub(crate) opened_content: Mutex<HashMap<u64, ContentKey>>,
    /// What the kernel's copy of each folder's listing holds.
    pub(crate) kernel_listings: Mutex<HashMap<u64, KernelListing>>,
    pub(crate) mounted_at: SystemTime,
    pub write: WriteState,
    pub(crate) metadata: Arc<MetadataOverlay>,
    /// `--metadata-sync` (none without it).
    pub(crate) sync: Option<MetadataSync>,
}

impl FsState {
    /// Attributes of a node as the kernel sees them.
    pub fn attr(&self, node: &Node) -> Attr {
        let (kind, size, mtime, base_perm, nlink) = match &node.kind {
            NodeKind::Folder { created, .. } => (
                NodeType::Directory,
                0,
                created.map_or(self.mounted_at, SystemTime::from),
                0o777,
                2,
            ),
            NodeKind::File(entry) => (
                NodeType::RegularFile,
                entry.size,
                SystemTime::from(entry.modified),
                0o666,
                1,
            ),
            NodeKind::Local(local) => match self.write.local_attr(node.ino) {
                Some((size, modified)) => (NodeType::RegularFile, size, modified, 0o666, 1),
                None => {
                    // The pending file is gone: its upload finished (the
                    // node has just become the remote file, whose size the
                    // kernel must see, not the 0 the node was created
                    // with), or it was unlinked.
                    if let Some(now) = self.inodes.get(node.ino) {
                        if !matches!(now.kind, NodeKind::Local(_)) {
                            return self.attr(&now);
                        }
                    }
                    (NodeType::RegularFile, local.size, local.modified, 0o666, 1)
                }
            },
        };
        let mut attr = Attr {
            ino: node.ino,
            size,
            mtime,
            kind,
            perm: base_perm & !self.config.umask & 0o7777,
            nlink,
            uid: self.config.uid,
            gid: self.config.gid,
            blksize: self.blocks.block_size().min(1 << 20) as u32,
        };
        self.overlay_metadata(node, &mut attr);
        attr
    }

    /// A snapshot of a folder for one opendir..releasedir.
    pub(crate) fn snapshot(&self, dir: u64, ttl: Duration) -> Result<DirSnapshot, Error> {
        let node = self.inodes.get(dir).ok_or(Error::NoSuchInode(dir))?;
        let parent = self.inodes.get(node.parent).unwrap_or_else(|| node.clone());
        let mut entries = Vec::new();
        for (name, n) in [(".", &node), ("..", &parent)] {
            entries.push(DirEntry {
                ino: n.ino,
                kind: NodeType::Directory,
                name: name.to_string(),
                attr: self.attr(n),
            });
        }
        for child in self.inodes.children(dir)? {
            let attr = self.attr(&child);
            entries.push(DirEntry {
                ino: child.ino,
                kind: attr.kind,
                name: child.name,
                attr,
            });
        }
        Ok(DirSnapshot { entries, ttl })
    }

    /// Opens a handle on a snapshot of folder `dir`: the handle, and
    /// whether the kernel may keep the listing it cached for the folder.
    pub(crate) fn open_snapshot(&self, dir: u64, snapshot: DirSnapshot) -> (u64, bool) {
        let fingerprint = snapshot.fingerprint();
        let fh = self
            .handles
            .insert(Handle::Directory(Arc::new(OpenDir { dir, snapshot })));
        let mut listings = self.kernel_listings.lock();
        let listing = listings.entry(dir).or_default();
        let keep = listing.fingerprint == Some(fingerprint);
        if listing.open_handles == 0 {
            listing.fingerprint = Some(fingerprint);
        } else if !keep {
            listing.fingerprint = None;
        }
        listing.open_handles += 1;
        (fh, keep)
    }

    /// A folder handle was released.
    pub(crate) fn closed_dir(&self, open: &OpenDir) {
        let mut listings = self.kernel_listings.lock();
        if let Some(listing) = listings.get_mut(&open.dir) {
            listing.open_handles = listing.open_handles.saturating_sub(1);
        }
    }

    /// `EACCES` when opening `ino` would read a file whose every read spends
    /// one of its limited downloads (file.io) and the user has not allowed that
    /// with `--consume-downloads`. Truncating opens read nothing and pass.
    pub(crate) fn refuse_to_spend_download(&self, ino: u64, flags: i32) -> Option<Error> {
        if self.config.consume_downloads || flags & libc::O_TRUNC != 0 {
            return None;
        }
        let node = self.inodes.get(ino)?;
        let NodeKind::File(entry) = &node.kind else {
            return None;
        };
        if !self.remote.read_consumes_download(&entry.id) {
            return None;
        }
        warn!(
            file = %entry.name,
            "refusing to open {:?}: it was not uploaded from this machine, and reading it would \
             spend one of its {} downloads (possibly deleting it); mount with --consume-downloads \
             to allow that",
            entry.name,
            self.remote.service()
        );
        Some(Error::DownloadsLimited)
    }

    /// Opens a remote file for reading: the new handle, and whether the
    /// content is the one the file had when last opened (the kernel may
    /// then keep its page cache). No call to the service: the size and
    /// version come from the listing.
    pub(crate) fn open_remote_handle(&self, ino: u64, entry: &FileEntry) -> (u64, bool) {
        let source = FileSource::for_entry(entry);
        let unchanged = self
            .opened_content
            .lock()
            .insert(ino, source.key.clone())
            .is_some_and(|previous| previous == source.key);
        let hold = self.write.queue.hold_while_read(&entry.id);
        let file = OpenFile::new(
            ino,
            source,
            self.blocks.clone(),
            self.config.read_ahead,
            Some(hold),
        );
        let fh = self.handles.insert(Handle::RemoteReader(file));
        (fh, unchanged)
    }
}
