//! The disk tier: blocks spilled to files that survive remounts, bounded
//! in bytes, evicted least recently used first.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::key::BlockKey;
use crate::cache::ContentKey;

/// Blocks stored as files `<dir>/blocks-<block size>/<key[..2]>/<key>-<index>`.
/// The index of what is on disk lives in memory (rebuilt from the directory
/// at start-up, oldest modification first) and drives LRU eviction.
pub(super) struct DiskTier {
    root: PathBuf,
    max_bytes: u64,
    index: Mutex<DiskIndex>,
    /// Bounds the blocks waiting to be written, so a fast download cannot
    /// pile up unwritten blocks in memory.
    write_permits: Arc<Semaphore>,
    writes: AtomicU64,
}

struct DiskIndex {
    lru: LruCache<BlockKey, u64>,
    bytes: u64,
}

const DISK_WRITES_IN_FLIGHT: usize = 8;

impl DiskTier {
    pub(super) fn open(dir: &Path, block_size: u64, max_bytes: u64) -> io::Result<Self> {
        let root = dir.join(format!("blocks-{block_size}"));
        fs::create_dir_all(&root)?;
        let mut found = Vec::new();
        for shard in fs::read_dir(&root)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for file in fs::read_dir(shard.path())? {
                let file = file?;
                let name = file.file_name();
                let Some(block_key) = name.to_str().and_then(parse_block_file_name) else {
                    // Leftover temporary files from an interrupted write.
                    let _ = fs::remove_file(file.path());
                    continue;
                };
                let meta = file.metadata()?;
                let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                found.push((used, block_key, meta.len()));
            }
        }
        found.sort_by_key(|(used, _, _)| *used);
        let mut index = DiskIndex {
            lru: LruCache::unbounded(),
            bytes: 0,
        };
        for (_, block_key, len) in found {
            index.bytes += len;
            index.lru.put(block_key, len);
        }
        let tier = DiskTier {
            root,
            max_bytes,
            index: Mutex::new(index),
            write_permits: Arc::new(Semaphore::new(DISK_WRITES_IN_FLIGHT)),
            writes: AtomicU64::new(0),
        };
        let evicted = tier.evict_over_limit();
        remove_files(&evicted);
        debug!(dir = %tier.root.display(), blocks = tier.index.lock().lru.len(), "disk cache opened");
        Ok(tier)
    }

    /// Whether the block is on disk (does not touch LRU order).
    pub(super) fn contains(&self, block_key: &BlockKey) -> bool {
        self.index.lock().lru.contains(block_key)
    }

    /// Bytes held on disk.
    pub(super) fn bytes(&self) -> u64 {
        self.index.lock().bytes
    }

    /// Blocks written so far.
    pub(super) fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Waits until every block handed to `store` is written.
    pub(super) async fn wait_for_writes(&self) {
        let all = DISK_WRITES_IN_FLIGHT as u32;
        if let Ok(permits) = self.write_permits.acquire_many(all).await {
            drop(permits);
        }
    }

    fn path_of(&self, block_key: &BlockKey) -> PathBuf {
        let content = block_key.content.as_str();
        self.root
            .join(&content[..2])
            .join(format!("{content}-{}", block_key.index))
    }

    fn evict_over_limit(&self) -> Vec<PathBuf> {
        let mut index = self.index.lock();
        let mut evicted = Vec::new();
        while index.bytes > self.max_bytes {
            match index.lru.pop_lru() {
                Some((block_key, len)) => {
                    index.bytes -= len;
                    evicted.push(self.path_of(&block_key));
                }
                None => break,
            }
        }
        evicted
    }

    fn forget(&self, block_key: &BlockKey) {
        let mut index = self.index.lock();
        if let Some(len) = index.lru.pop(block_key) {
            index.bytes -= len;
        }
    }

    /// Drops a block from disk; returns its length when it was held.
    pub(super) fn remove(&self, block_key: &BlockKey) -> Option<u64> {
        let len = {
            let mut index = self.index.lock();
            let len = index.lru.pop(block_key)?;
            index.bytes -= len;
            len
        };
        remove_files(&[self.path_of(block_key)]);
        Some(len)
    }

    /// The contents with at least one block on disk.
    pub(super) fn contents(&self) -> Vec<crate::cache::ContentKey> {
        let index = self.index.lock();
        index
            .lru
            .iter()
            .map(|(key, _)| key.content.clone())
            .collect()
    }

    /// The block's bytes, or `None` when the file is gone or damaged.
    pub(super) async fn load(&self, block_key: BlockKey, expected_len: usize) -> Option<Bytes> {
        let path = self.path_of(&block_key);
        let read = tokio::task::spawn_blocking(move || -> io::Result<Vec<u8>> {
            let data = fs::read(&path)?;
            if data.len() == expected_len {
                // Keeps the LRU order across remounts (the index is rebuilt
                // from modification times).
                if let Ok(file) = fs::File::options().write(true).open(&path) {
                    let _ = file.set_modified(SystemTime::now());
                }
            } else {
                let _ = fs::remove_file(&path);
            }
            Ok(data)
        })
        .await;
        match read {
            Ok(Ok(data)) if data.len() == expected_len => {
                self.index.lock().lru.get(&block_key);
                Some(Bytes::from(data))
            }
            other => {
                debug!(?other, "disk cache block unusable; fetching again");
                self.forget(&block_key);
                None
            }
        }
    }

    /// Writes a block atomically (temporary file + rename) and evicts the
    /// least recently used blocks over the size bound. Waits only for a
    /// write slot, not for the write itself.
    pub(super) async fn store(self: &Arc<Self>, block_key: BlockKey, data: Bytes) {
        if data.len() as u64 > self.max_bytes {
            return;
        }
        let Ok(permit) = self.write_permits.clone().acquire_owned().await else {
            return;
        };
        let tier = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let path = tier.path_of(&block_key);
            match write_atomically(&path, &data) {
                Ok(()) => {
                    {
                        let mut index = tier.index.lock();
                        index.bytes += data.len() as u64;
                        if let Some(old) = index.lru.put(block_key, data.len() as u64) {
                            index.bytes -= old;
                        }
                    }
                    remove_files(&tier.evict_over_limit());
                    tier.writes.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    warn!(path = %path.display(), %error, "cannot write disk cache block")
                }
            }
        });
    }
}

fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("block paths have a parent");
    fs::create_dir_all(dir)?;
    let mut temp = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(dir)?;
    temp.write_all(data)?;
    temp.persist(path).map_err(|err| err.error)?;
    Ok(())
}

fn remove_files(paths: &[PathBuf]) {
    for path in paths {
        if let Err(error) = fs::remove_file(path) {
            if error.kind() != io::ErrorKind::NotFound {
                warn!(path = %path.display(), %error, "cannot remove evicted cache block");
            }
        }
    }
}

fn parse_block_file_name(name: &str) -> Option<BlockKey> {
    let (content, index) = name.split_once('-')?;
    Some(BlockKey {
        content: ContentKey::parse(content)?,
        index: index.parse().ok()?,
    })
}
