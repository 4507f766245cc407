//! A `Remote` that keeps an account in memory: folders, files and their
//! bytes, with the whole trait implemented (listing, rename and move, remove,
//! upload, ranged download through direct links, quota, name checks). Tests
//! of the layers above use it to run without HTTP, to count requests and to
//! play "another client" changing the account behind a mount's back.
//!
//! Built for the crate's own unit tests and, with the `memory-remote`
//! feature, for integration tests and other users. Wrap it in
//! [`FailingRemote`](super::failing::FailingRemote) to inject failures.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::{
    ByteStream, Capabilities, DirectLink, FileEntry, FileId, FolderEntry, FolderId, HashKind,
    Listing, ProgressFn, Remote, RemoteError, RemoteResult, SpaceInfo, UploadSource,
};

/// The account's top folder.
const ROOT: &str = "0";

/// Bytes of one chunk of a download body: small, like a network body's.
const BODY_CHUNK: usize = 700;

struct FolderRecord {
    name: String,
    parent: Option<FolderId>,
    created: DateTime<Utc>,
}

struct FileRecord {
    entry: FileEntry,
    folder: FolderId,
    data: Bytes,
}

#[derive(Default)]
struct Account {
    folders: BTreeMap<FolderId, FolderRecord>,
    files: BTreeMap<FileId, FileRecord>,
    /// Source of ids and of strictly increasing modification times.
    counter: u64,
}

impl Account {
    fn tick(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn folder(&self, folder: &FolderId) -> RemoteResult<&FolderRecord> {
        self.folders
            .get(folder)
            .ok_or_else(|| RemoteError::NotFound(format!("folder {folder}")))
    }

    fn file(&self, file: &FileId) -> RemoteResult<&FileRecord> {
        self.files
            .get(file)
            .ok_or_else(|| RemoteError::NotFound(format!("file {file}")))
    }

    fn used(&self) -> u64 {
        self.files.values().map(|f| f.entry.size).sum()
    }

    fn file_named(&self, folder: &FolderId, name: &str) -> Option<&FileId> {
        self.files
            .iter()
            .find(|(_, f)| &f.folder == folder && f.entry.name == name)
            .map(|(id, _)| id)
    }

    fn folder_named(&self, parent: &FolderId, name: &str) -> Option<&FolderId> {
        self.folders
            .iter()
            .find(|(_, f)| f.parent.as_ref() == Some(parent) && f.name == name)
            .map(|(id, _)| id)
    }

    /// Whether `folder` is `ancestor` or lies below it.
    fn is_within(&self, folder: &FolderId, ancestor: &FolderId) -> bool {
        let mut at = Some(folder.clone());
        while let Some(current) = at {
            if &current == ancestor {
                return true;
            }
            at = self.folders.get(&current).and_then(|f| f.parent.clone());
        }
        false
    }

    fn is_empty_folder(&self, folder: &FolderId) -> bool {
        !self.files.values().any(|f| &f.folder == folder)
            && !self
                .folders
                .values()
                .any(|f| f.parent.as_ref() == Some(folder))
    }

    /// Stores a new file (a new id) and returns its entry.
    fn insert_file(&mut self, folder: &FolderId, name: &str, data: Bytes) -> FileEntry {
        let n = self.tick();
        let entry = FileEntry {
            id: FileId(format!("mem://file/?{n:08}")),
            name: name.to_string(),
            size: data.len() as u64,
            modified: moment(n),
            checksum: Some(hex::encode(Sha256::digest(&data))),
            mime: None,
            share_link: None,
            expires: None,
        };
        self.files.insert(
            entry.id.clone(),
            FileRecord {
                entry: entry.clone(),
                folder: folder.clone(),
                data,
            },
        );
        entry
    }
}

/// A distinct, increasing instant per change, so every version of a file
/// has its own modification time.
fn moment(n: u64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + n as i64, 0)
        .single()
        .unwrap_or_default()
}

/// The in-memory account. All methods are safe to call concurrently.
pub struct MemoryRemote {
    account: Mutex<Account>,
    capabilities: Capabilities,
    quota: Option<u64>,
    download_delay: Mutex<Duration>,
    list_delay: Mutex<Duration>,
    cut_after: Mutex<Option<usize>>,
    downloads: AtomicU64,
    /// Offset of every download request, in the order they arrived.
    download_offsets: Mutex<Vec<u64>>,
    lists: AtomicU64,
    uploads: AtomicU64,
    invalidations: AtomicU64,
    abouts: AtomicU64,
    link_generation: AtomicU64,
}

impl Default for MemoryRemote {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRemote {
    /// An empty account that can do everything a service can: folders,
    /// renames and moves, duplicate names, empty files, SHA-256 checksums,
    /// and a quota of 1 GiB.
    pub fn new() -> Self {
        Self::with_capabilities(
            Capabilities {
                folders: true,
                rename_file: true,
                move_file: true,
                rename_folder: true,
                move_folder: true,
                duplicate_names: true,
                empty_files: true,
                downloads_consume: false,
                files_expire: false,
                max_file_size: None,
                hash: Some(HashKind::Sha256),
                max_name_bytes: crate::remote::NAME_MAX_BYTES,
            },
            Some(1 << 30),
        )
    }

    /// An empty account that behaves like a service with these
    /// capabilities (operations it lacks answer `Unsupported`) and this
    /// quota (`None`: unlimited, and `about` reports no total).
    pub fn with_capabilities(capabilities: Capabilities, quota: Option<u64>) -> Self {
        let mut account = Account::default();
        account.folders.insert(
            FolderId(ROOT.into()),
            FolderRecord {
                name: String::new(),
                parent: None,
                created: moment(0),
            },
        );
        MemoryRemote {
            account: Mutex::new(account),
            capabilities,
            quota,
            download_delay: Mutex::default(),
            list_delay: Mutex::default(),
            cut_after: Mutex::default(),
            downloads: AtomicU64::default(),
            download_offsets: Mutex::default(),
            lists: AtomicU64::default(),
            uploads: AtomicU64::default(),
            invalidations: AtomicU64::default(),
            abouts: AtomicU64::default(),
            link_generation: AtomicU64::default(),
        }
    }

    /// Adds a file to the root folder, as another client would.
    pub fn add_file(&self, name: &str, data: Vec<u8>) -> FileEntry {
        self.add_file_in(&FolderId(ROOT.into()), name, data)
            .expect("the root folder always exists")
    }

    /// Adds a file to a folder, as another client would (no request is
    /// counted, no failure injected).
    pub fn add_file_in(
        &self,
        folder: &FolderId,
        name: &str,
        data: Vec<u8>,
    ) -> RemoteResult<FileEntry> {
        let mut account = self.account.lock();
        account.folder(folder)?;
        Ok(account.insert_file(folder, name, Bytes::from(data)))
    }

    /// Replaces a file's bytes in place, as another client overwriting it
    /// would: same id, new size, date and checksum.
    pub fn replace_file(&self, file: &FileId, data: Vec<u8>) -> RemoteResult<FileEntry> {
        let mut account = self.account.lock();
        account.file(file)?;
        let n = account.tick();
        let record = account.files.get_mut(file).expect("checked above");
        record.entry.size = data.len() as u64;
        record.entry.modified = moment(n);
        record.entry.checksum = Some(hex::encode(Sha256::digest(&data)));
        record.data = Bytes::from(data);
        Ok(record.entry.clone())
    }

    /// Removes a file as another client would.
    pub fn delete_file(&self, file: &FileId) -> RemoteResult<()> {
        self.account
            .lock()
            .files
            .remove(file)
            .map(drop)
            .ok_or_else(|| RemoteError::NotFound(format!("file {file}")))
    }

    /// The bytes of a file as stored.
    pub fn content(&self, file: &FileId) -> Option<Bytes> {
        self.account.lock().files.get(file).map(|f| f.data.clone())
    }

    /// Every file of the account with the folder holding it.
    pub fn all_files(&self) -> Vec<(FolderId, FileEntry)> {
        self.account
            .lock()
            .files
            .values()
            .map(|f| (f.folder.clone(), f.entry.clone()))
            .collect()
    }

    /// Delay before each download answers.
    pub fn set_download_delay(&self, delay: Duration) {
        *self.download_delay.lock() = delay;
    }

    /// Delay before each listing answers.
    pub fn set_list_delay(&self, delay: Duration) {
        *self.list_delay.lock() = delay;
    }

    /// The next download body ends with a transient error after `bytes`
    /// bytes, like a connection cut mid-body.
    pub fn cut_next_body_after(&self, bytes: usize) {
        *self.cut_after.lock() = Some(bytes);
    }

    pub fn download_requests(&self) -> u64 {
        self.downloads.load(Ordering::SeqCst)
    }

    /// Offsets of the download requests so far, in arrival order.
    pub fn download_offsets(&self) -> Vec<u64> {
        self.download_offsets.lock().clone()
    }

    pub fn list_requests(&self) -> u64 {
        self.lists.load(Ordering::SeqCst)
    }

    pub fn upload_requests(&self) -> u64 {
        self.uploads.load(Ordering::SeqCst)
    }

    pub fn about_requests(&self) -> u64 {
        self.abouts.load(Ordering::SeqCst)
    }

    pub fn invalidated_links(&self) -> u64 {
        self.invalidations.load(Ordering::SeqCst)
    }

    fn require(&self, can: bool, what: &str) -> RemoteResult<()> {
        if can {
            Ok(())
        } else {
            Err(RemoteError::Unsupported(format!(
                "the memory remote was made without {what}"
            )))
        }
    }

    /// Whether another file of `name` in `folder` (other than `except`) is
    /// a conflict on this account.
    fn check_file_name_free(
        &self,
        account: &Account,
        folder: &FolderId,
        name: &str,
        except: Option<&FileId>,
    ) -> RemoteResult<()> {
        if self.capabilities.duplicate_names {
            return Ok(());
        }
        match account.file_named(folder, name) {
            Some(id) if Some(id) != except => Err(RemoteError::AlreadyExists(name.to_string())),
            _ => Ok(()),
        }
    }
}

/// Reads an upload's bytes, checking the announced size and reporting
/// progress once at the end.
async fn read_source(source: UploadSource, progress: Option<ProgressFn>) -> RemoteResult<Bytes> {
    let data = match source {
        UploadSource::Path(path) => tokio::fs::read(&path)
            .await
            .map_err(|e| RemoteError::Fatal(format!("cannot read {}: {e}", path.display())))?,
        UploadSource::Reader { mut reader, size } => {
            let mut data = Vec::new();
            reader
                .read_to_end(&mut data)
                .await
                .map_err(|e| RemoteError::Fatal(format!("cannot read the upload: {e}")))?;
            if data.len() as u64 != size {
                return Err(RemoteError::Fatal(format!(
                    "the upload held {} bytes, not the {size} announced",
                    data.len()
                )));
            }
            data
        }
    };
    if let Some(progress) = progress {
        progress(data.len() as u64);
    }
    Ok(Bytes::from(data))
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
        FolderId(ROOT.into())
    }

    async fn list_folder(&self, folder: &FolderId) -> RemoteResult<Listing> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        let delay = *self.list_delay.lock();
        tokio::time::sleep(delay).await;
        let account = self.account.lock();
        account.folder(folder)?;
        Ok(Listing {
            folders: account
                .folders
                .iter()
                .filter(|(_, f)| f.parent.as_ref() == Some(folder))
                .map(|(id, f)| FolderEntry {
                    id: id.clone(),
                    name: f.name.clone(),
                    created: Some(f.created),
                })
                .collect(),
            files: account
                .files
                .values()
                .filter(|f| &f.folder == folder)
                .map(|f| f.entry.clone())
                .collect(),
        })
    }

    async fn stat_file(&self, file: &FileId) -> RemoteResult<FileEntry> {
        Ok(self.account.lock().file(file)?.entry.clone())
    }

    async fn create_folder(&self, parent: &FolderId, name: &str) -> RemoteResult<FolderEntry> {
        self.require(self.capabilities.folders, "folders")?;
        self.check_name(name)?;
        let mut account = self.account.lock();
        account.folder(parent)?;
        if account.folder_named(parent, name).is_some() {
            return Err(RemoteError::AlreadyExists(name.to_string()));
        }
        let n = account.tick();
        let id = FolderId(format!("{n}"));
        let created = moment(n);
        account.folders.insert(
            id.clone(),
            FolderRecord {
                name: name.to_string(),
                parent: Some(parent.clone()),
                created,
            },
        );
        Ok(FolderEntry {
            id,
            name: name.to_string(),
            created: Some(created),
        })
    }

    async fn remove_folder(&self, folder: &FolderId) -> RemoteResult<()> {
        let mut account = self.account.lock();
        if account.folder(folder)?.parent.is_none() {
            return Err(RemoteError::PermissionDenied(
                "the root folder cannot be removed".into(),
            ));
        }
        if !account.is_empty_folder(folder) {
            return Err(RemoteError::NotEmpty(format!("folder {folder}")));
        }
        account.folders.remove(folder);
        Ok(())
    }

    async fn remove_file(&self, file: &FileId) -> RemoteResult<()> {
        self.delete_file(file)
    }

    async fn rename_file(&self, file: &FileId, new_name: &str) -> RemoteResult<FileEntry> {
        self.require(self.capabilities.rename_file, "file renames")?;
        self.check_name(new_name)?;
        let mut account = self.account.lock();
        let folder = account.file(file)?.folder.clone();
        self.check_file_name_free(&account, &folder, new_name, Some(file))?;
        let record = account.files.get_mut(file).expect("checked above");
        record.entry.name = new_name.to_string();
        Ok(record.entry.clone())
    }

    async fn move_file(
        &self,
        file: &FileId,
        destination: &FolderId,
        new_name: Option<&str>,
    ) -> RemoteResult<FileEntry> {
        self.require(self.capabilities.move_file, "file moves")?;
        if new_name.is_some() {
            self.require(self.capabilities.rename_file, "file renames")?;
        }
        let mut account = self.account.lock();
        account.folder(destination)?;
        let name = match new_name {
            Some(name) => {
                self.check_name(name)?;
                name.to_string()
            }
            None => account.file(file)?.entry.name.clone(),
        };
        account.file(file)?;
        self.check_file_name_free(&account, destination, &name, Some(file))?;
        let record = account.files.get_mut(file).expect("checked above");
        record.folder = destination.clone();
        record.entry.name = name;
        Ok(record.entry.clone())
    }

    async fn rename_folder(&self, folder: &FolderId, new_name: &str) -> RemoteResult<()> {
        self.require(self.capabilities.rename_folder, "folder renames")?;
        self.check_name(new_name)?;
        let mut account = self.account.lock();
        let Some(parent) = account.folder(folder)?.parent.clone() else {
            return Err(RemoteError::PermissionDenied(
                "the root folder cannot be renamed".into(),
            ));
        };
        if account
            .folder_named(&parent, new_name)
            .is_some_and(|other| other != folder)
        {
            return Err(RemoteError::AlreadyExists(new_name.to_string()));
        }
        account.folders.get_mut(folder).expect("checked above").name = new_name.to_string();
        Ok(())
    }

    async fn move_folder(&self, folder: &FolderId, destination: &FolderId) -> RemoteResult<()> {
        self.require(self.capabilities.move_folder, "folder moves")?;
        let mut account = self.account.lock();
        account.folder(destination)?;
        let record = account.folder(folder)?;
        if record.parent.is_none() {
            return Err(RemoteError::PermissionDenied(
                "the root folder cannot be moved".into(),
            ));
        }
        let name = record.name.clone();
        if account.is_within(destination, folder) {
            return Err(RemoteError::InvalidName(format!(
                "folder {folder} cannot move into itself"
            )));
        }
        if account
            .folder_named(destination, &name)
            .is_some_and(|other| other != folder)
        {
            return Err(RemoteError::AlreadyExists(name));
        }
        account
            .folders
            .get_mut(folder)
            .expect("checked above")
            .parent = Some(destination.clone());
        Ok(())
    }

    async fn upload(
        &self,
        parent: &FolderId,
        name: &str,
        source: UploadSource,
        progress: Option<ProgressFn>,
    ) -> RemoteResult<FileEntry> {
        self.uploads.fetch_add(1, Ordering::SeqCst);
        self.check_name(name)?;
        self.account.lock().folder(parent)?;
        let data = read_source(source, progress).await?;
        if data.is_empty() && !self.capabilities.empty_files {
            return Err(RemoteError::EmptyFile(name.to_string()));
        }
        if let Some(max) = self.capabilities.max_file_size {
            if data.len() as u64 > max {
                return Err(RemoteError::TooLarge(format!("{name}: over {max} bytes")));
            }
        }
        let mut account = self.account.lock();
        account.folder(parent)?;
        self.check_file_name_free(&account, parent, name, None)?;
        if let Some(quota) = self.quota {
            if account.used() + data.len() as u64 > quota {
                return Err(RemoteError::QuotaExceeded(format!(
                    "{name}: {} bytes do not fit in the {quota} bytes quota",
                    data.len()
                )));
            }
        }
        Ok(account.insert_file(parent, name, data))
    }

    async fn direct_link(&self, file: &FileId) -> RemoteResult<DirectLink> {
        self.account.lock().file(file)?;
        let generation = self.link_generation.load(Ordering::SeqCst);
        Ok(DirectLink {
            url: format!("{}#direct-{generation}", file.0),
            valid_until: None,
        })
    }

    fn invalidate_link(&self, _file: &FileId) {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        self.link_generation.fetch_add(1, Ordering::SeqCst);
    }

    fn check_name(&self, name: &str) -> RemoteResult<()> {
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(RemoteError::InvalidName(format!("{name:?}")));
        }
        let max = self.capabilities().max_name_bytes;
        if name.len() > max as usize {
            return Err(RemoteError::NameTooLong(format!(
                "{name:?} has more than {max} bytes"
            )));
        }
        Ok(())
    }

    async fn download_range(
        &self,
        file: &FileId,
        offset: u64,
        len: u64,
    ) -> RemoteResult<ByteStream> {
        self.downloads.fetch_add(1, Ordering::SeqCst);
        self.download_offsets.lock().push(offset);
        let delay = *self.download_delay.lock();
        tokio::time::sleep(delay).await;
        let data = self.account.lock().file(file)?.data.clone();
        let start = offset.min(data.len() as u64) as usize;
        let end = offset.saturating_add(len).min(data.len() as u64) as usize;
        let body = data.slice(start..end);
        let cut = self.cut_after.lock().take();
        let limit = cut.unwrap_or(usize::MAX).min(body.len());
        let mut chunks: Vec<RemoteResult<Bytes>> = Vec::new();
        let mut at = 0;
        while at < limit {
            let next = (at + BODY_CHUNK).min(limit);
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
            used: self.account.lock().used(),
            total: self.quota,
        })
    }
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;

    use super::*;

    async fn read_all(remote: &MemoryRemote, file: &FileId, offset: u64, len: u64) -> Vec<u8> {
        let stream = remote.download_range(file, offset, len).await.unwrap();
        let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
        chunks.concat()
    }

    fn names(listing: &Listing) -> (Vec<String>, Vec<String>) {
        let mut folders: Vec<_> = listing.folders.iter().map(|f| f.name.clone()).collect();
        let mut files: Vec<_> = listing.files.iter().map(|f| f.name.clone()).collect();
        folders.sort();
        files.sort();
        (folders, files)
    }

    fn reader(data: &[u8]) -> UploadSource {
        UploadSource::Reader {
            reader: Box::pin(std::io::Cursor::new(data.to_vec())),
            size: data.len() as u64,
        }
    }

    #[tokio::test]
    async fn folders_files_renames_and_moves() {
        let remote = MemoryRemote::new();
        let root = remote.root();
        let docs = remote.create_folder(&root, "docs").await.unwrap();
        let old = remote.create_folder(&docs.id, "old").await.unwrap();
        assert!(matches!(
            remote.create_folder(&root, "docs").await,
            Err(RemoteError::AlreadyExists(_))
        ));
        let a = remote
            .upload(&docs.id, "a.txt", reader(b"hello"), None)
            .await
            .unwrap();
        assert_eq!(a.size, 5);
        assert_eq!(
            a.checksum.as_deref(),
            Some(hex::encode(Sha256::digest(b"hello")).as_str())
        );
        let renamed = remote.rename_file(&a.id, "b.txt").await.unwrap();
        assert_eq!(
            (renamed.id.clone(), renamed.name.as_str()),
            (a.id.clone(), "b.txt")
        );
        let moved = remote
            .move_file(&a.id, &old.id, Some("c.txt"))
            .await
            .unwrap();
        assert_eq!(moved.name, "c.txt");
        assert_eq!(
            names(&remote.list_folder(&docs.id).await.unwrap()),
            (vec!["old".to_string()], vec![])
        );
        assert_eq!(
            names(&remote.list_folder(&old.id).await.unwrap()),
            (vec![], vec!["c.txt".to_string()])
        );
        // A folder cannot go into itself; a non-empty one cannot go away.
        assert!(remote.move_folder(&docs.id, &old.id).await.is_err());
        assert!(matches!(
            remote.remove_folder(&docs.id).await,
            Err(RemoteError::NotEmpty(_))
        ));
        remote.move_folder(&old.id, &root).await.unwrap();
        remote.rename_folder(&old.id, "archive").await.unwrap();
        assert_eq!(
            names(&remote.list_folder(&root).await.unwrap()).0,
            vec!["archive".to_string(), "docs".to_string()]
        );
        remote.remove_folder(&docs.id).await.unwrap();
        remote.remove_file(&a.id).await.unwrap();
        assert!(matches!(
            remote.stat_file(&a.id).await,
            Err(RemoteError::NotFound(_))
        ));
        remote.remove_folder(&old.id).await.unwrap();
        assert_eq!(remote.list_folder(&root).await.unwrap(), Listing::default());
        assert!(matches!(
            remote.list_folder(&old.id).await,
            Err(RemoteError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn ranged_downloads_and_cut_bodies() {
        let remote = MemoryRemote::new();
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let file = remote.add_file("f", data.clone());
        assert_eq!(read_all(&remote, &file.id, 0, u64::MAX).await, data);
        assert_eq!(read_all(&remote, &file.id, 4990, 100).await, data[4990..]);
        assert!(read_all(&remote, &file.id, 9000, 10).await.is_empty());
        remote.cut_next_body_after(1000);
        let stream = remote.download_range(&file.id, 0, 5000).await.unwrap();
        let items: Vec<_> = futures::StreamExt::collect::<Vec<_>>(stream).await;
        let received: usize = items
            .iter()
            .filter_map(|i| i.as_ref().ok())
            .map(Bytes::len)
            .sum();
        assert_eq!(received, 1000);
        assert!(matches!(items.last(), Some(Err(RemoteError::Transient(_)))));
        assert_eq!(remote.download_requests(), 4);
    }

    #[tokio::test]
    async fn quota_names_and_capabilities_are_enforced() {
        let strict = MemoryRemote::with_capabilities(
            Capabilities {
                folders: false,
                rename_file: false,
                move_file: false,
                rename_folder: false,
                move_folder: false,
                duplicate_names: false,
                empty_files: false,
                downloads_consume: false,
                files_expire: false,
                max_file_size: Some(8),
                hash: None,
                max_name_bytes: 16,
            },
            Some(10),
        );
        let root = strict.root();
        let a = strict
            .upload(&root, "a", reader(b"123456"), None)
            .await
            .unwrap();
        let err = |r: RemoteResult<FileEntry>| r.unwrap_err();
        assert!(matches!(
            err(strict.upload(&root, "a", reader(b"1"), None).await),
            RemoteError::AlreadyExists(_)
        ));
        assert!(matches!(
            err(strict.upload(&root, "b", reader(b"123456"), None).await),
            RemoteError::QuotaExceeded(_)
        ));
        assert!(matches!(
            err(strict.upload(&root, "c", reader(b"123456789"), None).await),
            RemoteError::TooLarge(_)
        ));
        assert!(matches!(
            err(strict.upload(&root, "d", reader(b""), None).await),
            RemoteError::EmptyFile(_)
        ));
        assert!(matches!(
            err(strict.upload(&root, "x/y", reader(b"1"), None).await),
            RemoteError::InvalidName(_)
        ));
        assert!(matches!(
            err(strict.rename_file(&a.id, "z").await),
            RemoteError::Unsupported(_)
        ));
        assert!(matches!(
            strict.create_folder(&root, "f").await,
            Err(RemoteError::Unsupported(_))
        ));
        let short = UploadSource::Reader {
            reader: Box::pin(std::io::Cursor::new(b"12".to_vec())),
            size: 3,
        };
        assert!(strict.upload(&root, "e", short, None).await.is_err());
        assert_eq!(
            strict.about().await.unwrap(),
            SpaceInfo {
                used: 6,
                total: Some(10)
            }
        );
        assert_eq!(strict.upload_requests(), 7);
    }

    #[tokio::test]
    async fn another_client_changes_show_in_listings_and_reads() {
        let remote = MemoryRemote::new();
        let root = remote.root();
        let file = remote.add_file("a", b"old".to_vec());
        let link = remote.direct_link(&file.id).await.unwrap();
        let replaced = remote.replace_file(&file.id, b"newer".to_vec()).unwrap();
        assert_eq!(replaced.id, file.id);
        assert_eq!(replaced.size, 5);
        assert!(replaced.modified > file.modified);
        assert_ne!(replaced.checksum, file.checksum);
        assert_eq!(read_all(&remote, &file.id, 0, 100).await, b"newer");
        assert_eq!(
            remote.list_folder(&root).await.unwrap().files,
            vec![replaced]
        );
        remote.invalidate_link(&file.id);
        assert_ne!(remote.direct_link(&file.id).await.unwrap().url, link.url);
        remote.delete_file(&file.id).unwrap();
        assert!(remote.list_folder(&root).await.unwrap().files.is_empty());
        assert!(matches!(
            remote.download_range(&file.id, 0, 1).await,
            Err(RemoteError::NotFound(_))
        ));
        assert!(matches!(
            remote.direct_link(&file.id).await,
            Err(RemoteError::NotFound(_))
        ));
    }
}
