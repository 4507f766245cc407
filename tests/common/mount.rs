//! Real FUSE mounts for tests: `filehostfs mount` run as a child process
//! against an [`Emulator`], plus seeding through the library's Remote layer.
//!
//! ```ignore
//! let emu = Emulator::start();
//! let seed = Seeder::new(&emu);
//! seed.upload("docs", "a.txt", b"hello");
//! let mount = Mount::start(&emu, "", &["--block-size", "64K"]);
//! assert_eq!(std::fs::read(mount.path().join("docs/a.txt")).unwrap(), b"hello");
//! mount.unmount();                 // or let Drop unmount (also on panic)
//! ```

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use filehostfs::config::Config;
use filehostfs::remote::{FileEntry, FolderId, Remote, UploadSource};

use super::Emulator;

/// How long a mount gets to appear or go away (the machine is loaded).
const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);

/// The name the test config gives the emulator's first 1fichier account.
pub const REMOTE_NAME: &str = "emu";

/// Writes a config file naming the emulator's first account `emu`, whose
/// state dir (saved listings) is `dir/state`: each mount of a test starts
/// without what another mount saved, unless it shares the config.
pub fn write_config(emu: &Emulator, dir: &Path) -> PathBuf {
    write_config_with(emu, dir, "")
}

/// [`write_config`] with `extra` lines for the account (e.g.
/// `max_streams = 2\n`). An emulator over TLS is trusted by its certificate.
pub fn write_config_with(emu: &Emulator, dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let trust = emu
        .tls_cert()
        .map(|cert| format!("ca_cert = \"{}\"\n", cert.display()))
        .unwrap_or_default();
    // The emulator runs without flood control in tests, so the client's
    // pacing (2 requests/s by default, as 1fichier asks) is lifted too.
    let text = format!(
        "[{REMOTE_NAME}]\ntype = \"1fichier\"\napi_url = \"{}\"\nkey = \"{}\"\nrate = 1000.0\nburst = 100\nstate_dir = \"{}\"\n{trust}{extra}",
        emu.fichier_url(),
        emu.key(),
        dir.join("state").display()
    );
    std::fs::write(&path, text).unwrap();
    // A config holding a key must be private.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The value of extended attribute `name` of `path` (up to 4 KiB).
pub fn getxattr(path: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let c_name = std::ffi::CString::new(name).unwrap();
    let mut buffer = vec![0u8; 4096];
    // SAFETY: valid NUL-terminated strings and a buffer of the length given.
    let n = unsafe {
        libc::getxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buffer.truncate(n as usize);
    Ok(buffer)
}

/// Whether `path` is a mount point now (from /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let wanted = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    table.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|point| Path::new(&unescape_mountinfo(point)) == wanted)
    })
}

/// Mount points in mountinfo escape space, tab, newline and backslash as octal.
fn unescape_mountinfo(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Ok(code) = u8::from_str_radix(&text[i + 1..i + 4], 8) {
                out.push(code);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A running `filehostfs mount`. Dropping it unmounts (`fusermount3 -u`,
/// falling back to a lazy `-uz`) and reaps the process, even when the test
/// panicked.
pub struct Mount {
    child: Option<Child>,
    mountpoint: PathBuf,
    log_path: PathBuf,
    /// Owns the mount point, the config and the log.
    dir: tempfile::TempDir,
    /// How long mounting and unmounting may take.
    timeout: Duration,
    /// How long the process gets to exit after an unmount on Drop.
    grace: Duration,
}

/// How long a mount may take to appear and to go away, and how long its
/// process gets to exit when a guard unmounts it.
#[derive(Clone, Copy)]
pub struct MountTimes {
    pub timeout: Duration,
    pub grace: Duration,
}

impl Default for MountTimes {
    fn default() -> Self {
        MountTimes {
            timeout: MOUNT_TIMEOUT,
            grace: Duration::from_secs(10),
        }
    }
}

/// The environment that keeps a mount process's default dirs under `dir`:
/// durable per-account state (the metadata store, saved listings) and the
/// default caches (blocks, write-back staging) go with the test's files,
/// never into the user's own dirs nor another test's. Tests that remount
/// onto the same state or cache pass `--state-dir`, `--cache-dir` or these
/// variables themselves.
pub fn private_dirs(dir: &Path) -> [(&'static str, PathBuf); 2] {
    [
        ("XDG_STATE_HOME", dir.join("state")),
        ("XDG_CACHE_HOME", dir.join("cache")),
    ]
}

/// A fresh folder for one mount, holding its mount point (`mnt`), config,
/// log and default state and cache dirs.
pub fn mount_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("filehostfs-mount-")
        .tempdir()
        .unwrap();
    let mountpoint = dir.path().join("mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    (dir, mountpoint)
}

/// `--config CONFIG mount SPEC MOUNTPOINT ARGS...`.
pub fn mount_command(
    config: &Path,
    spec: &str,
    mountpoint: &Path,
    args: &[&str],
) -> Vec<std::ffi::OsString> {
    let mut command_line: Vec<std::ffi::OsString> = vec![
        "--config".into(),
        config.into(),
        "mount".into(),
        spec.into(),
        mountpoint.into(),
    ];
    command_line.extend(args.iter().map(Into::into));
    command_line
}

impl Mount {
    /// Mounts `emu:<remote_path>` with extra `mount` arguments and waits
    /// until the mount is in place.
    pub fn start(emu: &Emulator, remote_path: &str, args: &[&str]) -> Mount {
        Mount::start_with_env(emu, remote_path, args, &[])
    }

    /// [`Mount::start`] with extra environment variables for the mount
    /// process (e.g. `XDG_CACHE_HOME`, to see where default paths lead).
    pub fn start_with_env(
        emu: &Emulator,
        remote_path: &str,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Mount {
        let (dir, mountpoint) = mount_dir();
        let config = write_config(emu, dir.path());
        let spec = format!("{REMOTE_NAME}:{remote_path}");
        let command_line = mount_command(&config, &spec, &mountpoint, args);
        Mount::launch_env(dir, mountpoint, command_line, MountTimes::default(), env)
    }

    /// Mounts `spec` (`REMOTE:[path]`) of the config file `config`, for
    /// remotes of any service.
    pub fn start_remote(config: &Path, spec: &str, args: &[&str]) -> Mount {
        let (dir, mountpoint) = mount_dir();
        let command_line = mount_command(config, spec, &mountpoint, args);
        Mount::launch(dir, mountpoint, command_line)
    }

    /// Runs `filehostfs <command_line>` (any command that mounts on
    /// `mountpoint`, e.g. `demo`) and waits until the mount is in place.
    pub fn launch(
        dir: tempfile::TempDir,
        mountpoint: PathBuf,
        command_line: Vec<std::ffi::OsString>,
    ) -> Mount {
        Mount::launch_with(dir, mountpoint, command_line, MountTimes::default())
    }

    /// [`Mount::launch`] with other time limits.
    pub fn launch_with(
        dir: tempfile::TempDir,
        mountpoint: PathBuf,
        command_line: Vec<std::ffi::OsString>,
        times: MountTimes,
    ) -> Mount {
        Mount::launch_env(dir, mountpoint, command_line, times, &[])
    }

    /// [`Mount::launch_with`] with extra environment variables.
    pub fn launch_env(
        dir: tempfile::TempDir,
        mountpoint: PathBuf,
        command_line: Vec<std::ffi::OsString>,
        times: MountTimes,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Mount {
        let log_path = dir.path().join(format!(
            "mount-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_filehostfs"))
            .args(command_line)
            .envs(private_dirs(dir.path()))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "filehostfs=info".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting filehostfs");
        let mut mount = Mount {
            child: Some(child),
            mountpoint,
            log_path,
            dir,
            timeout: times.timeout,
            grace: times.grace,
        };
        mount.wait_until_mounted();
        mount
    }

    fn wait_until_mounted(&mut self) {
        let deadline = Instant::now() + self.timeout;
        while Instant::now() < deadline {
            if is_mounted(&self.mountpoint) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "filehostfs mount exited ({status}) before mounting; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the mount did not appear in time; log:\n{}", self.log());
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("mount process").id()
    }

    /// The mount process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SHA-256 of a file read through the mount; a read error fails the
    /// test with the mount's log.
    pub fn sha256(&self, relative: &str) -> String {
        let path = self.mountpoint.join(relative);
        match try_sha256_of_file(&path) {
            Ok(sha) => sha,
            Err(error) => panic!("reading {relative}: {error}; mount log:\n{}", self.log()),
        }
    }

    /// Scratch space removed with the mount.
    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Unmounts with `fusermount3 -u`, checks that the process exits
    /// successfully (a writable mount first drains its upload queue) and
    /// nothing stays mounted, and returns the process's log.
    pub fn unmount(mut self) -> String {
        // Right after mounting, the mount's own start-up thread stats the
        // mountpoint (readiness, kernel read-ahead raise); an unmount that
        // lands during that stat gets EBUSY, as it would for a user. Retry
        // a bounded number of times, like `umount` scripts do.
        let mut status = None;
        for _ in 0..20 {
            let tried = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mountpoint)
                .status()
                .expect("running fusermount3");
            if tried.success() {
                status = Some(tried);
                break;
            }
            status = Some(tried);
            std::thread::sleep(Duration::from_millis(100));
        }
        let status = status.expect("at least one try");
        assert!(
            status.success(),
            "fusermount3 -u failed; log:\n{}",
            self.log()
        );
        let status = self
            .wait_for_exit()
            .expect("the mount process did not exit");
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

    /// Waits for the mount process to end on its own (after a signal or an
    /// external unmount).
    pub fn wait_for_exit(&mut self) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + self.timeout;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Sends a signal to the mount process.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill() with a PID this guard started and still owns.
        let result = unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        assert_eq!(result, 0, "kill failed");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        release(&self.mountpoint, self.child.take(), self.grace);
    }
}

/// Unmounts `mountpoint` if it is still mounted (lazily when a plain unmount
/// is refused), then gives the mount process `grace` to exit before killing it.
/// Guards call this on Drop so a failing test never leaves a mount behind.
pub fn release(mountpoint: &Path, child: Option<Child>, grace: Duration) {
    if is_mounted(mountpoint) {
        let unmounted = Command::new("fusermount3")
            .arg("-u")
            .arg(mountpoint)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(mountpoint)
                .stderr(Stdio::null())
                .status();
        }
    }
    if let Some(mut child) = child {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Remote `name` of the config file `config`, opened through the library
/// (the code the mount uses), with a runtime to drive it from a test.
pub fn open_remote(config: &Path, name: &str) -> (tokio::runtime::Runtime, Arc<dyn Remote>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let remote = runtime.block_on(async {
        Config::load(Some(config))
            .unwrap()
            .open_remote(name)
            .unwrap()
    });
    (runtime, remote)
}

/// Puts folders and files on the emulator through the library's Remote
/// layer (the same code the mount uses to read them back).
pub struct Seeder {
    pub runtime: tokio::runtime::Runtime,
    pub remote: Arc<dyn Remote>,
    _dir: tempfile::TempDir,
}

impl Seeder {
    pub fn new(emu: &Emulator) -> Seeder {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(emu, dir.path());
        Seeder::with_config(&config, REMOTE_NAME, dir)
    }

    /// A seeder of the remote `name` of the config file `config`.
    pub fn from_config(config: &Path, name: &str) -> Seeder {
        Seeder::with_config(config, name, tempfile::tempdir().unwrap())
    }

    fn with_config(config: &Path, name: &str, dir: tempfile::TempDir) -> Seeder {
        let (runtime, remote) = open_remote(config, name);
        Seeder {
            runtime,
            remote,
            _dir: dir,
        }
    }

    /// The folder at `path` ("" = root), creating what is missing.
    pub fn folder(&self, path: &str) -> FolderId {
        self.runtime.block_on(async {
            let mut folder = self.remote.root();
            for part in path.split('/').filter(|p| !p.is_empty()) {
                let listing = self.remote.list_folder(&folder).await.unwrap();
                folder = match listing.folders.iter().find(|f| f.name == part) {
                    Some(existing) => existing.id.clone(),
                    None => self.remote.create_folder(&folder, part).await.unwrap().id,
                };
            }
            folder
        })
    }

    /// Uploads `data` as `name` into the folder at `folder_path`.
    pub fn upload(&self, folder_path: &str, name: &str, data: &[u8]) -> FileEntry {
        let folder = self.folder(folder_path);
        self.upload_into(&folder, name, data)
    }

    pub fn upload_into(&self, folder: &FolderId, name: &str, data: &[u8]) -> FileEntry {
        let data = data.to_vec();
        self.runtime.block_on(async {
            let size = data.len() as u64;
            let reader: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>> =
                Box::pin(std::io::Cursor::new(data));
            self.remote
                .upload(folder, name, UploadSource::Reader { reader, size }, None)
                .await
                .unwrap_or_else(|e| panic!("uploading {name}: {e}"))
        })
    }

    /// Uploads many small files concurrently (`parallel` at a time).
    pub fn upload_many(&self, folder: &FolderId, files: Vec<(String, Vec<u8>)>, parallel: usize) {
        use futures::StreamExt;
        self.runtime.block_on(async {
            futures::stream::iter(files)
                .map(|(name, data)| {
                    let remote = self.remote.clone();
                    let folder = folder.clone();
                    async move {
                        let size = data.len() as u64;
                        let reader: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>> =
                            Box::pin(std::io::Cursor::new(data));
                        remote
                            .upload(&folder, &name, UploadSource::Reader { reader, size }, None)
                            .await
                            .unwrap_or_else(|e| panic!("uploading {name}: {e}"));
                    }
                })
                .buffer_unordered(parallel)
                .collect::<Vec<()>>()
                .await;
        });
    }
}

/// Uploads many small files quickly: the upload API takes up to 500 files
/// in one multipart request (1fichier's documented limit).
pub fn upload_in_batches(emu: &Emulator, folder: &FolderId, files: &[(String, Vec<u8>)]) {
    use super::fichier_client::FichierClient;
    use reqwest::blocking::multipart;
    let client = FichierClient::new(emu);
    for batch in files.chunks(500) {
        let mut form = multipart::Form::new().text("did", folder.0.clone());
        for (name, data) in batch {
            form = form.part(
                "file[]",
                multipart::Part::bytes(data.clone())
                    .file_name(name.clone())
                    .mime_str("application/octet-stream")
                    .unwrap(),
            );
        }
        let (host, id, response) = client.upload_raw(form);
        assert_eq!(response.status().as_u16(), 302, "batch upload");
        let end = client.end(&host, &id);
        assert_eq!(
            end["links"].as_array().map(Vec::len),
            Some(batch.len()),
            "{end}"
        );
    }
}

/// Deterministic pseudo-random bytes (a fixed seed per test keeps failures
/// reproducible).
pub fn test_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// SHA-256 of a file read through the mount in 1 MiB reads.
pub fn sha256_of_file(path: &Path) -> String {
    try_sha256_of_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn try_sha256_of_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
