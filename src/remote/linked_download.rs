//! Downloads through direct links, shared by the services whose bytes come
//! from a URL their API hands out (1fichier, fii.one): the link is asked for
//! first, so an unknown file fails at once rather than mid-stream, then a
//! resumable ranged GET runs, asking for a fresh link whenever the server
//! refuses the one it has (expired, or the file renamed away).

use std::sync::Arc;

use async_trait::async_trait;

use super::http::{self, DownloadSettings, LinkProvider};
use super::{ByteStream, DirectLink, FileId, RemoteResult};

/// A backend's cache of direct links.
#[async_trait]
pub trait DirectLinks: Send + Sync + 'static {
    /// A usable direct link of the file, from the cache or the API.
    async fn link(&self, file: &FileId) -> RemoteResult<DirectLink>;

    /// Forgets a cached link the server refused, so the next `link` asks the
    /// API again.
    fn forget_link(&self, file: &FileId);
}

/// Bytes `offset .. offset + len` of `file` (clamped to its end), fetched
/// with `client` from the file's direct link.
pub async fn download_range<L: DirectLinks>(
    links: Arc<L>,
    client: reqwest::Client,
    file: &FileId,
    offset: u64,
    len: u64,
    settings: DownloadSettings,
) -> RemoteResult<ByteStream> {
    if len == 0 {
        return Ok(Box::pin(futures::stream::empty()));
    }
    links.link(file).await?;
    let id = file.clone();
    let provider: LinkProvider = Arc::new(move |refused| {
        let links = links.clone();
        let id = id.clone();
        Box::pin(async move {
            if refused {
                links.forget_link(&id);
            }
            links.link(&id).await.map(|link| link.url)
        })
    });
    Ok(http::ranged_download(
        client, provider, offset, len, settings,
    ))
}
