//! The write-back queue on its own, against a real `filehostfs serve` and
//! the real 1fichier backend: staging, delay, overwrite, cancel, retarget,
//! placeholders, crash recovery, injected failures, quota.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Emulator, EmulatorOptions};
use filehostfs::fs::error::Errno as _;
use filehostfs::remote::fichier::{Fichier, FichierOptions};
use filehostfs::remote::pacer::PacerConfig;
use filehostfs::remote::{ApiKey, FileEntry, FolderId, Listing, Remote, RemoteError, UploadSource};
use filehostfs::writeback::{
    EntryId, EntryState, Replaced, WriteBack, WriteBackError, WriteBackOptions, WriteEvent,
};
use futures::StreamExt;

/// Every wait in these tests is bounded by this (the machine is loaded).
const PATIENCE: Duration = Duration::from_secs(120);

/// The 1fichier backend pointed at the emulator, with fast retries so
/// injected failures do not make the tests slow.
fn remote_for(emu: &Emulator, key: &str) -> Arc<dyn Remote> {
    let mut options = FichierOptions::new(ApiKey::new(key));
    options.api_url = emu.fichier_url();
    options.pacer = PacerConfig {
        rate_per_sec: 200.0,
        burst: 50,
        max_attempts: 4,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        max_server_wait: Duration::from_secs(5),
    };
    options.flood_wait = Duration::from_millis(100);
    options.account_flood_wait = Duration::from_millis(100);
    Arc::new(Fichier::new(options).expect("building the 1fichier backend"))
}

fn queue_options(delay: Duration) -> WriteBackOptions {
    let mut options = WriteBackOptions::new("1fichier:test");
    options.delay = delay;
    options.retry_base = Duration::from_millis(100);
    options.retry_max = Duration::from_secs(1);
    options.permanent_retry = Duration::from_secs(60);
    options
}

struct Setup {
    emu: Emulator,
    remote: Arc<dyn Remote>,
    cache: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup::with_emulator(Emulator::start())
    }

    fn with_emulator(emu: Emulator) -> Setup {
        let remote = remote_for(&emu, &emu.key());
        let cache = tempfile::tempdir().unwrap();
        Setup { emu, remote, cache }
    }

    fn root(&self) -> FolderId {
        self.remote.root()
    }

    /// Opens the queue on this setup's cache dir and starts its worker.
    fn queue(&self, delay: Duration) -> WriteBack {
        let (queue, recovery) =
            WriteBack::open(self.cache.path(), self.remote.clone(), queue_options(delay))
                .expect("opening the write-back queue");
        assert!(recovery.resumed.is_empty(), "fresh cache dir: {recovery:?}");
        queue.start();
        queue
    }

    fn staging_files(&self) -> Vec<String> {
        staged_data_files(self.cache.path())
    }
}

fn staged_data_files(cache: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cache.join("staging"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".data"))
        .collect();
    names.sort();
    names
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

async fn listing(remote: &Arc<dyn Remote>, folder: &FolderId) -> Listing {
    remote.list_folder(folder).await.expect("listing a folder")
}

async fn files_named(remote: &Arc<dyn Remote>, folder: &FolderId, name: &str) -> Vec<FileEntry> {
    listing(remote, folder)
        .await
        .files
        .into_iter()
        .filter(|f| f.name == name)
        .collect()
}

async fn download(remote: &Arc<dyn Remote>, file: &FileEntry) -> Vec<u8> {
    let mut stream = remote
        .download_range(&file.id, 0, file.size)
        .await
        .expect("starting a download");
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.expect("downloading"));
    }
    bytes
}

/// The single remote file called `name` in `folder`, with its content.
async fn only_file(
    remote: &Arc<dyn Remote>,
    folder: &FolderId,
    name: &str,
) -> (FileEntry, Vec<u8>) {
    let files = files_named(remote, folder, name).await;
    assert_eq!(files.len(), 1, "expected exactly one {name:?}: {files:#?}");
    let file = files.into_iter().next().unwrap();
    let bytes = download(remote, &file).await;
    (file, bytes)
}

async fn upload_bytes(
    remote: &Arc<dyn Remote>,
    folder: &FolderId,
    name: &str,
    data: &[u8],
) -> FileEntry {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upload");
    std::fs::write(&path, data).unwrap();
    remote
        .upload(folder, name, UploadSource::Path(path), None)
        .await
        .expect("seeding a remote file")
}

/// Writes `data` as a new pending file (in two writes, the second one
/// overwriting part of the first) and releases it.
fn stage(queue: &WriteBack, folder: &FolderId, name: &str, data: &[u8]) -> EntryId {
    let handle = queue.create(folder, name, None).expect("create");
    let half = data.len() / 2;
    handle.write_at(&vec![0xAA; data.len()], 0).unwrap();
    handle.write_at(&data[half..], half as u64).unwrap();
    handle.write_at(&data[..half], 0).unwrap();
    let id = handle.id();
    handle.release().expect("release");
    id
}

async fn drain_all(queue: &WriteBack) {
    let report = queue.drain(PATIENCE).await;
    assert!(report.left.is_empty(), "left journaled: {:#?}", report.left);
}

async fn eventually<F: Fn() -> bool>(what: &str, condition: F) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_file_is_uploaded_after_the_delay_then_finalized() {
    let setup = Setup::new();
    let queue = setup.queue(Duration::from_millis(1500));
    let finalized: Arc<Mutex<Vec<(EntryId, FileEntry)>>> = Arc::default();
    let events = finalized.clone();
    queue.set_listener(Arc::new(move |event| {
        if let WriteEvent::Finalized { entry, file, .. } = event {
            events.lock().unwrap().push((*entry, file.clone()));
        }
    }));
    let data = pseudo_random(300_000, 1);
    let released_at = Instant::now();
    let id = stage(&queue, &setup.root(), "report.bin", &data);

    // Pending: listed locally with its size, nothing sent yet.
    let pending = queue.pending_in(&setup.root());
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].name.as_str(), pending[0].size),
        ("report.bin", 300_000)
    );
    assert_eq!(setup.emu.request_count("1fichier:upload"), 0);
    let mut staged = vec![0u8; data.len()];
    let read = queue.open_read(id).unwrap();
    std::os::unix::fs::FileExt::read_exact_at(&read, &mut staged, 0).unwrap();
    assert_eq!(staged, data, "reads of a pending file see the new bytes");

    eventually("the entry to finish", || queue.outstanding() == 0).await;
    assert!(
        released_at.elapsed() >= Duration::from_millis(1500),
        "uploaded before the write-back delay"
    );
    let (file, bytes) = only_file(&setup.remote, &setup.root(), "report.bin").await;
    assert_eq!(bytes, data);
    assert_eq!(setup.emu.request_count("1fichier:upload"), 1);
    assert!(queue.attr(id).is_none());
    assert!(setup.staging_files().is_empty());
    let finalized = finalized.lock().unwrap().clone();
    assert_eq!(finalized.len(), 1);
    assert_eq!((finalized[0].0, &finalized[0].1.id), (id, &file.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_uploads_the_new_version_then_removes_the_old() {
    let setup = Setup::new();
    let queue = setup.queue(Duration::from_secs(30));
    let original = pseudo_random(200_000, 2);
    let base = upload_bytes(&setup.remote, &setup.root(), "doc.txt", &original).await;

    let handle = queue
        .open_remote(&setup.root(), "doc.txt", &base, false)
        .unwrap();
    let bytes = setup
        .remote
        .download_range(&base.id, 0, base.size)
        .await
        .unwrap();
    handle
        .fill(bytes)
        .await
        .expect("filling from the remote file");
    handle.write_at(b"EDITED", 1000).unwrap();
    handle.write_at(b"TAIL", 200_000).unwrap();
    handle.release().unwrap();
    assert!(queue.hidden_remote_ids().contains(&base.id));
    assert_eq!(queue.pending_in(&setup.root())[0].size, 200_004);

    drain_all(&queue).await;
    let mut expected = original.clone();
    expected[1000..1006].copy_from_slice(b"EDITED");
    expected.extend_from_slice(b"TAIL");
    let (file, bytes) = only_file(&setup.remote, &setup.root(), "doc.txt").await;
    assert_eq!(bytes, expected);
    assert_ne!(file.id, base.id);
    assert!(matches!(
        setup.remote.stat_file(&base.id).await,
        Err(RemoteError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_removed_while_a_copy_is_still_open() {
    let setup = Setup::new();
    let queue = setup.queue(Duration::ZERO);
    let base = upload_bytes(&setup.remote, &setup.root(), "busy.txt", b"keep me").await;
    // Opened, not yet filled (so empty): the worker must leave the base alone.
    let handle = queue
        .open_remote(&setup.root(), "busy.txt", &base, false)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    setup
        .remote
        .stat_file(&base.id)
        .await
        .expect("base still there");
    let bytes = setup
        .remote
        .download_range(&base.id, 0, base.size)
        .await
        .unwrap();
    handle.fill(bytes).await.unwrap();
    handle.write_at(b"K", 0).unwrap();
    handle.release().unwrap();
    drain_all(&queue).await;
    assert_eq!(
        only_file(&setup.remote, &setup.root(), "busy.txt").await.1,
        b"Keep me"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_opened_for_writing_but_unchanged_is_not_uploaded() {
    let setup = Setup::new();
    let queue = setup.queue(Duration::ZERO);
    let base = upload_bytes(&setup.remote, &setup.root(), "same.txt", b"unchanged").await;
    setup.emu.reset_stats();
    let handle = queue
        .open_remote(&setup.root(), "same.txt", &base, false)
        .unwrap();
    let bytes = setup
        .remote
        .download_range(&base.id, 0, base.size)
        .await
        .unwrap();
    handle.fill(bytes).await.unwrap();
    let id = handle.id();
    queue
        .wait_durable(id)
        .await
        .expect("fsync of unchanged content");
    handle.release().unwrap();
    drain_all(&queue).await;
    assert_eq!(setup.emu.request_count("1fichier:upload"), 0);
    let (file, _) = only_file(&setup.remote, &setup.root(), "same.txt").await;
    assert_eq!(file.id, base.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_rewritten_with_the_same_bytes_keeps_the_remote_file() {
    let setup = Setup::new();
    let queue = setup.queue(Duration::ZERO);
    let content = pseudo_random(150_000, 9);
    let base = upload_bytes(&setup.remote, &setup.root(), "same.bin", &content).await;
    setup.emu.reset_stats();
    // Truncated and written again (what `cp` and editors do).
    let handle = queue
        .open_remote(&setup.root(), "same.bin", &base, true)
        .unwrap();
    handle.write_at(&content, 0).unwrap();
    handle.release().unwrap();
    drain_all(&queue).await;
    assert_eq!(setup.emu.request_count("1fichier:upload"), 0);
    let (file, bytes) = only_file(&setup.remote, &setup.root(), "same.bin").await;
    assert_eq!(file.id, base.id);
    assert_eq!(bytes, content);
    // Draining stopped the worker.
    queue.start();

    // Renamed before its upload: the kept file is renamed instead.
    let handle = queue
        .open_remote(&setup.root(), "same.bin", &base, true)
        .unwrap();
    handle.write_at(&content, 0).unwrap();
    let id = handle.id();
    handle.release().unwrap();
    queue
        .rename(id, &setup.root(), "moved.bin", Replaced::Nothing)
        .unwrap();
    drain_all(&queue).await;
    assert_eq!(setup.emu.request_count("1fichier:upload"), 0);
    let (moved, _) = only_file(&setup.remote, &setup.root(), "moved.bin").await;
    assert_eq!(moved.id, base.id);
    queue.start();

    // One byte different: uploaded, the old file removed.
    let mut changed = content.clone();
    changed[7] ^= 0xff;
    let handle = queue
        .open_remote(&setup.root(), "moved.bin", &moved, true)
        .unwrap();
    handle.write_at(&changed, 0).unwrap();
    handle.release().unwrap();
    drain_all(&queue).await;
    assert_eq!(setup.emu.request_count("1fichier:upload"), 1);
    let (file, bytes) = only_file(&setup.remote, &setup.root(), "moved.bin").await;
    assert_ne!(file.id, base.id);
    assert_eq!(bytes, changed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlink_before_the_upload_cancels_it() {
    let setup = Setup::new();
    let queue = setup.queue(Duration::from_secs(30));
    let base = upload_bytes(&setup.remote, &setup.root(), "old.txt", b"old content").await;
    setup.emu.reset_stats();

    let fresh = stage(&queue, &setup.root(), "new.txt", b"never uploaded");
    queue.unlink(fresh).unwrap();
    assert!(queue.attr(fresh).is_none());
    assert!(setup.staging_files().is_empty(), "cancelled bytes are gone");

    // Truncating an existing file then deleting it: the old version goes too.
    let handle = queue
        .open_remote(&setup.root(), "old.txt", &base, true)
        .unwrap();
    handle.write_at(b"replacement", 0).unwrap();
    let overwrite = handle.id();
    handle.release().unwrap();
    queue.unlink(overwrite).unwrap();
    drain_all(&queue).await;

    assert_eq!(setup.emu.request_count("1fichier:upload"), 0);
    assert!(listing(&setup.remote, &setup.root()).await.files.is_empty());
    assert!(setup.staging_files().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlink_while_uploading_removes_what_was_uploaded() {
    let setup = Setup::new();
    let queue = setup.queue(Duration::ZERO);
    setup
        .emu
        .set_faults(serde_json::json!({"latency_ms": 1500}));
    let id = stage(
        &queue,
        &setup.root(),
        "short-lived.bin",
        &pseudo_random(50_000, 3),
    );
    eventually("the upload to start", || {
        setup.emu.request_count("1fichier:upload") >= 1
    })
    .await;
    queue.unlink(id).unwrap();
    assert!(queue.pending_in(&setup.root()).is_empty());
    drain_all(&queue).await;
    setup.emu.set_faults(serde_json::json!({"latency_ms": 0}));
    assert!(listing(&setup.remote, &setup.root()).await.files.is_empty());
    assert!(setup.staging_files().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_before_the_upload_sends_it_to_the_new_place() {
    let setup = Setup::new();
    let root = setup.root();
    let a = setup.remote.create_folder(&root, "a").await.unwrap().id;
    let b = setup.remote.create_folder(&root, "b").await.unwrap().id;
    let queue = setup.queue(Duration::from_secs(30));
    let data = pseudo_random(10_000, 4);
    let id = stage(&queue, &a, "draft.txt", &data);
    queue
        .rename(id, &b, "final.txt", Replaced::Nothing)
        .unwrap();
    assert!(queue.pending_in(&a).is_empty());
    assert_eq!(queue.pending_in(&b)[0].name, "final.txt");
    drain_all(&queue).await;
    assert!(listing(&setup.remote, &a).await.files.is_empty());
    assert_eq!(only_file(&setup.remote, &b, "final.txt").await.1, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_after_the_upload_moves_the_uploaded_copy() {
    let setup = Setup::new();
    let root = setup.root();
    let a = setup.remote.create_folder(&root, "a").await.unwrap().id;
    let b = setup.remote.create_folder(&root, "b").await.unwrap().id;
    let queue = setup.queue(Duration::from_secs(30));
    let data = pseudo_random(20_000, 5);
    let handle = queue.create(&a, "x.bin", None).unwrap();
    handle.write_at(&data, 0).unwrap();
    queue
        .wait_durable(handle.id())
        .await
        .expect("fsync uploads while the file is open");
    assert_eq!(files_named(&setup.remote, &a, "x.bin").await.len(), 1);
    queue
        .rename(handle.id(), &b, "y.bin", Replaced::Nothing)
        .unwrap();
    handle.release().unwrap();
    drain_all(&queue).await;
    assert!(listing(&setup.remote, &a).await.files.is_empty());
    assert_eq!(only_file(&setup.remote, &b, "y.bin").await.1, data);
    assert_eq!(
        setup.emu.request_count("1fichier:upload"),
        1,
        "moved, not re-uploaded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editor_style_save_replaces_the_target_file() {
    let setup = Setup::new();
    let root = setup.root();
    let queue = setup.queue(Duration::from_secs(30));
    let target = upload_bytes(&setup.remote, &root, "notes.md", b"version 1").await;
    // Write a temp file, then rename it over the real one.
    let tmp = stage(&queue, &root, ".notes.md.swp", b"version 2, longer");
    queue
        .rename(tmp, &root, "notes.md", Replaced::Remote(target.id.clone()))
        .unwrap();
    assert!(queue.hidden_remote_ids().contains(&target.id));
    // And again over the pending result: the first save is superseded.
    let tmp2 = stage(&queue, &root, ".notes.md.swp", b"version 3");
    queue
        .rename(tmp2, &root, "notes.md", Replaced::Pending(tmp))
        .unwrap();
    assert_eq!(queue.pending_in(&root).len(), 1);
    drain_all(&queue).await;
    let files = listing(&setup.remote, &root).await.files;
    assert_eq!(files.len(), 1, "{files:#?}");
    assert_eq!(
        only_file(&setup.remote, &root, "notes.md").await.1,
        b"version 3"
    );
    assert_eq!(
        setup.emu.request_count("1fichier:upload"),
        2,
        "seed + final save"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_changed_after_an_upload_is_uploaded_again_without_leftovers() {
    let setup = Setup::new();
    let root = setup.root();
    let queue = setup.queue(Duration::from_millis(200));
    let handle = queue.create(&root, "log.txt", None).unwrap();
    handle.write_at(b"first line\n", 0).unwrap();
    queue.wait_durable(handle.id()).await.unwrap();
    handle.write_at(b"second line\n", 11).unwrap();
    handle.release().unwrap();
    drain_all(&queue).await;
    let files = listing(&setup.remote, &root).await.files;
    assert_eq!(files.len(), 1, "the stale upload is removed: {files:#?}");
    assert_eq!(
        only_file(&setup.remote, &root, "log.txt").await.1,
        b"first line\nsecond line\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_file_is_a_placeholder_until_it_has_content() {
    let setup = Setup::new();
    let root = setup.root();
    let queue = setup.queue(Duration::ZERO);
    let base = upload_bytes(&setup.remote, &root, "truncated.txt", b"old").await;
    let empty = queue.create(&root, "empty.txt", None).unwrap();
    let empty_id = empty.id();
    empty.release().unwrap();
    let truncated = queue
        .open_remote(&root, "truncated.txt", &base, true)
        .unwrap();
    truncated.release().unwrap();
    queue
        .wait_durable(empty_id)
        .await
        .expect("fsync of an empty file");
    drain_all(&queue).await;
    // 1fichier cannot store empty files: both live on as placeholders, and
    // the old content of the truncated one is gone from the service.
    assert!(listing(&setup.remote, &root).await.files.is_empty());
    let mut states: Vec<(String, EntryState, u64)> = queue
        .pending()
        .into_iter()
        .map(|p| (p.name, p.state, p.size))
        .collect();
    states.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        states,
        vec![
            ("empty.txt".to_string(), EntryState::Held, 0),
            ("truncated.txt".to_string(), EntryState::Held, 0)
        ]
    );
    queue.drain(Duration::ZERO).await;
    drop(queue);

    // A remount with the same cache dir still shows them.
    let (queue, recovery) = WriteBack::open(
        setup.cache.path(),
        setup.remote.clone(),
        queue_options(Duration::ZERO),
    )
    .unwrap();
    assert_eq!(recovery.placeholders, 2);
    assert!(recovery.resumed.is_empty());
    queue.start();
    let again = queue
        .find(&root, "empty.txt")
        .expect("placeholder after remount");
    let handle = queue.open_pending(again.id, false).unwrap();
    handle.write_at(b"now with content", 0).unwrap();
    handle.release().unwrap();
    drain_all(&queue).await;
    assert_eq!(
        only_file(&setup.remote, &root, "empty.txt").await.1,
        b"now with content"
    );
    assert_eq!(queue.pending().len(), 1, "the other placeholder stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_uploads_resume_in_order_after_a_restart() {
    let setup = Setup::new();
    let root = setup.root();
    {
        let (queue, _) = WriteBack::open(
            setup.cache.path(),
            setup.remote.clone(),
            queue_options(Duration::from_secs(3600)),
        )
        .unwrap();
        for (i, name) in ["one", "two", "three"].iter().enumerate() {
            stage(&queue, &root, name, &pseudo_random(5_000 + i, i as u64));
        }
        // The process stops here: no worker ever ran.
    }
    let (queue, recovery) = WriteBack::open(
        setup.cache.path(),
        setup.remote.clone(),
        queue_options(Duration::ZERO),
    )
    .unwrap();
    let resumed: Vec<&str> = recovery.resumed.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(resumed, ["one", "two", "three"]);
    let order: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = order.clone();
    queue.set_listener(Arc::new(move |event| {
        if let WriteEvent::Finalized { file, .. } = event {
            seen.lock().unwrap().push(file.name.clone());
        }
    }));
    queue.start();
    drain_all(&queue).await;
    assert_eq!(*order.lock().unwrap(), ["one", "two", "three"]);
    for (i, name) in ["one", "two", "three"].iter().enumerate() {
        assert_eq!(
            only_file(&setup.remote, &root, name).await.1,
            pseudo_random(5_000 + i, i as u64)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_interrupted_after_the_service_stored_it_is_not_repeated() {
    let setup = Setup::new();
    let root = setup.root();
    let data = pseudo_random(2 << 20, 6);
    {
        let (queue, _) = WriteBack::open(
            setup.cache.path(),
            setup.remote.clone(),
            queue_options(Duration::ZERO),
        )
        .unwrap();
        queue.start();
        // Slow answers: the service stores the file, then takes its time
        // to report the result; the "crash" happens in between.
        setup
            .emu
            .set_faults(serde_json::json!({"latency_ms": 3000}));
        stage(&queue, &root, "big.bin", &data);
        eventually("the service to have stored the upload", || {
            setup.emu.request_count("1fichier:end") >= 1
        })
        .await;
        let report = queue.drain(Duration::ZERO).await;
        assert_eq!(report.left.len(), 1, "the crash left the upload unrecorded");
    }
    setup.emu.set_faults(serde_json::json!({"latency_ms": 0}));
    assert_eq!(files_named(&setup.remote, &root, "big.bin").await.len(), 1);

    let (queue, recovery) = WriteBack::open(
        setup.cache.path(),
        setup.remote.clone(),
        queue_options(Duration::ZERO),
    )
    .unwrap();
    assert_eq!(recovery.resumed.len(), 1);
    queue.start();
    drain_all(&queue).await;
    let (_, bytes) = only_file(&setup.remote, &root, "big.bin").await;
    assert_eq!(bytes, data);
    assert_eq!(
        setup.emu.request_count("1fichier:upload"),
        1,
        "not uploaded twice"
    );
    assert!(setup.staging_files().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_arrive_despite_server_errors_and_rate_limit_bursts() {
    let setup = Setup::new();
    let root = setup.root();
    let queue = setup.queue(Duration::ZERO);
    setup
        .emu
        .set_faults(serde_json::json!({"error_rate": 0.3, "rate_limit_burst": 6}));
    let mut expected = HashMap::new();
    for i in 0..12u64 {
        let name = format!("file-{i:02}.bin");
        let data = pseudo_random(1_000 + 700 * i as usize, 100 + i);
        stage(&queue, &root, &name, &data);
        expected.insert(name, data);
    }
    let report = queue.drain(Duration::from_secs(240)).await;
    setup
        .emu
        .set_faults(serde_json::json!({"error_rate": 0.0, "rate_limit_burst": 0}));
    assert!(report.left.is_empty(), "left: {:#?}", report.left);
    let files = listing(&setup.remote, &root).await.files;
    assert_eq!(
        files.len(),
        expected.len(),
        "no loss, no duplicate: {files:#?}"
    );
    for (name, data) in &expected {
        assert_eq!(
            &only_file(&setup.remote, &root, name).await.1,
            data,
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_fails_with_eio_while_the_service_fails_and_the_file_stays_queued() {
    let setup = Setup::new();
    let root = setup.root();
    let queue = setup.queue(Duration::from_secs(30));
    setup.emu.set_faults(serde_json::json!({"error_rate": 1.0}));
    let handle = queue.create(&root, "stubborn.txt", None).unwrap();
    handle.write_at(b"must not be lost", 0).unwrap();
    let id = handle.id();
    handle.release().unwrap();
    let err = queue
        .wait_durable(id)
        .await
        .expect_err("the service refuses everything");
    assert_eq!(err.errno(), libc::EIO, "{err}");
    let pending = queue.attr(id).expect("still queued");
    assert!(pending.last_error.is_some());
    setup.emu.set_faults(serde_json::json!({"error_rate": 0.0}));
    queue.wait_durable(id).await.expect("the retry succeeds");
    drain_all(&queue).await;
    assert_eq!(
        only_file(&setup.remote, &root, "stubborn.txt").await.1,
        b"must not be lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_exceeded_gives_enospc_and_keeps_the_staged_file() {
    let key = uuid::Uuid::new_v4().simple().to_string();
    let emu = Emulator::start_opts(EmulatorOptions {
        keys_file_lines: vec![format!("1fichier {key} quota=100000")],
        ..EmulatorOptions::default()
    });
    let remote = remote_for(&emu, &key);
    let cache = tempfile::tempdir().unwrap();
    let (queue, _) =
        WriteBack::open(cache.path(), remote.clone(), queue_options(Duration::ZERO)).unwrap();
    queue.start();
    let root = remote.root();
    let big = stage(&queue, &root, "too-big.bin", &pseudo_random(150_000, 7));
    let err = queue.wait_durable(big).await.expect_err("over quota");
    assert_eq!(err.errno(), libc::ENOSPC, "{err}");
    assert!(matches!(
        err,
        WriteBackError::Remote(RemoteError::QuotaExceeded(_))
    ));
    // Kept, with its reason, and the queue is not blocked by it.
    assert!(queue
        .attr(big)
        .unwrap()
        .last_error
        .unwrap()
        .contains("space"));
    assert_eq!(staged_data_files(cache.path()).len(), 1);
    let small = stage(&queue, &root, "fits.bin", &pseudo_random(10_000, 8));
    queue.wait_durable(small).await.expect("a file that fits");
    let report = queue.drain(Duration::from_secs(5)).await;
    assert_eq!(report.left.len(), 1);
    assert_eq!(report.left[0].name, "too-big.bin");
    drop(queue);
    // Still journaled for the next mount.
    let (_, recovery) =
        WriteBack::open(cache.path(), remote.clone(), queue_options(Duration::ZERO)).unwrap();
    assert_eq!(recovery.resumed.len(), 1);
    assert_eq!(recovery.resumed[0].name, "too-big.bin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_dir_serves_one_mount_and_one_remote() {
    let setup = Setup::new();
    let (first, _) = WriteBack::open(
        setup.cache.path(),
        setup.remote.clone(),
        queue_options(Duration::ZERO),
    )
    .unwrap();
    let err = WriteBack::open(
        setup.cache.path(),
        setup.remote.clone(),
        queue_options(Duration::ZERO),
    )
    .err()
    .expect("a second mount of the same cache dir");
    assert!(err.to_string().contains("in use"), "{err}");
    drop(first);
    let mut other = queue_options(Duration::ZERO);
    other.remote_identity = "1fichier:another-account".into();
    let err = WriteBack::open(setup.cache.path(), setup.remote.clone(), other)
        .err()
        .expect("a journal of another remote");
    assert!(
        matches!(err, WriteBackError::ForeignJournal { .. }),
        "{err}"
    );
}
