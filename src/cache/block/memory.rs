//! The memory tier: an LRU of blocks bounded by the sum of their lengths,
//! plus the buffers of evicted blocks kept for reuse.

use bytes::{Bytes, BytesMut};
use lru::LruCache;

use super::key::BlockKey;

/// In-memory LRU of blocks, bounded by the sum of their lengths.
pub(super) struct MemoryTier {
    lru: LruCache<BlockKey, Bytes>,
    bytes: u64,
    max_bytes: u64,
}

impl MemoryTier {
    pub(super) fn new(max_bytes: u64) -> Self {
        MemoryTier {
            lru: LruCache::unbounded(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Bytes held.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(super) fn get(&mut self, key: &BlockKey) -> Option<Bytes> {
        self.lru.get(key).cloned()
    }

    pub(super) fn contains(&self, key: &BlockKey) -> bool {
        self.lru.contains(key)
    }

    /// Drops a block; returns its length when it was held.
    pub(super) fn remove(&mut self, key: &BlockKey) -> Option<u64> {
        let block = self.lru.pop(key)?;
        self.bytes -= block.len() as u64;
        Some(block.len() as u64)
    }

    /// The contents with at least one block held.
    pub(super) fn contents(&self) -> impl Iterator<Item = &crate::cache::ContentKey> {
        self.lru.iter().map(|(key, _)| &key.content)
    }

    /// Adds a block; returns the blocks evicted to make room.
    #[must_use]
    pub(super) fn insert(&mut self, key: BlockKey, data: Bytes) -> Vec<Bytes> {
        let mut evicted = Vec::new();
        self.bytes += data.len() as u64;
        if let Some(old) = self.lru.put(key, data) {
            self.bytes -= old.len() as u64;
            evicted.push(old);
        }
        while self.bytes > self.max_bytes {
            match self.lru.pop_lru() {
                Some((_, block)) => {
                    self.bytes -= block.len() as u64;
                    evicted.push(block);
                }
                None => break,
            }
        }
        evicted
    }
}

/// Evicted blocks' buffers kept for reuse (a few blocks' worth of memory
/// on top of the cache bound).
pub(super) const SPARE_BUFFERS: usize = 8;

/// Memory of evicted blocks, reused for the next blocks fetched: fresh
/// memory costs a page fault per page, a noticeable share of the CPU when
/// data streams through the cache.
pub(super) struct SpareBuffers {
    block_size: u64,
    buffers: Vec<BytesMut>,
}

impl SpareBuffers {
    pub(super) fn new(block_size: u64) -> Self {
        SpareBuffers {
            block_size,
            buffers: Vec::new(),
        }
    }

    /// How many buffers are kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.buffers.len()
    }

    /// Keeps the memory of an evicted block if it is a whole block nobody
    /// else still holds.
    pub(super) fn recycle(&mut self, block: Bytes) {
        if block.len() as u64 != self.block_size || self.buffers.len() >= SPARE_BUFFERS {
            return;
        }
        if let Ok(mut buffer) = block.try_into_mut() {
            buffer.clear();
            self.buffers.push(buffer);
        }
    }

    /// An empty buffer for a block of `len` bytes.
    pub(super) fn take(&mut self, len: usize) -> BytesMut {
        if len as u64 == self.block_size {
            if let Some(buffer) = self.buffers.pop() {
                if buffer.capacity() >= len {
                    return buffer;
                }
            }
        }
        BytesMut::with_capacity(len)
    }
}
