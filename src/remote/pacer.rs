//! Request pacing and retries shared by every backend.
//!
//! A [`Pacer`] holds one token bucket for the whole remote plus optional
//! buckets per endpoint class (1fichier allows `user/info` once per five
//! minutes, far below its overall rate). Every request first takes a token
//! from the overall bucket and from its class bucket, so a mount never
//! exceeds what the service tolerates, however many callers are waiting.
//! Callers waiting for a token queue by [`Priority`]: what a reader is
//! blocked on goes before speculative work (read-ahead, background
//! revalidation), which waits at most [`MAX_DEFERRAL`] behind it; within
//! a priority, in arrival order.
//!
//! [`Pacer::run`] wraps one logical operation: it paces each attempt and
//! retries those that fail with a retryable [`RemoteError`] (rate limited or
//! transient), with exponential backoff and jitter, or exactly the wait the
//! server asked for. A server-imposed wait also holds back every other
//! request of this remote, because a flood lock applies to the whole client.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;
use tokio::sync::Notify;
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

/// Token bucket: `capacity` requests back to back, then `rate` per second.
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

    /// How long until a whole token is there (zero: it is there now).
    fn ready_in(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.updated = self.updated.max(now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }

    /// Spends a token [`TokenBucket::ready_in`] said was there.
    fn take(&mut self) {
        self.tokens -= 1.0;
    }
}

/// Who waits on a paced request. When several requests wait for a token,
/// foreground ones get theirs first: the service's few calls per second go
/// to what a reader is blocked on (the first block of a file being probed,
/// a listing `ls` waits for) before speculative work (read-ahead,
/// revalidating a listing that was already answered from the cache).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Someone is blocked until the answer comes (the default).
    Foreground,
    /// Nobody waits on the answer yet.
    Background,
}

tokio::task_local! {
    /// The priority of the requests made by the work running in this scope.
    /// A task-local rather than an argument: who waits is known several
    /// layers above the backend that sends the request (the block cache
    /// knows a fetch is read-ahead), and every backend's pacing honours it
    /// without each operation of the `Remote` trait carrying it.
    static PRIORITY: Priority;
}

/// Runs `work`, its paced requests queued at `priority`.
pub async fn with_priority<F: Future>(priority: Priority, work: F) -> F::Output {
    PRIORITY.scope(priority, work).await
}

/// The priority of requests made here: foreground unless marked otherwise.
pub fn current_priority() -> Priority {
    PRIORITY.try_with(|p| *p).unwrap_or(Priority::Foreground)
}

/// A background request waits at most this long behind foreground ones;
/// then it queues as one of them (by arrival, so before later ones): a
/// long scan delays a revalidation, it does not starve it.
pub const MAX_DEFERRAL: Duration = Duration::from_secs(15);

/// One request waiting for its token.
#[derive(Debug)]
struct Waiter {
    class: &'static str,
    priority: Priority,
    arrived: Instant,
    /// Its tokens are taken; it may send as soon as it runs again.
    granted: bool,
}

impl Waiter {
    fn priority_at(&self, now: Instant) -> Priority {
        if now.saturating_duration_since(self.arrived) >= MAX_DEFERRAL {
            Priority::Foreground
        } else {
            self.priority
        }
    }
}

#[derive(Debug)]
struct PacerState {
    overall: TokenBucket,
    classes: HashMap<&'static str, TokenBucket>,
    /// Nobody sends before this instant (set from a server's wait request).
    paused_until: Option<Instant>,
    /// Requests waiting for a token (or granted one and not yet running),
    /// by arrival number.
    queue: BTreeMap<u64, Waiter>,
    next_arrival: u64,
}

/// What one [`PacerState::dispatch`] did.
#[derive(Debug, PartialEq)]
struct Dispatched {
    /// Waiters granted their tokens.
    granted: usize,
    /// How long until a waiter left could be granted one; `None` when no
    /// waiter is left without one.
    next_in: Option<Duration>,
}

impl PacerState {
    fn new(config: &PacerConfig, now: Instant) -> Self {
        PacerState {
            overall: TokenBucket::new(config.rate_per_sec, config.burst, now),
            classes: HashMap::new(),
            paused_until: None,
            queue: BTreeMap::new(),
            next_arrival: 0,
        }
    }

    fn enqueue(&mut self, class: &'static str, priority: Priority, now: Instant) -> u64 {
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        self.queue.insert(
            arrival,
            Waiter {
                class,
                priority,
                arrived: now,
                granted: false,
            },
        );
        arrival
    }

    /// Hands out the tokens there are at `now`, one at a time, each to the
    /// waiter first in line among those whose class limit allows a request:
    /// foreground before background, then by arrival.
    fn dispatch(&mut self, now: Instant, limits: &HashMap<&'static str, ClassLimit>) -> Dispatched {
        let mut granted = 0;
        let ungranted = |queue: &BTreeMap<u64, Waiter>| queue.values().any(|w| !w.granted);
        if let Some(until) = self.paused_until {
            if now < until {
                let next_in = ungranted(&self.queue).then(|| until - now);
                return Dispatched { granted, next_in };
            }
            self.paused_until = None;
        }
        let PacerState {
            overall,
            classes,
            queue,
            ..
        } = self;
        loop {
            let mut first: Option<((Priority, u64), u64)> = None;
            let mut class_ready_in: Option<Duration> = None;
            for (&arrival, waiter) in queue.iter().filter(|(_, w)| !w.granted) {
                let class_wait = match limits.get(waiter.class) {
                    Some(limit) => classes
                        .entry(waiter.class)
                        .or_insert_with(|| TokenBucket::new(limit.rate_per_sec, limit.burst, now))
                        .ready_in(now),
                    None => Duration::ZERO,
                };
                if class_wait.is_zero() {
                    let place = (waiter.priority_at(now), arrival);
                    if first.is_none_or(|(best, _)| place < best) {
                        first = Some((place, arrival));
                    }
                } else {
                    class_ready_in = Some(class_ready_in.map_or(class_wait, |d| d.min(class_wait)));
                }
            }
            let Some((_, arrival)) = first else {
                return Dispatched {
                    granted,
                    next_in: class_ready_in,
                };
            };
            let overall_wait = overall.ready_in(now);
            if !overall_wait.is_zero() {
                return Dispatched {
                    granted,
                    next_in: Some(overall_wait),
                };
            }
            overall.take();
            let waiter = queue.get_mut(&arrival).expect("picked from the queue");
            if let Some(bucket) = classes.get_mut(waiter.class) {
                bucket.take();
            }
            waiter.granted = true;
            granted += 1;
        }
    }
}

/// Paces and retries the requests of one remote. Share it (it is `Sync`);
/// one pacer per remote, never one per request.
#[derive(Debug)]
pub struct Pacer {
    config: PacerConfig,
    class_limits: HashMap<&'static str, ClassLimit>,
    state: Mutex<PacerState>,
    /// Woken whenever tokens are handed out or the queue changes.
    changed: Notify,
    /// Requests waiting for a token right now.
    waiting: AtomicU64,
    /// Where waits are reported, once the mount hands its counters over.
    counters: OnceLock<Arc<Counters>>,
}

/// A request's place in the queue; leaving it (granted, or cancelled while
/// waiting) takes the request out.
struct Place<'a> {
    pacer: &'a Pacer,
    arrival: u64,
    /// Counted in `waiting`.
    held_back: bool,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let removed = self.pacer.state.lock().queue.remove(&self.arrival);
        if self.held_back {
            self.pacer.waiting.fetch_sub(1, Ordering::Relaxed);
        }
        if removed.is_some_and(|waiter| !waiter.granted) {
            // It may have been first in line: the others look again.
            self.pacer.changed.notify_waiters();
        }
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
        Pacer {
            state: Mutex::new(PacerState::new(&config, Instant::now())),
            config,
            class_limits: HashMap::new(),
            changed: Notify::new(),
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

    /// Waits until one request of `class` may be sent. Waiting requests
    /// are served foreground first (see [`Priority`]), then in arrival order.
    pub async fn acquire(&self, class: &'static str) {
        let priority = current_priority();
        let arrived = Instant::now();
        let arrival = self.state.lock().enqueue(class, priority, arrived);
        let mut place = Place {
            pacer: self,
            arrival,
            held_back: false,
        };
        loop {
            // Registered before looking, so a grant made meanwhile wakes us.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (dispatched, granted, granted_now) = {
                let mut state = self.state.lock();
                let is_granted =
                    |state: &PacerState| state.queue.get(&arrival).is_some_and(|w| w.granted);
                let before = is_granted(&state);
                let dispatched = state.dispatch(Instant::now(), &self.class_limits);
                let granted = is_granted(&state);
                (dispatched, granted, granted && !before)
            };
            if dispatched.granted > usize::from(granted_now) {
                // Tokens went to other waiters too: wake them.
                self.changed.notify_waiters();
            }
            if granted {
                break;
            }
            if !place.held_back {
                place.held_back = true;
                self.waiting.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(class, ?priority, "pacer: waiting for a token");
            }
            match dispatched.next_in {
                Some(wait) => {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = changed => {}
                    }
                }
                None => changed.await,
            }
        }
        if place.held_back {
            if let Some(counters) = self.counters.get() {
                counters.pacer_wait(arrived.elapsed());
            }
        }
        drop(place);
    }

    /// Holds back every request of this remote for `wait`.
    fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut state = self.state.lock();
        if state.paused_until.is_none_or(|current| current < until) {
            state.paused_until = Some(until);
        }
        drop(state);
        self.changed.notify_waiters();
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
            assert_eq!(bucket.ready_in(t0), Duration::ZERO);
            bucket.take();
        }
        let w4 = bucket.ready_in(t0);
        assert!((w4.as_secs_f64() - 0.5).abs() < 1e-9, "{w4:?}");
        let half_second = t0 + Duration::from_millis(500);
        assert_eq!(bucket.ready_in(half_second), Duration::ZERO);
        bucket.take();
        let w5 = bucket.ready_in(half_second);
        assert!((w5.as_secs_f64() - 0.5).abs() < 1e-9, "{w5:?}");
        // After a long idle period the bucket is full again, not fuller.
        let later = t0 + Duration::from_secs(100);
        for _ in 0..3 {
            assert_eq!(bucket.ready_in(later), Duration::ZERO);
            bucket.take();
        }
        assert!(bucket.ready_in(later) > Duration::ZERO);
    }

    #[test]
    fn once_per_interval_class() {
        let limit = ClassLimit::once_per(Duration::from_secs(300));
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(limit.rate_per_sec, limit.burst, t0);
        assert_eq!(bucket.ready_in(t0), Duration::ZERO);
        bucket.take();
        let wait = bucket.ready_in(t0 + Duration::from_secs(100));
        assert!((wait.as_secs_f64() - 200.0).abs() < 1e-6, "{wait:?}");
    }

    fn one_per_second() -> PacerConfig {
        PacerConfig {
            rate_per_sec: 1.0,
            burst: 1,
            ..PacerConfig::default()
        }
    }

    /// Dispatches at `at` and returns who got a token then.
    fn granted_at(
        state: &mut PacerState,
        at: Instant,
        limits: &HashMap<&'static str, ClassLimit>,
        names: &HashMap<u64, &'static str>,
    ) -> Vec<&'static str> {
        let before: Vec<u64> = state
            .queue
            .iter()
            .filter(|(_, w)| w.granted)
            .map(|(a, _)| *a)
            .collect();
        state.dispatch(at, limits);
        let granted: Vec<&'static str> = state
            .queue
            .iter()
            .filter(|(a, w)| w.granted && !before.contains(a))
            .map(|(a, _)| names[a])
            .collect();
        state.queue.retain(|_, w| !w.granted);
        granted
    }

    #[test]
    fn waiting_foreground_requests_get_tokens_before_background_ones() {
        let t0 = Instant::now();
        let mut state = PacerState::new(&one_per_second(), t0);
        let limits = HashMap::new();
        let mut names = HashMap::new();
        // The bucket's one token goes at once.
        names.insert(state.enqueue("api", Priority::Foreground, t0), "first");
        assert_eq!(granted_at(&mut state, t0, &limits, &names), ["first"]);
        // Read-ahead queued before two probes waits behind them.
        names.insert(state.enqueue("api", Priority::Background, t0), "ahead-1");
        names.insert(state.enqueue("api", Priority::Background, t0), "ahead-2");
        names.insert(state.enqueue("api", Priority::Foreground, t0), "probe-1");
        names.insert(state.enqueue("api", Priority::Foreground, t0), "probe-2");
        let nothing_yet = state.dispatch(t0, &limits);
        assert_eq!(nothing_yet.granted, 0);
        assert_eq!(nothing_yet.next_in, Some(Duration::from_secs(1)));
        let order: Vec<_> = (1..=4)
            .flat_map(|s| granted_at(&mut state, t0 + Duration::from_secs(s), &limits, &names))
            .collect();
        assert_eq!(order, ["probe-1", "probe-2", "ahead-1", "ahead-2"]);
        assert_eq!(
            state.dispatch(t0 + Duration::from_secs(5), &limits).next_in,
            None
        );
    }

    #[test]
    fn a_background_request_waits_at_most_the_deferral_bound() {
        let t0 = Instant::now();
        let mut state = PacerState::new(&one_per_second(), t0);
        let limits = HashMap::new();
        let mut names = HashMap::new();
        names.insert(state.enqueue("api", Priority::Foreground, t0), "first");
        granted_at(&mut state, t0, &limits, &names);
        names.insert(
            state.enqueue("api", Priority::Background, t0),
            "revalidation",
        );
        // A new probe arrives every second, as fast as the tokens come.
        let mut served_at = None;
        for second in 1..=30u64 {
            let arrival = t0 + Duration::from_millis(second * 1000 - 500);
            names.insert(state.enqueue("api", Priority::Foreground, arrival), "probe");
            let now = t0 + Duration::from_secs(second);
            if granted_at(&mut state, now, &limits, &names).contains(&"revalidation") {
                served_at = Some(now - t0);
                break;
            }
        }
        assert_eq!(served_at, Some(MAX_DEFERRAL));
    }

    #[test]
    fn a_request_held_by_its_class_limit_does_not_hold_up_others() {
        let t0 = Instant::now();
        let mut state = PacerState::new(&one_per_second(), t0);
        let mut limits = HashMap::new();
        limits.insert("info", ClassLimit::once_per(Duration::from_secs(300)));
        let mut names = HashMap::new();
        names.insert(state.enqueue("info", Priority::Foreground, t0), "info-1");
        assert_eq!(granted_at(&mut state, t0, &limits, &names), ["info-1"]);
        names.insert(state.enqueue("info", Priority::Foreground, t0), "info-2");
        names.insert(state.enqueue("api", Priority::Background, t0), "list");
        let one = t0 + Duration::from_secs(1);
        assert_eq!(granted_at(&mut state, one, &limits, &names), ["list"]);
        let left = state.dispatch(one, &limits).next_in.expect("info-2 waits");
        assert!((left.as_secs_f64() - 299.0).abs() < 1e-3, "{left:?}");
        let later = t0 + Duration::from_secs(301);
        assert_eq!(granted_at(&mut state, later, &limits, &names), ["info-2"]);
    }

    #[test]
    fn nothing_is_granted_while_the_server_asked_to_wait() {
        let t0 = Instant::now();
        let mut state = PacerState::new(&one_per_second(), t0);
        let limits = HashMap::new();
        let mut names = HashMap::new();
        state.paused_until = Some(t0 + Duration::from_secs(30));
        names.insert(state.enqueue("api", Priority::Foreground, t0), "probe");
        let paused = state.dispatch(t0 + Duration::from_secs(10), &limits);
        assert_eq!(
            (paused.granted, paused.next_in),
            (0, Some(Duration::from_secs(20)))
        );
        let end = t0 + Duration::from_secs(30);
        assert_eq!(granted_at(&mut state, end, &limits, &names), ["probe"]);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_waiting_in_the_pacer_are_served_foreground_first() {
        let pacer = Arc::new(Pacer::new(PacerConfig {
            rate_per_sec: 5.0,
            burst: 1,
            ..PacerConfig::default()
        }));
        // Held back (as by a flood answer) until every request is queued.
        pacer.state.lock().paused_until = Some(Instant::now() + Duration::from_secs(3600));
        let queued = |n: u64| {
            let pacer = pacer.clone();
            async move {
                for _ in 0..2000 {
                    if pacer.waiting() == n {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                panic!("{n} requests never queued");
            }
        };
        let order = Arc::new(Mutex::new(Vec::new()));
        let request = |priority: Priority, name: &'static str| {
            let (pacer, order) = (pacer.clone(), order.clone());
            tokio::spawn(with_priority(priority, async move {
                pacer.acquire("api").await;
                order.lock().push(name);
            }))
        };
        // A request given up while it waits leaves no hole in the line.
        let abandoned = request(Priority::Foreground, "abandoned");
        queued(1).await;
        abandoned.abort();
        queued(0).await;
        // Queued one after the other, so their arrival order is known.
        let mut tasks = Vec::new();
        for (n, (priority, name)) in [
            (Priority::Background, "read-ahead"),
            (Priority::Background, "revalidation"),
            (Priority::Foreground, "probe-1"),
            (Priority::Foreground, "probe-2"),
        ]
        .into_iter()
        .enumerate()
        {
            tasks.push(request(priority, name));
            queued(n as u64 + 1).await;
        }
        pacer.state.lock().paused_until = None;
        pacer.changed.notify_waiters();
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("served")
                .unwrap();
        }
        assert_eq!(
            *order.lock(),
            ["probe-1", "probe-2", "read-ahead", "revalidation"]
        );
        assert_eq!(pacer.waiting(), 0);
    }
}
