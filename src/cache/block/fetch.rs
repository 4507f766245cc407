//! Fetching: the state the cache's tasks share, and the fetches that fill
//! claimed blocks from the disk tier or the service. One fetch covers a run
//! of consecutive blocks with one Range request, delivering each block to
//! its waiters as soon as its last byte arrives, and the reader that
//! started it (a first read, a seek) its own bytes as soon as they have
//! arrived: on a paced link a whole block takes tens of milliseconds more.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tracing::{debug, trace, warn};

use super::claims::{BlockSender, InFlight, Tiers};
use super::disk::DiskTier;
use super::error::CacheError;
use super::key::BlockKey;
use super::memory::{MemoryTier, SpareBuffers};
use super::probe::BlockRole;
use super::read_ahead::ReadAheadTicket;
use super::streams::{Connection, StreamPermit, Streams};
use crate::cache::FileSource;
use crate::remote::pacer::{with_priority, Priority};
use crate::remote::{Remote, RemoteError};

/// The bytes `range` of block `block`, wanted by the reader whose read
/// started the fetch, as soon as they have arrived (dropped unanswered
/// when the fetch ends without them: the reader then waits for the block).
pub(super) struct FirstBytes {
    pub(super) block: u64,
    pub(super) range: std::ops::Range<usize>,
    pub(super) sender: futures::channel::oneshot::Sender<Bytes>,
}

impl FirstBytes {
    /// Answers the reader if `buffer`, the start of block `block`, holds
    /// its bytes; gives itself back otherwise.
    fn answer(self, block: u64, buffer: &[u8]) -> Option<FirstBytes> {
        if block != self.block || buffer.len() < self.range.end {
            return Some(self);
        }
        let _ = self
            .sender
            .send(Bytes::copy_from_slice(&buffer[self.range]));
        None
    }
}

/// What the cache handle and its spawned fetches share.
pub(super) struct Inner {
    pub(super) remote: Arc<dyn Remote>,
    pub(super) runtime: Handle,
    pub(super) block_size: u64,
    pub(super) memory: Mutex<MemoryTier>,
    pub(super) disk: Option<Arc<DiskTier>>,
    pub(super) inflight: InFlight,
    pub(super) spare_buffers: Mutex<SpareBuffers>,
    /// The mount's read-ahead connections.
    pub(super) streams: Arc<Streams>,
    pub(super) memory_hits: AtomicU64,
    pub(super) disk_hits: AtomicU64,
    pub(super) remote_requests: AtomicU64,
    pub(super) remote_bytes: AtomicU64,
    /// The mount's activity counters, once the mount hands them over.
    pub(super) counters: std::sync::OnceLock<Arc<crate::control::Counters>>,
}

impl Inner {
    /// The tiers a claim looks into.
    pub(super) fn tiers(&self) -> Tiers<'_> {
        Tiers {
            memory: &self.memory,
            disk: self.disk.as_deref(),
            memory_hits: &self.memory_hits,
        }
    }

    /// Stores a block in the memory tier and recycles what it evicts.
    fn remember(&self, block_key: BlockKey, data: Bytes) {
        let evicted = self.memory.lock().insert(block_key, data);
        if evicted.is_empty() {
            return;
        }
        let mut spare = self.spare_buffers.lock();
        for block in evicted {
            spare.recycle(block);
        }
    }

    /// An empty buffer for a block of `len` bytes.
    fn block_buffer(&self, len: usize) -> BytesMut {
        self.spare_buffers.lock().take(len)
    }

    pub(super) fn block_len(&self, src: &FileSource, index: u64) -> usize {
        let start = index * self.block_size;
        (src.size.saturating_sub(start)).min(self.block_size) as usize
    }

    /// Hands a finished block to memory, disk and its waiters.
    async fn deliver(&self, src: &FileSource, index: u64, data: Bytes, sender: BlockSender) {
        let block_key = BlockKey::of(src, index);
        self.remember(block_key.clone(), data.clone());
        if let Some(disk) = &self.disk {
            let role = BlockRole::of(src.size, self.block_size, index);
            disk.store(block_key.clone(), role, data.clone()).await;
        }
        // Memory first, then the in-flight entry: a claimer that finds no
        // in-flight entry then finds the block in memory.
        self.inflight.release(&block_key);
        let _ = sender.send(Ok(data));
    }

    pub(super) async fn load_from_disk(&self, src: FileSource, index: u64, sender: BlockSender) {
        let expected = self.block_len(&src, index);
        let disk = self
            .disk
            .as_ref()
            .expect("disk jobs exist only with a disk tier");
        let role = BlockRole::of(src.size, self.block_size, index);
        match disk.load(BlockKey::of(&src, index), role, expected).await {
            Some(data) => {
                self.disk_hits.fetch_add(1, Ordering::Relaxed);
                self.remember(BlockKey::of(&src, index), data.clone());
                self.inflight.release(&BlockKey::of(&src, index));
                let _ = sender.send(Ok(data));
            }
            None => {
                self.fetch_run(src, index, VecDeque::from([sender]), None, None, None)
                    .await
            }
        }
    }

    /// Fetches blocks `first..first + senders.len()` with as few Range
    /// requests as the service allows, retrying from the first undelivered
    /// block after failures. A read-ahead fetch runs on one of the mount's
    /// read-ahead streams, for the reader its ticket names (`read_ahead`),
    /// and stops at the next block once that reader has moved elsewhere; a
    /// reader's own fetch holds none, and may ask for its bytes ahead of
    /// their block (`first_bytes`). A `connection` slot already held
    /// serves the first request.
    pub(super) async fn fetch_run(
        &self,
        src: FileSource,
        first: u64,
        mut senders: VecDeque<BlockSender>,
        read_ahead: Option<(StreamPermit, ReadAheadTicket)>,
        mut connection: Option<Connection>,
        mut first_bytes: Option<FirstBytes>,
    ) {
        let (mut stream, ticket) = match read_ahead {
            Some((stream, ticket)) => (Some(stream), Some(ticket)),
            None => (None, None),
        };
        let read_ahead = ticket.is_some();
        let mut next = first;
        let mut failures = 0u32;
        let mut refusals = 0u32;
        while !senders.is_empty() {
            if ticket.as_ref().is_some_and(|ticket| !ticket.is_current()) {
                // The reader jumped elsewhere or closed the file: the rest
                // of this read-ahead would only hold a connection a read
                // now waits for. Blocks delivered so far stay cached.
                self.inflight
                    .abandon(&src, next, std::mem::take(&mut senders));
                break;
            }
            let before = next;
            // Nobody waits on a read-ahead yet: a token call it needs (a
            // link) queues behind the ones readers wait on.
            let priority = if read_ahead {
                Priority::Background
            } else {
                Priority::Foreground
            };
            match with_priority(
                priority,
                self.stream_run(
                    &src,
                    &mut next,
                    &mut senders,
                    ticket.as_ref(),
                    connection.take(),
                    &mut first_bytes,
                ),
            )
            .await
            {
                // Complete, or a read-ahead whose reader moved on (the
                // loop's first check ends it).
                Ok(()) => {}
                Err(RemoteError::TooManyDownloads(message)) if refusals < MAX_REFUSALS => {
                    // One connection too many for the account: fewer
                    // streams from now on, and this fetch waits for a
                    // connection of ours to end instead of failing a read.
                    refusals = if next > before { 1 } else { refusals + 1 };
                    self.streams.refused(read_ahead);
                    debug!(file = %src.id, block = next, %message, refusals, "download refused: fewer streams");
                    if let Some(permit) = stream.take() {
                        drop(permit);
                        tokio::time::sleep(refusal_delay(refusals)).await;
                        stream = Some(self.streams.acquire().await);
                    } else {
                        tokio::time::sleep(refusal_delay(refusals)).await;
                    }
                }
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
                                self.inflight.fail(&src, next, error.clone(), sender);
                                next += 1;
                            }
                        }
                    }
                }
            }
        }
        drop(stream);
    }

    /// One Range request for the remaining blocks of a run; delivers every
    /// block completed before an error. A read-ahead (`ticket`) ends early,
    /// at a block's end, once its reader has moved elsewhere.
    async fn stream_run(
        &self,
        src: &FileSource,
        next: &mut u64,
        senders: &mut VecDeque<BlockSender>,
        ticket: Option<&ReadAheadTicket>,
        connection: Option<Connection>,
        first_bytes: &mut Option<FirstBytes>,
    ) -> Result<(), RemoteError> {
        let read_ahead = ticket.is_some();
        let start = *next * self.block_size;
        let _connection = match connection {
            Some(connection) => connection,
            None => self.streams.connection().await,
        };
        let end = ((*next + senders.len() as u64) * self.block_size).min(src.size);
        self.remote_requests.fetch_add(1, Ordering::Relaxed);
        let sent = std::time::Instant::now();
        trace!(file = %src.id, start, end, read_ahead, "range request");
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
            if read_ahead {
                self.streams.delivered(chunk.len() as u64);
            }
            while !chunk.is_empty() {
                if senders.is_empty() {
                    // More bytes than asked for: the extra is ignored.
                    return Ok(());
                }
                let take = (want - buffer.len()).min(chunk.len());
                buffer.extend_from_slice(&chunk.split_to(take));
                if let Some(wanted) = first_bytes.take() {
                    *first_bytes = wanted.answer(*next, &buffer);
                }
                if buffer.len() == want {
                    let sender = senders.pop_front().expect("checked non-empty");
                    let block = std::mem::take(&mut buffer).freeze();
                    self.deliver(src, *next, block, sender).await;
                    *next += 1;
                    if ticket.is_some_and(|ticket| !ticket.is_current()) {
                        // Dropping the response closes its connection.
                        return Ok(());
                    }
                    if !senders.is_empty() {
                        want = self.block_len(src, *next);
                        buffer = self.block_buffer(want);
                    }
                }
            }
        }
        trace!(file = %src.id, start, end, ms = sent.elapsed().as_millis() as u64, "range request ended");
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

/// Refusals in a row (no byte received in between) a fetch absorbs before
/// its read fails: with the waits below, about half a minute for one of the
/// account's other downloads to end.
const MAX_REFUSALS: u32 = 32;

/// How long a refused fetch waits before it asks again.
fn refusal_delay(refusals: u32) -> Duration {
    Duration::from_millis(25 << refusals.min(5)).min(Duration::from_secs(1))
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
