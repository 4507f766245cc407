//! An in-memory `Remote` for the caches' unit tests: it lets a test count
//! requests and inject failures deterministically. The integration tests in
//! `tests/` use the real emulator over HTTP instead.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{TimeZone, Utc};
use parking_lot::Mutex;

use crate::remote::{
    ByteStream, Capabilities, DirectLink, FileEntry, FileId, FolderEntry, FolderId, Listing,
    ProgressFn, Remote, RemoteError, RemoteResult, SpaceInfo, UploadSource,
};

pub struct MemoryRemote {
    files: Mutex<BTreeMap<FileId, (FileEntry, Bytes)>>,
    folders: Mutex<BTreeMap<FolderId, Listing>>,
    download_delay: Mutex<Duration>,
    list_delay: Mutex<Duration>,
    download_failures: Mutex<VecDeque<RemoteError>>,
    cut_after: Mutex<Option<usize>>,
    downloads: AtomicU64,
    lists: AtomicU64,
    invalidations: AtomicU64,
    abouts: AtomicU64,
    capabilities: Capabilities,
}

impl MemoryRemote {
    pub fn new() -> Self {
        MemoryRemote {
            capabilities: Capabilities {
                folders: true,
                rename_file: false,
                move_file: false,
                rename_folder: false,
                move_folder: false,
                duplicate_names: true,
                empty_files: false,
                downloads_consume: false,
                files_expire: false,
                max_file_size: None,
                hash: None,
            },
            files: Mutex::default(),
            folders: Mutex::default(),
            download_delay: Mutex::default(),
            list_delay: Mutex::default(),
            download_failures: Mutex::default(),
            cut_after: Mutex::default(),
            downloads: AtomicU64::default(),
            lists: AtomicU64::default(),
            invalidations: AtomicU64::default(),
            abouts: AtomicU64::default(),
        }
    }

    /// Adds a file to the root folder.
    pub fn add_file(&self, name: &str, data: Vec<u8>) -> FileEntry {
        let n = self.files.lock().len();
        let entry = FileEntry {
            id: FileId(format!("mem://file/?{n:08}")),
            name: name.to_string(),
            size: data.len() as u64,
            modified: Utc.timestamp_opt(1_700_000_000 + n as i64, 0).unwrap(),
            checksum: None,
            mime: None,
            share_link: None,
            expires: None,
        };
        self.files
            .lock()
            .insert(entry.id.clone(), (entry.clone(), Bytes::from(data)));
        self.folders
            .lock()
            .entry(self.root())
            .or_default()
            .files
            .push(entry.clone());
        entry
    }

    pub fn set_download_delay(&self, delay: Duration) {
        *self.download_delay.lock() = delay;
    }

    pub fn set_list_delay(&self, delay: Duration) {
        *self.list_delay.lock() = delay;
    }

    pub fn fail_next_downloads(&self, errors: Vec<RemoteError>) {
        self.download_failures.lock().extend(errors);
    }

    pub fn cut_next_body_after(&self, bytes: usize) {
        *self.cut_after.lock() = Some(bytes);
    }

    pub fn download_requests(&self) -> u64 {
        self.downloads.load(Ordering::SeqCst)
    }

    pub fn list_requests(&self) -> u64 {
        self.lists.load(Ordering::SeqCst)
    }

    pub fn about_requests(&self) -> u64 {
        self.abouts.load(Ordering::SeqCst)
    }

    pub fn invalidated_links(&self) -> u64 {
        self.invalidations.load(Ordering::SeqCst)
    }
}

fn unsupported<T>() -> RemoteResult<T> {
    Err(RemoteError::Unsupported(
        "not part of the test double".into(),
    ))
}

#[async_trait]
impl Remote for MemoryRemote {
    fn service(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn root(&self) -> FolderId {
        FolderId("0".into())
    }

    async fn list_folder(&self, folder: &FolderId) -> RemoteResult<Listing> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        let delay = *self.list_delay.lock();
        tokio::time::sleep(delay).await;
        self.folders
            .lock()
            .get(folder)
            .cloned()
            .ok_or_else(|| RemoteError::NotFound(folder.0.clone()))
    }

    async fn stat_file(&self, file: &FileId) -> RemoteResult<FileEntry> {
        self.files
            .lock()
            .get(file)
            .map(|(entry, _)| entry.clone())
            .ok_or_else(|| RemoteError::NotFound(file.0.clone()))
    }

    async fn create_folder(&self, _parent: &FolderId, _name: &str) -> RemoteResult<FolderEntry> {
        unsupported()
    }

    async fn remove_folder(&self, _folder: &FolderId) -> RemoteResult<()> {
        unsupported()
    }

    async fn remove_file(&self, _file: &FileId) -> RemoteResult<()> {
        unsupported()
    }

    async fn rename_file(&self, _file: &FileId, _new_name: &str) -> RemoteResult<FileEntry> {
        unsupported()
    }

    async fn move_file(
        &self,
        _file: &FileId,
        _destination: &FolderId,
        _new_name: Option<&str>,
    ) -> RemoteResult<FileEntry> {
        unsupported()
    }

    async fn rename_folder(&self, _folder: &FolderId, _new_name: &str) -> RemoteResult<()> {
        unsupported()
    }

    async fn move_folder(&self, _folder: &FolderId, _destination: &FolderId) -> RemoteResult<()> {
        unsupported()
    }

    async fn upload(
        &self,
        _parent: &FolderId,
        _name: &str,
        _source: UploadSource,
        _progress: Option<ProgressFn>,
    ) -> RemoteResult<FileEntry> {
        unsupported()
    }

    async fn direct_link(&self, file: &FileId) -> RemoteResult<DirectLink> {
        Ok(DirectLink {
            url: format!("{}#direct", file.0),
            valid_until: None,
        })
    }

    fn invalidate_link(&self, _file: &FileId) {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
    }

    async fn download_range(
        &self,
        file: &FileId,
        offset: u64,
        len: u64,
    ) -> RemoteResult<ByteStream> {
        self.downloads.fetch_add(1, Ordering::SeqCst);
        let delay = *self.download_delay.lock();
        tokio::time::sleep(delay).await;
        if let Some(error) = self.download_failures.lock().pop_front() {
            return Err(error);
        }
        let data = self
            .files
            .lock()
            .get(file)
            .map(|(_, data)| data.clone())
            .ok_or_else(|| RemoteError::NotFound(file.0.clone()))?;
        let start = (offset as usize).min(data.len());
        let end = (offset.saturating_add(len) as usize).min(data.len());
        let body = data.slice(start..end);
        let cut = self.cut_after.lock().take();
        // Small chunks, like a network body.
        let mut chunks: Vec<RemoteResult<Bytes>> = Vec::new();
        let limit = cut.unwrap_or(usize::MAX).min(body.len());
        let mut at = 0;
        while at < limit {
            let next = (at + 700).min(limit);
            chunks.push(Ok(body.slice(at..next)));
            at = next;
        }
        if cut.is_some() {
            chunks.push(Err(RemoteError::Transient("connection cut".into())));
        }
        Ok(Box::pin(futures::stream::iter(chunks)))
    }

    async fn about(&self) -> RemoteResult<SpaceInfo> {
        self.abouts.fetch_add(1, Ordering::SeqCst);
        Ok(SpaceInfo {
            used: 1000,
            total: Some(1_000_000),
        })
    }
}
