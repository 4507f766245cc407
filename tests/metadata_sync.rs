//! `--metadata-sync`: the per-folder file's format (round trips, what a
//! reader skips or refuses, the last-writer-wins merge's algebra), and the
//! sharing itself through real mounts of `filehostfs serve`: two machines
//! (two state dirs) of one account see each other's times, modes and
//! attributes; the file never shows; stale records never stick.

mod common;

use filehostfs::metadata::sync::{
    decode, encode, merge, newer, FolderRecords, SyncFormatError, SYNC_FILE_NAME,
};
use filehostfs::metadata::{ContentGuard, Metadata, Record, RecordKey};
use filehostfs::remote::{names, FileId, FolderId};
use proptest::prelude::*;

fn key() -> impl Strategy<Value = RecordKey> {
    prop_oneof![
        "[a-z0-9:/?._-]{1,12}".prop_map(|id| RecordKey::File(FileId(id))),
        "[0-9]{1,4}".prop_map(|id| RecordKey::Folder(FolderId(id))),
    ]
}

fn file_guard() -> impl Strategy<Value = ContentGuard> {
    prop_oneof![
        (any::<u64>(), "[0-9a-f]{1,16}")
            .prop_map(|(size, checksum)| ContentGuard::Checksum { size, checksum }),
        (any::<u64>(), any::<i64>())
            .prop_map(|(size, uploaded_ns)| ContentGuard::Uploaded { size, uploaded_ns }),
    ]
}

fn metadata() -> impl Strategy<Value = Metadata> {
    (
        prop::option::of(any::<i64>()),
        prop::option::of(0u32..=0o7777),
        prop::option::of(any::<u32>()),
        prop::option::of(any::<u32>()),
        prop::collection::btree_map(
            "user\\.[a-z]{1,6}",
            prop::collection::vec(any::<u8>(), 0..8),
            0..3,
        ),
    )
        .prop_map(|(mtime_ns, mode, uid, gid, xattrs)| Metadata {
            mtime_ns,
            mode,
            uid,
            gid,
            xattrs,
        })
}

fn keyed_record() -> impl Strategy<Value = (RecordKey, Record)> {
    (key(), file_guard(), metadata(), any::<i64>()).prop_map(
        |(key, guard, metadata, changed_ns)| {
            let guard = match key {
                RecordKey::Folder(_) => ContentGuard::Folder,
                _ => guard,
            };
            (
                key,
                Record {
                    guard,
                    metadata,
                    changed_ns,
                },
            )
        },
    )
}

fn folder_records() -> impl Strategy<Value = FolderRecords> {
    prop::collection::btree_map(key(), (file_guard(), metadata(), any::<i64>()), 0..8).prop_map(
        |map| {
            map.into_iter()
                .map(|(key, (guard, metadata, changed_ns))| {
                    let guard = match key {
                        RecordKey::Folder(_) => ContentGuard::Folder,
                        _ => guard,
                    };
                    (
                        key,
                        Record {
                            guard,
                            metadata,
                            changed_ns,
                        },
                    )
                })
                .collect()
        },
    )
}

/// Records sharing keys often, with close change times, so merges conflict.
fn conflicting_records() -> impl Strategy<Value = FolderRecords> {
    let key = prop::sample::select(vec![
        RecordKey::File(FileId("a".into())),
        RecordKey::File(FileId("b".into())),
        RecordKey::File(FileId("c".into())),
    ]);
    prop::collection::btree_map(key, (file_guard(), metadata(), 0i64..3), 0..3).prop_map(|map| {
        map.into_iter()
            .map(|(key, (guard, metadata, changed_ns))| {
                (
                    key,
                    Record {
                        guard,
                        metadata,
                        changed_ns,
                    },
                )
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn encode_then_decode_gives_back_the_records(records in folder_records()) {
        let decoded = decode(&encode(&records)).unwrap();
        prop_assert_eq!(decoded.skipped, 0);
        prop_assert_eq!(decoded.records, records);
    }

    #[test]
    fn newer_picks_one_winner_whatever_the_order(a in keyed_record(), b in keyed_record()) {
        let (_, a) = a;
        let (_, mut b) = b;
        if b.changed_ns % 2 == 0 {
            b.changed_ns = a.changed_ns; // ties are common in practice
        }
        prop_assert_eq!(newer(&a, &b), newer(&b, &a));
        prop_assert!(newer(&a, &b).changed_ns >= a.changed_ns.max(b.changed_ns));
        prop_assert_eq!(newer(&a, &a), &a);
    }

    #[test]
    fn merge_is_commutative_associative_and_idempotent(
        a in conflicting_records(),
        b in conflicting_records(),
        c in conflicting_records(),
    ) {
        prop_assert_eq!(merge(&a, &b), merge(&b, &a));
        prop_assert_eq!(merge(&merge(&a, &b), &c), merge(&a, &merge(&b, &c)));
        prop_assert_eq!(merge(&a, &a), a.clone());
        let ab = merge(&a, &b);
        prop_assert_eq!(merge(&ab, &b), ab.clone());
        // Every record of the merge is one of its inputs' copies, the latest.
        for (key, record) in &ab {
            let copies: Vec<&Record> = [a.get(key), b.get(key)].into_iter().flatten().collect();
            prop_assert!(copies.contains(&record));
            prop_assert!(copies.iter().all(|copy| copy.changed_ns <= record.changed_ns));
        }
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_damaged_files(
        records in folder_records(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = encode(&records);
        let at = flip.index(bytes.len());
        bytes[at] = byte;
        let _ = decode(&bytes);
        bytes.truncate(cut.index(bytes.len()));
        let _ = decode(&bytes);
    }
}

#[test]
fn pending_records_never_leave_the_machine() {
    let mut records = FolderRecords::new();
    let record = Record {
        guard: ContentGuard::Pending,
        metadata: Metadata {
            mtime_ns: Some(1),
            ..Default::default()
        },
        changed_ns: 1,
    };
    records.insert(RecordKey::Pending(3), record.clone());
    records.insert(
        RecordKey::File(FileId("f".into())),
        Record {
            guard: ContentGuard::Pending,
            ..record
        },
    );
    let decoded = decode(&encode(&records)).unwrap();
    assert!(decoded.records.is_empty());
    assert_eq!(decoded.skipped, 0);
}

#[test]
fn the_format_is_the_documented_json() {
    let mut records = FolderRecords::new();
    let mut metadata = Metadata {
        mtime_ns: Some(1_700_000_000_123_456_789),
        mode: Some(0o640),
        ..Default::default()
    };
    metadata.xattrs.insert("user.tag".into(), b"hi".to_vec());
    records.insert(
        RecordKey::File(FileId("https://1fichier.com/?x".into())),
        Record {
            guard: ContentGuard::Checksum {
                size: 5,
                checksum: "ab".into(),
            },
            metadata,
            changed_ns: 42,
        },
    );
    let json: serde_json::Value = serde_json::from_slice(&encode(&records)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "format": "filehostfs-metadata",
            "version": 1,
            "records": [{
                "kind": "file",
                "id": "https://1fichier.com/?x",
                "guard": {"by": "checksum", "size": 5, "checksum": "ab"},
                "changed_ns": 42,
                "mtime_ns": 1_700_000_000_123_456_789i64,
                "mode": 0o640,
                "xattrs": {"user.tag": "aGk="}
            }]
        })
    );
}

#[test]
fn unreadable_records_are_skipped_and_duplicates_resolved() {
    let text = r#"{
        "format": "filehostfs-metadata", "version": 1, "future_field": true,
        "records": [
            {"kind": "file", "id": "a", "guard": {"by": "folder"}, "changed_ns": 1},
            {"kind": "folder", "id": "1", "guard": {"by": "checksum", "size": 1, "checksum": "aa"}, "changed_ns": 1},
            {"kind": "file", "id": "b", "guard": {"by": "checksum", "size": 1, "checksum": ""}, "changed_ns": 1},
            {"kind": "file", "id": "c", "guard": {"by": "uploaded", "size": 1, "uploaded_ns": 2}, "changed_ns": 1, "mode": 70000},
            {"kind": "file", "id": "d", "guard": {"by": "uploaded", "size": 1, "uploaded_ns": 2}, "changed_ns": 1, "xattrs": {"trusted.x": ""}},
            {"kind": "file", "id": "e", "guard": {"by": "uploaded", "size": 1, "uploaded_ns": 2}, "changed_ns": 1, "xattrs": {"user.x": "%%%"}},
            {"kind": "pending", "id": "3", "guard": {"by": "folder"}, "changed_ns": 1},
            "not a record",
            {"kind": "file", "id": "ok", "guard": {"by": "checksum", "size": 1, "checksum": "AA"}, "changed_ns": 1, "mtime_ns": 10},
            {"kind": "file", "id": "ok", "guard": {"by": "checksum", "size": 1, "checksum": "aa"}, "changed_ns": 2, "mtime_ns": 20},
            {"kind": "file", "id": "ok", "guard": {"by": "checksum", "size": 1, "checksum": "aa"}, "changed_ns": 0, "mtime_ns": 30},
            {"kind": "folder", "id": "9", "guard": {"by": "folder"}, "changed_ns": 5, "uid": 1000, "extra": 1}
        ]
    }"#;
    let decoded = decode(text.as_bytes()).unwrap();
    assert_eq!(decoded.skipped, 8);
    assert_eq!(decoded.records.len(), 2);
    let ok = &decoded.records[&RecordKey::File(FileId("ok".into()))];
    assert_eq!(ok.metadata.mtime_ns, Some(20));
    let folder = &decoded.records[&RecordKey::Folder(FolderId("9".into()))];
    assert_eq!(folder.metadata.uid, Some(1000));
}

#[test]
fn foreign_newer_and_malformed_files_are_refused() {
    assert_eq!(
        decode(br#"{"format": "filehostfs-metadata", "version": 2, "records": []}"#),
        Err(SyncFormatError::TooNew(2))
    );
    assert_eq!(
        decode(br#"{"format": "something-else", "version": 1, "records": []}"#),
        Err(SyncFormatError::NotOurs("something-else".into()))
    );
    assert!(matches!(decode(b"[]"), Err(SyncFormatError::Malformed(_))));
    assert!(matches!(decode(b""), Err(SyncFormatError::Malformed(_))));
    let empty =
        decode(br#"{"format": "filehostfs-metadata", "version": 1, "records": []}"#).unwrap();
    assert!(empty.records.is_empty());
}

#[test]
fn the_sync_file_name_is_stored_unchanged_on_every_service() {
    assert!(SYNC_FILE_NAME.starts_with('.'));
    assert_eq!(names::encode(SYNC_FILE_NAME), SYNC_FILE_NAME);
    assert!(names::is_acceptable(SYNC_FILE_NAME));
    assert!(SYNC_FILE_NAME.len() < 250);
}

// ---------------------------------------------------------------------------
// Through real mounts.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::file_meta::{mode, mtime, set_xattr, stamp, touch_d, STAMP_NS};
use common::mount::Mount;
use common::write_mount::{wait_until, RemoteView, WriteMount};
use common::Emulator;
use filehostfs::remote::{FileEntry, UploadSource};

/// One "machine": its own cache dir (write-back journal) and state dir
/// (metadata store) for mounts of the emulator's first account.
struct Machine {
    cache: tempfile::TempDir,
    state: tempfile::TempDir,
}

impl Machine {
    fn new() -> Machine {
        Machine {
            cache: tempfile::tempdir().unwrap(),
            state: tempfile::tempdir().unwrap(),
        }
    }

    /// Listings trusted for a second (so another machine's changes show
    /// soon), uploads and sync writes right after each change.
    fn mount(&self, emu: &Emulator, extra: &[&str]) -> Mount {
        let state = self.state.path().to_str().unwrap().to_string();
        let mut args = vec![
            "--state-dir",
            &state,
            "--write-back",
            "0",
            "--dir-cache-time",
            "1s",
        ];
        args.extend_from_slice(extra);
        WriteMount::start(emu, self.cache.path(), &args)
    }
}

/// Every name `ls -a` (readdir) shows in `dir` and in `find` below it.
fn all_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let find = Command::new("find").arg(dir).output().unwrap();
    assert!(find.status.success(), "find {}", dir.display());
    names.extend(
        String::from_utf8_lossy(&find.stdout)
            .lines()
            .map(str::to_string),
    );
    names
}

fn assert_hidden(dir: &Path) {
    let names = all_names(dir);
    assert!(
        !names.iter().any(|name| name.contains(SYNC_FILE_NAME)),
        "the sync file shows in {}: {names:?}",
        dir.display()
    );
    let direct = dir.join(SYNC_FILE_NAME);
    let looked_up = std::fs::metadata(&direct).unwrap_err();
    assert_eq!(looked_up.raw_os_error(), Some(libc::ENOENT));
}

/// Creating, renaming onto or making a folder of the sync file's name is
/// refused with EPERM; removing it finds nothing.
fn assert_name_refused(dir: &Path, existing: &Path) {
    let reserved = dir.join(SYNC_FILE_NAME);
    let created = std::fs::write(&reserved, b"mine").unwrap_err();
    assert_eq!(
        created.raw_os_error(),
        Some(libc::EPERM),
        "create: {created}"
    );
    let renamed = std::fs::rename(existing, &reserved).unwrap_err();
    assert_eq!(
        renamed.raw_os_error(),
        Some(libc::EPERM),
        "rename: {renamed}"
    );
    assert!(existing.exists(), "a refused rename lost its source");
    let made = std::fs::create_dir(&reserved).unwrap_err();
    assert_eq!(made.raw_os_error(), Some(libc::EPERM), "mkdir: {made}");
    let removed = std::fs::remove_file(&reserved).unwrap_err();
    assert_eq!(
        removed.raw_os_error(),
        Some(libc::ENOENT),
        "unlink: {removed}"
    );
}

#[test]
fn times_modes_and_attributes_set_on_one_machine_show_on_another() {
    let emu = Emulator::start();
    let remote = RemoteView::new(&emu, &emu.key());
    remote.upload("", "shared.txt", b"on the service");
    let root = remote.remote.root();
    remote
        .runtime
        .block_on(remote.remote.create_folder(&root, "docs"))
        .unwrap();
    remote.upload("docs", "inner.txt", b"inside a folder");
    let (a, b) = (Machine::new(), Machine::new());
    let mount_a = a.mount(&emu, &["--metadata-sync"]);
    let mount_b = b.mount(&emu, &["--metadata-sync"]);
    let (on_a, on_b) = (mount_a.path(), mount_b.path());
    // B has listed both folders before A changes anything.
    assert_eq!(mode(&on_b.join("docs/inner.txt")), 0o644);
    assert_ne!(mtime(&on_b.join("shared.txt")), stamp());

    touch_d(&on_a.join("shared.txt"));
    set_xattr(&on_a.join("shared.txt"), "user.origin", b"machine a").unwrap();
    std::fs::set_permissions(
        on_a.join("docs/inner.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(on_a.join("docs/new.txt"), b"written on a").unwrap();
    touch_d(&on_a.join("docs/new.txt"));

    // One sync file per changed folder, under the reserved name.
    wait_until("the sync files on the service", || {
        remote.files_named("", SYNC_FILE_NAME).len() == 1
            && remote.files_named("docs", SYNC_FILE_NAME).len() == 1
    });
    wait_until("machine B to see A's time, mode and attribute", || {
        mtime(&on_b.join("shared.txt")) == stamp()
            && mode(&on_b.join("docs/inner.txt")) == 0o600
            && on_b.join("docs/new.txt").exists()
            && mtime(&on_b.join("docs/new.txt")) == stamp()
    });
    assert_eq!(
        common::mount::getxattr(&on_b.join("shared.txt"), "user.origin").unwrap(),
        b"machine a"
    );
    assert!(
        remote.files_named("docs", "new.txt").len() == 1,
        "the new file was uploaded once"
    );

    // B's own change goes the other way, and the last writer wins.
    std::fs::set_permissions(
        on_b.join("shared.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    wait_until("machine A to see B's later mode", || {
        mode(&on_a.join("shared.txt")) == 0o640
    });
    assert_eq!(
        mtime(&on_a.join("shared.txt")),
        stamp(),
        "B wrote the whole record, time included"
    );

    // Never shown, never creatable, on either machine.
    for mount in [on_a, on_b] {
        assert_hidden(mount);
        assert_hidden(&mount.join("docs"));
        assert_name_refused(&mount.join("docs"), &mount.join("docs/inner.txt"));
    }
    mount_b.unmount();
    mount_a.unmount();
    // A replaced sync file is removed: one per folder stays.
    assert_eq!(remote.files_named("", SYNC_FILE_NAME).len(), 1);
    assert_eq!(remote.files_named("docs", SYNC_FILE_NAME).len(), 1);

    // Another client replaces shared.txt: a third machine reading the sync
    // files does not give A's and B's record to the new content.
    let old = remote.files_named("", "shared.txt").remove(0);
    remote
        .runtime
        .block_on(remote.remote.remove_file(&old.id))
        .unwrap();
    let new = remote.upload("", "shared.txt", b"replaced by another client");
    let c = Machine::new();
    let mount_c = c.mount(&emu, &["--metadata-sync"]);
    let on_c = mount_c.path();
    assert_eq!(
        std::fs::metadata(on_c.join("shared.txt")).unwrap().len(),
        new.size
    );
    assert_ne!(mtime(&on_c.join("shared.txt")), stamp());
    assert_eq!(mode(&on_c.join("shared.txt")), 0o644);
    assert_eq!(
        mode(&on_c.join("docs/inner.txt")),
        0o600,
        "the rest still applies"
    );
    mount_c.unmount();
}

/// A sync file as another machine would have written it, with a record for
/// each `(file, guard matches)`.
fn forged_sync_file(files: &[(&FileEntry, bool)]) -> Vec<u8> {
    let mut records = FolderRecords::new();
    for (file, matches) in files {
        let mut guard = ContentGuard::for_file(file);
        if !matches {
            guard = match guard {
                ContentGuard::Checksum { size, checksum } => ContentGuard::Checksum {
                    size: size + 1,
                    checksum,
                },
                ContentGuard::Uploaded { size, uploaded_ns } => ContentGuard::Uploaded {
                    size: size + 1,
                    uploaded_ns,
                },
                other => other,
            };
        }
        records.insert(
            RecordKey::File(file.id.clone()),
            Record {
                guard,
                metadata: Metadata {
                    mtime_ns: Some(STAMP_NS as i64),
                    mode: Some(0o600),
                    ..Metadata::default()
                },
                changed_ns: 1,
            },
        );
    }
    encode(&records)
}

fn upload_bytes(remote: &RemoteView, folder: &str, name: &str, bytes: Vec<u8>) -> FileEntry {
    let folder = remote.folder(folder);
    let size = bytes.len() as u64;
    let source = UploadSource::Reader {
        reader: Box::pin(std::io::Cursor::new(bytes)),
        size,
    };
    remote
        .runtime
        .block_on(remote.remote.upload(&folder, name, source, None))
        .unwrap()
}

#[test]
fn records_for_other_content_and_mounts_without_the_option_are_left_alone() {
    let emu = Emulator::start();
    let remote = RemoteView::new(&emu, &emu.key());
    remote.upload("", "same.txt", b"the content the record names");
    remote.upload("", "replaced.txt", b"not what the record names");
    // As the listing shows them (what a mount's guards come from).
    let same = remote.files_named("", "same.txt").remove(0);
    let replaced = remote.files_named("", "replaced.txt").remove(0);
    let sync_file = forged_sync_file(&[(&same, true), (&replaced, false)]);
    let written = upload_bytes(&remote, "", SYNC_FILE_NAME, sync_file);

    // Without the option: hidden, refused, and not read.
    let plain_machine = Machine::new();
    let plain = plain_machine.mount(&emu, &[]);
    assert_hidden(plain.path());
    assert_name_refused(plain.path(), &plain.path().join("same.txt"));
    assert_ne!(mtime(&plain.path().join("same.txt")), stamp());
    assert_eq!(mode(&plain.path().join("same.txt")), 0o644);
    plain.unmount();

    // With it: the record whose guard names the content applies, the other
    // does not.
    let machine = Machine::new();
    let synced = machine.mount(&emu, &["--metadata-sync"]);
    assert_eq!(mtime(&synced.path().join("same.txt")), stamp());
    assert_eq!(mode(&synced.path().join("same.txt")), 0o600);
    assert_ne!(mtime(&synced.path().join("replaced.txt")), stamp());
    assert_eq!(mode(&synced.path().join("replaced.txt")), 0o644);
    assert_hidden(synced.path());
    synced.unmount();
    // Reading changed nothing on the service.
    let files = remote.files_named("", SYNC_FILE_NAME);
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].id, written.id);
}

#[test]
fn a_sync_file_of_a_newer_format_is_never_replaced() {
    let emu = Emulator::start();
    let remote = RemoteView::new(&emu, &emu.key());
    remote.upload("", "a.txt", b"aaa");
    let future = br#"{"format": "filehostfs-metadata", "version": 99, "records": []}"#.to_vec();
    let kept = upload_bytes(&remote, "", SYNC_FILE_NAME, future.clone());
    let machine = Machine::new();
    let mount = machine.mount(&emu, &["--metadata-sync"]);
    touch_d(&mount.path().join("a.txt"));
    assert_eq!(mtime(&mount.path().join("a.txt")), stamp());
    let log = mount.unmount();
    assert!(
        log.contains("not sharing this folder's metadata"),
        "the log says why: {log}"
    );
    let files = remote.files_named("", SYNC_FILE_NAME);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].id, kept.id);
    assert_eq!(remote.content(&files[0]), future);
    // The local record is kept all the same.
    let mount = machine.mount(&emu, &["--metadata-sync"]);
    assert_eq!(mtime(&mount.path().join("a.txt")), stamp());
    mount.unmount();
}

#[test]
fn file_io_refuses_the_option() {
    let (emu, keys) = common::multi::start_multi(&[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = common::multi::write_multi_config(&emu, &keys, dir.path(), "");
    let mountpoint = dir.path().join("mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_filehostfs"))
        .arg("--config")
        .arg(&config)
        .args(["mount", "outbox:"])
        .arg(&mountpoint)
        .arg("--metadata-sync")
        .arg("--no-disk-cache")
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "file.io mounted with --metadata-sync"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--metadata-sync") && stderr.contains("file.io"),
        "{stderr}"
    );
    assert!(!common::mount::is_mounted(&mountpoint));
    // The config key too, when the config is read.
    let keyed = dir.path().join("keyed.toml");
    let text = std::fs::read_to_string(&config).unwrap() + "metadata_sync = true\n";
    std::fs::write(&keyed, text).unwrap();
    std::fs::set_permissions(&keyed, std::fs::Permissions::from_mode(0o600)).unwrap();
    let error = filehostfs::config::Config::load(Some(&keyed)).unwrap_err();
    assert!(format!("{error:#}").contains("file.io"), "{error:#}");
}

// ---------------------------------------------------------------------------
// Through the filesystem core (no kernel): batching and merging, counted.

use std::ffi::OsStr;
use std::sync::Arc;

use filehostfs::fs::{AttrChange, Core, FsConfig};
use filehostfs::remote::Remote;

/// A core with `--metadata-sync`, its metadata in memory (its own
/// "machine"), every lookup listing again, and sync files written
/// `debounce` after the last change.
fn sync_core_config(staging: &Path, debounce: Duration) -> FsConfig {
    FsConfig {
        metadata_sync: true,
        ..common::core_config::small_core(staging, "sync-test", debounce)
    }
}

async fn sync_files(remote: &Arc<dyn Remote>) -> Vec<FileEntry> {
    let listing = remote.list_folder(&remote.root()).await.unwrap();
    listing
        .files
        .into_iter()
        .filter(|f| f.name == SYNC_FILE_NAME)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_to_a_folder_are_written_once_per_window_and_merged_elsewhere() {
    let emu = Emulator::start();
    let remote: Arc<dyn Remote> = Arc::new(common::remote::fast_client(&emu));
    let root = remote.root();
    let names: Vec<String> = (0..5).map(|i| format!("file-{i}.txt")).collect();
    for name in &names {
        let bytes = name.as_bytes().to_vec();
        let size = bytes.len() as u64;
        let source = UploadSource::Reader {
            reader: Box::pin(std::io::Cursor::new(bytes)),
            size,
        };
        remote.upload(&root, name, source, None).await.unwrap();
    }
    let (staging_a, staging_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Changes within 3 s of each other go out in one write.
    let window = Duration::from_secs(3);
    let (a, _) = Core::new(
        remote.clone(),
        root.clone(),
        sync_core_config(staging_a.path(), window),
    )
    .unwrap();
    let (b, _) = Core::new(
        remote.clone(),
        root.clone(),
        sync_core_config(staging_b.path(), window),
    )
    .unwrap();
    let mut inos = Vec::new();
    for name in &names {
        let attr = a.lookup(a.root(), OsStr::new(name)).await.unwrap();
        assert_ne!(attr.mtime, stamp());
        let seen = b.lookup(b.root(), OsStr::new(name)).await.unwrap();
        assert_ne!(seen.mtime, stamp());
        inos.push(attr.ino);
    }
    emu.reset_stats();
    for ino in &inos {
        let change = AttrChange {
            mtime: Some(stamp()),
            mode: Some(0o600),
            ..AttrChange::default()
        };
        a.setattr(*ino, change).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while sync_files(&remote).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no sync file written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(window + Duration::from_secs(1)).await;
    assert_eq!(
        emu.request_count("1fichier:upload"),
        1,
        "one write for five changes"
    );

    // The other machine lists the folder again and takes the records.
    for name in &names {
        let attr = b.lookup(b.root(), OsStr::new(name)).await.unwrap();
        assert_eq!(attr.mtime, stamp(), "{name}");
        assert_eq!(attr.perm, 0o600, "{name}");
        let readdir = b.readdir(b.root()).await.unwrap();
        assert!(readdir.iter().all(|(n, _)| n != SYNC_FILE_NAME));
    }
    // Reading wrote nothing; a second change replaces the file (upload,
    // then removal of the old one).
    assert_eq!(emu.request_count("1fichier:upload"), 1);
    let first = sync_files(&remote).await;
    let change = AttrChange {
        mode: Some(0o640),
        ..AttrChange::default()
    };
    b.setattr(
        b.lookup(b.root(), OsStr::new(&names[0])).await.unwrap().ino,
        change,
    )
    .await
    .unwrap();
    // At unmount at the latest.
    b.finish(std::future::pending()).await;
    let second = sync_files(&remote).await;
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second[0].id, first[0].id);
    assert_eq!(emu.request_count("1fichier:upload"), 2);
    let attr = a.lookup(a.root(), OsStr::new(&names[0])).await.unwrap();
    assert_eq!(attr.perm, 0o640, "the later writer wins");
    assert_eq!(attr.mtime, stamp());
    a.finish(std::future::pending()).await;
    assert_eq!(
        emu.request_count("1fichier:upload"),
        2,
        "A had nothing left to share"
    );
}
