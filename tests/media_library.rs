//! A media library rescanned after a restart of the mount: the walk and the
//! probes (ffprobe of every file) come from the saved listings and the disk
//! cache without a single request, a file changed on the service meanwhile
//! is probed afresh, and the disk cache in its default place stays within
//! its bound.

mod common;

use std::path::Path;
use std::process::Command;

use common::mount::{write_config, Mount, Seeder, REMOTE_NAME};
use common::Emulator;

/// A short clip: `faststart` puts the MP4 index at the start, else it is
/// written at the end; MKV keeps its cues at the end.
fn make_clip(path: &Path, seconds: u32, faststart: bool) {
    let mut command = Command::new("ffmpeg");
    command
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "testsrc=duration={seconds}:size=320x240:rate=25,noise=alls=30:allf=t"
        ))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=440:duration={seconds}"))
        .args(["-c:v", "mpeg4", "-b:v", "4M", "-c:a", "aac", "-b:a", "64k"]);
    if faststart {
        command.args(["-movflags", "+faststart"]);
    }
    let status = command
        .arg(path)
        .status()
        .expect("ffmpeg is needed (scripts/test.sh installs it)");
    assert!(status.success(), "ffmpeg failed");
}

/// The library: two folders, each with an MP4 indexed at the start, one
/// indexed at the end and an MKV. Returns the paths relative to the root.
fn seed_library(emu: &Emulator, work: &Path) -> Vec<String> {
    let seed = Seeder::new(emu);
    let mut files = Vec::new();
    for (name, faststart) in [("a.mp4", true), ("b.mp4", false), ("c.mkv", false)] {
        let local = work.join(name);
        make_clip(&local, 2, faststart);
        let data = std::fs::read(&local).unwrap();
        for folder in ["show/s01", "show/s02"] {
            seed.upload(folder, name, &data);
            files.push(format!("{folder}/{name}"));
        }
    }
    files
}

/// `ffprobe` of `path`: its duration in seconds.
fn probe(path: &Path) -> f64 {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration", "-of"])
        .args(["default=noprint_wrappers=1:nokey=1"])
        .arg(path)
        .output()
        .unwrap();
    assert!(output.status.success(), "ffprobe {path:?}: {output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("ffprobe {path:?}: {text:?}"))
}

/// Requests that fetch bytes (download links and the downloads themselves).
fn download_requests(emu: &Emulator) -> u64 {
    emu.stats()["requests"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(endpoint, _)| endpoint.contains("download"))
        .map(|(_, count)| count.as_u64().unwrap())
        .sum()
}

fn bytes_served(emu: &Emulator) -> u64 {
    emu.stats()["bytes_served"].as_u64().unwrap()
}

/// Every request the emulator counted, of any kind (listings, account
/// info, download links, downloads, uploads).
fn all_requests(emu: &Emulator) -> u64 {
    emu.stats()["requests"]
        .as_object()
        .unwrap()
        .values()
        .map(|count| count.as_u64().unwrap())
        .sum()
}

/// The free space of the file system holding `path` (`statvfs`), in bytes.
fn free_space(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path and a zeroed struct to fill.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    let status = unsafe { libc::statvfs(c_path.as_ptr(), &mut stats) };
    assert_eq!(
        status,
        0,
        "statvfs {path:?}: {}",
        std::io::Error::last_os_error()
    );
    stats.f_bavail as u64 * stats.f_frsize as u64
}

/// What a media server's scan does: check the library's free space, walk
/// it (`find`), then `ffprobe` every file found. Returns each file's path
/// below `root` with its duration, sorted.
fn scan_library(root: &Path) -> Vec<(String, f64)> {
    assert!(free_space(root) > 0);
    let mut found = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                folders.push(path);
            } else {
                let shown = path.strip_prefix(root).unwrap().display().to_string();
                found.push((shown, probe(&path)));
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

#[test]
fn a_restarted_mount_probes_the_library_without_a_request() {
    let emu = Emulator::start();
    let work = tempfile::tempdir().unwrap();
    let files = seed_library(&emu, work.path());
    let cache = tempfile::tempdir().unwrap();
    // One config, so one state dir (the saved listings), and one cache dir
    // for both runs, as a restarted service has.
    let config_dir = tempfile::tempdir().unwrap();
    let config = write_config(&emu, config_dir.path());
    let args = ["--cache-dir", cache.path().to_str().unwrap()];
    // The library's folder is mounted, as a media server's library path is.
    let spec = format!("{REMOTE_NAME}:show");

    emu.reset_stats();
    let mount = Mount::start_remote(&config, &spec, &args);
    let first = scan_library(mount.path());
    assert_eq!(first.len(), files.len());
    assert!(download_requests(&emu) > 0);
    // One download link per file: the probe's head and tail reads and the
    // read-ahead share it.
    assert_eq!(
        emu.request_count("1fichier:download/get_token"),
        files.len() as u64,
        "{}",
        emu.stats()
    );
    mount.unmount();

    emu.reset_stats();
    let mount = Mount::start_remote(&config, &spec, &args);
    let again = scan_library(mount.path());
    assert_eq!(again, first);
    // Not one request of any kind: the mount's start, the walk and the
    // probes all answer from the saved listings and the disk cache.
    assert_eq!(
        (all_requests(&emu), bytes_served(&emu)),
        (0, 0),
        "{}\n{}",
        emu.stats(),
        mount.log()
    );
    mount.unmount();
}

#[test]
fn a_file_changed_between_two_mounts_is_probed_again() {
    let emu = Emulator::start();
    let work = tempfile::tempdir().unwrap();
    let files = seed_library(&emu, work.path());
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    // Listings are asked for again at each look, so the second mount sees
    // the change however its listings were kept.
    let args = ["--cache-dir", cache_dir, "--dir-cache-time", "0"];

    let mount = Mount::start(&emu, "", &args);
    for file in &files {
        assert!((probe(&mount.path().join(file)) - 2.0).abs() < 0.2);
    }
    mount.unmount();

    // Replaced on the service by a longer clip under the same name.
    let seed = Seeder::new(&emu);
    let changed = "show/s02/b.mp4";
    let folder = seed.folder("show/s02");
    let old = seed.runtime.block_on(async {
        let listing = seed.remote.list_folder(&folder).await.unwrap();
        listing
            .files
            .into_iter()
            .find(|f| f.name == "b.mp4")
            .unwrap()
    });
    seed.runtime
        .block_on(seed.remote.remove_file(&old.id))
        .unwrap();
    let longer = work.path().join("longer.mp4");
    make_clip(&longer, 3, false);
    let new_data = std::fs::read(&longer).unwrap();
    seed.upload("show/s02", "b.mp4", &new_data);

    let mount = Mount::start(&emu, "", &args);
    for file in &files {
        emu.reset_stats();
        let duration = probe(&mount.path().join(file));
        if file == changed {
            assert!((duration - 3.0).abs() < 0.2, "{file}: {duration} s");
            assert!(
                download_requests(&emu) > 0,
                "{file}: served from stale blocks"
            );
            assert!(bytes_served(&emu) <= new_data.len() as u64);
        } else {
            assert!((duration - 2.0).abs() < 0.2, "{file}: {duration} s");
            assert_eq!(download_requests(&emu), 0, "{file}: {}", emu.stats());
        }
    }
    mount.unmount();
}

#[test]
fn a_film_streamed_through_a_small_disk_cache_leaves_the_library_probe_blocks() {
    let emu = Emulator::start();
    let work = tempfile::tempdir().unwrap();
    let files = seed_library(&emu, work.path());
    let film = common::mount::test_bytes(128 << 20, 11);
    Seeder::new(&emu).upload("films", "film.bin", &film);
    let cache = tempfile::tempdir().unwrap();
    // 80 MiB of disk (16 reserved for probe blocks, enough for the six
    // two-block clips and the film's head and tail) for a 128 MiB film:
    // plain LRU would keep only the film.
    let args = [
        "--cache-dir",
        cache.path().to_str().unwrap(),
        "--cache-max-size",
        "80M",
    ];

    let mount = Mount::start(&emu, "", &args);
    for file in &files {
        probe(&mount.path().join(file));
    }
    assert_eq!(
        mount.sha256("films/film.bin"),
        common::mount::sha256_hex(&film)
    );
    mount.unmount();
    assert!(disk_usage(cache.path()) <= 80 << 20);

    emu.reset_stats();
    let mount = Mount::start(&emu, "", &args);
    for file in &files {
        probe(&mount.path().join(file));
    }
    assert_eq!(download_requests(&emu), 0, "{}", emu.stats());
    mount.unmount();
}

#[test]
fn the_default_disk_cache_is_in_the_users_cache_dir_and_bounded() {
    let emu = Emulator::start();
    let seed = Seeder::new(&emu);
    let film = common::mount::test_bytes(24 << 20, 7);
    seed.upload("films", "film.bin", &film);
    let xdg = tempfile::tempdir().unwrap();
    let env = [("XDG_CACHE_HOME", xdg.path().as_os_str())];
    let bound: u64 = 6 << 20;
    let args = ["--cache-max-size", "6M", "--block-size", "256K"];

    let mount = Mount::start_with_env(&emu, "", &args, &env);
    assert_eq!(
        mount.sha256("films/film.bin"),
        common::mount::sha256_hex(&film)
    );
    mount.unmount();
    let blocks = xdg.path().join("filehostfs").join("blocks");
    let on_disk = disk_usage(&blocks);
    assert!(on_disk > 0, "no disk cache under {}", blocks.display());
    assert!(on_disk <= bound, "{on_disk} bytes over the {bound} bound");

    // The next mount finds the film's head there...
    emu.reset_stats();
    let mount = Mount::start_with_env(&emu, "", &args, &env);
    let mut head = vec![0; 4096];
    let mut file = std::fs::File::open(mount.path().join("films/film.bin")).unwrap();
    std::io::Read::read_exact(&mut file, &mut head).unwrap();
    drop(file);
    assert_eq!(head, film[..4096]);
    assert_eq!(download_requests(&emu), 0, "{}", emu.stats());
    mount.unmount();
    assert!(disk_usage(&blocks) <= bound);

    // ... and --no-disk-cache writes nothing there.
    let empty = tempfile::tempdir().unwrap();
    let env = [("XDG_CACHE_HOME", empty.path().as_os_str())];
    let mut no_disk = args.to_vec();
    no_disk.push("--no-disk-cache");
    let mount = Mount::start_with_env(&emu, "", &no_disk, &env);
    mount.sha256("films/film.bin");
    mount.unmount();
    assert_eq!(
        disk_usage(&empty.path().join("filehostfs").join("blocks")),
        0
    );
}

/// Bytes of the regular files under `dir` (0 when it does not exist).
fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|entry| {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                disk_usage(&entry.path())
            } else {
                entry.metadata().unwrap().len()
            }
        })
        .sum()
}
