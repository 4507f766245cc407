//! A [`Remote`] whose changes drop the saved listings they outdate.
//!
//! While a mount runs, its inode table shows its own changes over the
//! cached listings; the listings saved for the next start (see
//! [`super::listing_store`]) know nothing of them. A restart answering from
//! a saved listing would then hide a file just uploaded or show one just
//! removed, so every successful change here tells the metadata cache which
//! folders it touched, and their saved listings are forgotten.

use std::sync::Arc;

use async_trait::async_trait;

use super::meta::MetaCache;
use crate::remote::{
    ByteStream, Capabilities, DirectLink, FileEntry, FileId, FolderEntry, FolderId, Listing,
    ProgressFn, Remote, RemoteResult, SpaceInfo, UploadSource,
};

pub struct TrackedRemote {
    inner: Arc<dyn Remote>,
    meta: MetaCache,
}

impl TrackedRemote {
    /// `inner`, telling `meta` about its changes (which costs nothing
    /// while `meta` saves no listings).
    pub fn wrap(inner: Arc<dyn Remote>, meta: &MetaCache) -> Arc<dyn Remote> {
        Arc::new(TrackedRemote {
            inner,
            meta: meta.clone(),
        })
    }

    fn file_changed(&self, file: &FileId) {
        for folder in self.meta.folders_showing_file(file) {
            self.meta.changed(&folder);
        }
    }

    fn folder_changed(&self, folder: &FolderId) {
        self.meta.changed(folder);
        for parent in self.meta.folders_showing_folder(folder) {
            self.meta.changed(&parent);
        }
    }
}

#[async_trait]
impl Remote for TrackedRemote {
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
        self.inner.list_folder(folder).await
    }

    async fn stat_file(&self, file: &FileId) -> RemoteResult<FileEntry> {
        self.inner.stat_file(file).await
    }

    async fn create_folder(&self, parent: &FolderId, name: &str) -> RemoteResult<FolderEntry> {
        let created = self.inner.create_folder(parent, name).await?;
        self.meta.changed(parent);
        Ok(created)
    }

    async fn remove_folder(&self, folder: &FolderId) -> RemoteResult<()> {
        // The parents are known only while the folder is still listed.
        let parents = self.meta.folders_showing_folder(folder);
        self.inner.remove_folder(folder).await?;
        self.meta.changed(folder);
        for parent in parents {
            self.meta.changed(&parent);
        }
        Ok(())
    }

    async fn remove_file(&self, file: &FileId) -> RemoteResult<()> {
        let folders = self.meta.folders_showing_file(file);
        self.inner.remove_file(file).await?;
        for folder in folders {
            self.meta.changed(&folder);
        }
        Ok(())
    }

    async fn rename_file(&self, file: &FileId, new_name: &str) -> RemoteResult<FileEntry> {
        let folders = self.meta.folders_showing_file(file);
        let renamed = self.inner.rename_file(file, new_name).await?;
        for folder in folders {
            self.meta.changed(&folder);
        }
        Ok(renamed)
    }

    async fn move_file(
        &self,
        file: &FileId,
        destination: &FolderId,
        new_name: Option<&str>,
    ) -> RemoteResult<FileEntry> {
        let folders = self.meta.folders_showing_file(file);
        let moved = self.inner.move_file(file, destination, new_name).await?;
        for folder in folders {
            self.meta.changed(&folder);
        }
        self.meta.changed(destination);
        Ok(moved)
    }

    async fn rename_folder(&self, folder: &FolderId, new_name: &str) -> RemoteResult<()> {
        self.inner.rename_folder(folder, new_name).await?;
        self.folder_changed(folder);
        Ok(())
    }

    async fn move_folder(&self, folder: &FolderId, destination: &FolderId) -> RemoteResult<()> {
        let parents = self.meta.folders_showing_folder(folder);
        self.inner.move_folder(folder, destination).await?;
        for parent in parents {
            self.meta.changed(&parent);
        }
        self.folder_changed(folder);
        self.meta.changed(destination);
        Ok(())
    }

    async fn upload(
        &self,
        parent: &FolderId,
        name: &str,
        source: UploadSource,
        progress: Option<ProgressFn>,
    ) -> RemoteResult<FileEntry> {
        let uploaded = self.inner.upload(parent, name, source, progress).await?;
        self.meta.changed(parent);
        Ok(uploaded)
    }

    async fn direct_link(&self, file: &FileId) -> RemoteResult<DirectLink> {
        self.inner.direct_link(file).await
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
        // A file.io read may spend the file's last download: its folder's
        // saved listing may then show a file that is gone.
        if self.inner.read_consumes_download(file) {
            self.file_changed(file);
        }
        self.inner.download_range(file, offset, len).await
    }

    async fn about(&self) -> RemoteResult<SpaceInfo> {
        self.inner.about().await
    }

    fn pacer(&self) -> Option<&crate::remote::pacer::Pacer> {
        self.inner.pacer()
    }
}
