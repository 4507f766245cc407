//! Concurrent download connections per account: the slots the
//! `max_downloads_per_key` limit hands out, and the counters
//! `/_emulator/stats` shows under `downloads` so a client's tests can check
//! that the limit was never exceeded.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

/// Counters of one account (named `"<service>:<key>"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DownloadCounters {
    /// Download connections whose body is still being sent.
    pub current: u32,
    /// The most there have been at once since the last stats reset.
    pub peak: u32,
    /// Connections refused because `current` was at the limit.
    pub refused: u64,
}

#[derive(Default)]
pub struct DownloadSlots {
    accounts: Arc<Mutex<BTreeMap<String, DownloadCounters>>>,
}

/// Held from the start of a download's answer until its body is fully sent
/// or the client went away (the body, and this with it, is dropped).
pub struct DownloadSlot {
    accounts: Arc<Mutex<BTreeMap<String, DownloadCounters>>>,
    account: String,
}

impl Drop for DownloadSlot {
    fn drop(&mut self) {
        if let Some(counters) = self.accounts.lock().get_mut(&self.account) {
            counters.current = counters.current.saturating_sub(1);
        }
    }
}

impl DownloadSlots {
    /// A slot for one more download of `account`, or `None` (counted as a
    /// refusal) when `limit` are already running.
    pub fn acquire(&self, account: &str, limit: Option<u32>) -> Option<DownloadSlot> {
        let mut accounts = self.accounts.lock();
        let counters = accounts.entry(account.to_string()).or_default();
        if limit.is_some_and(|limit| counters.current >= limit) {
            counters.refused += 1;
            return None;
        }
        counters.current += 1;
        counters.peak = counters.peak.max(counters.current);
        Some(DownloadSlot {
            accounts: self.accounts.clone(),
            account: account.to_string(),
        })
    }

    pub fn snapshot(&self) -> BTreeMap<String, DownloadCounters> {
        self.accounts.lock().clone()
    }

    /// Starts peaks over from the running count and forgets refusals.
    pub fn reset(&self) {
        let mut accounts = self.accounts.lock();
        accounts.retain(|_, counters| counters.current > 0);
        for counters in accounts.values_mut() {
            counters.peak = counters.current;
            counters.refused = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_peak_refusals_and_release() {
        let slots = DownloadSlots::default();
        let a = slots.acquire("s:a", Some(2)).unwrap();
        let b = slots.acquire("s:a", Some(2)).unwrap();
        assert!(slots.acquire("s:a", Some(2)).is_none());
        let other = slots.acquire("s:b", Some(2)).unwrap();
        drop(a);
        let c = slots.acquire("s:a", Some(2)).unwrap();
        let counters = slots.snapshot()["s:a"];
        assert_eq!(
            counters,
            DownloadCounters {
                current: 2,
                peak: 2,
                refused: 1
            }
        );
        drop((b, c, other));
        slots.reset();
        assert!(slots.snapshot().is_empty());
        assert!(slots.acquire("s:a", None).is_some());
    }
}
