//! The metadata cache: folder listings and account space, each fetched once
//! per time-to-live however many callers ask meanwhile.
//!
//! Concurrent requests for the same folder share one `list_folder` call
//! (single-flight). When a refresh fails for a temporary reason and an older
//! listing is known, the older listing is served rather than an error:
//! a slow or flooded service should not make a browsed folder vanish.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;
use tracing::{debug, warn};

use crate::remote::{FolderId, Listing, Remote, RemoteResult, SpaceInfo};

/// 1fichier answers `user/info` at most once per 5 minutes per account.
pub const MIN_ABOUT_TTL: Duration = Duration::from_secs(5 * 60);

/// A folder's contents as fetched at one instant.
#[derive(Debug)]
pub struct FetchedListing {
    pub listing: Listing,
    pub fetched_at: Instant,
    /// Distinct for every fetch, so consumers can tell whether they have
    /// already digested this listing.
    pub serial: u64,
}

type ListingFuture = Shared<BoxFuture<'static, RemoteResult<Arc<FetchedListing>>>>;

#[derive(Clone)]
pub struct MetaCache {
    inner: Arc<Inner>,
}

struct Inner {
    remote: Arc<dyn Remote>,
    ttl: Duration,
    listings: Mutex<HashMap<FolderId, Arc<FetchedListing>>>,
    /// Fetch serial and shared future of each listing being fetched.
    inflight: Mutex<HashMap<FolderId, (u64, ListingFuture)>>,
    serials: AtomicU64,
    about: tokio::sync::Mutex<Option<(Instant, SpaceInfo)>>,
    about_ttl: Duration,
}

impl MetaCache {
    pub fn new(remote: Arc<dyn Remote>, ttl: Duration) -> Self {
        MetaCache {
            inner: Arc::new(Inner {
                remote,
                ttl,
                listings: Mutex::new(HashMap::new()),
                inflight: Mutex::new(HashMap::new()),
                serials: AtomicU64::new(1),
                about: tokio::sync::Mutex::new(None),
                about_ttl: ttl.max(MIN_ABOUT_TTL),
            }),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The cached listing if it is still within its time-to-live.
    pub fn fresh(&self, folder: &FolderId) -> Option<Arc<FetchedListing>> {
        self.inner
            .listings
            .lock()
            .get(folder)
            .filter(|fetched| fetched.fetched_at.elapsed() < self.inner.ttl)
            .cloned()
    }

    /// How long a listing stays fresh from now on.
    pub fn remaining_ttl(&self, fetched: &FetchedListing) -> Duration {
        self.inner.ttl.saturating_sub(fetched.fetched_at.elapsed())
    }

    /// The folder's listing: cached, joined to a fetch in flight, or fetched.
    pub async fn listing(&self, folder: &FolderId) -> RemoteResult<Arc<FetchedListing>> {
        if let Some(fetched) = self.fresh(folder) {
            return Ok(fetched);
        }
        let future = {
            let mut inflight = self.inner.inflight.lock();
            match inflight.get(folder) {
                Some((_, future)) => future.clone(),
                None => {
                    let serial = self.inner.serials.fetch_add(1, Ordering::Relaxed);
                    let future = self.fetch(folder.clone(), serial).boxed().shared();
                    inflight.insert(folder.clone(), (serial, future.clone()));
                    future
                }
            }
        };
        future.await
    }

    fn fetch(
        &self,
        folder: FolderId,
        serial: u64,
    ) -> impl std::future::Future<Output = RemoteResult<Arc<FetchedListing>>> + Send + 'static {
        let inner = self.inner.clone();
        async move {
            let started = Instant::now();
            let result = inner.remote.list_folder(&folder).await;
            let mut inflight = inner.inflight.lock();
            // Only the fetch still registered may publish: one started
            // before an invalidation may describe the folder as it was.
            let current = inflight.get(&folder).map(|(s, _)| *s) == Some(serial);
            if current {
                inflight.remove(&folder);
            }
            drop(inflight);
            match result {
                Ok(listing) => {
                    debug!(folder = %folder, files = listing.files.len(), folders = listing.folders.len(),
                        elapsed = ?started.elapsed(), "listed folder");
                    let fetched = Arc::new(FetchedListing {
                        listing,
                        fetched_at: started,
                        serial,
                    });
                    if current {
                        inner.listings.lock().insert(folder, fetched.clone());
                    }
                    Ok(fetched)
                }
                Err(error) => {
                    let stale = inner.listings.lock().get(&folder).cloned();
                    match stale {
                        Some(stale) if error.is_retryable() => {
                            warn!(folder = %folder, %error, "listing refresh failed; serving the previous listing");
                            Ok(stale)
                        }
                        _ => Err(error),
                    }
                }
            }
        }
    }

    /// Forgets a folder's listing (after a change made through the mount),
    /// including any fetch in flight, so the next caller lists it anew.
    pub fn invalidate(&self, folder: &FolderId) {
        self.inner.inflight.lock().remove(folder);
        self.inner.listings.lock().remove(folder);
    }

    /// Forgets every listing and fetch in flight (SIGHUP): each folder is
    /// listed anew on its next access.
    pub fn invalidate_all(&self) {
        self.inner.inflight.lock().clear();
        self.inner.listings.lock().clear();
    }

    /// Space used and total, cached for at least five minutes.
    pub async fn about(&self) -> RemoteResult<SpaceInfo> {
        let mut cached = self.inner.about.lock().await;
        if let Some((at, info)) = *cached {
            if at.elapsed() < self.inner.about_ttl {
                return Ok(info);
            }
        }
        match self.inner.remote.about().await {
            Ok(info) => {
                *cached = Some((Instant::now(), info));
                Ok(info)
            }
            Err(error) => match *cached {
                Some((_, info)) => {
                    debug!(%error, "account info refresh failed; serving the previous figures");
                    Ok(info)
                }
                None => Err(error),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::memory::MemoryRemote;

    #[tokio::test]
    async fn concurrent_listings_share_one_call_and_expire() {
        let remote = Arc::new(MemoryRemote::new());
        remote.add_file("a", vec![1]);
        remote.set_list_delay(Duration::from_millis(50));
        let cache = MetaCache::new(remote.clone(), Duration::from_millis(300));
        let root = remote.root();
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let cache = cache.clone();
            let root = root.clone();
            tasks.push(tokio::spawn(async move { cache.listing(&root).await }));
        }
        let mut serials = Vec::new();
        for task in tasks {
            serials.push(task.await.unwrap().unwrap().serial);
        }
        assert!(serials.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(remote.list_requests(), 1);
        assert!(cache.fresh(&root).is_some());
        cache.listing(&root).await.unwrap();
        assert_eq!(remote.list_requests(), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(cache.fresh(&root).is_none());
        let again = cache.listing(&root).await.unwrap();
        assert_eq!(remote.list_requests(), 2);
        assert_ne!(again.serial, serials[0]);
        cache.invalidate(&root);
        cache.listing(&root).await.unwrap();
        assert_eq!(remote.list_requests(), 3);
        cache.invalidate_all();
        assert!(cache.fresh(&root).is_none());
        cache.listing(&root).await.unwrap();
        assert_eq!(remote.list_requests(), 4);
    }

    #[tokio::test]
    async fn unknown_folder_is_an_error_and_about_is_cached() {
        let remote = Arc::new(MemoryRemote::new());
        remote.add_file("a", vec![0; 1000]);
        let cache = MetaCache::new(remote.clone(), Duration::from_secs(1));
        let err = cache.listing(&FolderId("42".into())).await.unwrap_err();
        assert!(
            matches!(err, crate::remote::RemoteError::NotFound(_)),
            "{err}"
        );
        for _ in 0..3 {
            assert_eq!(cache.about().await.unwrap().used, 1000);
        }
        assert_eq!(remote.about_requests(), 1);
    }
}
