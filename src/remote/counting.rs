//! A `Remote` wrapper that reports every operation to the mount's activity
//! counters: requests by kind, failures (also kept as recent errors), file
//! bytes received and sent, and the requests of the last hour that the
//! pacer's budget is measured against.
//!
//! A wrapper instead of a counter in each service: every service and every
//! caller (kernel reads, uploads, refreshes) is counted the same way, and
//! one operation counts once however many HTTP attempts its retries took.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;

use super::layer::{Answer, Call, RemoteLayer};
use super::{ByteStream, Remote, RemoteError, RemoteResult};
use crate::control::{Counters, RecentErrors, RequestKind};

/// Requests are counted per minute for the hourly total.
const BUCKET: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// Counts the operations of the wrapped remote.
pub struct CountingRemote {
    inner: Arc<dyn Remote>,
    counters: Arc<Counters>,
    errors: Arc<RecentErrors>,
    /// Requests per minute over the last hour, oldest first (at most 61).
    minutes: Mutex<VecDeque<(Instant, u64)>>,
}

impl CountingRemote {
    pub fn new(inner: Arc<dyn Remote>, counters: Arc<Counters>, errors: Arc<RecentErrors>) -> Self {
        if let Some(pacer) = inner.pacer() {
            pacer.report_to(counters.clone());
        }
        CountingRemote {
            inner,
            counters,
            errors,
            minutes: Mutex::new(VecDeque::new()),
        }
    }

    /// Requests sent in the last hour.
    pub fn requests_last_hour(&self) -> u64 {
        let mut minutes = self.minutes.lock();
        prune(&mut minutes, Instant::now());
        minutes.iter().map(|(_, count)| count).sum()
    }

    fn count(&self, kind: RequestKind) {
        self.counters.count_request(kind);
        let now = Instant::now();
        let mut minutes = self.minutes.lock();
        prune(&mut minutes, now);
        match minutes.back_mut() {
            Some((start, count)) if now.duration_since(*start) < BUCKET => *count += 1,
            _ => minutes.push_back((now, 1)),
        }
    }

    /// Counts a failed operation and keeps it for the status page, unless
    /// it is an answer its callers expect.
    fn failed(&self, call: &Call<'_>, error: &RemoteError) {
        self.counters.count_request_error();
        if !is_expected(call, error) {
            self.errors
                .push("remote", None, format!("{} failed: {error}", what(call)));
        }
    }
}

fn prune(minutes: &mut VecDeque<(Instant, u64)>, now: Instant) {
    while minutes
        .front()
        .is_some_and(|(start, _)| now.duration_since(*start) >= HOUR)
    {
        minutes.pop_front();
    }
}

impl RemoteLayer for CountingRemote {
    type Ticket = ();

    fn inner(&self) -> &dyn Remote {
        &*self.inner
    }

    fn before(&self, call: &Call<'_>) -> RemoteResult<()> {
        self.count(kind_of(call));
        Ok(())
    }

    fn after(&self, call: &Call<'_>, (): (), outcome: Result<Answer<'_>, &RemoteError>) {
        match outcome {
            Ok(Answer::File(file)) if matches!(call, Call::Upload { .. }) => {
                self.counters.add_upload(file.size);
            }
            Ok(_) => {}
            Err(error) => self.failed(call, error),
        }
    }

    fn received(&self, stream: ByteStream) -> ByteStream {
        let counters = self.counters.clone();
        Box::pin(stream.inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                counters.add_remote_read(bytes.len() as u64);
            }
        }))
    }
}

/// Which counter a call goes to.
fn kind_of(call: &Call<'_>) -> RequestKind {
    match call {
        Call::List { .. } => RequestKind::List,
        Call::Stat { .. } | Call::About => RequestKind::Info,
        Call::CreateFolder { .. } => RequestKind::Mkdir,
        Call::RemoveFolder { .. } | Call::RemoveFile { .. } => RequestKind::Delete,
        Call::RenameFile { .. }
        | Call::MoveFile { .. }
        | Call::RenameFolder { .. }
        | Call::MoveFolder { .. } => RequestKind::Rename,
        Call::Upload { .. } => RequestKind::Upload,
        Call::DirectLink { .. } | Call::Download { .. } => RequestKind::Download,
    }
}

/// Whether a failure is an answer every caller expects rather than a fault
/// worth showing: removing what is already gone reached its goal (unlink,
/// rmdir and the write-back queue's clean-ups, which may repeat a removal
/// after a crash or a lost answer, take "not found" as done).
fn is_expected(call: &Call<'_>, error: &RemoteError) -> bool {
    matches!(
        (call, error),
        (
            Call::RemoveFile { .. } | Call::RemoveFolder { .. },
            RemoteError::NotFound(_)
        )
    )
}

/// How a failed call is named on the status page.
fn what(call: &Call<'_>) -> String {
    match call {
        Call::List { .. } => "listing".into(),
        Call::Stat { .. } => "file info".into(),
        Call::CreateFolder { .. } => "mkdir".into(),
        Call::RemoveFolder { .. } => "rmdir".into(),
        Call::RemoveFile { .. } => "delete".into(),
        Call::RenameFile { .. } | Call::RenameFolder { .. } => "rename".into(),
        Call::MoveFile { .. } | Call::MoveFolder { .. } => "move".into(),
        Call::Upload { name, .. } => format!("upload of {name}"),
        Call::DirectLink { .. } => "download link".into(),
        Call::Download { .. } => "download".into(),
        Call::About => "account info".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::memory::MemoryRemote;
    use crate::remote::FileId;

    #[tokio::test]
    async fn operations_and_bytes_are_counted_by_kind() {
        let memory = Arc::new(MemoryRemote::new());
        let file = memory.add_file("a", vec![7; 1000]).id;
        let counters = Arc::new(Counters::new());
        let errors = Arc::new(RecentErrors::default());
        let remote = CountingRemote::new(memory.clone(), counters.clone(), errors.clone());
        remote.list_folder(&remote.root()).await.unwrap();
        let mut stream = remote.download_range(&file, 0, 600).await.unwrap();
        let mut received = 0;
        while let Some(chunk) = stream.next().await {
            received += chunk.unwrap().len();
        }
        assert_eq!(received, 600);
        assert!(remote.stat_file(&FileId("missing".into())).await.is_err());
        let snap = counters.snapshot();
        assert_eq!(snap.requests[&RequestKind::List], 1);
        assert_eq!(snap.requests[&RequestKind::Download], 1);
        assert_eq!(snap.requests[&RequestKind::Info], 1);
        assert_eq!(snap.remote_read_bytes, 600);
        assert_eq!(snap.request_errors, 1);
        assert_eq!(remote.requests_last_hour(), 3);
        assert_eq!(errors.list().len(), 1);
    }

    #[tokio::test]
    async fn removing_what_is_already_gone_is_counted_but_not_listed() {
        let memory = Arc::new(MemoryRemote::new());
        let counters = Arc::new(Counters::new());
        let errors = Arc::new(RecentErrors::default());
        let remote = CountingRemote::new(memory.clone(), counters.clone(), errors.clone());
        let gone = FileId("gone".into());
        assert!(matches!(
            remote.remove_file(&gone).await,
            Err(RemoteError::NotFound(_))
        ));
        assert_eq!(counters.snapshot().request_errors, 1);
        assert!(errors.list().is_empty(), "{:?}", errors.list());
        // A file that vanished under a reader is a fault worth showing.
        assert!(remote.download_range(&gone, 0, 10).await.is_err());
        assert_eq!(counters.snapshot().request_errors, 2);
        let listed = errors.list();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert!(
            listed[0].message.starts_with("download failed"),
            "{listed:?}"
        );
    }
}
