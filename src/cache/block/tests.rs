//! Behaviour of the block cache against an in-memory remote.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::fs;

use super::memory::SPARE_BUFFERS;
use super::*;
use crate::cache::ContentKey;
use crate::remote::failing::{FailingRemote, Operation};
use crate::remote::memory::MemoryRemote;
use crate::remote::RemoteError;

fn source(remote: &MemoryRemote, name: &str, data: &[u8]) -> FileSource {
    FileSource::for_entry(&remote.add_file(name, data.to_vec()))
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

fn config(block: u64, memory: u64, disk: Option<(PathBuf, u64)>) -> BlockCacheConfig {
    BlockCacheConfig {
        block_size: block,
        max_memory: memory,
        disk,
        max_streams: 2,
    }
}

#[tokio::test]
async fn reads_any_range_and_counts_requests() {
    let remote = Arc::new(MemoryRemote::new());
    let data = pattern(10_000);
    let src = source(&remote, "a", &data);
    let cache = BlockCache::new(remote.clone(), config(1024, 1 << 20, None)).unwrap();
    for (offset, len) in [
        (0, 1),
        (1000, 100),
        (1023, 2),
        (0, 10_000),
        (9_999, 50),
        (5000, 0),
    ] {
        let got = cache.read(&src, offset, len, 0).await.unwrap();
        let end = (offset + len).min(10_000) as usize;
        assert_eq!(&got[..], &data[offset as usize..end], "{offset}+{len}");
    }
    // The whole-file read fetched the 8 blocks not yet cached in one request.
    assert_eq!(remote.download_requests(), 3);
    assert!(cache.read(&src, 20_000, 10, 0).await.unwrap().is_empty());
}

#[tokio::test]
async fn concurrent_readers_share_one_fetch() {
    let remote = Arc::new(MemoryRemote::new());
    remote.set_download_delay(Duration::from_millis(50));
    let data = pattern(4096);
    let src = source(&remote, "a", &data);
    let cache = BlockCache::new(remote.clone(), config(4096, 1 << 20, None)).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let cache = cache.clone();
        let src = src.clone();
        tasks.push(tokio::spawn(
            async move { cache.read(&src, 0, 4096, 0).await },
        ));
    }
    for task in tasks {
        assert_eq!(&task.await.unwrap().unwrap()[..], &data[..]);
    }
    assert_eq!(remote.download_requests(), 1);
}

#[tokio::test]
async fn a_first_read_gets_its_bytes_before_its_block_is_complete() {
    let remote = Arc::new(MemoryRemote::new());
    let data = pattern(4 * 4096);
    let src = source(&remote, "a", &data);
    let cache = BlockCache::new(remote.clone(), config(4096, 1 << 20, None)).unwrap();
    // The connection dies 1000 bytes into the block: the block needs a
    // second request (after a pause), the read's 100 bytes do not.
    remote.cut_next_body_after(1000);
    let got = cache.read(&src, 4096 + 200, 100, 1).await.unwrap();
    assert_eq!(&got[..], &data[4096 + 200..4096 + 300]);
    assert_eq!(remote.download_requests(), 1);
    // The block itself arrives complete through the resumed fetch.
    let block = cache.read(&src, 4096, 4096, 1).await.unwrap();
    assert_eq!(&block[..], &data[4096..2 * 4096]);
    assert_eq!(remote.download_requests(), 2);
    // A read whose bytes lie beyond the cut waits for the whole block.
    remote.cut_next_body_after(1000);
    let got = cache.read(&src, 3 * 4096 + 2000, 100, 3).await.unwrap();
    assert_eq!(&got[..], &data[3 * 4096 + 2000..3 * 4096 + 2100]);
    assert_eq!(remote.download_requests(), 4);
}

#[tokio::test]
async fn memory_stays_within_its_bound() {
    let remote = Arc::new(MemoryRemote::new());
    let data = pattern(100 * 1024);
    let src = source(&remote, "a", &data);
    let cache = BlockCache::new(remote.clone(), config(1024, 8 * 1024, None)).unwrap();
    for block in 0..100u64 {
        cache.read(&src, block * 1024, 1024, 0).await.unwrap();
        assert!(cache.stats().memory_bytes <= 8 * 1024);
    }
    assert!(!cache.is_cached(&src, 0));
    assert!(cache.is_cached(&src, 99));
    // Evicted blocks' memory is kept for reuse, a bounded amount of it.
    let spare = cache.inner.spare_buffers.lock().len();
    assert!(spare > 0 && spare <= SPARE_BUFFERS, "{spare}");
    // Reused buffers carry the right bytes.
    let again = cache.read(&src, 0, 100 * 1024, 0).await.unwrap();
    assert_eq!(&again[..], &data[..]);
}

#[tokio::test]
async fn disk_tier_survives_a_new_cache_and_is_bounded() {
    let remote = Arc::new(MemoryRemote::new());
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(16 * 1024);
    let src = source(&remote, "a", &data);
    let disk = Some((dir.path().to_path_buf(), 10 * 1024));
    {
        let cache = BlockCache::new(remote.clone(), config(1024, 2048, disk.clone())).unwrap();
        assert_eq!(
            &cache.read(&src, 0, 16 * 1024, 0).await.unwrap()[..],
            &data[..]
        );
        // Let the background writes land.
        for _ in 0..200 {
            if cache.stats().disk_writes == 16 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(cache.stats().disk_bytes, 10 * 1024);
    }
    let requests_before = remote.download_requests();
    let cache = BlockCache::new(remote.clone(), config(1024, 2048, disk)).unwrap();
    // The 10 blocks kept on disk come back from there.
    let kept: Vec<u64> = (0..16).filter(|&i| cache.is_cached(&src, i)).collect();
    assert_eq!(kept.len(), 10);
    for &i in &kept {
        let got = cache.read(&src, i * 1024, 1024, 0).await.unwrap();
        assert_eq!(&got[..], &data[i as usize * 1024..(i as usize + 1) * 1024]);
    }
    assert_eq!(remote.download_requests(), requests_before);
    assert_eq!(cache.stats().disk_hits, 10);
    // A damaged block file is fetched again (a bulk block: probe blocks'
    // names carry a suffix).
    let damaged = dir.path().join("blocks-1024").join(&src.key.as_str()[..2]);
    let victim = *kept
        .iter()
        .find(|&&i| probe::BlockRole::of(src.size, 1024, i) == probe::BlockRole::Bulk)
        .expect("a bulk block was kept") as usize;
    fs::write(
        damaged.join(format!("{}-{victim}", src.key.as_str())),
        b"short",
    )
    .unwrap();
    let disk = Some((dir.path().to_path_buf(), 10 * 1024));
    let cache = BlockCache::new(remote.clone(), config(1024, 2048, disk)).unwrap();
    let got = cache
        .read(&src, victim as u64 * 1024, 1024, 0)
        .await
        .unwrap();
    assert_eq!(&got[..], &data[victim * 1024..(victim + 1) * 1024]);
    assert_eq!(remote.download_requests(), requests_before + 1);
}

#[tokio::test]
async fn streaming_a_film_leaves_the_library_probe_blocks_on_disk() {
    let remote = Arc::new(MemoryRemote::new());
    let dir = tempfile::tempdir().unwrap();
    // 40 blocks on disk, 8 of them reserved for probe blocks.
    let disk = Some((dir.path().to_path_buf(), 40 * 1024));
    let cache = BlockCache::new(remote.clone(), config(1024, 2048, disk.clone())).unwrap();
    // A library of four one-block files, probed first.
    let library: Vec<FileSource> = (0..4)
        .map(|i| source(&remote, &format!("episode{i}"), &pattern(1000 + i)))
        .collect();
    for episode in &library {
        cache.read(episode, 0, 1000, 0).await.unwrap();
    }
    // Then a 100-block film streamed through a 40-block disk cache.
    let film_data = pattern(100 * 1024);
    let film = source(&remote, "film", &film_data);
    for block in 0..100 {
        let got = cache.read(&film, block * 1024, 1024, 0).await.unwrap();
        assert_eq!(&got[..], &film_data[block as usize * 1024..][..1024]);
    }
    cache.wait_for_disk_writes().await;
    let stats = cache.stats();
    assert!(stats.disk_bytes <= 40 * 1024, "{stats:?}");
    assert!(stats.disk_probe_bytes <= 8 * 1024, "{stats:?}");
    // Plain LRU would have pushed the library out; the film's own head and
    // tail are probe blocks too and fit in the reserve with it.
    for episode in &library {
        assert!(cache.is_cached(episode, 0), "{} evicted", episode.id);
    }
    assert!(cache.is_cached(&film, 0) && cache.is_cached(&film, 99));
    assert!(!cache.is_cached(&film, 50));
    drop(cache);
    // After a restart the roles come back from the file names.
    let cache = BlockCache::new(remote.clone(), config(1024, 2048, disk)).unwrap();
    let requests = remote.download_requests();
    for episode in &library {
        cache.read(episode, 0, 1000, 0).await.unwrap();
    }
    assert_eq!(remote.download_requests(), requests);
    assert_eq!(cache.stats().disk_probe_bytes, stats.disk_probe_bytes);
}

#[tokio::test]
async fn failures_are_retried_with_a_fresh_link() {
    let remote = Arc::new(MemoryRemote::new());
    let failing = Arc::new(FailingRemote::new(remote.clone()));
    let data = pattern(3000);
    let src = source(&remote, "a", &data);
    let cache = BlockCache::new(failing.clone(), config(1024, 1 << 20, None)).unwrap();
    failing.fail_with(
        Operation::Download,
        [
            RemoteError::PermissionDenied("link expired".into()),
            RemoteError::Transient("503".into()),
        ],
    );
    assert_eq!(&cache.read(&src, 0, 3000, 0).await.unwrap()[..], &data[..]);
    assert_eq!(remote.invalidated_links(), 2);
    // A body cut after 1500 bytes: block 0 is kept, the rest is fetched again.
    let src2 = source(&remote, "b", &data);
    remote.cut_next_body_after(1500);
    assert_eq!(&cache.read(&src2, 0, 3000, 0).await.unwrap()[..], &data[..]);
    // A file that is gone fails as not found after a bounded number of tries.
    let gone = FileSource {
        id: crate::remote::FileId("missing".into()),
        size: 10,
        key: ContentKey::new(&crate::remote::FileId("missing".into()), 10, 0, 0, None),
    };
    let err = cache.read(&gone, 0, 10, 0).await.unwrap_err();
    assert!(
        matches!(err, CacheError::Remote(RemoteError::NotFound(_))),
        "{err}"
    );
}

#[tokio::test]
async fn stale_read_ahead_is_dropped_unsent() {
    let remote = Arc::new(MemoryRemote::new());
    remote.set_download_delay(Duration::from_millis(100));
    let data = pattern(10 * 1024);
    let src = source(&remote, "a", &data);
    let mut settings = config(1024, 1 << 20, None);
    settings.max_streams = 1;
    let cache = BlockCache::new(remote.clone(), settings).unwrap();
    let stream = Arc::new(AtomicU64::new(0));
    cache.prefetch(
        &src,
        0,
        9,
        1,
        ReadAheadTicket::new(&stream, &FileStreams::new(8)),
    );
    // The reader jumps away while nine of the ten requests still queue.
    stream.fetch_add(1, Ordering::AcqRel);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        remote.download_requests() <= 1,
        "{}",
        remote.download_requests()
    );
    assert!((2..10).all(|i| !cache.is_cached(&src, i)));
    // Dropped blocks are fetched normally when read after all.
    let got = cache.read(&src, 5 * 1024, 1024, 0).await.unwrap();
    assert_eq!(&got[..], &data[5 * 1024..6 * 1024]);
}

#[tokio::test]
async fn prefetch_fills_the_cache_in_bounded_requests() {
    let remote = Arc::new(MemoryRemote::new());
    let data = pattern(10 * 1024);
    let src = source(&remote, "a", &data);
    let cache = BlockCache::new(remote.clone(), config(1024, 1 << 20, None)).unwrap();
    let stream = Arc::new(AtomicU64::new(0));
    cache.prefetch(
        &src,
        2,
        9,
        3,
        ReadAheadTicket::new(&stream, &FileStreams::new(8)),
    );
    for _ in 0..100 {
        if (2..10).all(|i| cache.is_cached(&src, i)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!((2..10).all(|i| cache.is_cached(&src, i)));
    assert!(!cache.is_cached(&src, 1));
    assert_eq!(remote.download_requests(), 3);
    assert_eq!(
        &cache.try_read_cached(&src, 2048, 8192).unwrap()[..],
        &data[2048..]
    );
    assert!(cache.try_read_cached(&src, 0, 10).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_ahead_requests_go_out_in_file_order() {
    // Two connections for sixteen requests: the ones waiting must go out
    // nearest first, as the reader will want them.
    let remote = Arc::new(MemoryRemote::new());
    let data = pattern(32 * 1024);
    let src = source(&remote, "a", &data);
    remote.set_download_delay(Duration::from_millis(5));
    let mut cfg = config(1024, 1 << 20, None);
    cfg.max_streams = 2;
    let cache = BlockCache::new(remote.clone(), cfg).unwrap();
    let stream = Arc::new(AtomicU64::new(0));
    cache.prefetch(
        &src,
        0,
        31,
        2,
        ReadAheadTicket::new(&stream, &FileStreams::new(8)),
    );
    for _ in 0..300 {
        if (0..32).all(|i| cache.is_cached(&src, i)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!((0..32).all(|i| cache.is_cached(&src, i)));
    let offsets = remote.download_offsets();
    assert_eq!(offsets.len(), 16);
    // Requests holding their connections at the same moment may reach the
    // service in either order, but never one further ahead than the two
    // connections allow.
    for (sent, offset) in offsets.iter().enumerate() {
        let part = (*offset / 2048) as usize;
        assert!(part.abs_diff(sent) <= 1, "sent in this order: {offsets:?}");
    }
}

#[tokio::test]
async fn a_refused_connection_shrinks_the_streams_instead_of_failing() {
    let remote = Arc::new(MemoryRemote::new());
    remote.set_download_delay(Duration::from_millis(20));
    let failing = Arc::new(FailingRemote::new(remote.clone()));
    let data = pattern(16 * 1024);
    let src = source(&remote, "a", &data);
    let mut settings = config(1024, 1 << 20, None);
    settings.max_streams = 4;
    let cache = BlockCache::new(failing.clone(), settings).unwrap();
    let refusal = || RemoteError::TooManyDownloads("HTTP 403".into());
    failing.fail_with(Operation::Download, [refusal(), refusal(), refusal()]);
    let stream = Arc::new(AtomicU64::new(0));
    let ticket = ReadAheadTicket::new(&stream, &FileStreams::new(4));
    cache.prefetch(&src, 1, 15, 2, ticket);
    // A reader's own fetch refused too: it waits and gets its bytes.
    let got = cache.read(&src, 0, 16 * 1024, 0).await.unwrap();
    assert_eq!(&got[..], &data[..]);
    let streams = cache.stream_stats();
    assert_eq!(streams.refusals, 3);
    assert_eq!(streams.limit, 1);
    assert_eq!(failing.injected(Operation::Download), 3);
}

#[tokio::test]
async fn one_file_uses_at_most_its_share_of_streams() {
    let remote = Arc::new(MemoryRemote::new());
    remote.set_download_delay(Duration::from_millis(50));
    let data = pattern(16 * 1024);
    let src = source(&remote, "a", &data);
    let mut settings = config(1024, 1 << 20, None);
    settings.max_streams = 8;
    let cache = BlockCache::new(remote.clone(), settings).unwrap();
    let stream = Arc::new(AtomicU64::new(0));
    let ticket = ReadAheadTicket::new(&stream, &FileStreams::new(1));
    cache.prefetch(&src, 0, 15, 1, ticket);
    for _ in 0..200 {
        if (0..16).all(|i| cache.is_cached(&src, i)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!((0..16).all(|i| cache.is_cached(&src, i)));
    assert_eq!(cache.stream_stats().peak_connections, 1);
}
