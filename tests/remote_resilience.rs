//! Pacing, retries, resumed downloads and link refresh, against the
//! emulator's fault injection and flood control.

mod common;

use std::time::{Duration, Instant};

use common::remote::{fast_client, fast_options};
use common::Emulator;
use filehostfs::remote::fichier::Fichier;
use filehostfs::remote::{FileEntry, FileId, Remote, RemoteError, UploadSource};
use futures::TryStreamExt;
use serde_json::json;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

async fn upload(remote: &dyn Remote, name: &str, bytes: &[u8]) -> FileEntry {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, bytes).unwrap();
    remote
        .upload(&remote.root(), name, UploadSource::Path(path), None)
        .await
        .unwrap()
}

async fn read_all(remote: &dyn Remote, file: &FileId, offset: u64, len: u64) -> Vec<u8> {
    let chunks: Vec<bytes::Bytes> = remote
        .download_range(file, offset, len)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    chunks.concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_answers_are_waited_out_and_retried() {
    let emu = Emulator::start();
    let remote = fast_client(&emu);
    let root = remote.root();
    remote.list_folder(&root).await.unwrap();

    emu.reset_stats();
    emu.set_faults(json!({"rate_limit_burst": 3}));
    let started = Instant::now();
    remote.list_folder(&root).await.unwrap();
    // Three refused attempts, each followed by the (shortened) flood wait.
    assert!(started.elapsed() >= Duration::from_millis(3 * 200));
    // One listing call (folder/ls with files) after three refused attempts.
    assert_eq!(
        emu.request_count("1fichier:folder/ls"),
        1 + 3,
        "{}",
        emu.stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_a_bounded_number_of_times() {
    let emu = Emulator::start();
    // Ten attempts make a call fail by chance at 30 % errors with
    // probability 0.3^10 (about 6 in a million).
    let mut options = fast_options(&emu);
    options.pacer.max_attempts = 10;
    let remote = Fichier::new(options).unwrap();
    let root = remote.root();
    let file = upload(&remote, "f.bin", &pattern(1000)).await;

    // A third of the calls fail: every operation still succeeds.
    emu.set_faults(json!({"error_rate": 0.3}));
    for _ in 0..6 {
        remote.list_folder(&root).await.unwrap();
        assert_eq!(remote.stat_file(&file.id).await.unwrap().size, 1000);
    }
    let folder = remote
        .create_folder(&root, "made under errors")
        .await
        .unwrap();
    remote
        .rename_folder(&folder.id, "renamed under errors")
        .await
        .unwrap();

    // Every call fails: the client gives up after its configured attempts.
    emu.set_faults(json!({"error_rate": 1.0}));
    emu.reset_stats();
    let err = remote.stat_file(&file.id).await.unwrap_err();
    assert!(matches!(err, RemoteError::Transient(_)), "{err:?}");
    assert!(
        err.to_string().contains("gave up after 10 attempts"),
        "{err}"
    );
    assert_eq!(emu.request_count("1fichier:file/info"), 10);

    emu.set_faults(json!({"error_rate": 0.0}));
    let listing = remote.list_folder(&root).await.unwrap();
    let names: Vec<&str> = listing.folders.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["renamed under errors"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_keeps_the_request_rate_under_the_flood_limit() {
    // Flood control on at 5 requests/s; a client paced at 4/s must never
    // be refused, so each call reaches the server exactly once.
    let emu = Emulator::start_with_flood_control(&["--flood-rate", "5", "--flood-lock-secs", "2"]);
    let mut options = fast_options(&emu);
    options.pacer.rate_per_sec = 4.0;
    options.pacer.burst = 1;
    options.flood_wait = Duration::from_secs(2);
    let remote = Fichier::new(options).unwrap();
    let root = remote.root();
    let started = Instant::now();
    for _ in 0..10 {
        remote.list_folder(&root).await.unwrap();
    }
    let elapsed = started.elapsed();
    let stats = emu.stats();
    assert_eq!(emu.request_count("1fichier:folder/ls"), 10, "{stats}");
    // 10 requests at 4/s after the first: at least 9/4 s.
    assert!(elapsed >= Duration::from_millis(2200), "{elapsed:?}");

    // The same calls unpaced do earn flood answers: the limit is real.
    let unpaced = fast_client(&emu);
    emu.reset_stats();
    let mut refused = false;
    for done in 1..=10u64 {
        if let Err(RemoteError::RateLimited { .. }) = unpaced.list_folder(&root).await {
            refused = true;
        }
        // One call per listing; more means some were refused and retried.
        if emu.request_count("1fichier:folder/ls") > done {
            refused = true;
        }
        if refused {
            break;
        }
    }
    assert!(
        refused,
        "an unpaced client was never refused: {}",
        emu.stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_downloads_resume_where_they_stopped() {
    let emu = Emulator::start();
    let remote = fast_client(&emu);
    let content = pattern(700_000);
    let file = upload(&remote, "big.bin", &content).await;
    emu.set_faults(json!({"cut_body_after": 100_000}));
    emu.reset_stats();
    assert_eq!(read_all(&remote, &file.id, 0, 700_000).await, content);
    let gets = emu.request_count("1fichier:download");
    assert!(gets >= 7, "the body was not cut/resumed ({gets} GETs)");
    assert_eq!(
        read_all(&remote, &file.id, 123_456, 300_000).await,
        content[123_456..423_456]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_links_are_replaced() {
    let emu = Emulator::start();
    let remote = fast_client(&emu);
    let content = pattern(50_000);
    let file = upload(&remote, "f.bin", &content).await;

    // A link handed out already expired gets cached by the client...
    emu.set_faults(json!({"expire_links": true}));
    let stale = remote.direct_link(&file.id).await.unwrap();
    emu.set_faults(json!({"expire_links": false}));
    // ...and is served from the cache while the client thinks it valid.
    emu.reset_stats();
    assert_eq!(remote.direct_link(&file.id).await.unwrap().url, stale.url);
    assert_eq!(emu.request_count("1fichier:download/get_token"), 0);

    // Reading with it fails at the server, so a new link is fetched.
    assert_eq!(read_all(&remote, &file.id, 0, 50_000).await, content);
    assert_eq!(emu.request_count("1fichier:download/get_token"), 1);
    assert_ne!(remote.direct_link(&file.id).await.unwrap().url, stale.url);

    // When every link the server hands out is dead, reading fails cleanly.
    emu.set_faults(json!({"expire_links": true}));
    remote.invalidate_link(&file.id);
    let stream = remote.download_range(&file.id, 0, 10).await.unwrap();
    let outcome: Result<Vec<bytes::Bytes>, RemoteError> = stream.try_collect().await;
    assert!(outcome.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_times_out_instead_of_hanging() {
    let emu = Emulator::start();
    let mut options = fast_options(&emu);
    // Long enough for a loaded machine to answer, far below the latency.
    options.http.read_timeout = Duration::from_secs(1);
    options.pacer.max_attempts = 2;
    let remote = Fichier::new(options).unwrap();
    let root = remote.root();
    remote.list_folder(&root).await.unwrap();

    emu.set_faults(json!({"latency_ms": 8000}));
    let started = Instant::now();
    let err = remote.list_folder(&root).await.unwrap_err();
    assert!(matches!(err, RemoteError::Transient(_)), "{err:?}");
    // Two attempts of about a second each, not two 8-second waits.
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );

    emu.set_faults(json!({"latency_ms": 0}));
    remote.list_folder(&root).await.unwrap();
}
