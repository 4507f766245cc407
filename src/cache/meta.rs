//! The metadata cache: folder listings and account space, each fetched once
//! per time-to-live however many callers ask meanwhile.
//!
//! Concurrent requests for the same folder share one `list_folder` call
//! (single-flight). When a refresh fails for a temporary reason and an older
//! listing is known, the older listing is served rather than an error:
//! a slow or flooded service should not make a browsed folder vanish.
//!
//! With a [`ListingStore`] (warm restarts), every listing fetched is saved,
//! and a folder's first access in a new run answers from the saved listing:
//! at once and without a call while it is younger than the time-to-live;
//! past it, at once too, while a refresh runs behind (stale-while-
//! revalidate) and replaces it when it succeeds. The account's space
//! figures are saved too, and a new run answers `statfs` from them while
//! they are younger than their time-to-live.
//!
//! # The metadata sync file is never part of a listing
//!
//! Every listing, fetched or restored, passes through [`FetchedListing::new`],
//! which takes the hidden per-folder metadata file (`--metadata-sync`, see
//! [`crate::metadata::sync`]) out of the folder's files and keeps it apart in
//! [`FetchedListing::sync_files`]. This is the one place it is filtered: the
//! mount never shows, counts or serves it, with or without the option, and
//! only the metadata sync reads what is kept apart.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;
use tracing::{debug, warn};

use super::listing_store::ListingStore;
use crate::metadata::sync::SYNC_FILE_NAME;
use crate::remote::pacer::{with_priority, Priority};
use crate::remote::resolve::{resolve_path_with, Resolved};
use crate::remote::{FileEntry, FileId, FolderId, Listing, Remote, RemoteResult, SpaceInfo};

/// 1fichier answers `user/info` at most once per 5 minutes per account.
pub const MIN_ABOUT_TTL: Duration = Duration::from_secs(5 * 60);

/// A folder's contents as fetched at one instant.
#[derive(Debug)]
pub struct FetchedListing {
    pub listing: Listing,
    /// Until when it is served without asking the service again.
    pub fresh_until: Instant,
    /// Distinct for every fetch, so consumers can tell whether they have
    /// already digested this listing.
    pub serial: u64,
    /// The folder's metadata sync files (normally one; several after two
    /// machines wrote at once), never among `listing.files`.
    pub sync_files: Vec<FileEntry>,
}

impl FetchedListing {
    /// A listing as the mount may show it: the metadata sync files are
    /// moved out of the files into [`FetchedListing::sync_files`].
    pub fn new(mut listing: Listing, fresh_until: Instant, serial: u64) -> FetchedListing {
        let (sync_files, files) = listing
            .files
            .into_iter()
            .partition(|file| file.name == SYNC_FILE_NAME);
        listing.files = files;
        FetchedListing {
            listing,
            fresh_until,
            serial,
            sync_files,
        }
    }
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
    /// Where listings outlive the process (warm restarts), if anywhere.
    store: OnceLock<Arc<ListingStore>>,
    /// Folders whose store row was already looked at (or is outdated).
    consulted: Mutex<HashSet<FolderId>>,
    /// Folders showing an expired listing of an earlier run, served while
    /// a refresh is tried.
    stale_restored: Mutex<HashSet<FolderId>>,
    /// Set by [`MetaCache::invalidate_all`]: saved listings are not used.
    store_dropped: AtomicBool,
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
                store: OnceLock::new(),
                consulted: Mutex::new(HashSet::new()),
                stale_restored: Mutex::new(HashSet::new()),
                store_dropped: AtomicBool::new(false),
            }),
        }
    }

    /// Saves every listing fetched from now on in `store`, and answers a
    /// folder's first access from what is saved there. Without a
    /// time-to-live (`--dir-cache-time 0`) nothing saved could ever be
    /// served: the store is then left alone.
    pub fn persist_in(&self, store: Arc<ListingStore>) {
        if self.inner.ttl.is_zero() {
            return;
        }
        let _ = self.inner.store.set(store);
    }

    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// Folder listings held.
    pub fn listing_count(&self) -> u64 {
        self.inner.listings.lock().len() as u64
    }

    /// The cached listing if it is still within its time-to-live.
    pub fn fresh(&self, folder: &FolderId) -> Option<Arc<FetchedListing>> {
        self.inner
            .listings
            .lock()
            .get(folder)
            .filter(|fetched| Instant::now() < fetched.fresh_until)
            .cloned()
    }

    /// How long a listing stays fresh from now on.
    pub fn remaining_ttl(&self, fetched: &FetchedListing) -> Duration {
        fetched
            .fresh_until
            .saturating_duration_since(Instant::now())
    }

    /// The folder's listing: cached, saved by an earlier run, joined to a
    /// fetch in flight, or fetched.
    pub async fn listing(&self, folder: &FolderId) -> RemoteResult<Arc<FetchedListing>> {
        if let Some(fetched) = self.fresh(folder) {
            return Ok(fetched);
        }
        if let Some(restored) = self.restored(folder).await {
            if Instant::now() < restored.fresh_until {
                return Ok(restored);
            }
            // Past its time: answer with it now and refresh behind it. Nobody
            // waits on the refresh, so reads waiting for the pacer go first.
            let refresh = self.shared_fetch(folder);
            tokio::spawn(with_priority(Priority::Background, refresh));
            return Ok(restored);
        }
        self.shared_fetch(folder).await
    }

    /// Resolves `path` below the remote's root through this cache: the
    /// folders on the way answer from saved listings like any other, so a
    /// restarted mount finds the folder it mounts without a call.
    pub async fn resolve(&self, path: &str) -> RemoteResult<Resolved> {
        resolve_path_with(self.inner.remote.root(), path, |folder| async move {
            Ok(self.listing(&folder).await?.listing.clone())
        })
        .await
    }

    /// The listing an earlier run saved for `folder`, when this run has not
    /// listed the folder yet (or has only the expired saved listing, whose
    /// refresh has not succeeded yet).
    async fn restored(&self, folder: &FolderId) -> Option<Arc<FetchedListing>> {
        let store = self.inner.store.get()?.clone();
        if self.inner.store_dropped.load(Ordering::SeqCst) {
            return None;
        }
        if self.inner.stale_restored.lock().contains(folder) {
            return self.inner.listings.lock().get(folder).cloned();
        }
        if !self.inner.consulted.lock().insert(folder.clone()) {
            return None;
        }
        let id = folder.clone();
        let stored = match tokio::task::spawn_blocking(move || store.load(&id)).await {
            Ok(Ok(Some(stored))) => stored,
            Ok(Ok(None)) | Err(_) => return None,
            Ok(Err(error)) => {
                warn!(folder = %folder, %error, "cannot read the saved listing; listing the folder");
                return None;
            }
        };
        // Wall-clock age: a listing from before a reboot is as old as it is.
        let age = SystemTime::now()
            .duration_since(stored.fetched_at)
            .unwrap_or_default();
        let now = Instant::now();
        let restored = Arc::new(FetchedListing::new(
            stored.listing,
            now + self.inner.ttl.saturating_sub(age),
            self.inner.serials.fetch_add(1, Ordering::SeqCst),
        ));
        let mut listings = self.inner.listings.lock();
        if listings.contains_key(folder) || self.inner.store_dropped.load(Ordering::SeqCst) {
            // Listed by this run meanwhile: that is newer.
            return None;
        }
        listings.insert(folder.clone(), restored.clone());
        if restored.fresh_until <= now {
            self.inner.stale_restored.lock().insert(folder.clone());
        }
        debug!(folder = %folder, age = ?age, "answering from the listing saved by the last run");
        Some(restored)
    }

    /// The folder's listing as the service has it now: joins a fetch in
    /// flight or starts one, whatever is cached (the metadata sync lists a
    /// folder right before writing its file there).
    pub async fn fetch_now(&self, folder: &FolderId) -> RemoteResult<Arc<FetchedListing>> {
        self.shared_fetch(folder).await
    }

    /// Joins the fetch in flight for `folder`, or starts one.
    fn shared_fetch(&self, folder: &FolderId) -> ListingFuture {
        let mut inflight = self.inner.inflight.lock();
        match inflight.get(folder) {
            Some((_, future)) => future.clone(),
            None => {
                let serial = self.inner.serials.fetch_add(1, Ordering::SeqCst);
                let future = self.fetch(folder.clone(), serial).boxed().shared();
                inflight.insert(folder.clone(), (serial, future.clone()));
                future
            }
        }
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
                    let fetched =
                        Arc::new(FetchedListing::new(listing, started + inner.ttl, serial));
                    if current {
                        inner
                            .listings
                            .lock()
                            .insert(folder.clone(), fetched.clone());
                        inner.stale_restored.lock().remove(&folder);
                        let now = SystemTime::now();
                        let fetched_at = now.checked_sub(started.elapsed()).unwrap_or(now);
                        save(&inner, folder, fetched.clone(), fetched_at);
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
                        _ => {
                            if inner.stale_restored.lock().remove(&folder) {
                                // What the last run saw is gone for good.
                                warn!(folder = %folder, %error, "the saved listing's folder cannot be listed; forgetting it");
                                inner.listings.lock().remove(&folder);
                                forget_saved(&inner, folder);
                            }
                            Err(error)
                        }
                    }
                }
            }
        }
    }

    /// A clock of listing fetches: the serial the next fetch will get. A
    /// listing whose serial is below what this read at some moment was
    /// requested before that moment (the mount's own changes use this to
    /// tell a listing that predates them).
    pub fn serial_clock(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let inner = self.inner.clone();
        move || inner.serials.load(Ordering::SeqCst)
    }

    /// Forgets a folder's listing (after a change made through the mount),
    /// including any fetch in flight and the saved listing, so the next
    /// caller lists it anew.
    pub fn invalidate(&self, folder: &FolderId) {
        self.inner.inflight.lock().remove(folder);
        self.inner.listings.lock().remove(folder);
        self.inner.stale_restored.lock().remove(folder);
        if self.inner.store.get().is_some() {
            self.inner.consulted.lock().insert(folder.clone());
            forget_saved(&self.inner, folder.clone());
        }
    }

    /// `folder` was changed through the mount: its saved listing no longer
    /// describes it, so a restart must list it (this run keeps its own view,
    /// which the inode table updates).
    pub fn changed(&self, folder: &FolderId) {
        if self.inner.store.get().is_none() {
            return;
        }
        self.inner.consulted.lock().insert(folder.clone());
        forget_saved(&self.inner, folder.clone());
    }

    /// The folders whose listing in memory shows file `file` (where a
    /// change to it shows); none asked for when no listing is saved.
    pub fn folders_showing_file(&self, file: &FileId) -> Vec<FolderId> {
        if !self.persists() {
            return Vec::new();
        }
        self.inner
            .listings
            .lock()
            .iter()
            .filter(|(_, fetched)| fetched.listing.files.iter().any(|f| &f.id == file))
            .map(|(folder, _)| folder.clone())
            .collect()
    }

    /// The folders whose listing in memory shows sub-folder `child`; none
    /// asked for when no listing is saved.
    pub fn folders_showing_folder(&self, child: &FolderId) -> Vec<FolderId> {
        if !self.persists() {
            return Vec::new();
        }
        self.inner
            .listings
            .lock()
            .iter()
            .filter(|(_, fetched)| fetched.listing.folders.iter().any(|f| &f.id == child))
            .map(|(folder, _)| folder.clone())
            .collect()
    }

    /// Whether listings are saved for the next run.
    pub fn persists(&self) -> bool {
        self.inner.store.get().is_some()
    }

    /// Forgets every listing, fetch in flight and saved listing (SIGHUP):
    /// each folder is listed anew on its next access.
    pub fn invalidate_all(&self) {
        self.inner.store_dropped.store(true, Ordering::SeqCst);
        self.inner.inflight.lock().clear();
        self.inner.listings.lock().clear();
        self.inner.stale_restored.lock().clear();
        if let Some(store) = self.inner.store.get().cloned() {
            in_background(move || {
                if let Err(error) = store.clear() {
                    warn!(%error, "cannot forget the saved listings");
                }
            });
        }
    }

    /// Space used and total, cached for at least five minutes, across
    /// restarts too when listings are saved.
    pub async fn about(&self) -> RemoteResult<SpaceInfo> {
        let mut cached = self.inner.about.lock().await;
        if cached.is_none() {
            *cached = self.saved_space().await;
        }
        if let Some((at, info)) = *cached {
            if at.elapsed() < self.inner.about_ttl {
                return Ok(info);
            }
        }
        match self.inner.remote.about().await {
            Ok(info) => {
                *cached = Some((Instant::now(), info));
                if let Some(store) = self.inner.store.get().cloned() {
                    let fetched_at = SystemTime::now();
                    in_background(move || {
                        if let Err(error) = store.save_space(info, fetched_at) {
                            warn!(%error, "cannot save the account's space for the next start");
                        }
                    });
                }
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

    /// The space figures an earlier run saved, dated as old as they are.
    async fn saved_space(&self) -> Option<(Instant, SpaceInfo)> {
        let store = self.inner.store.get()?.clone();
        if self.inner.store_dropped.load(Ordering::SeqCst) {
            return None;
        }
        let (info, fetched_at) = match tokio::task::spawn_blocking(move || store.load_space()).await
        {
            Ok(Ok(Some(saved))) => saved,
            Ok(Ok(None)) | Err(_) => return None,
            Ok(Err(error)) => {
                warn!(%error, "cannot read the saved account space; asking the service");
                return None;
            }
        };
        let age = SystemTime::now()
            .duration_since(fetched_at)
            .unwrap_or_default();
        // Too old to express as an instant (early after boot): long expired.
        let at = Instant::now().checked_sub(age)?;
        Some((at, info))
    }
}

/// Saves a fetched listing for the next run, off the async threads.
fn save(inner: &Inner, folder: FolderId, fetched: Arc<FetchedListing>, fetched_at: SystemTime) {
    let Some(store) = inner.store.get().cloned() else {
        return;
    };
    in_background(move || {
        if let Err(error) = store.save(&folder, &fetched.listing, fetched_at) {
            warn!(folder = %folder, %error, "cannot save the listing for the next start");
        }
    });
}

/// Drops a folder's saved listing, off the async threads.
fn forget_saved(inner: &Inner, folder: FolderId) {
    let Some(store) = inner.store.get().cloned() else {
        return;
    };
    in_background(move || {
        if let Err(error) = store.drop_folder(&folder) {
            warn!(folder = %folder, %error, "cannot forget the saved listing");
        }
    });
}

/// Runs store work on the runtime's blocking threads (inline when there is
/// no runtime: nothing async waits then).
fn in_background(work: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(work);
        }
        Err(_) => work(),
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
    async fn the_metadata_sync_file_is_kept_out_of_every_listing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ListingStore::open(&dir.path().join("listings.db")).unwrap());
        let remote = Arc::new(MemoryRemote::new());
        remote.add_file("a", vec![1]);
        remote.add_file(SYNC_FILE_NAME, vec![2]);
        remote.add_file(SYNC_FILE_NAME, vec![3]);
        let root = remote.root();
        let cache = MetaCache::new(remote.clone(), Duration::from_secs(3600));
        cache.persist_in(store.clone());
        let fetched = cache.listing(&root).await.unwrap();
        let names: Vec<_> = fetched.listing.files.iter().map(|f| &f.name).collect();
        assert_eq!(names, ["a"]);
        assert_eq!(fetched.sync_files.len(), 2);
        assert!(fetched.sync_files.iter().all(|f| f.name == SYNC_FILE_NAME));
        // A listing saved with the file (by an older program) is filtered
        // when restored too.
        saved(&store, &root, 1).await;
        let mut with_file = store.load(&root).unwrap().unwrap().listing;
        with_file.files.extend(fetched.sync_files.iter().cloned());
        store.save(&root, &with_file, SystemTime::now()).unwrap();
        let restarted = MetaCache::new(remote.clone(), Duration::from_secs(3600));
        restarted.persist_in(store);
        let restored = restarted.listing(&root).await.unwrap();
        assert_eq!(restored.listing.files.len(), 1);
        assert_eq!(restored.sync_files.len(), 2);
        assert_eq!(remote.list_requests(), 1);
        let refetched = restarted.fetch_now(&root).await.unwrap();
        assert_eq!(refetched.listing.files.len(), 1);
        assert_eq!(remote.list_requests(), 2);
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

    #[tokio::test]
    async fn a_new_cache_answers_statfs_from_the_saved_space_while_it_is_young() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ListingStore::open(&dir.path().join("listings.db")).unwrap());
        let remote = Arc::new(MemoryRemote::new());
        remote.add_file("a", vec![0; 1000]);
        let hour = Duration::from_secs(3600);

        let first = MetaCache::new(remote.clone(), hour);
        first.persist_in(store.clone());
        assert_eq!(first.about().await.unwrap().used, 1000);
        assert_eq!(remote.about_requests(), 1);
        for _ in 0..500 {
            if store.load_space().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // A restart: the saved figures answer, without a call.
        let restarted = MetaCache::new(remote.clone(), hour);
        restarted.persist_in(store.clone());
        assert_eq!(restarted.about().await.unwrap().used, 1000);
        assert_eq!(remote.about_requests(), 1);

        // Saved longer ago than the time-to-live: asked again.
        let (space, _) = store.load_space().unwrap().unwrap();
        store
            .save_space(space, SystemTime::now() - 2 * hour)
            .unwrap();
        let late = MetaCache::new(remote.clone(), hour);
        late.persist_in(store.clone());
        late.about().await.unwrap();
        assert_eq!(remote.about_requests(), 2);

        // Without saved listings nothing saved is used.
        let unsaved = MetaCache::new(remote.clone(), hour);
        unsaved.about().await.unwrap();
        assert_eq!(remote.about_requests(), 3);
    }

    /// The store's row for `folder` once a background save has landed.
    async fn saved(store: &ListingStore, folder: &FolderId, files: usize) {
        for _ in 0..500 {
            if let Ok(Some(saved)) = store.load(folder) {
                if saved.listing.files.len() == files {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the listing was not saved");
    }

    #[tokio::test]
    async fn a_new_cache_answers_from_saved_listings_and_revalidates_expired_ones() {
        use crate::remote::failing::{FailingRemote, Operation};
        use crate::remote::RemoteError;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ListingStore::open(&dir.path().join("listings.db")).unwrap());
        let memory = Arc::new(MemoryRemote::new());
        memory.add_file("a", vec![1]);
        let remote = Arc::new(FailingRemote::new(memory.clone()));
        let root = memory.root();
        let hour = Duration::from_secs(3600);

        let first = MetaCache::new(remote.clone(), hour);
        first.persist_in(store.clone());
        first.listing(&root).await.unwrap();
        assert_eq!(memory.list_requests(), 1);
        saved(&store, &root, 1).await;

        // A restart within the time-to-live: no call at all.
        memory.add_file("b", vec![2]);
        let restarted = MetaCache::new(remote.clone(), hour);
        restarted.persist_in(store.clone());
        let answer = restarted.listing(&root).await.unwrap();
        assert_eq!(answer.listing.files.len(), 1);
        assert!(restarted.fresh(&root).is_some());
        assert_eq!(memory.list_requests(), 1);

        // Saved two hours ago: answered at once, refreshed behind; a failed
        // refresh keeps the saved listing in service.
        let old = store.load(&root).unwrap().unwrap();
        let two_hours_ago = SystemTime::now() - 2 * hour;
        store.save(&root, &old.listing, two_hours_ago).unwrap();
        remote.fail_next(Operation::List, 1, RemoteError::Transient("flooded".into()));
        let late = MetaCache::new(remote.clone(), hour);
        late.persist_in(store.clone());
        let answer = late.listing(&root).await.unwrap();
        assert_eq!(answer.listing.files.len(), 1);
        assert_eq!(late.remaining_ttl(&answer), Duration::ZERO);
        for _ in 0..500 {
            if remote.injected(Operation::List) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let again = late.listing(&root).await.unwrap();
        assert_eq!(
            again.listing.files.len(),
            1,
            "the saved listing still serves"
        );
        for _ in 0..500 {
            if late.fresh(&root).is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let fresh = late.fresh(&root).expect("revalidated behind the answers");
        assert_eq!(fresh.listing.files.len(), 2);
        saved(&store, &root, 2).await;

        // A change through the mount drops the saved row: the next start lists.
        late.invalidate(&root);
        for _ in 0..500 {
            if store.load(&root).unwrap().is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(store.load(&root).unwrap().is_none());
        let calls = memory.list_requests();
        let next = MetaCache::new(remote.clone(), hour);
        next.persist_in(store.clone());
        next.listing(&root).await.unwrap();
        assert_eq!(memory.list_requests(), calls + 1);
    }
}
