//! A [`Remote`] whose changes drop the saved listings they outdate.
//!
//! While a mount runs, its inode table shows its own changes over the
//! cached listings; the listings saved for the next start (see
//! [`super::listing_store`]) know nothing of them. A restart answering from
//! a saved listing would then hide a file just uploaded or show one just
//! removed, so every successful change here tells the metadata cache which
//! folders it touched, and their saved listings are forgotten.

use std::sync::Arc;

use super::meta::MetaCache;
use crate::remote::layer::{Answer, Call, RemoteLayer};
use crate::remote::{FileId, FolderId, Remote, RemoteError, RemoteResult};

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

    /// The folders whose listings show `file` now.
    fn showing_file(&self, file: &FileId) -> Vec<FolderId> {
        self.meta.folders_showing_file(file)
    }

    /// `folder` itself and the folders whose listings show it now.
    fn folder_and_parents(&self, folder: &FolderId) -> Vec<FolderId> {
        let mut folders = vec![folder.clone()];
        folders.extend(self.meta.folders_showing_folder(folder));
        folders
    }
}

impl RemoteLayer for TrackedRemote {
    /// The folders a change outdates, found before it is made: a removed
    /// or moved entry's parents are known only while it is still listed.
    type Ticket = Vec<FolderId>;

    fn inner(&self) -> &dyn Remote {
        &*self.inner
    }

    fn before(&self, call: &Call<'_>) -> RemoteResult<Vec<FolderId>> {
        Ok(match *call {
            Call::CreateFolder { parent, .. } | Call::Upload { parent, .. } => vec![parent.clone()],
            Call::RemoveFile { file } | Call::RenameFile { file, .. } => self.showing_file(file),
            Call::MoveFile {
                file, destination, ..
            } => {
                let mut folders = self.showing_file(file);
                folders.push(destination.clone());
                folders
            }
            Call::RemoveFolder { folder } | Call::RenameFolder { folder, .. } => {
                self.folder_and_parents(folder)
            }
            Call::MoveFolder {
                folder,
                destination,
            } => {
                let mut folders = self.folder_and_parents(folder);
                folders.push(destination.clone());
                folders
            }
            Call::Download { file, .. } => {
                // A file.io read may spend the file's last download: its
                // folder's saved listing may then show a file that is gone,
                // whether or not the read succeeds.
                if self.inner.read_consumes_download(file) {
                    for folder in self.showing_file(file) {
                        self.meta.changed(&folder);
                    }
                }
                Vec::new()
            }
            Call::List { .. } | Call::Stat { .. } | Call::DirectLink { .. } | Call::About => {
                Vec::new()
            }
        })
    }

    fn after(
        &self,
        _call: &Call<'_>,
        outdated: Vec<FolderId>,
        outcome: Result<Answer<'_>, &RemoteError>,
    ) {
        if outcome.is_ok() {
            for folder in outdated {
                self.meta.changed(&folder);
            }
        }
    }
}
