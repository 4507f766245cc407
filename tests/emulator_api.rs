//! The 1fichier JSON endpoints: success and error paths, auth, isolation
//! between accounts, request validation, the documented quirks.

mod common;

use common::fichier_client::FichierClient;
use common::Emulator;
use serde_json::{json, Value};

fn assert_ko(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["status"], "KO", "{body}");
    let message = body["message"].as_str().unwrap_or("");
    assert!(
        message.ends_with(&format!("#{want_code}")),
        "expected #{want_code}: {message}"
    );
}

#[test]
fn auth_is_required_and_accounts_are_isolated() {
    let emu = Emulator::start();
    let http = common::fichier_client::http_client();
    let url = format!("{}/folder/ls.cgi", emu.fichier_url());

    let response = http
        .post(&url)
        .json(&json!({"folder_id": 0}))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let body: Value = response.json().unwrap();
    assert_eq!(body["status"], "KO");

    let stranger = FichierClient {
        api: emu.fichier_url(),
        key: "not-a-key".into(),
        http: http.clone(),
    };
    let (status, body) = stranger.call("folder/ls", json!({"folder_id": 0}));
    assert_eq!(status, 403);
    assert_eq!(body, json!({"status": "KO", "message": "No such user #93"}));

    let keys = emu.fichier_keys();
    let alice = FichierClient::with_key(&emu, &keys[0]);
    let bob = FichierClient::with_key(&emu, &keys[1]);
    let folder = alice.mkdir(0, "private");
    let link = alice.upload(folder, "secret.txt", b"alice only");
    let url = link["download"].as_str().unwrap();

    assert!(bob.subfolders(0).is_empty());
    assert!(bob.files(0).is_empty());
    let (status, body) = bob.call("file/ls", json!({"folder_id": folder}));
    assert_ko(status, &body, 404, "469");
    let (status, body) = bob.call("file/info", json!({"url": url}));
    assert_ko(status, &body, 404, "469");
    let (status, body) = bob.call("download/get_token", json!({"url": url, "single": 1}));
    assert_ko(status, &body, 404, "469");
    let (status, body) = bob.call("file/rm", json!({"files": [{"url": url}]}));
    assert_ko(status, &body, 404, "469");
    let (status, body) = bob.call("folder/rm", json!({"folder_id": folder}));
    assert_ko(status, &body, 404, "469");
    assert_eq!(alice.files(folder).len(), 1);
}

#[test]
fn request_validation_methods_and_content_type() {
    let emu = Emulator::start();
    let client = FichierClient::new(&emu);
    let http = &client.http;
    let base = emu.fichier_url();

    // Wrong method: the service's KO shape, 405.
    let response = http
        .get(format!("{base}/folder/ls.cgi"))
        .bearer_auth(&client.key)
        .header("Content-Type", "application/json")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.json::<Value>().unwrap()["status"], "KO");

    // Bad JSON, non-object JSON, missing and wrong-typed members.
    for body in ["{not json", "[1,2]", "\"x\"", ""] {
        let response = http
            .post(format!("{base}/folder/ls.cgi"))
            .bearer_auth(&client.key)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .unwrap();
        let status = response.status().as_u16();
        assert_ko(status, &response.json().unwrap(), 403, "700");
    }
    let (status, body) = client.call("folder/ls", json!({}));
    assert_ko(status, &body, 403, "700");
    let (status, body) = client.call("folder/ls", json!({"folder_id": "0"}));
    assert_ko(status, &body, 403, "700");
    let (status, body) = client.call("folder/mkdir", json!({"name": 5, "folder_id": 0}));
    assert_ko(status, &body, 403, "700");

    // Unknown members are ignored.
    let listing = client.ok(
        "folder/ls",
        json!({"folder_id": 0, "whatever": [1], "pretty": 0}),
    );
    assert_eq!(listing["folder_id"], 0);

    // JSON must be declared.
    let response = http
        .post(format!("{base}/folder/ls.cgi"))
        .bearer_auth(&client.key)
        .body("{\"folder_id\":0}")
        .send()
        .unwrap();
    let status = response.status().as_u16();
    assert_ko(status, &response.json().unwrap(), 403, "701");

    // Unknown endpoint.
    let (status, body) = client.call("folder/nosuch", json!({}));
    assert_ko(status, &body, 404, "716");

    // get_upload_server: GET or POST, with or without a body.
    let response = http
        .post(format!("{base}/upload/get_upload_server.cgi"))
        .bearer_auth(&client.key)
        .json(&json!({"pretty": 1}))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().unwrap();
    assert!(text.contains('\n'), "pretty-printed: {text}");
    let server: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(server["id"].as_str().unwrap().len(), 10);
    client.ok_get_upload_server();

    // user/info without a body.
    let response = http
        .post(format!("{base}/user/info.cgi"))
        .bearer_auth(&client.key)
        .header("Content-Type", "application/json")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
}

#[test]
fn folders_mkdir_ls_rm_mv() {
    let emu = Emulator::start();
    let client = FichierClient::new(&emu);

    let root = client.ok("folder/ls", json!({"folder_id": 0}));
    assert_eq!(root["folder_id"], 0);
    assert!(root.get("sub_folders").is_none() || root["sub_folders"] == json!([]));

    let docs = client.mkdir(0, "docs");
    let photos = client.mkdir(0, "photos été");
    assert!(docs > 0 && photos > 0 && docs != photos);
    let inner = client.mkdir(docs, "inner");
    let subs = client.subfolders(0);
    assert_eq!(subs.len(), 2);
    let entry = subs.iter().find(|f| f["id"] == docs).unwrap();
    assert_eq!(entry["name"], "docs");
    assert_eq!(entry["pass"], 0);
    assert!(chrono::NaiveDateTime::parse_from_str(
        entry["create_date"].as_str().unwrap(),
        "%Y-%m-%d %H:%M:%S"
    )
    .is_ok());
    let listed = client.ok("folder/ls", json!({"folder_id": docs}));
    assert_eq!(listed["name"], "docs");
    assert_eq!(listed["sub_folders"][0]["id"], inner);

    // Refusals.
    let (s, b) = client.call("folder/mkdir", json!({"name": "docs", "folder_id": 0}));
    assert_ko(s, &b, 403, "704");
    let (s, b) = client.call("folder/mkdir", json!({"name": "x", "folder_id": 424242}));
    assert_ko(s, &b, 404, "469");
    for bad in ["a/b", "..", "back\\slash", "trailing ", "tick`", "dq\"", ""] {
        let (s, b) = client.call("folder/mkdir", json!({"name": bad, "folder_id": 0}));
        assert_ko(s, &b, 403, "703");
    }
    let (s, b) = client.call(
        "folder/mkdir",
        json!({"name": "x".repeat(251), "folder_id": 0}),
    );
    assert_ko(s, &b, 403, "703");
    let (s, b) = client.call("folder/ls", json!({"folder_id": 424242}));
    assert_ko(s, &b, 404, "469");
    let (s, b) = client.call("folder/rm", json!({"folder_id": 0}));
    assert_ko(s, &b, 403, "706");
    let (s, b) = client.call("folder/rm", json!({"folder_id": docs}));
    assert_ko(s, &b, 403, "705");

    // folder/mv: move only, rename only, both (default mode), into itself.
    let moved = client.ok(
        "folder/mv",
        json!({"folder_id": inner, "destination_folder_id": photos, "destination_user": ""}),
    );
    assert_eq!(moved["old_name"], "inner");
    assert_eq!(moved["new_name"], "inner");
    assert_eq!(client.subfolders(photos)[0]["id"], inner);
    let renamed = client.ok(
        "folder/mv",
        json!({"folder_id": inner, "rename": "renamed", "destination_user": ""}),
    );
    assert_eq!(renamed["new_name"], "renamed");
    assert_eq!(client.subfolders(photos)[0]["name"], "renamed");
    client.ok(
        "folder/mv",
        json!({"folder_id": inner, "destination_folder_id": docs, "rename": "both", "destination_user": ""}),
    );
    assert_eq!(client.subfolders(docs)[0]["name"], "both");
    assert!(client.subfolders(photos).is_empty());
    let (s, b) = client.call(
        "folder/mv",
        json!({"folder_id": docs, "destination_folder_id": inner}),
    );
    assert_ko(s, &b, 403, "707");
    let (s, b) = client.call("folder/mv", json!({"folder_id": inner, "rename": "both"}));
    assert_ko(s, &b, 403, "704");
    let (s, b) = client.call("folder/mv", json!({"folder_id": inner}));
    assert_ko(s, &b, 403, "700");
    let (s, b) = client.call(
        "folder/mv",
        json!({"folder_id": inner, "destination_folder_id": 0, "destination_user": "x@y.z"}),
    );
    assert_ko(s, &b, 403, "631");

    // Empty folders can be removed.
    client.ok("folder/rm", json!({"folder_id": inner}));
    client.ok("folder/rm", json!({"folder_id": docs}));
    let (s, b) = client.call("folder/rm", json!({"folder_id": docs}));
    assert_ko(s, &b, 404, "469");
}

#[test]
fn folder_move_can_follow_the_official_rename_rule() {
    let emu = Emulator::start_with(&["--folder-move-mode", "rename-only"]);
    let client = FichierClient::new(&emu);
    let a = client.mkdir(0, "a");
    let b = client.mkdir(0, "b");
    client.ok(
        "folder/mv",
        json!({"folder_id": a, "destination_folder_id": b, "rename": "a2"}),
    );
    let names: Vec<Value> = client
        .subfolders(0)
        .iter()
        .map(|f| f["name"].clone())
        .collect();
    assert!(names.contains(&json!("a2")), "renamed in place: {names:?}");
    assert!(client.subfolders(b).is_empty());
}

#[test]
fn file_rm_mv_rename_cp_with_quirks() {
    let emu = Emulator::start();
    let client = FichierClient::new(&emu);
    let dest = client.mkdir(0, "dest");
    let a = client.upload(0, "a.txt", b"alpha")["download"]
        .as_str()
        .unwrap()
        .to_string();
    let b = client.upload(0, "b.txt", b"beta")["download"]
        .as_str()
        .unwrap()
        .to_string();

    // rename in place keeps the link.
    let renamed = client.ok(
        "file/rename",
        json!({"urls": [{"url": a, "filename": "a2.txt"}], "pretty": 0}),
    );
    assert_eq!(renamed["renamed"], 1);
    assert_eq!(renamed["urls"][0]["url"], a);
    assert_eq!(renamed["urls"][0]["old_filename"], "a.txt");
    assert_eq!(renamed["urls"][0]["new_filename"], "a2.txt");
    let (s, body) = client.call(
        "file/rename",
        json!({"urls": [{"url": a, "filename": "a2.txt"}], "pretty": 0}),
    );
    assert_ko(s, &body, 403, "312");
    let (s, body) = client.call(
        "file/rename",
        json!({"urls": [{"url": a, "filename": "bad<name"}], "pretty": 0}),
    );
    assert_ko(s, &body, 403, "703");

    // Moving within the same folder is not a rename; same-name rename refused.
    let (s, body) = client.call(
        "file/mv",
        json!({"urls": [a], "destination_folder_id": 0, "rename": "x.txt"}),
    );
    assert_ko(s, &body, 403, "710");
    let (s, body) = client.call(
        "file/mv",
        json!({"urls": [a], "destination_folder_id": dest, "rename": "a2.txt"}),
    );
    assert_ko(s, &body, 403, "709");
    let (s, body) = client.call(
        "file/mv",
        json!({"urls": [a, b], "destination_folder_id": dest, "rename": "z.txt"}),
    );
    assert_ko(s, &body, 403, "711");
    let (s, body) = client.call("file/mv", json!({"urls": [a]}));
    assert_ko(s, &body, 403, "700");
    let (s, body) = client.call(
        "file/mv",
        json!({"urls": [a], "destination_folder_id": 999_999}),
    );
    assert_ko(s, &body, 404, "469");

    let moved = client.ok(
        "file/mv",
        json!({"urls": [a], "destination_folder_id": dest, "rename": "moved.txt"}),
    );
    assert_eq!(moved["moved"], 1);
    assert_eq!(moved["filename"], "moved.txt");
    let new_a = moved["urls"][0].as_str().unwrap().to_string();
    let info = client.ok("file/info", json!({"url": new_a}));
    assert_eq!(info["filename"], "moved.txt");
    assert_eq!(info["folder_id"], dest);
    assert_eq!(info["path"], "dest");
    assert_eq!(client.files(0).len(), 1);

    // Copy: a new link, duplicates allowed, same content.
    let copied = client.ok(
        "file/cp",
        json!({"urls": [new_a], "folder_id": dest, "rename": "moved.txt"}),
    );
    assert_eq!(copied["copied"], 1);
    assert_eq!(copied["urls"][0]["from_url"], new_a);
    let copy_url = copied["urls"][0]["to_url"].as_str().unwrap().to_string();
    assert_ne!(copy_url, new_a);
    assert_eq!(client.files(dest).len(), 2);
    let token = client.token(&copy_url);
    assert_eq!(
        common::fichier_client::fetch("GET", &token, None).body,
        b"alpha"
    );

    // Remove the original: the copy survives (blobs are shared, not lost).
    let removed = client.ok("file/rm", json!({"files": [{"url": new_a}]}));
    assert_eq!(removed["removed"], 1);
    let (s, body) = client.call("file/info", json!({"url": new_a}));
    assert_ko(s, &body, 404, "469");
    let token = client.token(&copy_url);
    assert_eq!(
        common::fichier_client::fetch("GET", &token, None).body,
        b"alpha"
    );
    let (s, body) = client.call("file/rm", json!({"files": [{"url": new_a}]}));
    assert_ko(s, &body, 404, "469");
    let (s, body) = client.call("file/rm", json!({"files": []}));
    assert_ko(s, &body, 403, "700");
    let (s, body) = client.call("file/rm", json!({"files": [{"link": b}]}));
    assert_ko(s, &body, 403, "700");

    // All-or-nothing: one bad URL removes nothing.
    let (s, body) = client.call(
        "file/rm",
        json!({"files": [{"url": b}, {"url": "https://1fichier.com/?nosuchfile"}]}),
    );
    assert_ko(s, &body, 404, "469");
    assert_eq!(client.files(0).len(), 1);

    // A folder with files cannot be removed; once emptied it can.
    let (s, body) = client.call("folder/rm", json!({"folder_id": dest}));
    assert_ko(s, &body, 403, "705");
    client.ok("file/rm", json!({"files": [{"url": copy_url}]}));
    client.ok("folder/rm", json!({"folder_id": dest}));
}

#[test]
fn file_ls_filters_and_whole_account_listing() {
    let emu = Emulator::start();
    let client = FichierClient::new(&emu);
    let sub = client.mkdir(0, "sub");
    client.upload(0, "root.txt", b"r");
    client.upload(sub, "deep.txt", b"d");
    let empty = client.ok("file/ls", json!({"folder_id": client.mkdir(0, "empty")}));
    assert_eq!(empty["count"], 0);
    let all = client.ok("file/ls", json!({"folder_id": -1}));
    assert_eq!(all["count"], 2);
    let future = client.ok(
        "file/ls",
        json!({"folder_id": -1, "sent_after": "2999-01-01 00:00:00"}),
    );
    assert_eq!(future["count"], 0);
    let past = client.ok(
        "file/ls",
        json!({"folder_id": -1, "sent_after": "2000-01-01 00:00:00", "sent_before": "2999-01-01 00:00:00"}),
    );
    assert_eq!(past["count"], 2);
    let (s, body) = client.call(
        "file/ls",
        json!({"folder_id": 0, "sent_after": "yesterday"}),
    );
    assert_ko(s, &body, 403, "700");
    let with_files = client.ok("folder/ls", json!({"folder_id": sub, "files": 1}));
    assert_eq!(with_files["items"][0]["filename"], "deep.txt");
}

#[test]
fn user_info_reports_usage_and_quota() {
    let emu = Emulator::start_opts(common::EmulatorOptions {
        keys_file_lines: vec!["1fichier quotakey quota=1000 email=q@example.org".into()],
        ..Default::default()
    });
    let client = FichierClient::new(&emu);
    client.upload(0, "a.bin", &[1u8; 600]);
    let info = client.ok("user/info", json!({}));
    assert_eq!(info["email"], "q@example.org");
    assert_eq!(info["cold_storage"], 600);
    assert_eq!(info["available_cold_storage"], 1000);
    for member in ["offer", "subscription_end", "2fa", "use_cdn", "cdn"] {
        assert!(info[member].is_string(), "{member}: {info}");
    }
    for member in [
        "ftp_did",
        "default_domain",
        "page_limit",
        "hot_storage",
        "overquota",
    ] {
        assert!(info[member].is_i64(), "{member}: {info}");
    }
    // Over quota: refused, nothing stored.
    let form = reqwest::blocking::multipart::Form::new()
        .text("did", "0")
        .part(
            "file[]",
            reqwest::blocking::multipart::Part::bytes(vec![2u8; 500]).file_name("b.bin"),
        );
    let (_, _, response) = client.upload_raw(form);
    assert_eq!(response.status().as_u16(), 403);
    assert_eq!(client.files(0).len(), 1);
}

#[test]
fn free_accounts_cannot_get_download_tokens() {
    let emu = Emulator::start_opts(common::EmulatorOptions {
        keys_file_lines: vec!["1fichier freekey offer=free".into()],
        ..Default::default()
    });
    let client = FichierClient::new(&emu);
    let url = client.upload(0, "f.txt", b"free")["download"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, body) = client.call("download/get_token", json!({"url": url, "single": 1}));
    assert_ko(s, &body, 403, "200");
}

/// Every JSON endpoint of §4 and §5 that the emulator serves.
const ENDPOINTS: &[&str] = &[
    "folder/ls",
    "folder/mkdir",
    "folder/rm",
    "folder/mv",
    "folder/share",
    "file/ls",
    "file/info",
    "file/rm",
    "file/mv",
    "file/rename",
    "file/cp",
    "download/get_token",
    "upload/get_upload_server",
    "user/info",
    "remote/request",
    "remote/ls",
    "remote/info",
];

#[test]
fn every_endpoint_refuses_bad_keys_bad_json_and_wrong_methods() {
    let emu = Emulator::start();
    let http = common::fichier_client::http_client();
    let base = emu.fichier_url();
    let key = emu.key();
    for endpoint in ENDPOINTS {
        let url = format!("{base}/{endpoint}.cgi");
        let post = |key: &str, body: &'static str| {
            let response = http
                .post(&url)
                .bearer_auth(key)
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().unwrap())
        };
        let (status, body) = post("wrong-key", "{}");
        assert_ko(status, &body, 403, "93");
        let (status, body) = post(&key, "{\"folder_id\": ");
        assert_ko(status, &body, 403, "700");
        let response = http
            .put(&url)
            .bearer_auth(&key)
            .header("Content-Type", "application/json")
            .body("{}")
            .send()
            .unwrap();
        let status = response.status().as_u16();
        assert_ko(status, &response.json().unwrap(), 405, "702");
    }
    let stats = emu.stats();
    for endpoint in ENDPOINTS {
        assert_eq!(
            stats["requests"][format!("1fichier:{endpoint}")],
            3,
            "{endpoint}"
        );
    }
}

#[test]
fn shared_folders_are_listed_publicly_without_a_key() {
    let emu = Emulator::start();
    let client = FichierClient::new(&emu);
    let open = client.mkdir(0, "open");
    let locked = client.mkdir(0, "locked");
    let link = client.upload(open, "pub.txt", b"public")["download"].clone();
    client.upload(locked, "hidden.txt", b"hidden");
    let http = common::fichier_client::http_client();
    let public = |id: i64| format!("{}/dir/{id}", emu.base_url());

    // Not shared yet: nothing to see.
    let response = http.get(format!("{}?json=1", public(open))).send().unwrap();
    assert_eq!(response.status().as_u16(), 404);

    let shared = client.ok("folder/share", json!({"folder_id": open, "share": 1}));
    assert_eq!(shared["url"], public(open));
    assert_eq!(
        client.ok("folder/ls", json!({"folder_id": open}))["shared"],
        1
    );
    let listing: Value = http
        .get(format!("{}?json=1", public(open)))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        listing,
        json!([{"filename": "pub.txt", "link": link, "size": 6}])
    );
    let html = http.get(public(open)).send().unwrap().text().unwrap();
    assert!(html.contains("pub.txt"));

    // With a password: only a POSTed form with the right one gets in.
    client.ok(
        "folder/share",
        json!({"folder_id": locked, "share": 1, "pass": "s3cret!"}),
    );
    let response = http
        .get(format!("{}?json=1", public(locked)))
        .send()
        .unwrap();
    let status = response.status().as_u16();
    assert_ko(status, &response.json().unwrap(), 403, "631");
    let post = |pass: &str| {
        http.post(public(locked))
            .form(&[("json", "1"), ("pass", pass)])
            .send()
            .unwrap()
    };
    let wrong = post("nope");
    let status = wrong.status().as_u16();
    assert_ko(status, &wrong.json().unwrap(), 403, "631");
    let right: Value = post("s3cret!").json().unwrap();
    assert_eq!(right[0]["filename"], "hidden.txt");

    // A file link itself opens a page for anyone.
    let page = http.get(link.as_str().unwrap()).send().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().unwrap().contains("pub.txt"));
    let missing = http
        .get(format!("{}/?zzzzzzzzzzzzzzzzzzzz", emu.base_url()))
        .send()
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);

    // Unsharing, and refusals.
    client.ok("folder/share", json!({"folder_id": open, "share": 0}));
    assert_eq!(
        http.get(format!("{}?json=1", public(open)))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    let (s, b) = client.call("folder/share", json!({"folder_id": 0, "share": 1}));
    assert_ko(s, &b, 403, "706");
    let (s, b) = client.call("folder/share", json!({"folder_id": open, "share": 2}));
    assert_ko(s, &b, 403, "700");
    let (s, b) = client.call(
        "folder/share",
        json!({"folder_id": open, "share": 1, "shares": [{"email": "a@b.c", "rw": 0, "hide_links": 0}]}),
    );
    assert_ko(s, &b, 403, "631");
    let other = FichierClient::with_key(&emu, &emu.fichier_keys()[1]);
    let (s, b) = other.call("folder/share", json!({"folder_id": open, "share": 1}));
    assert_ko(s, &b, 404, "469");
}
