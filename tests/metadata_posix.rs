//! POSIX behaviour around the metadata store, through real mounts of
//! `filehostfs serve`: name lengths (`ENAMETOOLONG`, `statfs`), rewrites
//! with unchanged content that upload nothing, `cp -p` and `tar -x` whose
//! times and modes survive a remount, two mounts of one account sharing
//! the store, and `--state-dir` holding the saved listings too.

mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::file_meta::{mode, mtime, stamp, Dirs, STAMP};
use common::mount::Mount;
use common::write_mount::{wait_until, RemoteView};
use common::Emulator;

fn run(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the mount shows `path` as the service's file, not a
/// pending upload.
fn wait_uploaded(path: &Path) {
    wait_until(&format!("{} uploaded", path.display()), || {
        path.exists() && common::mount::getxattr(path, "user.filehostfs.pending").is_err()
    });
}

fn errno_of<T>(result: std::io::Result<T>) -> Option<i32> {
    result.err().and_then(|error| error.raw_os_error())
}

fn statvfs(path: &Path) -> libc::statvfs {
    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string and a zeroed out-parameter.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stats) };
    assert_eq!(rc, 0, "statvfs: {}", std::io::Error::last_os_error());
    stats
}

#[test]
fn names_longer_than_1fichier_allows_answer_enametoolong() {
    let emu = Emulator::start();
    let remote = RemoteView::new(&emu, &emu.key());
    remote.upload("", "present.txt", b"here");
    let dirs = Dirs::new();
    let mount = dirs.mount(&emu, &[]);
    // Every name of up to 250 bytes fits in 1fichier's 250 characters.
    assert_eq!(statvfs(mount.path()).f_namemax, 250);

    let longest = "x".repeat(250);
    fs::write(mount.path().join(&longest), b"at the limit").unwrap();
    wait_until("the longest name on the service", || {
        !remote.files_named("", &longest).is_empty()
    });
    let folder = "d".repeat(250);
    fs::create_dir(mount.path().join(&folder)).unwrap();
    // 250 characters once encoded: each `$` is sent as one full-width
    // character, so this 250-byte name is at the limit too.
    let encoded_at_limit = format!("{}$", "y".repeat(249));
    fs::write(mount.path().join(&encoded_at_limit), b"$").unwrap();
    // More than 250 bytes, but 200 characters: the service stores it.
    let accented = "é".repeat(200);
    fs::write(mount.path().join(&accented), b"accented").unwrap();
    wait_until("the accented name on the service", || {
        !remote.files_named("", &accented).is_empty()
    });

    for too_long in [
        "x".repeat(251),
        "x".repeat(255),
        "x".repeat(300),
        // One character more once encoded: the look-alike `＄` is escaped.
        format!("{}＄", "z".repeat(249)),
    ] {
        let path = mount.path().join(&too_long);
        let what = format!("{} bytes", too_long.len());
        assert_eq!(
            errno_of(fs::write(&path, b"x")),
            Some(libc::ENAMETOOLONG),
            "create, {what}"
        );
        assert_eq!(
            errno_of(fs::metadata(&path)),
            Some(libc::ENAMETOOLONG),
            "lookup, {what}"
        );
        assert_eq!(
            errno_of(fs::create_dir(&path)),
            Some(libc::ENAMETOOLONG),
            "mkdir, {what}"
        );
        assert_eq!(
            errno_of(fs::rename(mount.path().join("present.txt"), &path)),
            Some(libc::ENAMETOOLONG),
            "rename, {what}"
        );
        assert_eq!(
            errno_of(std::os::unix::fs::symlink("present.txt", &path)),
            Some(libc::ENAMETOOLONG),
            "symlink, {what}"
        );
        assert_eq!(
            errno_of(fs::hard_link(mount.path().join("present.txt"), &path)),
            Some(libc::ENAMETOOLONG),
            "link, {what}"
        );
    }
    // Other refusals keep their errno for names that fit.
    assert_eq!(
        errno_of(std::os::unix::fs::symlink(
            "present.txt",
            mount.path().join("link")
        )),
        Some(libc::EPERM)
    );
    assert!(mount.path().join("present.txt").exists());
    mount.unmount();
    assert_eq!(remote.files_named("", &encoded_at_limit).len(), 1);
}

/// The file's id and share link on the service.
fn identity(remote: &RemoteView, name: &str) -> (String, Option<String>) {
    let files = remote.files_named("", name);
    assert_eq!(files.len(), 1, "{name}: {files:?}");
    (files[0].id.0.clone(), files[0].share_link.clone())
}

#[test]
fn rewriting_a_file_with_the_bytes_it_has_uploads_nothing() {
    let emu = Emulator::start();
    let remote = RemoteView::new(&emu, &emu.key());
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    remote.upload("", "same.bin", &content);
    remote.upload("", "inplace.bin", &content);
    let before = identity(&remote, "same.bin");
    let before_inplace = identity(&remote, "inplace.bin");
    let source = tempfile::tempdir().unwrap();
    fs::write(source.path().join("inplace.bin"), &content).unwrap();
    let dirs = Dirs::new();
    let mount = dirs.mount(&emu, &[]);
    emu.reset_stats();

    // An editor saving unchanged text: truncate and write the same bytes.
    let same = mount.path().join("same.bin");
    fs::write(&same, &content).unwrap();
    // rsync rewriting in place a file it was told to send anyway.
    run(Command::new("rsync")
        .args(["--inplace", "--ignore-times", "--no-whole-file"])
        .arg(source.path().join("inplace.bin"))
        .arg(mount.path().join("inplace.bin")));
    wait_uploaded(&same);
    wait_uploaded(&mount.path().join("inplace.bin"));
    assert_eq!(fs::read(&same).unwrap(), content);
    assert_eq!(
        emu.request_count("1fichier:upload"),
        0,
        "{}\n{}",
        emu.stats(),
        mount.log()
    );
    assert_eq!(identity(&remote, "same.bin"), before, "the link must stay");
    assert_eq!(identity(&remote, "inplace.bin"), before_inplace);

    // One byte changed: uploaded, as any change.
    let mut changed = content.clone();
    changed[150_000] ^= 1;
    fs::write(&same, &changed).unwrap();
    wait_until("the changed file uploaded", || {
        remote
            .files_named("", "same.bin")
            .iter()
            .any(|f| f.id.0 != before.0)
    });
    wait_uploaded(&same);
    mount.unmount();
    assert_eq!(emu.request_count("1fichier:upload"), 1, "{}", emu.stats());
    let files = remote.files_named("", "same.bin");
    assert_eq!(files.len(), 1, "the old version removed: {files:?}");
    assert_eq!(remote.content(&files[0]), changed);
}

#[test]
fn cp_p_and_tar_x_keep_times_and_modes_across_a_remount() {
    let emu = Emulator::start();
    let source = tempfile::tempdir().unwrap();
    let tree = source.path().join("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    let files = [
        ("tree/a.txt", 0o600, 1_000_000_000u64),
        ("tree/sub/b.sh", 0o755, 1_100_000_000),
        ("tree/sub/c.dat", 0o640, 1_200_000_000),
    ];
    for (path, file_mode, seconds) in files {
        let path = source.path().join(path);
        fs::write(&path, path.to_string_lossy().as_bytes()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(file_mode)).unwrap();
        let file = fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(UNIX_EPOCH + Duration::from_secs(seconds))
            .unwrap();
    }
    let archive = source.path().join("tree.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(source.path())
        .arg("tree"));

    let dirs = Dirs::new();
    let mount = dirs.mount(&emu, &[]);
    fs::create_dir(mount.path().join("copied")).unwrap();
    run(Command::new("cp")
        .arg("-p")
        .arg(source.path().join("tree/a.txt"))
        .arg(source.path().join("tree/sub/b.sh"))
        .arg(mount.path().join("copied")));
    fs::create_dir(mount.path().join("unpacked")).unwrap();
    run(Command::new("tar")
        .arg("-xpf")
        .arg(&archive)
        .arg("-C")
        .arg(mount.path().join("unpacked")));
    let expected: Vec<(String, u32, SystemTime)> = files
        .iter()
        .map(|(path, file_mode, seconds)| {
            let shown = format!("unpacked/{path}");
            (
                shown,
                *file_mode,
                UNIX_EPOCH + Duration::from_secs(*seconds),
            )
        })
        .chain([
            (
                "copied/a.txt".to_string(),
                0o600,
                UNIX_EPOCH + Duration::from_secs(1_000_000_000),
            ),
            (
                "copied/b.sh".to_string(),
                0o755,
                UNIX_EPOCH + Duration::from_secs(1_100_000_000),
            ),
        ])
        .collect();
    for (path, _, _) in &expected {
        wait_uploaded(&mount.path().join(path));
    }
    mount.unmount();

    let mount = dirs.mount(&emu, &[]);
    for (path, file_mode, time) in &expected {
        let shown = mount.path().join(path);
        assert_eq!(mtime(&shown), *time, "{path} after remount");
        assert_eq!(mode(&shown), *file_mode, "{path} after remount");
    }
    mount.unmount();
}

#[test]
fn a_time_set_through_one_mount_shows_through_another_after_its_listing_refresh() {
    let emu = Emulator::start();
    let remote = RemoteView::new(&emu, &emu.key());
    remote.upload("", "shared.txt", b"one account, two mounts");
    let dirs = Dirs::new();
    let other_cache = tempfile::tempdir().unwrap();
    let first = dirs.mount(&emu, &[]);
    let second = dirs.mount_with_cache(&emu, other_cache.path(), &[]);
    let through_first = first.path().join("shared.txt");
    let through_second = second.path().join("shared.txt");
    assert_ne!(mtime(&through_second), stamp());

    run(Command::new("touch")
        .arg("-d")
        .arg(STAMP)
        .arg(&through_first));
    fs::set_permissions(&through_first, fs::Permissions::from_mode(0o600)).unwrap();
    wait_until("the second mount to show the first one's time", || {
        mtime(&through_second) == stamp() && mode(&through_second) == 0o600
    });
    first.unmount();
    second.unmount();
}

#[test]
fn saved_listings_live_in_the_state_dir_given() {
    let emu = Emulator::start();
    let remote = RemoteView::new(&emu, &emu.key());
    remote.upload("", "listed.txt", b"x");
    let state = tempfile::tempdir().unwrap();
    let default_state = tempfile::tempdir().unwrap();
    let mount = Mount::start_with_env(
        &emu,
        "",
        &["--state-dir", state.path().to_str().unwrap()],
        &[("XDG_STATE_HOME", default_state.path().as_os_str())],
    );
    let names: Vec<_> = fs::read_dir(mount.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(names.iter().any(|n| n == "listed.txt"), "{names:?}");
    mount.unmount();
    assert!(
        state.path().join("listings.db").exists(),
        "no saved listings in --state-dir"
    );
    let strays: Vec<_> = walk(default_state.path())
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "listings.db"))
        .collect();
    assert!(strays.is_empty(), "saved outside --state-dir: {strays:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}
