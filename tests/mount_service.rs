//! Running as a service: systemd readiness on a notify socket, stops that
//! survive a closed stderr, a second stop request while uploads drain,
//! plain-text logs, and SIGHUP dropping the listing caches.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::mount::{is_mounted, private_dirs, release, write_config, Mount, Seeder, REMOTE_NAME};
use common::write_mount::{RemoteView, WriteMount};
use common::Emulator;

/// How long anything a test waits for may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// `filehostfs mount emu: MNT ARGS` with extra environment variables.
fn start_with_env(emu: &Emulator, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Mount {
    Mount::start_with_env(emu, "", args, env)
}

/// The notify messages received until one holds the line `wanted`.
fn receive_until(socket: &UnixDatagram, wanted: &str) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 4096];
    while Instant::now() < deadline {
        match socket.recv(&mut buffer) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
                let done = message.lines().any(|line| line == wanted);
                received.push(message);
                if done {
                    return received;
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {}
            Err(error) => panic!("reading the notify socket: {error}"),
        }
    }
    panic!("no {wanted} on the notify socket; received {received:?}");
}

#[test]
fn readiness_and_stop_are_told_on_the_notify_socket() {
    let emu = Emulator::start();
    Seeder::new(&emu).upload("", "a.txt", b"hello");
    let sockets = tempfile::tempdir().unwrap();
    let socket_path = sockets.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut mount = start_with_env(&emu, &[], &[("NOTIFY_SOCKET", socket_path.as_os_str())]);
    let ready = receive_until(&socket, "READY=1");
    assert!(!ready.iter().any(|m| m.contains("STOPPING=1")), "{ready:?}");
    // Ready means answering.
    assert_eq!(std::fs::read(mount.path().join("a.txt")).unwrap(), b"hello");
    mount.signal(libc::SIGTERM);
    receive_until(&socket, "STOPPING=1");
    let status = mount.wait_for_exit().expect("the mount did not stop");
    assert!(status.success(), "{status}; log:\n{}", mount.log());
    assert!(!is_mounted(mount.path()));
}

#[test]
fn the_uploads_drained_at_stop_are_counted_on_the_notify_socket() {
    let emu = Emulator::start();
    let cache = tempfile::tempdir().unwrap();
    let sockets = tempfile::tempdir().unwrap();
    let socket_path = sockets.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let mut mount = Mount::start_with_env(
        &emu,
        "",
        &[
            "--cache-dir",
            cache_dir,
            "--write-back",
            "60s",
            "--write-back-wait",
            "10m",
        ],
        &[("NOTIFY_SOCKET", socket_path.as_os_str())],
    );
    receive_until(&socket, "READY=1");
    std::fs::write(mount.path().join("kept.txt"), b"staged across the stop").unwrap();
    // The service fails every call: the upload cannot finish.
    emu.set_faults(serde_json::json!({"error_rate": 1.0}));
    mount.signal(libc::SIGTERM);
    let told = receive_until(&socket, "STATUS=stopping: waiting for 1 upload(s)");
    assert!(
        told.iter().any(|m| m.lines().any(|l| l == "STOPPING=1")),
        "{told:?}"
    );
    // systemctl stop's second request: stop waiting.
    mount.signal(libc::SIGTERM);
    let status = mount.wait_for_exit().expect("the mount did not stop");
    emu.set_faults(serde_json::json!({"error_rate": 0.0}));
    assert!(status.success(), "{status}; log:\n{}", mount.log());
}

/// A mount process whose stderr is a pipe, unmounted and reaped on Drop.
struct PipedMount {
    child: Option<Child>,
    mountpoint: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for PipedMount {
    fn drop(&mut self) {
        release(&self.mountpoint, self.child.take(), Duration::from_secs(10));
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn a_stderr_pipe_closed_before_sigint_still_stops_cleanly() {
    let emu = Emulator::start();
    Seeder::new(&emu).upload("", "a.txt", b"hello");
    let dir = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().join("mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    let config = write_config(&emu, dir.path());
    // `filehostfs mount ... 2>&1 | tee log`, then Ctrl-C: tee goes first.
    let child = Command::new(env!("CARGO_BIN_EXE_filehostfs"))
        .arg("--config")
        .arg(&config)
        .arg("mount")
        .arg(format!("{REMOTE_NAME}:"))
        .arg(&mountpoint)
        .args(["--write-back", "60s"])
        .envs(private_dirs(dir.path()))
        .env("RUST_LOG", "filehostfs=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut mount = PipedMount {
        child: Some(child),
        mountpoint: mountpoint.clone(),
        _dir: dir,
    };
    wait_until("the mount", || is_mounted(&mountpoint));
    let child = mount.child.as_mut().unwrap();
    drop(child.stderr.take());
    // Every log line from here on meets a closed pipe, up to the stop's
    // own ("waiting for 1 pending upload(s)...").
    assert_eq!(std::fs::read(mountpoint.join("a.txt")).unwrap(), b"hello");
    std::fs::write(mountpoint.join("b.txt"), b"uploaded at stop").unwrap();
    // SAFETY: kill() of the child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the mount did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    mount.child = None;
    assert!(status.success(), "{status}");
    assert!(!is_mounted(&mountpoint));
    let remote = RemoteView::new(&emu, &emu.key());
    assert_eq!(remote.files_named("", "b.txt").len(), 1);
}

/// Whether process `pid` is still running (not gone, not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after_name = stat.rsplit_once(')')?.1.trim_start().to_string();
            after_name.chars().next()
        })
        .is_some_and(|state| state != 'Z' && state != 'X')
}

#[test]
fn a_second_sigterm_while_uploads_drain_stops_and_keeps_them_for_the_next_mount() {
    let emu = Emulator::start();
    let remote = RemoteView::new(&emu, &emu.key());
    let cache = tempfile::tempdir().unwrap();
    let mut mount = WriteMount::start(
        &emu,
        cache.path(),
        &["--write-back", "60s", "--write-back-wait", "10m"],
    );
    std::fs::write(mount.path().join("kept.txt"), b"staged across the stop").unwrap();
    // The service fails every call: the upload cannot finish.
    emu.set_faults(serde_json::json!({"error_rate": 1.0}));
    mount.signal(libc::SIGTERM);
    wait_until("the drain to start", || {
        mount.log().contains("pending upload(s)...")
    });
    assert!(!is_mounted(mount.path()));
    std::thread::sleep(Duration::from_millis(500));
    assert!(running(mount.pid()), "log:\n{}", mount.log());
    mount.signal(libc::SIGTERM);
    let status = mount
        .wait_for_exit()
        .expect("the second SIGTERM was ignored");
    let log = mount.log();
    assert!(status.success(), "{status}; log:\n{log}");
    assert!(log.contains("not waiting for the uploads"), "{log}");
    assert!(log.contains("left journaled"), "{log}");
    emu.set_faults(serde_json::json!({"error_rate": 0.0}));
    assert!(remote.files_named("", "kept.txt").is_empty());
    let again = WriteMount::start(&emu, cache.path(), &["--write-back", "0"]);
    again.unmount();
    let files = remote.files_named("", "kept.txt");
    assert_eq!(files.len(), 1);
    assert_eq!(remote.content(&files[0]), b"staged across the stop");
}

#[test]
fn a_log_file_carries_no_escape_codes() {
    let emu = Emulator::start();
    Seeder::new(&emu).upload("", "a.txt", b"hello");
    let mount = Mount::start(&emu, "", &[]);
    assert_eq!(std::fs::read(mount.path().join("a.txt")).unwrap(), b"hello");
    let log = mount.unmount();
    assert!(log.contains("mounted"), "{log}");
    assert!(!log.contains('\u{1b}'), "escape codes in the log:\n{log:?}");
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn sighup_drops_the_listing_caches() {
    let emu = Emulator::start();
    let seed = Seeder::new(&emu);
    seed.upload("", "a.txt", b"hello");
    let mount = Mount::start(&emu, "", &["--dir-cache-time", "1h"]);
    assert_eq!(names(mount.path()), ["a.txt"]);
    seed.upload("", "b.txt", b"added elsewhere");
    // Trusted for an hour: not seen yet.
    assert_eq!(names(mount.path()), ["a.txt"]);
    mount.signal(libc::SIGHUP);
    wait_until("the new file after SIGHUP", || {
        names(mount.path()) == ["a.txt", "b.txt"]
    });
    assert!(is_mounted(mount.path()), "SIGHUP must not stop the mount");
    mount.unmount();
}

#[test]
fn mount_dash_t_fuse_filehostfs_mounts_with_o_options() {
    let emu = Emulator::start();
    let seed = Seeder::new(&emu);
    seed.upload("media", "film.txt", b"a film");
    let dir = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().join("media");
    std::fs::create_dir(&mountpoint).unwrap();
    let config = write_config(&emu, dir.path());
    let cache = dir.path().join("cache");
    let log = dir.path().join("mount.log");
    // Installed as mount(8) finds helpers: a link named mount.fuse.TYPE.
    let helper = dir.path().join("mount.fuse.filehostfs");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_filehostfs"), &helper).unwrap();
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let options = format!(
        "rw,dir_cache_time=5m,cache_dir={},_netdev,x-systemd.automount,nofail,uid={uid},gid={gid},umask=027,config={},log_file={}",
        cache.display(),
        config.display(),
        log.display()
    );
    // As mount(8) runs it: SPEC DIR -o OPTIONS; it returns once mounted.
    let output = Command::new(&helper)
        .arg(format!("{REMOTE_NAME}:media"))
        .arg(&mountpoint)
        .arg("-o")
        .arg(&options)
        .envs(private_dirs(dir.path()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _guard = PipedMount {
        child: None,
        mountpoint: mountpoint.clone(),
        _dir: tempfile::tempdir().unwrap(),
    };
    assert!(
        output.status.success(),
        "{}; log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    let pid: u32 = said
        .rsplit_once("(pid ")
        .and_then(|(_, rest)| rest.trim().trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no pid in {said:?}"));
    assert!(is_mounted(&mountpoint));
    let film = mountpoint.join("film.txt");
    assert_eq!(std::fs::read(&film).unwrap(), b"a film");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&film).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    // The disk cache went where the options said.
    assert!(cache.exists());
    let status = Command::new("fusermount3")
        .arg("-u")
        .arg(&mountpoint)
        .status()
        .unwrap();
    assert!(status.success());
    wait_until("the helper's mount process to end", || !running(pid));
    // -f (fake) checks the options and mounts nothing.
    let fake = Command::new(&helper)
        .arg(format!("{REMOTE_NAME}:media"))
        .arg(&mountpoint)
        .args(["-f", "-o", &options])
        .status()
        .unwrap();
    assert!(fake.success());
    assert!(!is_mounted(&mountpoint));
    let refused = Command::new(&helper)
        .arg(format!("{REMOTE_NAME}:media"))
        .arg(&mountpoint)
        .args(["-o", "no_such_option=1"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(!is_mounted(&mountpoint));
}

/// mount(8) with three ways to find filehostfs, each in turn, run by
/// [`mount_8_finds_filehostfs_for_fuse_and_fuse3_types`]: `$1` the
/// filehostfs binary, `$2` the spec, `$3` a scratch dir, `$4` the `-o`
/// options. One line per case on stdout: name, the mount's source (the
/// spec), content and mode of film.txt as seen through the mount.
const MOUNT_8_CASES: &str = r#"
set -euo pipefail
bin=$1 spec=$2 dir=$3 options=$4
attempt() {
  local name=$1 type=$2 mnt=$dir/mnt-$1
  mkdir -p "$mnt"
  if ! timeout 120 mount -t "$type" "$spec" "$mnt" -o "$options,log_file=$dir/$name.log" >"$dir/$name.out" 2>&1; then
    echo "$name: mount failed: $(tr '
' ' ' <"$dir/$name.out")"
    return
  fi
  echo "$name $(findmnt -n -o SOURCE "$mnt") $(timeout 60 cat "$mnt/film.txt") $(timeout 60 stat -c %a "$mnt/film.txt")"
  timeout 60 umount "$mnt"
  if mountpoint -q "$mnt"; then echo "$name: still mounted after umount"; fi
}
# Installs a link to filehostfs as $2 in folder $1, through an overlay
# private to this mount namespace: the host's folder is untouched.
install_link() {
  local folder name=$2
  folder=$(readlink -f "$1")
  mkdir -p "$dir/upper-$name" "$dir/work-$name"
  mount -t overlay "$name" -o "lowerdir=$folder,upperdir=$dir/upper-$name,workdir=$dir/work-$name" "$folder"
  ln -s "$bin" "$folder/$name"
}
# 1. No helper of its own: mount(8) runs mount.fuse3, which runs the
#    program named by the type from mount(8)'s standard PATH.
install_link /usr/local/bin filehostfs
attempt via-mount.fuse3 fuse.filehostfs
# mount.fuse3 has no convention for fuse3.TYPE: without a link it fails.
attempt fuse3-without-link fuse3.filehostfs
# 2. The links, where mount(8) looks for helpers.
install_link /sbin mount.fuse.filehostfs
ln -s "$bin" "$(readlink -f /sbin)/mount.fuse3.filehostfs"
attempt via-link fuse.filehostfs
attempt fuse3-via-link fuse3.filehostfs
# 3. An fstab line: `mount -a` mounts it, and a second `mount -a` finds it
#    mounted (the mount's source is the line's spec) instead of stacking
#    another mount on it.
mnt=$dir/mnt-fstab
mkdir -p "$mnt"
echo "$spec $mnt fuse.filehostfs $options,log_file=$dir/fstab.log 0 0" >"$dir/fstab"
timeout 120 mount -a -T "$dir/fstab" >>"$dir/fstab.out"
timeout 120 mount -a -T "$dir/fstab" >>"$dir/fstab.out"
echo "fstab $(findmnt -n -o SOURCE "$mnt" | tr '\n' ' ')$(timeout 60 cat "$mnt/film.txt")"
timeout 60 umount "$mnt"
"#;

#[test]
fn mount_8_finds_filehostfs_for_fuse_and_fuse3_types() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mount(8) with a helper and the private namespace need root");
        return;
    }
    let emu = Emulator::start();
    Seeder::new(&emu).upload("media", "film.txt", b"a-film");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&emu, dir.path());
    let options = format!(
        "rw,config={},dir_cache_time=5m,umask=027,cache_dir={},_netdev,nofail,x-systemd.automount",
        config.display(),
        dir.path().join("cache").display()
    );
    // Everything mounted lives in a private mount namespace, and every
    // process started in it ends with its shell (`timeout` bounds it all).
    let output = Command::new("timeout")
        .args(["600", "unshare", "--mount", "--propagation", "private"])
        .args(["--pid", "--fork", "--kill-child", "--mount-proc", "--"])
        .args(["bash", "-c", MOUNT_8_CASES, "bash"])
        .arg(env!("CARGO_BIN_EXE_filehostfs"))
        .arg(format!("{REMOTE_NAME}:media"))
        .arg(dir.path())
        .arg(&options)
        .envs(private_dirs(dir.path()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{}\n{said}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines.len(), 5, "{said}");
    assert_eq!(lines[0], "via-mount.fuse3 emu:media a-film 640");
    assert!(
        lines[1].starts_with("fuse3-without-link: mount failed"),
        "{said}"
    );
    assert_eq!(lines[2], "via-link emu:media a-film 640");
    assert_eq!(lines[3], "fuse3-via-link emu:media a-film 640");
    assert_eq!(lines[4], "fstab emu:media a-film");
}

fn listing_requests(emu: &Emulator) -> u64 {
    emu.request_count("1fichier:file/ls") + emu.request_count("1fichier:folder/ls")
}

/// `ls -l` of a folder: its lines, without the "total" line.
fn ls_l(dir: &Path) -> Vec<String> {
    let output = Command::new("ls").arg("-l").arg(dir).output().unwrap();
    assert!(output.status.success(), "ls -l: {output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with("total"))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_restarted_mount_answers_from_the_saved_listings_and_revalidates() {
    let emu = Emulator::start();
    let seed = Seeder::new(&emu);
    let library = seed.folder("library");
    let files: Vec<(String, Vec<u8>)> = (0..1000)
        .map(|i| (format!("episode-{i:04}.mkv"), vec![b'x'; i % 7 + 1]))
        .collect();
    seed.upload_many(&library, files, 8);
    // One config, so one state dir, for every run below.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&emu, dir.path());
    let spec = format!("{REMOTE_NAME}:");

    let mount = Mount::start_remote(&config, &spec, &["--dir-cache-time", "1h"]);
    let before = ls_l(&mount.path().join("library"));
    assert_eq!(before.len(), 1000);
    mount.unmount();
    let saved_at = Instant::now();
    seed.upload_into(&library, "added-elsewhere.mkv", b"new");

    // Within --dir-cache-time: everything from the saved listings.
    let mount = Mount::start_remote(&config, &spec, &["--dir-cache-time", "1h"]);
    emu.reset_stats();
    let started = Instant::now();
    let after = ls_l(&mount.path().join("library"));
    let took = started.elapsed();
    assert_eq!(after, before);
    assert_eq!(listing_requests(&emu), 0, "{}", emu.stats());
    println!("ls -l of 1000 files after a restart: {took:?}, 0 listing calls");
    mount.unmount();

    // Past it: the saved listing answers at once, the refresh behind it
    // brings the file added elsewhere.
    std::thread::sleep(Duration::from_secs(2).saturating_sub(saved_at.elapsed()));
    let mount = Mount::start_remote(&config, &spec, &["--dir-cache-time", "2s"]);
    let library_dir = mount.path().join("library");
    assert!(names(&library_dir).len() >= 1000);
    wait_until("the file added elsewhere", || {
        names(&library_dir).contains(&"added-elsewhere.mkv".to_string())
    });
    assert_eq!(names(&library_dir).len(), 1001);
    mount.unmount();

    // Turned off: listed again, and nothing saved is left for later.
    let mount = Mount::start_remote(&config, &spec, &["--no-saved-listings"]);
    emu.reset_stats();
    assert_eq!(names(&mount.path().join("library")).len(), 1001);
    assert!(listing_requests(&emu) > 0);
    mount.unmount();
    let mount = Mount::start_remote(&config, &spec, &["--dir-cache-time", "1h"]);
    emu.reset_stats();
    assert_eq!(names(&mount.path().join("library")).len(), 1001);
    assert!(
        listing_requests(&emu) > 0,
        "the saved listings were not forgotten"
    );
    mount.unmount();
}

#[test]
fn a_second_stop_request_detaches_a_busy_mount() {
    let emu = Emulator::start();
    Seeder::new(&emu).upload("", "a.txt", b"hello");
    let mut mount = Mount::start(&emu, "", &[]);
    // A file held open keeps the mount busy: a plain unmount is refused.
    let held = std::fs::File::open(mount.path().join("a.txt")).unwrap();
    mount.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    assert!(running(mount.pid()), "log:\n{}", mount.log());
    mount.signal(libc::SIGTERM);
    wait_until("the busy mount to be detached", || {
        !is_mounted(mount.path())
    });
    // The open file still reads; closing it lets the process end.
    let mut text = String::new();
    std::io::Read::read_to_string(&mut &held, &mut text).unwrap();
    assert_eq!(text, "hello");
    drop(held);
    let status = mount
        .wait_for_exit()
        .expect("the mount process did not end");
    let log = mount.log();
    assert!(status.success(), "{status}; log:\n{log}");
    assert!(log.contains("detaching the busy mount"), "{log}");
}
