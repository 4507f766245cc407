//! The block cache: file contents cut into fixed-size blocks, kept in a
//! memory LRU bounded in bytes and, optionally, spilled to a disk tier that
//! survives remounts.
//!
//! Every block being fetched has exactly one entry in the in-flight table;
//! whoever wants it while the fetch runs waits on that entry, so concurrent
//! readers of one block share one HTTP request. One fetch may cover a run of
//! consecutive blocks (one Range request), delivering each block to its
//! waiters as soon as its last byte arrives.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::channel::oneshot;
use futures::future::{FutureExt, Shared};
use futures::StreamExt;
use lru::LruCache;
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::{ContentKey, FileSource};
use crate::remote::{Remote, RemoteError};

/// Errors of the cache layer. Disk-tier problems never surface: a block that
/// cannot be read back from disk is fetched again from the service.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("the fetch of block {index} of {file} was abandoned")]
    Abandoned { file: String, index: u64 },
}

pub type CacheResult<T> = Result<T, CacheError>;

/// Sizing of the block cache.
#[derive(Clone, Debug)]
pub struct BlockCacheConfig {
    pub block_size: u64,
    /// Upper bound of the bytes held by the memory tier.
    pub max_memory: u64,
    /// Disk tier directory and its size bound; `None` keeps blocks in memory only.
    pub disk: Option<(PathBuf, u64)>,
    /// How many read-ahead requests may run at once across the whole mount.
    pub prefetch_concurrency: usize,
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
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct BlockKey {
    content: ContentKey,
    index: u64,
}

type BlockResult = CacheResult<Bytes>;
type BlockSender = oneshot::Sender<BlockResult>;
type BlockWaiter = Shared<oneshot::Receiver<BlockResult>>;

/// Reads of file contents, served from memory, disk or the service.
#[derive(Clone)]
pub struct BlockCache {
    inner: Arc<Inner>,
}

struct Inner {
    remote: Arc<dyn Remote>,
    runtime: Handle,
    block_size: u64,
    memory: Mutex<MemoryTier>,
    disk: Option<Arc<DiskTier>>,
    inflight: Mutex<HashMap<BlockKey, BlockWaiter>>,
    /// Memory of evicted blocks, reused for the next blocks fetched: fresh
    /// memory costs a page fault per page, a noticeable share of the CPU
    /// when data streams through the cache.
    spare_buffers: Mutex<Vec<BytesMut>>,
    prefetch_permits: Arc<Semaphore>,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    remote_requests: AtomicU64,
    remote_bytes: AtomicU64,
}

/// Issued with each read-ahead request; stale once the reader that asked
/// has moved elsewhere (its stream counter changed).
#[derive(Clone, Debug)]
pub struct ReadAheadTicket {
    stream: Arc<AtomicU64>,
    issued: u64,
}

impl ReadAheadTicket {
    pub fn new(stream: &Arc<AtomicU64>) -> Self {
        ReadAheadTicket {
            stream: stream.clone(),
            issued: stream.load(Ordering::Acquire),
        }
    }

    fn is_current(&self) -> bool {
        self.stream.load(Ordering::Acquire) == self.issued
    }
}

/// How a reader obtains one block.
enum Pending {
    Ready(Bytes),
    Wait(BlockWaiter),
}

/// Work decided while holding the in-flight lock, started after releasing it.
enum Job {
    /// Load one block from the disk tier (falls back to the service).
    Disk { index: u64, sender: BlockSender },
    /// Fetch consecutive blocks `first..first + senders.len()` with one request.
    Fetch {
        first: u64,
        senders: VecDeque<BlockSender>,
    },
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
                inflight: Mutex::new(HashMap::new()),
                spare_buffers: Mutex::new(Vec::new()),
                prefetch_permits: Arc::new(Semaphore::new(config.prefetch_concurrency.max(1))),
                memory_hits: AtomicU64::new(0),
                disk_hits: AtomicU64::new(0),
                remote_requests: AtomicU64::new(0),
                remote_bytes: AtomicU64::new(0),
            }),
        })
    }

    pub fn block_size(&self) -> u64 {
        self.inner.block_size
    }

    /// Number of blocks of a file of `size` bytes.
    pub fn block_count(&self, size: u64) -> u64 {
        size.div_ceil(self.inner.block_size)
    }

    pub fn stats(&self) -> BlockCacheStats {
        let inner = &self.inner;
        BlockCacheStats {
            memory_hits: inner.memory_hits.load(Ordering::Relaxed),
            disk_hits: inner.disk_hits.load(Ordering::Relaxed),
            remote_requests: inner.remote_requests.load(Ordering::Relaxed),
            remote_bytes: inner.remote_bytes.load(Ordering::Relaxed),
            memory_bytes: inner.memory.lock().bytes,
            disk_bytes: inner.disk.as_ref().map_or(0, |d| d.index.lock().bytes),
            disk_writes: inner
                .disk
                .as_ref()
                .map_or(0, |d| d.writes.load(Ordering::Relaxed)),
        }
    }

    /// Serves `offset .. offset + len` (clamped to the file) from memory
    /// alone, or `None` when any block of it is missing there.
    pub fn try_read_cached(&self, src: &FileSource, offset: u64, len: u64) -> Option<Bytes> {
        let (first, last, end) = self.span(src, offset, len)?;
        let bs = self.inner.block_size;
        let mut memory = self.inner.memory.lock();
        if first == last {
            let block = memory.get(&key(src, first))?;
            let start = (offset - first * bs) as usize;
            let stop = (end - first * bs) as usize;
            drop(memory);
            self.inner.memory_hits.fetch_add(1, Ordering::Relaxed);
            return block.get(start..stop).map(|s| block.slice_ref(s));
        }
        let mut blocks = Vec::with_capacity((last - first + 1) as usize);
        for index in first..=last {
            blocks.push(memory.get(&key(src, index))?);
        }
        drop(memory);
        self.inner
            .memory_hits
            .fetch_add(blocks.len() as u64, Ordering::Relaxed);
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
        let (jobs, pending) = self.claim(src, first, through, last);
        self.spawn_jobs(src, jobs, None);
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
        let bs = self.inner.block_size;
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
        let (jobs, _) = self.claim(src, first, last, 0);
        self.spawn_jobs(src, jobs, Some((max_blocks_per_request.max(1), ticket)));
    }

    /// Waits until every block handed to the disk tier is written (before
    /// the process exits, so the next mount finds them).
    pub async fn wait_for_disk_writes(&self) {
        if let Some(disk) = &self.inner.disk {
            let all = DISK_WRITES_IN_FLIGHT as u32;
            if let Ok(permits) = disk.write_permits.acquire_many(all).await {
                drop(permits);
            }
        }
    }

    /// Whether a block is in memory or on disk (does not touch LRU order).
    pub fn is_cached(&self, src: &FileSource, index: u64) -> bool {
        let key = key(src, index);
        self.inner.memory.lock().contains(&key)
            || self
                .inner
                .disk
                .as_ref()
                .is_some_and(|disk| disk.index.lock().lru.contains(&key))
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
        let (jobs, _) = self.claim(src, first, last, 0);
        self.spawn_jobs(src, jobs, None);
    }

    /// Spawns the fetches of claimed blocks. With `read_ahead`, fetches are
    /// read-ahead: split into requests of that many blocks, each gated by a
    /// read-ahead permit and dropped if its ticket has gone stale by then.
    fn spawn_jobs(
        &self,
        src: &FileSource,
        jobs: Vec<Job>,
        read_ahead: Option<(u64, ReadAheadTicket)>,
    ) {
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
                        self.inner
                            .runtime
                            .spawn(async move { inner.fetch_run(src, first, senders).await });
                    }
                    Some((split, ticket)) => {
                        let mut senders = senders;
                        let mut run_first = first;
                        while !senders.is_empty() {
                            let take = (*split as usize).min(senders.len());
                            let part: VecDeque<_> = senders.drain(..take).collect();
                            let inner = self.inner.clone();
                            let src = src.clone();
                            let permits = self.inner.prefetch_permits.clone();
                            let part_first = run_first;
                            let ticket = ticket.clone();
                            self.inner.runtime.spawn(async move {
                                let Ok(_permit) = permits.acquire_owned().await else {
                                    return;
                                };
                                if !ticket.is_current() {
                                    inner.abandon(&src, part_first, part);
                                    return;
                                }
                                inner.fetch_run(src, part_first, part).await
                            });
                            run_first += take as u64;
                        }
                    }
                },
            }
        }
    }

    /// Registers in-flight entries for the blocks of `first..=last` that
    /// nobody has or is fetching, grouped into runs of consecutive blocks.
    /// Also returns how to obtain each block of `first..=wanted_through`,
    /// decided under the same lock so no block can slip away in between.
    fn claim(
        &self,
        src: &FileSource,
        first: u64,
        last: u64,
        wanted_through: u64,
    ) -> (Vec<Job>, Vec<Pending>) {
        let mut jobs = Vec::new();
        let mut wanted = Vec::new();
        let mut run: Option<(u64, VecDeque<BlockSender>)> = None;
        let mut inflight = self.inner.inflight.lock();
        for index in first..=last {
            let block_key = key(src, index);
            let want = index <= wanted_through;
            let mut present = false;
            if let Some(waiter) = inflight.get(&block_key) {
                present = true;
                if want {
                    wanted.push(Pending::Wait(waiter.clone()));
                }
            } else if want {
                if let Some(block) = self.inner.memory.lock().get(&block_key) {
                    self.inner.memory_hits.fetch_add(1, Ordering::Relaxed);
                    present = true;
                    wanted.push(Pending::Ready(block));
                }
            } else {
                present = self.inner.memory.lock().contains(&block_key);
            }
            let on_disk = !present
                && self
                    .inner
                    .disk
                    .as_ref()
                    .is_some_and(|disk| disk.index.lock().lru.contains(&block_key));
            if present || on_disk {
                if let Some((run_first, senders)) = run.take() {
                    jobs.push(Job::Fetch {
                        first: run_first,
                        senders,
                    });
                }
            }
            if present {
                continue;
            }
            let (sender, receiver) = oneshot::channel();
            let waiter = receiver.shared();
            if want {
                wanted.push(Pending::Wait(waiter.clone()));
            }
            inflight.insert(block_key, waiter);
            if on_disk {
                jobs.push(Job::Disk { index, sender });
            } else {
                run.get_or_insert_with(|| (index, VecDeque::new()))
                    .1
                    .push_back(sender);
            }
        }
        if let Some((run_first, senders)) = run {
            jobs.push(Job::Fetch {
                first: run_first,
                senders,
            });
        }
        (jobs, wanted)
    }

    /// One block, from memory, from a fetch in flight, or fetched now.
    async fn block(&self, src: &FileSource, index: u64) -> CacheResult<Bytes> {
        let block_key = key(src, index);
        // A fetch whose task died without answering is claimed again; a few
        // rounds cover blocks evicted between delivery and our look.
        for _ in 0..4 {
            let waiter = {
                let inflight = self.inner.inflight.lock();
                match inflight.get(&block_key) {
                    Some(waiter) => Some(waiter.clone()),
                    None => {
                        drop(inflight);
                        if let Some(block) = self.inner.memory.lock().get(&block_key) {
                            self.inner.memory_hits.fetch_add(1, Ordering::Relaxed);
                            return Ok(block);
                        }
                        None
                    }
                }
            };
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

/// Evicted blocks' buffers kept for reuse (a few blocks' worth of memory
/// on top of the cache bound).
const SPARE_BUFFERS: usize = 8;

impl Inner {
    /// Stores a block in the memory tier and recycles what it evicts.
    fn remember(&self, block_key: BlockKey, data: Bytes) {
        let evicted = self.memory.lock().insert(block_key, data);
        for block in evicted {
            // Only whole blocks nobody else still holds can be reused.
            if block.len() as u64 != self.block_size {
                continue;
            }
            if let Ok(mut buffer) = block.try_into_mut() {
                buffer.clear();
                let mut spare = self.spare_buffers.lock();
                if spare.len() < SPARE_BUFFERS {
                    spare.push(buffer);
                }
            }
        }
    }

    /// An empty buffer for a block of `len` bytes.
    fn block_buffer(&self, len: usize) -> BytesMut {
        if len as u64 == self.block_size {
            if let Some(buffer) = self.spare_buffers.lock().pop() {
                if buffer.capacity() >= len {
                    return buffer;
                }
            }
        }
        BytesMut::with_capacity(len)
    }

    fn block_len(&self, src: &FileSource, index: u64) -> usize {
        let start = index * self.block_size;
        (src.size.saturating_sub(start)).min(self.block_size) as usize
    }

    /// Hands a finished block to memory, disk and its waiters.
    async fn deliver(&self, src: &FileSource, index: u64, data: Bytes, sender: BlockSender) {
        let block_key = key(src, index);
        self.remember(block_key.clone(), data.clone());
        if let Some(disk) = &self.disk {
            disk.store(block_key.clone(), data.clone()).await;
        }
        // Memory first, then the in-flight entry: a claimer that finds no
        // in-flight entry then finds the block in memory.
        self.inflight.lock().remove(&block_key);
        let _ = sender.send(Ok(data));
    }

    /// Gives up claimed blocks without fetching them; anyone waiting for
    /// them claims them again.
    fn abandon(&self, src: &FileSource, first: u64, senders: VecDeque<BlockSender>) {
        let mut inflight = self.inflight.lock();
        for (index, sender) in (first..).zip(senders) {
            inflight.remove(&key(src, index));
            drop(sender);
        }
    }

    fn fail(&self, src: &FileSource, index: u64, error: CacheError, sender: BlockSender) {
        self.inflight.lock().remove(&key(src, index));
        let _ = sender.send(Err(error));
    }

    async fn load_from_disk(&self, src: FileSource, index: u64, sender: BlockSender) {
        let expected = self.block_len(&src, index);
        let disk = self
            .disk
            .as_ref()
            .expect("disk jobs exist only with a disk tier");
        match disk.load(key(&src, index), expected).await {
            Some(data) => {
                self.disk_hits.fetch_add(1, Ordering::Relaxed);
                self.remember(key(&src, index), data.clone());
                self.inflight.lock().remove(&key(&src, index));
                let _ = sender.send(Ok(data));
            }
            None => self.fetch_run(src, index, VecDeque::from([sender])).await,
        }
    }

    /// Fetches blocks `first..first + senders.len()` with as few Range
    /// requests as the service allows, retrying from the first undelivered
    /// block after failures.
    async fn fetch_run(&self, src: FileSource, first: u64, mut senders: VecDeque<BlockSender>) {
        let mut next = first;
        let mut failures = 0u32;
        while !senders.is_empty() {
            let before = next;
            match self.stream_run(&src, &mut next, &mut senders).await {
                Ok(()) => {}
                Err(error) => {
                    // Only failures in a row count: a flaky connection that
                    // still delivers blocks is worth staying with.
                    failures = if next > before { 1 } else { failures + 1 };
                    match retry_delay(&error, failures) {
                        Some(delay) => {
                            debug!(file = %src.id, block = next, %error, ?delay, "retrying block fetch");
                            if matches!(
                                error,
                                RemoteError::PermissionDenied(_)
                                    | RemoteError::NotFound(_)
                                    | RemoteError::Transient(_)
                            ) {
                                // The direct link may have expired or been
                                // refused; the next attempt asks for a new one.
                                self.remote.invalidate_link(&src.id);
                            }
                            tokio::time::sleep(delay).await;
                        }
                        None => {
                            warn!(file = %src.id, block = next, %error, "block fetch failed");
                            let error = CacheError::Remote(error);
                            while let Some(sender) = senders.pop_front() {
                                self.fail(&src, next, error.clone(), sender);
                                next += 1;
                            }
                        }
                    }
                }
            }
        }
    }

    /// One Range request for the remaining blocks of a run; delivers every
    /// block completed before an error.
    async fn stream_run(
        &self,
        src: &FileSource,
        next: &mut u64,
        senders: &mut VecDeque<BlockSender>,
    ) -> Result<(), RemoteError> {
        let start = *next * self.block_size;
        let end = ((*next + senders.len() as u64) * self.block_size).min(src.size);
        self.remote_requests.fetch_add(1, Ordering::Relaxed);
        let mut stream = self
            .remote
            .download_range(&src.id, start, end - start)
            .await?;
        let mut want = self.block_len(src, *next);
        let mut buffer = self.block_buffer(want);
        while let Some(chunk) = stream.next().await {
            let mut chunk = chunk?;
            self.remote_bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            while !chunk.is_empty() {
                if senders.is_empty() {
                    // More bytes than asked for: the extra is ignored.
                    return Ok(());
                }
                let take = (want - buffer.len()).min(chunk.len());
                buffer.extend_from_slice(&chunk.split_to(take));
                if buffer.len() == want {
                    let sender = senders.pop_front().expect("checked non-empty");
                    let block = std::mem::take(&mut buffer).freeze();
                    self.deliver(src, *next, block, sender).await;
                    *next += 1;
                    if !senders.is_empty() {
                        want = self.block_len(src, *next);
                        buffer = self.block_buffer(want);
                    }
                }
            }
        }
        if senders.is_empty() {
            Ok(())
        } else {
            Err(RemoteError::Transient(format!(
                "download of {} ended at byte {} before byte {end}",
                src.id,
                *next * self.block_size + buffer.len() as u64
            )))
        }
    }
}

/// How long to wait before retrying a failed fetch, or `None` to give up.
fn retry_delay(error: &RemoteError, failures: u32) -> Option<Duration> {
    let backoff = Duration::from_millis(100 * (1u64 << failures.min(5)));
    match error {
        RemoteError::RateLimited { wait, .. } if failures <= 6 => {
            Some(wait.unwrap_or(backoff).min(Duration::from_secs(30)))
        }
        RemoteError::Transient(_) if failures <= 6 => Some(backoff),
        // An expired or refused link: one or two fresh links settle it; a
        // file that is really gone stays NotFound.
        RemoteError::PermissionDenied(_) | RemoteError::NotFound(_) if failures <= 2 => {
            Some(Duration::from_millis(50))
        }
        _ => None,
    }
}

fn key(src: &FileSource, index: u64) -> BlockKey {
    BlockKey {
        content: src.key.clone(),
        index,
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

/// In-memory LRU of blocks, bounded by the sum of their lengths.
struct MemoryTier {
    lru: LruCache<BlockKey, Bytes>,
    bytes: u64,
    max_bytes: u64,
}

impl MemoryTier {
    fn new(max_bytes: u64) -> Self {
        MemoryTier {
            lru: LruCache::unbounded(),
            bytes: 0,
            max_bytes,
        }
    }

    fn get(&mut self, key: &BlockKey) -> Option<Bytes> {
        self.lru.get(key).cloned()
    }

    fn contains(&self, key: &BlockKey) -> bool {
        self.lru.contains(key)
    }

    /// Adds a block; returns the blocks evicted to make room.
    #[must_use]
    fn insert(&mut self, key: BlockKey, data: Bytes) -> Vec<Bytes> {
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

/// Blocks stored as files `<dir>/blocks-<block size>/<key[..2]>/<key>-<index>`.
/// The index of what is on disk lives in memory (rebuilt from the directory
/// at start-up, oldest modification first) and drives LRU eviction.
struct DiskTier {
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
    fn open(dir: &Path, block_size: u64, max_bytes: u64) -> io::Result<Self> {
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

    /// The block's bytes, or `None` when the file is gone or damaged.
    async fn load(&self, block_key: BlockKey, expected_len: usize) -> Option<Bytes> {
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
    async fn store(self: &Arc<Self>, block_key: BlockKey, data: Bytes) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testing::MemoryRemote;

    fn source(remote: &MemoryRemote, name: &str, data: &[u8]) -> FileSource {
        FileSource::for_entry(&remote.add_file(name, data.to_vec()))
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
    }

    fn config(block: u64, memory: u64, disk: Option<(PathBuf, u64)>) -> BlockCacheConfig {
        BlockCacheConfig {
            block_size: block,
            max_memory: memory,
            disk,
            prefetch_concurrency: 2,
        }
    }

    #[tokio::test]
    async fn reads_any_range_and_counts_requests() {
        let remote = Arc::new(MemoryRemote::new());
        let data = pattern(10_000);
        let src = source(&remote, "a", &data);
        let cache = BlockCache::new(remote.clone(), config(1024, 1 << 20, None)).unwrap();
        for (offset, len) in [
            (0, 1),
            (1000, 100),
            (1023, 2),
            (0, 10_000),
            (9_999, 50),
            (5000, 0),
        ] {
            let got = cache.read(&src, offset, len, 0).await.unwrap();
            let end = (offset + len).min(10_000) as usize;
            assert_eq!(&got[..], &data[offset as usize..end], "{offset}+{len}");
        }
        // The whole-file read fetched the 8 blocks not yet cached in one request.
        assert_eq!(remote.download_requests(), 3);
        assert!(cache.read(&src, 20_000, 10, 0).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn concurrent_readers_share_one_fetch() {
        let remote = Arc::new(MemoryRemote::new());
        remote.set_download_delay(Duration::from_millis(50));
        let data = pattern(4096);
        let src = source(&remote, "a", &data);
        let cache = BlockCache::new(remote.clone(), config(4096, 1 << 20, None)).unwrap();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let cache = cache.clone();
            let src = src.clone();
            tasks.push(tokio::spawn(
                async move { cache.read(&src, 0, 4096, 0).await },
            ));
        }
        for task in tasks {
            assert_eq!(&task.await.unwrap().unwrap()[..], &data[..]);
        }
        assert_eq!(remote.download_requests(), 1);
    }

    #[tokio::test]
    async fn memory_stays_within_its_bound() {
        let remote = Arc::new(MemoryRemote::new());
        let data = pattern(100 * 1024);
        let src = source(&remote, "a", &data);
        let cache = BlockCache::new(remote.clone(), config(1024, 8 * 1024, None)).unwrap();
        for block in 0..100u64 {
            cache.read(&src, block * 1024, 1024, 0).await.unwrap();
            assert!(cache.stats().memory_bytes <= 8 * 1024);
        }
        assert!(!cache.is_cached(&src, 0));
        assert!(cache.is_cached(&src, 99));
        // Evicted blocks' memory is kept for reuse, a bounded amount of it.
        let spare = cache.inner.spare_buffers.lock().len();
        assert!(spare > 0 && spare <= SPARE_BUFFERS, "{spare}");
        // Reused buffers carry the right bytes.
        let again = cache.read(&src, 0, 100 * 1024, 0).await.unwrap();
        assert_eq!(&again[..], &data[..]);
    }

    #[tokio::test]
    async fn disk_tier_survives_a_new_cache_and_is_bounded() {
        let remote = Arc::new(MemoryRemote::new());
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(16 * 1024);
        let src = source(&remote, "a", &data);
        let disk = Some((dir.path().to_path_buf(), 10 * 1024));
        {
            let cache = BlockCache::new(remote.clone(), config(1024, 2048, disk.clone())).unwrap();
            assert_eq!(
                &cache.read(&src, 0, 16 * 1024, 0).await.unwrap()[..],
                &data[..]
            );
            // Let the background writes land.
            for _ in 0..200 {
                if cache.stats().disk_writes == 16 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(cache.stats().disk_bytes, 10 * 1024);
        }
        let requests_before = remote.download_requests();
        let cache = BlockCache::new(remote.clone(), config(1024, 2048, disk)).unwrap();
        // The 10 blocks kept on disk come back from there.
        let kept: Vec<u64> = (0..16).filter(|&i| cache.is_cached(&src, i)).collect();
        assert_eq!(kept.len(), 10);
        for &i in &kept {
            let got = cache.read(&src, i * 1024, 1024, 0).await.unwrap();
            assert_eq!(&got[..], &data[i as usize * 1024..(i as usize + 1) * 1024]);
        }
        assert_eq!(remote.download_requests(), requests_before);
        assert_eq!(cache.stats().disk_hits, 10);
        // A damaged block file is fetched again.
        let damaged = dir.path().join("blocks-1024").join(&src.key.as_str()[..2]);
        let victim = kept[0] as usize;
        fs::write(
            damaged.join(format!("{}-{victim}", src.key.as_str())),
            b"short",
        )
        .unwrap();
        let disk = Some((dir.path().to_path_buf(), 10 * 1024));
        let cache = BlockCache::new(remote.clone(), config(1024, 2048, disk)).unwrap();
        let got = cache
            .read(&src, victim as u64 * 1024, 1024, 0)
            .await
            .unwrap();
        assert_eq!(&got[..], &data[victim * 1024..(victim + 1) * 1024]);
        assert_eq!(remote.download_requests(), requests_before + 1);
    }

    #[tokio::test]
    async fn failures_are_retried_with_a_fresh_link() {
        let remote = Arc::new(MemoryRemote::new());
        let data = pattern(3000);
        let src = source(&remote, "a", &data);
        let cache = BlockCache::new(remote.clone(), config(1024, 1 << 20, None)).unwrap();
        remote.fail_next_downloads(vec![
            RemoteError::PermissionDenied("link expired".into()),
            RemoteError::Transient("503".into()),
        ]);
        assert_eq!(&cache.read(&src, 0, 3000, 0).await.unwrap()[..], &data[..]);
        assert_eq!(remote.invalidated_links(), 2);
        // A body cut after 1500 bytes: block 0 is kept, the rest is fetched again.
        let src2 = source(&remote, "b", &data);
        remote.cut_next_body_after(1500);
        assert_eq!(&cache.read(&src2, 0, 3000, 0).await.unwrap()[..], &data[..]);
        // A file that is gone fails as not found after a bounded number of tries.
        let gone = FileSource {
            id: crate::remote::FileId("missing".into()),
            size: 10,
            key: ContentKey::new(&crate::remote::FileId("missing".into()), 10, 0, 0, None),
        };
        let err = cache.read(&gone, 0, 10, 0).await.unwrap_err();
        assert!(
            matches!(err, CacheError::Remote(RemoteError::NotFound(_))),
            "{err}"
        );
    }

    #[tokio::test]
    async fn stale_read_ahead_is_dropped_unsent() {
        let remote = Arc::new(MemoryRemote::new());
        remote.set_download_delay(Duration::from_millis(100));
        let data = pattern(10 * 1024);
        let src = source(&remote, "a", &data);
        let mut settings = config(1024, 1 << 20, None);
        settings.prefetch_concurrency = 1;
        let cache = BlockCache::new(remote.clone(), settings).unwrap();
        let stream = Arc::new(AtomicU64::new(0));
        cache.prefetch(&src, 0, 9, 1, ReadAheadTicket::new(&stream));
        // The reader jumps away while nine of the ten requests still queue.
        stream.fetch_add(1, Ordering::AcqRel);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            remote.download_requests() <= 1,
            "{}",
            remote.download_requests()
        );
        assert!((2..10).all(|i| !cache.is_cached(&src, i)));
        // Dropped blocks are fetched normally when read after all.
        let got = cache.read(&src, 5 * 1024, 1024, 0).await.unwrap();
        assert_eq!(&got[..], &data[5 * 1024..6 * 1024]);
    }

    #[tokio::test]
    async fn prefetch_fills_the_cache_in_bounded_requests() {
        let remote = Arc::new(MemoryRemote::new());
        let data = pattern(10 * 1024);
        let src = source(&remote, "a", &data);
        let cache = BlockCache::new(remote.clone(), config(1024, 1 << 20, None)).unwrap();
        let stream = Arc::new(AtomicU64::new(0));
        cache.prefetch(&src, 2, 9, 3, ReadAheadTicket::new(&stream));
        for _ in 0..100 {
            if (2..10).all(|i| cache.is_cached(&src, i)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!((2..10).all(|i| cache.is_cached(&src, i)));
        assert!(!cache.is_cached(&src, 1));
        assert_eq!(remote.download_requests(), 3);
        assert_eq!(
            &cache.try_read_cached(&src, 2048, 8192).unwrap()[..],
            &data[2048..]
        );
        assert!(cache.try_read_cached(&src, 0, 10).is_none());
    }
}
