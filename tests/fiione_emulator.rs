//! The fii.one emulator through HTTP: every behaviour of section 5 of
//! `fii-one.md`, against a real `filehostfs serve` process.

mod common;

use common::multi::{
    assert_fiione_error, fiione_url, http, json_of, new_fiione_key, send_bytes, send_json,
    send_status, start_multi,
};
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

fn multipart_file(field: &str, file_name: &str, bytes: &[u8], mime: Option<&str>) -> Form {
    let mut part = Part::bytes(bytes.to_vec()).file_name(file_name.to_string());
    if let Some(mime) = mime {
        part = part.mime_str(mime).unwrap();
    }
    Form::new().part(field.to_string(), part)
}

async fn upload_bytes(base: &str, key: &str, name: &str, bytes: &[u8]) -> Value {
    let answer = send_json(
        http()
            .post(format!("{base}/upload"))
            .bearer_auth(key)
            .multipart(multipart_file("file", name, bytes, None)),
    )
    .await;
    assert_eq!(answer.0, 200, "{}", answer.1);
    answer.1["data"].clone()
}

#[tokio::test]
async fn keys_are_read_from_three_places_and_checked() {
    let expired = new_fiione_key();
    let inactive = new_fiione_key();
    let upload_only = new_fiione_key();
    let (emu, keys) = start_multi(
        &[],
        &[
            format!("fii.one {expired} expires=2020-01-01T00:00:00Z"),
            format!("fii.one {inactive} active=false"),
            format!("fii.one {upload_only} permissions=upload"),
        ],
    );
    let base = fiione_url(&emu);
    let client = http();
    let list = |auth: Option<String>, query: Option<&str>| {
        let mut request = client.get(format!("{base}/files"));
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        if let Some(key) = query {
            request = request.query(&[("key", key)]);
        }
        send_json(request)
    };
    // Bearer, raw header and query parameter all work.
    for (status, body) in [
        list(Some(format!("Bearer {}", keys.fiione)), None).await,
        list(Some(keys.fiione.clone()), None).await,
        list(None, Some(&keys.fiione)).await,
    ] {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["success"], true);
    }
    // The query parameter is only read when no Authorization header is sent.
    let answer = list(Some("Bearer wrong".into()), Some(&keys.fiione)).await;
    assert_fiione_error(&answer, 401, "Invalid or missing API key");
    for bad in [
        None,
        Some(format!("Bearer {}", new_fiione_key())),
        Some(format!("Bearer {expired}")),
        Some(format!("Bearer {inactive}")),
    ] {
        let answer = list(bad, None).await;
        assert_fiione_error(&answer, 401, "Invalid or missing API key");
    }

    // Permissions, with each route's own message.
    let uploaded = upload_bytes(&base, &keys.fiione, "a.txt", b"abc").await;
    let id = uploaded["id"].as_str().unwrap().to_string();
    let answer = list(Some(format!("Bearer {upload_only}")), None).await;
    assert_fiione_error(&answer, 403, "API key does not have read permission");
    let answer = send_json(
        client
            .get(format!("{base}/files/{id}"))
            .bearer_auth(&upload_only),
    )
    .await;
    assert_fiione_error(&answer, 403, "No read permission");
    let answer = send_json(
        client
            .delete(format!("{base}/files/{id}"))
            .bearer_auth(&keys.fiione_no_delete),
    )
    .await;
    assert_fiione_error(&answer, 403, "No delete permission");
    let read_only = new_fiione_key();
    drop(emu);
    let (emu, _) = start_multi(&[], &[format!("fii.one {read_only} permissions=read")]);
    let base = fiione_url(&emu);
    let answer = send_json(
        client
            .post(format!("{base}/upload"))
            .bearer_auth(&read_only)
            .multipart(multipart_file("file", "x", b"x", None)),
    )
    .await;
    assert_fiione_error(&answer, 403, "API key does not have upload permission");
    let answer = send_json(
        client
            .patch(format!("{base}/files/{id}"))
            .bearer_auth(&read_only)
            .json(&json!({"name": "b"})),
    )
    .await;
    assert_fiione_error(&answer, 403, "No edit permission");
}

#[tokio::test]
async fn uploads_in_every_documented_form() {
    let small = new_fiione_key();
    let (emu, keys) = start_multi(&[], &[format!("fii.one {small} max_file_size_mb=1")]);
    let base = fiione_url(&emu);
    let client = http();
    let post = |form: Form, key: &str| {
        send_json(
            client
                .post(format!("{base}/upload"))
                .bearer_auth(key)
                .multipart(form),
        )
    };

    // Multipart `image`, with the part's type as mime.
    let (status, body) = post(
        multipart_file("image", "cat.jpg", b"jpeg!", Some("image/jpeg")),
        &keys.fiione,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(data["title"], "cat.jpg");
    assert_eq!(data["mime"], "image/jpeg");
    assert_eq!(data["size"], 5);
    let id = data["id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
    assert_eq!(data["url"], data["direct_link"]);
    assert_eq!(data["delete_url"], format!("{base}/files/{id}"));
    let share = data["share_url"].as_str().unwrap();
    let token = share.rsplit('/').next().unwrap();
    assert_eq!(token.len(), 6, "{share}");
    assert!(token.chars().all(|c| c.is_ascii_alphanumeric()), "{share}");
    chrono::DateTime::parse_from_rfc3339(data["created_at"].as_str().unwrap()).unwrap();
    assert!(data["created_at"].as_str().unwrap().ends_with('Z'));

    // Multipart `file` with a custom `name`; no part type → octet-stream.
    let form = multipart_file("file", "ignored.bin", b"data", None).text("name", "chosen name.txt");
    let (_, body) = post(form, &keys.fiione).await;
    assert_eq!(body["data"]["title"], "chosen name.txt");
    assert_eq!(body["data"]["mime"], "application/octet-stream");
    // The object name keeps the quirk: no dot → the whole name is the extension.
    let (_, body) = post(multipart_file("file", "README", b"r", None), &keys.fiione).await;
    assert!(
        body["data"]["direct_link"]
            .as_str()
            .unwrap()
            .ends_with(".README"),
        "{body}"
    );

    // JSON base64: a data URI gives the mime; a bare string gets the defaults.
    let json_upload = |value: Value| {
        send_json(
            client
                .post(format!("{base}/upload"))
                .bearer_auth(&keys.fiione)
                .json(&value),
        )
    };
    let (status, body) =
        json_upload(json!({"image": "data:image/gif;base64,R0lGODlh", "name": "g.gif"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["mime"], "image/gif");
    assert_eq!(body["data"]["title"], "g.gif");
    assert_eq!(body["data"]["size"], 6);
    let (_, body) = json_upload(json!({"image": "aGVsbG8="})).await;
    assert_eq!(body["data"]["title"], "upload.png");
    assert_eq!(body["data"]["mime"], "image/png");
    let link = body["data"]["direct_link"].as_str().unwrap().to_string();
    assert_eq!(send_bytes(client.get(&link)).await, "hello");

    // The documented 400s.
    let answer = json_upload(json!({"name": "x"})).await;
    assert_fiione_error(
        &answer,
        400,
        "No image data provided. Use base64 'image' field.",
    );
    let answer = post(Form::new().text("name", "x"), &keys.fiione).await;
    assert_fiione_error(
        &answer,
        400,
        "No file provided. Use 'image' or 'file' field.",
    );
    let answer = send_json(
        client
            .post(format!("{base}/upload"))
            .bearer_auth(&keys.fiione)
            .header("Content-Type", "text/plain")
            .body("x"),
    )
    .await;
    assert_fiione_error(
        &answer,
        400,
        "Unsupported content type. Use multipart/form-data or application/json.",
    );

    // The plan's size limit.
    let big = vec![7u8; 1024 * 1024 + 1];
    let answer = post(multipart_file("file", "big", &big, None), &small).await;
    assert_fiione_error(&answer, 413, "File exceeds max size limit (1 MB)");
    let exact = vec![7u8; 1024 * 1024];
    let (status, _) = post(multipart_file("file", "exact", &exact, None), &small).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn listing_pages_newest_first_with_the_limit_cap() {
    let (emu, keys) = start_multi(&[], &[]);
    let base = fiione_url(&emu);
    let client = http();
    let mut ids = Vec::new();
    for i in 0..7 {
        let data = upload_bytes(&base, &keys.fiione, &format!("f{i}"), b"x").await;
        ids.push(data["id"].as_str().unwrap().to_string());
    }
    ids.reverse(); // newest first
    let page = |query: Vec<(&'static str, String)>| {
        send_json(
            client
                .get(format!("{base}/files"))
                .bearer_auth(&keys.fiione)
                .query(&query),
        )
    };
    let mut seen = Vec::new();
    for n in 1..=3 {
        let (status, body) = page(vec![("page", n.to_string()), ("limit", "3".into())]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["pagination"],
            json!({"page": n, "limit": 3, "total": 7, "pages": 3})
        );
        for item in body["data"].as_array().unwrap() {
            assert!(
                item.get("folder_id").is_none(),
                "list items carry no folder_id"
            );
            seen.push(item["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(seen, ids);
    // Defaults: page 1, limit 50; the limit is capped at 100.
    let (_, body) = page(vec![]).await;
    assert_eq!(
        body["pagination"],
        json!({"page": 1, "limit": 50, "total": 7, "pages": 1})
    );
    let (_, body) = page(vec![("limit", "1000".into())]).await;
    assert_eq!(body["pagination"]["limit"], 100);
    // Past the end: an empty page.
    let (_, body) = page(vec![("page", "9".into())]).await;
    assert_eq!(body["data"], json!([]));
    // Values the real server chokes on.
    for bad in [
        vec![("page", "0".to_string())],
        vec![("page", "abc".into())],
        vec![("limit", "x".into())],
    ] {
        let answer = page(bad).await;
        assert_fiione_error(&answer, 500, "Failed to list files");
    }
    // Another account sees none of these.
    let other = new_fiione_key();
    drop(emu);
    let (emu, _) = start_multi(&[], &[format!("fii.one {other}")]);
    let (_, body) = send_json(
        client
            .get(format!("{}/files", fiione_url(&emu)))
            .bearer_auth(&other),
    )
    .await;
    assert_eq!(body["pagination"]["total"], 0);
}

#[tokio::test]
async fn get_patch_delete_and_their_odd_answers() {
    let (emu, keys) = start_multi(&[], &[]);
    let base = fiione_url(&emu);
    let client = http();
    let data = upload_bytes(&base, &keys.fiione, "old.txt", b"0123456789").await;
    let id = data["id"].as_str().unwrap().to_string();
    let link = data["direct_link"].as_str().unwrap().to_string();
    let get = || {
        send_json(
            client
                .get(format!("{base}/files/{id}"))
                .bearer_auth(&keys.fiione),
        )
    };
    let (status, body) = get().await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["folder_id"], Value::Null);
    assert!(body["data"]["updated_at"].is_string());

    // Rename keeps the direct link.
    let patch = |value: Value| {
        send_json(
            client
                .patch(format!("{base}/files/{id}"))
                .bearer_auth(&keys.fiione)
                .json(&value),
        )
    };
    let (status, body) = patch(json!({"name": "new.txt"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["id"], id.as_str());
    assert_eq!(body["data"]["title"], "new.txt");
    let (_, body) = get().await;
    assert_eq!(body["data"]["title"], "new.txt");
    assert_eq!(body["data"]["direct_link"], link.as_str());
    // An empty name is ignored.
    let (_, body) = patch(json!({"name": ""})).await;
    assert_eq!(body["data"]["title"], "new.txt");

    // Move into a folder seeded through the admin hook, then back to root.
    let (status, created) = emu.admin(
        "POST",
        "/_emulator/fiione/folders",
        Some(json!({"name": "Photos", "key": keys.fiione})),
    );
    assert_eq!(status, 200, "{created}");
    let folder: Value = serde_json::from_str(&created).unwrap();
    let folder = folder["id"].as_str().unwrap().to_string();
    let (_, body) = patch(json!({"folder_id": folder})).await;
    assert_eq!(body["data"]["folder_id"], folder.as_str());
    let (_, body) = get().await;
    assert_eq!(body["data"]["folder_id"], folder.as_str());
    let (_, body) = patch(json!({"folder_id": null})).await;
    assert_eq!(body["data"]["folder_id"], Value::Null);
    // Unknown or malformed folder ids, bodies and titles fail like the real server.
    for bad in [
        json!({"folder_id": uuid::Uuid::new_v4().to_string()}),
        json!({"folder_id": "photos"}),
        json!({"name": "x".repeat(256)}),
    ] {
        let answer = patch(bad).await;
        assert_fiione_error(&answer, 500, "Failed to update file");
    }
    let answer = send_json(
        client
            .patch(format!("{base}/files/{id}"))
            .bearer_auth(&keys.fiione)
            .body("{not json"),
    )
    .await;
    assert_fiione_error(&answer, 500, "Failed to update file");

    // Non-UUID ids answer 500 with each route's message; unknown UUIDs 404.
    let auth = |r: reqwest::RequestBuilder| send_json(r.bearer_auth(&keys.fiione));
    let answer = auth(client.get(format!("{base}/files/nope"))).await;
    assert_fiione_error(&answer, 500, "Failed to get file");
    let answer = auth(
        client
            .patch(format!("{base}/files/nope"))
            .json(&json!({"name": "a"})),
    )
    .await;
    assert_fiione_error(&answer, 500, "Failed to update file");
    let answer = auth(client.delete(format!("{base}/files/nope"))).await;
    assert_fiione_error(&answer, 500, "Failed to delete file");
    let unknown = uuid::Uuid::new_v4();
    let answer = auth(client.get(format!("{base}/files/{unknown}"))).await;
    assert_fiione_error(&answer, 404, "File not found");

    // Delete is permanent: the file, its link and a second delete all 404.
    let (status, body) = auth(client.delete(format!("{base}/files/{id}"))).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"], json!({"id": id, "deleted": true}));
    let answer = get().await;
    assert_fiione_error(&answer, 404, "File not found");
    let answer = auth(client.delete(format!("{base}/files/{id}"))).await;
    assert_fiione_error(&answer, 404, "File not found");
    assert_eq!(send_status(client.get(&link)).await, 404);
}

#[tokio::test]
async fn direct_links_are_public_with_range_support() {
    let (emu, keys) = start_multi(&[], &[]);
    let base = fiione_url(&emu);
    let client = http();
    let content: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let data = upload_bytes(&base, &keys.fiione, "blob.bin", &content).await;
    let link = data["direct_link"].as_str().unwrap();
    assert!(link.starts_with(&emu.base_url()), "{link}");
    emu.reset_stats();
    let full = client.get(link).send().await.unwrap();
    assert_eq!(full.status(), 200);
    assert_eq!(full.bytes().await.unwrap().as_ref(), &content[..]);
    let part = client
        .get(link)
        .header("Range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 1000-1999/100000");
    assert_eq!(part.bytes().await.unwrap().as_ref(), &content[1000..2000]);
    let tail = client
        .get(link)
        .header("Range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.bytes().await.unwrap().as_ref(), &content[99_990..]);
    let head = client.head(link).send().await.unwrap();
    assert_eq!(head.headers()["content-length"], "100000");
    assert_eq!(
        send_status(client.get(link).header("Range", "bytes=100000-")).await,
        416
    );
    assert_eq!(emu.request_count("fii.one:download"), 5);
    // Share pages exist for each upload.
    let share = data["share_url"].as_str().unwrap();
    let page = client.get(share).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("blob.bin"));
}

#[tokio::test]
async fn optional_hourly_limit_and_injected_bursts_answer_429_in_the_envelope() {
    let limited = new_fiione_key();
    let (emu, keys) = start_multi(&[], &[format!("fii.one {limited} requests_per_hour=2")]);
    let base = fiione_url(&emu);
    let client = http();
    let list = |key: &str| client.get(format!("{base}/files")).bearer_auth(key);
    for _ in 0..2 {
        assert_eq!(send_status(list(&limited)).await, 200);
    }
    let third = list(&limited).send().await.unwrap();
    let retry_after: u64 = third.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 3000 && retry_after <= 3600, "{retry_after}");
    assert_fiione_error(&json_of(third).await, 429, "Too many requests");
    // Off by default: the other key is not limited.
    for _ in 0..5 {
        assert_eq!(send_status(list(&keys.fiione)).await, 200);
    }
    // The shared fault injection speaks the same envelope.
    emu.set_faults(json!({"rate_limit_burst": 1}));
    assert_fiione_error(
        &send_json(list(&keys.fiione)).await,
        429,
        "Too many requests",
    );
    assert_eq!(send_status(list(&keys.fiione)).await, 200);
    assert!(emu.request_count("fii.one:files") >= 9);

    // `--fiione-rate-limit` turns the documented plan budgets on.
    drop(emu);
    let (emu, keys) = start_multi(&["--fiione-rate-limit"], &[]);
    let base = fiione_url(&emu);
    let list = || {
        client
            .get(format!("{base}/files"))
            .bearer_auth(&keys.fiione)
    };
    let mut statuses = Vec::new();
    for _ in 0..101 {
        statuses.push(send_status(list()).await);
    }
    assert!(statuses[..100].iter().all(|s| *s == 200));
    assert_eq!(statuses[100], 429);
}

#[tokio::test]
async fn files_survive_a_kill_9_and_restart() {
    let (mut emu, keys) = start_multi(&[], &[]);
    let base = fiione_url(&emu);
    let data = upload_bytes(&base, &keys.fiione, "durable.txt", b"still here").await;
    let id = data["id"].as_str().unwrap().to_string();
    let link = data["direct_link"].as_str().unwrap().to_string();
    let (status, _) = emu.admin(
        "POST",
        "/_emulator/fiione/folders",
        Some(json!({"name": "F"})),
    );
    assert_eq!(status, 200);
    emu.restart();
    let client = http();
    let (status, body) = send_json(
        client
            .get(format!("{base}/files/{id}"))
            .bearer_auth(&keys.fiione),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["title"], "durable.txt");
    assert_eq!(body["data"]["direct_link"], link.as_str());
    assert_eq!(send_bytes(client.get(&link)).await, "still here");
}

#[test]
fn bad_key_options_stop_serve_without_printing_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = new_fiione_key();
    for (line, expected) in [
        (format!("fii.one {key} plan=gold"), "free or pro"),
        (
            format!("fii.one {key} permissions=read,write"),
            "upload, read, delete",
        ),
        (format!("file.io {key} rate_limit=fast"), "rate_limit"),
    ] {
        let keys = dir.path().join("keys.txt");
        std::fs::write(&keys, format!("{line}\n")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_filehostfs"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--keys-file")
            .arg(&keys)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{line}: serve started");
        assert!(stderr.contains(expected), "{line}: {stderr}");
        assert!(
            !stderr.contains(&key[4..]),
            "{line}: the key was printed: {stderr}"
        );
    }
}
