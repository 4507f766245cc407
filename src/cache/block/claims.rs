//! In-flight claims: every block being fetched has exactly one entry in
//! the in-flight table; whoever wants it while the fetch runs waits on that
//! entry, so concurrent readers of one block share one request.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::{FutureExt, Shared};
use parking_lot::Mutex;

use super::disk::DiskTier;
use super::error::{CacheError, CacheResult};
use super::key::BlockKey;
use super::memory::MemoryTier;
use crate::cache::FileSource;

pub(super) type BlockResult = CacheResult<Bytes>;
/// Held by whoever fetches a claimed block; answers its waiters.
pub(super) type BlockSender = oneshot::Sender<BlockResult>;
pub(super) type BlockWaiter = Shared<oneshot::Receiver<BlockResult>>;

/// How a reader obtains one block.
pub(super) enum Pending {
    Ready(Bytes),
    Wait(BlockWaiter),
}

/// Work decided while holding the in-flight lock, started after releasing it.
pub(super) enum Job {
    /// Load one block from the disk tier (falls back to the service).
    Disk { index: u64, sender: BlockSender },
    /// Fetch consecutive blocks `first..first + senders.len()` with one request.
    Fetch {
        first: u64,
        senders: VecDeque<BlockSender>,
    },
}

/// The tiers a claim looks into before deciding a block must be fetched.
pub(super) struct Tiers<'a> {
    pub(super) memory: &'a Mutex<MemoryTier>,
    pub(super) disk: Option<&'a DiskTier>,
    pub(super) memory_hits: &'a AtomicU64,
}

/// The in-flight table.
#[derive(Default)]
pub(super) struct InFlight {
    table: Mutex<HashMap<BlockKey, BlockWaiter>>,
}

impl InFlight {
    /// The waiter of a block being fetched, if it is.
    pub(super) fn waiter(&self, block_key: &BlockKey) -> Option<BlockWaiter> {
        self.table.lock().get(block_key).cloned()
    }

    /// Ends a claim once its block is stored (or its fetch gave up).
    pub(super) fn release(&self, block_key: &BlockKey) {
        self.table.lock().remove(block_key);
    }

    /// Gives up claimed blocks without fetching them; anyone waiting for
    /// them claims them again.
    pub(super) fn abandon(&self, src: &FileSource, first: u64, senders: VecDeque<BlockSender>) {
        let mut table = self.table.lock();
        for (index, sender) in (first..).zip(senders) {
            table.remove(&BlockKey::of(src, index));
            drop(sender);
        }
    }

    /// Ends a claim with an error for its waiters.
    pub(super) fn fail(
        &self,
        src: &FileSource,
        index: u64,
        error: CacheError,
        sender: BlockSender,
    ) {
        self.release(&BlockKey::of(src, index));
        let _ = sender.send(Err(error));
    }

    /// Registers in-flight entries for the blocks of `first..=last` that
    /// nobody has or is fetching, grouped into runs of consecutive blocks.
    /// Also returns how to obtain each block of `first..=wanted_through`,
    /// decided under the same lock so no block can slip away in between.
    pub(super) fn claim(
        &self,
        src: &FileSource,
        first: u64,
        last: u64,
        wanted_through: u64,
        tiers: Tiers<'_>,
    ) -> (Vec<Job>, Vec<Pending>) {
        let Tiers {
            memory,
            disk,
            memory_hits,
        } = tiers;
        let mut jobs = Vec::new();
        let mut wanted = Vec::new();
        let mut run: Option<(u64, VecDeque<BlockSender>)> = None;
        let mut inflight = self.table.lock();
        for index in first..=last {
            let block_key = BlockKey::of(src, index);
            let want = index <= wanted_through;
            let mut present = false;
            if let Some(waiter) = inflight.get(&block_key) {
                present = true;
                if want {
                    wanted.push(Pending::Wait(waiter.clone()));
                }
            } else if want {
                if let Some(block) = memory.lock().get(&block_key) {
                    memory_hits.fetch_add(1, Ordering::Relaxed);
                    present = true;
                    wanted.push(Pending::Ready(block));
                }
            } else {
                present = memory.lock().contains(&block_key);
            }
            let on_disk = !present && disk.is_some_and(|disk| disk.contains(&block_key));
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
}
