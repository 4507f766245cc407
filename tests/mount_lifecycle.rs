//! Mounting and unmounting: signals, `--daemon`, sub-folder mounts, bad
//! arguments, and a disk cache that makes a second mount warm.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::mount::{
    is_mounted, private_dirs, sha256_hex, sha256_of_file, test_bytes, write_config, Mount, Seeder,
    REMOTE_NAME,
};
use common::Emulator;

#[test]
fn signals_and_fusermount_unmount_cleanly() {
    let emu = Emulator::start();
    let seed = Seeder::new(&emu);
    seed.upload("", "a.txt", b"hello");
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut mount = Mount::start(&emu, "", &[]);
        assert_eq!(std::fs::read(mount.path().join("a.txt")).unwrap(), b"hello");
        mount.signal(signal);
        let status = mount.wait_for_exit().expect("the mount did not stop");
        assert!(
            status.success(),
            "signal {signal}: {status}; log:\n{}",
            mount.log()
        );
        assert!(!is_mounted(mount.path()));
    }
    let mount = Mount::start(&emu, "", &[]);
    mount.unmount();
}

/// Unmounts a `--daemon` mount and stops its process, even on panic.
struct DaemonGuard {
    mountpoint: std::path::PathBuf,
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if is_mounted(&self.mountpoint) {
            let ok = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mountpoint)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("fusermount3")
                    .arg("-uz")
                    .arg(&self.mountpoint)
                    .status();
            }
        }
    }
}

#[test]
fn daemon_mode_returns_once_mounted_and_runs_detached() {
    let emu = Emulator::start();
    let seed = Seeder::new(&emu);
    seed.upload("docs", "a.txt", b"from the daemon");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&emu, dir.path());
    let mountpoint = dir.path().join("mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    let _guard = DaemonGuard {
        mountpoint: mountpoint.clone(),
    };
    let log = dir.path().join("daemon.log");
    let output = Command::new(env!("CARGO_BIN_EXE_filehostfs"))
        .arg("--config")
        .arg(&config)
        .arg("mount")
        .arg(format!("{REMOTE_NAME}:docs"))
        .arg(&mountpoint)
        .arg("--daemon")
        .arg("--log-file")
        .arg(&log)
        .envs(private_dirs(dir.path()))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    // Ready means ready: no waiting needed.
    assert!(is_mounted(&mountpoint));
    assert_eq!(
        std::fs::read(mountpoint.join("a.txt")).unwrap(),
        b"from the daemon"
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let pid: i32 = stdout
        .rsplit("pid ")
        .next()
        .and_then(|s| s.trim().trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no pid in {stdout:?}"));
    let status = Command::new("fusermount3")
        .arg("-u")
        .arg(&mountpoint)
        .status()
        .unwrap();
    assert!(status.success());
    // The detached process ends by itself once unmounted.
    let deadline = Instant::now() + Duration::from_secs(30);
    // SAFETY: signal 0 only checks that the process exists.
    while unsafe { libc::kill(pid, 0) } == 0 {
        assert!(Instant::now() < deadline, "the daemon did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!is_mounted(&mountpoint));
}

#[test]
fn daemon_mode_fails_with_the_reason_when_the_mount_cannot_start() {
    let emu = Emulator::start();
    Seeder::new(&emu).upload("docs", "a.txt", b"x");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&emu, dir.path());
    let mountpoint = dir.path().join("mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    let _guard = DaemonGuard {
        mountpoint: mountpoint.clone(),
    };
    let log = dir.path().join("daemon.log");
    let daemon = |spec: &str, mountpoint: &std::path::Path, log_file: Option<&std::path::Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_filehostfs"));
        command
            .arg("--config")
            .arg(&config)
            .arg("mount")
            .arg(spec)
            .arg(mountpoint)
            .arg("--daemon")
            .envs(private_dirs(dir.path()));
        if let Some(log) = log_file {
            command.arg("--log-file").arg(log);
        }
        let output = command.output().unwrap();
        assert!(!output.status.success(), "{spec} should fail: {output:?}");
        assert!(output.stdout.is_empty(), "{output:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    // The reason comes from the background process, log file or not.
    let error = daemon(&format!("{REMOTE_NAME}:no/such/folder"), &mountpoint, None);
    assert!(
        error.contains("cannot open") && error.contains("no/such"),
        "{error}"
    );
    let error = daemon(
        &format!("{REMOTE_NAME}:docs/a.txt"),
        &mountpoint,
        Some(&log),
    );
    assert!(error.contains("not a folder"), "{error}");
    assert!(error.contains(&log.display().to_string()), "{error}");
    let missing = dir.path().join("missing");
    let error = daemon(&format!("{REMOTE_NAME}:docs"), &missing, None);
    assert!(error.contains("cannot mount on"), "{error}");
    assert!(!is_mounted(&mountpoint));
}

#[test]
fn bad_mount_arguments_fail_clearly() {
    let emu = Emulator::start();
    let seed = Seeder::new(&emu);
    seed.upload("docs", "a.txt", b"x");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&emu, dir.path());
    let mountpoint = dir.path().join("mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    let run = |remote: &str, extra: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_filehostfs"))
            .arg("--config")
            .arg(&config)
            .arg("mount")
            .arg(remote)
            .arg(&mountpoint)
            .args(extra)
            .envs(private_dirs(dir.path()))
            .output()
            .unwrap();
        assert!(!output.status.success(), "{remote} {extra:?} should fail");
        assert!(!is_mounted(&mountpoint));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let error = run(&format!("{REMOTE_NAME}:no/such/folder"), &[]);
    assert!(error.contains("no/such"), "{error}");
    let error = run(&format!("{REMOTE_NAME}:docs/a.txt"), &[]);
    assert!(error.contains("not a folder"), "{error}");
    let error = run("nosuchremote:", &[]);
    assert!(error.contains("nosuchremote"), "{error}");
    let error = run(&format!("{REMOTE_NAME}:"), &["--block-size", "lots"]);
    assert!(error.contains("lots"), "{error}");
}

#[test]
fn a_disk_cache_makes_the_second_mount_warm() {
    let emu = Emulator::start();
    let seed = Seeder::new(&emu);
    let data = test_bytes(5 * 1024 * 1024 + 3, 77);
    seed.upload("", "warm.bin", &data);
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let args = [
        "--block-size",
        "256K",
        "--cache-dir",
        cache_dir,
        "--cache-max-size",
        "64M",
    ];

    let mount = Mount::start(&emu, "", &args);
    assert_eq!(
        sha256_of_file(&mount.path().join("warm.bin")),
        sha256_hex(&data)
    );
    mount.unmount();

    let mount = Mount::start(&emu, "", &args);
    assert!(mount.path().join("warm.bin").exists());
    emu.reset_stats();
    assert_eq!(
        sha256_of_file(&mount.path().join("warm.bin")),
        sha256_hex(&data)
    );
    assert_eq!(emu.request_count("1fichier:download"), 0, "{}", emu.stats());
    mount.unmount();
}
