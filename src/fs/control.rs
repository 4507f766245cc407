//! The control API's view of a mounted filesystem: the [`ControlSurface`]
//! over the fs state, its caches, the write-back queue and the remote's
//! pacer. Runs on the control server's tasks, never on the kernel loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use super::inode::{NodeKind, ROOT_INO};
use super::state::FsState;
use super::Core;
use crate::cache::FileSource;
use crate::control::{
    CacheUsage, ControlError, ControlSurface, Counters, ForgetReport, MountInfo, PacerStatus,
    QueueItem, QueueState, RecentErrors, RefreshReport, SpaceUsage, StatsSnapshot, UnmountReport,
};
use crate::remote::counting::CountingRemote;
use crate::remote::FolderId;
use crate::writeback::{EntryId, UploadStage, WriteBackError};

/// Bound on the folders one recursive refresh or forget walks.
const MAX_FOLDERS: usize = 10_000;
/// How long `mount_info` waits for the account's space (cached for minutes).
const SPACE_WAIT: Duration = Duration::from_secs(2);

/// Who the mount is, for the status page's header.
#[derive(Clone, Debug, Default)]
pub struct MountIdentity {
    pub remote: String,
    pub remote_path: String,
    pub mountpoint: String,
}

/// The mount as the control API steers it.
pub struct MountControl {
    state: Arc<FsState>,
    remote: Arc<CountingRemote>,
    counters: Arc<Counters>,
    errors: Arc<RecentErrors>,
    identity: MountIdentity,
    /// Starts the unmount; taken by the first `mount/unmount`.
    unmount: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Paths of queue items as first seen, so a finished upload keeps its
    /// folder in the view (the queue only knows the folder's id).
    paths: Mutex<HashMap<EntryId, String>>,
}

impl MountControl {
    /// `remote` must be the counting remote the core was built on.
    pub fn new(
        core: &Core,
        remote: Arc<CountingRemote>,
        counters: Arc<Counters>,
        errors: Arc<RecentErrors>,
        identity: MountIdentity,
        unmount: Box<dyn FnOnce() + Send>,
    ) -> Self {
        core.state.blocks.report_to(counters.clone());
        MountControl {
            state: core.state.clone(),
            remote,
            counters,
            errors,
            identity,
            unmount: Mutex::new(Some(unmount)),
            paths: Mutex::new(HashMap::new()),
        }
    }

    /// The inode at `path` ("" = root), listing folders on the way as needed.
    async fn resolve(&self, path: &str) -> Result<u64, ControlError> {
        let mut ino = ROOT_INO;
        for name in path.split('/').filter(|part| !part.is_empty()) {
            self.state
                .ensure_listing(ino)
                .await
                .map_err(|e| ControlError::Internal(format!("cannot list {path:?}: {e}")))?;
            ino = self
                .state
                .inodes
                .child(ino, name)
                .ok_or_else(|| ControlError::NotFound(format!("{path:?} does not exist")))?
                .ino;
        }
        Ok(ino)
    }

    /// The path of inode `ino` in the mount, from the inode table.
    fn path_of(&self, mut ino: u64) -> Option<String> {
        let mut names = Vec::new();
        for _ in 0..1000 {
            if ino == ROOT_INO {
                names.reverse();
                return Some(names.join("/"));
            }
            let node = self.state.inodes.get(ino)?;
            names.push(node.name);
            ino = node.parent;
        }
        None
    }

    fn folder_path(&self, folder: &FolderId) -> Option<String> {
        self.path_of(self.state.inodes.folder_ino(folder)?)
    }

    fn pacer_status(&self) -> PacerStatus {
        let requests_last_hour = self.remote.requests_last_hour();
        let pacer = crate::remote::Remote::pacer(self.remote.as_ref());
        let budget_per_hour = pacer.map(|p| p.hourly_budget());
        PacerStatus {
            requests_last_hour,
            budget_per_hour,
            budget_left: budget_per_hour.map(|b| b.saturating_sub(requests_last_hour)),
            waiting: pacer.map_or(0, |p| p.waiting()),
        }
    }

    fn item_path(&self, id: EntryId, parent: &FolderId, name: &str) -> String {
        let mut paths = self.paths.lock();
        if let Some(path) = paths.get(&id) {
            return path.clone();
        }
        let path = match self.folder_path(parent) {
            Some(folder) if !folder.is_empty() => format!("{folder}/{name}"),
            _ => name.to_string(),
        };
        paths.insert(id, path.clone());
        path
    }
}

fn to_utc(time: std::time::SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(time)
}

fn queue_state(stage: UploadStage) -> QueueState {
    match stage {
        UploadStage::Writing | UploadStage::Waiting | UploadStage::Held => QueueState::Queued,
        UploadStage::Uploading => QueueState::Uploading,
        UploadStage::Retrying => QueueState::Retrying,
        UploadStage::Refused => QueueState::Failed,
    }
}

#[async_trait]
impl ControlSurface for MountControl {
    async fn mount_info(&self) -> MountInfo {
        let space = tokio::time::timeout(SPACE_WAIT, self.state.meta.about())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|info| SpaceUsage {
                used_bytes: info.used,
                total_bytes: info.total,
            });
        MountInfo {
            remote: self.identity.remote.clone(),
            service: crate::remote::Remote::service(self.remote.as_ref()).to_string(),
            remote_path: self.identity.remote_path.clone(),
            mountpoint: self.identity.mountpoint.clone(),
            read_only: self.state.config.read_only,
            space,
        }
    }

    async fn refresh(&self, dir: &str, recursive: bool) -> Result<RefreshReport, ControlError> {
        let start = self.resolve(dir).await?;
        let node = self
            .state
            .inodes
            .get(start)
            .ok_or_else(|| ControlError::NotFound(format!("{dir:?} does not exist")))?;
        if !node.is_dir() {
            return Err(ControlError::InvalidParams(format!(
                "{dir:?} is a file, not a folder"
            )));
        }
        let mut report = RefreshReport::default();
        let mut folders = vec![start];
        while let Some(ino) = folders.pop() {
            if report.dirs_listed as usize >= MAX_FOLDERS {
                break;
            }
            // A refresh spends the same hourly budget as the kernel's
            // requests: stop before it would make the pacer hold them back.
            if self.pacer_status().budget_left == Some(0) {
                return Err(ControlError::Unavailable(format!(
                    "the hourly request budget is spent; refreshed {} folder(s) so far",
                    report.dirs_listed
                )));
            }
            let Some(folder) = self
                .state
                .inodes
                .get(ino)
                .and_then(|n| n.folder_id().cloned())
            else {
                continue;
            };
            self.state.meta.invalidate(&folder);
            self.state
                .ensure_listing(ino)
                .await
                .map_err(|e| ControlError::Internal(format!("cannot list a folder: {e}")))?;
            report.dirs_listed += 1;
            let children = self.state.inodes.children(ino).unwrap_or_default();
            report.entries_seen += children.len() as u64;
            if recursive {
                folders.extend(children.iter().filter(|c| c.is_dir()).map(|c| c.ino));
            }
        }
        Ok(report)
    }

    async fn forget(&self, path: &str) -> Result<ForgetReport, ControlError> {
        let start = self.resolve(path).await?;
        let mut report = ForgetReport::default();
        let mut nodes = vec![start];
        let mut walked = 0;
        while let Some(ino) = nodes.pop() {
            walked += 1;
            if walked > MAX_FOLDERS * 10 {
                break;
            }
            let Some(node) = self.state.inodes.get(ino) else {
                continue;
            };
            match &node.kind {
                NodeKind::Folder { id, .. } => {
                    self.state.meta.invalidate(id);
                    report.entries_dropped += 1;
                    nodes.extend(
                        self.state
                            .inodes
                            .children(ino)
                            .unwrap_or_default()
                            .iter()
                            .map(|c| c.ino),
                    );
                }
                NodeKind::File(entry) => {
                    let (blocks, bytes) =
                        self.state.blocks.forget_file(&FileSource::for_entry(entry));
                    // The next open must not let the kernel keep its copy.
                    self.state.opened_content.lock().remove(&ino);
                    report.entries_dropped += blocks;
                    report.bytes_dropped += bytes;
                }
                // Pending files live in the staging dir, not in a cache.
                NodeKind::Local(_) => {}
            }
        }
        Ok(report)
    }

    async fn stats(&self) -> StatsSnapshot {
        let blocks = self.state.blocks.stats();
        let config = &self.state.config.cache;
        let disk_limit = config.disk.as_ref().map_or(0, |(_, max)| *max);
        let cache = CacheUsage {
            used_bytes: blocks.memory_bytes + blocks.disk_bytes,
            limit_bytes: Some(config.max_memory + disk_limit),
            files: self.state.blocks.cached_files(),
            listings: self.state.meta.listing_count(),
        };
        StatsSnapshot::collect(&self.counters, &self.errors, cache, self.pacer_status())
    }

    async fn queue(&self) -> Vec<QueueItem> {
        let queue = &self.state.write.queue;
        let finished = queue.finished();
        let pending = queue.queued();
        let mut items: Vec<QueueItem> = finished
            .iter()
            .map(|done| QueueItem {
                id: done.id.0 as u64,
                name: done.name.clone(),
                path: self.item_path(done.id, &done.parent, &done.name),
                size: done.size,
                state: QueueState::Done,
                attempts: done.attempts,
                last_error: None,
                next_try: None,
                progress_bytes: done.size,
            })
            .collect();
        items.extend(pending.iter().map(|upload| QueueItem {
            id: upload.id.0 as u64,
            name: upload.name.clone(),
            path: self.item_path(upload.id, &upload.parent, &upload.name),
            size: upload.size,
            state: queue_state(upload.stage),
            attempts: upload.attempts + u32::from(upload.stage == UploadStage::Uploading),
            last_error: upload.last_error.clone(),
            next_try: upload.next_try.map(to_utc),
            progress_bytes: upload.sent_bytes,
        }));
        items.sort_by_key(|item| item.id);
        // Forget the paths of items no longer shown.
        let shown: std::collections::HashSet<i64> =
            items.iter().map(|item| item.id as i64).collect();
        self.paths.lock().retain(|id, _| shown.contains(&id.0));
        items
    }

    async fn queue_retry(&self, id: u64) -> Result<QueueItem, ControlError> {
        let entry = EntryId(
            i64::try_from(id)
                .map_err(|_| ControlError::NotFound(format!("no pending upload {id}")))?,
        );
        match self.state.write.queue.retry_now(entry) {
            Ok(true) => {}
            Ok(false) => {
                return Err(ControlError::Conflict(format!(
                    "upload {id} is running already"
                )))
            }
            Err(WriteBackError::UnknownEntry(_)) => {
                return Err(ControlError::NotFound(format!("no pending upload {id}")))
            }
            Err(e) => return Err(ControlError::Internal(e.to_string())),
        }
        self.queue()
            .await
            .into_iter()
            .find(|item| item.id == id)
            .ok_or_else(|| ControlError::NotFound(format!("upload {id} finished meanwhile")))
    }

    async fn unmount(&self, timeout: Duration) -> Result<UnmountReport, ControlError> {
        let Some(start_unmount) = self.unmount.lock().take() else {
            return Err(ControlError::Unavailable(
                "the mount is already unmounting".into(),
            ));
        };
        let drained = self.state.write.queue.drain(timeout).await;
        start_unmount();
        Ok(UnmountReport {
            unmounting: true,
            uploads_pending: drained.left.len() as u64,
        })
    }
}
