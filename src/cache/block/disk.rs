//! The disk tier: blocks spilled to files that survive remounts, bounded
//! in bytes, evicted least recently used first — except that the blocks a
//! media probe reads (see `probe`) keep a reserved share of the bound, so
//! streaming a film through the cache cannot push out a library's headers.
//!
//! A block's file name carries the content key, the hash of the file's
//! identity (id, size, date, checksum): a block is found again only while
//! the service still lists the file with that identity, across restarts too.

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
use super::probe::BlockRole;
use crate::cache::ContentKey;

/// Blocks stored as files `<dir>/blocks-<block size>/<key[..2]>/<key>-<index>`
/// (probe blocks end in `.probe`). The index of what is on disk lives in
/// memory (rebuilt from the directory at start-up, oldest modification
/// first) and drives LRU eviction.
pub(super) struct DiskTier {
    root: PathBuf,
    max_bytes: u64,
    index: Mutex<DiskIndex>,
    /// Bounds the blocks waiting to be written, so a fast download cannot
    /// pile up unwritten blocks in memory.
    write_permits: Arc<Semaphore>,
    writes: AtomicU64,
}

/// What is on disk: one LRU per role, each entry's length and last use.
struct DiskIndex {
    probe: LruCache<BlockKey, Slot>,
    bulk: LruCache<BlockKey, Slot>,
    probe_bytes: u64,
    bulk_bytes: u64,
    /// Counts uses, so the two LRUs' oldest entries can be compared.
    clock: u64,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    len: u64,
    used: u64,
}

impl DiskIndex {
    fn bytes(&self) -> u64 {
        self.probe_bytes + self.bulk_bytes
    }

    fn insert(&mut self, block_key: BlockKey, role: BlockRole, len: u64) {
        self.clock += 1;
        let slot = Slot {
            len,
            used: self.clock,
        };
        let (lru, bytes) = self.role_mut(role);
        *bytes += len;
        if let Some(old) = lru.put(block_key, slot) {
            *bytes -= old.len;
        }
    }

    fn touch(&mut self, block_key: &BlockKey, role: BlockRole) {
        self.clock += 1;
        let clock = self.clock;
        if let Some(slot) = self.role_mut(role).0.get_mut(block_key) {
            slot.used = clock;
        }
    }

    fn remove(&mut self, block_key: &BlockKey, role: BlockRole) {
        let (lru, bytes) = self.role_mut(role);
        if let Some(old) = lru.pop(block_key) {
            *bytes -= old.len;
        }
    }

    fn role_mut(&mut self, role: BlockRole) -> (&mut LruCache<BlockKey, Slot>, &mut u64) {
        match role {
            BlockRole::Probe => (&mut self.probe, &mut self.probe_bytes),
            BlockRole::Bulk => (&mut self.bulk, &mut self.bulk_bytes),
        }
    }

    /// The role whose least recently used block goes next. Probe blocks
    /// within `probe_reserve` bytes are out of reach; beyond it, the
    /// older of the two candidates goes.
    fn victim_role(&self, probe_reserve: u64) -> Option<BlockRole> {
        let oldest = |lru: &LruCache<BlockKey, Slot>| lru.peek_lru().map(|(_, slot)| slot.used);
        match (oldest(&self.probe), oldest(&self.bulk)) {
            (None, None) => None,
            (Some(_), None) => Some(BlockRole::Probe),
            (None, Some(_)) => Some(BlockRole::Bulk),
            (Some(probe), Some(bulk)) => {
                if self.probe_bytes > probe_reserve && probe < bulk {
                    Some(BlockRole::Probe)
                } else {
                    Some(BlockRole::Bulk)
                }
            }
        }
    }
}

const DISK_WRITES_IN_FLIGHT: usize = 8;

/// The share of the bound (in percent) kept for probe blocks.
const PROBE_RESERVE_PERCENT: u64 = 20;

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
                let Some((block_key, role)) = name.to_str().and_then(parse_block_file_name) else {
                    // Leftover temporary files from an interrupted write.
                    let _ = fs::remove_file(file.path());
                    continue;
                };
                let meta = file.metadata()?;
                let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                found.push((used, block_key, role, meta.len()));
            }
        }
        found.sort_by_key(|(used, _, _, _)| *used);
        let mut index = DiskIndex {
            probe: LruCache::unbounded(),
            bulk: LruCache::unbounded(),
            probe_bytes: 0,
            bulk_bytes: 0,
            clock: 0,
        };
        for (_, block_key, role, len) in found {
            index.insert(block_key, role, len);
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
        let blocks = {
            let index = tier.index.lock();
            index.probe.len() + index.bulk.len()
        };
        debug!(dir = %tier.root.display(), blocks, "disk cache opened");
        Ok(tier)
    }

    /// Whether the block is on disk (does not touch LRU order).
    pub(super) fn contains(&self, block_key: &BlockKey) -> bool {
        let index = self.index.lock();
        index.bulk.contains(block_key) || index.probe.contains(block_key)
    }

    /// Bytes held on disk.
    pub(super) fn bytes(&self) -> u64 {
        self.index.lock().bytes()
    }

    /// Bytes of probe blocks held on disk.
    pub(super) fn probe_bytes(&self) -> u64 {
        self.index.lock().probe_bytes
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

    fn path_of(&self, block_key: &BlockKey, role: BlockRole) -> PathBuf {
        let content = block_key.content.as_str();
        let suffix = match role {
            BlockRole::Probe => PROBE_SUFFIX,
            BlockRole::Bulk => "",
        };
        self.root
            .join(&content[..2])
            .join(format!("{content}-{}{suffix}", block_key.index))
    }

    fn evict_over_limit(&self) -> Vec<PathBuf> {
        let probe_reserve = self.max_bytes / 100 * PROBE_RESERVE_PERCENT;
        let mut index = self.index.lock();
        let mut evicted = Vec::new();
        while index.bytes() > self.max_bytes {
            let Some(role) = index.victim_role(probe_reserve) else {
                break;
            };
            let (lru, bytes) = index.role_mut(role);
            let Some((block_key, slot)) = lru.pop_lru() else {
                break;
            };
            *bytes -= slot.len;
            evicted.push(self.path_of(&block_key, role));
        }
        evicted
    }

    /// Drops a block from disk, in whichever role it is kept; returns its
    /// length when it was held.
    pub(super) fn remove(&self, block_key: &BlockKey) -> Option<u64> {
        let mut dropped = None;
        for role in [BlockRole::Probe, BlockRole::Bulk] {
            let popped = {
                let mut index = self.index.lock();
                let (lru, bytes) = index.role_mut(role);
                let slot = lru.pop(block_key);
                if let Some(slot) = slot {
                    *bytes -= slot.len;
                }
                slot
            };
            if let Some(slot) = popped {
                remove_files(&[self.path_of(block_key, role)]);
                dropped = Some(slot.len);
            }
        }
        dropped
    }

    /// The contents with at least one block on disk.
    pub(super) fn contents(&self) -> Vec<crate::cache::ContentKey> {
        let index = self.index.lock();
        index
            .probe
            .iter()
            .chain(index.bulk.iter())
            .map(|(key, _)| key.content.clone())
            .collect()
    }

    /// The block's bytes, or `None` when the file is gone or damaged.
    pub(super) async fn load(
        &self,
        block_key: BlockKey,
        role: BlockRole,
        expected_len: usize,
    ) -> Option<Bytes> {
        let path = self.path_of(&block_key, role);
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
                self.index.lock().touch(&block_key, role);
                Some(Bytes::from(data))
            }
            other => {
                debug!(?other, "disk cache block unusable; fetching again");
                self.index.lock().remove(&block_key, role);
                None
            }
        }
    }

    /// Writes a block atomically (temporary file + rename) and evicts the
    /// least recently used blocks over the size bound. Waits only for a
    /// write slot, not for the write itself.
    pub(super) async fn store(self: &Arc<Self>, block_key: BlockKey, role: BlockRole, data: Bytes) {
        if data.len() as u64 > self.max_bytes {
            return;
        }
        let Ok(permit) = self.write_permits.clone().acquire_owned().await else {
            return;
        };
        let tier = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let path = tier.path_of(&block_key, role);
            match write_atomically(&path, &data) {
                Ok(()) => {
                    tier.index.lock().insert(block_key, role, data.len() as u64);
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

/// Ends the file names of probe blocks.
const PROBE_SUFFIX: &str = ".probe";

fn parse_block_file_name(name: &str) -> Option<(BlockKey, BlockRole)> {
    let (content, rest) = name.split_once('-')?;
    let (index, role) = match rest.strip_suffix(PROBE_SUFFIX) {
        Some(index) => (index, BlockRole::Probe),
        None => (rest, BlockRole::Bulk),
    };
    let block_key = BlockKey {
        content: ContentKey::parse(content)?,
        index: index.parse().ok()?,
    };
    Some((block_key, role))
}
