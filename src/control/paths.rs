//! Where a mount's control socket and its record live, so that
//! `filehostfs status MOUNTPOINT` finds the server of a mount.
//!
//! Everything sits in `$XDG_RUNTIME_DIR/filehostfs/` (mode 0700): per mount,
//! `mount-<hash>.sock` and `mount-<hash>.json`, where `<hash>` is derived
//! from the mountpoint's canonical path.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The runtime folder holding control sockets and records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlPaths {
    dir: PathBuf,
}

/// What a running mount's control server left for clients to find it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    pub mountpoint: PathBuf,
    pub pid: u32,
    /// The Unix socket, when serving on one.
    pub socket: Option<PathBuf>,
    /// `IP:PORT`, when serving on TCP.
    pub addr: Option<String>,
    /// The token for `addr`.
    pub token_file: Option<PathBuf>,
}

impl ControlPaths {
    /// `$XDG_RUNTIME_DIR/filehostfs`, or `/tmp/filehostfs-<uid>` when the
    /// session has no runtime folder.
    pub fn from_env() -> Self {
        let dir = match dirs::runtime_dir() {
            Some(runtime) => runtime.join("filehostfs"),
            None => std::env::temp_dir().join(format!("filehostfs-{}", current_uid())),
        };
        ControlPaths { dir }
    }

    /// Paths under `runtime_dir/filehostfs` (tests use a temporary folder).
    pub fn under(runtime_dir: &Path) -> Self {
        ControlPaths {
            dir: runtime_dir.join("filehostfs"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the folder private to this user, or checks that an existing
    /// one is: owned by us and closed to others.
    pub fn ensure_private_dir(&self) -> io::Result<()> {
        match fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
        {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let meta = fs::symlink_metadata(&self.dir)?;
        if !meta.is_dir() || meta.uid() != current_uid() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is not a folder owned by this user", self.dir.display()),
            ));
        }
        if meta.mode() & 0o077 != 0 {
            fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    /// The stem shared by a mount's socket and record.
    fn stem(mountpoint: &Path) -> String {
        let canonical = canonical_mountpoint(mountpoint);
        let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
        format!("mount-{}", hex::encode(&digest[..8]))
    }

    pub fn socket_for(&self, mountpoint: &Path) -> PathBuf {
        self.dir.join(format!("{}.sock", Self::stem(mountpoint)))
    }

    pub fn record_for(&self, mountpoint: &Path) -> PathBuf {
        self.dir.join(format!("{}.json", Self::stem(mountpoint)))
    }

    /// Where a generated token goes when `--rc-token-file` is not given.
    pub fn default_token_file(&self, mountpoint: &Path) -> PathBuf {
        self.dir.join(format!("{}.token", Self::stem(mountpoint)))
    }

    /// Writes a record readable only by this user.
    pub fn write_record(&self, record: &MountRecord) -> io::Result<PathBuf> {
        self.ensure_private_dir()?;
        let path = self.record_for(&record.mountpoint);
        let tmp = path.with_extension("json.tmp");
        let _ = fs::remove_file(&tmp);
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        serde_json::to_writer_pretty(&file, record)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// The record of the mount at `mountpoint`, if a server left one.
    pub fn read_record(&self, mountpoint: &Path) -> io::Result<Option<MountRecord>> {
        read_record_file(&self.record_for(mountpoint))
    }

    /// Records of mounts whose process still runs (stale ones are skipped).
    pub fn live_records(&self) -> io::Result<Vec<MountRecord>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut records = Vec::new();
        for entry in entries {
            let path = entry?.path();
            let is_record = path.extension().is_some_and(|ext| ext == "json")
                && path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("mount-"));
            if !is_record {
                continue;
            }
            if let Ok(Some(record)) = read_record_file(&path) {
                if process_alive(record.pid) {
                    records.push(record);
                }
            }
        }
        records.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
        Ok(records)
    }
}

fn read_record_file(path: &Path) -> io::Result<Option<MountRecord>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The mountpoint as both server and client name it: canonical when it
/// resolves, else made absolute as given.
pub(super) fn canonical_mountpoint(mountpoint: &Path) -> PathBuf {
    fs::canonicalize(mountpoint)
        .or_else(|_| std::path::absolute(mountpoint))
        .unwrap_or_else(|_| mountpoint.to_path_buf())
}

fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
