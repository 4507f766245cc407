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

use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::Mutex;

use super::pacer::Pacer;
use super::{
    ByteStream, Capabilities, DirectLink, FileEntry, FileId, FolderEntry, FolderId, Listing,
    ProgressFn, Remote, RemoteResult, SpaceInfo, UploadSource,
};
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

    /// Counts a failed operation and keeps it for the status page.
    fn outcome<T>(&self, what: &str, result: RemoteResult<T>) -> RemoteResult<T> {
        if let Err(error) = &result {
            self.counters.count_request_error();
            self.errors
                .push("remote", None, format!("{what} failed: {error}"));
        }
        result
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

#[async_trait]
impl Remote for CountingRemote {
    fn service(&self) -> &'static str {
        self.inner.service()
    }

    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }

    fn root(&self) -> FolderId {
        self.inner.root()
    }

    async fn list_folder(&self, folder: &FolderId) -> RemoteResult<Listing> {
        self.count(RequestKind::List);
        self.outcome("listing", self.inner.list_folder(folder).await)
    }

    async fn stat_file(&self, file: &FileId) -> RemoteResult<FileEntry> {
        self.count(RequestKind::Info);
        self.outcome("file info", self.inner.stat_file(file).await)
    }

    async fn create_folder(&self, parent: &FolderId, name: &str) -> RemoteResult<FolderEntry> {
        self.count(RequestKind::Mkdir);
        self.outcome("mkdir", self.inner.create_folder(parent, name).await)
    }

    async fn remove_folder(&self, folder: &FolderId) -> RemoteResult<()> {
        self.count(RequestKind::Delete);
        self.outcome("rmdir", self.inner.remove_folder(folder).await)
    }

    async fn remove_file(&self, file: &FileId) -> RemoteResult<()> {
        self.count(RequestKind::Delete);
        self.outcome("delete", self.inner.remove_file(file).await)
    }

    async fn rename_file(&self, file: &FileId, new_name: &str) -> RemoteResult<FileEntry> {
        self.count(RequestKind::Rename);
        self.outcome("rename", self.inner.rename_file(file, new_name).await)
    }

    async fn move_file(
        &self,
        file: &FileId,
        destination: &FolderId,
        new_name: Option<&str>,
    ) -> RemoteResult<FileEntry> {
        self.count(RequestKind::Rename);
        let result = self.inner.move_file(file, destination, new_name).await;
        self.outcome("move", result)
    }

    async fn rename_folder(&self, folder: &FolderId, new_name: &str) -> RemoteResult<()> {
        self.count(RequestKind::Rename);
        self.outcome("rename", self.inner.rename_folder(folder, new_name).await)
    }

    async fn move_folder(&self, folder: &FolderId, destination: &FolderId) -> RemoteResult<()> {
        self.count(RequestKind::Rename);
        let result = self.inner.move_folder(folder, destination).await;
        self.outcome("move", result)
    }

    async fn upload(
        &self,
        parent: &FolderId,
        name: &str,
        source: UploadSource,
        progress: Option<ProgressFn>,
    ) -> RemoteResult<FileEntry> {
        self.count(RequestKind::Upload);
        let result = self.inner.upload(parent, name, source, progress).await;
        if let Ok(file) = &result {
            self.counters.add_upload(file.size);
        }
        self.outcome(&format!("upload of {name}"), result)
    }

    async fn direct_link(&self, file: &FileId) -> RemoteResult<DirectLink> {
        self.count(RequestKind::Download);
        self.outcome("download link", self.inner.direct_link(file).await)
    }

    fn invalidate_link(&self, file: &FileId) {
        self.inner.invalidate_link(file)
    }

    fn read_consumes_download(&self, file: &FileId) -> bool {
        self.inner.read_consumes_download(file)
    }

    fn check_name(&self, name: &str) -> RemoteResult<()> {
        self.inner.check_name(name)
    }

    async fn download_range(
        &self,
        file: &FileId,
        offset: u64,
        len: u64,
    ) -> RemoteResult<ByteStream> {
        self.count(RequestKind::Download);
        let stream = self.outcome(
            "download",
            self.inner.download_range(file, offset, len).await,
        )?;
        let counters = self.counters.clone();
        Ok(Box::pin(stream.inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                counters.add_remote_read(bytes.len() as u64);
            }
        })))
    }

    async fn about(&self) -> RemoteResult<SpaceInfo> {
        self.count(RequestKind::Info);
        self.outcome("account info", self.inner.about().await)
    }

    fn pacer(&self) -> Option<&Pacer> {
        self.inner.pacer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::memory::MemoryRemote;

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
}
