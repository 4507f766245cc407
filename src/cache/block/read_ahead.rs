//! Read-ahead tickets: a read-ahead request still queued when its reader
//! has moved on is dropped unsent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Issued with each read-ahead request; stale once the reader that asked
/// has moved elsewhere (its stream counter changed).
#[derive(Clone, Debug)]
pub struct ReadAheadTicket {
    stream: Arc<AtomicU64>,
    issued: u64,
}

impl ReadAheadTicket {
    pub fn new(stream: &Arc<AtomicU64>) -> Self {
        ReadAheadTicket {
            stream: stream.clone(),
            issued: stream.load(Ordering::Acquire),
        }
    }

    pub(super) fn is_current(&self) -> bool {
        self.stream.load(Ordering::Acquire) == self.issued
    }
}
