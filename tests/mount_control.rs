//! The control API of a real mount (`--rc`, `--rc-addr`) against the
//! emulator: each operation seen through the mount and the emulator's own
//! counters, the CLI clients, and the status page in headless Chromium.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{json, Value};

use common::control::{
    chromium_dom_until, get_tcp, parse_prometheus, post_tcp, post_unix, queue_rows,
};
use common::mount::{write_config, Mount, Seeder, REMOTE_NAME};
use common::Emulator;
use filehostfs::control::ControlPaths;

/// Bound on every wait for the mount to reach a state.
const WAIT: Duration = Duration::from_secs(60);

fn socket_of(mount: &Mount) -> PathBuf {
    ControlPaths::from_env().socket_for(mount.path())
}

/// Polls `check` until it answers `Some`, failing after [`WAIT`].
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A free loopback port (bound then released; the mount binds it next).
fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn queue_item<'a>(queue: &'a Value, name: &str) -> Option<&'a Value> {
    queue["queue"]
        .as_array()?
        .iter()
        .find(|item| item["name"] == name)
}

/// `filehostfs ARGS...` with the test's environment; its stdout.
fn cli(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_filehostfs"))
        .args(args)
        .output()
        .expect("run filehostfs");
    assert!(
        output.status.success(),
        "filehostfs {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn refresh_shows_a_file_added_elsewhere_before_the_listing_ttl() {
    let emu = Emulator::start();
    let seeder = Seeder::new(&emu);
    seeder.upload("", "first.txt", b"one");
    let mount = Mount::start(&emu, "", &["--rc", "--dir-cache-time", "1h"]);
    let socket = socket_of(&mount);
    let mode = std::fs::symlink_metadata(&socket).unwrap();
    assert!(mode.file_type().is_socket());
    assert_eq!(mode.permissions().mode() & 0o777, 0o600, "socket mode");

    assert_eq!(names_in(mount.path()), ["first.txt"]);
    seeder.upload("", "late.txt", b"two");
    // Within the listing's time-to-live the mount does not look again.
    assert_eq!(names_in(mount.path()), ["first.txt"]);

    let (status, answer) = post_unix(&socket, "vfs/refresh", r#"{"dir": ""}"#);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"]["dirs_listed"], 1, "{answer}");
    assert_eq!(answer["result"]["entries_seen"], 2, "{answer}");
    assert_eq!(names_in(mount.path()), ["first.txt", "late.txt"]);
    assert_eq!(
        std::fs::read(mount.path().join("late.txt")).unwrap(),
        b"two"
    );

    // Recursive, through the CLI, which prints what the API answered.
    seeder.upload("Sub/Deeper", "new.bin", b"three");
    let mountpoint = mount.path().to_str().unwrap();
    let printed = cli(&[
        "rc",
        "vfs/refresh",
        "dir=",
        "recursive=true",
        "--rc-mount",
        mountpoint,
    ]);
    let printed: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(printed["result"]["dirs_listed"], 3, "{printed}");
    assert_eq!(
        names_in(&mount.path().join("Sub/Deeper")),
        ["new.bin"],
        "the deeper folder is listed"
    );

    let (status, answer) = post_unix(&socket, "vfs/refresh", r#"{"dir": "missing"}"#);
    assert_eq!(status, 404, "{answer}");
    mount.unmount();
}

#[test]
fn the_queue_shows_a_failure_then_success_after_queue_retry() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&emu, dir.path());
    // One attempt per request: the failure reaches the queue at once.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("retries = 1\n");
    std::fs::write(&config, text).unwrap();
    let mount = Mount::start_remote(
        &config,
        &format!("{REMOTE_NAME}:"),
        &["--rc", "--write-back", "2s"],
    );
    let socket = socket_of(&mount);
    assert!(names_in(mount.path()).is_empty());

    std::fs::write(mount.path().join("report.txt"), b"quarterly numbers").unwrap();
    let (_, queue) = post_unix(&socket, "vfs/queue", "{}");
    let item = queue_item(&queue, "report.txt").unwrap_or_else(|| panic!("{queue}"));
    assert_eq!(item["state"], "queued", "{queue}");
    assert_eq!(item["path"], "report.txt");
    assert_eq!(item["size"], 17);
    let id = item["id"].as_u64().unwrap();

    emu.set_faults(json!({"error_rate": 1.0}));
    // Failures grow the backoff; wait until the next try is far enough
    // away that only a retry on request explains a quick success.
    let next_try = wait_for("a failure with a distant next try", || {
        let (_, queue) = post_unix(&socket, "vfs/queue", "{}");
        let item = queue_item(&queue, "report.txt")?.clone();
        let error = item["last_error"].as_str()?.to_string();
        let next: chrono::DateTime<Utc> = serde_json::from_value(item["next_try"].clone()).ok()?;
        (item["state"] == "retrying" && next - Utc::now() > chrono::Duration::seconds(4))
            .then_some((error, next))
    });
    // The emulator's injected 5xx, as the queue reports it.
    assert!(next_try.0.contains("HTTP 5"), "{}", next_try.0);
    let (_, stats) = post_unix(&socket, "vfs/stats", "{}");
    assert!(
        stats["counters"]["request_errors"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert!(
        !stats["recent_errors"].as_array().unwrap().is_empty(),
        "{stats}"
    );

    emu.set_faults(json!({"error_rate": 0.0}));
    let (status, answer) = post_unix(&socket, "vfs/queue-retry", &format!(r#"{{"id": {id}}}"#));
    assert_eq!(status, 200, "{answer}");
    let done = wait_for("the upload to finish", || {
        let (_, queue) = post_unix(&socket, "vfs/queue", "{}");
        let item = queue_item(&queue, "report.txt")?.clone();
        (item["state"] == "done").then_some(item)
    });
    assert!(done["attempts"].as_u64().unwrap() >= 2, "{done}");
    assert_eq!(done["progress_bytes"], 17, "{done}");
    assert_eq!(done["last_error"], Value::Null, "{done}");
    assert!(
        Utc::now() < next_try.1,
        "done only after the scheduled next try: the retry did nothing"
    );
    let (status, answer) = post_unix(&socket, "vfs/queue-retry", r#"{"id": 999999}"#);
    assert_eq!(status, 404, "{answer}");
    mount.unmount();
}

#[test]
fn forget_drops_cached_blocks_and_the_next_read_fetches() {
    let emu = Emulator::start();
    let seeder = Seeder::new(&emu);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    seeder.upload("Media", "clip.bin", &data);
    let mount = Mount::start(&emu, "", &["--rc"]);
    let socket = socket_of(&mount);
    let file = mount.path().join("Media/clip.bin");

    assert_eq!(std::fs::read(&file).unwrap(), data);
    let downloads = emu.request_count("1fichier:download");
    assert!(downloads >= 1);
    assert_eq!(std::fs::read(&file).unwrap(), data);
    assert_eq!(
        emu.request_count("1fichier:download"),
        downloads,
        "a second read is served from the caches"
    );

    let (status, answer) = post_unix(&socket, "vfs/forget", r#"{"path": "Media/clip.bin"}"#);
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["result"]["entries_dropped"].as_u64().unwrap() >= 1,
        "{answer}"
    );
    assert_eq!(answer["result"]["bytes_dropped"], 300_000, "{answer}");
    assert_eq!(std::fs::read(&file).unwrap(), data);
    assert!(
        emu.request_count("1fichier:download") > downloads,
        "the read after forget fetched again"
    );

    let (status, answer) = post_unix(&socket, "vfs/forget", r#"{"path": "Media/nothing"}"#);
    assert_eq!(status, 404, "{answer}");
    mount.unmount();
}

#[test]
fn stats_and_metrics_count_a_read_over_tcp_with_a_token() {
    let emu = Emulator::start();
    let seeder = Seeder::new(&emu);
    let data = vec![7u8; 200_000];
    seeder.upload("", "data.bin", &data);
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("token");
    let addr = free_addr();
    let mount = Mount::start(
        &emu,
        "",
        &[
            "--rc-addr",
            &addr,
            "--rc-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    let token = std::fs::read_to_string(&token_file).unwrap();
    let token = token.trim();
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let (status, _) = post_tcp(&addr, None, "vfs/stats", "{}");
    assert_eq!(status, 401, "no token, no answer");
    let (status, _) = get_tcp(&addr, None, "/metrics");
    assert_eq!(status, 401);

    let (_, before) = post_tcp(&addr, Some(token), "vfs/stats", "{}");
    let before = &before["counters"];
    assert_eq!(std::fs::read(mount.path().join("data.bin")).unwrap(), data);
    let (status, after) = post_tcp(&addr, Some(token), "vfs/stats", "{}");
    assert_eq!(status, 200, "{after}");
    let after = &after["counters"];
    let grew = |key: &str| after[key].as_u64().unwrap() - before[key].as_u64().unwrap();
    assert_eq!(grew("remote_read_bytes"), 200_000, "{after}");
    let downloads = after["requests"]["download"].as_u64().unwrap()
        - before["requests"]["download"].as_u64().unwrap();
    assert!(downloads >= 1, "{after}");
    assert!(grew("cache_misses") >= 1, "{after}");

    // A second read hits the caches (the kernel's, or ours).
    assert_eq!(std::fs::read(mount.path().join("data.bin")).unwrap(), data);

    let (status, text) = get_tcp(&addr, Some(token), "/metrics");
    assert_eq!(status, 200);
    let metrics = parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        metrics["filehostfs_remote_read_bytes_total"],
        after["remote_read_bytes"].as_u64().unwrap() as f64,
        "{text}"
    );
    let download_requests = metrics
        .iter()
        .find(|(name, _)| {
            name.starts_with("filehostfs_requests_total") && name.contains("download")
        })
        .map(|(_, value)| *value)
        .unwrap_or_else(|| panic!("no download requests in\n{text}"));
    assert!(download_requests >= downloads as f64);

    let (status, version) = post_tcp(&addr, Some(token), "core/version", "{}");
    assert_eq!(status, 200);
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"), "{version}");
    mount.unmount();
}

#[test]
fn rc_and_status_print_what_the_api_says() {
    let emu = Emulator::start();
    let mount = Mount::start(&emu, "", &["--rc", "--write-back", "1h"]);
    let socket = socket_of(&mount);
    std::fs::write(mount.path().join("waiting.txt"), b"later").unwrap();
    let mountpoint = mount.path().to_str().unwrap();
    // close() returns before the kernel's release of the file reaches the
    // mount; until it has, the file has no next try yet (its state already
    // reads "queued"), and the two answers below could straddle that change.
    wait_for("the file to be queued", || {
        let (_, queue) = post_unix(&socket, "vfs/queue", "{}");
        queue_item(&queue, "waiting.txt")?["next_try"]
            .is_string()
            .then_some(())
    });

    let printed = cli(&["rc", "vfs/queue", "--rc-mount", mountpoint]);
    let printed: Value = serde_json::from_str(&printed).unwrap();
    let (_, answered) = post_unix(&socket, "vfs/queue", "{}");
    assert_eq!(printed, answered);
    assert_eq!(
        queue_item(&printed, "waiting.txt").unwrap()["state"],
        "queued"
    );

    let status = cli(&["status", mountpoint]);
    assert!(status.contains("emu (1fichier)"), "{status}");
    assert!(status.contains("Uploads:  1 pending"), "{status}");
    assert!(status.contains("waiting.txt"), "{status}");
    // The count printed is the API's at that moment: at most what it says now.
    let (_, stats) = post_unix(&socket, "vfs/stats", "{}");
    let requests = stats["counters"]["requests_total"].as_u64().unwrap();
    let printed_requests: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("Requests: "))
        .and_then(|line| line.split(", ").last())
        .and_then(|part| part.strip_suffix(" since mount (0 failed)"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in\n{status}"));
    assert!(
        (1..=requests).contains(&printed_requests),
        "{status}\n{stats}"
    );

    // mount/unmount waits (bounded) for the upload, then unmounts.
    let (status, answer) = post_unix(&socket, "mount/unmount", r#"{"timeout_secs": 30}"#);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["unmounting"], true, "{answer}");
    assert_eq!(answer["uploads_pending"], 0, "{answer}");
    wait_for("the mount to go away", || {
        (!common::mount::is_mounted(mount.path())).then_some(())
    });
    let seeder = Seeder::new(&emu);
    let listing = seeder
        .runtime
        .block_on(seeder.remote.list_folder(&seeder.remote.root()))
        .unwrap();
    assert!(listing.files.iter().any(|f| f.name == "waiting.txt"));
    let mut mount = mount;
    let exit = mount.wait_for_exit().expect("the mount process exits");
    assert!(exit.success(), "{}", mount.log());
}

#[test]
fn the_status_page_in_chromium_shows_an_upload_pending_then_done() {
    let emu = Emulator::start();
    let seeder = Seeder::new(&emu);
    seeder.upload("Photos", "beach.jpg", &vec![1u8; 150_000]);
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("token");
    let addr = free_addr();
    let mount = Mount::start(
        &emu,
        "",
        &[
            "--rc-addr",
            &addr,
            "--rc-token-file",
            token_file.to_str().unwrap(),
            "--write-back",
            "8s",
        ],
    );
    let token = std::fs::read_to_string(&token_file).unwrap();
    let url = format!("http://{addr}/?token={}", token.trim());
    let _ = std::fs::read(mount.path().join("Photos/beach.jpg")).unwrap();
    std::fs::write(mount.path().join("Photos/notes.txt"), b"a pending upload").unwrap();
    std::fs::write(mount.path().join("todo.md"), vec![b'x'; 40_000]).unwrap();

    let row_state = |dom: &str, path: &str| {
        queue_rows(dom)
            .into_iter()
            .find(|row| row.path == path)
            .map(|row| row.state)
    };
    let dom = chromium_dom_until(&url, Duration::from_secs(60), |dom| {
        row_state(dom, "Photos/notes.txt").is_some()
    });
    assert_eq!(
        row_state(&dom, "Photos/notes.txt").as_deref(),
        Some("queued"),
        "{:?}",
        queue_rows(&dom)
    );
    let dom = chromium_dom_until(&url, Duration::from_secs(90), |dom| {
        row_state(dom, "Photos/notes.txt").as_deref() == Some("done")
            && row_state(dom, "todo.md").as_deref() == Some("done")
    });
    assert_eq!(
        row_state(&dom, "Photos/notes.txt").as_deref(),
        Some("done"),
        "{:?}",
        queue_rows(&dom)
    );
    mount.unmount();
}

/// Not-found answers that a user's own actions expect are not recent
/// errors: a shell probing for names that do not exist, and `rm` of a file
/// another client removed first (the service answers "not found", which
/// is still counted as a failed request). A file gone under a reader is.
#[test]
fn expected_not_found_answers_are_not_recent_errors() {
    let emu = Emulator::start();
    let seeder = Seeder::new(&emu);
    let removed = seeder.upload("", "removed.txt", b"removed elsewhere");
    let vanished = seeder.upload("", "vanished.txt", b"also removed elsewhere");
    let mount = Mount::start(&emu, "", &["--rc", "--dir-cache-time", "1h"]);
    let socket = socket_of(&mount);
    for probe in ["nope", ".git", "nope/deeper", "removed.txt/x"] {
        assert!(
            std::fs::metadata(mount.path().join(probe)).is_err(),
            "{probe}"
        );
    }
    assert_eq!(names_in(mount.path()), ["removed.txt", "vanished.txt"]);
    seeder.runtime.block_on(async {
        seeder.remote.remove_file(&removed.id).await.unwrap();
        seeder.remote.remove_file(&vanished.id).await.unwrap();
    });
    // The listing (kept for an hour) still shows both.
    std::fs::remove_file(mount.path().join("removed.txt")).unwrap();
    let (_, stats) = post_unix(&socket, "vfs/stats", "{}");
    assert!(
        stats["counters"]["request_errors"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert_eq!(stats["recent_errors"], json!([]), "{stats}");

    assert!(std::fs::read(mount.path().join("vanished.txt")).is_err());
    let (_, stats) = post_unix(&socket, "vfs/stats", "{}");
    let errors = stats["recent_errors"].as_array().unwrap();
    assert!(!errors.is_empty(), "{stats}");
    mount.unmount();
}
