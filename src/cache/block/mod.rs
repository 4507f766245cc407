//! The block cache: file contents cut into fixed-size blocks, kept in a
//! memory LRU bounded in bytes and, optionally, spilled to a disk tier that
//! survives remounts.
//!
//! Every block being fetched has exactly one entry in the in-flight table;
//! whoever wants it while the fetch runs waits on that entry, so concurrent
//! readers of one block share one HTTP request. One fetch may cover a run of
//! consecutive blocks (one Range request), delivering each block to its
//! waiters as soon as its last byte arrives.
//!
//! Files, one concept each: `claims` (the in-flight table), `fetch` (filling
//! claimed blocks), `memory` and `disk` (the two tiers), `probe` (which blocks a media
//! probe reads, kept preferentially on disk), `read_ahead`.

mod claims;
mod disk;
mod error;
mod fetch;
mod key;
mod memory;
mod probe;
mod read_ahead;
mod streams;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::channel::oneshot;
use parking_lot::Mutex;
use tokio::runtime::Handle;

use super::{ContentKey, FileSource};
use crate::control::Counters;
use crate::remote::Remote;
use claims::{BlockSender, InFlight, Job, Pending};
use disk::DiskTier;
use fetch::{FirstBytes, Inner};
use key::BlockKey;
use memory::{MemoryTier, SpareBuffers};
use streams::Streams;

pub use error::{CacheError, CacheResult};
pub use read_ahead::{FileStreams, ReadAheadTicket};
pub use streams::StreamStats;

/// Sizing of the block cache.
#[derive(Clone, Debug)]
pub struct BlockCacheConfig {
    pub block_size: u64,
    /// Upper bound of the bytes held by the memory tier.
    pub max_memory: u64,
    /// Disk tier directory and its size bound; `None` keeps blocks in memory only.
    pub disk: Option<(PathBuf, u64)>,
    /// Most read-ahead connections open at once across the whole mount
    /// (the set grows up to this while it pays off).
    pub max_streams: usize,
}

/// Counters, mostly for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockCacheStats {
    pub memory_hits: u64,
    pub disk_hits: u64,
    /// Range requests sent to the service (retries included).
    pub remote_requests: u64,
    pub remote_bytes: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    /// Blocks written to the disk tier.
    pub disk_writes: u64,
    /// The part of `disk_bytes` held by probe blocks (heads and tails).
    pub disk_probe_bytes: u64,
}

/// Reads of file contents, served from memory, disk or the service.
#[derive(Clone)]
pub struct BlockCache {
    inner: Arc<Inner>,
}

impl BlockCache {
    /// Must be called inside a tokio runtime (fetches are spawned on it).
    pub fn new(remote: Arc<dyn Remote>, config: BlockCacheConfig) -> io::Result<Self> {
        if config.block_size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "block size must be positive",
            ));
        }
        let disk = match &config.disk {
            Some((dir, max_bytes)) => Some(Arc::new(DiskTier::open(
                dir,
                config.block_size,
                *max_bytes,
            )?)),
            None => None,
        };
        Ok(BlockCache {
            inner: Arc::new(Inner {
                remote,
                runtime: Handle::try_current()
                    .map_err(|err| io::Error::other(format!("no tokio runtime: {err}")))?,
                block_size: config.block_size,
                memory: Mutex::new(MemoryTier::new(config.max_memory)),
                disk,
                inflight: InFlight::default(),
                spare_buffers: Mutex::new(SpareBuffers::new(config.block_size)),
                streams: Streams::new(config.max_streams),
                memory_hits: AtomicU64::new(0),
                disk_hits: AtomicU64::new(0),
                remote_requests: AtomicU64::new(0),
                remote_bytes: AtomicU64::new(0),
                counters: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Reports hits, misses and bytes served from the cache to the mount's
    /// counters from now on (the first call wins).
    pub fn report_to(&self, counters: Arc<Counters>) {
        let _ = self.inner.counters.set(counters);
    }

    /// Drops every cached block of `src` from memory and disk, so the next
    /// read fetches it again; returns the blocks and bytes dropped.
    pub fn forget_file(&self, src: &FileSource) -> (u64, u64) {
        let (mut blocks, mut bytes) = (0, 0);
        for index in 0..self.block_count(src.size) {
            let key = BlockKey::of(src, index);
            let in_memory = self.inner.memory.lock().remove(&key);
            let on_disk = self.inner.disk.as_ref().and_then(|disk| disk.remove(&key));
            if let Some(len) = in_memory.or(on_disk) {
                blocks += 1;
                bytes += len;
            }
        }
        (blocks, bytes)
    }

    /// Distinct file contents with at least one block cached.
    pub fn cached_files(&self) -> u64 {
        let mut contents: std::collections::HashSet<ContentKey> =
            self.inner.memory.lock().contents().cloned().collect();
        if let Some(disk) = &self.inner.disk {
            contents.extend(disk.contents());
        }
        contents.len() as u64
    }

    pub fn block_size(&self) -> u64 {
        self.inner.block_size
    }

    /// Number of blocks of a file of `size` bytes.
    pub fn block_count(&self, size: u64) -> u64 {
        size.div_ceil(self.inner.block_size)
    }

    /// The read-ahead streams: their current number, the most connections
    /// open at once, refusals.
    pub fn stream_stats(&self) -> StreamStats {
        self.inner.streams.stats()
    }

    pub fn stats(&self) -> BlockCacheStats {
        let inner = &self.inner;
        BlockCacheStats {
            memory_hits: inner.memory_hits.load(Ordering::Relaxed),
            disk_hits: inner.disk_hits.load(Ordering::Relaxed),
            remote_requests: inner.remote_requests.load(Ordering::Relaxed),
            remote_bytes: inner.remote_bytes.load(Ordering::Relaxed),
            memory_bytes: inner.memory.lock().bytes(),
            disk_bytes: inner.disk.as_ref().map_or(0, |disk| disk.bytes()),
            disk_writes: inner.disk.as_ref().map_or(0, |disk| disk.writes()),
            disk_probe_bytes: inner.disk.as_ref().map_or(0, |disk| disk.probe_bytes()),
        }
    }

    /// Serves `offset .. offset + len` (clamped to the file) from memory
    /// alone, or `None` when any block of it is missing there.
    pub fn try_read_cached(&self, src: &FileSource, offset: u64, len: u64) -> Option<Bytes> {
        let (first, last, end) = self.span(src, offset, len)?;
        let bs = self.inner.block_size;
        let mut memory = self.inner.memory.lock();
        if first == last {
            let block = memory.get(&BlockKey::of(src, first))?;
            let start = (offset - first * bs) as usize;
            let stop = (end - first * bs) as usize;
            drop(memory);
            self.inner.memory_hits.fetch_add(1, Ordering::Relaxed);
            self.report_hits(1, end - offset);
            return block.get(start..stop).map(|s| block.slice_ref(s));
        }
        let mut blocks = Vec::with_capacity((last - first + 1) as usize);
        for index in first..=last {
            blocks.push(memory.get(&BlockKey::of(src, index))?);
        }
        drop(memory);
        self.inner
            .memory_hits
            .fetch_add(blocks.len() as u64, Ordering::Relaxed);
        self.report_hits(blocks.len() as u64, end - offset);
        Some(assemble(&blocks, first, bs, offset, end))
    }

    /// Reads `offset .. offset + len` (clamped to the file). Missing blocks
    /// up to `fetch_through` (a block index, at least the last block read)
    /// are fetched together, so a caller that knows more will follow can ask
    /// for it in the same request.
    pub async fn read(
        &self,
        src: &FileSource,
        offset: u64,
        len: u64,
        fetch_through: u64,
    ) -> CacheResult<Bytes> {
        let Some((first, last, end)) = self.span(src, offset, len) else {
            return Ok(Bytes::new());
        };
        let through = fetch_through
            .max(last)
            .min(self.block_count(src.size).saturating_sub(1));
        let (jobs, pending) =
            self.inner
                .inflight
                .claim(src, first, through, last, self.inner.tiers());
        // A read within one block whose fetch starts here (a first read, a
        // seek) takes its bytes as soon as they arrive.
        let bs = self.inner.block_size;
        let (first_bytes, early) = if first == last
            && jobs
                .iter()
                .any(|job| matches!(job, Job::Fetch { first: at, .. } if *at == first))
        {
            let (sender, receiver) = oneshot::channel();
            let range = (offset - first * bs) as usize..(end - first * bs) as usize;
            let wanted = FirstBytes {
                block: first,
                range,
                sender,
            };
            (Some(wanted), Some(receiver))
        } else {
            (None, None)
        };
        self.spawn_jobs(src, jobs, None, first_bytes);
        let ready = pending
            .iter()
            .filter(|p| matches!(p, Pending::Ready(_)))
            .count() as u64;
        let missed = pending.len() as u64 - ready;
        if let Some(counters) = self.inner.counters.get() {
            for _ in 0..missed {
                counters.cache_miss();
            }
        }
        if missed == 0 {
            self.report_hits(ready, end - offset);
        } else if let Some(counters) = self.inner.counters.get() {
            for _ in 0..ready {
                counters.cache_hit();
            }
        }
        if let Some(early) = early {
            if let Ok(bytes) = early.await {
                return Ok(bytes);
            }
        }
        let mut blocks = Vec::with_capacity(pending.len());
        for (index, pending) in (first..).zip(pending) {
            let block = match pending {
                Pending::Ready(block) => block,
                Pending::Wait(waiter) => match waiter.await {
                    Ok(result) => result?,
                    Err(oneshot::Canceled) => self.block(src, index).await?,
                },
            };
            blocks.push(block);
        }
        if let [block] = blocks.as_slice() {
            let start = ((offset - first * bs) as usize).min(block.len());
            let stop = ((end - first * bs) as usize).min(block.len());
            return Ok(block.slice(start..stop));
        }
        Ok(assemble(&blocks, first, bs, offset, end))
    }

    /// Starts fetching blocks `first..=last` that are neither cached nor
    /// already on their way, in requests of at most `max_blocks_per_request`
    /// blocks, each waiting for one of the mount's read-ahead permits.
    /// Returns at once.
    /// A request still waiting for its permit when `ticket` goes stale (the
    /// reader jumped elsewhere or closed the file) is dropped unsent.
    pub fn prefetch(
        &self,
        src: &FileSource,
        first: u64,
        last: u64,
        max_blocks_per_request: u64,
        ticket: ReadAheadTicket,
    ) {
        let last = last.min(self.block_count(src.size).saturating_sub(1));
        if src.size == 0 || first > last {
            return;
        }
        let (jobs, _) = self
            .inner
            .inflight
            .claim(src, first, last, 0, self.inner.tiers());
        self.spawn_jobs(
            src,
            jobs,
            Some((max_blocks_per_request.max(1), ticket)),
            None,
        );
    }

    /// Waits until every block handed to the disk tier is written (before
    /// the process exits, so the next mount finds them).
    pub async fn wait_for_disk_writes(&self) {
        if let Some(disk) = &self.inner.disk {
            disk.wait_for_writes().await;
        }
    }

    /// `blocks` found in the cache, serving `bytes` without a fetch.
    fn report_hits(&self, blocks: u64, bytes: u64) {
        if let Some(counters) = self.inner.counters.get() {
            for _ in 0..blocks {
                counters.cache_hit();
            }
            counters.add_cache_read(bytes);
        }
    }

    /// Whether a block is in memory or on disk (does not touch LRU order).
    pub fn is_cached(&self, src: &FileSource, index: u64) -> bool {
        let key = BlockKey::of(src, index);
        self.inner.memory.lock().contains(&key)
            || self
                .inner
                .disk
                .as_ref()
                .is_some_and(|disk| disk.contains(&key))
    }

    /// First block, last block and clamped end offset of a read, or `None`
    /// when it is empty.
    fn span(&self, src: &FileSource, offset: u64, len: u64) -> Option<(u64, u64, u64)> {
        let end = offset.saturating_add(len).min(src.size);
        if offset >= end {
            return None;
        }
        let bs = self.inner.block_size;
        Some((offset / bs, (end - 1) / bs, end))
    }

    /// Claims the missing blocks of `first..=last` and fetches them now.
    fn start(&self, src: &FileSource, first: u64, last: u64) {
        let (jobs, _) = self
            .inner
            .inflight
            .claim(src, first, last, 0, self.inner.tiers());
        self.spawn_jobs(src, jobs, None, None);
    }

    /// Spawns the fetches of claimed blocks. With `read_ahead`, fetches are
    /// read-ahead: split into requests of that many blocks, sent in file
    /// order as read-ahead permits free up, and dropped if their ticket has
    /// gone stale by then.
    /// `first_bytes` goes to the reader's own fetch of its block.
    fn spawn_jobs(
        &self,
        src: &FileSource,
        jobs: Vec<Job>,
        read_ahead: Option<(u64, ReadAheadTicket)>,
        mut first_bytes: Option<FirstBytes>,
    ) {
        let mut read_ahead_queue: Vec<(u64, VecDeque<BlockSender>)> = Vec::new();
        for job in jobs {
            match job {
                Job::Disk { index, sender } => {
                    let inner = self.inner.clone();
                    let src = src.clone();
                    self.inner
                        .runtime
                        .spawn(async move { inner.load_from_disk(src, index, sender).await });
                }
                Job::Fetch { first, senders } => match &read_ahead {
                    None => {
                        let inner = self.inner.clone();
                        let src = src.clone();
                        let wanted = first_bytes.take_if(|wanted| wanted.block == first);
                        self.inner.runtime.spawn(async move {
                            inner
                                .fetch_run(src, first, senders, None, None, wanted)
                                .await
                        });
                    }
                    Some((split, _)) => {
                        let mut senders = senders;
                        let mut run_first = first;
                        while !senders.is_empty() {
                            let take = (*split as usize).min(senders.len());
                            read_ahead_queue.push((run_first, senders.drain(..take).collect()));
                            run_first += take as u64;
                        }
                    }
                },
            }
        }
        if let Some((_, ticket)) = read_ahead {
            if !read_ahead_queue.is_empty() {
                self.spawn_read_ahead(src, read_ahead_queue, ticket);
            }
        }
    }

    /// Sends read-ahead requests in file order, each once it holds one of
    /// the file's streams and one of the mount's, after the file's earlier
    /// batches: the request nearest the reader is the one it will wait for
    /// first, so it must not be left queued behind requests further ahead.
    fn spawn_read_ahead(
        &self,
        src: &FileSource,
        parts: Vec<(u64, VecDeque<BlockSender>)>,
        ticket: ReadAheadTicket,
    ) {
        let inner = self.inner.clone();
        let src = src.clone();
        self.inner.runtime.spawn(async move {
            let _turn = ticket.send_turn().await;
            let mut parts = parts.into_iter();
            while let Some((part_first, part)) = parts.next() {
                let permits = async {
                    let file_stream = ticket.file_stream().await.filter(|_| ticket.is_current())?;
                    let stream = inner.streams.acquire().await;
                    ticket.is_current().then_some((file_stream, stream))
                }
                .await;
                let Some((file_stream, stream)) = permits else {
                    // The reader moved on: nothing of this read-ahead is sent.
                    for (first, blocks) in std::iter::once((part_first, part)).chain(parts) {
                        inner.inflight.abandon(&src, first, blocks);
                    }
                    return;
                };
                // The connection slot too: the fetches, once spawned, would
                // race for it.
                let connection = inner.streams.connection().await;
                let inner = inner.clone();
                let src = src.clone();
                let read_ahead = Some((stream, ticket.clone()));
                inner.runtime.clone().spawn(async move {
                    let _file_stream = file_stream;
                    inner
                        .fetch_run(src, part_first, part, read_ahead, Some(connection), None)
                        .await
                });
            }
        });
    }

    async fn block(&self, src: &FileSource, index: u64) -> CacheResult<Bytes> {
        let block_key = BlockKey::of(src, index);
        // A fetch whose task died without answering is claimed again; a few
        // rounds cover blocks evicted between delivery and our look.
        for _ in 0..4 {
            let waiter = self.inner.inflight.waiter(&block_key);
            if waiter.is_none() {
                if let Some(block) = self.inner.memory.lock().get(&block_key) {
                    self.inner.memory_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(block);
                }
            }
            match waiter {
                Some(waiter) => match waiter.await {
                    Ok(result) => return result,
                    Err(oneshot::Canceled) => continue,
                },
                None => self.start(src, index, index),
            }
        }
        Err(CacheError::Abandoned {
            file: src.id.0.clone(),
            index,
        })
    }
}

/// Concatenates the parts of consecutive blocks covering `offset..end`.
fn assemble(blocks: &[Bytes], first: u64, block_size: u64, offset: u64, end: u64) -> Bytes {
    let mut out = BytesMut::with_capacity((end - offset) as usize);
    for (i, block) in blocks.iter().enumerate() {
        let block_start = (first + i as u64) * block_size;
        let from = offset.saturating_sub(block_start) as usize;
        let to = ((end - block_start) as usize).min(block.len());
        if from < to {
            out.extend_from_slice(&block[from..to]);
        }
    }
    out.freeze()
}
