//! Uploads (three steps, multipart, checksums) and direct-link downloads
//! (Range, HEAD, expiry) against a real `filehostfs serve` process.

mod common;

use common::fichier_client::{fetch, whirlpool_hex, FichierClient};
use common::Emulator;
use reqwest::blocking::multipart;
use serde_json::json;

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

fn is_paris_date(text: &str) -> bool {
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").is_ok()
}

#[test]
fn one_byte_and_multi_mib_uploads_report_whirlpool_and_download_intact() {
    let emu = Emulator::start();
    let client = FichierClient::new(&emu);
    let folder = client.mkdir(0, "uploads");

    let one = client.upload(folder, "one.bin", b"x");
    assert_eq!(one["size"], "1", "end.pl size is a string: {one}");
    assert_eq!(one["filename"], "one.bin");
    assert_eq!(one["remove"], "", "linked to an account: no removal URL");
    assert_eq!(one["whirlpool"], whirlpool_hex(b"x"));

    let data = pseudo_random(5 * 1024 * 1024 + 123, 7);
    let big = client.upload(folder, "big video.mkv", &data);
    assert_eq!(big["size"], data.len().to_string());
    assert_eq!(big["whirlpool"], whirlpool_hex(&data));
    let url = big["download"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/?", emu.base_url())), "{url}");
    let id = url.rsplit('?').next().unwrap();
    assert!(id.len() >= 5 && id.len() <= 20);
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));

    let items = client.files(folder);
    assert_eq!(items.len(), 2);
    let item = items.iter().find(|i| i["url"] == url).expect("listed");
    assert_eq!(item["filename"], "big video.mkv");
    assert_eq!(item["size"], data.len() as u64, "file/ls size is a number");
    assert_eq!(item["checksum"], whirlpool_hex(&data));
    assert_eq!(item["content-type"], "video/x-matroska");
    assert!(is_paris_date(item["date"].as_str().unwrap()), "{item}");
    for member in ["pass", "acl", "cdn"] {
        assert_eq!(item[member], 0, "{member} in {item}");
    }

    let info = client.ok("file/info", json!({"url": url}));
    assert_eq!(info["content_type"], "video/x-matroska");
    assert_eq!(info["folder_id"], folder);
    assert_eq!(info["path"], "uploads");
    assert_eq!(info["checksum"], whirlpool_hex(&data));

    let got = fetch("GET", &client.token(url), None);
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-length"), Some(data.len().to_string()));
    assert_eq!(got.header("accept-ranges").as_deref(), Some("bytes"));
    assert!(got.body == data, "downloaded bytes differ");

    let stats = emu.stats();
    assert_eq!(stats["requests"]["1fichier:upload"], 2);
    assert_eq!(stats["requests"]["1fichier:download"], 1);
    assert!(stats["bytes_served"].as_u64().unwrap() >= data.len() as u64);
    assert!(stats["bytes_received"].as_u64().unwrap() > data.len() as u64);
}

#[test]
fn zero_byte_upload_is_refused_and_leaves_nothing() {
    let emu = Emulator::start();
    let client = FichierClient::new(&emu);
    let form = multipart::Form::new().text("did", "0").part(
        "file[]",
        multipart::Part::bytes(Vec::new()).file_name("empty.txt"),
    );
    let (host, id, response) = client.upload_raw(form);
    assert_eq!(response.status().as_u16(), 403);
    let body: serde_json::Value = response.json().unwrap();
    assert_eq!(body["status"], "KO");
    assert!(body["message"].as_str().unwrap().contains('#'), "{body}");
    assert!(client.files(0).is_empty());
    let end = client.end(&host, &id);
    assert_eq!(end["links"].as_array().map(Vec::len).unwrap_or(0), 0);
}

#[test]
fn upload_placement_duplicates_and_refusals() {
    let emu = Emulator::start();
    let client = FichierClient::new(&emu);
    // An unknown folder id puts the file in the root (§4.13).
    client.upload(987_654, "lost.txt", b"where am I");
    assert_eq!(client.files(0).len(), 1);
    // Duplicate names are allowed and get distinct links.
    let a = client.upload(0, "same.txt", b"first");
    let b = client.upload(0, "same.txt", b"second");
    assert_ne!(a["download"], b["download"]);
    assert_eq!(
        client
            .files(0)
            .iter()
            .filter(|i| i["filename"] == "same.txt")
            .count(),
        2
    );
    // Names the service forbids are refused with the KO shape.
    for bad in ["a<b.txt", "quote'.txt", " lead.txt", "dollar$.txt"] {
        let form = multipart::Form::new().text("did", "0").part(
            "file[]",
            multipart::Part::bytes(b"data".to_vec()).file_name(bad.to_string()),
        );
        let (_, _, response) = client.upload_raw(form);
        assert_eq!(response.status().as_u16(), 403, "{bad}");
        let body: serde_json::Value = response.json().unwrap();
        assert_eq!(body["status"], "KO", "{bad}");
    }
    // Unicode and spaces are fine.
    let ok = client.upload(0, "été — 日本 file.txt", b"unicode");
    assert_eq!(ok["filename"], "été — 日本 file.txt");

    // An upload id is single-use, and must have been issued.
    let http = common::fichier_client::http_client();
    let response = http
        .post(format!("{}/upload.cgi?id=NOTISSUED1", emu.base_url()))
        .bearer_auth(emu.key())
        .multipart(multipart::Form::new().part(
            "file[]",
            multipart::Part::bytes(b"x".to_vec()).file_name("x.txt"),
        ))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    // An id belongs to the account that asked for it.
    let (_, id) = client.ok_get_upload_server();
    let response = http
        .post(format!("{}/upload.cgi?id={id}", emu.base_url()))
        .bearer_auth(&emu.fichier_keys()[1])
        .multipart(multipart::Form::new().part(
            "file[]",
            multipart::Part::bytes(b"x".to_vec()).file_name("x.txt"),
        ))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let response = http
        .get(format!("{}/upload.cgi?id=x", emu.base_url()))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
}

#[test]
fn upload_without_key_goes_to_an_anonymous_upload() {
    let emu = Emulator::start();
    let client = FichierClient::new(&emu);
    let server = client.ok_get_upload_server();
    let http = common::fichier_client::http_client();
    let response = http
        .post(format!("http://{}/upload.cgi?id={}", server.0, server.1))
        .multipart(multipart::Form::new().text("did", "0").part(
            "file[]",
            multipart::Part::bytes(b"anon".to_vec()).file_name("anon.txt"),
        ))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 302);
    let end = client.end(&server.0, &server.1);
    let link = &end["links"][0];
    assert_ne!(link["remove"], "", "anonymous uploads get a removal URL");
    assert!(client.files(0).is_empty(), "not in the account");
    let (status, _) = client.call("file/info", json!({"url": link["download"]}));
    assert_eq!(status, 404);
}

#[test]
fn end_pl_answers_html_unless_json_is_asked() {
    let emu = Emulator::start();
    let client = FichierClient::new(&emu);
    let form = multipart::Form::new().text("did", "0").part(
        "file[]",
        multipart::Part::bytes(b"hello".to_vec()).file_name("h.txt"),
    );
    let (host, id, _) = client.upload_raw(form);
    let html = client
        .http
        .get(format!("http://{host}/end.pl?xid={id}"))
        .send()
        .unwrap();
    assert!(html.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(html.text().unwrap().starts_with('<'));
    let by_query: serde_json::Value = client
        .http
        .get(format!("http://{host}/end.pl?xid={id}&JSON=1"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(by_query["links"][0]["filename"], "h.txt");
    assert_eq!(by_query["incoming"], 0);
    let unknown = client.end(&host, "nosuchxid0");
    assert_eq!(unknown["links"].as_array().map(Vec::len).unwrap_or(0), 0);
}

#[test]
fn range_requests_follow_http_semantics() {
    let emu = Emulator::start();
    let client = FichierClient::new(&emu);
    let data = pseudo_random(3 * 1024 * 1024 + 5, 3);
    let link = client.upload(0, "r.bin", &data);
    let url = client.token(link["download"].as_str().unwrap());
    let size = data.len();

    let first = fetch("GET", &url, Some("bytes=0-0"));
    assert_eq!(first.status, 206);
    assert_eq!(first.body, &data[..1]);
    assert_eq!(
        first.header("content-range"),
        Some(format!("bytes 0-0/{size}"))
    );

    let last = fetch("GET", &url, Some(&format!("bytes={}-", size - 1)));
    assert_eq!(last.status, 206);
    assert_eq!(last.body, &data[size - 1..]);
    assert_eq!(last.header("content-length").as_deref(), Some("1"));

    let suffix = fetch("GET", &url, Some("bytes=-1000"));
    assert_eq!(suffix.status, 206);
    assert_eq!(suffix.body, &data[size - 1000..]);
    assert_eq!(
        suffix.header("content-range"),
        Some(format!("bytes {}-{}/{size}", size - 1000, size - 1))
    );

    let middle = fetch("GET", &url, Some("bytes=1048575-2097152"));
    assert_eq!(middle.status, 206);
    assert!(middle.body == data[1048575..=2097152]);

    let past_end = fetch("GET", &url, Some("bytes=100-99999999999"));
    assert_eq!(past_end.status, 206);
    assert!(past_end.body == data[100..]);

    let beyond = fetch("GET", &url, Some(&format!("bytes={size}-")));
    assert_eq!(beyond.status, 416);
    assert_eq!(
        beyond.header("content-range"),
        Some(format!("bytes */{size}"))
    );

    let head = fetch("HEAD", &url, None);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some(size.to_string()));
    assert_eq!(
        head.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert!(head.body.is_empty());

    let head_range = fetch("HEAD", &url, Some("bytes=10-19"));
    assert_eq!(head_range.status, 206);
    assert_eq!(head_range.header("content-length").as_deref(), Some("10"));

    let post = common::fichier_client::http_client()
        .post(&url)
        .send()
        .unwrap();
    assert_eq!(post.status().as_u16(), 405);
}

#[test]
fn download_links_expire_and_unknown_tokens_are_404() {
    let emu = Emulator::start_with(&["--link-expiry-secs", "2"]);
    let client = FichierClient::new(&emu);
    let link = client.upload(0, "e.txt", b"expiring");
    let url = client.token(link["download"].as_str().unwrap());
    assert_eq!(fetch("GET", &url, None).body, b"expiring");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(fetch("GET", &url, None).status, 410);
    let fresh = client.token(link["download"].as_str().unwrap());
    assert_eq!(fetch("GET", &fresh, None).status, 200);
    let unknown = format!("{}/dl/doesnotexist", emu.base_url());
    assert_eq!(fetch("GET", &unknown, None).status, 404);

    // Fault: links handed out already expired.
    emu.set_faults(json!({"expire_links": true}));
    let expired = client.token(link["download"].as_str().unwrap());
    assert_eq!(fetch("GET", &expired, None).status, 410);
}

#[test]
fn injected_download_errors_answer_nginx_5xx_then_the_bytes() {
    let emu = Emulator::start();
    let client = FichierClient::new(&emu);
    let link = client.upload(0, "d.txt", b"0123456789");
    let url = client.token(link["download"].as_str().unwrap());
    emu.set_faults(json!({"download_error_burst": 2}));
    for range in [Some("bytes=2-5"), None] {
        let failed = fetch("GET", &url, range);
        assert_eq!(failed.status, 503);
        assert_eq!(failed.header("content-type").as_deref(), Some("text/html"));
        assert!(String::from_utf8_lossy(&failed.body).contains("<html>"));
    }
    let ranged = fetch("GET", &url, Some("bytes=2-5"));
    assert_eq!((ranged.status, ranged.body.as_slice()), (206, &b"2345"[..]));
    // At a rate of 1, every download fails; API calls are untouched.
    emu.set_faults(json!({"download_error_rate": 1.0}));
    assert!(fetch("GET", &url, None).status >= 500);
    assert!(!client.token(link["download"].as_str().unwrap()).is_empty());
    let (status, _) = emu.admin(
        "POST",
        "/_emulator/faults",
        Some(json!({"download_error_rate": 1.5})),
    );
    assert_eq!(status, 400);
}

#[test]
fn get_token_errors() {
    let emu = Emulator::start();
    let client = FichierClient::new(&emu);
    let (status, body) = client.call(
        "download/get_token",
        json!({"url": format!("{}/?aaaaaaaaaaaaaaaaaaaa", emu.base_url()), "single": 1}),
    );
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"status": "KO", "message": "Resource not found #469"})
    );
    let (status, body) = client.call("download/get_token", json!({"url": 12}));
    assert_eq!(status, 403);
    assert_eq!(body["status"], "KO");
    let (status, _) = client.call("download/get_token", json!({"single": 1}));
    assert_eq!(status, 403);
}

#[test]
fn parallel_uploads_and_ranged_downloads_stay_consistent() {
    let emu = Emulator::start();
    let folder = FichierClient::new(&emu).mkdir(0, "parallel");
    let workers: Vec<_> = (0..6u64)
        .map(|worker| {
            let client = FichierClient::new(&emu);
            std::thread::spawn(move || {
                let data = pseudo_random(256 * 1024 + worker as usize * 1000, worker);
                let link = client.upload(folder, &format!("part {worker}.bin"), &data);
                assert_eq!(link["whirlpool"], whirlpool_hex(&data));
                let url = client.token(link["download"].as_str().unwrap());
                for i in 0..8usize {
                    let start = (i * 31_337 + worker as usize * 7) % data.len();
                    let end = (start + 40_000).min(data.len() - 1);
                    let got = fetch("GET", &url, Some(&format!("bytes={start}-{end}")));
                    assert_eq!(got.status, 206);
                    assert!(got.body == data[start..=end], "worker {worker} range {i}");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker panicked");
    }
    assert_eq!(FichierClient::new(&emu).files(folder).len(), 6);
}

/// 1fichier refuses empty files, but the shared Range code also serves
/// file.io, which stores them: check the 0-length edge cases there.
#[test]
fn zero_length_file_ranges_over_http() {
    let emu = Emulator::start_with(&["--fileio-rate-limit", "0"]);
    let http = common::fichier_client::http_client();
    let uploaded: serde_json::Value = http
        .post(format!("{}/", emu.service_url("file.io")))
        .multipart(multipart::Form::new().text("maxDownloads", "10").part(
            "file",
            multipart::Part::bytes(Vec::new()).file_name("empty.txt"),
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(uploaded["size"], 0, "{uploaded}");
    let link = uploaded["link"].as_str().unwrap();
    let head = fetch("HEAD", link, None);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length").as_deref(), Some("0"));
    let ranged = fetch("GET", link, Some("bytes=0-"));
    assert_eq!(ranged.status, 416);
    assert_eq!(ranged.header("content-range").as_deref(), Some("bytes */0"));
    let suffix = fetch("GET", link, Some("bytes=-1"));
    assert_eq!(suffix.status, 416);
    let full = fetch("GET", link, None);
    assert_eq!(full.status, 200);
    assert!(full.body.is_empty());
}
