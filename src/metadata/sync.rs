//! The sync format (`--metadata-sync`): one hidden file per remote folder
//! holding the metadata records of that folder's files and subfolders, so
//! another machine mounting the same account sees them.
//!
//! # The file's name: `.filehostfs-metadata.json`
//!
//! - The leading dot hides it from `ls` and file managers of other clients
//!   that show the account as a folder; the mount itself never lists it and
//!   refuses to create, open or remove a file of that name.
//! - The program's name in it makes a clash with a user's own file all but
//!   impossible (no program but this one has reason to write it), and tells
//!   whoever finds it in the service's web interface where it comes from.
//! - It is plain ASCII without any character a service refuses or our name
//!   encoding changes, and far below every service's length limit, so it is
//!   stored under exactly this name everywhere.
//!
//! # Contents
//!
//! Versioned JSON: `{"format": "filehostfs-metadata", "version": 1,
//! "records": [...]}`, each record carrying its key (`kind` file or folder,
//! `id`), its guard, `changed_ns`, and whichever of `mtime_ns`, `mode`,
//! `uid`, `gid`, `xattrs` (values in base64) are set. A reader skips records
//! it cannot understand instead of refusing the whole file, and refuses a
//! file of a newer version (it would otherwise drop what it does not know
//! when writing the file back). Pending records never leave the machine.
//!
//! # Conflicts: last writer wins, per file
//!
//! Two copies of one file's record (this machine's and the sync file's,
//! or two versions of the sync file) are reconciled by keeping the one that
//! changed last, whole ([`newer`]); equal change times are broken by
//! comparing the records themselves, so every machine picks the same winner
//! whatever order it sees them in. A merge of whole folders ([`merge`]) does
//! this per record, which makes it commutative, associative and idempotent.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::record::check_xattr_name;
use super::{ContentGuard, Metadata, Record, RecordKey};
use crate::remote::{FileId, FolderId};

/// The hidden per-folder file's name (reserved in every folder).
pub const SYNC_FILE_NAME: &str = ".filehostfs-metadata.json";
/// The format this program writes and the newest it reads.
pub const SYNC_FORMAT_VERSION: u64 = 1;
const FORMAT_TAG: &str = "filehostfs-metadata";

/// The records of one folder, one per key.
pub type FolderRecords = BTreeMap<RecordKey, Record>;

/// Of two copies of one key's record, the one that wins (see the module).
pub fn newer<'a>(a: &'a Record, b: &'a Record) -> &'a Record {
    if (a.changed_ns, a) >= (b.changed_ns, b) {
        a
    } else {
        b
    }
}

/// Adds `record` under `key` unless the copy already there wins.
pub fn insert_newer(records: &mut FolderRecords, key: RecordKey, record: Record) {
    match records.get(&key) {
        Some(kept) if newer(kept, &record) == kept => {}
        _ => {
            records.insert(key, record);
        }
    }
}

/// Both folders' records, the newer copy of each key.
pub fn merge(a: &FolderRecords, b: &FolderRecords) -> FolderRecords {
    let mut merged = a.clone();
    for (key, record) in b {
        insert_newer(&mut merged, key.clone(), record.clone());
    }
    merged
}

/// A sync file that cannot be used at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SyncFormatError {
    #[error("metadata sync file is not valid JSON of the expected shape: {0}")]
    Malformed(String),
    #[error("metadata sync file was not written by filehostfs (format {0:?})")]
    NotOurs(String),
    #[error("metadata sync file has format version {0}, newer than this program understands ({SYNC_FORMAT_VERSION})")]
    TooNew(u64),
}

/// A decoded sync file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    pub records: FolderRecords,
    /// Records that were skipped because they made no sense.
    pub skipped: usize,
}

#[derive(Serialize, Deserialize)]
struct WireFile {
    format: String,
    version: u64,
    /// Kept as raw values so one unreadable record does not cost the others.
    records: Vec<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct WireRecord {
    kind: WireKind,
    id: String,
    guard: WireGuard,
    changed_ns: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtime_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gid: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    xattrs: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireKind {
    File,
    Folder,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
enum WireGuard {
    Checksum { size: u64, checksum: String },
    Uploaded { size: u64, uploaded_ns: i64 },
    Folder,
}

/// The file's bytes for `records` (pending records are left out).
pub fn encode(records: &FolderRecords) -> Vec<u8> {
    let records = records
        .iter()
        .filter_map(|(key, record)| to_wire(key, record))
        .map(|wire| serde_json::to_value(wire).expect("a wire record is always valid JSON"))
        .collect();
    let file = WireFile {
        format: FORMAT_TAG.to_string(),
        version: SYNC_FORMAT_VERSION,
        records,
    };
    let mut bytes = serde_json::to_vec_pretty(&file).expect("a sync file is always valid JSON");
    bytes.push(b'\n');
    bytes
}

/// Reads a sync file (see the module for what is skipped and refused).
pub fn decode(bytes: &[u8]) -> Result<Decoded, SyncFormatError> {
    let file: WireFile =
        serde_json::from_slice(bytes).map_err(|e| SyncFormatError::Malformed(e.to_string()))?;
    if file.format != FORMAT_TAG {
        return Err(SyncFormatError::NotOurs(file.format));
    }
    if file.version > SYNC_FORMAT_VERSION {
        return Err(SyncFormatError::TooNew(file.version));
    }
    let mut decoded = Decoded::default();
    for value in file.records {
        match serde_json::from_value::<WireRecord>(value)
            .ok()
            .and_then(from_wire)
        {
            Some((key, record)) => insert_newer(&mut decoded.records, key, record),
            None => decoded.skipped += 1,
        }
    }
    Ok(decoded)
}

fn to_wire(key: &RecordKey, record: &Record) -> Option<WireRecord> {
    let (kind, id) = match key {
        RecordKey::File(id) => (WireKind::File, id.0.clone()),
        RecordKey::Folder(id) => (WireKind::Folder, id.0.clone()),
        RecordKey::Pending(_) => return None,
    };
    let guard = match &record.guard {
        ContentGuard::Checksum { size, checksum } => WireGuard::Checksum {
            size: *size,
            checksum: checksum.clone(),
        },
        ContentGuard::Uploaded { size, uploaded_ns } => WireGuard::Uploaded {
            size: *size,
            uploaded_ns: *uploaded_ns,
        },
        ContentGuard::Folder => WireGuard::Folder,
        ContentGuard::Pending => return None,
    };
    let metadata = &record.metadata;
    Some(WireRecord {
        kind,
        id,
        guard,
        changed_ns: record.changed_ns,
        mtime_ns: metadata.mtime_ns,
        mode: metadata.mode,
        uid: metadata.uid,
        gid: metadata.gid,
        xattrs: metadata
            .xattrs
            .iter()
            .map(|(name, value)| (name.clone(), BASE64.encode(value)))
            .collect(),
    })
}

fn from_wire(wire: WireRecord) -> Option<(RecordKey, Record)> {
    let key = match wire.kind {
        WireKind::File => RecordKey::File(FileId(wire.id)),
        WireKind::Folder => RecordKey::Folder(FolderId(wire.id)),
    };
    let guard = match wire.guard {
        WireGuard::Checksum { checksum, .. } if checksum.is_empty() => return None,
        WireGuard::Checksum { size, checksum } => ContentGuard::Checksum {
            size,
            checksum: checksum.to_ascii_lowercase(),
        },
        WireGuard::Uploaded { size, uploaded_ns } => ContentGuard::Uploaded { size, uploaded_ns },
        WireGuard::Folder => ContentGuard::Folder,
    };
    // A folder's record with a file's guard (or the reverse) was not
    // written by us: it would never match a lookup, so it is noise.
    if matches!(key, RecordKey::Folder(_)) != (guard == ContentGuard::Folder) {
        return None;
    }
    if wire.mode.is_some_and(|mode| mode & !0o7777 != 0) {
        return None;
    }
    let mut xattrs = BTreeMap::new();
    for (name, value) in wire.xattrs {
        check_xattr_name(&name).ok()?;
        let value = BASE64.decode(value).ok()?;
        if value.len() > super::record::MAX_XATTR_VALUE {
            return None;
        }
        xattrs.insert(name, value);
    }
    Some((
        key,
        Record {
            guard,
            metadata: Metadata {
                mtime_ns: wire.mtime_ns,
                mode: wire.mode,
                uid: wire.uid,
                gid: wire.gid,
                xattrs,
            },
            changed_ns: wire.changed_ns,
        },
    ))
}
