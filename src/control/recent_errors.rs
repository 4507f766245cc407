//! The last few errors, kept for the status page instead of only the log.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// One error a layer reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentError {
    pub at: DateTime<Utc>,
    /// Which part reported it: `remote`, `cache`, `upload`, ...
    pub source: String,
    /// The file concerned, when there is one.
    pub path: Option<String>,
    pub message: String,
}

/// A bounded list of recent errors, newest last. Errors are rare, so a lock
/// is fine here (unlike [`super::Counters`]).
#[derive(Debug)]
pub struct RecentErrors {
    capacity: usize,
    errors: Mutex<VecDeque<RecentError>>,
}

impl RecentErrors {
    /// Keeps at most `capacity` errors (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        RecentErrors {
            capacity,
            errors: Mutex::new(VecDeque::with_capacity(capacity)),
        }
    }

    /// Records an error now, dropping the oldest when full.
    pub fn push(&self, source: &str, path: Option<&str>, message: impl Into<String>) {
        self.push_error(RecentError {
            at: Utc::now(),
            source: source.to_string(),
            path: path.map(str::to_string),
            message: message.into(),
        });
    }

    pub fn push_error(&self, error: RecentError) {
        let mut errors = self.errors.lock();
        if errors.len() == self.capacity {
            errors.pop_front();
        }
        errors.push_back(error);
    }

    /// The kept errors, oldest first.
    pub fn list(&self) -> Vec<RecentError> {
        self.errors.lock().iter().cloned().collect()
    }
}

impl Default for RecentErrors {
    fn default() -> Self {
        RecentErrors::new(50)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_up_to_capacity() {
        let errors = RecentErrors::new(3);
        for i in 0..5 {
            errors.push("remote", Some("a"), format!("e{i}"));
        }
        let messages: Vec<_> = errors.list().into_iter().map(|e| e.message).collect();
        assert_eq!(messages, ["e2", "e3", "e4"]);
    }
}
