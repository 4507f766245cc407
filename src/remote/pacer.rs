//! Request pacing and retries shared by every backend.
//!
//! A [`Pacer`] holds one token bucket for the whole remote plus optional
//! buckets per endpoint class (1fichier allows `user/info` once per five
//! minutes, far below its overall rate). Every request first takes a token
//! from the overall bucket and from its class bucket, so a mount never
//! exceeds what the service tolerates, however many callers are waiting.
//!
//! [`Pacer::run`] wraps one logical operation: it paces each attempt and
//! retries those that fail with a retryable [`RemoteError`] (rate limited or
//! transient), with exponential backoff and jitter, or exactly the wait the
//! server asked for. A server-imposed wait also holds back every other
//! request of this remote, because a flood lock applies to the whole client.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;
use tokio::time::Instant;

use super::error::{RemoteError, RemoteResult};
use crate::control::Counters;

/// Rate and retry settings of one remote.
#[derive(Clone, Debug, PartialEq)]
pub struct PacerConfig {
    /// Sustained requests per second over all endpoints.
    pub rate_per_sec: f64,
    /// Requests that may be made back to back before pacing starts.
    pub burst: u32,
    /// Attempts per operation, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled after every further failure.
    pub initial_backoff: Duration,
    /// Upper bound of the exponential backoff.
    pub max_backoff: Duration,
    /// A server asking to wait longer than this is not retried: the error is
    /// returned instead (a one-hour IP lock should not hang a command).
    pub max_server_wait: Duration,
}

impl Default for PacerConfig {
    fn default() -> Self {
        PacerConfig {
            // 1fichier asks for about 3 requests/s. A bucket of one token at
            // 2/s never puts more than 3 requests in any one-second window,
            // whatever window the service measures.
            rate_per_sec: 2.0,
            burst: 1,
            max_attempts: 6,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            max_server_wait: Duration::from_secs(120),
        }
    }
}

/// A limit for one class of endpoint, on top of the overall one.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassLimit {
    pub rate_per_sec: f64,
    pub burst: u32,
}

impl ClassLimit {
    /// At most one request per `interval`.
    pub fn once_per(interval: Duration) -> Self {
        ClassLimit {
            rate_per_sec: 1.0 / interval.as_secs_f64().max(1e-3),
            burst: 1,
        }
    }
}

/// Token bucket with reservations: callers that find it empty take a token
/// "on credit" and are told how long to wait, so waiting callers are served
/// in arrival order and the long-run rate never exceeds `rate`.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    fn new(rate_per_sec: f64, burst: u32, now: Instant) -> Self {
        let capacity = f64::from(burst.max(1));
        TokenBucket {
            rate: rate_per_sec.max(1e-6),
            capacity,
            tokens: capacity,
            updated: now,
        }
    }

    /// Takes one token; returns how long the caller must wait before using it.
    fn reserve(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.updated = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[derive(Debug)]
struct PacerState {
    overall: TokenBucket,
    classes: HashMap<&'static str, TokenBucket>,
    /// Nobody sends before this instant (set from a server's wait request).
    paused_until: Option<Instant>,
}

/// Paces and retries the requests of one remote. Share it (it is `Sync`);
/// one pacer per remote, never one per request.
#[derive(Debug)]
pub struct Pacer {
    config: PacerConfig,
    class_limits: HashMap<&'static str, ClassLimit>,
    state: Mutex<PacerState>,
    /// Requests waiting for a token right now.
    waiting: AtomicU64,
    /// Where waits are reported, once the mount hands its counters over.
    counters: OnceLock<Arc<Counters>>,
}

/// Counts one request as waiting for as long as it lives.
struct WaitingGuard<'a>(&'a AtomicU64);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How an operation may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Safe to repeat (reads, and writes whose repetition is harmless or
    /// whose source can be re-read).
    Idempotent,
    /// Paced, but tried only once (e.g. an upload from a one-shot stream).
    Once,
}

impl Pacer {
    pub fn new(config: PacerConfig) -> Self {
        let now = Instant::now();
        Pacer {
            state: Mutex::new(PacerState {
                overall: TokenBucket::new(config.rate_per_sec, config.burst, now),
                classes: HashMap::new(),
                paused_until: None,
            }),
            config,
            class_limits: HashMap::new(),
            waiting: AtomicU64::new(0),
            counters: OnceLock::new(),
        }
    }

    /// Adds a stricter limit for requests of `class`.
    pub fn with_class_limit(mut self, class: &'static str, limit: ClassLimit) -> Self {
        self.class_limits.insert(class, limit);
        self
    }

    pub fn config(&self) -> &PacerConfig {
        &self.config
    }

    /// Reports every wait to the mount's counters from now on (the first
    /// call wins).
    pub fn report_to(&self, counters: Arc<Counters>) {
        let _ = self.counters.set(counters);
    }

    /// Requests held back by the pacer at this moment.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The most requests the overall rate lets through in an hour.
    pub fn hourly_budget(&self) -> u64 {
        (self.config.rate_per_sec * 3600.0).floor() as u64
    }

    /// Waits until one request of `class` may be sent.
    pub async fn acquire(&self, class: &'static str) {
        let wait = {
            let now = Instant::now();
            let mut state = self.state.lock();
            let pause = state
                .paused_until
                .map(|until| until.saturating_duration_since(now))
                .unwrap_or_default();
            // Tokens are reserved for the moment the pause ends, so the
            // requests queued behind a flood lock do not burst out together.
            let start = now + pause;
            let mut wait = pause + state.overall.reserve(start);
            if let Some(limit) = self.class_limits.get(class) {
                let bucket = state
                    .classes
                    .entry(class)
                    .or_insert_with(|| TokenBucket::new(limit.rate_per_sec, limit.burst, now));
                wait = wait.max(pause + bucket.reserve(start));
            }
            wait
        };
        if !wait.is_zero() {
            tracing::trace!(class, ?wait, "pacer: waiting for a token");
            self.waiting.fetch_add(1, Ordering::Relaxed);
            // Counted down even when the waiting request is cancelled.
            let _waiting = WaitingGuard(&self.waiting);
            tokio::time::sleep(wait).await;
            if let Some(counters) = self.counters.get() {
                counters.pacer_wait(wait);
            }
        }
    }

    /// Holds back every request of this remote for `wait`.
    fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut state = self.state.lock();
        if state.paused_until.is_none_or(|current| current < until) {
            state.paused_until = Some(until);
        }
    }

    /// The backoff before retry number `retry` (1 = first retry), with jitter
    /// in [50 %, 100 %] of the exponential value so that clients that failed
    /// together do not retry together.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .config
            .initial_backoff
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20));
        let capped = exp.min(self.config.max_backoff);
        let factor = rand::thread_rng().gen_range(0.5..=1.0);
        capped.mul_f64(factor)
    }

    /// Runs `attempt` (paced, as a request of `class`) until it succeeds, it
    /// fails with an error that is not retryable, or the attempts run out.
    pub async fn run<T, F, Fut>(
        &self,
        class: &'static str,
        retry: Retry,
        mut attempt: F,
    ) -> RemoteResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = RemoteResult<T>>,
    {
        let max_attempts = match retry {
            Retry::Idempotent => self.config.max_attempts.max(1),
            Retry::Once => 1,
        };
        let mut tries = 0u32;
        loop {
            self.acquire(class).await;
            tries += 1;
            let err = match attempt().await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if !err.is_retryable() || tries >= max_attempts {
                if err.is_retryable() && tries > 1 {
                    return Err(gave_up(err, tries));
                }
                return Err(err);
            }
            let wait = match &err {
                RemoteError::RateLimited {
                    wait: Some(hint), ..
                } => {
                    if *hint > self.config.max_server_wait {
                        tracing::warn!(
                            class,
                            ?hint,
                            "the service asks for a long wait; not retrying"
                        );
                        return Err(err);
                    }
                    self.pause_for(*hint);
                    *hint
                }
                _ => self.backoff(tries),
            };
            tracing::debug!(class, attempt = tries, ?wait, error = %err, "retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

/// The error of the last attempt, saying how many were made.
fn gave_up(err: RemoteError, tries: u32) -> RemoteError {
    let note = |m: String| format!("{m} (gave up after {tries} attempts)");
    match err {
        RemoteError::RateLimited { wait, message } => RemoteError::RateLimited {
            wait,
            message: note(message),
        },
        RemoteError::Transient(m) => RemoteError::Transient(note(m)),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn bucket_allows_burst_then_paces() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(2.0, 3, t0);
        for _ in 0..3 {
            assert_eq!(bucket.reserve(t0), Duration::ZERO);
        }
        let w4 = bucket.reserve(t0);
        let w5 = bucket.reserve(t0);
        assert!((w4.as_secs_f64() - 0.5).abs() < 1e-9, "{w4:?}");
        assert!((w5.as_secs_f64() - 1.0).abs() < 1e-9, "{w5:?}");
        // After a long idle period the bucket is full again, not fuller.
        let later = t0 + Duration::from_secs(100);
        for _ in 0..3 {
            assert_eq!(bucket.reserve(later), Duration::ZERO);
        }
        assert!(bucket.reserve(later) > Duration::ZERO);
    }

    #[test]
    fn once_per_interval_class() {
        let limit = ClassLimit::once_per(Duration::from_secs(300));
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(limit.rate_per_sec, limit.burst, t0);
        assert_eq!(bucket.reserve(t0), Duration::ZERO);
        let wait = bucket.reserve(t0 + Duration::from_secs(100));
        assert!((wait.as_secs_f64() - 200.0).abs() < 1e-6, "{wait:?}");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let pacer = Pacer::new(PacerConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            ..PacerConfig::default()
        });
        for retry in 1..10 {
            let b = pacer.backoff(retry);
            let full =
                Duration::from_millis(100 * (1 << (retry - 1))).min(Duration::from_millis(1000));
            assert!(
                b <= full && b >= full / 2,
                "retry {retry}: {b:?} vs {full:?}"
            );
        }
    }

    fn fast_config() -> PacerConfig {
        PacerConfig {
            rate_per_sec: 1000.0,
            burst: 10,
            max_attempts: 4,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            max_server_wait: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn retries_transient_errors_until_success() {
        let pacer = Pacer::new(fast_config());
        let calls = AtomicU32::new(0);
        let out = pacer
            .run("x", Retry::Idempotent, || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(RemoteError::Transient("503".into()))
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(out.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn attempts_are_bounded() {
        let pacer = Pacer::new(fast_config());
        let calls = AtomicU32::new(0);
        let out: RemoteResult<()> = pacer
            .run("x", Retry::Idempotent, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(RemoteError::Transient("502".into()))
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        let msg = out.unwrap_err().to_string();
        assert!(msg.contains("gave up after 4 attempts"), "{msg}");
    }

    #[tokio::test]
    async fn fatal_errors_and_one_shot_operations_are_not_retried() {
        let pacer = Pacer::new(fast_config());
        let calls = AtomicU32::new(0);
        let out: RemoteResult<()> = pacer
            .run("x", Retry::Idempotent, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(RemoteError::Fatal("No such user #93".into()))
            })
            .await;
        assert!(matches!(out, Err(RemoteError::Fatal(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let out: RemoteResult<()> = pacer
            .run("x", Retry::Once, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(RemoteError::Transient("reset".into()))
            })
            .await;
        assert!(matches!(out, Err(RemoteError::Transient(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn server_wait_hint_is_honoured_and_too_long_hints_give_up() {
        let pacer = Pacer::new(fast_config());
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let out = pacer
            .run("x", Retry::Idempotent, || async {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(RemoteError::RateLimited {
                        wait: Some(Duration::from_millis(700)),
                        message: "Flood detected #374".into(),
                    })
                } else {
                    Ok(())
                }
            })
            .await;
        assert!(out.is_ok());
        assert!(started.elapsed() >= Duration::from_millis(700));

        let out: RemoteResult<()> = pacer
            .run("x", Retry::Idempotent, || async {
                Err(RemoteError::RateLimited {
                    wait: Some(Duration::from_secs(3600)),
                    message: "IP Locked".into(),
                })
            })
            .await;
        assert!(matches!(out, Err(RemoteError::RateLimited { .. })));
    }

    #[tokio::test]
    async fn acquire_respects_overall_and_class_rates() {
        let pacer = Pacer::new(PacerConfig {
            rate_per_sec: 40.0,
            burst: 1,
            ..PacerConfig::default()
        })
        .with_class_limit("info", ClassLimit::once_per(Duration::from_millis(400)));
        let t0 = Instant::now();
        for _ in 0..9 {
            pacer.acquire("ls").await;
        }
        // 1 immediate + 8 at 40/s.
        assert!(t0.elapsed() >= Duration::from_millis(200));
        let t1 = Instant::now();
        pacer.acquire("info").await;
        pacer.acquire("info").await;
        assert!(t1.elapsed() >= Duration::from_millis(400));
    }
}
