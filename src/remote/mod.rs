//! The `Remote` layer: one async trait that every file-hosting service
//! implements, plus the machinery they share (pacer, retries, name encoding).
//!
//! Names crossing this trait are always *local* names (what the user sees);
//! each backend encodes them for its service and decodes what it lists.

pub mod counting;
pub mod error;
#[cfg(any(test, feature = "memory-remote"))]
pub mod failing;
pub mod fichier;
pub mod fiione;
pub mod fileio;
pub mod http;
pub mod layer;
pub mod linked_download;
#[cfg(any(test, feature = "memory-remote"))]
pub mod memory;
pub mod names;
pub mod pacer;
pub mod resolve;
pub mod secret;

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};

pub use error::{RemoteError, RemoteResult};
pub use resolve::{resolve_path, Resolved};
pub use secret::ApiKey;

/// Opaque, service-specific identifier of a file (1fichier: the link URL;
/// fii.one: a UUID; file.io: the 12-character key).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileId(pub String);

/// Opaque, service-specific identifier of a folder (1fichier: an integer,
/// root 0; services without folders have only their root).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FolderId(pub String);

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for FolderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A file as the service reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub id: FileId,
    /// Decoded local name. Several files of one folder may share it on
    /// services that allow duplicates; `id` tells them apart.
    pub name: String,
    pub size: u64,
    /// The service's date for the file (upload time where that is all it keeps).
    pub modified: DateTime<Utc>,
    /// Content checksum as the service reports it, lower-case hex.
    pub checksum: Option<String>,
    pub mime: Option<String>,
    /// The public/share link a person would be given (not a direct link).
    pub share_link: Option<String>,
    /// When the service will delete the file on its own (file.io).
    pub expires: Option<DateTime<Utc>>,
}

/// A folder as the service reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderEntry {
    pub id: FolderId,
    pub name: String,
    pub created: Option<DateTime<Utc>>,
}

/// The complete contents of one folder.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub folders: Vec<FolderEntry>,
    pub files: Vec<FileEntry>,
}

/// A URL from which the file's bytes can be fetched with HTTP Range.
#[derive(Clone, Debug)]
pub struct DirectLink {
    pub url: String,
    /// After this instant the link must not be used any more.
    pub valid_until: Option<Instant>,
}

/// Space used and available on the account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaceInfo {
    pub used: u64,
    /// `None` when the service does not say.
    pub total: Option<u64>,
}

/// Which content hash `FileEntry::checksum` carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashKind {
    Whirlpool,
    Sha256,
}

/// What a backend can do. Callers consult this instead of guessing from the
/// service's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Folders can be created, listed and removed below the root.
    pub folders: bool,
    pub rename_file: bool,
    /// A file can be moved to another folder.
    pub move_file: bool,
    pub rename_folder: bool,
    pub move_folder: bool,
    /// Several files of one folder may carry the same name.
    pub duplicate_names: bool,
    /// Zero-byte files can be uploaded.
    pub empty_files: bool,
    /// Fetching a file's bytes spends a limited download budget (file.io):
    /// never read such a file without the user's explicit consent.
    pub downloads_consume: bool,
    /// Files disappear on their own after an expiry date.
    pub files_expire: bool,
    /// Largest file the service accepts, when known.
    pub max_file_size: Option<u64>,
    pub hash: Option<HashKind>,
    /// Every name of at most this many bytes can be stored (what `statfs`
    /// reports as the longest name). A service that counts characters may
    /// accept some longer names too: [`Remote::check_name`] decides.
    pub max_name_bytes: u32,
}

/// Linux's `NAME_MAX`: the longest name, in bytes, local file systems take;
/// the limit applied where a service documents none of its own.
pub const NAME_MAX_BYTES: u32 = 255;

/// Called with the number of bytes sent so far.
pub type ProgressFn = Arc<dyn Fn(u64) + Send + Sync>;

/// A stream of file bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = RemoteResult<Bytes>> + Send>>;

/// Where the bytes of an upload come from. A path can be re-read from the
/// start, so a failed upload of a path is retried; a reader cannot.
pub enum UploadSource {
    Path(PathBuf),
    Reader {
        reader: Pin<Box<dyn tokio::io::AsyncRead + Send>>,
        size: u64,
    },
}

impl fmt::Debug for UploadSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UploadSource::Path(p) => f.debug_tuple("Path").field(p).finish(),
            UploadSource::Reader { size, .. } => {
                f.debug_struct("Reader").field("size", size).finish()
            }
        }
    }
}

/// One file-hosting account.
#[async_trait]
pub trait Remote: Send + Sync + 'static {
    /// The service's name as used in config files ("1fichier", "fii.one", "file.io").
    fn service(&self) -> &'static str;

    fn capabilities(&self) -> &Capabilities;

    /// The account's top folder.
    fn root(&self) -> FolderId;

    /// Sub-folders and files of one folder, complete (all pages walked).
    async fn list_folder(&self, folder: &FolderId) -> RemoteResult<Listing>;

    /// Current metadata of one file.
    async fn stat_file(&self, file: &FileId) -> RemoteResult<FileEntry>;

    async fn create_folder(&self, parent: &FolderId, name: &str) -> RemoteResult<FolderEntry>;

    /// Removes an empty folder (`NotEmpty` otherwise).
    async fn remove_folder(&self, folder: &FolderId) -> RemoteResult<()>;

    async fn remove_file(&self, file: &FileId) -> RemoteResult<()>;

    /// Renames in place; returns the file as it now is (its id may change).
    async fn rename_file(&self, file: &FileId, new_name: &str) -> RemoteResult<FileEntry>;

    /// Moves to another folder, optionally renaming; returns the file as it now is.
    async fn move_file(
        &self,
        file: &FileId,
        destination: &FolderId,
        new_name: Option<&str>,
    ) -> RemoteResult<FileEntry>;

    async fn rename_folder(&self, folder: &FolderId, new_name: &str) -> RemoteResult<()>;

    async fn move_folder(&self, folder: &FolderId, destination: &FolderId) -> RemoteResult<()>;

    /// Uploads a new file into `parent` (never replaces an existing one).
    async fn upload(
        &self,
        parent: &FolderId,
        name: &str,
        source: UploadSource,
        progress: Option<ProgressFn>,
    ) -> RemoteResult<FileEntry>;

    /// A direct link for the file's bytes; cached until shortly before it
    /// expires and refreshed transparently.
    async fn direct_link(&self, file: &FileId) -> RemoteResult<DirectLink>;

    /// Forgets a cached direct link that the server refused.
    fn invalidate_link(&self, file: &FileId);

    /// Whether reading this file's bytes would spend one of its limited
    /// downloads (file.io), so the caller must have the user's consent.
    /// Backends that keep a local copy of a file answer `false` for it.
    fn read_consumes_download(&self, _file: &FileId) -> bool {
        self.capabilities().downloads_consume
    }

    /// `InvalidName` when the service could never store a file or folder of
    /// this (local) name, even encoded (`NameTooLong` when only its length
    /// is the problem); lets the mount refuse it at once instead of when
    /// the upload fails.
    fn check_name(&self, _name: &str) -> RemoteResult<()> {
        Ok(())
    }

    /// Bytes `offset .. offset + len` of the file (clamped to its end). A
    /// connection cut mid-body is resumed from the last byte received.
    async fn download_range(
        &self,
        file: &FileId,
        offset: u64,
        len: u64,
    ) -> RemoteResult<ByteStream>;

    async fn about(&self) -> RemoteResult<SpaceInfo>;

    /// The pacer this remote's requests go through, for its budget and
    /// waits; remotes without one (in memory) answer `None`.
    fn pacer(&self) -> Option<&pacer::Pacer> {
        None
    }
}
