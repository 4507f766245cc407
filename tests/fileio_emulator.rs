//! The file.io emulator through HTTP: every behaviour of section 5 of
//! `file-io.md`, against a real `filehostfs serve` process.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::multi::{
    assert_fileio_error, fileio_url, http, json_of, new_fileio_key, send_bytes, send_json,
    send_status, start_multi,
};
use reqwest::multipart::{Form, Part};
use serde_json::Value;

fn file_form(name: &str, bytes: &[u8]) -> Form {
    Form::new().part(
        "file",
        Part::bytes(bytes.to_vec())
            .file_name(name.to_string())
            .mime_str("text/plain")
            .unwrap(),
    )
}

fn expires_of(details: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(details["expires"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

/// The file key in an upload's or update's details.
fn key_of(details: &Value) -> String {
    details["key"].as_str().unwrap().to_string()
}

/// Checks that `expires` lies `lifetime` (within a minute) after `from`.
#[track_caller]
fn assert_expires_after(details: &Value, from: DateTime<Utc>, lifetime: chrono::Duration) {
    let actual = expires_of(details) - from;
    assert!((actual - lifetime).num_seconds().abs() < 60, "{actual}");
}

/// `(maxDownloads, autoDelete)` of a file's details.
fn download_limits(details: &Value) -> (Option<u64>, Option<bool>) {
    (
        details["maxDownloads"].as_u64(),
        details["autoDelete"].as_bool(),
    )
}

#[tokio::test]
async fn anonymous_upload_and_one_time_download() {
    let (emu, _) = start_multi(&[], &[]);
    let base = fileio_url(&emu);
    let client = http();
    let before = Utc::now();
    let (status, details) = send_json(
        client
            .post(format!("{base}/"))
            .multipart(file_form("note.txt", b"one time")),
    )
    .await;
    assert_eq!(status, 200, "{details}");
    assert_eq!(details["success"], true);
    assert_eq!(details["status"], 200);
    let key = key_of(&details);
    assert_eq!(key.len(), 12);
    assert!(key.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(details["link"], format!("{base}/{key}"));
    assert_eq!(details["name"], "note.txt");
    assert_eq!(details["size"], 8);
    assert_eq!(details["downloads"], 0);
    assert_eq!(details["maxDownloads"], 1);
    assert_eq!(details["autoDelete"], true);
    assert_eq!(details["nodeType"], "file");
    assert_eq!(details["mimeType"], "text/plain");
    uuid::Uuid::parse_str(details["id"].as_str().unwrap()).unwrap();
    assert_expires_after(&details, before, chrono::Duration::days(14));

    emu.reset_stats();
    let download = client.get(format!("{base}/{key}")).send().await.unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.headers()["content-type"], "text/plain");
    let disposition = download.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        disposition.starts_with("attachment") && disposition.contains("note.txt"),
        "{disposition}"
    );
    assert_eq!(download.bytes().await.unwrap(), "one time");
    // The one allowed download is spent: the key is gone.
    let answer = send_json(client.get(format!("{base}/{key}"))).await;
    assert_fileio_error(&answer, 404, "FILE_NOT_FOUND");
    assert_eq!(answer.1["key"], key.as_str());
    assert_eq!(emu.request_count("file.io:download"), 2);
    // A key that never existed answers the same.
    let answer = send_json(client.get(format!("{base}/AAAAAAAAAAAA"))).await;
    assert_fileio_error(&answer, 404, "FILE_NOT_FOUND");
}

#[tokio::test]
async fn options_as_form_fields_or_query_parameters() {
    let (emu, keys) = start_multi(&[], &[]);
    let base = fileio_url(&emu);
    let client = http();
    let upload = |form: Form, query: &[(&str, &str)]| {
        send_json(
            client
                .post(format!("{base}/"))
                .bearer_auth(&keys.fileio)
                .query(query)
                .multipart(form),
        )
    };
    let form = file_form("a", b"a")
        .text("expires", "2w")
        .text("maxDownloads", "3")
        .text("autoDelete", "false");
    let now = Utc::now();
    let (status, details) = upload(form, &[]).await;
    assert_eq!(status, 200, "{details}");
    assert_eq!(details["maxDownloads"], 3);
    assert_eq!(details["autoDelete"], false);
    assert_expires_after(&details, now, chrono::Duration::weeks(2));

    let (_, details) = upload(
        file_form("b", b"b"),
        &[("expires", "1d"), ("maxDownloads", "2")],
    )
    .await;
    assert_eq!(details["maxDownloads"], 2);
    assert_expires_after(&details, now, chrono::Duration::days(1));

    // Months (`m`, as in the original API), years, hours and ISO dates.
    for (value, approx_days) in [("1m", 28..=31), ("1y", 365..=366), ("6h", 0..=0)] {
        let (status, details) = upload(file_form("c", b"c"), &[("expires", value)]).await;
        assert_eq!(status, 200, "{value}: {details}");
        let days = (expires_of(&details) - now).num_days();
        assert!(approx_days.contains(&days), "{value}: {days} days");
    }
    let (_, details) = upload(
        file_form("d", b"d").text("expires", "2099-01-02T03:04:05Z"),
        &[],
    )
    .await;
    assert_eq!(details["expires"], "2099-01-02T03:04:05.000Z");

    for (field, value) in [
        ("expires", "soon"),
        ("expires", "0d"),
        ("expires", "2001-01-01"),
        ("maxDownloads", "0"),
        ("maxDownloads", "many"),
        ("autoDelete", "perhaps"),
    ] {
        let answer = upload(file_form("e", b"e").text(field, value), &[]).await;
        assert_fileio_error(&answer, 400, "BAD_REQUEST");
    }
    let answer = send_json(
        client
            .post(format!("{base}/"))
            .multipart(Form::new().text("text", "hi")),
    )
    .await;
    assert_fileio_error(&answer, 400, "BAD_REQUEST");
}

#[tokio::test]
async fn downloads_count_until_the_limit_and_expiry_removes_files() {
    let (emu, keys) = start_multi(&[], &[]);
    let base = fileio_url(&emu);
    let client = http();
    let upload = |query: &'static [(&'static str, &'static str)], name: &str| {
        let request = client
            .post(format!("{base}/"))
            .bearer_auth(&keys.fileio)
            .query(query)
            .multipart(file_form(name, b"payload"));
        async move { key_of(&send_json(request).await.1) }
    };
    let list = || async {
        let (_, body) = send_json(client.get(format!("{base}/")).bearer_auth(&keys.fileio)).await;
        body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["name"].as_str().unwrap().to_string(),
                    n["downloads"].as_u64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let download_status = |key: &str| send_status(client.get(format!("{base}/{key}")));
    let twice = upload(&[("maxDownloads", "2")], "twice").await;
    for _ in 0..2 {
        assert_eq!(download_status(&twice).await, 200);
        // The count is visible in the listing until the file goes.
    }
    assert!(list().await.iter().all(|(name, _)| name != "twice"));
    assert_eq!(download_status(&twice).await, 404);

    // Without autoDelete the limit does not remove the file.
    let kept = upload(&[("maxDownloads", "1"), ("autoDelete", "false")], "kept").await;
    for _ in 0..2 {
        assert_eq!(download_status(&kept).await, 200);
    }
    assert!(list().await.contains(&("kept".to_string(), 2)));

    // Expiry: gone from downloads and listings once the time has passed.
    let brief = upload(&[("expires", "3s")], "brief").await;
    assert!(list().await.iter().any(|(name, _)| name == "brief"));
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(list().await.iter().all(|(name, _)| name != "brief"));
    let answer = send_json(client.get(format!("{base}/{brief}"))).await;
    assert_fileio_error(&answer, 404, "FILE_NOT_FOUND");
}

#[tokio::test]
async fn head_and_ranged_reads_consume_unless_switched_off() {
    for consume in [true, false] {
        let flag = if consume { "true" } else { "false" };
        let (emu, _) = start_multi(&["--fileio-partial-reads-consume", flag], &[]);
        let base = fileio_url(&emu);
        let client = http();
        let upload = || async {
            let (_, details) = send_json(
                client
                    .post(format!("{base}/"))
                    .multipart(file_form("r.txt", b"0123456789")),
            )
            .await;
            key_of(&details)
        };
        let key = upload().await;
        let head = client.head(format!("{base}/{key}")).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()["content-length"], "10");
        let after_head = send_status(client.get(format!("{base}/{key}"))).await;
        assert_eq!(after_head == 404, consume, "HEAD consumed: {after_head}");

        let key = upload().await;
        let part = client
            .get(format!("{base}/{key}"))
            .header("Range", "bytes=2-4")
            .send()
            .await
            .unwrap();
        assert_eq!(part.status(), 206);
        assert_eq!(part.bytes().await.unwrap(), "234");
        let after_range = send_status(client.get(format!("{base}/{key}"))).await;
        assert_eq!(after_range == 404, consume, "range consumed: {after_range}");
    }
}

#[tokio::test]
async fn list_update_delete_and_me_need_a_key() {
    let (emu, keys) = start_multi(&[], &[]);
    let base = fileio_url(&emu);
    let client = http();
    let auth = |r: reqwest::RequestBuilder| send_json(r.bearer_auth(&keys.fileio));
    for name in ["alpha.txt", "beta.txt", "gamma.log"] {
        let (status, _) = auth(
            client
                .post(format!("{base}/"))
                .multipart(file_form(name, name.as_bytes())),
        )
        .await;
        assert_eq!(status, 200);
    }
    // An anonymous upload is nobody's: it does not show in the listing.
    send_status(
        client
            .post(format!("{base}/"))
            .multipart(file_form("anon", b"x")),
    )
    .await;

    let (status, body) = auth(client.get(format!("{base}/"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["status"], 200);
    assert_eq!(body["count"], 3);
    assert_eq!(body["size"], 9 + 8 + 9);
    let (_, body) = auth(
        client
            .get(format!("{base}/"))
            .query(&[("search", "TXT"), ("sort", "name")]),
    )
    .await;
    let names: Vec<&str> = body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha.txt", "beta.txt"]);
    let (_, body) = auth(client.get(format!("{base}/")).query(&[
        ("offset", "1"),
        ("limit", "1"),
        ("sort", "name"),
    ]))
    .await;
    assert_eq!(body["nodes"][0]["name"], "beta.txt");
    assert_eq!(body["count"], 1);
    let key = key_of(&body["nodes"][0]);

    // PATCH keeps what it is not given; PUT resets it to the defaults.
    let (status, details) = auth(
        client.patch(format!("{base}/{key}")).multipart(
            Form::new()
                .text("maxDownloads", "5")
                .text("autoDelete", "false"),
        ),
    )
    .await;
    assert_eq!(status, 200, "{details}");
    assert_eq!(download_limits(&details), (Some(5), Some(false)));
    let (_, details) = auth(
        client
            .patch(format!("{base}/{key}"))
            .query(&[("expires", "3d")]),
    )
    .await;
    assert_eq!(download_limits(&details), (Some(5), Some(false)));
    let (_, details) = auth(
        client
            .put(format!("{base}/{key}"))
            .multipart(file_form("beta-v2.txt", b"second version").text("maxDownloads", "2")),
    )
    .await;
    assert_eq!(details["key"], key.as_str());
    assert_eq!(details["name"], "beta-v2.txt");
    assert_eq!(details["size"], 14);
    assert_eq!(download_limits(&details), (Some(2), Some(true)));
    assert_expires_after(&details, Utc::now(), chrono::Duration::days(14));
    assert_eq!(
        send_bytes(client.get(format!("{base}/{key}"))).await,
        "second version"
    );

    // DELETE, then the key is unknown.
    let (status, body) = auth(client.delete(format!("{base}/{key}"))).await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({"success": true, "status": 200}));
    assert_fileio_error(
        &auth(client.delete(format!("{base}/{key}"))).await,
        404,
        "FILE_NOT_FOUND",
    );
    assert_fileio_error(
        &auth(client.patch(format!("{base}/{key}"))).await,
        404,
        "FILE_NOT_FOUND",
    );

    // /me, with Bearer or Basic (the key as user name).
    let (status, me) = auth(client.get(format!("{base}/me"))).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["success"], true);
    assert_eq!(me["usedStorageBytes"], 9 + 9);
    assert!(me["maxUploadBytes"].as_u64().unwrap() > 0);
    assert_eq!(me["rateLimit"], 0);
    let (status, _) = send_json(
        client
            .get(format!("{base}/me"))
            .basic_auth(&keys.fileio, Some("")),
    )
    .await;
    assert_eq!(status, 200);

    // No key or a wrong one: 401 in the same error shape.
    for request in [
        client.get(format!("{base}/")),
        client.get(format!("{base}/me")),
        client.delete(format!("{base}/AAAAAAAAAAAA")),
        client.patch(format!("{base}/AAAAAAAAAAAA")),
        client.get(format!("{base}/")).bearer_auth("not-a-key"),
    ] {
        assert_fileio_error(&send_json(request).await, 401, "UNAUTHORIZED");
    }
    // Another account cannot touch these files.
    let other = new_fileio_key();
    drop(emu);
    let (emu, keys) = start_multi(&[], &[format!("file.io {other} rate_limit=0")]);
    let base = fileio_url(&emu);
    let (_, details) = send_json(
        client
            .post(format!("{base}/"))
            .bearer_auth(&keys.fileio)
            .multipart(file_form("mine", b"m")),
    )
    .await;
    let key = details["key"].as_str().unwrap();
    assert_fileio_error(
        &send_json(client.delete(format!("{base}/{key}")).bearer_auth(&other)).await,
        404,
        "FILE_NOT_FOUND",
    );
}

#[tokio::test]
async fn rate_limit_and_size_limit() {
    let limited = new_fileio_key();
    let tiny = new_fileio_key();
    // The serve-wide default (1 per minute, the documented free limit)
    // applies to anonymous callers; keys may carry their own.
    let (emu, _) = start_multi(
        &["--fileio-rate-limit", "1"],
        &[
            format!("file.io {limited} rate_limit=2"),
            format!("file.io {tiny} rate_limit=0 max_upload_bytes=10"),
        ],
    );
    let base = fileio_url(&emu);
    let client = http();
    let (status, _) = send_json(
        client
            .post(format!("{base}/"))
            .multipart(file_form("a", b"a")),
    )
    .await;
    assert_eq!(status, 200);
    let second = client
        .post(format!("{base}/"))
        .multipart(file_form("b", b"b"))
        .send()
        .await
        .unwrap();
    let wait: u64 = second.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let answer = json_of(second).await;
    assert_fileio_error(&answer, 429, "TOO_MANY_REQUESTS");
    assert_eq!(answer.1["message"], "Too many requests");
    assert_eq!(answer.1["key"], Value::Null);

    let list = || client.get(format!("{base}/")).bearer_auth(&limited);
    for _ in 0..2 {
        assert_eq!(send_status(list()).await, 200);
    }
    assert_fileio_error(&send_json(list()).await, 429, "TOO_MANY_REQUESTS");

    // The plan's upload size.
    let upload_as_tiny = |name: &str, bytes: &[u8]| {
        send_json(
            client
                .post(format!("{base}/"))
                .bearer_auth(&tiny)
                .multipart(file_form(name, bytes)),
        )
    };
    let answer = upload_as_tiny("big", &[1u8; 11]).await;
    assert_fileio_error(&answer, 413, "FILE_TOO_LARGE");
    let (status, _) = upload_as_tiny("fits", &[1u8; 10]).await;
    assert_eq!(status, 200);

    // Injected bursts answer in the same shape.
    emu.set_faults(serde_json::json!({"rate_limit_burst": 1}));
    let me = || client.get(format!("{base}/me")).bearer_auth(&tiny);
    assert_fileio_error(&send_json(me()).await, 429, "TOO_MANY_REQUESTS");
    assert_eq!(send_status(me()).await, 200);
}

#[tokio::test]
async fn files_and_download_counts_survive_a_kill_9_and_restart() {
    let (mut emu, keys) = start_multi(&[], &[]);
    let base = fileio_url(&emu);
    let client = http();
    let (_, details) = send_json(
        client
            .post(format!("{base}/"))
            .bearer_auth(&keys.fileio)
            .query(&[("maxDownloads", "2")])
            .multipart(file_form("durable.txt", b"still here")),
    )
    .await;
    let key = key_of(&details);
    assert_eq!(send_status(client.get(format!("{base}/{key}"))).await, 200);
    emu.restart();
    // A new client: the old one's pooled connection died with the server.
    let client = http();
    let (_, listed) = send_json(client.get(format!("{base}/")).bearer_auth(&keys.fileio)).await;
    assert_eq!(listed["nodes"][0]["downloads"], 1, "{listed}");
    assert_eq!(
        send_bytes(client.get(format!("{base}/{key}"))).await,
        "still here"
    );
    assert_eq!(send_status(client.get(format!("{base}/{key}"))).await, 404);
}
