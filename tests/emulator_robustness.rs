//! Flood control, fault injection, admin API, durability across `kill -9`,
//! memory use of large uploads, remote upload, TLS and `--public-url`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fichier_client::{fetch, http_client, whirlpool_hex, FichierClient};
use common::Emulator;
use serde_json::{json, Value};

fn flood_body(code: u32) -> Value {
    json!({"status": "KO", "message": format!("Flood detected: IP Locked #{code}")})
}

#[test]
fn flood_control_refuses_bursts_then_lifts_after_the_lock() {
    let emu =
        Emulator::start_with_flood_control(&["--flood-lock-secs", "3", "--flood-code", "412"]);
    let client = FichierClient::new(&emu);
    let mut refused = None;
    // Bounded by count; four calls land within one second as long as a
    // loopback call takes under ~250 ms.
    for _ in 0..100 {
        let (status, body) = client.call("folder/ls", json!({"folder_id": 0}));
        if status != 200 {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("100 calls in a row must hit the 3/s limit");
    assert_eq!(status, 403);
    assert_eq!(body, flood_body(412));
    // Locked: still refused right away, even for another endpoint.
    let (status, body) = client.call("file/ls", json!({"folder_id": 0}));
    assert_eq!((status, body), (403, flood_body(412)));
    // The lock is per caller: another account is unaffected.
    let other = FichierClient::with_key(&emu, &emu.fichier_keys()[1]);
    other.ok("folder/ls", json!({"folder_id": 0}));
    std::thread::sleep(Duration::from_millis(3300));
    client.ok("folder/ls", json!({"folder_id": 0}));
}

#[test]
fn per_endpoint_limits_user_info_and_whole_account_listing() {
    let emu = Emulator::start_with_flood_control(&["--flood-rate", "1000"]);
    let client = FichierClient::new(&emu);
    client.ok("user/info", json!({}));
    let (status, body) = client.call("user/info", json!({}));
    assert_eq!(status, 403);
    assert_eq!(body, flood_body(38));
    client.ok("file/ls", json!({"folder_id": -1}));
    let (status, body) = client.call("file/ls", json!({"folder_id": -1}));
    assert_eq!((status, body), (403, flood_body(374)));
    // Listing one folder is not limited that way.
    client.ok("file/ls", json!({"folder_id": 0}));
    client.ok("file/ls", json!({"folder_id": 0}));
}

#[test]
fn fault_injection_at_start_and_at_run_time() {
    let emu = Emulator::start_with(&["--fault-rate-limit-burst", "2"]);
    let client = FichierClient::new(&emu);
    for _ in 0..2 {
        let (status, body) = client.call("folder/ls", json!({"folder_id": 0}));
        assert_eq!((status, body), (403, flood_body(374)));
    }
    client.ok("folder/ls", json!({"folder_id": 0}));
    assert_eq!(emu.faults()["rate_limit_burst"], 0);

    // Every call a 5xx with nginx's HTML page.
    emu.set_faults(json!({"error_rate": 1.0}));
    let response = client
        .http
        .post(format!("{}/folder/ls.cgi", emu.fichier_url()))
        .bearer_auth(&client.key)
        .json(&json!({"folder_id": 0}))
        .send()
        .unwrap();
    assert!(response.status().is_server_error(), "{}", response.status());
    assert!(response.text().unwrap().contains("nginx"));
    emu.set_faults(json!({"error_rate": 0.0}));

    // Added latency.
    emu.set_faults(json!({"latency_ms": 400}));
    let started = Instant::now();
    client.ok("folder/ls", json!({"folder_id": 0}));
    assert!(started.elapsed() >= Duration::from_millis(400));
    emu.set_faults(json!({"latency_ms": 0}));

    // Download bodies cut short: the client sees an error or a short body.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let link = client.upload(0, "cut.bin", &data);
    let url = client.token(link["download"].as_str().unwrap());
    let settings = emu.set_faults(json!({"cut_body_after": 50_000}));
    assert_eq!(settings["cut_body_after"], 50_000);
    let response = http_client().get(&url).send().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // An Err means the connection dropped mid-body, as intended.
    if let Ok(body) = response.bytes() {
        assert!(body.len() < data.len(), "body was not cut");
    }
    // A resumed range read gets the rest, again cut after 50 000 bytes.
    let resumed = http_client()
        .get(&url)
        .header("Range", "bytes=50000-")
        .send()
        .unwrap();
    assert_eq!(resumed.status().as_u16(), 206);
    if let Ok(rest) = resumed.bytes() {
        assert!(rest.len() <= 50_000, "resumed body was not cut");
    }
    let cleared = emu.set_faults(json!({"cut_body_after": null}));
    assert_eq!(cleared["cut_body_after"], Value::Null);
    assert!(fetch("GET", &url, None).body == data);
}

#[test]
fn admin_endpoints_need_the_admin_key() {
    let emu = Emulator::start();
    let http = http_client();
    for (method, path) in [
        ("GET", "/_emulator/stats"),
        ("POST", "/_emulator/stats/reset"),
        ("GET", "/_emulator/faults"),
        ("POST", "/_emulator/faults"),
    ] {
        let url = format!("{}{path}", emu.base_url());
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let anonymous = http.request(method.clone(), &url).send().unwrap();
        assert_eq!(anonymous.status().as_u16(), 401, "{path}");
        let user_key = http
            .request(method, &url)
            .bearer_auth(emu.key())
            .send()
            .unwrap();
        assert_eq!(user_key.status().as_u16(), 403, "{path}");
    }
    let (status, _) = emu.admin(
        "POST",
        "/_emulator/faults",
        Some(json!({"error_rate": 2.0})),
    );
    assert_eq!(status, 400);
    let (status, _) = emu.admin("POST", "/_emulator/faults", Some(json!({"bogus": 1})));
    assert_eq!(status, 400);

    let client = FichierClient::new(&emu);
    client.ok("folder/ls", json!({"folder_id": 0}));
    client.ok("folder/ls", json!({"folder_id": 0}));
    assert_eq!(emu.request_count("1fichier:folder/ls"), 2);
    emu.reset_stats();
    assert_eq!(emu.request_count("1fichier:folder/ls"), 0);
    assert_eq!(emu.stats()["bytes_served"], 0);
}

#[test]
fn restart_on_the_same_data_dir_keeps_everything() {
    let mut emu = Emulator::start();
    let client = FichierClient::new(&emu);
    let folder = client.mkdir(0, "kept");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let link = client.upload(folder, "kept.bin", &data);
    let url = link["download"].as_str().unwrap().to_string();
    client.ok(
        "file/rename",
        json!({"urls": [{"url": url, "filename": "renamed.bin"}], "pretty": 0}),
    );
    let before_files = client.files(folder);
    let before_folders = client.subfolders(0);

    emu.kill9();
    emu.restart();
    let client = FichierClient::new(&emu);
    assert_eq!(client.subfolders(0), before_folders);
    assert_eq!(client.files(folder), before_files);
    let info = client.ok("file/info", json!({"url": url}));
    assert_eq!(info["filename"], "renamed.bin");
    assert_eq!(info["checksum"], whirlpool_hex(&data));
    assert!(fetch("GET", &client.token(&url), None).body == data);
}

/// Starts a multipart upload by hand and sends only part of the file.
fn start_partial_upload(
    emu: &Emulator,
    client: &FichierClient,
    declared: usize,
) -> (TcpStream, String) {
    let (_, id) = client.ok_get_upload_server();
    let boundary = "----partialboundary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"did\"\r\n\r\n0\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file[]\"; filename=\"partial.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let total = head.len() + declared + tail.len();
    let mut stream = TcpStream::connect(emu.addr).unwrap();
    write!(
        stream,
        "POST /upload.cgi?id={id} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {total}\r\n\r\n{head}",
        emu.addr, client.key
    )
    .unwrap();
    let chunk = vec![b'p'; 64 * 1024];
    for _ in 0..(declared / 2 / chunk.len()) {
        stream.write_all(&chunk).unwrap();
    }
    stream.flush().unwrap();
    (stream, id)
}

fn dir_entries(path: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(path)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

#[test]
fn kill_9_during_an_upload_leaves_no_visible_partial_file() {
    let mut emu = Emulator::start();
    let client = FichierClient::new(&emu);
    let done = client.upload(0, "complete.txt", b"answered with success");
    let (stream, xid) = start_partial_upload(&emu, &client, 8 * 1024 * 1024);

    // Wait until the server has really started writing the partial file.
    let tmp = emu.data_dir().join("tmp");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let written: u64 = dir_entries(&tmp)
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        if written > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the partial upload never reached disk"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    emu.kill9();
    drop(stream);
    emu.restart();

    let client = FichierClient::new(&emu);
    let files = client.files(0);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0]["url"], done["download"]);
    assert!(
        dir_entries(&tmp).is_empty(),
        "temp files survived a restart"
    );
    assert_eq!(dir_entries(&emu.data_dir().join("blobs")).len(), 1);
    let end = client.end(&emu.addr.to_string(), &xid);
    assert_eq!(end["links"].as_array().map(Vec::len).unwrap_or(0), 0);
    let token = client.token(done["download"].as_str().unwrap());
    assert_eq!(fetch("GET", &token, None).body, b"answered with success");
}

#[test]
fn an_abandoned_upload_is_cleaned_up_at_once() {
    let emu = Emulator::start();
    let client = FichierClient::new(&emu);
    let (stream, _) = start_partial_upload(&emu, &client, 4 * 1024 * 1024);
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    let tmp = emu.data_dir().join("tmp");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir_entries(&tmp).is_empty() {
        assert!(
            Instant::now() < deadline,
            "temp file of an abandoned upload kept"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(client.files(0).is_empty());
}

fn resident_peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// A reader producing `len` bytes without holding them in memory.
struct Pattern {
    left: u64,
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[test]
fn a_large_upload_is_streamed_not_buffered() {
    let emu = Emulator::start();
    let client = FichierClient::new(&emu);
    let pid = emu.pid().unwrap();
    // Warm up allocator and pools with a small upload first.
    client.upload(0, "warm.bin", &[1u8; 1024 * 1024]);
    let before = resident_peak_kib(pid);

    const SIZE: u64 = 192 * 1024 * 1024;
    let (host, id) = client.ok_get_upload_server();
    let part = reqwest::blocking::multipart::Part::reader_with_length(Pattern { left: SIZE }, SIZE)
        .file_name("large.bin");
    let form = reqwest::blocking::multipart::Form::new()
        .text("did", "0")
        .part("file[]", part);
    let response = client
        .http
        .post(format!("http://{host}/upload.cgi?id={id}"))
        .bearer_auth(&client.key)
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 302);
    let end = client.end(&host, &id);
    assert_eq!(end["links"][0]["size"], SIZE.to_string());
    let growth_mib = resident_peak_kib(pid).saturating_sub(before) / 1024;
    assert!(
        growth_mib < 64,
        "peak memory grew by {growth_mib} MiB for a {} MiB upload",
        SIZE >> 20
    );
}

#[test]
fn remote_upload_fetches_loopback_urls_only() {
    let emu = Emulator::start();
    let client = FichierClient::new(&emu);
    let folder = client.mkdir(0, "fetched");
    let source = client.upload(0, "source.txt", b"fetched by the server");
    let direct = client.token(source["download"].as_str().unwrap());

    let (status, body) = client.call(
        "remote/request",
        json!({"urls": ["http://example.com/file.bin"], "folder_id": folder}),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body["message"].as_str().unwrap().ends_with("#714"));

    let request = client.ok(
        "remote/request",
        json!({"urls": [direct], "folder_id": folder, "headers": {"X-Test": "1"}}),
    );
    let id = request["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let info = loop {
        let info = client.ok("remote/info", json!({"id": id}));
        if !info["execution_date"].is_null() {
            break info;
        }
        assert!(Instant::now() < deadline, "remote request never ran");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(info["result"][0]["status"], "OK", "{info}");
    let listed = client.ok("remote/ls", json!({}));
    assert_eq!(listed["data"][0]["id"], id);
    let files = client.files(folder);
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["url"], info["result"][0]["download_link"]);
    assert_eq!(
        files[0]["checksum"],
        whirlpool_hex(b"fetched by the server")
    );
    let (status, _) = client.call("remote/info", json!({"id": id + 100}));
    assert_eq!(status, 404);
}

#[test]
fn public_url_shapes_every_handed_out_url() {
    let emu = Emulator::start_with(&["--public-url", "http://files.example.test:8443/"]);
    assert_eq!(emu.fichier_url(), "http://files.example.test:8443/v1");
    // That host does not resolve here: talk to the real address.
    let mut client = FichierClient::new(&emu);
    client.api = format!("{}/v1", emu.base_url());
    let (host, id) = client.ok_get_upload_server();
    assert_eq!(host, "files.example.test:8443");
    // The node host is not reachable here: upload through the real address.
    let form = reqwest::blocking::multipart::Form::new()
        .text("did", "0")
        .part(
            "file[]",
            reqwest::blocking::multipart::Part::bytes(b"pub".to_vec()).file_name("p.txt"),
        );
    let response = client
        .http
        .post(format!("{}/upload.cgi?id={id}", emu.base_url()))
        .bearer_auth(&client.key)
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 302);
    assert!(response.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("http://files.example.test:8443/end.pl?xid="));
    let file = &client.files(0)[0];
    let url = file["url"].as_str().unwrap();
    assert!(url.starts_with("http://files.example.test:8443/?"), "{url}");
    let token = client.token(url);
    assert!(
        token.starts_with("http://files.example.test:8443/dl/"),
        "{token}"
    );
}

#[test]
fn tls_serves_the_api_over_https() {
    let emu_dir = tempfile::tempdir().unwrap();
    let cert = emu_dir.path().join("cert.pem");
    let key = emu_dir.path().join("key.pem");
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
        ])
        .arg("/CN=localhost")
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is needed to make a test certificate");
    assert!(status.success());
    let emu = Emulator::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let api = emu.fichier_url();
    assert!(api.starts_with("https://127.0.0.1:"), "{api}");
    let https = reqwest::blocking::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap(),
        )
        .no_proxy()
        .build()
        .unwrap();
    let response = https
        .post(format!("{api}/folder/ls.cgi"))
        .bearer_auth(emu.key())
        .json(&json!({"folder_id": 0}))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.json::<Value>().unwrap()["status"], "OK");
    // Plain HTTP on the TLS port gets nowhere.
    assert!(http_client()
        .post(format!("http://{}/v1/folder/ls.cgi", emu.addr))
        .bearer_auth(emu.key())
        .json(&json!({"folder_id": 0}))
        .send()
        .map(|r| r.status().as_u16() != 200)
        .unwrap_or(true));
}

/// Kills the child on drop (for tests that run `serve` without the harness).
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn without_keys_file_keys_are_generated_into_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("stderr.log");
    let child = Command::new(env!("CARGO_BIN_EXE_filehostfs"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-flood-control",
            "--data-dir",
        ])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard(child);
    let mut stdout = std::io::BufReader::new(guard.0.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    let addr: std::net::SocketAddr = first.trim().parse().unwrap();
    assert!(addr.ip().is_loopback());
    let mut second = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut second).unwrap();
    assert_eq!(second.trim(), format!("1fichier http://{addr}/v1"));

    let keys_file = data.join("keys.txt");
    let admin_file = data.join("admin.key");
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.contains(keys_file.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains(admin_file.to_str().unwrap()), "{stderr}");
    let key = std::fs::read_to_string(&keys_file)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(key.len(), 32);
    let response = http_client()
        .post(format!("http://{addr}/v1/folder/ls.cgi"))
        .bearer_auth(&key)
        .json(&json!({"folder_id": 0}))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let admin = std::fs::read_to_string(&admin_file)
        .unwrap()
        .trim()
        .to_string();
    let stats = http_client()
        .get(format!("http://{addr}/_emulator/stats"))
        .bearer_auth(&admin)
        .send()
        .unwrap();
    assert_eq!(stats.status().as_u16(), 200);
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let emu = Emulator::start();
    let client = FichierClient::new(&emu);
    client.upload(0, "mine.txt", b"first server's file");
    let log = emu.temp_dir().join("second.log");
    let child = Command::new(env!("CARGO_BIN_EXE_filehostfs"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(emu.data_dir())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the second server kept running");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.contains("in use"), "{stderr}");
    // The first server is unharmed, and nothing was written for the second.
    assert_eq!(client.files(0).len(), 1);
    assert!(!emu.data_dir().join("keys.txt").exists());
}
