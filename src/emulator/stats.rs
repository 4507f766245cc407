//! Request and byte counters, read by benchmarks through the admin API.
//!
//! Endpoint names are `"<service>:<endpoint>"` (e.g. `1fichier:file/ls`,
//! `1fichier:download`), so any service module can count its own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::Serialize;

#[derive(Default)]
pub struct Stats {
    requests: Mutex<BTreeMap<String, u64>>,
    bytes_served: AtomicU64,
    bytes_received: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    pub requests: BTreeMap<String, u64>,
    pub bytes_served: u64,
    pub bytes_received: u64,
}

impl Stats {
    pub fn count(&self, endpoint: &str) {
        let mut requests = self.requests.lock();
        match requests.get_mut(endpoint) {
            Some(n) => *n += 1,
            None => {
                requests.insert(endpoint.to_string(), 1);
            }
        }
    }

    pub fn add_bytes_served(&self, n: u64) {
        self.bytes_served.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_bytes_received(&self, n: u64) {
        self.bytes_received.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.lock().clone(),
            bytes_served: self.bytes_served.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
        }
    }

    pub fn reset(&self) {
        self.requests.lock().clear();
        self.bytes_served.store(0, Ordering::Relaxed);
        self.bytes_received.store(0, Ordering::Relaxed);
    }
}
