//! The metadata store through real SQLite files: guards, re-keying of
//! pending files, last-writer-wins merges, several handles at once, a
//! process killed right after a change, and a model-based property test.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use filehostfs::metadata::sync::newer;
use filehostfs::metadata::{
    ContentGuard, Metadata, MetadataChange, MetadataError, MetadataStore, Record, RecordKey,
};
use filehostfs::remote::{FileId, FolderId};
use proptest::prelude::*;

fn file(id: &str) -> RecordKey {
    RecordKey::File(FileId(id.into()))
}

fn checksum(size: u64, sum: &str) -> ContentGuard {
    ContentGuard::Checksum {
        size,
        checksum: sum.into(),
    }
}

fn at(ns: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns as u64)
}

fn open(dir: &Path) -> MetadataStore {
    MetadataStore::open(&dir.join("metadata.db")).unwrap()
}

fn touch(mtime_ns: i64) -> MetadataChange {
    MetadataChange {
        mtime_ns: Some(mtime_ns),
        ..Default::default()
    }
}

#[test]
fn a_record_applies_only_to_the_content_it_was_set_for() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = file("https://1fichier.com/?abc");
    let old = checksum(10, "aa");
    let new = checksum(10, "bb");
    assert_eq!(store.get(&key, &old).unwrap(), None);
    let set = store
        .update(&key, &old, &touch(-1_500_000_000), at(1_000))
        .unwrap();
    assert_eq!(set.metadata.mtime_ns, Some(-1_500_000_000));
    assert_eq!(store.get(&key, &old).unwrap(), Some(set.clone()));
    // Same id, other bytes: nothing applies, and the lookup keeps the record.
    assert_eq!(store.get(&key, &new).unwrap(), None);
    assert_eq!(store.get(&key, &old).unwrap(), Some(set));
    // A change for the new content starts afresh.
    let chmod = MetadataChange {
        mode: Some(0o600),
        ..Default::default()
    };
    let replaced = store.update(&key, &new, &chmod, at(2_000)).unwrap();
    assert_eq!(replaced.metadata.mtime_ns, None);
    assert_eq!(replaced.metadata.mode, Some(0o600));
    assert_eq!(store.get(&key, &old).unwrap(), None);
}

#[test]
fn changes_merge_field_by_field_and_xattrs_come_and_go() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = RecordKey::Folder(FolderId("42".into()));
    let guard = ContentGuard::Folder;
    store.update(&key, &guard, &touch(5), at(1)).unwrap();
    store
        .update(
            &key,
            &guard,
            &MetadataChange {
                uid: Some(1000),
                gid: Some(100),
                set_xattrs: vec![
                    ("user.comment".into(), b"hello".to_vec()),
                    ("user.empty".into(), Vec::new()),
                ],
                ..Default::default()
            },
            at(2),
        )
        .unwrap();
    let record = store
        .update(
            &key,
            &guard,
            &MetadataChange {
                remove_xattrs: vec!["user.comment".into()],
                ..Default::default()
            },
            at(3),
        )
        .unwrap();
    let mut expected = Metadata {
        mtime_ns: Some(5),
        uid: Some(1000),
        gid: Some(100),
        ..Default::default()
    };
    expected.xattrs.insert("user.empty".into(), Vec::new());
    assert_eq!(record.metadata, expected);
    assert_eq!(store.get(&key, &guard).unwrap().unwrap().metadata, expected);
}

#[test]
fn invalid_changes_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = file("f");
    let guard = checksum(1, "aa");
    let refused = store.update(
        &key,
        &guard,
        &MetadataChange {
            mtime_ns: Some(1),
            set_xattrs: vec![("security.capability".into(), vec![1])],
            ..Default::default()
        },
        at(1),
    );
    assert!(matches!(refused, Err(MetadataError::XattrNotSupported(_))));
    assert_eq!(store.get(&key, &guard).unwrap(), None);
}

#[test]
fn a_pending_record_moves_to_the_uploaded_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let pending = RecordKey::Pending(17);
    let uploaded = file("https://1fichier.com/?new");
    let guard = checksum(3, "cc");
    store
        .update(&pending, &ContentGuard::Pending, &touch(99), at(10))
        .unwrap();
    assert_eq!(store.pending_entries().unwrap(), vec![17]);
    assert!(store.rekey(&pending, &uploaded, &guard).unwrap());
    assert_eq!(store.get(&pending, &ContentGuard::Pending).unwrap(), None);
    let moved = store.get(&uploaded, &guard).unwrap().unwrap();
    assert_eq!(moved.metadata.mtime_ns, Some(99));
    assert_eq!(moved.changed_ns, 10);
    assert_eq!(store.pending_entries().unwrap(), Vec::<u64>::new());
    // Nothing to move: the target is left alone.
    assert!(!store.rekey(&pending, &uploaded, &guard).unwrap());
    assert!(store.get(&uploaded, &guard).unwrap().is_some());
    assert!(store.forget(&uploaded).unwrap());
    assert!(!store.forget(&uploaded).unwrap());
    assert_eq!(store.get(&uploaded, &guard).unwrap(), None);
}

#[test]
fn a_local_change_wins_over_the_previous_one_even_if_the_clock_went_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = file("f");
    let guard = checksum(1, "aa");
    let first = store.update(&key, &guard, &touch(1), at(1_000)).unwrap();
    let second = store.update(&key, &guard, &touch(2), at(500)).unwrap();
    assert!(second.changed_ns > first.changed_ns);
}

#[test]
fn synced_records_merge_last_writer_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = file("f");
    let guard = checksum(1, "aa");
    let local = store.update(&key, &guard, &touch(1), at(1_000)).unwrap();
    let older = Record {
        guard: guard.clone(),
        metadata: Metadata {
            mtime_ns: Some(7),
            ..Default::default()
        },
        changed_ns: 999,
    };
    assert!(!store.merge_synced(&key, &older).unwrap());
    assert_eq!(store.get(&key, &guard).unwrap(), Some(local.clone()));
    assert!(!store.merge_synced(&key, &local).unwrap(), "same record");
    let later = Record {
        changed_ns: 1_001,
        ..older
    };
    assert!(store.merge_synced(&key, &later).unwrap());
    assert_eq!(store.get(&key, &guard).unwrap(), Some(later.clone()));
    let unknown = file("g");
    assert!(store.merge_synced(&unknown, &later).unwrap());
    let bad = Record {
        metadata: Metadata {
            mode: Some(0o170000),
            ..Default::default()
        },
        ..later
    };
    assert!(matches!(
        store.merge_synced(&unknown, &bad),
        Err(MetadataError::InvalidMode(_))
    ));
}

#[test]
fn get_many_and_records_answer_for_a_whole_folder() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let guard = |i: u64| checksum(i, "ab");
    for i in 0..20u64 {
        store
            .update(&file(&i.to_string()), &guard(i), &touch(i as i64), at(1))
            .unwrap();
    }
    let wanted: Vec<_> = (0..25u64)
        .map(|i| {
            // Every third file was replaced meanwhile: its guard differs.
            let g = if i % 3 == 0 { guard(i + 100) } else { guard(i) };
            (file(&i.to_string()), g)
        })
        .collect();
    let found = store.get_many(&wanted).unwrap();
    let mut ids: Vec<u64> = found
        .keys()
        .map(|key| match key {
            RecordKey::File(id) => id.0.parse().unwrap(),
            other => panic!("unexpected {other}"),
        })
        .collect();
    ids.sort_unstable();
    let expected: Vec<u64> = (0..20).filter(|i| i % 3 != 0).collect();
    assert_eq!(ids, expected);
    let keys: Vec<_> = wanted.iter().map(|(key, _)| key.clone()).collect();
    assert_eq!(store.records(&keys).unwrap().len(), 20, "unguarded");
}

#[test]
fn an_unreadable_row_counts_as_absent_and_is_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let guard = checksum(1, "aa");
    store.update(&file("f"), &guard, &touch(1), at(1)).unwrap();
    {
        let raw = rusqlite::Connection::open(dir.path().join("metadata.db")).unwrap();
        raw.execute("UPDATE records SET guard = 'garbage:x' WHERE key = 'f'", [])
            .unwrap();
        raw.execute(
            "INSERT INTO records (kind, key, guard, mode, changed_ns)
             VALUES ('file', 'g', 'checksum:1:aa', -5, 0)",
            [],
        )
        .unwrap();
    }
    assert_eq!(store.get(&file("f"), &guard).unwrap(), None);
    assert_eq!(store.get(&file("g"), &guard).unwrap(), None);
    let fixed = store.update(&file("f"), &guard, &touch(2), at(5)).unwrap();
    assert_eq!(store.get(&file("f"), &guard).unwrap(), Some(fixed));
}

#[test]
fn a_database_from_a_newer_program_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    rusqlite::Connection::open(dir.path().join("metadata.db"))
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    assert!(matches!(
        MetadataStore::open(&dir.path().join("metadata.db")),
        Err(MetadataError::SchemaTooNew { found: 99, .. })
    ));
}

#[test]
fn several_handles_write_at_once() {
    // Each handle is its own connection, as each mount process has.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata.db");
    drop(MetadataStore::open(&path).unwrap());
    std::thread::scope(|scope| {
        for writer in 0..4 {
            let path = &path;
            scope.spawn(move || {
                let store = MetadataStore::open(path).unwrap();
                for i in 0..25 {
                    let key = file(&format!("{writer}-{i}"));
                    store
                        .update(&key, &ContentGuard::Folder, &touch(i), SystemTime::now())
                        .unwrap();
                }
            });
        }
    });
    let store = MetadataStore::open(&path).unwrap();
    let keys: Vec<_> = (0..4)
        .flat_map(|w| (0..25).map(move |i| file(&format!("{w}-{i}"))))
        .collect();
    assert_eq!(store.records(&keys).unwrap().len(), 100);
}

const CHILD_DB_ENV: &str = "FILEHOSTFS_TEST_METADATA_CHILD_DB";
const CHILD_READY: &str = "metadata-child: change returned";

/// Not a test on its own: the child process of
/// `a_change_that_returned_survives_kill_9`, run only when that test sets
/// the variable.
#[test]
#[ignore = "run as a child process by a_change_that_returned_survives_kill_9"]
fn metadata_store_kill_9_child() {
    let Some(path) = std::env::var_os(CHILD_DB_ENV) else {
        return;
    };
    let store = MetadataStore::open(Path::new(&path)).unwrap();
    store
        .update(&file("f"), &checksum(1, "aa"), &touch(123), at(1))
        .unwrap();
    println!("{CHILD_READY}");
    // Wait to be killed (bounded, should the parent be gone).
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_change_that_returned_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "metadata_store_kill_9_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut saw_change = false;
    for line in BufReader::new(stdout).lines() {
        // libtest may print the test's name on the same line first.
        if line.unwrap().contains(CHILD_READY) {
            saw_change = true;
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(saw_change, "the child never reported its change");
    let store = MetadataStore::open(&path).unwrap();
    let record = store.get(&file("f"), &checksum(1, "aa")).unwrap().unwrap();
    assert_eq!(record.metadata.mtime_ns, Some(123));
}

// ---- model-based property test ----

#[derive(Clone, Debug)]
enum Op {
    Update(usize, usize, MetadataChange, i64),
    Get(usize, usize),
    Rekey(usize, usize, usize),
    Forget(usize),
    MergeSynced(usize, Record),
    Reopen,
}

fn keys() -> Vec<RecordKey> {
    vec![
        file("a"),
        file("b"),
        RecordKey::Folder(FolderId("1".into())),
        RecordKey::Pending(1),
        RecordKey::Pending(2),
    ]
}

fn guards() -> Vec<ContentGuard> {
    vec![
        checksum(1, "aa"),
        checksum(1, "bb"),
        ContentGuard::Uploaded {
            size: 1,
            uploaded_ns: 5,
        },
        ContentGuard::Folder,
        ContentGuard::Pending,
    ]
}

fn change() -> impl Strategy<Value = MetadataChange> {
    let name = prop::sample::select(vec!["user.a", "user.b"]).prop_map(str::to_string);
    (
        prop::option::of(any::<i64>()),
        prop::option::of(0u32..=0o7777),
        prop::option::of(0u32..3),
        prop::option::of(0u32..3),
        prop::collection::vec(
            (name.clone(), prop::collection::vec(any::<u8>(), 0..4)),
            0..3,
        ),
        prop::collection::vec(name, 0..2),
    )
        .prop_map(
            |(mtime_ns, mode, uid, gid, set_xattrs, remove_xattrs)| MetadataChange {
                mtime_ns,
                mode,
                uid,
                gid,
                set_xattrs,
                remove_xattrs,
            },
        )
}

fn record() -> impl Strategy<Value = Record> {
    (0..5usize, change(), 0i64..40).prop_map(|(guard, change, changed_ns)| {
        let mut metadata = Metadata::default();
        metadata.apply(&change);
        Record {
            guard: guards()[guard].clone(),
            metadata,
            changed_ns,
        }
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..5usize, 0..5usize, change(), 0i64..40)
            .prop_map(|(k, g, c, t)| Op::Update(k, g, c, t)),
        3 => (0..5usize, 0..5usize).prop_map(|(k, g)| Op::Get(k, g)),
        2 => (0..5usize, 0..5usize, 0..5usize).prop_map(|(f, t, g)| Op::Rekey(f, t, g)),
        1 => (0..5usize).prop_map(Op::Forget),
        2 => (0..5usize, record()).prop_map(|(k, r)| Op::MergeSynced(k, r)),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_a_map_model(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        let keys = keys();
        let guards = guards();
        let mut model: HashMap<RecordKey, Record> = HashMap::new();
        for op in ops {
            match op {
                Op::Update(k, g, change, t) => {
                    let (key, guard) = (&keys[k], &guards[g]);
                    let got = store.update(key, guard, &change, at(t)).unwrap();
                    let previous = model.get(key);
                    let changed_ns = previous.map_or(t, |p| t.max(p.changed_ns + 1));
                    let mut metadata = previous
                        .filter(|p| &p.guard == guard)
                        .map(|p| p.metadata.clone())
                        .unwrap_or_default();
                    metadata.apply(&change);
                    let expected = Record { guard: guard.clone(), metadata, changed_ns };
                    prop_assert_eq!(&got, &expected);
                    model.insert(key.clone(), expected);
                }
                Op::Get(k, g) => {
                    let expected = model.get(&keys[k]).filter(|r| r.guard == guards[g]).cloned();
                    prop_assert_eq!(store.get(&keys[k], &guards[g]).unwrap(), expected);
                }
                Op::Rekey(from, to, g) => {
                    let moved = store.rekey(&keys[from], &keys[to], &guards[g]).unwrap();
                    let expected = match model.remove(&keys[from]) {
                        Some(mut record) => {
                            record.guard = guards[g].clone();
                            model.insert(keys[to].clone(), record);
                            true
                        }
                        None => false,
                    };
                    prop_assert_eq!(moved, expected);
                }
                Op::Forget(k) => {
                    prop_assert_eq!(store.forget(&keys[k]).unwrap(), model.remove(&keys[k]).is_some());
                }
                Op::MergeSynced(k, incoming) => {
                    let changed = store.merge_synced(&keys[k], &incoming).unwrap();
                    let wins = match model.get(&keys[k]) {
                        None => true,
                        Some(kept) => kept != &incoming && newer(kept, &incoming) == &incoming,
                    };
                    if wins {
                        model.insert(keys[k].clone(), incoming);
                    }
                    prop_assert_eq!(changed, wins);
                }
                Op::Reopen => {
                    drop(store);
                    store = open(dir.path());
                }
            }
            let mut stored = store.records(&keys).unwrap();
            stored.sort();
            let mut expected: Vec<_> = model.iter().map(|(k, r)| (k.clone(), r.clone())).collect();
            expected.sort();
            prop_assert_eq!(stored, expected);
            let mut pending: Vec<u64> = model
                .keys()
                .filter_map(|k| match k { RecordKey::Pending(e) => Some(*e), _ => None })
                .collect();
            pending.sort_unstable();
            prop_assert_eq!(store.pending_entries().unwrap(), pending);
        }
    }
}
