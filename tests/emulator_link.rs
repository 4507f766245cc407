//! The hoster-like link of `filehostfs serve` (latency, pace per download
//! connection, concurrent downloads per account), through HTTP against a
//! real server process. Timings are checked as lower bounds only.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::multi::{fiione_url, fileio_url, http, send_json, start_multi, MultiKeys};
use common::Emulator;
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

/// The burst a paced connection may send ahead of its rate: the bucket's
/// capacity (two 64 KiB quanta).
const BURST: u64 = 128 * 1024;

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A direct link of a fresh 1fichier upload.
async fn fichier_link(emu: &Emulator, bytes: &[u8]) -> String {
    let emu_key = emu.key();
    let api = emu.fichier_url();
    let client = http();
    let call = |endpoint: &str, body: Value| {
        client
            .post(format!("{api}/{endpoint}.cgi"))
            .bearer_auth(&emu_key)
            .json(&body)
    };
    let (status, server) = send_json(call("upload/get_upload_server", json!({}))).await;
    assert_eq!(status, 200, "{server}");
    let (host, id) = (
        server["url"].as_str().unwrap(),
        server["id"].as_str().unwrap(),
    );
    let scheme = if api.starts_with("https") {
        "https"
    } else {
        "http"
    };
    let form = Form::new().part("file[]", Part::bytes(bytes.to_vec()).file_name("f.bin"));
    let uploaded = client
        .post(format!("{scheme}://{host}/upload.cgi?id={id}"))
        .bearer_auth(&emu_key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert!(uploaded.status().is_success(), "{}", uploaded.status());
    let (status, end) = send_json(
        client
            .get(format!("{scheme}://{host}/end.pl?xid={id}"))
            .header("JSON", "1"),
    )
    .await;
    assert_eq!(status, 200, "{end}");
    let url = end["links"][0]["download"].as_str().unwrap().to_string();
    let (status, token) = send_json(call("download/get_token", json!({ "url": url }))).await;
    assert_eq!(status, 200, "{token}");
    token["url"].as_str().unwrap().to_string()
}

async fn fiione_link(emu: &Emulator, keys: &MultiKeys, bytes: &[u8]) -> String {
    let form = Form::new().part("file", Part::bytes(bytes.to_vec()).file_name("f.bin"));
    let (status, answer) = send_json(
        http()
            .post(format!("{}/upload", fiione_url(emu)))
            .bearer_auth(&keys.fiione)
            .multipart(form),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer["data"]["direct_link"].as_str().unwrap().to_string()
}

async fn fileio_link(emu: &Emulator, keys: &MultiKeys, bytes: &[u8]) -> String {
    let form = Form::new()
        .part("file", Part::bytes(bytes.to_vec()).file_name("f.bin"))
        .text("maxDownloads", "100");
    let (status, answer) = send_json(
        http()
            .post(format!("{}/", fileio_url(emu)))
            .bearer_auth(&keys.fileio)
            .multipart(form),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer["link"].as_str().unwrap().to_string()
}

/// Download counters of the account named `name` (`"<service>:<key>"`).
fn downloads(emu: &Emulator, name: &str) -> Value {
    emu.stats()["downloads"][name].clone()
}

/// Polls until the account's running downloads fall to `current`.
async fn wait_for_current(emu: &Emulator, name: &str, current: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let counters = downloads(emu, name);
        if counters["current"].as_u64() == Some(current) {
            return;
        }
        assert!(Instant::now() < deadline, "{name}: {counters}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn latency_delays_api_answers_and_first_bytes_of_downloads() {
    let (emu, keys) = start_multi(&["--link-latency-ms", "150"], &[]);
    let link = fichier_link(&emu, &data(1000)).await;
    let client = http();
    // Round trip = twice the one-way latency.
    let round_trip = Duration::from_millis(300);

    let started = Instant::now();
    let (status, _) = send_json(
        client
            .post(format!("{}/folder/ls.cgi", emu.fichier_url()))
            .bearer_auth(emu.key())
            .json(&json!({"folder_id": 0})),
    )
    .await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= round_trip, "{:?}", started.elapsed());

    for url in [
        link,
        fiione_link(&emu, &keys, b"abc").await,
        fileio_link(&emu, &keys, b"abc").await,
    ] {
        let started = Instant::now();
        let response = client.get(&url).send().await.unwrap();
        assert!(response.status().is_success(), "{url}");
        assert!(
            started.elapsed() >= round_trip,
            "{url}: {:?}",
            started.elapsed()
        );
    }

    // The admin API is not delayed, and the latency changes at run time.
    let (status, settings) = emu.admin("POST", "/_emulator/link", Some(json!({"latency_ms": 0})));
    assert_eq!(status, 200, "{settings}");
    let started = Instant::now();
    let response = client
        .post(format!("{}/folder/ls.cgi", emu.fichier_url()))
        .bearer_auth(emu.key())
        .json(&json!({"folder_id": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() < round_trip, "{:?}", started.elapsed());
}

/// Seconds a download of `len` bytes at `rate` takes at the least.
fn least_seconds(len: u64, rate: u64) -> f64 {
    (len - BURST) as f64 / rate as f64
}

#[tokio::test]
async fn each_download_connection_is_paced_on_its_own() {
    let rate = 1024 * 1024;
    let (emu, keys) = start_multi(&["--download-rate-per-connection", "1MiB"], &[]);
    let len = 2 * 1024 * 1024 + 12345;
    let bytes = data(len);
    let links = [
        fichier_link(&emu, &bytes).await,
        fiione_link(&emu, &keys, &bytes).await,
        fileio_link(&emu, &keys, &bytes).await,
    ];
    // Three connections at once, one per service: each at its own pace,
    // none slowed to a share of one.
    let started = Instant::now();
    let bodies = futures::future::join_all(links.iter().map(|url| async move {
        let body = http().get(url).send().await.unwrap().bytes().await.unwrap();
        (body, started.elapsed())
    }))
    .await;
    for (url, (body, took)) in links.iter().zip(bodies) {
        assert!(body[..] == bytes[..], "{url}: wrong bytes");
        let least = least_seconds(len as u64, rate);
        assert!(took.as_secs_f64() >= least, "{url}: {took:?} < {least} s");
    }
    // A range is paced too.
    let started = Instant::now();
    let part = http()
        .get(&links[0])
        .header("Range", "bytes=1000000-")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(part[..], bytes[1000000..]);
    let least = least_seconds(part.len() as u64, rate);
    assert!(started.elapsed().as_secs_f64() >= least);
}

#[tokio::test]
async fn pacing_applies_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost"])
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
    let (emu, _) = start_multi(
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--download-rate-per-connection",
            "1MiB",
            "--link-latency-ms",
            "100",
        ],
        &[],
    );
    let https = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap(),
        )
        .no_proxy()
        .build()
        .unwrap();
    let len = 2 * 1024 * 1024;
    let bytes = data(len);
    // The upload helper's client does not know the certificate: upload with this one.
    let api = emu.fichier_url();
    assert!(api.starts_with("https://"), "{api}");
    let call = |endpoint: &str, body: Value| {
        https
            .post(format!("{api}/{endpoint}.cgi"))
            .bearer_auth(emu.key())
            .json(&body)
    };
    let (_, server) = send_json(call("upload/get_upload_server", json!({}))).await;
    let (host, id) = (
        server["url"].as_str().unwrap(),
        server["id"].as_str().unwrap(),
    );
    let form = Form::new().part("file[]", Part::bytes(bytes.clone()).file_name("f.bin"));
    let uploaded = https
        .post(format!("https://{host}/upload.cgi?id={id}"))
        .bearer_auth(emu.key())
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert!(uploaded.status().is_success());
    let (_, end) = send_json(
        https
            .get(format!("https://{host}/end.pl?xid={id}"))
            .header("JSON", "1"),
    )
    .await;
    let url = end["links"][0]["download"].as_str().unwrap();
    let (_, token) = send_json(call("download/get_token", json!({ "url": url }))).await;

    let started = Instant::now();
    let response = https
        .get(token["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "latency over TLS"
    );
    let body = response.bytes().await.unwrap();
    assert!(body[..] == bytes[..]);
    let least = 0.2 + least_seconds(len as u64, 1024 * 1024);
    assert!(
        started.elapsed().as_secs_f64() >= least,
        "{:?}",
        started.elapsed()
    );
}

/// Opens `limit` downloads of `url` and keeps them streaming, checks that
/// one more gets `refusal` (status, body fragment), then that a slot comes
/// back when a client goes away mid-body and when a body is fully read.
async fn check_limit(emu: &Emulator, name: &str, url: &str, refusal: (u16, &str)) {
    let client = http();
    let mut open = Vec::new();
    for _ in 0..2 {
        let response = client.get(url).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{name}: {}",
            response.status()
        );
        open.push(response);
    }
    let refused = client.get(url).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), refusal.0, "{name}");
    assert!(refused.headers().get("retry-after").is_none(), "{name}");
    let text = refused.text().await.unwrap();
    assert!(text.contains(refusal.1), "{name}: {text}");
    // HEAD is not a download connection.
    let head = client.head(url).send().await.unwrap();
    assert!(head.status().is_success(), "{name}: HEAD {}", head.status());
    let counters = downloads(emu, name);
    assert_eq!(counters["current"], 2, "{name}: {counters}");
    assert_eq!(counters["peak"], 2, "{name}: {counters}");
    assert_eq!(counters["refused"], 1, "{name}: {counters}");

    // A client that goes away mid-body frees its slot.
    let mut dropped = open.pop().unwrap();
    let first = dropped.chunk().await.unwrap().expect("a first chunk");
    assert!(!first.is_empty());
    drop(dropped);
    wait_for_current(emu, name, 1).await;
    let again = client.get(url).send().await.unwrap();
    assert!(again.status().is_success(), "{name}: {}", again.status());

    // Bodies read to the end free theirs.
    let kept = open.pop().unwrap();
    let (a, b) = tokio::join!(kept.bytes(), again.bytes());
    assert!(a.is_ok() && b.is_ok(), "{name}");
    wait_for_current(emu, name, 0).await;
    assert_eq!(
        downloads(emu, name)["peak"],
        2,
        "{name}: never above the limit"
    );
}

#[tokio::test]
async fn one_download_past_the_limit_is_refused_as_each_service_would() {
    // Slow enough that the open downloads are still streaming when the
    // extra one arrives (half a MiB at 256 KiB/s: about 2 s each).
    let (emu, keys) = start_multi(
        &[
            "--max-downloads-per-key",
            "2",
            "--download-rate-per-connection",
            "256KiB",
        ],
        &[],
    );
    let bytes = data(512 * 1024);
    let fichier = fichier_link(&emu, &bytes).await;
    check_limit(
        &emu,
        &format!("1fichier:{}", emu.key()),
        &fichier,
        (403, "Too many simultaneous downloads"),
    )
    .await;
    let fiione = fiione_link(&emu, &keys, &bytes).await;
    check_limit(
        &emu,
        "fii.one:account:main",
        &fiione,
        (429, "<Code>SlowDown</Code>"),
    )
    .await;
    let fileio = fileio_link(&emu, &keys, &bytes).await;
    check_limit(
        &emu,
        &format!("file.io:{}", keys.fileio),
        &fileio,
        (429, "TOO_MANY_REQUESTS"),
    )
    .await;
    // The refused file.io download did not spend one of the file's downloads:
    // 2 + 1 (after the drop) + 1 HEAD (partial reads consume by default).
    let key = fileio.rsplit('/').next().unwrap();
    let (status, details) = send_json(
        http()
            .get(format!("{}/", fileio_url(&emu)))
            .bearer_auth(&keys.fileio),
    )
    .await;
    assert_eq!(status, 200, "{details}");
    let listed = details["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["key"] == key))
        .unwrap_or_else(|| panic!("{key} not listed: {details}"));
    assert_eq!(listed["downloads"], 4, "{listed}");
}

#[tokio::test]
async fn the_profile_and_runtime_changes_through_the_admin_api() {
    let (emu, _) = start_multi(&["--profile", "hoster", "--link-latency-ms", "0"], &[]);
    let (status, body) = emu.admin("GET", "/_emulator/link", None);
    assert_eq!(status, 200, "{body}");
    let settings: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        settings,
        json!({
            "latency_ms": 0,
            "download_rate_per_connection": 20 * 1024 * 1024,
            "max_downloads_per_key": 8,
        }),
        "the flag overrides the profile's latency only"
    );

    let (status, body) = emu.admin(
        "POST",
        "/_emulator/link",
        Some(json!({"max_downloads_per_key": 1, "download_rate_per_connection": 128 * 1024})),
    );
    assert_eq!(status, 200, "{body}");
    let link = fichier_link(&emu, &data(256 * 1024)).await;
    let client = http();
    let first = client.get(&link).send().await.unwrap();
    assert!(first.status().is_success());
    let second = client.get(&link).send().await.unwrap();
    assert_eq!(second.status(), 403, "the new limit applies at once");
    drop(first);

    let (status, body) = emu.admin(
        "POST",
        "/_emulator/link",
        Some(json!({"profile": "hoster"})),
    );
    assert_eq!(status, 200, "{body}");
    let settings: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(settings["latency_ms"], 20);
    assert_eq!(settings["max_downloads_per_key"], 8);
    for bad in [json!({"profile": "dialup"}), json!({"latency": 5})] {
        let (status, body) = emu.admin("POST", "/_emulator/link", Some(bad));
        assert_eq!(status, 400, "{body}");
    }
}
