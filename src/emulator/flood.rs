//! Flood control modelled on 1fichier's: a per-caller request rate (about 3
//! requests/s), slower per-endpoint limits, and a lock period once a caller
//! has flooded, during which every call is refused.
//!
//! A caller is its API key when it sends one, else its IP address.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

#[derive(Clone, Debug)]
pub struct FloodSettings {
    pub enabled: bool,
    /// Calls allowed per caller in any one-second window.
    pub requests_per_second: u32,
    /// Refusals last this long after a caller exceeded the rate.
    pub lock: Duration,
}

/// Why a call was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum FloodVerdict {
    Allowed,
    /// Over the general rate, or still locked from an earlier flood.
    Locked,
    /// A per-endpoint limit (e.g. user/info once per 5 minutes).
    EndpointLimited,
}

#[derive(Default)]
struct CallerState {
    /// Times of the calls in the last second, oldest first.
    recent: std::collections::VecDeque<Instant>,
    locked_until: Option<Instant>,
    /// Last accepted call per limited endpoint.
    endpoint_last: HashMap<&'static str, Instant>,
}

pub struct Flood {
    settings: FloodSettings,
    callers: Mutex<HashMap<String, CallerState>>,
}

/// Bounds memory if many distinct callers appear (each is small; old ones
/// are dropped when the table grows past this).
const MAX_CALLERS: usize = 10_000;

impl Flood {
    pub fn new(settings: FloodSettings) -> Flood {
        Flood {
            settings,
            callers: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// Records a call by `caller` and says whether it may proceed.
    /// `endpoint_limit` names a per-endpoint limit and its minimum interval.
    pub fn check(
        &self,
        caller: &str,
        endpoint_limit: Option<(&'static str, Duration)>,
    ) -> FloodVerdict {
        if !self.settings.enabled {
            return FloodVerdict::Allowed;
        }
        let now = Instant::now();
        let mut callers = self.callers.lock();
        if callers.len() > MAX_CALLERS {
            callers.retain(|_, state| {
                state.locked_until.is_some_and(|t| t > now)
                    || state
                        .recent
                        .back()
                        .is_some_and(|t| now - *t < Duration::from_secs(3600))
            });
        }
        let state = callers.entry(caller.to_string()).or_default();
        if let Some(until) = state.locked_until {
            if now < until {
                return FloodVerdict::Locked;
            }
            state.locked_until = None;
        }
        while state
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            state.recent.pop_front();
        }
        if state.recent.len() >= self.settings.requests_per_second as usize {
            if !self.settings.lock.is_zero() {
                state.locked_until = Some(now + self.settings.lock);
            }
            return FloodVerdict::Locked;
        }
        state.recent.push_back(now);
        match endpoint_limit {
            Some(limit) => Self::check_interval(state, limit, now),
            None => FloodVerdict::Allowed,
        }
    }

    /// Applies only a per-endpoint interval (for limits that depend on the
    /// request body, checked after [`Flood::check`] counted the call).
    pub fn check_endpoint(&self, caller: &str, limit: (&'static str, Duration)) -> FloodVerdict {
        if !self.settings.enabled {
            return FloodVerdict::Allowed;
        }
        let mut callers = self.callers.lock();
        let state = callers.entry(caller.to_string()).or_default();
        Self::check_interval(state, limit, Instant::now())
    }

    fn check_interval(
        state: &mut CallerState,
        (name, interval): (&'static str, Duration),
        now: Instant,
    ) -> FloodVerdict {
        if let Some(last) = state.endpoint_last.get(name) {
            if now.duration_since(*last) < interval {
                return FloodVerdict::EndpointLimited;
            }
        }
        state.endpoint_last.insert(name, now);
        FloodVerdict::Allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flood(lock: Duration) -> Flood {
        Flood::new(FloodSettings {
            enabled: true,
            requests_per_second: 3,
            lock,
        })
    }

    #[test]
    fn fourth_call_in_a_second_is_refused_and_locks() {
        let f = flood(Duration::from_secs(60));
        for _ in 0..3 {
            assert_eq!(f.check("k", None), FloodVerdict::Allowed);
        }
        assert_eq!(f.check("k", None), FloodVerdict::Locked);
        assert_eq!(f.check("other", None), FloodVerdict::Allowed);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(f.check("k", None), FloodVerdict::Locked);
    }

    #[test]
    fn endpoint_interval() {
        let f = flood(Duration::ZERO);
        let limit = Some(("user/info", Duration::from_secs(300)));
        assert_eq!(f.check("k", limit), FloodVerdict::Allowed);
        assert_eq!(f.check("k", limit), FloodVerdict::EndpointLimited);
        assert_eq!(f.check("k", None), FloodVerdict::Allowed);
    }

    #[test]
    fn disabled_allows_everything() {
        let f = Flood::new(FloodSettings {
            enabled: false,
            requests_per_second: 1,
            lock: Duration::from_secs(1),
        });
        for _ in 0..100 {
            assert_eq!(f.check("k", None), FloodVerdict::Allowed);
        }
    }
}
