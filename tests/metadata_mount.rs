//! Metadata that sticks (mtime, mode, owner, `user.*` attributes), through
//! real mounts of `filehostfs serve`: it survives upload completion,
//! unmount, remount and `kill -9`, and never sticks to other content.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use common::file_meta::{mode, mtime, set_xattr, stamp, touch_d, Dirs};
use common::write_mount::{wait_until, RemoteView};
use common::Emulator;

#[test]
fn times_modes_and_attributes_survive_upload_and_remount() {
    let emu = Emulator::start();
    let remote = RemoteView::new(&emu, &emu.key());
    remote.upload("", "seeded.txt", b"on the service already");
    let dirs = Dirs::new();

    let mount = dirs.mount(&emu, &[]);
    let seeded = mount.path().join("seeded.txt");
    let written = mount.path().join("written.txt");
    fs::write(&written, b"written through the mount").unwrap();
    for path in [&seeded, &written] {
        touch_d(path);
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
        set_xattr(path, "user.note", b"kept").unwrap();
        assert_eq!(mtime(path), stamp(), "{}", path.display());
        assert_eq!(mode(path), 0o600);
    }
    // Our own attributes stay read-only facts; other namespaces are refused.
    let refused = set_xattr(&seeded, "user.filehostfs.id", b"x").unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::ENOTSUP));
    let refused = set_xattr(&seeded, "trusted.x", b"x").unwrap_err();
    assert!(
        matches!(
            refused.raw_os_error(),
            Some(libc::ENOTSUP) | Some(libc::EPERM)
        ),
        "{refused}"
    );

    wait_until("the written file uploaded", || {
        !remote.files_named("", "written.txt").is_empty()
    });
    wait_until("the mount to show the uploaded file", || {
        common::mount::getxattr(&written, "user.filehostfs.pending").is_err()
    });
    assert_eq!(mtime(&written), stamp(), "after the upload");
    assert_eq!(mode(&written), 0o600, "after the upload");
    mount.unmount();

    let mount = dirs.mount(&emu, &[]);
    for name in ["seeded.txt", "written.txt"] {
        let path = mount.path().join(name);
        assert_eq!(mtime(&path), stamp(), "{name} after remount");
        assert_eq!(mode(&path), 0o600, "{name} after remount");
        assert_eq!(
            common::mount::getxattr(&path, "user.note").unwrap(),
            b"kept",
            "{name}"
        );
    }
    mount.unmount();
}

#[test]
fn metadata_of_a_file_replaced_elsewhere_is_not_applied_to_the_new_content() {
    let emu = Emulator::start();
    let remote = RemoteView::new(&emu, &emu.key());
    let old = remote.upload("", "doc.txt", b"first version");
    let dirs = Dirs::new();
    let mount = dirs.mount(&emu, &[]);
    let path = mount.path().join("doc.txt");
    touch_d(&path);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(mtime(&path), stamp());

    // Another client replaces the file: new content under the same name.
    remote
        .runtime
        .block_on(remote.remote.remove_file(&old.id))
        .unwrap();
    let new = remote.upload("", "doc.txt", b"second version, longer");
    wait_until("the mount to list the new content", || {
        fs::metadata(&path).map(|m| m.len()).ok() == Some(new.size)
    });
    assert_ne!(mtime(&path), stamp(), "the old record must not stick");
    assert_eq!(mode(&path), 0o644, "the default mode shows again");
    mount.unmount();
}

#[test]
fn kill_9_right_after_touch_loses_nothing() {
    let emu = Emulator::start();
    let remote = RemoteView::new(&emu, &emu.key());
    remote.upload("", "a.txt", b"aaa");
    let dirs = Dirs::new();
    let mount = dirs.mount(&emu, &[]);
    let remote_file = mount.path().join("a.txt");
    let pending = mount.path().join("b.txt");
    fs::write(&pending, b"bbb").unwrap();
    touch_d(&remote_file);
    touch_d(&pending);
    fs::set_permissions(&remote_file, fs::Permissions::from_mode(0o640)).unwrap();
    mount.kill9();

    let mount = dirs.mount(&emu, &[]);
    assert_eq!(mtime(&mount.path().join("a.txt")), stamp());
    assert_eq!(mode(&mount.path().join("a.txt")), 0o640);
    assert_eq!(mtime(&mount.path().join("b.txt")), stamp());
    wait_until("the pending file uploaded", || {
        !remote.files_named("", "b.txt").is_empty()
    });
    mount.unmount();
    let mount = dirs.mount(&emu, &[]);
    assert_eq!(mtime(&mount.path().join("b.txt")), stamp(), "after upload");
    mount.unmount();
}

#[test]
fn only_root_gives_files_away() {
    let emu = Emulator::start();
    let remote = RemoteView::new(&emu, &emu.key());
    remote.upload("", "mine.txt", b"x");
    let dirs = Dirs::new();
    let mount = dirs.mount(&emu, &[]);
    let path = mount.path().join("mine.txt");
    let meta = fs::metadata(&path).unwrap();
    // Giving a file the owner it has is allowed (what `cp -p` does).
    std::os::unix::fs::chown(&path, Some(meta.uid()), Some(meta.gid())).unwrap();
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        let error = std::os::unix::fs::chown(&path, Some(meta.uid() + 1), None).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EPERM));
    } else {
        std::os::unix::fs::chown(&path, Some(4242), Some(4343)).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4242, 4343));
    }
    mount.unmount();
}

#[test]
fn rsync_twice_uploads_nothing_the_second_time() {
    const FILES: usize = 200;
    let mut emu = Emulator::start();
    let source = tempfile::tempdir().unwrap();
    for i in 0..FILES {
        let sub = source.path().join(format!("d{}", i % 4));
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join(format!("f{i}.bin")), vec![i as u8; 100 + i * 37]).unwrap();
    }
    let dirs = Dirs::new();
    let rsync = |mount: &common::mount::Mount| -> String {
        let out = Command::new("rsync")
            .arg("-a")
            .arg("--stats")
            .arg(format!("{}/", source.path().display()))
            .arg(format!("{}/backup/", mount.path().display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rsync: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            mount.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let transferred = |stats: &str| -> usize {
        let line = stats
            .lines()
            .find(|l| l.starts_with("Number of regular files transferred"))
            .unwrap_or_else(|| panic!("no transfer count in {stats}"));
        line.rsplit(':')
            .next()
            .unwrap()
            .trim()
            .replace(',', "")
            .parse()
            .unwrap()
    };

    let mount = dirs.mount(&emu, &[]);
    assert_eq!(transferred(&rsync(&mount)), FILES);
    mount.unmount();
    emu.restart();

    let mount = dirs.mount(&emu, &[]);
    assert_eq!(transferred(&rsync(&mount)), 0, "second run");
    mount.unmount();
    assert_eq!(emu.request_count("1fichier:upload"), 0, "{}", emu.stats());

    // A fixed time long before the sources were written: "now minus a
    // minute" met their own mtime (to the second) when the runs above took
    // about a minute, and rsync then saw nothing to send.
    let later = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    for i in [3usize, 77, 150] {
        let path = source
            .path()
            .join(format!("d{}", i % 4))
            .join(format!("f{i}.bin"));
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
    }
    let mount = dirs.mount(&emu, &[]);
    assert_eq!(transferred(&rsync(&mount)), 3, "after touching 3 sources");
    mount.unmount();
    assert_eq!(emu.request_count("1fichier:upload"), 3, "{}", emu.stats());
}
