//! Writable mounts for the write-path tests: `filehostfs mount` as a child
//! process with a cache dir the test keeps across remounts, a config whose
//! pacer is fast (the harness's emulator has flood control off), and a view
//! of the remote through the library to check what really arrived.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use filehostfs::remote::{FileEntry, FolderId, Listing, Remote};
use futures::StreamExt;

use super::mount::{mount_command, mount_dir, open_remote, Mount, MountTimes};
use super::Emulator;

/// Mounting, unmounting and draining get this long (the machine is loaded).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(180);

const REMOTE: &str = "emu";

/// A config for account `key` with a fast pacer and short retry waits.
pub fn write_fast_config(emu: &Emulator, key: &str, dir: &Path) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "[{REMOTE}]\ntype = \"1fichier\"\napi_url = \"{}\"\nkey = \"{key}\"\n\
         rate = 200.0\nburst = 50\nretries = 8\nretry_backoff = 0.05\nflood_wait = 0.2\n",
        emu.fichier_url(),
    );
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Writable mounts: a [`Mount`] of an account with `--cache-dir`, the fast
/// config above and the longer time limits uploads need.
pub struct WriteMount;

impl WriteMount {
    /// Mounts the emulator's first account with `--cache-dir cache_dir`.
    pub fn start(emu: &Emulator, cache_dir: &Path, args: &[&str]) -> Mount {
        WriteMount::start_for_key(emu, &emu.key(), cache_dir, args)
    }

    pub fn start_for_key(emu: &Emulator, key: &str, cache_dir: &Path, args: &[&str]) -> Mount {
        let (dir, mountpoint) = mount_dir();
        let config = write_fast_config(emu, key, dir.path());
        let cache_dir = cache_dir.to_str().expect("a UTF-8 cache dir");
        let args: Vec<&str> = ["--cache-dir", cache_dir]
            .iter()
            .chain(args)
            .copied()
            .collect();
        let command_line = mount_command(&config, &format!("{REMOTE}:"), &mountpoint, &args);
        // A longer grace than a read-only mount: the process may be finishing uploads.
        let times = MountTimes {
            timeout: WRITE_TIMEOUT,
            grace: Duration::from_secs(20),
        };
        Mount::launch_with(dir, mountpoint, command_line, times)
    }
}

/// The account as the service sees it, through the library's Remote layer.
pub struct RemoteView {
    pub runtime: tokio::runtime::Runtime,
    pub remote: Arc<dyn Remote>,
    _dir: tempfile::TempDir,
}

impl RemoteView {
    pub fn new(emu: &Emulator, key: &str) -> RemoteView {
        let dir = tempfile::tempdir().unwrap();
        let (runtime, remote) = open_remote(&write_fast_config(emu, key, dir.path()), REMOTE);
        RemoteView {
            runtime,
            remote,
            _dir: dir,
        }
    }

    /// The folder at `path` ("" = root), which must exist.
    pub fn folder(&self, path: &str) -> FolderId {
        self.runtime.block_on(async {
            let mut folder = self.remote.root();
            for part in path.split('/').filter(|p| !p.is_empty()) {
                let listing = self.remote.list_folder(&folder).await.unwrap();
                folder = listing
                    .folders
                    .into_iter()
                    .find(|f| f.name == part)
                    .unwrap_or_else(|| panic!("no folder {part:?} in {path:?}"))
                    .id;
            }
            folder
        })
    }

    pub fn listing(&self, path: &str) -> Listing {
        let folder = self.folder(path);
        self.runtime
            .block_on(self.remote.list_folder(&folder))
            .unwrap()
    }

    /// Files called `name` in folder `path`.
    /// Names of the files in the folder at `path`, in listing order.
    pub fn file_names(&self, path: &str) -> Vec<String> {
        self.listing(path)
            .files
            .into_iter()
            .map(|f| f.name)
            .collect()
    }

    pub fn files_named(&self, path: &str, name: &str) -> Vec<FileEntry> {
        self.listing(path)
            .files
            .into_iter()
            .filter(|f| f.name == name)
            .collect()
    }

    pub fn content(&self, file: &FileEntry) -> Vec<u8> {
        self.runtime.block_on(async {
            let mut stream = self
                .remote
                .download_range(&file.id, 0, file.size)
                .await
                .unwrap();
            let mut bytes = Vec::new();
            while let Some(chunk) = stream.next().await {
                bytes.extend_from_slice(&chunk.unwrap());
            }
            bytes
        })
    }

    pub fn upload(&self, path: &str, name: &str, data: &[u8]) -> FileEntry {
        let folder = self.folder(path);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, data).unwrap();
        self.runtime
            .block_on(self.remote.upload(
                &folder,
                name,
                filehostfs::remote::UploadSource::Path(file),
                None,
            ))
            .unwrap()
    }
}

/// Waits (bounded) until `condition` holds.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WRITE_TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
