//! What the services cannot keep (mtime, mode, owner, `user.*` extended
//! attributes), laid over what they report: the mount's side of
//! [`crate::metadata`] (its records in memory: `kept_metadata`). Each
//! change is on disk before the caller's call returns. A record
//! shows only while its guard names the content the listing shows now; a
//! file replaced by another client falls back to the service's date and
//! the mount's default mode and owner.

use std::sync::Arc;
use std::time::SystemTime;

use tracing::warn;

use super::attr::Attr;
use super::error::Error;
use super::inode::{Node, NodeKind};
use super::state::FsState;
use crate::metadata::{ContentGuard, MetadataChange, RecordKey};
use crate::remote::FileEntry;
use crate::writeback::EntryId;

/// The record key of a pending write-back entry.
pub(crate) fn pending_key(entry: EntryId) -> RecordKey {
    RecordKey::Pending(entry.0 as u64)
}

/// Where a node's metadata is kept: its key and the guard of its content.
pub(crate) fn key_of(state: &FsState, node: &Node) -> Option<(RecordKey, ContentGuard)> {
    match &node.kind {
        NodeKind::File(entry) => Some((
            RecordKey::File(entry.id.clone()),
            ContentGuard::for_file(entry),
        )),
        NodeKind::Folder { id, .. } => Some((RecordKey::Folder(id.clone()), ContentGuard::Folder)),
        NodeKind::Local(_) => {
            let entry = state.write.entry_of(node.ino)?;
            if state.write.queue.attr(entry).is_none() {
                // A copy dropped unchanged: the node shows the remote file
                // it was copied from until the next listing says so.
                if let Some(base) = state.metadata.copied_from.lock().get(&entry) {
                    return Some((
                        RecordKey::File(base.id.clone()),
                        ContentGuard::for_file(base),
                    ));
                }
            }
            Some((pending_key(entry), ContentGuard::Pending))
        }
    }
}

/// Nanoseconds since the Unix epoch (negative before it), saturating.
fn nanos_of(time: SystemTime) -> i64 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_nanos())
            .map(|n| -n)
            .unwrap_or(i64::MIN),
    }
}

fn time_of(nanos: i64) -> SystemTime {
    let magnitude = std::time::Duration::from_nanos(nanos.unsigned_abs());
    if nanos >= 0 {
        SystemTime::UNIX_EPOCH + magnitude
    } else {
        SystemTime::UNIX_EPOCH - magnitude
    }
}

impl FsState {
    /// Lays the node's kept metadata over the attributes the service gave.
    pub(crate) fn overlay_metadata(&self, node: &Node, attr: &mut Attr) {
        let Some((key, guard)) = key_of(self, node) else {
            return;
        };
        let Some(metadata) = self.metadata.get(&key, &guard) else {
            return;
        };
        // A pending file's mtime lives in the write-back journal, which
        // every write updates: the journal's is the current one.
        if !matches!(node.kind, NodeKind::Local(_)) {
            if let Some(mtime) = metadata.mtime_ns {
                attr.mtime = time_of(mtime);
            }
        }
        if let Some(mode) = metadata.mode {
            attr.perm = (mode & 0o7777) as u16;
        }
        if let Some(uid) = metadata.uid {
            attr.uid = uid;
        }
        if let Some(gid) = metadata.gid {
            attr.gid = gid;
        }
    }

    /// The `user.*` attributes programs set on a node.
    pub(crate) fn kept_xattrs(&self, node: &Node) -> Vec<(String, Vec<u8>)> {
        key_of(self, node)
            .and_then(|(key, guard)| self.metadata.get(&key, &guard))
            .map(|metadata| metadata.xattrs.into_iter().collect())
            .unwrap_or_default()
    }
}

/// What a `setattr` or `setxattr` keeps for a node, durably, before the
/// call returns. A pending file's mtime goes to its write-back entry (which
/// every write also updates); everything else to the metadata store.
pub(crate) async fn keep(
    state: &Arc<FsState>,
    ino: u64,
    change: MetadataChange,
) -> Result<(), Error> {
    if change == MetadataChange::default() {
        return Ok(());
    }
    change.validate().map_err(Error::Metadata)?;
    let state = state.clone();
    tokio::task::spawn_blocking(move || keep_blocking(&state, ino, change)).await?
}

/// The permission bits a new file was created with (`open(O_CREAT)`'s
/// mode, the caller's umask applied), kept when they differ from what the
/// mount shows by default: `tar -x` and `cp -p` create files with their
/// final mode and may not `chmod` them after.
pub(crate) async fn keep_create_mode(
    state: &Arc<FsState>,
    ino: u64,
    mode: u32,
) -> Result<(), Error> {
    let perm = mode & 0o7777;
    if perm == 0o666 & !u32::from(state.config.umask) & 0o7777 {
        return Ok(());
    }
    let change = MetadataChange {
        mode: Some(perm),
        ..MetadataChange::default()
    };
    keep(state, ino, change).await
}

fn keep_blocking(state: &FsState, ino: u64, mut change: MetadataChange) -> Result<(), Error> {
    let mut pending = state.write.entry_of(ino);
    let base = pending.and_then(|entry| clean_copy_base(state, entry));
    if let Some(base) = &base {
        state.metadata.change(
            &RecordKey::File(base.id.clone()),
            &ContentGuard::for_file(base),
            &change,
        )?;
    }
    if let (Some(mtime), Some(entry)) = (change.mtime_ns, pending) {
        match state.write.queue.set_mtime(entry, time_of(mtime)) {
            Ok(()) => change.mtime_ns = None,
            // Uploaded or dropped just now: the node shows a remote file.
            Err(crate::writeback::WriteBackError::UnknownEntry(_)) => pending = None,
            Err(error) => return Err(error.into()),
        }
    }
    if base.is_some() {
        // The remote file the copy started from has a changed record.
        super::metadata_sync::node_changed(state, ino);
    }
    if change == MetadataChange::default() || (pending.is_none() && base.is_some()) {
        return Ok(());
    }
    // A node whose upload finished meanwhile shows the remote file once
    // its pending entry is gone: look again.
    let node = state.inodes.get(ino).ok_or(Error::NotFound)?;
    let (key, guard) = match key_of(state, &node) {
        Some(found) => found,
        None => {
            let node = state.inodes.get(ino).ok_or(Error::NotFound)?;
            key_of(state, &node).ok_or(Error::NotFound)?
        }
    };
    state.metadata.change(&key, &guard, &change)?;
    super::metadata_sync::node_changed(state, ino);
    Ok(())
}

/// The remote file an unchanged copy opened for writing started from
/// (also once it was dropped unchanged; an uploaded copy is forgotten by
/// [`finish_upload`]).
fn clean_copy_base(state: &FsState, entry: EntryId) -> Option<FileEntry> {
    let base = state.metadata.copied_from.lock().get(&entry).cloned()?;
    let queue = &state.write.queue;
    if queue.attr(entry).is_none() || queue.is_clean_copy(entry) {
        return Some(base);
    }
    // Changed: its own record carries the edits from now on.
    state.metadata.copied_from.lock().remove(&entry);
    None
}

/// A remote file opened for writing becomes pending entry `entry`: the
/// pending file starts with the remote file's metadata (mode, owner,
/// extended attributes), so an edit keeps them. Blocks on the disk.
pub(crate) fn carry_to_pending(state: &FsState, file: &FileEntry, entry: EntryId) {
    state
        .metadata
        .copied_from
        .lock()
        .insert(entry, file.clone());
    let key = RecordKey::File(file.id.clone());
    let Some(metadata) = state.metadata.get(&key, &ContentGuard::for_file(file)) else {
        return;
    };
    let change = MetadataChange {
        mtime_ns: None,
        ..MetadataChange::from(&metadata)
    };
    if let Err(error) = state
        .metadata
        .change(&pending_key(entry), &ContentGuard::Pending, &change)
    {
        warn!(%error, "metadata of {} not carried to its new version", file.name);
    }
}

/// An upload finished (called before the write-back journal forgets the
/// entry, so a crash in between repeats this): the pending record moves to
/// the uploaded file's id, which also keeps the mtime the writer set.
/// Blocks on the disk.
pub(crate) fn finish_upload(state: &FsState, entry: EntryId, file: &FileEntry, mtime: SystemTime) {
    state.metadata.copied_from.lock().remove(&entry);
    let key = RecordKey::File(file.id.clone());
    let guard = ContentGuard::for_file(file);
    let kept = state
        .metadata
        .rekey(&pending_key(entry), &key, &guard)
        .and_then(|()| {
            let change = MetadataChange {
                mtime_ns: Some(nanos_of(mtime)),
                ..MetadataChange::default()
            };
            state.metadata.change(&key, &guard, &change)
        });
    if let Err(error) = kept {
        warn!(%error, "metadata of {} not kept after its upload", file.name);
    }
}

/// Recovery: drops the records of pending entries the journal no longer
/// has (cancelled, or lost with their staging file).
pub(crate) fn drop_orphans(state: &FsState) {
    let live: std::collections::HashSet<u64> = state
        .write
        .queue
        .pending()
        .iter()
        .map(|pending| pending.id.0 as u64)
        .collect();
    for entry in state.metadata.pending_entries() {
        if !live.contains(&entry) {
            state.metadata.forget(&RecordKey::Pending(entry));
        }
    }
}

/// `setxattr(2)`: programs may set `user.*` attributes, except ours
/// (`user.filehostfs.*`, read-only facts about the file).
pub(crate) async fn set_xattr(
    state: Arc<FsState>,
    ino: u64,
    name: String,
    value: Vec<u8>,
    flags: i32,
) -> Result<(), Error> {
    refuse_ours(&name)?;
    let node = state.inodes.get(ino).ok_or(Error::NotFound)?;
    let exists = state.kept_xattrs(&node).iter().any(|(n, _)| *n == name);
    if flags & libc::XATTR_CREATE != 0 && exists {
        return Err(Error::AlreadyExists);
    }
    if flags & libc::XATTR_REPLACE != 0 && !exists {
        return Err(Error::NoAttribute);
    }
    let change = MetadataChange {
        set_xattrs: vec![(name, value)],
        ..MetadataChange::default()
    };
    keep(&state, ino, change).await
}

/// `removexattr(2)` of an attribute a program set.
pub(crate) async fn remove_xattr(state: Arc<FsState>, ino: u64, name: String) -> Result<(), Error> {
    refuse_ours(&name)?;
    let node = state.inodes.get(ino).ok_or(Error::NotFound)?;
    if !state.kept_xattrs(&node).iter().any(|(n, _)| *n == name) {
        return Err(Error::NoAttribute);
    }
    let change = MetadataChange {
        remove_xattrs: vec![name],
        ..MetadataChange::default()
    };
    keep(&state, ino, change).await
}

fn refuse_ours(name: &str) -> Result<(), Error> {
    if name.starts_with(super::xattr::XATTR_PREFIX) {
        return Err(Error::Unsupported(super::error::Unsupported::SetXattr));
    }
    Ok(())
}

/// The metadata part of a `setattr` (`caller_uid`: who asks, `None` for
/// a trusted caller), checked at once: a change of owner by anyone but
/// root is refused as POSIX `chown` does (`EPERM`); giving a file the
/// owner it already has is allowed (what `cp -p` does).
pub(crate) fn attr_change(
    state: &FsState,
    node: &Node,
    wanted: MetadataTimeAndOwner,
) -> Result<MetadataChange, Error> {
    let current = state.attr(node);
    let not_root = wanted.caller_uid.is_some_and(|uid| uid != 0);
    if not_root && wanted.uid.is_some_and(|uid| uid != current.uid) {
        return Err(Error::NotPermitted);
    }
    Ok(MetadataChange {
        mtime_ns: wanted.mtime.map(nanos_of),
        mode: wanted.mode.map(|mode| mode & 0o7777),
        uid: wanted.uid,
        gid: wanted.gid,
        ..MetadataChange::default()
    })
}

/// What a `setattr` asks of the metadata.
pub(crate) struct MetadataTimeAndOwner {
    pub mtime: Option<SystemTime>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub caller_uid: Option<u32>,
}
