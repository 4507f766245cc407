//! The inode table: one stable inode number per remote entry for the whole
//! life of the mount, parent links for `..`, the kernel's lookup counts, and
//! the local names shown for each folder's entries.
//!
//! Remote folders may hold several files of one name (1fichier allows it);
//! each of them is then shown as `stem (id).ext`, where `id` comes from the
//! file's remote identifier, so the names stay the same from one listing to
//! the next whatever order the service lists them in.
//!
//! Entries that exist only locally (a file being written, waiting for its
//! upload) live here too, as [`NodeKind::Local`]; a refreshed listing keeps
//! them in place until the write path replaces them with the remote entry.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use crate::cache::meta::FetchedListing;
use crate::remote::{FileEntry, FileId, FolderId, Listing};

/// The inode number the kernel gives a mount's root (FUSE_ROOT_ID).
pub const ROOT_INO: u64 = 1;

/// A file that so far exists only on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalFile {
    pub size: u64,
    pub modified: SystemTime,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Folder {
        id: FolderId,
        created: Option<DateTime<Utc>>,
    },
    File(FileEntry),
    Local(LocalFile),
}

/// What the table knows about one inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub ino: u64,
    /// The folder whose listing last showed this entry (`ROOT_INO` for the root).
    pub parent: u64,
    /// The name shown locally (decoded, disambiguated).
    pub name: String,
    pub kind: NodeKind,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Folder { .. })
    }

    pub fn folder_id(&self) -> Option<&FolderId> {
        match &self.kind {
            NodeKind::Folder { id, .. } => Some(id),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InodeError {
    #[error("no such inode {0}")]
    NoSuchInode(u64),
    #[error("inode {0} is not a folder")]
    NotAFolder(u64),
    #[error("{0} already exists")]
    Exists(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum RemoteKey {
    File(FileId),
    Folder(FolderId),
}

struct Slot {
    node: Node,
    /// Outstanding kernel references (lookup replies minus forgets).
    lookups: u64,
    /// Whether the entry is shown in its parent's current listing; an entry
    /// neither listed nor referenced by the kernel is dropped.
    listed: bool,
    /// Folders only: the current local names of the entries inside.
    children: Option<Children>,
}

#[derive(Default)]
struct Children {
    by_name: BTreeMap<String, u64>,
    /// Serial of the listing these children were built from (0: none yet).
    applied_serial: u64,
    /// The listing clock when the mount last changed these children itself
    /// (an upload finished, a rename, a removal, a new entry): a listing
    /// requested before that describes the folder as it was, and applying it
    /// would undo the change (a just-uploaded file vanishing, a renamed one
    /// going back to its old name).
    changed_at: u64,
}

pub struct InodeTable {
    tables: Mutex<Tables>,
    /// The listing cache's fetch clock ([`crate::cache::meta::MetaCache::serial_clock`]);
    /// without one, every listing is applied.
    listing_clock: Option<Box<dyn Fn() -> u64 + Send + Sync>>,
}

struct Tables {
    slots: HashMap<u64, Slot>,
    by_remote: HashMap<RemoteKey, u64>,
    /// Inode numbers are never reused, so a stale number from the kernel can
    /// never reach another file.
    next_ino: u64,
}

impl InodeTable {
    pub fn new(root: FolderId) -> Self {
        let mut slots = HashMap::new();
        slots.insert(
            ROOT_INO,
            Slot {
                node: Node {
                    ino: ROOT_INO,
                    parent: ROOT_INO,
                    name: String::new(),
                    kind: NodeKind::Folder {
                        id: root.clone(),
                        created: None,
                    },
                },
                lookups: 0,
                listed: true,
                children: Some(Children::default()),
            },
        );
        let mut by_remote = HashMap::new();
        by_remote.insert(RemoteKey::Folder(root), ROOT_INO);
        InodeTable {
            tables: Mutex::new(Tables {
                slots,
                by_remote,
                next_ino: ROOT_INO + 1,
            }),
            listing_clock: None,
        }
    }

    /// Lets the table tell listings requested before its own changes (see
    /// [`Children::changed_at`]) by the listing cache's `clock`.
    pub fn with_listing_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.listing_clock = Some(Box::new(clock));
        self
    }

    /// The listing clock at the mount's last change of folder `dir` (0:
    /// none); it moves whenever the mount changes the folder.
    pub fn changed_at(&self, dir: u64) -> u64 {
        let tables = self.tables.lock();
        tables
            .slots
            .get(&dir)
            .and_then(|s| s.children.as_ref())
            .map_or(0, |c| c.changed_at)
    }

    /// Notes that the mount changed folder `dir` by other means than this
    /// table (an upload finished there, maybe of a file not looked up yet).
    pub fn note_changed(&self, dir: u64) {
        let mut tables = self.tables.lock();
        self.changed(&mut tables, &[dir]);
    }

    /// Notes that the mount itself changed the children of `dirs`.
    fn changed(&self, tables: &mut Tables, dirs: &[u64]) {
        let Some(clock) = &self.listing_clock else {
            return;
        };
        let now = clock();
        for dir in dirs {
            if let Some(children) = tables.slots.get_mut(dir).and_then(|s| s.children.as_mut()) {
                children.changed_at = children.changed_at.max(now);
            }
        }
    }

    pub fn get(&self, ino: u64) -> Option<Node> {
        self.tables.lock().slots.get(&ino).map(|s| s.node.clone())
    }

    /// The inode of a folder the table knows, by its remote id.
    pub fn folder_ino(&self, id: &FolderId) -> Option<u64> {
        let key = RemoteKey::Folder(id.clone());
        self.tables.lock().by_remote.get(&key).copied()
    }

    /// Serial of the listing last applied to a folder (0 if none).
    pub fn applied_serial(&self, dir: u64) -> Option<u64> {
        let tables = self.tables.lock();
        tables
            .slots
            .get(&dir)?
            .children
            .as_ref()
            .map(|c| c.applied_serial)
    }

    /// The entry shown as `name` in folder `dir`.
    pub fn child(&self, dir: u64, name: &str) -> Option<Node> {
        let tables = self.tables.lock();
        let ino = *tables
            .slots
            .get(&dir)?
            .children
            .as_ref()?
            .by_name
            .get(name)?;
        tables.slots.get(&ino).map(|s| s.node.clone())
    }

    /// The entries of folder `dir`, in name order.
    pub fn children(&self, dir: u64) -> Result<Vec<Node>, InodeError> {
        let tables = self.tables.lock();
        let slot = tables.slots.get(&dir).ok_or(InodeError::NoSuchInode(dir))?;
        let children = slot.children.as_ref().ok_or(InodeError::NotAFolder(dir))?;
        Ok(children
            .by_name
            .values()
            .filter_map(|ino| tables.slots.get(ino).map(|s| s.node.clone()))
            .collect())
    }

    /// Counts one more kernel reference (a lookup, create or readdirplus entry).
    pub fn remember_lookup(&self, ino: u64) {
        if let Some(slot) = self.tables.lock().slots.get_mut(&ino) {
            slot.lookups += 1;
        }
    }

    /// The kernel dropped `count` references.
    pub fn forget(&self, ino: u64, count: u64) {
        let mut tables = self.tables.lock();
        let Some(slot) = tables.slots.get_mut(&ino) else {
            return;
        };
        slot.lookups = slot.lookups.saturating_sub(count);
        if slot.lookups == 0 && !slot.listed && ino != ROOT_INO {
            tables.drop_slot(ino);
        }
    }

    /// Number of inodes held (root included).
    pub fn len(&self) -> usize {
        self.tables.lock().slots.len()
    }

    /// Never: the root always has its inode.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Makes folder `dir` show `fetched`: stable inodes for entries seen
    /// before, new ones for new entries, and entries that left dropped once
    /// the kernel no longer references them. Applying the same listing twice
    /// does nothing.
    pub fn apply_listing(&self, dir: u64, fetched: &FetchedListing) -> Result<(), InodeError> {
        let mut tables = self.tables.lock();
        let slot = tables.slots.get(&dir).ok_or(InodeError::NoSuchInode(dir))?;
        let children = slot.children.as_ref().ok_or(InodeError::NotAFolder(dir))?;
        if children.applied_serial == fetched.serial {
            return Ok(());
        }
        if children.applied_serial != 0 && fetched.serial < children.changed_at {
            // Requested before this mount's last change here: the table is
            // newer. The next listing requested after it is applied.
            return Ok(());
        }
        let old: Vec<(String, u64)> = children
            .by_name
            .iter()
            .map(|(name, ino)| (name.clone(), *ino))
            .collect();

        let mut by_name = BTreeMap::new();
        for (key, name, kind) in local_names(&fetched.listing) {
            let ino = tables.ino_for(key);
            let slot = tables
                .slots
                .get_mut(&ino)
                .expect("ino_for creates the slot");
            let (old_parent, old_name, was_listed) =
                (slot.node.parent, slot.node.name.clone(), slot.listed);
            slot.node.parent = dir;
            slot.node.name = name.clone();
            slot.node.kind = kind;
            slot.listed = true;
            if was_listed && old_parent != dir {
                // Moved here from another folder whose listing is older.
                tables.unlink_child(old_parent, &old_name, ino);
            }
            by_name.insert(name, ino);
        }
        let listed_now: HashSet<u64> = by_name.values().copied().collect();
        let mut gone = Vec::new();
        for (name, ino) in old {
            if listed_now.contains(&ino) {
                continue;
            }
            let Some(slot) = tables.slots.get(&ino) else {
                continue;
            };
            if slot.node.parent != dir {
                continue;
            }
            if matches!(slot.node.kind, NodeKind::Local(_)) && !by_name.contains_key(&name) {
                by_name.insert(name, ino);
            } else {
                gone.push(ino);
            }
        }
        let slot = tables.slots.get_mut(&dir).expect("checked above");
        let children = slot.children.as_mut().expect("checked above");
        children.by_name = by_name;
        children.applied_serial = fetched.serial;
        for ino in gone {
            tables.unlist(ino);
        }
        Ok(())
    }

    /// Adds a local-only file `name` to folder `dir` (write path).
    pub fn insert_local(&self, dir: u64, name: &str, file: LocalFile) -> Result<Node, InodeError> {
        self.add_local(dir, name, file, true)
    }

    /// Shows a pending file the write-back queue already had in folder
    /// `dir` (laid over a listing: not a change of the folder).
    pub fn show_local(&self, dir: u64, name: &str, file: LocalFile) -> Result<Node, InodeError> {
        self.add_local(dir, name, file, false)
    }

    fn add_local(
        &self,
        dir: u64,
        name: &str,
        file: LocalFile,
        is_change: bool,
    ) -> Result<Node, InodeError> {
        let mut tables = self.tables.lock();
        let slot = tables.slots.get(&dir).ok_or(InodeError::NoSuchInode(dir))?;
        let children = slot.children.as_ref().ok_or(InodeError::NotAFolder(dir))?;
        if children.by_name.contains_key(name) {
            return Err(InodeError::Exists(name.to_string()));
        }
        let ino = tables.next_ino;
        tables.next_ino += 1;
        let node = Node {
            ino,
            parent: dir,
            name: name.to_string(),
            kind: NodeKind::Local(file),
        };
        tables.slots.insert(
            ino,
            Slot {
                node: node.clone(),
                lookups: 0,
                listed: true,
                children: None,
            },
        );
        let children = tables
            .slots
            .get_mut(&dir)
            .and_then(|s| s.children.as_mut())
            .expect("checked above");
        children.by_name.insert(name.to_string(), ino);
        if is_change {
            self.changed(&mut tables, &[dir]);
        }
        Ok(node)
    }

    /// Replaces what an inode stands for, keeping its number (write path:
    /// a local file whose upload finished becomes the remote file).
    pub fn set_kind(&self, ino: u64, kind: NodeKind) -> Result<(), InodeError> {
        let mut tables = self.tables.lock();
        let slot = tables
            .slots
            .get_mut(&ino)
            .ok_or(InodeError::NoSuchInode(ino))?;
        let old_key = remote_key(&slot.node.kind);
        slot.node.kind = kind;
        let new_key = remote_key(&slot.node.kind);
        let parent = slot.node.parent;
        if old_key != new_key {
            self.changed(&mut tables, &[parent]);
        }
        if old_key != new_key {
            if let Some(old_key) = old_key {
                if tables.by_remote.get(&old_key) == Some(&ino) {
                    tables.by_remote.remove(&old_key);
                }
            }
            if let Some(new_key) = new_key {
                tables.by_remote.insert(new_key, ino);
            }
        }
        Ok(())
    }

    /// Adds a folder just created through the mount to folder `dir`,
    /// without waiting for the next listing (write path: mkdir).
    pub fn insert_folder(
        &self,
        dir: u64,
        name: &str,
        folder: &crate::remote::FolderEntry,
    ) -> Result<Node, InodeError> {
        let mut tables = self.tables.lock();
        let slot = tables.slots.get(&dir).ok_or(InodeError::NoSuchInode(dir))?;
        let children = slot.children.as_ref().ok_or(InodeError::NotAFolder(dir))?;
        if children.by_name.contains_key(name) {
            return Err(InodeError::Exists(name.to_string()));
        }
        let ino = tables.ino_for(RemoteKey::Folder(folder.id.clone()));
        let slot = tables
            .slots
            .get_mut(&ino)
            .expect("ino_for creates the slot");
        slot.node.parent = dir;
        slot.node.name = name.to_string();
        slot.node.kind = NodeKind::Folder {
            id: folder.id.clone(),
            created: folder.created,
        };
        slot.listed = true;
        let node = slot.node.clone();
        tables
            .slots
            .get_mut(&dir)
            .and_then(|s| s.children.as_mut())
            .expect("checked above")
            .by_name
            .insert(name.to_string(), ino);
        self.changed(&mut tables, &[dir]);
        Ok(node)
    }

    /// Moves entry `name` of folder `dir` to folder `new_dir` as `new_name`,
    /// keeping its inode (write path: rename). Whatever was shown as
    /// `new_name` there is unlisted. Returns the moved inode.
    pub fn rename_child(
        &self,
        dir: u64,
        name: &str,
        new_dir: u64,
        new_name: &str,
    ) -> Result<u64, InodeError> {
        let mut tables = self.tables.lock();
        let target_ok = tables
            .slots
            .get(&new_dir)
            .ok_or(InodeError::NoSuchInode(new_dir))?
            .children
            .is_some();
        if !target_ok {
            return Err(InodeError::NotAFolder(new_dir));
        }
        let ino = tables
            .slots
            .get_mut(&dir)
            .ok_or(InodeError::NoSuchInode(dir))?
            .children
            .as_mut()
            .ok_or(InodeError::NotAFolder(dir))?
            .by_name
            .remove(name)
            // ENOENT, like a rename of a name that is not there.
            .ok_or(InodeError::NoSuchInode(dir))?;
        let replaced = tables
            .slots
            .get_mut(&new_dir)
            .and_then(|s| s.children.as_mut())
            .expect("checked above")
            .by_name
            .insert(new_name.to_string(), ino);
        if let Some(slot) = tables.slots.get_mut(&ino) {
            slot.node.parent = new_dir;
            slot.node.name = new_name.to_string();
            slot.listed = true;
        }
        if let Some(old) = replaced.filter(|old| *old != ino) {
            tables.unlist(old);
        }
        self.changed(&mut tables, &[dir, new_dir]);
        Ok(ino)
    }

    /// Removes `name` from folder `dir` at once (write path: unlink, rmdir,
    /// rename away), without waiting for the next listing.
    pub fn remove_child(&self, dir: u64, name: &str) -> Option<u64> {
        self.drop_child(dir, name, true)
    }

    /// Hides `name` of folder `dir` behind a pending file of that name
    /// (laid over a listing: not a change of the folder).
    pub fn hide_child(&self, dir: u64, name: &str) -> Option<u64> {
        self.drop_child(dir, name, false)
    }

    fn drop_child(&self, dir: u64, name: &str, is_change: bool) -> Option<u64> {
        let mut tables = self.tables.lock();
        let ino = tables
            .slots
            .get_mut(&dir)?
            .children
            .as_mut()?
            .by_name
            .remove(name)?;
        tables.unlist(ino);
        if is_change {
            self.changed(&mut tables, &[dir]);
        }
        Some(ino)
    }
}

impl Tables {
    /// The inode of a remote entry, created on first sight.
    fn ino_for(&mut self, key: RemoteKey) -> u64 {
        if let Some(&ino) = self.by_remote.get(&key) {
            if self.slots.contains_key(&ino) {
                return ino;
            }
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let children = matches!(key, RemoteKey::Folder(_)).then(Children::default);
        self.slots.insert(
            ino,
            Slot {
                node: Node {
                    ino,
                    parent: ROOT_INO,
                    name: String::new(),
                    kind: NodeKind::Local(LocalFile {
                        size: 0,
                        modified: SystemTime::UNIX_EPOCH,
                    }),
                },
                lookups: 0,
                listed: false,
                children,
            },
        );
        self.by_remote.insert(key, ino);
        ino
    }

    fn unlink_child(&mut self, dir: u64, name: &str, ino: u64) {
        if let Some(children) = self.slots.get_mut(&dir).and_then(|s| s.children.as_mut()) {
            if children.by_name.get(name) == Some(&ino) {
                children.by_name.remove(name);
            }
        }
    }

    /// The entry left its folder: drop it now unless the kernel still holds it.
    fn unlist(&mut self, ino: u64) {
        if ino == ROOT_INO {
            return;
        }
        if let Some(slot) = self.slots.get_mut(&ino) {
            slot.listed = false;
            if slot.lookups == 0 {
                self.drop_slot(ino);
            }
        }
    }

    /// Removes an inode; the entries of a removed folder become unreachable
    /// and are dropped the same way.
    fn drop_slot(&mut self, ino: u64) {
        let mut pending = vec![ino];
        let mut seen = HashSet::new();
        while let Some(ino) = pending.pop() {
            if !seen.insert(ino) {
                continue;
            }
            let Some(slot) = self.slots.remove(&ino) else {
                continue;
            };
            if let Some(key) = remote_key(&slot.node.kind) {
                if self.by_remote.get(&key) == Some(&ino) {
                    self.by_remote.remove(&key);
                }
            }
            if let Some(children) = slot.children {
                for child in children.by_name.into_values() {
                    if let Some(child_slot) = self.slots.get_mut(&child) {
                        if child_slot.node.parent != ino {
                            continue;
                        }
                        child_slot.listed = false;
                        if child_slot.lookups == 0 {
                            pending.push(child);
                        }
                    }
                }
            }
        }
    }
}

fn remote_key(kind: &NodeKind) -> Option<RemoteKey> {
    match kind {
        NodeKind::Folder { id, .. } => Some(RemoteKey::Folder(id.clone())),
        NodeKind::File(entry) => Some(RemoteKey::File(entry.id.clone())),
        NodeKind::Local(_) => None,
    }
}

/// The local name of every entry of a listing: decoded names made safe for
/// a Unix file name, duplicates told apart by a suffix from their remote id.
fn local_names(listing: &Listing) -> Vec<(RemoteKey, String, NodeKind)> {
    struct Candidate {
        key: RemoteKey,
        kind: NodeKind,
        base: String,
        suffix: String,
        is_folder: bool,
    }
    let mut candidates: Vec<Candidate> = Vec::new();
    for folder in &listing.folders {
        candidates.push(Candidate {
            key: RemoteKey::Folder(folder.id.clone()),
            kind: NodeKind::Folder {
                id: folder.id.clone(),
                created: folder.created,
            },
            base: safe_name(&folder.name),
            suffix: id_suffix(&folder.id.0),
            is_folder: true,
        });
    }
    for file in &listing.files {
        candidates.push(Candidate {
            key: RemoteKey::File(file.id.clone()),
            kind: NodeKind::File(file.clone()),
            base: safe_name(&file.name),
            suffix: id_suffix(&file.id.0),
            is_folder: false,
        });
    }
    // Deterministic whatever order the service listed things in.
    candidates.sort_by(|a, b| (&a.base, &a.suffix).cmp(&(&b.base, &b.suffix)));

    let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, c) in candidates.iter().enumerate() {
        groups.entry(c.base.as_str()).or_default().push(i);
    }
    let mut plain = vec![false; candidates.len()];
    for (base, members) in &groups {
        if !is_usable_name(base) {
            continue;
        }
        if members.len() == 1 {
            plain[members[0]] = true;
        } else {
            // A single folder keeps the name; the files beside it give way.
            let folders: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&i| candidates[i].is_folder)
                .collect();
            if folders.len() == 1 {
                plain[folders[0]] = true;
            }
        }
    }
    let mut used: HashSet<String> = candidates
        .iter()
        .zip(&plain)
        .filter(|(_, &p)| p)
        .map(|(c, _)| c.base.clone())
        .collect();
    let mut named = Vec::with_capacity(candidates.len());
    for (c, is_plain) in candidates.into_iter().zip(plain) {
        let name = if is_plain {
            c.base
        } else {
            let wanted = with_suffix(&c.base, &c.suffix, c.is_folder);
            let mut name = wanted.clone();
            let mut n = 2;
            while !used.insert(name.clone()) {
                name = format!("{wanted} ~{n}");
                n += 1;
            }
            name
        };
        named.push((c.key, name, c.kind));
    }
    named
}

fn is_usable_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".."
}

/// Replaces the two bytes a Unix file name cannot hold with look-alikes.
fn safe_name(name: &str) -> String {
    name.replace('/', "\u{2215}").replace('\0', "\u{2400}")
}

/// A short, file-name-safe token identifying a remote entry: the part of
/// its id after the last `?`, `/` or `=` (1fichier: the `?xxxx` of the URL).
fn id_suffix(id: &str) -> String {
    let tail = id
        .rsplit(['?', '/', '='])
        .find(|part| !part.is_empty())
        .unwrap_or(id);
    let cleaned: String = tail
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let cleaned = if cleaned.is_empty() {
        hex::encode(
            &sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(id))[..6],
        )
    } else {
        cleaned
    };
    let start = cleaned.len().saturating_sub(32);
    cleaned[start..].to_string()
}

/// `stem (suffix).ext` for files with an extension, `name (suffix)` otherwise.
fn with_suffix(base: &str, suffix: &str, is_folder: bool) -> String {
    if !is_usable_name(base) {
        return format!("{base}({suffix})");
    }
    if !is_folder {
        if let Some(dot) = base.rfind('.') {
            let (stem, ext) = base.split_at(dot);
            if !stem.is_empty() && ext.len() > 1 && ext.len() <= 12 && !ext.contains(' ') {
                return format!("{stem} ({suffix}){ext}");
            }
        }
    }
    format!("{base} ({suffix})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::FolderEntry;
    use std::time::Instant;

    fn file(id: &str, name: &str, size: u64) -> FileEntry {
        FileEntry {
            id: FileId(format!("https://1fichier.example/?{id}")),
            name: name.into(),
            size,
            modified: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            checksum: None,
            mime: None,
            share_link: None,
            expires: None,
        }
    }

    fn folder(id: &str, name: &str) -> FolderEntry {
        FolderEntry {
            id: FolderId(id.into()),
            name: name.into(),
            created: None,
        }
    }

    fn fetched(serial: u64, folders: Vec<FolderEntry>, files: Vec<FileEntry>) -> FetchedListing {
        FetchedListing::new(Listing { folders, files }, Instant::now(), serial)
    }

    fn names(table: &InodeTable, dir: u64) -> Vec<String> {
        table
            .children(dir)
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect()
    }

    /// A listing requested before the mount's own change (here: a rename
    /// done through the mount) describes the folder as it was; applying it
    /// would put the file back under its old name. Found by the reference
    /// tests: an upload finishing while a listing was in flight made the
    /// file vanish until the next listing.
    #[test]
    fn a_listing_requested_before_a_change_of_ours_is_not_applied() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let clock = std::sync::Arc::new(AtomicU64::new(2));
        let table = InodeTable::new(FolderId("0".into())).with_listing_clock({
            let clock = clock.clone();
            move || clock.load(Ordering::SeqCst)
        });
        let a = file("aaaa1", "a.txt", 1);
        table
            .apply_listing(ROOT_INO, &fetched(1, vec![], vec![a.clone()]))
            .unwrap();
        // Listing 2 is requested, then the file is renamed, then it arrives.
        let in_flight = fetched(2, vec![], vec![a.clone()]);
        clock.store(3, Ordering::SeqCst);
        table
            .rename_child(ROOT_INO, "a.txt", ROOT_INO, "b.txt")
            .unwrap();
        table.apply_listing(ROOT_INO, &in_flight).unwrap();
        assert_eq!(names(&table, ROOT_INO), vec!["b.txt"]);
        // One requested after the change is applied.
        let mut renamed = a;
        renamed.name = "b.txt".into();
        table
            .apply_listing(ROOT_INO, &fetched(3, vec![], vec![renamed]))
            .unwrap();
        assert_eq!(table.applied_serial(ROOT_INO), Some(3));
        assert_eq!(names(&table, ROOT_INO), vec!["b.txt"]);
    }

    #[test]
    fn duplicates_get_stable_distinct_names() {
        let table = InodeTable::new(FolderId("0".into()));
        let a = file("aaaa1", "movie.mkv", 1);
        let b = file("bbbb2", "movie.mkv", 2);
        let c = file("cccc3", "notes", 3);
        let d = file("dddd4", "notes", 4);
        table
            .apply_listing(
                ROOT_INO,
                &fetched(
                    1,
                    vec![folder("7", "notes")],
                    vec![a.clone(), b.clone(), c, d],
                ),
            )
            .unwrap();
        assert_eq!(
            names(&table, ROOT_INO),
            vec![
                "movie (aaaa1).mkv",
                "movie (bbbb2).mkv",
                "notes",
                "notes (cccc3)",
                "notes (dddd4)"
            ]
        );
        assert!(table.child(ROOT_INO, "notes").unwrap().is_dir());
        let ino_b = table.child(ROOT_INO, "movie (bbbb2).mkv").unwrap().ino;
        // Listed in another order: same names, same inodes.
        table
            .apply_listing(ROOT_INO, &fetched(2, vec![], vec![b.clone(), a.clone()]))
            .unwrap();
        assert_eq!(
            names(&table, ROOT_INO),
            vec!["movie (aaaa1).mkv", "movie (bbbb2).mkv"]
        );
        assert_eq!(
            table.child(ROOT_INO, "movie (bbbb2).mkv").unwrap().ino,
            ino_b
        );
        // Once the duplicate is gone the survivor gets its plain name back.
        table
            .apply_listing(ROOT_INO, &fetched(3, vec![], vec![b]))
            .unwrap();
        assert_eq!(names(&table, ROOT_INO), vec!["movie.mkv"]);
        assert_eq!(table.child(ROOT_INO, "movie.mkv").unwrap().ino, ino_b);
    }

    #[test]
    fn unix_unsafe_names_are_shown_safely() {
        let table = InodeTable::new(FolderId("0".into()));
        table
            .apply_listing(
                ROOT_INO,
                &fetched(
                    1,
                    vec![folder("9", "..")],
                    vec![file("x1", "a/b", 1), file("x2", "", 1)],
                ),
            )
            .unwrap();
        assert_eq!(names(&table, ROOT_INO), vec!["(x2)", "..(9)", "a\u{2215}b"]);
    }

    #[test]
    fn forgotten_entries_are_dropped_only_when_unlisted() {
        let table = InodeTable::new(FolderId("0".into()));
        table
            .apply_listing(
                ROOT_INO,
                &fetched(1, vec![folder("5", "sub")], vec![file("f1", "a", 1)]),
            )
            .unwrap();
        let sub = table.child(ROOT_INO, "sub").unwrap().ino;
        table
            .apply_listing(sub, &fetched(2, vec![], vec![file("f2", "inner", 1)]))
            .unwrap();
        let a = table.child(ROOT_INO, "a").unwrap().ino;
        let inner = table.child(sub, "inner").unwrap().ino;
        table.remember_lookup(a);
        table.remember_lookup(inner);
        table.forget(a, 1);
        assert!(table.get(a).is_some(), "still listed");
        table.remember_lookup(a);
        // The folder and the file disappear remotely.
        table
            .apply_listing(ROOT_INO, &fetched(3, vec![], vec![]))
            .unwrap();
        assert!(table.get(a).is_some(), "kernel still holds it");
        assert!(table.get(sub).is_none());
        assert!(table.get(inner).is_some(), "kernel still holds it");
        table.forget(a, 1);
        table.forget(inner, 1);
        assert!(table.get(a).is_none());
        assert!(table.get(inner).is_none());
        assert_eq!(table.len(), 1);
        // A file that comes back gets a new inode (numbers are never reused).
        table
            .apply_listing(ROOT_INO, &fetched(4, vec![], vec![file("f1", "a", 1)]))
            .unwrap();
        assert!(table.child(ROOT_INO, "a").unwrap().ino > inner);
    }

    #[test]
    fn local_entries_survive_refreshes_until_replaced() {
        let table = InodeTable::new(FolderId("0".into()));
        let local = LocalFile {
            size: 3,
            modified: SystemTime::UNIX_EPOCH,
        };
        let node = table
            .insert_local(ROOT_INO, "new.txt", local.clone())
            .unwrap();
        assert_eq!(
            table.insert_local(ROOT_INO, "new.txt", local).unwrap_err(),
            InodeError::Exists("new.txt".into())
        );
        table
            .apply_listing(ROOT_INO, &fetched(1, vec![], vec![file("o1", "old", 1)]))
            .unwrap();
        assert_eq!(names(&table, ROOT_INO), vec!["new.txt", "old"]);
        let uploaded = file("n1", "new.txt", 3);
        table
            .set_kind(node.ino, NodeKind::File(uploaded.clone()))
            .unwrap();
        table
            .apply_listing(
                ROOT_INO,
                &fetched(2, vec![], vec![file("o1", "old", 1), uploaded]),
            )
            .unwrap();
        assert_eq!(table.child(ROOT_INO, "new.txt").unwrap().ino, node.ino);
        assert!(table.remove_child(ROOT_INO, "old").is_some());
        assert_eq!(names(&table, ROOT_INO), vec!["new.txt"]);
    }

    #[test]
    fn entries_moved_between_folders_keep_their_inode() {
        let table = InodeTable::new(FolderId("0".into()));
        let f = file("m1", "moved", 1);
        table
            .apply_listing(
                ROOT_INO,
                &fetched(1, vec![folder("3", "d")], vec![f.clone()]),
            )
            .unwrap();
        let ino = table.child(ROOT_INO, "moved").unwrap().ino;
        let d = table.child(ROOT_INO, "d").unwrap().ino;
        table
            .apply_listing(d, &fetched(2, vec![], vec![f]))
            .unwrap();
        assert_eq!(table.child(d, "moved").unwrap().ino, ino);
        assert!(table.child(ROOT_INO, "moved").is_none());
        assert_eq!(table.get(ino).unwrap().parent, d);
    }
}
