//! Runs one sequence of operations on a `Core` and on the model side by
//! side, and says where they first disagree.

use std::ffi::OsStr;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use filehostfs::fs::error::Errno as _;
use filehostfs::fs::{AttrChange, Core, FsConfig, NodeType};
use filehostfs::remote::memory::MemoryRemote;
use filehostfs::remote::{Capabilities, FolderId, HashKind, Remote};

use crate::model::{File, Model, Node, NodeId, Shown};

#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub enum OpenMode {
    ReadOnly,
    ReadWrite,
    WriteTruncate,
    Append,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// `open(O_CREAT|O_EXCL|O_RDWR)`.
    Create {
        path: Vec<String>,
    },
    Open {
        path: Vec<String>,
        mode: OpenMode,
    },
    /// Through a handle open for writing (the kernel refuses the others).
    Write {
        handle: u8,
        offset: u64,
        data: Vec<u8>,
    },
    /// Through a handle open for reading.
    Read {
        handle: u8,
        offset: u64,
        len: u32,
    },
    /// `truncate(2)`: by path.
    Truncate {
        path: Vec<String>,
        size: u64,
    },
    /// `ftruncate(2)`: through a handle open for writing.
    TruncateHandle {
        handle: u8,
        size: u64,
    },
    /// `close(2)` of a duplicate: flush without release.
    Flush {
        handle: u8,
    },
    /// `close(2)` of the last descriptor: flush, then release.
    Close {
        handle: u8,
    },
    Fsync {
        handle: u8,
    },
    Rename {
        from: Vec<String>,
        to: Vec<String>,
        noreplace: bool,
    },
    Unlink {
        path: Vec<String>,
    },
    Mkdir {
        path: Vec<String>,
    },
    Rmdir {
        path: Vec<String>,
    },
    ReadDir {
        path: Vec<String>,
    },
    Stat {
        path: Vec<String>,
    },
    /// Another client uploads a file of a name the folder does not have.
    RemoteAdd {
        path: Vec<String>,
        data: Vec<u8>,
    },
    /// Another client overwrites a file that is on the service, unchanged
    /// and not open here.
    RemoteReplace {
        path: Vec<String>,
        data: Vec<u8>,
    },
    /// Another client deletes such a file.
    RemoteRemove {
        path: Vec<String>,
    },
    /// Time passes: the upload worker runs its background steps.
    Pause,
    /// The process is killed and started again on the same staging dir.
    Kill,
    /// Unmount (waiting for the uploads) and mount again.
    Remount,
}

struct Handle {
    node: NodeId,
    fh: u64,
    read: bool,
    write: bool,
    /// `O_APPEND`: every write lands at the end, whatever its offset.
    append: bool,
    /// For a read-only handle: the content when it was opened. A handle
    /// opened on a file that is on the service keeps reading that version
    /// while other handles write a new one (close-to-open consistency, as
    /// on NFS); see docs/SEMANTICS.md.
    opened: Option<Vec<u8>>,
}

struct Harness {
    remote: Arc<MemoryRemote>,
    staging: tempfile::TempDir,
    core: Option<Core>,
    model: Model,
    handles: Vec<Handle>,
}

/// What a 1fichier account can do, on the in-memory remote (which keeps
/// SHA-256 checksums where 1fichier keeps Whirlpool ones).
fn fichier_like() -> MemoryRemote {
    MemoryRemote::with_capabilities(
        Capabilities {
            folders: true,
            rename_file: true,
            move_file: true,
            rename_folder: true,
            move_folder: true,
            duplicate_names: true,
            empty_files: false,
            downloads_consume: false,
            files_expire: false,
            max_file_size: None,
            hash: Some(HashKind::Sha256),
            max_name_bytes: filehostfs::remote::NAME_MAX_BYTES,
        },
        Some(1 << 30),
    )
}

fn config(staging: &std::path::Path) -> FsConfig {
    // Nothing uploads on its own: only fsync and unmount upload, so another
    // client's changes never race the queue.
    let mut config = crate::core_config::small_core(staging, "reftest", Duration::from_secs(3600));
    // Blocks of 64 bytes: the short files the model writes span several.
    config.cache.block_size = 64;
    config.cache.max_memory = 1 << 20;
    config
}

fn os(name: &str) -> &OsStr {
    OsStr::new(name)
}

/// Compares what the core answered with what the model expects.
fn check<T: Debug + PartialEq>(
    step: &str,
    actual: Result<T, i32>,
    expected: Result<T, i32>,
) -> Result<(), String> {
    if actual == expected {
        Ok(())
    } else {
        Err(format!(
            "{step}: the core answered {actual:?}, the model expects {expected:?}"
        ))
    }
}

fn errno<T>(result: Result<T, filehostfs::fs::Error>) -> Result<T, i32> {
    result.map_err(|error| error.errno())
}

/// A fresh staging dir, in memory where the machine has a RAM disk: the
/// journal syncs every change to disk, which is not what is tested here
/// and would make each case wait on the disk.
fn staging_dir() -> std::io::Result<tempfile::TempDir> {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return Ok(dir);
        }
    }
    tempfile::tempdir()
}

/// Runs `ops` on a fresh account; the first disagreement, with the step.
pub fn run(ops: &[Op]) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let staging = staging_dir().map_err(|e| e.to_string())?;
        let remote = Arc::new(fichier_like());
        let mut harness = Harness {
            remote,
            staging,
            core: None,
            model: Model::new(),
            handles: Vec::new(),
        };
        harness.start()?;
        for (i, op) in ops.iter().enumerate() {
            harness
                .step(op)
                .await
                .map_err(|e| format!("step {i} {op:?}: {e}"))?;
        }
        harness
            .remount()
            .await
            .map_err(|e| format!("final unmount: {e}"))?;
        harness.core.take().expect("running").kill().await;
        Ok(())
    })
}

impl Harness {
    fn core(&self) -> &Core {
        self.core.as_ref().expect("a core is running")
    }

    fn start(&mut self) -> Result<(), String> {
        let remote: Arc<dyn Remote> = self.remote.clone();
        let root = remote.root();
        let (core, _recovery) = Core::new(remote, root, config(self.staging.path()))
            .map_err(|e| format!("starting a core: {e}"))?;
        self.core = Some(core);
        Ok(())
    }

    /// The inode of `path`, found by lookups from the root as the kernel
    /// finds it.
    async fn lookup(&self, path: &[String]) -> Result<(u64, NodeType, u64), i32> {
        let core = self.core();
        let mut at = (core.root(), NodeType::Directory, 0);
        for name in path {
            let attr = errno(core.lookup(at.0, os(name)).await)?;
            at = (attr.ino, attr.kind, attr.size);
        }
        Ok(at)
    }

    async fn lookup_dir(&self, path: &[String]) -> Result<u64, i32> {
        match self.lookup(path).await? {
            (ino, NodeType::Directory, _) => Ok(ino),
            _ => Err(libc::ENOTDIR),
        }
    }

    /// The handle `index` picks (modulo their number) among those that `fits`.
    fn pick(&self, index: &u8, fits: impl Fn(&Handle) -> bool) -> Option<usize> {
        let fitting: Vec<usize> = (0..self.handles.len())
            .filter(|&i| fits(&self.handles[i]))
            .collect();
        (!fitting.is_empty()).then(|| fitting[usize::from(*index) % fitting.len()])
    }

    fn open_handles_on(&self, node: NodeId) -> bool {
        self.handles.iter().any(|h| h.node == node)
    }

    async fn step(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Create { path } => self.create(path).await,
            Op::Open { path, mode } => self.open(path, *mode).await,
            Op::Write {
                handle,
                offset,
                data,
            } => {
                let Some(i) = self.pick(handle, |h| h.write) else {
                    return Ok(());
                };
                let (node, fh) = (self.handles[i].node, self.handles[i].fh);
                let actual = errno(self.core().write(fh, *offset, data));
                let file = self.model.file_mut(node);
                let offset = if self.handles[i].append {
                    file.data.len() as u64
                } else {
                    *offset
                };
                let end = offset as usize + data.len();
                if file.data.len() < end {
                    file.data.resize(end, 0);
                }
                file.data[offset as usize..end].copy_from_slice(data);
                check("write", actual, Ok(data.len() as u32))
            }
            Op::Read {
                handle,
                offset,
                len,
            } => {
                let Some(i) = self.pick(handle, |h| h.read) else {
                    return Ok(());
                };
                let (node, fh) = (self.handles[i].node, self.handles[i].fh);
                let actual = errno(self.core().read(fh, *offset, *len).await).map(|b| b.to_vec());
                let slice = |data: &[u8]| {
                    let start = (*offset as usize).min(data.len());
                    let end = (start + *len as usize).min(data.len());
                    data[start..end].to_vec()
                };
                let current = slice(&self.model.file(node).data);
                match &self.handles[i].opened {
                    Some(opened) if actual == Ok(slice(opened)) => Ok(()),
                    _ => check("read", actual, Ok(current)),
                }
            }
            Op::Truncate { path, size } => self.truncate(path, *size).await,
            Op::TruncateHandle { handle, size } => {
                let Some(i) = self.pick(handle, |h| h.write) else {
                    return Ok(());
                };
                let (node, fh) = (self.handles[i].node, self.handles[i].fh);
                let ino = self.lookup_node_ino(node).await;
                let change = AttrChange {
                    size: Some(*size),
                    mtime: None,
                    fh: Some(fh),
                    ..AttrChange::default()
                };
                // The kernel sends the inode with the handle; an unlinked
                // file keeps its inode, which the handle alone identifies.
                let actual = match ino {
                    Some(ino) => errno(self.core().setattr(ino, change).await).map(|a| a.size),
                    None => return Ok(()),
                };
                self.model.file_mut(node).data.resize(*size as usize, 0);
                check("ftruncate", actual, Ok(*size))
            }
            Op::Flush { handle } => {
                let Some(i) = self.pick(handle, |_| true) else {
                    return Ok(());
                };
                let Handle {
                    node, fh, write, ..
                } = self.handles[i];
                let actual = errno(self.core().flush(fh).await);
                if write {
                    self.model.file_mut(node).durable = Some(self.model.file(node).data.clone());
                }
                check("flush", actual, Ok(()))
            }
            Op::Close { handle } => {
                let Some(i) = self.pick(handle, |_| true) else {
                    return Ok(());
                };
                let Handle {
                    node, fh, write, ..
                } = self.handles.remove(i);
                let flushed = errno(self.core().flush(fh).await);
                let released = errno(self.core().release(fh).await);
                if write {
                    self.model.file_mut(node).durable = Some(self.model.file(node).data.clone());
                }
                check("close (flush)", flushed, Ok(()))?;
                check("close (release)", released, Ok(()))
            }
            Op::Fsync { handle } => {
                let Some(i) = self.pick(handle, |_| true) else {
                    return Ok(());
                };
                let Handle {
                    node, fh, write, ..
                } = self.handles[i];
                let actual = errno(self.core().fsync(fh).await);
                check("fsync", actual, Ok(()))?;
                if write {
                    let data = self.model.file(node).data.clone();
                    self.model.file_mut(node).durable = Some(data.clone());
                    self.check_uploaded(node, &data).await?;
                }
                Ok(())
            }
            Op::Rename {
                from,
                to,
                noreplace,
            } => {
                let actual = self.rename(from, to, *noreplace).await;
                let expected = self.model.rename(from, to, *noreplace);
                check("rename", actual, expected)
            }
            Op::Unlink { path } => self.unlink(path).await,
            Op::Mkdir { path } => self.mkdir(path).await,
            Op::Rmdir { path } => self.rmdir(path).await,
            Op::ReadDir { path } => {
                let actual = self.readdir(path).await;
                let expected = self
                    .model
                    .resolve_dir(path)
                    .map(|dir| self.model.listing(dir));
                check("readdir", actual, expected)
            }
            Op::Stat { path } => {
                let actual = self.lookup(path).await.map(|(_, kind, size)| match kind {
                    NodeType::Directory => Shown::Dir,
                    NodeType::RegularFile => Shown::File { size },
                });
                let expected = self.model.resolve(path).map(|id| self.model.shown(id));
                check("stat", actual, expected)
            }
            Op::RemoteAdd { path, data } => self.remote_add(path, data).await,
            Op::RemoteReplace { path, data } => self.remote_replace(path, Some(data)).await,
            Op::RemoteRemove { path } => self.remote_replace(path, None).await,
            Op::Pause => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(())
            }
            Op::Kill => self.kill().await,
            Op::Remount => self.remount().await,
        }
    }

    /// The inode the core gives the model node `node` now, if it is
    /// still reachable by a path.
    async fn lookup_node_ino(&self, node: NodeId) -> Option<u64> {
        let (path, _) = self.model.files().into_iter().find(|(_, id)| *id == node)?;
        self.lookup(&path).await.ok().map(|(ino, _, _)| ino)
    }

    async fn create(&mut self, path: &[String]) -> Result<(), String> {
        let (name, parent) = path.split_last().expect("a path has a name");
        let actual = match self.lookup_dir(parent).await {
            Ok(dir) => {
                // The kernel looks the name up first (and answers EEXIST
                // itself when it is there).
                match errno(self.core().lookup(dir, os(name)).await) {
                    Ok(_) => Err(libc::EEXIST),
                    Err(_) => errno(
                        self.core()
                            .create(dir, os(name), libc::S_IFREG | 0o644, libc::O_RDWR)
                            .await,
                    ),
                }
            }
            Err(e) => Err(e),
        };
        let expected = match self.model.resolve_dir(parent) {
            Ok(dir) if self.model.children(dir).contains_key(name) => Err(libc::EEXIST),
            Ok(dir) => Ok(dir),
            Err(e) => Err(e),
        };
        match (actual, expected) {
            (Ok((attr, fh)), Ok(dir)) => {
                let node = self.model.add_file(
                    dir,
                    name,
                    File {
                        data: Vec::new(),
                        durable: None,
                        clean: false,
                    },
                );
                self.handles.push(Handle {
                    node,
                    fh,
                    read: true,
                    write: true,
                    append: false,
                    opened: None,
                });
                check("create (size)", Ok(attr.size), Ok(0))
            }
            (actual, expected) => check("create", actual.map(|_| ()), expected.map(|_| ())),
        }
    }

    async fn open(&mut self, path: &[String], mode: OpenMode) -> Result<(), String> {
        let flags = match mode {
            OpenMode::ReadOnly => libc::O_RDONLY,
            OpenMode::ReadWrite => libc::O_RDWR,
            OpenMode::WriteTruncate => libc::O_WRONLY | libc::O_TRUNC,
            OpenMode::Append => libc::O_WRONLY | libc::O_APPEND,
        };
        let actual = match self.lookup(path).await {
            Ok((ino, _, _)) => errno(self.core().open(ino, flags).await),
            Err(e) => Err(e),
        };
        let expected = match self.model.resolve(path) {
            Ok(id) if self.model.is_dir(id) => Err(libc::EISDIR),
            other => other,
        };
        match (actual, expected) {
            (Ok(fh), Ok(node)) => {
                let write = !matches!(mode, OpenMode::ReadOnly);
                let opened = (!write).then(|| self.model.file(node).data.clone());
                let file = self.model.file_mut(node);
                if write {
                    file.clean = false;
                }
                if matches!(mode, OpenMode::WriteTruncate) {
                    file.data.clear();
                }
                self.handles.push(Handle {
                    node,
                    fh,
                    read: matches!(mode, OpenMode::ReadOnly | OpenMode::ReadWrite),
                    write,
                    append: matches!(mode, OpenMode::Append),
                    opened,
                });
                Ok(())
            }
            (actual, expected) => check("open", actual.map(|_| ()), expected.map(|_| ())),
        }
    }

    async fn truncate(&mut self, path: &[String], size: u64) -> Result<(), String> {
        let actual = match self.lookup(path).await {
            Ok((ino, _, _)) => {
                let change = AttrChange {
                    size: Some(size),
                    mtime: None,
                    fh: None,
                    ..AttrChange::default()
                };
                errno(self.core().setattr(ino, change).await).map(|attr| attr.size)
            }
            Err(e) => Err(e),
        };
        let expected = match self.model.resolve(path) {
            Ok(id) if self.model.is_dir(id) => Err(libc::EISDIR),
            Ok(id) => {
                let file = self.model.file_mut(id);
                if file.data.len() as u64 != size {
                    file.data.resize(size as usize, 0);
                    file.clean = false;
                    // Truncation by path stages and releases at once.
                    file.durable = Some(file.data.clone());
                }
                Ok(size)
            }
            Err(e) => Err(e),
        };
        check("truncate", actual, expected)
    }

    async fn rename(&self, from: &[String], to: &[String], noreplace: bool) -> Result<(), i32> {
        // The kernel looks both names up before it asks for the rename.
        let (from_dir, name) = self.looked_up(from).await?;
        let (to_dir, new_name) = self.looked_up(to).await?;
        let flags = if noreplace { libc::RENAME_NOREPLACE } else { 0 };
        errno(
            self.core()
                .rename(from_dir, name, to_dir, new_name, flags)
                .await,
        )
    }

    /// The folder holding `path` and the name in it, as the kernel has
    /// them before it asks for a change: the folder looked up from the
    /// root, then the name looked up in it (whatever that answers).
    async fn looked_up<'p>(&self, path: &'p [String]) -> Result<(u64, &'p OsStr), i32> {
        let (name, parent) = path.split_last().expect("a path has a name");
        let dir = self.lookup_dir(parent).await?;
        let _ = self.core().lookup(dir, os(name)).await;
        Ok((dir, os(name)))
    }

    /// Removes `path` (which must exist) from the model.
    fn model_remove(&mut self, path: &[String]) {
        let (name, parent) = path.split_last().expect("a path has a name");
        let parent = self.model.resolve_dir(parent).expect("a resolved path");
        self.model.remove(parent, name);
    }

    async fn unlink(&mut self, path: &[String]) -> Result<(), String> {
        let actual = match self.looked_up(path).await {
            Ok((dir, name)) => errno(self.core().unlink(dir, name).await),
            Err(e) => Err(e),
        };
        let expected = match self.model.resolve(path) {
            Ok(id) if self.model.is_dir(id) => Err(libc::EISDIR),
            Ok(_) => {
                self.model_remove(path);
                Ok(())
            }
            Err(e) => Err(e),
        };
        check("unlink", actual, expected)
    }

    async fn mkdir(&mut self, path: &[String]) -> Result<(), String> {
        let actual = match self.looked_up(path).await {
            Ok((dir, name)) => errno(self.core().mkdir(dir, name).await).map(|attr| attr.kind),
            Err(e) => Err(e),
        };
        let (name, parent) = path.split_last().expect("a path has a name");
        let expected = match self.model.resolve_dir(parent) {
            Ok(dir) if self.model.children(dir).contains_key(name) => Err(libc::EEXIST),
            Ok(dir) => {
                self.model.add_dir(dir, name);
                Ok(NodeType::Directory)
            }
            Err(e) => Err(e),
        };
        check("mkdir", actual, expected)
    }

    async fn rmdir(&mut self, path: &[String]) -> Result<(), String> {
        let actual = match self.looked_up(path).await {
            Ok((dir, name)) => errno(self.core().rmdir(dir, name).await),
            Err(e) => Err(e),
        };
        let expected = match self.model.resolve(path) {
            Ok(id) if !self.model.is_dir(id) => Err(libc::ENOTDIR),
            Ok(id) if !self.model.children(id).is_empty() => Err(libc::ENOTEMPTY),
            Ok(_) => {
                self.model_remove(path);
                Ok(())
            }
            Err(e) => Err(e),
        };
        check("rmdir", actual, expected)
    }

    async fn readdir(&self, path: &[String]) -> Result<Vec<(String, Shown)>, i32> {
        let dir = self.lookup_dir(path).await?;
        let mut entries: Vec<(String, Shown)> = errno(self.core().readdir(dir).await)?
            .into_iter()
            .map(|(name, attr)| {
                let shown = match attr.kind {
                    NodeType::Directory => Shown::Dir,
                    NodeType::RegularFile => Shown::File { size: attr.size },
                };
                (name, shown)
            })
            .collect();
        entries.sort();
        Ok(entries)
    }

    /// The whole content of the file at `path`, read through a new handle.
    async fn read_all(&self, path: &[String]) -> Result<Vec<u8>, i32> {
        let (ino, _, _) = self.lookup(path).await?;
        let core = self.core();
        let fh = errno(core.open(ino, libc::O_RDONLY).await)?;
        let mut data = Vec::new();
        let result = loop {
            match errno(core.read(fh, data.len() as u64, 4096).await) {
                Ok(chunk) if chunk.is_empty() => break Ok(()),
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(e) => break Err(e),
            }
        };
        let released = errno(core.release(fh).await);
        result.and(released).map(|()| data)
    }

    /// The folder id of the model folder `path` on the service.
    async fn remote_folder(&self, path: &[String]) -> Result<FolderId, String> {
        let mut folder = self.remote.root();
        for name in path {
            let listing = self
                .remote
                .list_folder(&folder)
                .await
                .map_err(|e| e.to_string())?;
            folder = listing
                .folders
                .into_iter()
                .find(|f| &f.name == name)
                .map(|f| f.id)
                .ok_or_else(|| format!("the service has no folder {path:?}"))?;
        }
        Ok(folder)
    }

    /// After an fsync: the service holds the content under the file's name.
    async fn check_uploaded(&self, node: NodeId, data: &[u8]) -> Result<(), String> {
        if data.is_empty() {
            // 1fichier stores no empty file: it stays a journaled placeholder.
            return Ok(());
        }
        let Some((path, _)) = self.model.files().into_iter().find(|(_, id)| *id == node) else {
            // Unlinked: nothing is promised on the service.
            return Ok(());
        };
        let (name, parent) = path.split_last().expect("a path has a name");
        let folder = self.remote_folder(parent).await?;
        let listing = self
            .remote
            .list_folder(&folder)
            .await
            .map_err(|e| e.to_string())?;
        let stored = listing
            .files
            .iter()
            .filter(|f| &f.name == name)
            .any(|f| self.remote.content(&f.id).as_deref() == Some(data));
        if stored {
            Ok(())
        } else {
            Err(format!(
                "fsync returned but the service has no {path:?} of {} bytes: {:?}",
                data.len(),
                listing.files
            ))
        }
    }

    async fn remote_add(&mut self, path: &[String], data: &[u8]) -> Result<(), String> {
        let (name, parent) = path.split_last().expect("a path has a name");
        let Ok(dir) = self.model.resolve_dir(parent) else {
            return Ok(());
        };
        if self.model.children(dir).contains_key(name) {
            return Ok(());
        }
        let folder = self.remote_folder(parent).await?;
        self.remote
            .add_file_in(&folder, name, data.to_vec())
            .map_err(|e| e.to_string())?;
        self.model.add_file(
            dir,
            name,
            File {
                data: data.to_vec(),
                durable: Some(data.to_vec()),
                clean: true,
            },
        );
        Ok(())
    }

    /// Another client replaces (`Some`) or deletes (`None`) a clean file.
    async fn remote_replace(
        &mut self,
        path: &[String],
        data: Option<&Vec<u8>>,
    ) -> Result<(), String> {
        let Ok(node) = self.model.resolve(path) else {
            return Ok(());
        };
        let clean = matches!(&self.model.nodes[node], Node::File(f) if f.clean);
        if !clean || self.open_handles_on(node) {
            return Ok(());
        }
        let (name, parent) = path.split_last().expect("a path has a name");
        let folder = self.remote_folder(parent).await?;
        let listing = self
            .remote
            .list_folder(&folder)
            .await
            .map_err(|e| e.to_string())?;
        let ids: Vec<_> = listing.files.iter().filter(|f| &f.name == name).collect();
        let [file] = ids[..] else {
            return Err(format!(
                "a clean file {path:?} is on the service as {ids:?}"
            ));
        };
        match data {
            Some(data) => {
                self.remote
                    .replace_file(&file.id, data.clone())
                    .map_err(|e| e.to_string())?;
                let model = self.model.file_mut(node);
                model.data = data.clone();
                model.durable = Some(data.clone());
            }
            None => {
                self.remote
                    .delete_file(&file.id)
                    .map_err(|e| e.to_string())?;
                let dir = self.model.resolve_dir(parent).expect("resolved above");
                self.model.remove(dir, name);
            }
        }
        Ok(())
    }

    /// Kill, restart, then check that every file shows either its current
    /// content or what was last made durable (a file never closed may be
    /// gone), and adopt what the new core shows.
    async fn kill(&mut self) -> Result<(), String> {
        self.handles.clear();
        self.core.take().expect("running").kill().await;
        self.start()?;
        for (path, node) in self.model.files() {
            let file = self.model.file(node).clone();
            match self.read_all(&path).await {
                Ok(data) if data == file.data || Some(&data) == file.durable.as_ref() => {
                    let model = self.model.file_mut(node);
                    model.durable = Some(data.clone());
                    model.data = data;
                }
                Err(libc::ENOENT) if file.durable.is_none() => {
                    let (name, parent) = path.split_last().expect("a path has a name");
                    let dir = self.model.resolve_dir(parent).expect("a walked folder");
                    self.model.remove(dir, name);
                }
                other => {
                    return Err(format!(
                        "after the restart {path:?} reads {other:?}; it held {:?} ({:?} durable)",
                        file.data, file.durable
                    ))
                }
            }
        }
        self.check_tree().await
    }

    /// Unmount (the leftover handles released, uploads waited for), check
    /// the service holds exactly the model's tree, and mount again.
    async fn remount(&mut self) -> Result<(), String> {
        let core = self.core.take().expect("running");
        core.finish(std::future::pending()).await;
        core.kill().await;
        self.handles.clear();
        for (_, node) in self.model.files() {
            let file = self.model.file_mut(node);
            file.durable = Some(file.data.clone());
            file.clean = !file.data.is_empty();
        }
        self.check_service().await?;
        self.start()?;
        self.check_tree().await
    }

    /// The core's tree (names, kinds, sizes) equals the model's.
    async fn check_tree(&self) -> Result<(), String> {
        for (path, dir) in self.model.dirs() {
            let actual = self.readdir(&path).await;
            check(
                &format!("listing {path:?}"),
                actual,
                Ok(self.model.listing(dir)),
            )?;
        }
        Ok(())
    }

    /// The service holds the model's folders and its non-empty files, each
    /// once (1fichier keeps no empty file: those stay placeholders).
    async fn check_service(&self) -> Result<(), String> {
        for (path, dir) in self.model.dirs() {
            let folder = self.remote_folder(&path).await?;
            let listing = self
                .remote
                .list_folder(&folder)
                .await
                .map_err(|e| e.to_string())?;
            let mut actual: Vec<(String, Option<Vec<u8>>)> = listing
                .folders
                .iter()
                .map(|f| (f.name.clone(), None))
                .chain(listing.files.iter().map(|f| {
                    let data = self.remote.content(&f.id).map(|b| b.to_vec());
                    (f.name.clone(), data)
                }))
                .collect();
            actual.sort();
            let expected: Vec<(String, Option<Vec<u8>>)> = self
                .model
                .children(dir)
                .iter()
                .filter_map(|(name, &id)| match &self.model.nodes[id] {
                    Node::Dir(_) => Some((name.clone(), None)),
                    Node::File(file) if file.data.is_empty() => None,
                    Node::File(file) => Some((name.clone(), Some(file.data.clone()))),
                })
                .collect();
            if actual != expected {
                return Err(format!(
                    "after unmount the service's {path:?} holds {actual:?}, the model {expected:?}"
                ));
            }
        }
        Ok(())
    }
}
