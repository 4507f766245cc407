//! The `--metadata-sync` file format: round trips, what a reader skips or
//! refuses, and the last-writer-wins merge's algebra.

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
