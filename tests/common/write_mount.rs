//! Writable mounts for the write-path tests: `filehostfs mount` as a child
//! process with a cache dir the test keeps across remounts, a config whose
//! pacer is fast (the harness's emulator has flood control off), and a view
//! of the remote through the library to check what really arrived.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use filehostfs::config::Config;
use filehostfs::remote::{FileEntry, FolderId, Listing, Remote};
use futures::StreamExt;

use super::mount::{is_mounted, release};
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

/// A running writable mount. Dropping it unmounts (`fusermount3 -u`, then
/// `-uz`) and reaps the process, even when the test panicked.
pub struct WriteMount {
    child: Option<Child>,
    mountpoint: PathBuf,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl WriteMount {
    /// Mounts the emulator's first account with `--cache-dir cache_dir`.
    pub fn start(emu: &Emulator, cache_dir: &Path, args: &[&str]) -> WriteMount {
        WriteMount::start_for_key(emu, &emu.key(), cache_dir, args)
    }

    pub fn start_for_key(emu: &Emulator, key: &str, cache_dir: &Path, args: &[&str]) -> WriteMount {
        let dir = tempfile::Builder::new()
            .prefix("filehostfs-wmount-")
            .tempdir()
            .unwrap();
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint).unwrap();
        let config = write_fast_config(emu, key, dir.path());
        let log_path = dir.path().join("mount.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_filehostfs"))
            .arg("--config")
            .arg(&config)
            .arg("mount")
            .arg(format!("{REMOTE}:"))
            .arg(&mountpoint)
            .arg("--cache-dir")
            .arg(cache_dir)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "filehostfs=info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting filehostfs mount");
        let mut mount = WriteMount {
            child: Some(child),
            mountpoint,
            log_path,
            _dir: dir,
        };
        let deadline = Instant::now() + WRITE_TIMEOUT;
        while !is_mounted(&mount.mountpoint) {
            if let Some(status) = mount
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "mount exited ({status}) before mounting; log:\n{}",
                    mount.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "mount did not appear; log:\n{}",
                mount.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        mount
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("mount process").id()
    }

    /// Unmounts, waits for the process (which first drains its upload
    /// queue) and returns its log.
    pub fn unmount(mut self) -> String {
        let status = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.mountpoint)
            .status()
            .expect("running fusermount3");
        assert!(
            status.success(),
            "fusermount3 -u failed; log:\n{}",
            self.log()
        );
        let mut child = self.child.take().expect("mount process");
        let deadline = Instant::now() + WRITE_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the mount process did not exit; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "mount exited with {status}; log:\n{}",
            self.log()
        );
        assert!(!is_mounted(&self.mountpoint));
        self.log()
    }

    /// `kill -9` of the mount process; the dead mount is then detached.
    pub fn kill9(mut self) -> String {
        let mut child = self.child.take().expect("mount process");
        child.kill().expect("kill -9 of the mount");
        let _ = child.wait();
        let _ = Command::new("fusermount3")
            .arg("-uz")
            .arg(&self.mountpoint)
            .stderr(Stdio::null())
            .status();
        self.log()
    }
}

impl Drop for WriteMount {
    fn drop(&mut self) {
        // Longer grace than a read-only mount: the process may be finishing uploads.
        release(&self.mountpoint, self.child.take(), Duration::from_secs(20));
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
        let config = write_fast_config(emu, key, dir.path());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let remote = runtime.block_on(async {
            Config::load(Some(&config))
                .unwrap()
                .open_remote(REMOTE)
                .unwrap()
        });
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
