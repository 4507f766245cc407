//! Pacing of one download connection: a token bucket refilled at the
//! connection's rate, drained in small quanta, so bytes leave smoothly
//! rather than in one-second bursts.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Bytes handed to the connection at a time when paced.
pub const QUANTUM: usize = 64 * 1024;

/// Tokens the bucket holds at most: two quanta, so a timer that fires a
/// little late does not lose the bytes it was owed, while a client that
/// stalls gets at most this as a burst afterwards.
const CAPACITY: f64 = (2 * QUANTUM) as f64;

pub struct TokenBucket {
    bytes_per_second: f64,
    tokens: f64,
    /// Set at the first [`TokenBucket::poll_take`]: the pace starts with the
    /// body, after the link's latency.
    refilled_at: Option<Instant>,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl TokenBucket {
    pub fn new(bytes_per_second: u64) -> TokenBucket {
        TokenBucket {
            bytes_per_second: bytes_per_second.max(1) as f64,
            tokens: QUANTUM as f64,
            refilled_at: None,
            wait: None,
        }
    }

    /// Ready once `n` (at most [`QUANTUM`]) bytes may be sent, and takes them.
    pub fn poll_take(&mut self, cx: &mut Context<'_>, n: usize) -> Poll<()> {
        let n = n.min(QUANTUM) as f64;
        loop {
            if let Some(wait) = self.wait.as_mut() {
                if wait.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.wait = None;
            }
            let now = Instant::now();
            let last = *self.refilled_at.get_or_insert(now);
            let earned = now.duration_since(last).as_secs_f64() * self.bytes_per_second;
            self.tokens = (self.tokens + earned).min(CAPACITY);
            self.refilled_at = Some(now);
            if self.tokens >= n {
                self.tokens -= n;
                return Poll::Ready(());
            }
            let missing = (n - self.tokens) / self.bytes_per_second;
            self.wait = Some(Box::pin(tokio::time::sleep(Duration::from_secs_f64(
                missing,
            ))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_megabyte_at_four_megabytes_a_second_takes_a_quarter_second() {
        let mut bucket = TokenBucket::new(4 * 1024 * 1024);
        let started = Instant::now();
        let mut sent = 0;
        while sent < 1024 * 1024 {
            std::future::poll_fn(|cx| bucket.poll_take(cx, QUANTUM)).await;
            sent += QUANTUM;
        }
        // The first quantum is free; the other 15 are paced.
        let expected = Duration::from_secs_f64(15.0 / 64.0);
        assert!(started.elapsed() >= expected, "{:?}", started.elapsed());
    }
}
