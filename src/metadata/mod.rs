//! The metadata store: what the services cannot keep (mtime in nanoseconds,
//! mode, uid, gid, `user.*` extended attributes), kept on this machine and,
//! optionally, shared through one hidden file per remote folder.
//!
//! # Keyed by id, guarded by content
//!
//! A record is keyed by the remote file's (or folder's) id, never by its
//! path: a rename or a move on the service keeps the id, so the metadata
//! follows the file without being told. But an id alone is not enough: on
//! some services another client can replace a file's bytes under the same id
//! (and on all of them a different file can later take the same *name*). So
//! every record also carries a [`ContentGuard`] naming the bytes it was set
//! for: size plus the service's checksum, or size plus the upload date where
//! the service keeps no checksum (file.io). A lookup passes the guard of the
//! content the listing shows now; a different guard finds nothing, and the
//! service's own date and the mount's default mode show instead. A lookup
//! never deletes the stale record: another mount with a fresher listing may
//! just have written it. The next change made through the mount replaces it.
//!
//! # Files not uploaded yet
//!
//! A file written through the mount has no remote id until its upload
//! finishes, yet `touch -d` and `chmod` on it must stick (and survive a
//! crash, exactly like its bytes). Its record is keyed by the write-back
//! journal's entry id ([`RecordKey::Pending`], guard [`ContentGuard::Pending`]).
//! When the upload completes, the write-back layer calls
//! [`MetadataStore::rekey`] with the new file id and the guard of what was
//! uploaded, right after its journal records the upload; from then on the
//! file's listing finds the record. The two are separate databases, so a
//! crash may fall between them: recovery repeats the re-key from the
//! journal's uploaded id (a second call finds nothing left to move and
//! changes nothing). When an upload replaces an existing
//! file, the pending record (which started as a copy of the old file's,
//! with the writer's changes on top) moves to the new id the same way and
//! the old id's record is forgotten with the old file. A pending record
//! whose entry is cancelled is forgotten with it; [`MetadataStore::pending_entries`]
//! lists them all so recovery after a crash can drop those whose entry is gone.
//!
//! # Durability and sharing
//!
//! SQLite in the remote's state directory, WAL mode with
//! `synchronous=FULL` (each change is fsync'd before the call returns, so a
//! `touch -d` that returned survives `kill -9`), and a busy timeout so
//! several mounts of one account on this machine can use it at once. Calls
//! block on disk: callers in async code run them on a blocking thread.
//!
//! # Sharing between machines
//!
//! With `--metadata-sync`, each folder's records also live in one hidden
//! file in that folder on the service, in the format of [`sync`]. Two copies
//! of one record are reconciled by "last writer wins per file": each record
//! carries the time it last changed ([`Record::changed_ns`]) and the later
//! one wins whole (see [`sync::newer`]); [`MetadataStore::merge_synced`]
//! applies that rule to what another machine wrote. Reading and writing the
//! files (when, through which calls, what is skipped) is the mount's side:
//! `fs::metadata_sync`.

pub mod record;
pub mod store;
pub mod sync;

pub use record::{ContentGuard, Metadata, MetadataChange, Record, RecordKey};
pub use store::MetadataStore;

/// What can go wrong with the metadata store. The FUSE layer maps these to
/// errno values (an unsupported namespace is `ENOTSUP`, a too-long name
/// `ERANGE`, a too-large value `E2BIG`, the rest `EIO`).
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata database: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("metadata database schema version {found} is newer than this program understands ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("mode {0:o} has bits beyond the permission bits")]
    InvalidMode(u32),
    #[error("extended attribute {0:?}: only the user.* namespace can be set here")]
    XattrNotSupported(String),
    #[error("extended attribute name of {0} bytes is longer than 255")]
    XattrNameTooLong(usize),
    #[error("extended attribute {name:?}: value of {size} bytes is larger than 65536")]
    XattrTooLarge { name: String, size: usize },
}
