//! Read-ahead tickets: a read-ahead request still queued when its reader
//! has moved on is dropped unsent, and one file's read-ahead never holds
//! more than its share of the mount's streams.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Issued with each read-ahead request; stale once the reader that asked
/// has moved elsewhere (its stream counter changed).
#[derive(Clone, Debug)]
pub struct ReadAheadTicket {
    stream: Arc<AtomicU64>,
    issued: u64,
    /// The file's own bound on read-ahead connections.
    file_streams: Arc<Semaphore>,
}

impl ReadAheadTicket {
    /// `file_streams` bounds the read-ahead connections of one open file
    /// (one semaphore per file, holding that many permits).
    pub fn new(stream: &Arc<AtomicU64>, file_streams: &Arc<Semaphore>) -> Self {
        ReadAheadTicket {
            stream: stream.clone(),
            issued: stream.load(Ordering::Acquire),
            file_streams: file_streams.clone(),
        }
    }

    pub(super) fn is_current(&self) -> bool {
        self.stream.load(Ordering::Acquire) == self.issued
    }

    /// Waits for one of the file's read-ahead connections.
    pub(super) async fn file_stream(&self) -> Option<OwnedSemaphorePermit> {
        self.file_streams.clone().acquire_owned().await.ok()
    }
}
