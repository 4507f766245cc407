//! The control API server on a real Unix socket and on real loopback TCP,
//! against `FakeMountSurface`, an in-memory test double of the mount (the
//! mount's own implementation is tested through a real mount separately).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use parking_lot::Mutex;
use serde_json::{json, Value};

use common::control::{
    chromium_dom_until, element_attr, element_text, get_tcp, get_unix, parse_prometheus, post_tcp,
    post_unix, queue_rows,
};
use filehostfs::control::client::{self, RcClientArgs};
use filehostfs::control::{
    CacheUsage, ControlError, ControlPaths, ControlSurface, Counters, ForgetReport, MountInfo,
    PacerStatus, QueueItem, QueueState, RcEndpoint, RcListen, RcServer, RecentErrors,
    RefreshReport, RequestKind, SpaceUsage, StatsSnapshot, UnmountReport,
};

/// A test double of a mount: fixed identity, a queue the test edits, and a
/// log of the calls the server made.
struct FakeMountSurface {
    mountpoint: String,
    counters: Counters,
    errors: RecentErrors,
    queue: Mutex<Vec<QueueItem>>,
    calls: Mutex<Vec<String>>,
}

impl FakeMountSurface {
    fn new(mountpoint: &Path) -> Arc<Self> {
        let counters = Counters::new();
        counters.add_remote_read(3 * 1024 * 1024);
        counters.add_cache_read(1024);
        counters.count_request(RequestKind::List);
        counters.count_request(RequestKind::Download);
        counters.count_request(RequestKind::Download);
        counters.cache_hit();
        counters.cache_miss();
        counters.pacer_wait(Duration::from_millis(250));
        let errors = RecentErrors::new(10);
        errors.push(
            "upload",
            Some("Docs/big.iso"),
            "service answered 507: quota exceeded",
        );
        Arc::new(FakeMountSurface {
            mountpoint: mountpoint.display().to_string(),
            counters,
            errors,
            queue: Mutex::new(vec![
                item(1, "Docs/report.pdf", QueueState::Uploading, None),
                item(
                    2,
                    "Docs/big.iso",
                    QueueState::Retrying,
                    Some("service answered 507: quota exceeded"),
                ),
            ]),
            calls: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().clone()
    }

    fn set_state(&self, id: u64, state: QueueState) {
        let mut queue = self.queue.lock();
        let item = queue.iter_mut().find(|i| i.id == id).unwrap();
        item.state = state;
        if state == QueueState::Done {
            item.progress_bytes = item.size;
            item.last_error = None;
        }
    }
}

fn item(id: u64, path: &str, state: QueueState, error: Option<&str>) -> QueueItem {
    QueueItem {
        id,
        name: path.rsplit('/').next().unwrap().to_string(),
        path: path.to_string(),
        size: 4096 * id,
        state,
        attempts: id as u32,
        last_error: error.map(str::to_string),
        next_try: error.map(|_| Utc::now() + chrono::Duration::seconds(30)),
        progress_bytes: 1024,
    }
}

#[async_trait]
impl ControlSurface for FakeMountSurface {
    async fn mount_info(&self) -> MountInfo {
        MountInfo {
            remote: "work<&>".to_string(),
            service: "1fichier".to_string(),
            remote_path: String::new(),
            mountpoint: self.mountpoint.clone(),
            read_only: false,
            space: Some(SpaceUsage {
                used_bytes: 2 << 30,
                total_bytes: Some(10 << 30),
            }),
        }
    }

    async fn refresh(&self, dir: &str, recursive: bool) -> Result<RefreshReport, ControlError> {
        self.calls
            .lock()
            .push(format!("refresh {dir:?} {recursive}"));
        if dir == "missing" {
            return Err(ControlError::NotFound(format!("no folder {dir}")));
        }
        Ok(RefreshReport {
            dirs_listed: if recursive { 3 } else { 1 },
            entries_seen: 12,
        })
    }

    async fn forget(&self, path: &str) -> Result<ForgetReport, ControlError> {
        self.calls.lock().push(format!("forget {path:?}"));
        Ok(ForgetReport {
            entries_dropped: 2,
            bytes_dropped: 8192,
        })
    }

    async fn stats(&self) -> StatsSnapshot {
        StatsSnapshot::collect(
            &self.counters,
            &self.errors,
            CacheUsage {
                used_bytes: 5 << 20,
                limit_bytes: Some(100 << 20),
                files: 4,
                listings: 7,
            },
            PacerStatus {
                requests_last_hour: 42,
                budget_per_hour: Some(1000),
                budget_left: Some(958),
                waiting: 1,
            },
        )
    }

    async fn queue(&self) -> Vec<QueueItem> {
        self.queue.lock().clone()
    }

    async fn queue_retry(&self, id: u64) -> Result<QueueItem, ControlError> {
        self.calls.lock().push(format!("retry {id}"));
        let mut queue = self.queue.lock();
        let item = queue
            .iter_mut()
            .find(|i| i.id == id)
            .ok_or_else(|| ControlError::NotFound(format!("no queue item {id}")))?;
        if item.state == QueueState::Uploading {
            return Err(ControlError::Conflict(format!(
                "{} is uploading now",
                item.path
            )));
        }
        item.state = QueueState::Queued;
        item.next_try = None;
        Ok(item.clone())
    }

    async fn unmount(&self, timeout: Duration) -> Result<UnmountReport, ControlError> {
        self.calls
            .lock()
            .push(format!("unmount {}", timeout.as_secs()));
        let pending = self
            .queue
            .lock()
            .iter()
            .filter(|i| i.state.is_pending())
            .count();
        Ok(UnmountReport {
            unmounting: true,
            uploads_pending: pending as u64,
        })
    }
}

/// A server on a runtime of its own, over a fake surface, with a private
/// runtime folder and an existing mountpoint folder.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    server: Option<RcServer>,
    surface: Arc<FakeMountSurface>,
    paths: ControlPaths,
    mountpoint: PathBuf,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Fixture {
    fn unix() -> Self {
        Fixture::start(|paths, mountpoint| RcListen::Unix {
            socket: paths.socket_for(mountpoint),
        })
    }

    fn tcp() -> Self {
        Fixture::start(|paths, mountpoint| RcListen::Tcp {
            addr: "127.0.0.1:0".parse().unwrap(),
            token_file: paths.default_token_file(mountpoint),
        })
    }

    fn start(listen: impl FnOnce(&ControlPaths, &Path) -> RcListen) -> Self {
        let runtime_dir = tempfile::tempdir().unwrap();
        let mount_dir = tempfile::tempdir().unwrap();
        let paths = ControlPaths::under(runtime_dir.path());
        let mountpoint = mount_dir.path().to_path_buf();
        let surface = FakeMountSurface::new(&mountpoint);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let server = runtime
            .block_on(RcServer::start(
                surface.clone(),
                listen(&paths, &mountpoint),
                &mountpoint,
                &paths,
            ))
            .expect("the control server starts");
        Fixture {
            runtime,
            server: Some(server),
            surface,
            paths,
            mountpoint,
            _dirs: (runtime_dir, mount_dir),
        }
    }

    fn endpoint(&self) -> RcEndpoint {
        self.server.as_ref().unwrap().endpoint().clone()
    }

    fn socket(&self) -> PathBuf {
        match self.endpoint() {
            RcEndpoint::Unix { socket } => socket,
            other => panic!("not a Unix endpoint: {other:?}"),
        }
    }

    /// Address and token of a TCP server.
    fn tcp_access(&self) -> (String, String) {
        match self.endpoint() {
            RcEndpoint::Tcp { addr, token_file } => (
                addr.to_string(),
                std::fs::read_to_string(token_file)
                    .unwrap()
                    .trim()
                    .to_string(),
            ),
            other => panic!("not a TCP endpoint: {other:?}"),
        }
    }

    fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.stop());
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop();
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn unix_socket_is_private_and_stats_report_the_counters() {
    let mut fx = Fixture::unix();
    let socket = fx.socket();
    assert_eq!(mode(&socket), 0o600, "socket mode");
    assert_eq!(mode(fx.paths.dir()), 0o700, "runtime folder mode");
    let record = fx.paths.read_record(&fx.mountpoint).unwrap().unwrap();
    assert_eq!(record.socket.as_deref(), Some(socket.as_path()));
    assert_eq!(mode(&fx.paths.record_for(&fx.mountpoint)), 0o600);

    let (status, stats) = post_unix(&socket, "vfs/stats", "");
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["mount"]["remote"], "work<&>");
    assert_eq!(stats["mount"]["service"], "1fichier");
    assert_eq!(stats["counters"]["remote_read_bytes"], 3 * 1024 * 1024);
    assert_eq!(stats["counters"]["cache_read_bytes"], 1024);
    assert_eq!(stats["counters"]["requests"]["download"], 2);
    assert_eq!(stats["counters"]["requests"]["list"], 1);
    assert_eq!(stats["counters"]["requests_total"], 3);
    assert_eq!(stats["counters"]["cache_hit_ratio"], 0.5);
    assert_eq!(stats["counters"]["pacer_waits"], 1);
    assert_eq!(stats["cache"]["used_bytes"], 5 << 20);
    assert_eq!(stats["pacer"]["budget_left"], 958);
    assert_eq!(stats["pacer"]["requests_last_hour"], 42);
    assert!(stats["rates"]["remote_read_bytes_per_sec"].is_number());
    assert_eq!(stats["recent_errors"][0]["path"], "Docs/big.iso");
    assert_eq!(stats["recent_errors"][0]["source"], "upload");

    // No token on the socket, for the page as for operations.
    let (status, page) = get_unix(&socket, "/");
    assert_eq!(status, 200);
    assert!(page.contains("id=\"queue\""));

    fx.stop();
    assert!(!socket.exists(), "the socket goes with the server");
    assert!(fx.paths.read_record(&fx.mountpoint).unwrap().is_none());
}

#[test]
fn each_operation_answers_json() {
    let fx = Fixture::tcp();
    let (addr, token) = fx.tcp_access();
    let post = |op: &str, body: Value| post_tcp(&addr, Some(&token), op, &body.to_string());

    let (status, answer) = post("vfs/refresh", json!({"dir": "/Movies/", "recursive": true}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"dir": "Movies", "recursive": true,
               "result": {"dirs_listed": 3, "entries_seen": 12}})
    );
    let (status, answer) = post("vfs/refresh", json!({}));
    assert_eq!((status, &answer["dir"]), (200, &json!("")));

    let (status, answer) = post("vfs/forget", json!({"path": "Docs/a.txt"}));
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({"path": "Docs/a.txt", "result": {"entries_dropped": 2, "bytes_dropped": 8192}})
    );

    let (status, answer) = post("vfs/queue", json!({}));
    assert_eq!(status, 200);
    let queue = answer["queue"].as_array().unwrap();
    assert_eq!(queue.len(), 2);
    assert_eq!(queue[0]["path"], "Docs/report.pdf");
    assert_eq!(queue[0]["state"], "uploading");
    assert_eq!(queue[0]["progress_bytes"], 1024);
    assert_eq!(queue[1]["state"], "retrying");
    assert_eq!(queue[1]["attempts"], 2);
    assert_eq!(
        queue[1]["last_error"],
        "service answered 507: quota exceeded"
    );
    assert!(queue[1]["next_try"].is_string());

    let (status, answer) = post("vfs/queue-retry", json!({"id": 2}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["item"]["state"], "queued");
    assert_eq!(answer["item"]["next_try"], Value::Null);

    let (status, answer) = post("core/version", json!({}));
    assert_eq!(status, 200);
    assert_eq!(answer["name"], "filehostfs");
    assert_eq!(answer["version"], env!("CARGO_PKG_VERSION"));

    let (status, answer) = post("mount/unmount", json!({"timeout_secs": 5}));
    assert_eq!(status, 200);
    assert_eq!(answer, json!({"unmounting": true, "uploads_pending": 2}));

    assert_eq!(
        fx.surface.calls(),
        [
            "refresh \"Movies\" true",
            "refresh \"\" false",
            "forget \"Docs/a.txt\"",
            "retry 2",
            "unmount 5"
        ]
    );
}

#[test]
fn tcp_needs_the_token_for_everything() {
    let fx = Fixture::tcp();
    let (addr, token) = fx.tcp_access();
    let token_file = fx.paths.default_token_file(&fx.mountpoint);
    assert_eq!(mode(&token_file), 0o600, "generated token file mode");

    for given in [None, Some("wrong"), Some(&token[..token.len() - 1])] {
        let (status, answer) = post_tcp(&addr, given, "vfs/stats", "{}");
        assert_eq!(status, 401, "token {given:?}");
        assert_eq!(answer["status"], 401);
        assert!(answer["error"].as_str().unwrap().contains("token"));
        assert_eq!(get_tcp(&addr, given, "/").0, 401);
        assert_eq!(get_tcp(&addr, given, "/metrics").0, 401);
    }
    // Even an unknown operation says 401 first, not what exists.
    assert_eq!(post_tcp(&addr, None, "nope/nothing", "{}").0, 401);

    assert_eq!(post_tcp(&addr, Some(&token), "vfs/stats", "{}").0, 200);
    assert_eq!(get_tcp(&addr, Some(&token), "/metrics").0, 200);
    let (status, page) = get_tcp(&addr, None, &format!("/?token={token}"));
    assert_eq!(status, 200);
    assert!(page.starts_with("<!doctype html>"));
    // The query token opens the page only, not operations.
    assert_eq!(
        get_tcp(&addr, None, &format!("/metrics?token={token}")).0,
        401
    );
}

#[test]
fn errors_carry_a_status_that_says_what_went_wrong() {
    let fx = Fixture::unix();
    let socket = fx.socket();
    let cases: [(&str, &str, u16, &str); 12] = [
        ("vfs/nothing", "{}", 404, "unknown operation"),
        ("", "{}", 405, "not allowed"),
        ("vfs/refresh", "{\"dir\": 3}", 400, "bad parameters"),
        ("vfs/refresh", "{\"folder\": \"a\"}", 400, "unknown field"),
        ("vfs/refresh", "{\"dir\": \"a/../..\"}", 400, ".."),
        ("vfs/refresh", "[1]", 400, "JSON object"),
        ("vfs/refresh", "{not json", 400, "not JSON"),
        ("vfs/refresh", "{\"dir\": \"missing\"}", 404, "no folder"),
        ("vfs/forget", "{}", 400, "missing field"),
        ("vfs/queue-retry", "{\"id\": 99}", 404, "no queue item"),
        ("vfs/queue-retry", "{\"id\": 1}", 409, "uploading now"),
        ("mount/unmount", "{\"timeout_secs\": 100000}", 400, "limit"),
    ];
    for (op, body, expected, words) in cases {
        let (status, answer) = post_unix(&socket, op, body);
        assert_eq!(status, expected, "{op} {body}: {answer}");
        assert_eq!(answer["status"], expected);
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(words), "{op} {body}: {message}");
    }
    let (status, body) = get_unix(&socket, "/vfs/stats");
    assert_eq!(status, 405, "{body}");
    let (status, body) = get_unix(&socket, "/favicon.ico");
    assert_eq!(status, 405, "{body}");
}

#[test]
fn metrics_follow_the_prometheus_text_format() {
    let fx = Fixture::unix();
    let (status, text) = get_unix(&fx.socket(), "/metrics");
    assert_eq!(status, 200);
    let samples = parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(samples["filehostfs_remote_read_bytes_total"], 3145728.0);
    assert_eq!(samples["filehostfs_cache_read_bytes_total"], 1024.0);
    assert_eq!(samples["filehostfs_requests_total{kind=\"download\"}"], 2.0);
    assert_eq!(samples["filehostfs_requests_total{kind=\"upload\"}"], 0.0);
    assert_eq!(samples["filehostfs_cache_hits_total"], 1.0);
    assert_eq!(samples["filehostfs_pacer_wait_seconds_total"], 0.25);
    assert_eq!(samples["filehostfs_pacer_budget_left"], 958.0);
    assert_eq!(samples["filehostfs_space_free_bytes"], (8u64 << 30) as f64);
    assert_eq!(
        samples["filehostfs_upload_queue_items{state=\"retrying\"}"],
        1.0
    );
    assert_eq!(
        samples["filehostfs_mount_info{remote=\"work<&>\",service=\"1fichier\"}"],
        1.0
    );
    assert!(parse_prometheus("# TYPE x_bytes counter\n# HELP x_bytes h\nx_bytes 1\n").is_err());
    assert!(parse_prometheus("y 1\n").is_err());
}

#[test]
fn rc_and_status_print_what_the_api_says() {
    for fx in [Fixture::unix(), Fixture::tcp()] {
        // The client finds the server from the mountpoint's record alone.
        let args = RcClientArgs::default();
        let mut out = Vec::new();
        fx.runtime
            .block_on(client::run_rc(
                &args,
                &fx.paths,
                "vfs/refresh",
                &["dir=Movies".to_string(), "recursive=true".to_string()],
                &mut out,
            ))
            .unwrap();
        let printed: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(printed["result"]["dirs_listed"], 3);
        assert!(fx
            .surface
            .calls()
            .contains(&"refresh \"Movies\" true".to_string()));

        let mut out = Vec::new();
        fx.runtime
            .block_on(client::run_status(
                &args,
                &fx.paths,
                Some(&fx.mountpoint),
                &mut out,
            ))
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let expected_lines = [
            format!("work<&> (1fichier) on {}", fx.mountpoint.display()),
            "Space:    2.0 GiB used, 8.0 GiB free".to_string(),
            "Uploads:  2 pending (12.0 KiB), 0 failed".to_string(),
            "  uploading Docs/report.pdf (4.0 KiB, 1 attempt)".to_string(),
            "  retrying  Docs/big.iso (8.0 KiB, 2 attempts): service answered 507: quota exceeded"
                .to_string(),
            "Cache:    5.0 MiB of 100.0 MiB in 4 files, 50% hits".to_string(),
            "Requests: 42 this hour, 958 of 1000 left, 3 since mount (0 failed)".to_string(),
            "Errors:   1 recent".to_string(),
        ];
        for line in &expected_lines {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }

        // An error from the API comes back as the API's message and status.
        let err = fx
            .runtime
            .block_on(client::run_rc(
                &args,
                &fx.paths,
                "vfs/queue-retry",
                &["id=99".to_string()],
                &mut Vec::new(),
            ))
            .unwrap_err();
        assert!(
            matches!(&err, client::ClientError::Api { status: 404, message } if message.contains("no queue item 99")),
            "{err}"
        );
    }
}

#[test]
fn status_without_a_server_says_so() {
    let runtime_dir = tempfile::tempdir().unwrap();
    let paths = ControlPaths::under(runtime_dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let err = runtime
        .block_on(client::run_status(
            &RcClientArgs::default(),
            &paths,
            Some(runtime_dir.path()),
            &mut Vec::new(),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("mounted with --rc"), "{err}");
    let err = runtime
        .block_on(client::run_status(
            &RcClientArgs::default(),
            &paths,
            None,
            &mut Vec::new(),
        ))
        .unwrap_err();
    assert!(matches!(err, client::ClientError::NoMounts), "{err}");
}

#[test]
fn a_live_socket_is_never_taken_over_but_a_stale_one_is() {
    let fx = Fixture::unix();
    let socket = fx.socket();
    let second = fx.runtime.block_on(RcServer::start(
        fx.surface.clone(),
        RcListen::Unix {
            socket: socket.clone(),
        },
        &fx.mountpoint,
        &fx.paths,
    ));
    assert!(second.is_err(), "a second server took a live socket");
    assert_eq!(post_unix(&socket, "core/version", "").0, 200);

    // A socket file nobody listens on (a crashed mount) is replaced.
    let stale = fx.paths.dir().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let server = fx
        .runtime
        .block_on(RcServer::start(
            fx.surface.clone(),
            RcListen::Unix {
                socket: stale.clone(),
            },
            &fx.mountpoint,
            &fx.paths,
        ))
        .expect("a stale socket is replaced");
    assert_eq!(post_unix(&stale, "core/version", "").0, 200);
    fx.runtime.block_on(server.stop());
}

#[test]
fn status_page_in_headless_chromium_shows_the_queue_live() {
    let fx = Fixture::tcp();
    let (addr, token) = fx.tcp_access();
    let url = format!("http://{addr}/?token={token}");
    let loaded = |dom: &str| dom.contains("data-loaded=\"1\"");

    let dom = chromium_dom_until(&url, Duration::from_secs(60), loaded);
    assert!(loaded(&dom), "the page never loaded its data:\n{dom}");
    assert_eq!(
        element_attr(&dom, "conn", "data-state").as_deref(),
        Some("ok")
    );
    assert_eq!(
        element_text(&dom, "mount-remote").as_deref(),
        Some("work<&>")
    );
    assert_eq!(
        element_text(&dom, "mount-service").as_deref(),
        Some("1fichier")
    );
    assert_eq!(
        element_text(&dom, "space-used").as_deref(),
        Some("2.0 GiB used")
    );
    assert_eq!(element_text(&dom, "space-free").as_deref(), Some("8.0 GiB"));
    assert_eq!(
        element_text(&dom, "cache-hit-ratio").as_deref(),
        Some("50%")
    );
    assert_eq!(
        element_text(&dom, "pacer-budget-left").as_deref(),
        Some("958 / 1000")
    );
    assert_eq!(element_text(&dom, "queue-pending").as_deref(), Some("2"));
    let rows = queue_rows(&dom);
    let states: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.path.as_str(), r.state.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            ("Docs/report.pdf", "uploading"),
            ("Docs/big.iso", "retrying")
        ]
    );
    assert!(dom.contains("service answered 507: quota exceeded"));
    assert!(dom.contains("data-error=\"upload\""));

    fx.surface.set_state(1, QueueState::Done);
    let done = |dom: &str| {
        queue_rows(dom)
            .iter()
            .any(|r| r.path == "Docs/report.pdf" && r.state == "done")
    };
    let dom = chromium_dom_until(&url, Duration::from_secs(60), done);
    assert!(done(&dom), "the page never showed the upload done:\n{dom}");
    assert_eq!(element_text(&dom, "queue-pending").as_deref(), Some("1"));

    // Without the token the page loads nothing.
    let dom = common::control::chromium_dom(&format!("http://{addr}/"), Duration::from_secs(1));
    assert!(!loaded(&dom));
}
