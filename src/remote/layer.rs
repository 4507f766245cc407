//! Wrappers that pass every call through to another [`Remote`] and add
//! something on the way (counting, injected failures, invalidating saved
//! listings) implement [`RemoteLayer`] instead of [`Remote`]: they say what
//! they do before a call and after its answer, and the one implementation
//! of `Remote` here forwards each method of the trait for all of them. A
//! method added to the trait is then forwarded once, not once per wrapper,
//! and a wrapper cannot forget to pass one through.

use std::future::Future;

use async_trait::async_trait;

use super::{
    pacer::Pacer, ByteStream, Capabilities, DirectLink, FileEntry, FileId, FolderEntry, FolderId,
    Listing, ProgressFn, Remote, RemoteError, RemoteResult, SpaceInfo, UploadSource,
};

/// One call of a [`Remote`] operation that talks to the service, with the
/// arguments a layer may look at.
#[derive(Clone, Copy, Debug)]
pub enum Call<'a> {
    List {
        folder: &'a FolderId,
    },
    Stat {
        file: &'a FileId,
    },
    CreateFolder {
        parent: &'a FolderId,
        name: &'a str,
    },
    RemoveFolder {
        folder: &'a FolderId,
    },
    RemoveFile {
        file: &'a FileId,
    },
    RenameFile {
        file: &'a FileId,
        new_name: &'a str,
    },
    MoveFile {
        file: &'a FileId,
        destination: &'a FolderId,
        new_name: Option<&'a str>,
    },
    RenameFolder {
        folder: &'a FolderId,
        new_name: &'a str,
    },
    MoveFolder {
        folder: &'a FolderId,
        destination: &'a FolderId,
    },
    Upload {
        parent: &'a FolderId,
        name: &'a str,
    },
    DirectLink {
        file: &'a FileId,
    },
    Download {
        file: &'a FileId,
        offset: u64,
        len: u64,
    },
    About,
}

/// What a successful call answered, as far as layers look at it.
#[derive(Clone, Copy, Debug)]
pub enum Answer<'a> {
    /// The file a stat, rename, move or upload answered.
    File(&'a FileEntry),
    /// Anything else (a listing, a folder, a link, a stream, nothing).
    Other,
}

/// A pass-through wrapper of a remote: what it adds around each call.
pub trait RemoteLayer: Send + Sync + 'static {
    /// What [`RemoteLayer::before`] learns about a call and hands to
    /// [`RemoteLayer::after`] (e.g. the folders a removal will change,
    /// known only before the file is gone).
    type Ticket: Send;

    /// The remote every call goes on to.
    fn inner(&self) -> &dyn Remote;

    /// Runs before the call reaches the wrapped remote; an error answers
    /// the call instead (the wrapped remote never sees it).
    fn before(&self, call: &Call<'_>) -> RemoteResult<Self::Ticket>;

    /// Runs once the wrapped remote answered (not when `before` refused).
    fn after(
        &self,
        _call: &Call<'_>,
        _ticket: Self::Ticket,
        _outcome: Result<Answer<'_>, &RemoteError>,
    ) {
    }

    /// The body of a download as the caller receives it.
    fn received(&self, stream: ByteStream) -> ByteStream {
        stream
    }
}

/// `operation` on the wrapped remote, with the layer's work around it.
async fn through<L, T>(
    layer: &L,
    call: Call<'_>,
    operation: impl Future<Output = RemoteResult<T>> + Send,
    answer: for<'r> fn(&'r T) -> Answer<'r>,
) -> RemoteResult<T>
where
    L: RemoteLayer + ?Sized,
{
    let ticket = layer.before(&call)?;
    let result = operation.await;
    layer.after(&call, ticket, result.as_ref().map(answer));
    result
}

fn other<T>(_: &T) -> Answer<'_> {
    Answer::Other
}

fn file(entry: &FileEntry) -> Answer<'_> {
    Answer::File(entry)
}

#[async_trait]
impl<L: RemoteLayer> Remote for L {
    fn service(&self) -> &'static str {
        self.inner().service()
    }

    fn capabilities(&self) -> &Capabilities {
        self.inner().capabilities()
    }

    fn root(&self) -> FolderId {
        self.inner().root()
    }

    async fn list_folder(&self, folder: &FolderId) -> RemoteResult<Listing> {
        let call = Call::List { folder };
        through(self, call, self.inner().list_folder(folder), other).await
    }

    async fn stat_file(&self, file_id: &FileId) -> RemoteResult<FileEntry> {
        let call = Call::Stat { file: file_id };
        through(self, call, self.inner().stat_file(file_id), file).await
    }

    async fn create_folder(&self, parent: &FolderId, name: &str) -> RemoteResult<FolderEntry> {
        let call = Call::CreateFolder { parent, name };
        through(self, call, self.inner().create_folder(parent, name), other).await
    }

    async fn remove_folder(&self, folder: &FolderId) -> RemoteResult<()> {
        let call = Call::RemoveFolder { folder };
        through(self, call, self.inner().remove_folder(folder), other).await
    }

    async fn remove_file(&self, file_id: &FileId) -> RemoteResult<()> {
        let call = Call::RemoveFile { file: file_id };
        through(self, call, self.inner().remove_file(file_id), other).await
    }

    async fn rename_file(&self, file_id: &FileId, new_name: &str) -> RemoteResult<FileEntry> {
        let call = Call::RenameFile {
            file: file_id,
            new_name,
        };
        let operation = self.inner().rename_file(file_id, new_name);
        through(self, call, operation, file).await
    }

    async fn move_file(
        &self,
        file_id: &FileId,
        destination: &FolderId,
        new_name: Option<&str>,
    ) -> RemoteResult<FileEntry> {
        let call = Call::MoveFile {
            file: file_id,
            destination,
            new_name,
        };
        let operation = self.inner().move_file(file_id, destination, new_name);
        through(self, call, operation, file).await
    }

    async fn rename_folder(&self, folder: &FolderId, new_name: &str) -> RemoteResult<()> {
        let call = Call::RenameFolder { folder, new_name };
        let operation = self.inner().rename_folder(folder, new_name);
        through(self, call, operation, other).await
    }

    async fn move_folder(&self, folder: &FolderId, destination: &FolderId) -> RemoteResult<()> {
        let call = Call::MoveFolder {
            folder,
            destination,
        };
        let operation = self.inner().move_folder(folder, destination);
        through(self, call, operation, other).await
    }

    async fn upload(
        &self,
        parent: &FolderId,
        name: &str,
        source: UploadSource,
        progress: Option<ProgressFn>,
    ) -> RemoteResult<FileEntry> {
        let call = Call::Upload { parent, name };
        let operation = self.inner().upload(parent, name, source, progress);
        through(self, call, operation, file).await
    }

    async fn direct_link(&self, file_id: &FileId) -> RemoteResult<DirectLink> {
        let call = Call::DirectLink { file: file_id };
        through(self, call, self.inner().direct_link(file_id), other).await
    }

    fn invalidate_link(&self, file_id: &FileId) {
        self.inner().invalidate_link(file_id)
    }

    fn read_consumes_download(&self, file_id: &FileId) -> bool {
        self.inner().read_consumes_download(file_id)
    }

    fn check_name(&self, name: &str) -> RemoteResult<()> {
        self.inner().check_name(name)
    }

    async fn download_range(
        &self,
        file_id: &FileId,
        offset: u64,
        len: u64,
    ) -> RemoteResult<ByteStream> {
        let call = Call::Download {
            file: file_id,
            offset,
            len,
        };
        let operation = self.inner().download_range(file_id, offset, len);
        let stream = through(self, call, operation, other).await?;
        Ok(self.received(stream))
    }

    async fn about(&self) -> RemoteResult<SpaceInfo> {
        through(self, Call::About, self.inner().about(), other).await
    }

    fn pacer(&self) -> Option<&Pacer> {
        self.inner().pacer()
    }
}
