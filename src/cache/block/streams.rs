//! How many read-ahead connections a mount keeps open at once: as many as
//! pay off. File hosters cap each download connection, so one stream is
//! slow however fast the line is; on a fast line more streams only cost
//! CPU. Read-ahead only runs for a reader that has proven sequential, so
//! the set starts at a few connections and doubles after each short
//! measurement while the bytes read ahead per second grow with it: a
//! 256 MiB file read at 20 MiB/s per connection lasts under two seconds
//! with eight of them, so every step of the ramp shows in the total. It
//! stops when a step brings less than half of what it should (and takes
//! the step back when it brought almost nothing: extra connections then
//! only cost CPU); it never exceeds its configured bound, and a connection
//! the service refuses (too many downloads) shrinks it below the number
//! that was running then.
//!
//! Only read-ahead waits for a stream; a reader's own (demand) fetch does
//! not, but every download connection, demand or read-ahead, takes one of
//! `max` connection slots, so the mount never opens more than its bound
//! (say, the account's limit) at once; and all count when a refusal tells
//! how many the service accepts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Read-ahead connections a mount starts with (before any measurement).
const INITIAL_STREAMS: usize = 4;
/// Length of one throughput measurement: long enough for several 64 KiB
/// chunks per connection even at a few MB/s each, short enough that the
/// ramp to eight connections takes a small part of a one-second read.
const SAMPLE: Duration = Duration::from_millis(50);
/// A step is kept growing only if it brought at least this share of the
/// throughput it would add were every connection as fast as before.
const WORTHWHILE_SHARE: f64 = 0.5;
/// A step that brought less than this share is taken back.
const USELESS_SHARE: f64 = 0.2;
/// After a refusal the set stays at most at the size the service accepted
/// for this long, then may probe again (another client of the account may
/// have finished).
const REFUSAL_MEMORY: Duration = Duration::from_secs(30);
/// Without read-ahead for this long, the next reader probes growth afresh
/// (it may be on another link, or alone where there were several).
const IDLE_RESET: Duration = Duration::from_secs(5);

/// A snapshot of the set, for stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Read-ahead connections allowed now.
    pub limit: usize,
    /// Most connections (read-ahead and demand) open at once so far.
    pub peak_connections: usize,
    /// Connections the service refused as one too many.
    pub refusals: u64,
}

/// The mount-wide set of read-ahead streams.
pub(super) struct Streams {
    state: Mutex<State>,
    freed: Notify,
    /// One permit per download connection the mount may open at once.
    slots: Arc<Semaphore>,
}

struct State {
    /// Upper bound (configuration, service limit).
    max: usize,
    /// Read-ahead streams allowed now.
    limit: usize,
    /// Read-ahead streams holding a permit.
    running: usize,
    /// Every open download connection (read-ahead and demand).
    connections: usize,
    peak_connections: usize,
    refusals: u64,
    /// A refusal's bound on `limit`, and until when it holds.
    refused_ceiling: Option<(usize, Instant)>,
    /// Growth stopped: the last step did not pay off.
    plateau: bool,
    /// The current measurement.
    sample: Sample,
    /// Throughput measured before the last step, and the step's size.
    previous: Option<(f64, usize, usize)>,
    /// When read-ahead last ran.
    last_active: Instant,
}

struct Sample {
    start: Instant,
    bytes: u64,
    /// Some read-ahead waited for a stream during the sample: the set,
    /// not the reader, bounded the throughput measured.
    saturated: bool,
    /// The limit when the sample started (a sample spanning a change is
    /// not a measurement of either size).
    limit: usize,
    /// The first sample after a step: the new connections spend part of
    /// it on their first round trip, so it is not a measurement of the
    /// new size.
    settling: bool,
}

impl Sample {
    fn new(limit: usize) -> Sample {
        Sample {
            start: Instant::now(),
            bytes: 0,
            saturated: false,
            limit,
            settling: false,
        }
    }

    fn after_step(limit: usize) -> Sample {
        Sample {
            settling: true,
            ..Sample::new(limit)
        }
    }
}

/// A read-ahead stream; dropping it frees it for a waiting read-ahead.
pub(super) struct StreamPermit {
    streams: Arc<Streams>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.streams.state.lock().running -= 1;
        self.streams.freed.notify_waiters();
    }
}

/// One open download connection; dropping it closes the count.
pub(super) struct Connection {
    streams: Arc<Streams>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.streams.state.lock().connections -= 1;
    }
}

impl Streams {
    pub(super) fn new(max: usize) -> Arc<Streams> {
        let max = max.max(1);
        let limit = INITIAL_STREAMS.min(max);
        Arc::new(Streams {
            state: Mutex::new(State {
                max,
                limit,
                running: 0,
                connections: 0,
                peak_connections: 0,
                refusals: 0,
                refused_ceiling: None,
                plateau: false,
                sample: Sample::new(limit),
                previous: None,
                last_active: Instant::now(),
            }),
            freed: Notify::new(),
            slots: Arc::new(Semaphore::new(max)),
        })
    }

    pub(super) fn stats(&self) -> StreamStats {
        let state = self.state.lock();
        StreamStats {
            limit: state.limit,
            peak_connections: state.peak_connections,
            refusals: state.refusals,
        }
    }

    /// Waits for a read-ahead stream.
    pub(super) async fn acquire(self: &Arc<Self>) -> StreamPermit {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            {
                let mut state = self.state.lock();
                let now = Instant::now();
                if state.running == 0 && now.duration_since(state.last_active) > IDLE_RESET {
                    state.plateau = false;
                    state.previous = None;
                    state.sample = Sample::new(state.limit);
                }
                state.last_active = now;
                if state.running < state.limit {
                    state.running += 1;
                    return StreamPermit {
                        streams: self.clone(),
                    };
                }
                state.sample.saturated = true;
                // Registered before the lock is released: a permit freed
                // in between still wakes us.
                freed.as_mut().enable();
            }
            freed.await;
        }
    }

    /// Waits for a connection slot, and counts the connection for as long
    /// as the guard lives.
    pub(super) async fn connection(self: &Arc<Self>) -> Connection {
        // The semaphore is never closed.
        let slot = self.slots.clone().acquire_owned().await.ok();
        let mut state = self.state.lock();
        state.connections += 1;
        state.peak_connections = state.peak_connections.max(state.connections);
        Connection {
            streams: self.clone(),
            _slot: slot,
        }
    }

    /// Bytes a read-ahead stream received; ends a measurement when one is
    /// due, and grows the set when the last step paid off.
    pub(super) fn delivered(&self, bytes: u64) {
        let mut state = self.state.lock();
        let now = Instant::now();
        state.last_active = now;
        state.sample.bytes += bytes;
        let elapsed = now.duration_since(state.sample.start);
        if elapsed < SAMPLE {
            return;
        }
        let rate = state.sample.bytes as f64 / elapsed.as_secs_f64();
        let measured =
            state.sample.saturated && state.sample.limit == state.limit && !state.sample.settling;
        state.sample = Sample::new(state.limit);
        if !measured || state.plateau {
            return;
        }
        if let Some((before, from, step)) = state.previous {
            let hoped = before * step as f64 / from as f64;
            let gained = rate - before;
            if gained < hoped * WORTHWHILE_SHARE {
                state.plateau = true;
                if gained < hoped * USELESS_SHARE {
                    state.limit = from;
                    state.sample = Sample::new(from);
                }
                return;
            }
        }
        let ceiling = match state.refused_ceiling {
            Some((ceiling, until)) if now < until => ceiling,
            _ => state.max,
        };
        let from = state.limit;
        let to = (from * 2).min(ceiling).min(state.max);
        if to <= from {
            return;
        }
        state.limit = to;
        state.previous = Some((rate, from, to - from));
        state.sample = Sample::after_step(to);
        drop(state);
        self.freed.notify_waiters();
    }

    /// The service refused one connection too many (still counted as
    /// open): the set shrinks to what the service accepted then, one less
    /// when a reader's own fetch was refused (it must get through), and
    /// stays there for a while.
    pub(super) fn refused(&self, by_read_ahead: bool) {
        let mut state = self.state.lock();
        state.refusals += 1;
        let accepted = state.connections.saturating_sub(1);
        let room = if by_read_ahead {
            accepted
        } else {
            accepted.saturating_sub(1)
        };
        state.limit = state.limit.min(room).max(1);
        state.refused_ceiling = Some((state.limit, Instant::now() + REFUSAL_MEMORY));
        state.plateau = true;
        state.sample = Sample::new(state.limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measure(streams: &Streams, bytes: u64, saturated: bool) {
        {
            let mut state = streams.state.lock();
            state.sample.start = Instant::now() - SAMPLE;
            state.sample.saturated = saturated;
        }
        streams.delivered(bytes);
    }

    #[test]
    fn doubles_while_throughput_grows_with_the_streams() {
        let streams = Streams::new(32);
        assert_eq!(streams.stats().limit, 4);
        // Every stream delivers 1 unit per sample: throughput follows the
        // limit. The sample right after each step is not judged.
        let mut limits = Vec::new();
        for _ in 0..6 {
            let limit = streams.stats().limit as u64;
            measure(&streams, limit * 1_000_000, true);
            limits.push(streams.stats().limit);
        }
        assert_eq!(limits, [8, 8, 16, 16, 32, 32]);
    }

    #[test]
    fn the_first_sample_after_a_step_is_not_judged() {
        let streams = Streams::new(16);
        measure(&streams, 4_000_000, true); // 4 -> 8
                                            // The new connections are still on their first round trip.
        measure(&streams, 4_000_000, true);
        assert_eq!(streams.stats().limit, 8);
        measure(&streams, 8_000_000, true); // paid off: 8 -> 16
        assert_eq!(streams.stats().limit, 16);
    }

    #[test]
    fn a_step_that_brings_nothing_is_taken_back_and_growth_stops() {
        let streams = Streams::new(16);
        measure(&streams, 4_000_000, true); // 4 -> 8
        assert_eq!(streams.stats().limit, 8);
        measure(&streams, 4_000_000, true); // settling
        measure(&streams, 4_100_000, true); // flat: back to 4, plateau
        assert_eq!(streams.stats().limit, 4);
        measure(&streams, 9_000_000, true);
        measure(&streams, 9_000_000, true);
        assert_eq!(streams.stats().limit, 4);
    }

    #[test]
    fn a_step_that_brings_too_little_stops_growth_but_stays() {
        let streams = Streams::new(32);
        measure(&streams, 4_000_000, true); // 4 -> 8
        measure(&streams, 4_000_000, true); // settling
                                            // A third of the hoped-for gain: kept, but no further step.
        measure(&streams, 5_300_000, true);
        assert_eq!(streams.stats().limit, 8);
        measure(&streams, 20_000_000, true);
        measure(&streams, 20_000_000, true);
        assert_eq!(streams.stats().limit, 8);
    }

    #[test]
    fn an_unsaturated_sample_says_nothing() {
        let streams = Streams::new(8);
        measure(&streams, 4_000_000, false);
        assert_eq!(streams.stats().limit, 4);
    }

    #[test]
    fn the_bound_caps_the_start_and_the_growth() {
        let streams = Streams::new(2);
        assert_eq!(streams.stats().limit, 2);
        measure(&streams, 2_000_000, true);
        assert_eq!(streams.stats().limit, 2);
        let streams = Streams::new(6);
        measure(&streams, 4_000_000, true);
        assert_eq!(streams.stats().limit, 6);
    }

    #[tokio::test]
    async fn a_refusal_shrinks_below_what_was_running() {
        let streams = Streams::new(8);
        for _ in 0..6 {
            let limit = streams.stats().limit as u64;
            measure(&streams, limit * 1_000_000, true);
        }
        let permits: Vec<_> = futures::future::join_all((0..5).map(|_| streams.acquire())).await;
        let connections: Vec<_> =
            futures::future::join_all((0..5).map(|_| streams.connection())).await;
        streams.refused(true);
        let stats = streams.stats();
        assert_eq!(stats.limit, 4);
        assert_eq!(stats.refusals, 1);
        assert_eq!(stats.peak_connections, 5);
        drop(connections);
        drop(permits);
        // Growth stays under the refusal's ceiling.
        measure(&streams, 100_000_000, true);
        assert_eq!(streams.stats().limit, 4);
        // A reader's own fetch refused: room is made for it.
        let _connections: Vec<_> =
            futures::future::join_all((0..4).map(|_| streams.connection())).await;
        streams.refused(false);
        assert_eq!(streams.stats().limit, 2);
    }

    #[tokio::test]
    async fn a_waiting_read_ahead_gets_the_freed_stream() {
        let streams = Streams::new(1);
        let first = streams.acquire().await;
        let waiter = tokio::spawn({
            let streams = streams.clone();
            async move {
                let _permit = streams.acquire().await;
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
    }
}
