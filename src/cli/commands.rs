//! rclone-style command-line tools on top of the `Remote` trait: `ls`,
//! `put`, `get`, `mkdir`, `rm`, `mv`, `link`, `about`.
//!
//! Each command builds its own tokio runtime, opens the remote named in
//! the config file, and returns an error whose text starts with the path it
//! concerns; `main` prints it as `filehostfs: error: <path>: <cause>`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use chrono::Local;
use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::Sha256;
use tokio::io::AsyncWriteExt;
use whirlpool::{Digest, Whirlpool};

use crate::config::{Config, RemotePath};
use crate::remote::resolve::{find_in, resolve_folder};
use crate::remote::{
    resolve_path, FileEntry, FolderId, HashKind, Listing, ProgressFn, Remote, RemoteError,
    Resolved, UploadSource,
};

#[derive(Debug, Args)]
pub struct LsArgs {
    /// What to list: REMOTE:path (REMOTE: for the top folder).
    #[arg(value_name = "REMOTE:PATH")]
    pub target: String,
    /// Long form: size in bytes, date (local time), name; folders end with '/'.
    #[arg(short = 'l', long)]
    pub long: bool,
    /// Also show each entry's id (tells apart files of the same name).
    #[arg(long)]
    pub ids: bool,
}

#[derive(Debug, Args)]
pub struct PutArgs {
    /// Local file or folder to upload.
    #[arg(value_name = "LOCAL")]
    pub local: PathBuf,
    /// Destination. For a folder: its contents go into this remote folder,
    /// which is created if needed. For a file: into this folder if it exists,
    /// else uploaded under this name.
    #[arg(value_name = "REMOTE:PATH")]
    pub target: String,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Remote file or folder to download.
    #[arg(value_name = "REMOTE:PATH")]
    pub source: String,
    /// Destination. For a folder: its contents go into this local folder,
    /// created if needed. For a file: into this folder if it exists, else
    /// saved under this name.
    #[arg(value_name = "LOCAL")]
    pub local: PathBuf,
}

#[derive(Debug, Args)]
pub struct MkdirArgs {
    /// Folder to create, with any missing parents.
    #[arg(value_name = "REMOTE:PATH")]
    pub target: String,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// File or folder to remove.
    #[arg(value_name = "REMOTE:PATH")]
    pub target: String,
    /// Remove a folder and everything in it.
    #[arg(short = 'r', long)]
    pub recursive: bool,
}

#[derive(Debug, Args)]
pub struct MvArgs {
    /// File or folder to move or rename.
    #[arg(value_name = "REMOTE:PATH")]
    pub source: String,
    /// New place: an existing folder to move into, or the new path.
    #[arg(value_name = "REMOTE:PATH")]
    pub destination: String,
}

#[derive(Debug, Args)]
pub struct LinkArgs {
    /// File whose direct download link to print.
    #[arg(value_name = "REMOTE:PATH")]
    pub target: String,
}

#[derive(Debug, Args)]
pub struct AboutArgs {
    /// The remote, written REMOTE: (a path after the colon is ignored).
    #[arg(value_name = "REMOTE:")]
    pub target: String,
}

/// A runtime plus the opened remote, for one command.
struct Session {
    runtime: tokio::runtime::Runtime,
    remote: Arc<dyn Remote>,
}

fn open(config: Option<PathBuf>, path: &RemotePath) -> anyhow::Result<Session> {
    let config = Config::load(config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Inside the runtime: a backend may start background tasks when built.
    let remote = {
        let _inside = runtime.enter();
        config.open_remote(&path.remote)?
    };
    Ok(Session { runtime, remote })
}

/// Prefixes an error with the path it concerns.
fn at<T>(path: impl std::fmt::Display, result: Result<T, RemoteError>) -> anyhow::Result<T> {
    result.map_err(|e| anyhow!("{path}: {e}"))
}

fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{bytes:>10}/{total_bytes:10} {bar:30} {bytes_per_sec:>12} {eta:>4} {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

// ---------------------------------------------------------------------------
// ls

pub fn run_ls(config: Option<PathBuf>, args: LsArgs) -> anyhow::Result<()> {
    let target = RemotePath::parse(&args.target)?;
    let session = open(config, &target)?;
    let remote = session.remote.clone();
    let lines = session.runtime.block_on(async {
        match at(&target, resolve_path(remote.as_ref(), &target.path).await)? {
            Resolved::Folder { id, .. } => {
                let mut listing = at(&target, remote.list_folder(&id).await)?;
                listing.folders.sort_by(|a, b| a.name.cmp(&b.name));
                listing.files.sort_by(|a, b| a.name.cmp(&b.name));
                Ok::<_, anyhow::Error>(format_listing(&listing, &args))
            }
            Resolved::File { entry, .. } => Ok(vec![format_file(&entry, &args)]),
        }
    })?;
    let mut out = String::new();
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}

fn format_listing(listing: &Listing, args: &LsArgs) -> Vec<String> {
    let mut lines = Vec::new();
    for folder in &listing.folders {
        let mut line = if args.long {
            let date = folder
                .created
                .map(|d| {
                    d.with_timezone(&Local)
                        .format("%Y-%m-%d %H:%M:%S")
                        .to_string()
                })
                .unwrap_or_else(|| "-".repeat(19));
            format!("{:>12} {date} {}/", "-", folder.name)
        } else {
            format!("{}/", folder.name)
        };
        if args.ids {
            line.push_str(&format!("\t{}", folder.id));
        }
        lines.push(line);
    }
    lines.extend(listing.files.iter().map(|f| format_file(f, args)));
    lines
}

fn format_file(file: &FileEntry, args: &LsArgs) -> String {
    let mut line = if args.long {
        format!(
            "{:>12} {} {}",
            file.size,
            file.modified
                .with_timezone(&Local)
                .format("%Y-%m-%d %H:%M:%S"),
            file.name
        )
    } else {
        file.name.clone()
    };
    if args.long {
        // Services whose files expire (file.io) say when.
        if let Some(expires) = file.expires {
            line.push_str(&format!(
                "  (expires {})",
                expires.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S")
            ));
        }
    }
    if args.ids {
        line.push_str(&format!("\t{}", file.id));
    }
    line
}

// ---------------------------------------------------------------------------
// mkdir

/// The folder at `path`, created with its missing parents.
async fn ensure_folder(remote: &dyn Remote, path: &RemotePath) -> anyhow::Result<FolderId> {
    let mut current = remote.root();
    let mut shown = RemotePath {
        remote: path.remote.clone(),
        path: String::new(),
    };
    for part in path.path.split('/').filter(|p| !p.is_empty()) {
        shown = shown.join(part);
        let listing = at(&shown, remote.list_folder(&current).await)?;
        current = match find_in(&listing, part, &current, &shown.to_string()) {
            Ok(Resolved::Folder { id, .. }) => id,
            Ok(Resolved::File { .. }) => bail!("{shown}: exists and is a file, not a folder"),
            Err(RemoteError::NotFound(_)) => {
                at(&shown, remote.create_folder(&current, part).await)?.id
            }
            Err(e) => bail!("{shown}: {e}"),
        };
    }
    Ok(current)
}

pub fn run_mkdir(config: Option<PathBuf>, args: MkdirArgs) -> anyhow::Result<()> {
    let target = RemotePath::parse(&args.target)?;
    let session = open(config, &target)?;
    let remote = session.remote.clone();
    session
        .runtime
        .block_on(async { ensure_folder(remote.as_ref(), &target).await.map(|_| ()) })
}

// ---------------------------------------------------------------------------
// put

/// Counts what a put will send, for the progress bar.
fn local_size(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| {
                        e.file_type()
                            .is_ok_and(|t| !t.is_symlink() || e.path().is_file())
                    })
                    .map(|e| local_size(&e.path()))
                    .sum()
            })
            .unwrap_or(0),
        _ => 0,
    }
}

/// A running content hash of the kind a service reports.
enum ContentHasher {
    Whirlpool(Box<Whirlpool>),
    Sha256(Sha256),
}

impl ContentHasher {
    fn new(kind: HashKind) -> Self {
        match kind {
            HashKind::Whirlpool => ContentHasher::Whirlpool(Box::default()),
            HashKind::Sha256 => ContentHasher::Sha256(Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            ContentHasher::Whirlpool(h) => h.update(data),
            ContentHasher::Sha256(h) => h.update(data),
        }
    }

    /// Lower-case hex, as `FileEntry::checksum` holds it.
    fn finish(self) -> String {
        match self {
            ContentHasher::Whirlpool(h) => hex::encode(h.finalize()),
            ContentHasher::Sha256(h) => hex::encode(h.finalize()),
        }
    }
}

fn hash_of_file(kind: HashKind, path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = ContentHasher::new(kind);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

/// Progress and failures of a transfer of many files.
struct Transfer {
    bar: ProgressBar,
    /// Bytes of the files already finished (or skipped).
    done: u64,
    failures: Vec<String>,
}

impl Transfer {
    fn new(total: u64) -> Self {
        Transfer {
            bar: progress_bar(total),
            done: 0,
            failures: Vec::new(),
        }
    }

    fn file_progress(&self) -> ProgressFn {
        let bar = self.bar.clone();
        let base = self.done;
        Arc::new(move |sent| bar.set_position(base + sent))
    }

    fn finish_file(&mut self, size: u64) {
        self.done += size;
        self.bar.set_position(self.done);
    }

    fn fail(&mut self, error: anyhow::Error) {
        let line = format!("{error:#}");
        self.bar.suspend(|| eprintln!("filehostfs: error: {line}"));
        self.failures.push(line);
    }

    /// Ok when every file went through. Each failure was printed when it
    /// happened; the error returned sums them up.
    fn result(self, root: &dyn std::fmt::Display) -> anyhow::Result<()> {
        self.bar.finish_and_clear();
        match self.failures.len() {
            0 => Ok(()),
            1 => Err(anyhow!(
                "{root}: 1 entry could not be transferred (see above)"
            )),
            n => Err(anyhow!(
                "{root}: {n} entries could not be transferred (see above)"
            )),
        }
    }

    /// Ends a single-file transfer with its own result.
    fn single(self, outcome: anyhow::Result<()>) -> anyhow::Result<()> {
        self.bar.finish_and_clear();
        outcome
    }
}

/// Uploads `local` as `name` into `folder`, replacing files of that name:
/// the new copy is uploaded first and the old ones removed after, so a
/// failed upload loses nothing. An identical file (same size and hash) is
/// left alone.
async fn put_file(
    remote: &dyn Remote,
    folder: &FolderId,
    listing: &Listing,
    name: &str,
    local: &Path,
    shown: &RemotePath,
    transfer: &mut Transfer,
) -> anyhow::Result<()> {
    if listing.folders.iter().any(|f| f.name == name) {
        bail!("{shown}: a folder of that name exists");
    }
    let size = std::fs::metadata(local)
        .with_context(|| local.display().to_string())?
        .len();
    let existing: Vec<&FileEntry> = listing.files.iter().filter(|f| f.name == name).collect();
    if let [old] = existing.as_slice() {
        if old.size == size {
            let same = match (&old.checksum, remote.capabilities().hash) {
                (Some(sum), Some(kind)) => {
                    let local_sum = tokio::task::block_in_place(|| hash_of_file(kind, local))
                        .with_context(|| local.display().to_string())?;
                    *sum == local_sum
                }
                _ => false,
            };
            if same {
                tracing::info!(path = %shown, "unchanged; not uploaded again");
                transfer.finish_file(size);
                return Ok(());
            }
        }
    }
    transfer.bar.set_message(shown.to_string());
    let uploaded = at(
        shown,
        remote
            .upload(
                folder,
                name,
                UploadSource::Path(local.to_path_buf()),
                Some(transfer.file_progress()),
            )
            .await,
    )?;
    transfer.finish_file(size);
    for old in existing {
        if old.id != uploaded.id {
            at(shown, remote.remove_file(&old.id).await)
                .context("uploaded, but the previous copy could not be removed")?;
        }
    }
    Ok(())
}

/// Puts the contents of local folder `dir` into remote folder `folder`.
fn put_tree<'a>(
    remote: &'a dyn Remote,
    dir: &'a Path,
    folder: FolderId,
    shown: RemotePath,
    transfer: &'a mut Transfer,
) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
    Box::pin(async move {
        let listing = at(&shown, remote.list_folder(&folder).await)?;
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| dir.display().to_string())?
            .collect::<Result<_, _>>()
            .with_context(|| dir.display().to_string())?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                transfer.fail(anyhow!("{}: the name is not valid UTF-8", path.display()));
                continue;
            };
            let target = shown.join(&name);
            let file_type = entry
                .file_type()
                .with_context(|| path.display().to_string())?;
            // Symlinks are followed to files only: following them to folders
            // could loop forever.
            let is_file = file_type.is_file() || (file_type.is_symlink() && path.is_file());
            if is_file {
                if let Err(e) =
                    put_file(remote, &folder, &listing, &name, &path, &target, transfer).await
                {
                    transfer.fail(e);
                }
            } else if file_type.is_dir() {
                let sub = match find_in(&listing, &name, &folder, &target.to_string()) {
                    Ok(Resolved::Folder { id, .. }) => id,
                    Ok(Resolved::File { .. }) => {
                        transfer.fail(anyhow!("{target}: a file of that name exists"));
                        continue;
                    }
                    Err(RemoteError::NotFound(_)) => {
                        match remote.create_folder(&folder, &name).await {
                            Ok(created) => created.id,
                            Err(e) => {
                                transfer.fail(anyhow!("{target}: {e}"));
                                continue;
                            }
                        }
                    }
                    Err(e) => {
                        transfer.fail(anyhow!("{target}: {e}"));
                        continue;
                    }
                };
                put_tree(remote, &path, sub, target, transfer).await?;
            } else {
                tracing::warn!(path = %path.display(), "not a regular file or folder; skipped");
            }
        }
        Ok(())
    })
}

pub fn run_put(config: Option<PathBuf>, args: PutArgs) -> anyhow::Result<()> {
    let target = RemotePath::parse(&args.target)?;
    let meta = std::fs::metadata(&args.local).with_context(|| args.local.display().to_string())?;
    let session = open(config, &target)?;
    let remote = session.remote.clone();
    let local = args.local;
    session.runtime.block_on(async move {
        let remote = remote.as_ref();
        let mut transfer = Transfer::new(local_size(&local));
        if meta.is_dir() {
            let folder = ensure_folder(remote, &target).await?;
            put_tree(remote, &local, folder, target.clone(), &mut transfer).await?;
            return transfer.result(&target);
        }
        let (folder, name, shown) = match resolve_path(remote, &target.path).await {
            Ok(Resolved::Folder { id, .. }) => {
                let name = local
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| anyhow!("{}: the name is not valid UTF-8", local.display()))?
                    .to_string();
                let shown = target.join(&name);
                (id, name, shown)
            }
            Ok(Resolved::File { parent, .. }) => {
                (parent, target.leaf().to_string(), target.clone())
            }
            Err(RemoteError::NotFound(_)) => {
                let parent = ensure_folder(remote, &target.parent()).await?;
                (parent, target.leaf().to_string(), target.clone())
            }
            Err(e) => bail!("{target}: {e}"),
        };
        let listing = at(&shown, remote.list_folder(&folder).await)?;
        let outcome = put_file(
            remote,
            &folder,
            &listing,
            &name,
            &local,
            &shown,
            &mut transfer,
        )
        .await;
        transfer.single(outcome)
    })
}

// ---------------------------------------------------------------------------
// get

/// Whether a name from the service can be used as one local path component.
fn safe_local_name(name: &str) -> bool {
    !(name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0'))
}

/// Downloads `file` to `dest` through a temporary file in the same folder,
/// checking the size and, when the service gives one, the content hash.
async fn get_file(
    remote: &dyn Remote,
    file: &FileEntry,
    dest: &Path,
    shown: &RemotePath,
    transfer: &mut Transfer,
) -> anyhow::Result<()> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        bail!("{}: no such local folder", dir.display());
    }
    let temp = tempfile::Builder::new()
        .prefix(".filehostfs-")
        .suffix(".part")
        .tempfile_in(dir)
        .with_context(|| dir.display().to_string())?;
    let mut out =
        tokio::fs::File::from_std(temp.reopen().with_context(|| dest.display().to_string())?);
    let mut stream = at(shown, remote.download_range(&file.id, 0, file.size).await)?;
    let mut hasher = match (remote.capabilities().hash, &file.checksum) {
        (Some(kind), Some(_)) => Some(ContentHasher::new(kind)),
        _ => None,
    };
    let mut received = 0u64;
    transfer.bar.set_message(shown.to_string());
    while let Some(chunk) = stream.next().await {
        let chunk = at(shown, chunk)?;
        if let Some(hasher) = hasher.as_mut() {
            hasher.update(&chunk);
        }
        out.write_all(&chunk)
            .await
            .with_context(|| dest.display().to_string())?;
        received += chunk.len() as u64;
        transfer.bar.set_position(transfer.done + received);
    }
    out.flush()
        .await
        .with_context(|| dest.display().to_string())?;
    out.sync_all()
        .await
        .with_context(|| dest.display().to_string())?;
    drop(out);
    if received != file.size {
        bail!("{shown}: received {received} bytes, expected {}", file.size);
    }
    if let Some(hasher) = hasher {
        if Some(&hasher.finish()) != file.checksum.as_ref() {
            bail!("{shown}: the downloaded bytes do not match the service's checksum");
        }
    }
    temp.persist(dest)
        .map_err(|e| anyhow!("{}: {}", dest.display(), e.error))?;
    transfer.finish_file(file.size);
    Ok(())
}

/// Gets the contents of remote folder `folder` into local folder `dir`
/// (created if needed). Names that cannot be saved side by side (duplicates,
/// a file and a folder of one name, names unusable locally) are reported and
/// skipped; everything else is still fetched.
fn get_tree<'a>(
    remote: &'a dyn Remote,
    folder: FolderId,
    dir: PathBuf,
    shown: RemotePath,
    transfer: &'a mut Transfer,
) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
    Box::pin(async move {
        std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        let listing = at(&shown, remote.list_folder(&folder).await)?;
        transfer
            .bar
            .inc_length(listing.files.iter().map(|f| f.size).sum());
        for file in &listing.files {
            let target = shown.join(&file.name);
            if !safe_local_name(&file.name) {
                transfer.fail(anyhow!(
                    "{target}: the name cannot be used for a local file"
                ));
                continue;
            }
            let twins: Vec<String> = listing
                .files
                .iter()
                .filter(|f| f.name == file.name)
                .map(|f| f.id.to_string())
                .collect();
            if twins.len() > 1 {
                if twins[0] == file.id.0 {
                    transfer.fail(anyhow!(
                        "{target}: {} files share this name ({}); none was downloaded",
                        twins.len(),
                        twins.join(", ")
                    ));
                }
                continue;
            }
            if listing.folders.iter().any(|f| f.name == file.name) {
                transfer.fail(anyhow!("{target}: a folder has the same name; skipped"));
                continue;
            }
            if let Err(e) = get_file(remote, file, &dir.join(&file.name), &target, transfer).await {
                transfer.fail(e);
            }
        }
        for sub in &listing.folders {
            let target = shown.join(&sub.name);
            if !safe_local_name(&sub.name) {
                transfer.fail(anyhow!(
                    "{target}: the name cannot be used for a local folder"
                ));
                continue;
            }
            if listing
                .folders
                .iter()
                .filter(|f| f.name == sub.name)
                .count()
                > 1
            {
                transfer.fail(anyhow!(
                    "{target}: several folders share this name; skipped"
                ));
                continue;
            }
            get_tree(
                remote,
                sub.id.clone(),
                dir.join(&sub.name),
                target,
                transfer,
            )
            .await?;
        }
        Ok(())
    })
}

pub fn run_get(config: Option<PathBuf>, args: GetArgs) -> anyhow::Result<()> {
    let source = RemotePath::parse(&args.source)?;
    let session = open(config, &source)?;
    let remote = session.remote.clone();
    let local = args.local;
    session.runtime.block_on(async move {
        let remote = remote.as_ref();
        match at(&source, resolve_path(remote, &source.path).await)? {
            Resolved::Folder { id, .. } => {
                if local.exists() && !local.is_dir() {
                    bail!("{}: exists and is not a folder", local.display());
                }
                let mut transfer = Transfer::new(0);
                get_tree(remote, id, local, source.clone(), &mut transfer).await?;
                transfer.result(&source)
            }
            Resolved::File { entry, .. } => {
                let dest = if local.is_dir() {
                    if !safe_local_name(&entry.name) {
                        bail!("{source}: the name cannot be used for a local file");
                    }
                    local.join(&entry.name)
                } else {
                    local
                };
                let mut transfer = Transfer::new(entry.size);
                let outcome = get_file(remote, &entry, &dest, &source, &mut transfer).await;
                transfer.single(outcome)
            }
        }
    })
}

// ---------------------------------------------------------------------------
// rm

fn remove_tree<'a>(
    remote: &'a dyn Remote,
    folder: FolderId,
    shown: RemotePath,
) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
    Box::pin(async move {
        let listing = at(&shown, remote.list_folder(&folder).await)?;
        for file in &listing.files {
            at(shown.join(&file.name), remote.remove_file(&file.id).await)?;
        }
        for sub in listing.folders {
            remove_tree(remote, sub.id, shown.join(&sub.name)).await?;
        }
        at(&shown, remote.remove_folder(&folder).await)
    })
}

pub fn run_rm(config: Option<PathBuf>, args: RmArgs) -> anyhow::Result<()> {
    let target = RemotePath::parse(&args.target)?;
    let session = open(config, &target)?;
    let remote = session.remote.clone();
    session.runtime.block_on(async move {
        let remote = remote.as_ref();
        match at(&target, resolve_path(remote, &target.path).await)? {
            Resolved::File { entry, .. } => at(&target, remote.remove_file(&entry.id).await),
            Resolved::Folder { parent: None, .. } => {
                bail!("{target}: refusing to remove the top folder")
            }
            Resolved::Folder { id, .. } if args.recursive => remove_tree(remote, id, target).await,
            Resolved::Folder { id, .. } => match remote.remove_folder(&id).await {
                Err(RemoteError::NotEmpty(_)) => {
                    bail!("{target}: the folder is not empty (use -r to remove it and its contents)")
                }
                other => at(&target, other),
            },
        }
    })
}

// ---------------------------------------------------------------------------
// mv

pub fn run_mv(config: Option<PathBuf>, args: MvArgs) -> anyhow::Result<()> {
    let source = RemotePath::parse(&args.source)?;
    let destination = RemotePath::parse(&args.destination)?;
    if source.remote != destination.remote {
        bail!("{destination}: mv works within one remote; use get and put to copy between remotes");
    }
    let session = open(config, &source)?;
    let remote = session.remote.clone();
    session
        .runtime
        .block_on(async move { move_entry(remote.as_ref(), &source, &destination).await })
}

async fn move_entry(
    remote: &dyn Remote,
    source: &RemotePath,
    destination: &RemotePath,
) -> anyhow::Result<()> {
    let resolved = at(source, resolve_path(remote, &source.path).await)?;
    let (src_parent, src_name) = match &resolved {
        Resolved::Folder { parent: None, .. } => bail!("{source}: the top folder cannot be moved"),
        Resolved::Folder {
            parent: Some(p),
            name,
            ..
        } => (p.clone(), name.clone()),
        Resolved::File { parent, entry } => (parent.clone(), entry.name.clone()),
    };
    if resolved.is_folder()
        && (destination.path == source.path
            || destination.path.starts_with(&format!("{}/", source.path)))
    {
        bail!("{destination}: a folder cannot be moved into itself");
    }
    let (dest_folder, new_name, shown) = match resolve_path(remote, &destination.path).await {
        Ok(Resolved::Folder { id, .. }) => (id, src_name.clone(), destination.join(&src_name)),
        Ok(Resolved::File { .. }) => bail!("{destination}: already exists"),
        Err(RemoteError::NotFound(_)) if !destination.is_root() => {
            let parent = at(
                destination.parent(),
                resolve_folder(remote, &destination.parent().path).await,
            )?;
            (parent, destination.leaf().to_string(), destination.clone())
        }
        Err(e) => bail!("{destination}: {e}"),
    };
    let dest_listing = at(&shown, remote.list_folder(&dest_folder).await)?;
    let taken = |name: &str| {
        dest_listing.folders.iter().any(|f| f.name == name)
            || dest_listing.files.iter().any(|f| f.name == name)
    };
    if dest_folder != src_parent && taken(&new_name) {
        bail!("{shown}: already exists");
    }
    match resolved {
        Resolved::File { entry, .. } => {
            if dest_folder == src_parent {
                if new_name != entry.name {
                    if taken(&new_name) {
                        bail!("{shown}: already exists");
                    }
                    at(&shown, remote.rename_file(&entry.id, &new_name).await)?;
                }
            } else {
                let rename = (new_name != entry.name).then_some(new_name.as_str());
                at(
                    &shown,
                    remote.move_file(&entry.id, &dest_folder, rename).await,
                )?;
            }
        }
        Resolved::Folder { id, .. } => {
            let renamed = new_name != src_name;
            if dest_folder == src_parent {
                if renamed {
                    if taken(&new_name) {
                        bail!("{shown}: already exists");
                    }
                    at(&shown, remote.rename_folder(&id, &new_name).await)?;
                }
            } else if renamed && taken(&src_name) {
                // The old name is taken at the destination: rename in place
                // first so the move never meets a clash.
                let src_listing = at(source, remote.list_folder(&src_parent).await)?;
                if src_listing.folders.iter().any(|f| f.name == new_name)
                    || src_listing.files.iter().any(|f| f.name == new_name)
                {
                    bail!("{shown}: cannot rename and move without a name clash");
                }
                at(source, remote.rename_folder(&id, &new_name).await)?;
                at(&shown, remote.move_folder(&id, &dest_folder).await)?;
            } else {
                at(&shown, remote.move_folder(&id, &dest_folder).await)?;
                if renamed {
                    at(&shown, remote.rename_folder(&id, &new_name).await)?;
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// link, about

pub fn run_link(config: Option<PathBuf>, args: LinkArgs) -> anyhow::Result<()> {
    let target = RemotePath::parse(&args.target)?;
    let session = open(config, &target)?;
    let remote = session.remote.clone();
    let url = session.runtime.block_on(async move {
        match at(&target, resolve_path(remote.as_ref(), &target.path).await)? {
            Resolved::File { entry, .. } => {
                Ok(at(&target, remote.direct_link(&entry.id).await)?.url)
            }
            Resolved::Folder { .. } => Err(anyhow!("{target}: is a folder; links are for files")),
        }
    })?;
    println!("{url}");
    Ok(())
}

pub fn run_about(config: Option<PathBuf>, args: AboutArgs) -> anyhow::Result<()> {
    let target = RemotePath::parse(&args.target)?;
    let session = open(config, &target)?;
    let remote = session.remote.clone();
    let root = RemotePath {
        remote: target.remote.clone(),
        path: String::new(),
    };
    let info = session
        .runtime
        .block_on(async move { at(&root, remote.about().await) })?;
    println!("Used:  {} ({} bytes)", human_size(info.used), info.used);
    match info.total {
        Some(total) => {
            println!("Total: {} ({total} bytes)", human_size(total));
            let free = total.saturating_sub(info.used);
            println!("Free:  {} ({free} bytes)", human_size(free));
        }
        None => println!("Total: unknown"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_for_people() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn unsafe_names_are_not_used_locally() {
        assert!(safe_local_name("a b$"));
        assert!(!safe_local_name(".."));
        assert!(!safe_local_name("../etc"));
        assert!(!safe_local_name(""));
    }
}
