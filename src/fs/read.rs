//! Per-open-file read state and the read-ahead policy.
//!
//! Each open file watches where its reads land. A read that continues where
//! the previous one ended (give or take the small reordering of the kernel's
//! asynchronous reads) extends a sequential run; anything else is a seek and
//! starts a new run with no read-ahead at all. Within a run, the first time
//! the reader enters a new block the window opens at one block; the second
//! time, the reader has proven sequential and the window opens at once to
//! the configured maximum (on a hoster link a whole file may take a second
//! or two, so every step of a slow ramp shows in the total). The blocks
//! ahead of the reader are topped up in whole requests as soon as one fits
//! in the window again, so a connection that finishes its request finds
//! the next one waiting instead of idling until half the window is read,
//! and never spends a round trip on a sliver; while a probe that reads a
//! header and jumps to the tail (what media scanners do) never triggers a
//! large fetch.
//!
//! Cached blocks are never thrown away on a seek: a reader jumping back
//! finds them in the block cache.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::cache::block::{BlockCache, CacheResult, FileStreams, ReadAheadTicket};
use crate::cache::FileSource;
use crate::writeback::ReadHold;

/// Read-ahead settings, in blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadAheadConfig {
    /// Largest window (0 disables read-ahead).
    pub max_blocks: u64,
    /// Largest run of blocks fetched by one read-ahead request.
    pub max_blocks_per_request: u64,
    /// Most read-ahead connections one open file uses at once.
    pub max_streams_per_file: usize,
}

/// When a jump lands this close to the end of the file, the rest of the
/// file is fetched in the same request: container indexes (MP4 `moov`, MKV
/// cues) often straddle the last two blocks.
const TAIL_BLOCKS: u64 = 1;

/// How one read is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadPlan {
    /// Fetch missing blocks up to this index in the same request as the read.
    pub fetch_through: u64,
}

/// An open file: a snapshot of the remote file taken at open time (so a
/// listing refresh mid-read cannot change the bytes under a reader) and the
/// state of its sequential-read detection.
pub struct OpenFile {
    pub ino: u64,
    pub source: FileSource,
    cache: BlockCache,
    config: ReadAheadConfig,
    stream: Mutex<StreamState>,
    /// Changes at every jump and at close, making read-ahead requests still
    /// queued for the previous run stale.
    run_counter: Arc<AtomicU64>,
    /// This file's share of the mount's read-ahead streams.
    file_streams: Arc<FileStreams>,
    /// Keeps the write-back queue from removing the file under the reader.
    _hold: Option<ReadHold>,
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        self.run_counter.fetch_add(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Default)]
struct StreamState {
    /// End offset of the furthest read of the current run; `None` before
    /// the first read.
    expected: Option<u64>,
    /// Highest block the current run has read.
    last_block: u64,
    /// Current window in blocks; 0 until the run has moved past its first block.
    window: u64,
    /// Blocks below this index have been requested (demand or read-ahead).
    requested_until: u64,
}

impl OpenFile {
    /// `hold`: what keeps the file on the service while it is open.
    pub fn new(
        ino: u64,
        source: FileSource,
        cache: BlockCache,
        config: ReadAheadConfig,
        hold: Option<ReadHold>,
    ) -> Arc<Self> {
        Arc::new(OpenFile {
            _hold: hold,
            ino,
            source,
            cache,
            config,
            stream: Mutex::new(StreamState::default()),
            run_counter: Arc::new(AtomicU64::new(0)),
            file_streams: FileStreams::new(config.max_streams_per_file),
        })
    }

    /// Records a read of `offset .. offset + len`, starts whatever
    /// read-ahead it calls for, and says how to serve it.
    pub fn plan(&self, offset: u64, len: u64) -> ReadPlan {
        let size = self.source.size;
        let end = offset.saturating_add(len).min(size);
        if offset >= end {
            return ReadPlan { fetch_through: 0 };
        }
        let bs = self.cache.block_size();
        let blocks = self.cache.block_count(size);
        let last = (end - 1) / bs;
        let mut state = self.stream.lock();
        let in_run = state.expected.is_some_and(|expected| {
            let ahead = state.window.max(1) * bs;
            offset.saturating_add(bs) >= expected && offset <= expected.saturating_add(ahead)
        });
        if !in_run {
            // A first read or a jump: serve it alone, except near the end of
            // the file where the whole tail comes in the same request.
            let through = if blocks - 1 - last <= TAIL_BLOCKS {
                blocks - 1
            } else {
                last
            };
            self.run_counter.fetch_add(1, Ordering::AcqRel);
            *state = StreamState {
                expected: Some(end),
                last_block: last,
                window: 0,
                requested_until: through + 1,
            };
            return ReadPlan {
                fetch_through: through,
            };
        }
        state.expected = Some(state.expected.unwrap_or(0).max(end));
        let mut prefetch = None;
        let mut fetch_through = last;
        if last > state.last_block && state.window == 0 {
            // The one-block window rides on the reader's own request: one
            // connection instead of two for the step that proves nothing
            // yet (and one request fewer for a probe that reads on).
            state.last_block = last;
            state.window = 1.min(self.config.max_blocks);
            if state.window > 0 && state.requested_until <= last + 1 && last + 1 < blocks {
                fetch_through = last + 1;
                state.requested_until = last + 2;
            }
        } else if last > state.last_block {
            state.last_block = last;
            state.window = self.config.max_blocks;
            let window = state.window;
            let ahead = state.requested_until.saturating_sub(last + 1);
            let request = self.config.max_blocks_per_request.clamp(1, window.max(1));
            if window > 0 && ahead + request <= window {
                let from = state.requested_until.max(last + 1);
                // Whole requests only (the file's end aside): a short one
                // costs a connection the same round trip as a full one.
                let room = (last + window + 1).saturating_sub(from);
                let to = (from + room / request * request)
                    .min(blocks)
                    .saturating_sub(1);
                if from <= to {
                    prefetch = Some((from, to));
                    state.requested_until = to + 1;
                }
            }
        }
        state.requested_until = state.requested_until.max(last + 1);
        drop(state);
        if let Some((from, to)) = prefetch {
            self.cache.prefetch(
                &self.source,
                from,
                to,
                self.config.max_blocks_per_request,
                ReadAheadTicket::new(&self.run_counter, &self.file_streams),
            );
        }
        ReadPlan { fetch_through }
    }

    /// The bytes if every block is already in memory (no waiting at all).
    pub fn read_cached(&self, offset: u64, len: u64) -> Option<Bytes> {
        if offset >= self.source.size || len == 0 {
            return Some(Bytes::new());
        }
        self.cache.try_read_cached(&self.source, offset, len)
    }

    /// The bytes, fetched as the plan says where needed.
    pub async fn read(&self, offset: u64, len: u64, plan: ReadPlan) -> CacheResult<Bytes> {
        self.cache
            .read(&self.source, offset, len, plan.fetch_through)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::block::BlockCacheConfig;
    use crate::remote::memory::MemoryRemote;
    use std::time::Duration;

    const BS: u64 = 1024;

    async fn open(size: usize, max_blocks: u64) -> (Arc<MemoryRemote>, Arc<OpenFile>) {
        let remote = Arc::new(MemoryRemote::new());
        let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        let entry = remote.add_file("f", data);
        let cache = BlockCache::new(
            remote.clone(),
            BlockCacheConfig {
                block_size: BS,
                max_memory: 1 << 30,
                disk: None,
                max_streams: 4,
            },
        )
        .unwrap();
        let file = OpenFile::new(
            2,
            FileSource::for_entry(&entry),
            cache,
            ReadAheadConfig {
                max_blocks,
                max_blocks_per_request: 4,
                max_streams_per_file: 4,
            },
            None,
        );
        (remote, file)
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn a_probe_of_head_and_tail_costs_two_requests() {
        let (remote, file) = open(100 * BS as usize, 16).await;
        // The head, read in small pieces as a demuxer does.
        for offset in (0..BS).step_by(256) {
            let plan = file.plan(offset, 256);
            file.read(offset, 256, plan).await.unwrap();
        }
        // A jump to the index near the end, which straddles the last two blocks.
        let tail = 98 * BS + 900;
        let plan = file.plan(tail, 600);
        assert_eq!(plan.fetch_through, 99);
        file.read(tail, 600, plan).await.unwrap();
        let plan = file.plan(tail + 600, 1000);
        file.read(tail + 600, 1000, plan).await.unwrap();
        settle().await;
        assert_eq!(remote.download_requests(), 2);
    }

    #[tokio::test]
    async fn sequential_reads_grow_the_window_and_seeks_reset_it() {
        let (remote, file) = open(200 * BS as usize, 16).await;
        let mut offset = 0;
        while offset < 40 * BS {
            let plan = file.plan(offset, BS / 2);
            file.read(offset, BS / 2, plan).await.unwrap();
            offset += BS / 2;
        }
        settle().await;
        // Read-ahead ran ahead of the reader by up to the 16-block window.
        assert!(file.cache.is_cached(&file.source, 50));
        assert!(!file.cache.is_cached(&file.source, 60));
        let sequential_requests = remote.download_requests();
        // 40 blocks in far fewer than 40 requests.
        assert!(sequential_requests < 20, "{sequential_requests}");
        assert_eq!(file.stream.lock().window, 16);
        // A jump far ahead: no read-ahead, window back to zero.
        let plan = file.plan(150 * BS, 100);
        file.read(150 * BS, 100, plan).await.unwrap();
        settle().await;
        assert_eq!(file.stream.lock().window, 0);
        assert_eq!(remote.download_requests(), sequential_requests + 1);
        assert!(!file.cache.is_cached(&file.source, 151));
        // Jumping back finds the blocks read before.
        assert!(file.read_cached(10 * BS, 2 * BS).is_some());
    }

    #[tokio::test]
    async fn read_ahead_can_be_disabled() {
        let (remote, file) = open(20 * BS as usize, 0).await;
        for block in 0..10 {
            let plan = file.plan(block * BS, BS);
            file.read(block * BS, BS, plan).await.unwrap();
        }
        settle().await;
        assert_eq!(remote.download_requests(), 10);
    }

    #[tokio::test]
    async fn reads_past_the_end_are_empty() {
        let (_remote, file) = open(10, 4).await;
        let plan = file.plan(10, 100);
        assert!(file.read(10, 100, plan).await.unwrap().is_empty());
        assert!(file.read_cached(50, 1).unwrap().is_empty());
    }
}
