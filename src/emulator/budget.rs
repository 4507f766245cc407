//! Per-caller request budgets over a sliding window, for services whose
//! documents give "N requests per hour/minute" limits (fii.one, file.io).
//! 1fichier's flood control, with its lock-out, is [`super::flood`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue};
use axum::response::Response;
use parking_lot::Mutex;

pub struct RequestBudgets {
    window: Duration,
    /// Request times of each caller within the last `window`, oldest first.
    callers: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RequestBudgets {
    pub fn new(window: Duration) -> RequestBudgets {
        RequestBudgets {
            window,
            callers: Mutex::new(HashMap::new()),
        }
    }

    /// Records one request of `caller`; when `limit` requests already fell
    /// within the window, refuses it (nothing recorded) and returns the wait
    /// until the oldest of them leaves the window.
    pub fn spend(&self, caller: &str, limit: u32) -> Option<Duration> {
        let now = Instant::now();
        let mut callers = self.callers.lock();
        let recent = callers.entry(caller.to_string()).or_default();
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            recent.pop_front();
        }
        if recent.len() >= limit as usize {
            let oldest = recent.front().copied().unwrap_or(now);
            return Some(self.window.saturating_sub(now.duration_since(oldest)));
        }
        recent.push_back(now);
        None
    }
}

/// Adds `Retry-After` (whole seconds, at least 1) to a refusal.
pub fn with_retry_after(mut response: Response, wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_until_the_window_slides() {
        let budgets = RequestBudgets::new(Duration::from_millis(300));
        assert_eq!(budgets.spend("a", 2), None);
        assert_eq!(budgets.spend("a", 2), None);
        let wait = budgets.spend("a", 2).expect("third request refused");
        assert!(wait <= Duration::from_millis(300), "{wait:?}");
        assert_eq!(budgets.spend("b", 2), None);
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(budgets.spend("a", 2), None);
    }
}
