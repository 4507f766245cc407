//! Read-ahead tickets: a read-ahead request still queued when its reader
//! has moved on is dropped unsent, one file's read-ahead never holds more
//! than its share of the mount's streams, and its requests go out in file
//! order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard, OwnedSemaphorePermit, Semaphore};

/// One open file's read-ahead connections, and its turn to send.
#[derive(Debug)]
pub struct FileStreams {
    permits: Arc<Semaphore>,
    /// Held while one batch of read-ahead requests is being sent, so a
    /// later batch (further ahead) never overtakes an earlier one waiting
    /// for connections. Tokio's mutex is fair: batches go in order.
    send_order: Mutex<()>,
}

impl FileStreams {
    /// At most `streams` read-ahead connections at once for the file.
    pub fn new(streams: usize) -> Arc<Self> {
        Arc::new(FileStreams {
            permits: Arc::new(Semaphore::new(streams.max(1))),
            send_order: Mutex::new(()),
        })
    }
}

/// Issued with each read-ahead request; stale once the reader that asked
/// has moved elsewhere (its stream counter changed).
#[derive(Clone, Debug)]
pub struct ReadAheadTicket {
    stream: Arc<AtomicU64>,
    issued: u64,
    file_streams: Arc<FileStreams>,
}

impl ReadAheadTicket {
    pub fn new(stream: &Arc<AtomicU64>, file_streams: &Arc<FileStreams>) -> Self {
        ReadAheadTicket {
            stream: stream.clone(),
            issued: stream.load(Ordering::Acquire),
            file_streams: file_streams.clone(),
        }
    }

    pub(super) fn is_current(&self) -> bool {
        self.stream.load(Ordering::Acquire) == self.issued
    }

    /// Waits for the file's turn to send a batch of requests.
    pub(super) async fn send_turn(&self) -> MutexGuard<'_, ()> {
        self.file_streams.send_order.lock().await
    }

    /// Waits for one of the file's read-ahead connections.
    pub(super) async fn file_stream(&self) -> Option<OwnedSemaphorePermit> {
        self.file_streams.permits.clone().acquire_owned().await.ok()
    }
}
