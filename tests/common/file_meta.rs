//! What the metadata tests set and read on files: a fixed timestamp as
//! `touch -d` spells it, the file's mode and mtime, `user.*` attributes.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 2001-02-03 04:05:06.123456789 UTC, as `touch -d` spells it.
pub const STAMP: &str = "2001-02-03 04:05:06.123456789 +0000";
pub const STAMP_NS: u64 = 981_173_106_123_456_789;

/// [`STAMP`] as a time.
pub fn stamp() -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(STAMP_NS)
}

/// `touch -d STAMP path`, which must succeed.
pub fn touch_d(path: &Path) {
    let status = Command::new("touch")
        .arg("-d")
        .arg(STAMP)
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "touch -d {}", path.display());
}

/// `setxattr(2)` of `name` on `path`.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let c_name = CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings and a buffer of the length given.
    let rc = unsafe {
        libc::setxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The permission bits `stat` shows.
pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The mtime `stat` shows.
pub fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// A cache dir and a state dir kept across remounts: one machine's mount
/// of the emulator's account, as the metadata tests remount it.
pub struct Dirs {
    pub cache: tempfile::TempDir,
    pub state: tempfile::TempDir,
}

impl Dirs {
    pub fn new() -> Dirs {
        Dirs {
            cache: tempfile::tempdir().unwrap(),
            state: tempfile::tempdir().unwrap(),
        }
    }

    /// A write mount with these dirs (uploads at once, listings never
    /// trusted), plus `extra` arguments.
    pub fn mount(&self, emu: &super::Emulator, extra: &[&str]) -> super::mount::Mount {
        self.mount_with_cache(emu, self.cache.path(), extra)
    }

    /// [`Dirs::mount`] with another cache dir.
    pub fn mount_with_cache(
        &self,
        emu: &super::Emulator,
        cache: &Path,
        extra: &[&str],
    ) -> super::mount::Mount {
        let state = self.state.path().to_str().unwrap().to_string();
        let mut args = vec![
            "--state-dir",
            &state,
            "--write-back",
            "0",
            "--dir-cache-time",
            "0",
        ];
        args.extend_from_slice(extra);
        super::write_mount::WriteMount::start(emu, cache, &args)
    }
}
