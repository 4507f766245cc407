//! The 1fichier backend against a real `filehostfs serve` on loopback:
//! every trait operation, the errors it maps, names, duplicates, links.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::remote::{fast_client, fast_options};
use common::Emulator;
use filehostfs::remote::fichier::Fichier;
use filehostfs::remote::{
    resolve_path, ApiKey, FileEntry, FileId, FolderId, Remote, RemoteError, Resolved, UploadSource,
};
use futures::TryStreamExt;
use whirlpool::{Digest, Whirlpool};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).rotate_left(seed as u32) as u8 ^ seed)
        .collect()
}

async fn upload_bytes(
    remote: &dyn Remote,
    folder: &FolderId,
    name: &str,
    bytes: &[u8],
) -> FileEntry {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upload.bin");
    std::fs::write(&path, bytes).unwrap();
    remote
        .upload(folder, name, UploadSource::Path(path), None)
        .await
        .unwrap_or_else(|e| panic!("uploading {name:?}: {e}"))
}

async fn read_range(remote: &dyn Remote, file: &FileId, offset: u64, len: u64) -> Vec<u8> {
    let chunks: Vec<bytes::Bytes> = remote
        .download_range(file, offset, len)
        .await
        .expect("download_range")
        .try_collect()
        .await
        .expect("download stream");
    chunks.concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_against_the_emulator() {
    let emu = Emulator::start();
    let remote = fast_client(&emu);
    let root = remote.root();
    assert_eq!(remote.service(), "1fichier");
    assert!(!remote.capabilities().empty_files);

    // Folders.
    let docs = remote.create_folder(&root, "docs").await.unwrap();
    assert!(matches!(
        remote.create_folder(&root, "docs").await,
        Err(RemoteError::AlreadyExists(_))
    ));
    let inner = remote.create_folder(&docs.id, "inner").await.unwrap();
    let listing = remote.list_folder(&root).await.unwrap();
    assert_eq!(listing.folders.len(), 1);
    assert_eq!(listing.folders[0].name, "docs");
    assert_eq!(listing.folders[0].id, docs.id);

    // Upload with progress, then list, stat, hash.
    let content = pattern(300_000, 3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.bin");
    std::fs::write(&path, &content).unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let seen_in = seen.clone();
    let uploaded = remote
        .upload(
            &docs.id,
            "report.bin",
            UploadSource::Path(path.clone()),
            Some(Arc::new(move |n| seen_in.store(n, Ordering::SeqCst))),
        )
        .await
        .unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), content.len() as u64);
    assert_eq!(uploaded.name, "report.bin");
    assert_eq!(uploaded.size, content.len() as u64);
    let expected_hash = hex::encode(Whirlpool::digest(&content));
    let listing = remote.list_folder(&docs.id).await.unwrap();
    assert_eq!(listing.files.len(), 1);
    let listed = &listing.files[0];
    assert_eq!(listed.id, uploaded.id);
    assert_eq!(listed.size, content.len() as u64);
    assert_eq!(listed.checksum.as_deref(), Some(expected_hash.as_str()));
    let age = chrono::Utc::now() - listed.modified;
    assert!(
        age.num_seconds().abs() < 120,
        "listed date {} is not the upload time (French time not converted?)",
        listed.modified
    );
    let stat = remote.stat_file(&uploaded.id).await.unwrap();
    assert_eq!(stat.size, content.len() as u64);
    assert_eq!(stat.name, "report.bin");

    // Uploading from a stream, and refusing a stream shorter than announced.
    let streamed = pattern(10_000, 9);
    let entry = remote
        .upload(
            &docs.id,
            "streamed.bin",
            UploadSource::Reader {
                reader: Box::pin(std::io::Cursor::new(streamed.clone())),
                size: 10_000,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(read_range(&remote, &entry.id, 0, 10_000).await, streamed);
    let short = remote
        .upload(
            &docs.id,
            "short.bin",
            UploadSource::Reader {
                reader: Box::pin(std::io::Cursor::new(streamed.clone())),
                size: 20_000,
            },
            None,
        )
        .await;
    assert!(short.is_err(), "a short stream was accepted");
    let names: Vec<String> = remote
        .list_folder(&docs.id)
        .await
        .unwrap()
        .files
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert!(!names.contains(&"short.bin".to_string()), "{names:?}");
    remote.remove_file(&entry.id).await.unwrap();

    // Reading: whole, middle, clamped at the end, past the end.
    assert_eq!(
        read_range(&remote, &uploaded.id, 0, content.len() as u64).await,
        content
    );
    assert_eq!(
        read_range(&remote, &uploaded.id, 1000, 5000).await,
        content[1000..6000]
    );
    assert_eq!(
        read_range(&remote, &uploaded.id, 299_000, 10_000).await,
        content[299_000..]
    );
    assert!(read_range(&remote, &uploaded.id, 400_000, 10)
        .await
        .is_empty());

    // Rename in place, move with and without a new name.
    let renamed = remote.rename_file(&uploaded.id, "final.bin").await.unwrap();
    assert_eq!(renamed.name, "final.bin");
    let moved = remote
        .move_file(&renamed.id, &inner.id, Some("moved.bin"))
        .await
        .unwrap();
    assert_eq!(moved.name, "moved.bin");
    let moved = remote.move_file(&moved.id, &root, None).await.unwrap();
    assert_eq!(moved.name, "moved.bin");
    let same_folder = remote
        .move_file(&moved.id, &root, Some("again.bin"))
        .await
        .unwrap();
    assert_eq!(same_folder.name, "again.bin");
    let root_listing = remote.list_folder(&root).await.unwrap();
    assert_eq!(root_listing.files.len(), 1);
    assert_eq!(root_listing.files[0].name, "again.bin");
    assert_eq!(
        read_range(&remote, &same_folder.id, 0, u64::MAX / 2).await,
        content
    );

    // Folders: rename, move, refuse to remove non-empty, remove.
    remote.rename_folder(&inner.id, "inner2").await.unwrap();
    remote.move_folder(&inner.id, &root).await.unwrap();
    let root_listing = remote.list_folder(&root).await.unwrap();
    let names: Vec<&str> = root_listing
        .folders
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert!(
        names.contains(&"inner2") && names.contains(&"docs"),
        "{names:?}"
    );
    remote
        .move_file(&same_folder.id, &inner.id, None)
        .await
        .unwrap();
    assert!(matches!(
        remote.remove_folder(&inner.id).await,
        Err(RemoteError::NotEmpty(_))
    ));
    let inside = remote.list_folder(&inner.id).await.unwrap();
    remote.remove_file(&inside.files[0].id).await.unwrap();
    assert!(matches!(
        remote.stat_file(&inside.files[0].id).await,
        Err(RemoteError::NotFound(_))
    ));
    assert!(matches!(
        remote.remove_file(&inside.files[0].id).await,
        Err(RemoteError::NotFound(_))
    ));
    remote.remove_folder(&inner.id).await.unwrap();
    assert!(matches!(
        remote.remove_folder(&root).await,
        Err(RemoteError::PermissionDenied(_))
    ));
    assert!(matches!(
        remote.list_folder(&FolderId("987654".into())).await,
        Err(RemoteError::NotFound(_))
    ));

    // A listing is one call: folder/ls returns the files too.
    emu.reset_stats();
    remote.list_folder(&docs.id).await.unwrap();
    assert_eq!(emu.request_count("1fichier:folder/ls"), 1);
    assert_eq!(emu.request_count("1fichier:file/ls"), 0);

    // Account info, asked once and then answered from the cache.
    emu.reset_stats();
    let space = remote.about().await.unwrap();
    let again = remote.about().await.unwrap();
    assert_eq!(space, again);
    assert_eq!(emu.request_count("1fichier:user/info"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_map_to_their_kinds() {
    let emu = Emulator::start();
    let remote = fast_client(&emu);
    let root = remote.root();

    // Empty files are refused before anything is sent.
    emu.reset_stats();
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let err = remote
        .upload(&root, "empty", UploadSource::Path(empty), None)
        .await
        .unwrap_err();
    assert!(matches!(err, RemoteError::EmptyFile(_)), "{err:?}");
    let stats = emu.stats();
    assert!(
        stats["requests"]
            .as_object()
            .is_none_or(|r| r.keys().all(|k| !k.starts_with("1fichier:"))),
        "{stats}"
    );

    // Unknown files.
    let missing = FileId(format!("{}/?doesnotexist0000000", emu.base_url()));
    assert!(matches!(
        remote.stat_file(&missing).await,
        Err(RemoteError::NotFound(_))
    ));
    assert!(matches!(
        remote.direct_link(&missing).await,
        Err(RemoteError::NotFound(_))
    ));

    // Names the client cannot send at all.
    assert!(matches!(
        remote.create_folder(&root, "a/b").await,
        Err(RemoteError::InvalidName(_))
    ));
    assert!(matches!(
        remote.create_folder(&root, "").await,
        Err(RemoteError::InvalidName(_))
    ));

    // A bad key fails at once: one request, no retries.
    emu.reset_stats();
    let mut options = fast_options(&emu);
    options.key = ApiKey::new("not-a-real-key");
    let stranger = Fichier::new(options).unwrap();
    let err = stranger.list_folder(&root).await.unwrap_err();
    assert!(matches!(err, RemoteError::Fatal(_)), "{err:?}");
    assert!(!err.to_string().contains("not-a-real-key"), "{err}");
    assert_eq!(emu.request_count("1fichier:folder/ls"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_names_are_listed_apart() {
    let emu = Emulator::start();
    let remote = fast_client(&emu);
    let root = remote.root();
    let first = upload_bytes(&remote, &root, "twin.txt", b"first copy").await;
    let second = upload_bytes(&remote, &root, "twin.txt", b"second, longer copy").await;
    assert_ne!(first.id, second.id);
    let listing = remote.list_folder(&root).await.unwrap();
    let twins: Vec<&FileEntry> = listing
        .files
        .iter()
        .filter(|f| f.name == "twin.txt")
        .collect();
    assert_eq!(twins.len(), 2);
    assert_eq!(read_range(&remote, &first.id, 0, 100).await, b"first copy");
    assert_eq!(
        read_range(&remote, &second.id, 0, 100).await,
        b"second, longer copy"
    );
    let err = resolve_path(&remote, "twin.txt")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&first.id.0) && err.contains(&second.id.0),
        "ambiguity error must name both ids: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_names_round_trip_through_the_server() {
    let emu = Emulator::start();
    let remote = fast_client(&emu);
    let root = remote.root();
    let printable: Vec<char> = (0x20u8..=0x7e)
        .map(char::from)
        .filter(|c| *c != '/')
        .collect();
    let mut names: Vec<String> = printable
        .chunks(6)
        .map(|chunk| chunk.iter().collect::<String>())
        .filter(|n| n != "." && n != "..")
        .collect();
    names.extend(
        [
            " leading and trailing ",
            "tab\there",
            "del\u{7f}",
            "＄already full-width＼",
            "‛escape‛＄",
            "␠picture␠",
            "日本語のファイル",
            "emoji 🎉.txt",
        ]
        .map(String::from),
    );
    for name in &names {
        remote
            .create_folder(&root, name)
            .await
            .unwrap_or_else(|e| panic!("mkdir {name:?}: {e}"));
    }
    let listing = remote.list_folder(&root).await.unwrap();
    let mut listed: Vec<String> = listing.folders.iter().map(|f| f.name.clone()).collect();
    let mut wanted = names.clone();
    listed.sort();
    wanted.sort();
    assert_eq!(listed, wanted);

    // Files too, through upload, listing, rename and resolve.
    let nasty = "<a> \"b\" 'c' $d `e` \\f";
    let file = upload_bytes(&remote, &root, nasty, b"x").await;
    assert_eq!(file.name, nasty);
    let renamed = remote.rename_file(&file.id, " $＄ ").await.unwrap();
    assert_eq!(renamed.name, " $＄ ");
    match resolve_path(&remote, " $＄ ").await.unwrap() {
        Resolved::File { entry, .. } => assert_eq!(entry.id, renamed.id),
        other => panic!("resolved to {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_reads_share_one_link() {
    let emu = Emulator::start();
    let remote = Arc::new(fast_client(&emu));
    let content = Arc::new(pattern(256 * 1024, 5));
    let file = upload_bytes(remote.as_ref(), &remote.root(), "shared.bin", &content).await;
    emu.reset_stats();
    let mut readers = Vec::new();
    for block in 0..8u64 {
        let remote = remote.clone();
        let content = content.clone();
        let id = file.id.clone();
        readers.push(tokio::spawn(async move {
            let offset = block * 32 * 1024;
            let got = read_range(remote.as_ref(), &id, offset, 32 * 1024).await;
            assert_eq!(got, content[offset as usize..offset as usize + 32 * 1024]);
        }));
    }
    for reader in readers {
        reader.await.expect("reader task");
    }
    assert_eq!(emu.request_count("1fichier:download/get_token"), 1);
    assert_eq!(emu.request_count("1fichier:download"), 8);
}

/// The document leaves open whether `folder/mv` with both a destination and
/// a new name moves and renames, or only renames. The client never sends
/// both, so folder moves and renames work under either reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_moves_work_under_either_reading_of_folder_mv() {
    for mode in ["move-and-rename", "rename-only"] {
        let emu = Emulator::start_with(&["--folder-move-mode", mode]);
        let remote = fast_client(&emu);
        let root = remote.root();
        let a = remote.create_folder(&root, "a").await.unwrap();
        let b = remote.create_folder(&root, "b").await.unwrap();
        remote.move_folder(&a.id, &b.id).await.unwrap();
        remote.rename_folder(&a.id, "a2").await.unwrap();
        let inside_b = remote.list_folder(&b.id).await.unwrap();
        let names: Vec<&str> = inside_b.folders.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a2"], "mode {mode}");
        remote.move_folder(&a.id, &root).await.unwrap();
        let top = remote.list_folder(&root).await.unwrap();
        let mut names: Vec<&str> = top.folders.iter().map(|f| f.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["a2", "b"], "mode {mode}");
    }
}
