//! Activity counters the layers bump on their hot paths.
//!
//! Every counter is a relaxed atomic: a read of a cached block costs one
//! `fetch_add`, no lock. Readers (the control API) take a [`CounterSnapshot`]
//! and derive rates from successive snapshots.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Kinds of requests to the remote service, counted separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// Folder listings.
    List,
    /// File or account information (attributes, space).
    Info,
    /// Download links and ranged reads.
    Download,
    Upload,
    Delete,
    /// Renames and moves.
    Rename,
    Mkdir,
    Other,
}

impl RequestKind {
    pub const ALL: [RequestKind; 8] = [
        RequestKind::List,
        RequestKind::Info,
        RequestKind::Download,
        RequestKind::Upload,
        RequestKind::Delete,
        RequestKind::Rename,
        RequestKind::Mkdir,
        RequestKind::Other,
    ];

    /// The name used in JSON and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            RequestKind::List => "list",
            RequestKind::Info => "info",
            RequestKind::Download => "download",
            RequestKind::Upload => "upload",
            RequestKind::Delete => "delete",
            RequestKind::Rename => "rename",
            RequestKind::Mkdir => "mkdir",
            RequestKind::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How far back transfer rates look.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Bound on kept rate samples, however often the stats are polled.
const MAX_RATE_SAMPLES: usize = 64;

/// The registry of counters one mount shares between its layers.
#[derive(Debug)]
pub struct Counters {
    remote_read_bytes: AtomicU64,
    cache_read_bytes: AtomicU64,
    upload_bytes: AtomicU64,
    requests: [AtomicU64; RequestKind::ALL.len()],
    request_errors: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    pacer_waits: AtomicU64,
    pacer_wait_micros: AtomicU64,
    started: Instant,
    /// Only readers touch this, never the hot path.
    rate_samples: Mutex<VecDeque<RateSample>>,
}

#[derive(Clone, Copy, Debug)]
struct RateSample {
    at: Instant,
    remote_read_bytes: u64,
    cache_read_bytes: u64,
    upload_bytes: u64,
    requests: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters::new()
    }
}

impl Counters {
    pub fn new() -> Self {
        Counters {
            remote_read_bytes: AtomicU64::new(0),
            cache_read_bytes: AtomicU64::new(0),
            upload_bytes: AtomicU64::new(0),
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            request_errors: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            pacer_waits: AtomicU64::new(0),
            pacer_wait_micros: AtomicU64::new(0),
            started: Instant::now(),
            rate_samples: Mutex::new(VecDeque::new()),
        }
    }

    /// File bytes received from the remote service.
    pub fn add_remote_read(&self, bytes: u64) {
        self.remote_read_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// File bytes served from the local cache.
    pub fn add_cache_read(&self, bytes: u64) {
        self.cache_read_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// File bytes sent to the remote service.
    pub fn add_upload(&self, bytes: u64) {
        self.upload_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// One request to the remote service, counted when it is sent.
    pub fn count_request(&self, kind: RequestKind) {
        self.requests[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A request that failed (after being counted by [`Self::count_request`]).
    pub fn count_request_error(&self) {
        self.request_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn cache_hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn cache_miss(&self) {
        self.cache_misses.fetch_add(1, Ordering::Relaxed);
    }

    /// The pacer held a request back for `waited`.
    pub fn pacer_wait(&self, waited: Duration) {
        self.pacer_waits.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        self.pacer_wait_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The counters' current values.
    pub fn snapshot(&self) -> CounterSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let requests: BTreeMap<RequestKind, u64> = RequestKind::ALL
            .iter()
            .map(|&kind| (kind, load(&self.requests[kind.index()])))
            .collect();
        let cache_hits = load(&self.cache_hits);
        let cache_misses = load(&self.cache_misses);
        let lookups = cache_hits + cache_misses;
        CounterSnapshot {
            remote_read_bytes: load(&self.remote_read_bytes),
            cache_read_bytes: load(&self.cache_read_bytes),
            upload_bytes: load(&self.upload_bytes),
            requests_total: requests.values().sum(),
            requests,
            request_errors: load(&self.request_errors),
            cache_hits,
            cache_misses,
            cache_hit_ratio: (lookups > 0).then(|| cache_hits as f64 / lookups as f64),
            pacer_waits: load(&self.pacer_waits),
            pacer_wait_seconds: load(&self.pacer_wait_micros) as f64 / 1e6,
            uptime_seconds: self.started.elapsed().as_secs(),
        }
    }

    /// Transfer rates over the last few seconds, measured between this call
    /// and the oldest sample in the window (the first call answers zeros).
    pub fn rates(&self) -> TransferRates {
        let now = Instant::now();
        let current = self.snapshot();
        let sample = RateSample {
            at: now,
            remote_read_bytes: current.remote_read_bytes,
            cache_read_bytes: current.cache_read_bytes,
            upload_bytes: current.upload_bytes,
            requests: current.requests_total,
        };
        let mut samples = self.rate_samples.lock();
        samples.push_back(sample);
        // Keep one sample at or beyond the window's start as the baseline.
        while samples.len() > 2 && now.duration_since(samples[1].at) >= RATE_WINDOW {
            samples.pop_front();
        }
        while samples.len() > MAX_RATE_SAMPLES {
            samples.pop_front();
        }
        let base = samples[0];
        let seconds = now.duration_since(base.at).as_secs_f64();
        if seconds <= 0.0 {
            return TransferRates::default();
        }
        let per_second = |now: u64, then: u64| now.saturating_sub(then) as f64 / seconds;
        TransferRates {
            remote_read_bytes_per_sec: per_second(sample.remote_read_bytes, base.remote_read_bytes),
            cache_read_bytes_per_sec: per_second(sample.cache_read_bytes, base.cache_read_bytes),
            upload_bytes_per_sec: per_second(sample.upload_bytes, base.upload_bytes),
            requests_per_sec: per_second(sample.requests, base.requests),
            window_seconds: seconds,
        }
    }
}

/// Counter values at one moment; totals since the mount started.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CounterSnapshot {
    pub remote_read_bytes: u64,
    pub cache_read_bytes: u64,
    pub upload_bytes: u64,
    pub requests_total: u64,
    pub requests: BTreeMap<RequestKind, u64>,
    pub request_errors: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Hits over lookups; absent before the first lookup.
    pub cache_hit_ratio: Option<f64>,
    pub pacer_waits: u64,
    pub pacer_wait_seconds: f64,
    pub uptime_seconds: u64,
}

/// Bytes and requests per second over [`TransferRates::window_seconds`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TransferRates {
    pub remote_read_bytes_per_sec: f64,
    pub cache_read_bytes_per_sec: f64,
    pub upload_bytes_per_sec: f64,
    pub requests_per_sec: f64,
    pub window_seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_adds_up_what_was_counted() {
        let counters = Counters::new();
        counters.add_remote_read(100);
        counters.add_remote_read(23);
        counters.add_cache_read(7);
        counters.count_request(RequestKind::List);
        counters.count_request(RequestKind::List);
        counters.count_request(RequestKind::Download);
        counters.cache_hit();
        counters.cache_hit();
        counters.cache_hit();
        counters.cache_miss();
        counters.pacer_wait(Duration::from_millis(1500));
        let snap = counters.snapshot();
        assert_eq!(snap.remote_read_bytes, 123);
        assert_eq!(snap.cache_read_bytes, 7);
        assert_eq!(snap.requests[&RequestKind::List], 2);
        assert_eq!(snap.requests[&RequestKind::Download], 1);
        assert_eq!(snap.requests[&RequestKind::Upload], 0);
        assert_eq!(snap.requests_total, 3);
        assert_eq!(snap.cache_hit_ratio, Some(0.75));
        assert_eq!(snap.pacer_waits, 1);
        assert!((snap.pacer_wait_seconds - 1.5).abs() < 1e-9);
    }

    #[test]
    fn rates_measure_bytes_between_samples() {
        let counters = Counters::new();
        assert_eq!(counters.rates().remote_read_bytes_per_sec, 0.0);
        std::thread::sleep(Duration::from_millis(200));
        counters.add_remote_read(1000);
        let rates = counters.rates();
        assert!(rates.window_seconds >= 0.2, "{rates:?}");
        let expected = 1000.0 / rates.window_seconds;
        assert!((rates.remote_read_bytes_per_sec - expected).abs() < 1e-6);
        assert_eq!(rates.upload_bytes_per_sec, 0.0);
    }
}
