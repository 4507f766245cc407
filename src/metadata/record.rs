//! What one metadata record is: its key, the guard naming the content it
//! belongs to, the attributes it keeps, and the changes that edit them.

use std::collections::BTreeMap;
use std::fmt;

use crate::remote::{FileEntry, FileId, FolderId};

use super::MetadataError;

/// Longest extended attribute name Linux accepts (`XATTR_NAME_MAX`).
pub const MAX_XATTR_NAME: usize = 255;
/// Largest extended attribute value Linux accepts (`XATTR_SIZE_MAX`).
pub const MAX_XATTR_VALUE: usize = 65_536;
/// The only extended attribute namespace programs may set through the mount.
pub const XATTR_NAMESPACE: &str = "user.";

/// What a record is attached to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKey {
    File(FileId),
    Folder(FolderId),
    /// A file written through the mount and not uploaded yet: keyed by its
    /// write-back journal entry id until the upload gives it a remote id.
    Pending(u64),
}

impl RecordKey {
    /// (kind, key) as the store's columns spell them.
    pub(crate) fn columns(&self) -> (&'static str, String) {
        match self {
            RecordKey::File(id) => ("file", id.0.clone()),
            RecordKey::Folder(id) => ("folder", id.0.clone()),
            RecordKey::Pending(entry) => ("pending", entry.to_string()),
        }
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordKey::File(id) => write!(f, "file {id}"),
            RecordKey::Folder(id) => write!(f, "folder {id}"),
            RecordKey::Pending(entry) => write!(f, "pending entry {entry}"),
        }
    }
}

/// Names the content a record describes. A lookup made with another guard
/// finds nothing: the id now holds other bytes (or the service reused it),
/// and the service's own date and mode must show instead.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContentGuard {
    /// The service reports a checksum (1fichier, fii.one): size + checksum.
    Checksum { size: u64, checksum: String },
    /// No checksum (file.io): size + the upload date the service reports,
    /// in nanoseconds since the Unix epoch.
    Uploaded { size: u64, uploaded_ns: i64 },
    /// A folder: its id is never given to other content, and its listing
    /// carries nothing that changes with what it holds.
    Folder,
    /// A pending file: its write-back entry owns the bytes until upload.
    Pending,
}

impl ContentGuard {
    pub fn for_file(entry: &FileEntry) -> ContentGuard {
        match &entry.checksum {
            Some(checksum) if !checksum.is_empty() => ContentGuard::Checksum {
                size: entry.size,
                checksum: checksum.to_ascii_lowercase(),
            },
            _ => ContentGuard::Uploaded {
                size: entry.size,
                uploaded_ns: nanos_of(&entry.modified),
            },
        }
    }

    /// One line of text, as the store keeps it.
    pub(crate) fn encode(&self) -> String {
        match self {
            ContentGuard::Checksum { size, checksum } => format!("checksum:{size}:{checksum}"),
            ContentGuard::Uploaded { size, uploaded_ns } => {
                format!("uploaded:{size}:{uploaded_ns}")
            }
            ContentGuard::Folder => "folder".to_string(),
            ContentGuard::Pending => "pending".to_string(),
        }
    }

    pub(crate) fn decode(text: &str) -> Option<ContentGuard> {
        match text {
            "folder" => return Some(ContentGuard::Folder),
            "pending" => return Some(ContentGuard::Pending),
            _ => {}
        }
        let (kind, rest) = text.split_once(':')?;
        let (size, value) = rest.split_once(':')?;
        let size = size.parse().ok()?;
        match kind {
            "checksum" if !value.is_empty() => Some(ContentGuard::Checksum {
                size,
                checksum: value.to_string(),
            }),
            "uploaded" => Some(ContentGuard::Uploaded {
                size,
                uploaded_ns: value.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// Nanoseconds since the Unix epoch, saturating outside ±292 years.
fn nanos_of(date: &chrono::DateTime<chrono::Utc>) -> i64 {
    date.timestamp_nanos_opt()
        .unwrap_or(if date.timestamp() < 0 {
            i64::MIN
        } else {
            i64::MAX
        })
}

/// The attributes the services cannot keep. `None` = never set here: show
/// the service's value (its date, the mount's default mode and owner).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Metadata {
    /// Modification time, nanoseconds since the Unix epoch (may be negative).
    pub mtime_ns: Option<i64>,
    /// Permission bits (`0o7777` at most).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// `user.*` extended attributes set by programs.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Metadata {
    pub fn apply(&mut self, change: &MetadataChange) {
        if let Some(mtime) = change.mtime_ns {
            self.mtime_ns = Some(mtime);
        }
        if let Some(mode) = change.mode {
            self.mode = Some(mode);
        }
        if let Some(uid) = change.uid {
            self.uid = Some(uid);
        }
        if let Some(gid) = change.gid {
            self.gid = Some(gid);
        }
        for name in &change.remove_xattrs {
            self.xattrs.remove(name);
        }
        for (name, value) in &change.set_xattrs {
            self.xattrs.insert(name.clone(), value.clone());
        }
    }
}

/// One record: a key's attributes for the content its guard names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Record {
    pub guard: ContentGuard,
    pub metadata: Metadata,
    /// When the record last changed, nanoseconds since the Unix epoch:
    /// decides which of two copies wins when mounts share records
    /// (last writer wins, see `sync`).
    pub changed_ns: i64,
}

/// An edit: each `Some` field replaces the kept value; xattrs are removed,
/// then set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataChange {
    pub mtime_ns: Option<i64>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub set_xattrs: Vec<(String, Vec<u8>)>,
    pub remove_xattrs: Vec<String>,
}

impl MetadataChange {
    /// Refuses what no kernel call could have asked for, before anything is
    /// written.
    pub fn validate(&self) -> Result<(), MetadataError> {
        if let Some(mode) = self.mode {
            if mode & !0o7777 != 0 {
                return Err(MetadataError::InvalidMode(mode));
            }
        }
        for name in self
            .remove_xattrs
            .iter()
            .chain(self.set_xattrs.iter().map(|(name, _)| name))
        {
            check_xattr_name(name)?;
        }
        for (name, value) in &self.set_xattrs {
            if value.len() > MAX_XATTR_VALUE {
                return Err(MetadataError::XattrTooLarge {
                    name: name.clone(),
                    size: value.len(),
                });
            }
        }
        Ok(())
    }
}

/// Sets everything `metadata` holds: starts a pending file's record as a
/// copy of the record of the file it replaces.
impl From<&Metadata> for MetadataChange {
    fn from(metadata: &Metadata) -> MetadataChange {
        MetadataChange {
            mtime_ns: metadata.mtime_ns,
            mode: metadata.mode,
            uid: metadata.uid,
            gid: metadata.gid,
            set_xattrs: metadata
                .xattrs
                .iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
            remove_xattrs: Vec::new(),
        }
    }
}

pub(crate) fn check_xattr_name(name: &str) -> Result<(), MetadataError> {
    if name.len() > MAX_XATTR_NAME {
        return Err(MetadataError::XattrNameTooLong(name.len()));
    }
    if !name.starts_with(XATTR_NAMESPACE)
        || name.len() == XATTR_NAMESPACE.len()
        || name.contains('\0')
    {
        return Err(MetadataError::XattrNotSupported(name.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn entry(size: u64, checksum: Option<&str>, secs: i64) -> FileEntry {
        FileEntry {
            id: FileId("f".into()),
            name: "n".into(),
            size,
            modified: chrono::Utc.timestamp_opt(secs, 5).unwrap(),
            checksum: checksum.map(str::to_string),
            mime: None,
            share_link: None,
            expires: None,
        }
    }

    #[test]
    fn guard_uses_the_checksum_when_there_is_one() {
        let a = ContentGuard::for_file(&entry(3, Some("AB"), 10));
        assert_eq!(
            a,
            ContentGuard::Checksum {
                size: 3,
                checksum: "ab".into()
            }
        );
        // The date does not matter when a checksum names the content.
        assert_eq!(a, ContentGuard::for_file(&entry(3, Some("ab"), 99)));
        assert_ne!(a, ContentGuard::for_file(&entry(4, Some("ab"), 10)));
        assert_ne!(a, ContentGuard::for_file(&entry(3, Some("ac"), 10)));
    }

    #[test]
    fn guard_falls_back_to_the_upload_date() {
        let a = ContentGuard::for_file(&entry(3, None, 10));
        assert_eq!(
            a,
            ContentGuard::Uploaded {
                size: 3,
                uploaded_ns: 10_000_000_005
            }
        );
        assert_ne!(a, ContentGuard::for_file(&entry(3, None, 11)));
        assert_eq!(a, ContentGuard::for_file(&entry(3, Some(""), 10)));
    }

    #[test]
    fn guard_text_round_trips_and_rejects_garbage() {
        for guard in [
            ContentGuard::Checksum {
                size: 0,
                checksum: "00ff".into(),
            },
            ContentGuard::Uploaded {
                size: u64::MAX,
                uploaded_ns: i64::MIN,
            },
            ContentGuard::Folder,
            ContentGuard::Pending,
        ] {
            assert_eq!(ContentGuard::decode(&guard.encode()), Some(guard));
        }
        for bad in [
            "",
            "checksum:1:",
            "uploaded:x:1",
            "other:1:2",
            "checksum",
            "uploaded:1:z",
        ] {
            assert_eq!(ContentGuard::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn changes_are_validated() {
        let ok = MetadataChange {
            mode: Some(0o4755),
            set_xattrs: vec![("user.a".into(), vec![0; MAX_XATTR_VALUE])],
            remove_xattrs: vec!["user.b".into()],
            ..Default::default()
        };
        ok.validate().unwrap();
        let bad_mode = MetadataChange {
            mode: Some(0o10644),
            ..Default::default()
        };
        assert!(matches!(
            bad_mode.validate(),
            Err(MetadataError::InvalidMode(_))
        ));
        for name in [
            "security.selinux",
            "user.",
            "trusted.x",
            "system.posix_acl_access",
        ] {
            let change = MetadataChange {
                remove_xattrs: vec![name.into()],
                ..Default::default()
            };
            assert!(
                matches!(change.validate(), Err(MetadataError::XattrNotSupported(_))),
                "{name}"
            );
        }
        let long = MetadataChange {
            set_xattrs: vec![(format!("user.{}", "x".repeat(251)), vec![])],
            ..Default::default()
        };
        assert!(matches!(
            long.validate(),
            Err(MetadataError::XattrNameTooLong(256))
        ));
        let big = MetadataChange {
            set_xattrs: vec![("user.a".into(), vec![0; MAX_XATTR_VALUE + 1])],
            ..Default::default()
        };
        assert!(matches!(
            big.validate(),
            Err(MetadataError::XattrTooLarge { .. })
        ));
    }

    #[test]
    fn apply_removes_then_sets() {
        let mut metadata = Metadata::default();
        metadata.xattrs.insert("user.old".into(), b"1".to_vec());
        metadata.apply(&MetadataChange {
            mtime_ns: Some(-5),
            uid: Some(7),
            set_xattrs: vec![("user.new".into(), b"2".to_vec())],
            remove_xattrs: vec!["user.old".into(), "user.new".into()],
            ..Default::default()
        });
        assert_eq!(metadata.mtime_ns, Some(-5));
        assert_eq!(metadata.uid, Some(7));
        assert_eq!(metadata.mode, None);
        assert_eq!(
            metadata.xattrs.into_iter().collect::<Vec<_>>(),
            vec![("user.new".to_string(), b"2".to_vec())]
        );
    }
}
