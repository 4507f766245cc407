//! The fii.one backend against the emulator: every `Remote` operation and
//! its errors, a listing that changes while it is read, and 429 bursts.

mod common;

use filehostfs::fs::error::Errno as _;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use common::multi::{
    collect, fiione_client, fiione_url, http, json_of, new_fiione_key, start_multi,
};
use filehostfs::remote::{FileId, FolderId, Remote, RemoteError, UploadSource};
use serde_json::json;

fn errno<T>(result: Result<T, RemoteError>) -> i32 {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(err) => err.errno(),
    }
}

#[tokio::test]
async fn every_operation_and_its_errors() {
    let small = new_fiione_key();
    let (emu, keys) = start_multi(&[], &[format!("fii.one {small} max_file_size_mb=1")]);
    let base = fiione_url(&emu);
    let remote = fiione_client(&base, &keys.fiione);
    let root = remote.root();
    assert_eq!(remote.service(), "fii.one");
    let caps = remote.capabilities();
    assert!(!caps.folders && caps.rename_file && !caps.move_file && caps.duplicate_names);
    assert!(!caps.downloads_consume && !caps.files_expire);
    assert!(remote.list_folder(&root).await.unwrap().files.is_empty());

    // Upload from a path and from a stream.
    let dir = tempfile::tempdir().unwrap();
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let path = dir.path().join("source.bin");
    std::fs::write(&path, &content).unwrap();
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = sent.clone();
    let progress: filehostfs::remote::ProgressFn =
        Arc::new(move |n| seen.store(n, std::sync::atomic::Ordering::SeqCst));
    let first = remote
        .upload(
            &root,
            "héllo wörld.bin",
            UploadSource::Path(path.clone()),
            Some(progress),
        )
        .await
        .unwrap();
    assert_eq!(first.name, "héllo wörld.bin");
    assert_eq!(first.size, content.len() as u64);
    assert_eq!(
        sent.load(std::sync::atomic::Ordering::SeqCst),
        content.len() as u64
    );
    assert!(first.share_link.as_deref().unwrap().contains("/fiione/s/"));
    let streamed = remote
        .upload(
            &root,
            "streamed.txt",
            UploadSource::Reader {
                reader: Box::pin(std::io::Cursor::new(b"from a reader".to_vec())),
                size: 13,
            },
            None,
        )
        .await
        .unwrap();
    let empty = remote
        .upload(
            &root,
            "empty",
            UploadSource::Reader {
                reader: Box::pin(std::io::Cursor::new(Vec::new())),
                size: 0,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(empty.size, 0);

    // Listing, stat and reads.
    let listing = remote.list_folder(&root).await.unwrap();
    assert!(listing.folders.is_empty());
    let names: HashSet<&str> = listing.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        HashSet::from(["héllo wörld.bin", "streamed.txt", "empty"])
    );
    assert_eq!(remote.stat_file(&first.id).await.unwrap(), first);
    assert_eq!(
        collect(remote.download_range(&first.id, 0, u64::MAX).await.unwrap()).await,
        content
    );
    assert_eq!(
        collect(remote.download_range(&first.id, 1000, 5000).await.unwrap()).await,
        &content[1000..6000]
    );
    assert!(
        collect(remote.download_range(&first.id, 400_000, 10).await.unwrap())
            .await
            .is_empty()
    );
    assert_eq!(
        collect(remote.download_range(&streamed.id, 5, 100).await.unwrap()).await,
        b"a reader"
    );
    // The direct link is public: no key needed.
    let link = remote.direct_link(&first.id).await.unwrap();
    assert!(link.valid_until.is_none());
    let public = http().get(&link.url).send().await.unwrap();
    assert_eq!(public.bytes().await.unwrap().len(), content.len());

    // Rename keeps the id and the link; a move within the root renames.
    let renamed = remote.rename_file(&first.id, "renamed.bin").await.unwrap();
    assert_eq!(
        (renamed.id.clone(), renamed.name.as_str()),
        (first.id.clone(), "renamed.bin")
    );
    assert_eq!(remote.direct_link(&first.id).await.unwrap().url, link.url);
    let moved = remote
        .move_file(&first.id, &root, Some("moved.bin"))
        .await
        .unwrap();
    assert_eq!(moved.name, "moved.bin");
    assert_eq!(
        errno(
            remote
                .move_file(&first.id, &FolderId("elsewhere".into()), None)
                .await
        ),
        libc::ENOENT
    );
    assert_eq!(
        errno(remote.rename_file(&first.id, &"x".repeat(256)).await),
        libc::ENAMETOOLONG
    );
    assert_eq!(errno(remote.rename_file(&first.id, "").await), libc::EINVAL);

    // No folders through the public API.
    assert_eq!(
        errno(remote.create_folder(&root, "dir").await),
        libc::ENOTSUP
    );
    assert_eq!(errno(remote.remove_folder(&root).await), libc::ENOTSUP);
    assert_eq!(errno(remote.rename_folder(&root, "x").await), libc::ENOTSUP);
    assert_eq!(errno(remote.move_folder(&root, &root).await), libc::ENOTSUP);
    assert_eq!(
        errno(remote.list_folder(&FolderId("nope".into())).await),
        libc::ENOENT
    );

    // Duplicate titles are distinct files.
    let twin_a = remote
        .upload(&root, "twin", UploadSource::Path(path.clone()), None)
        .await
        .unwrap();
    let twin_b = remote
        .upload(&root, "twin", UploadSource::Path(path.clone()), None)
        .await
        .unwrap();
    assert_ne!(twin_a.id, twin_b.id);
    let twins = remote
        .list_folder(&root)
        .await
        .unwrap()
        .files
        .iter()
        .filter(|f| f.name == "twin")
        .count();
    assert_eq!(twins, 2);

    // Space used is what the listing adds up to; the API gives no total.
    let about = remote.about().await.unwrap();
    assert_eq!(about.used, 3 * content.len() as u64 + 13);
    assert_eq!(about.total, None);

    // Delete, then everything about the file is gone.
    remote.remove_file(&twin_b.id).await.unwrap();
    assert_eq!(errno(remote.stat_file(&twin_b.id).await), libc::ENOENT);
    assert_eq!(errno(remote.remove_file(&twin_b.id).await), libc::ENOENT);
    remote.invalidate_link(&twin_b.id);
    assert_eq!(
        errno(remote.download_range(&twin_b.id, 0, 10).await),
        libc::ENOENT
    );
    assert_eq!(
        errno(remote.stat_file(&FileId("not-a-uuid".into())).await),
        libc::ENOENT
    );

    // A key without delete permission; a wrong key; the plan's size limit.
    let no_delete = fiione_client(&base, &keys.fiione_no_delete);
    assert!(no_delete
        .list_folder(&root)
        .await
        .unwrap()
        .files
        .iter()
        .any(|f| f.id == twin_a.id));
    let refused = no_delete.remove_file(&twin_a.id).await.unwrap_err();
    assert_eq!(refused.errno(), libc::EACCES);
    assert!(
        refused.to_string().contains("No delete permission"),
        "{refused}"
    );
    let stranger = fiione_client(&base, &new_fiione_key());
    assert_eq!(errno(stranger.list_folder(&root).await), libc::EACCES);
    let limited = fiione_client(&base, &small);
    let big = dir.path().join("big");
    std::fs::write(&big, vec![0u8; 1024 * 1024 + 1]).unwrap();
    assert_eq!(
        errno(
            limited
                .upload(&root, "big", UploadSource::Path(big), None)
                .await
        ),
        libc::EFBIG
    );
}

/// Forwards every request to the emulator; after each listing page it
/// answers, uploads and deletes files so that the next page sees a changed
/// listing.
struct ChurnProxy {
    upstream: String,
    key: String,
    client: reqwest::Client,
    /// Ids the churn may delete (newest first); deleted ids are recorded.
    victims: tokio::sync::Mutex<Vec<String>>,
    deleted: tokio::sync::Mutex<Vec<String>>,
    pages_served: std::sync::atomic::AtomicU32,
}

async fn forward(
    State(proxy): State<Arc<ChurnProxy>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    let mut request = proxy
        .client
        .request(method.clone(), format!("{}{path}", proxy.upstream))
        .body(body);
    for (name, value) in headers.iter() {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = request.send().await.unwrap();
    let status = answer.status();
    let content_type = answer.headers().get("content-type").cloned();
    let bytes = answer.bytes().await.unwrap();
    if method == Method::GET && uri.path().ends_with("/files") {
        let served = proxy
            .pages_served
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        if served <= 4 {
            churn(&proxy).await;
        }
    }
    let mut response = (status, bytes).into_response();
    if let Some(ct) = content_type {
        response.headers_mut().insert("content-type", ct);
    }
    response
}

/// Two uploads (new files go to the top of page 1) and five deletions of
/// the newest original files (pulling older ones up across page borders).
async fn churn(proxy: &ChurnProxy) {
    for _ in 0..2 {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(b"new".to_vec()).file_name("new-during-walk"),
        );
        let answer = proxy
            .client
            .post(format!("{}/upload", proxy.upstream))
            .bearer_auth(&proxy.key)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    let mut victims = proxy.victims.lock().await;
    for _ in 0..5 {
        let Some(id) = victims.first().cloned() else {
            break;
        };
        victims.remove(0);
        let answer = proxy
            .client
            .delete(format!("{}/files/{id}", proxy.upstream))
            .bearer_auth(&proxy.key)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        proxy.deleted.lock().await.push(id);
    }
}

#[tokio::test]
async fn listing_of_250_files_over_three_changing_pages_lists_each_once() {
    let (emu, keys) = start_multi(&[], &[]);
    let base = fiione_url(&emu);
    let client = http();
    let mut originals = Vec::new();
    for i in 0..250 {
        let (status, body) = json_of(
            client
                .post(format!("{base}/upload"))
                .bearer_auth(&keys.fiione)
                .json(&json!({"image": "eA==", "name": format!("file-{i:03}")}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        originals.push(body["data"]["id"].as_str().unwrap().to_string());
    }
    let proxy = Arc::new(ChurnProxy {
        upstream: base.clone(),
        key: keys.fiione.clone(),
        client: client.clone(),
        victims: tokio::sync::Mutex::new(originals.iter().rev().cloned().collect()),
        deleted: tokio::sync::Mutex::new(Vec::new()),
        pages_served: std::sync::atomic::AtomicU32::new(0),
    });
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(proxy.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let remote = fiione_client(&format!("http://{addr}/api/v1"), &keys.fiione);
    emu.reset_stats();
    let listing = remote.list_folder(&remote.root()).await.unwrap();
    server.abort();

    let mut counts: HashMap<&str, usize> = HashMap::new();
    for file in &listing.files {
        *counts.entry(file.id.0.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "listed more than once: {twice:?}");
    let deleted = proxy.deleted.lock().await.clone();
    assert!(!deleted.is_empty());
    let survivors: Vec<&String> = originals
        .iter()
        .filter(|id| !deleted.contains(id))
        .collect();
    let missing: Vec<_> = survivors
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "files present throughout were missed: {missing:?}"
    );
    // It really spanned several changing pages.
    assert!(proxy.pages_served.load(std::sync::atomic::Ordering::SeqCst) >= 3);
    assert!(emu.request_count("fii.one:files") >= 3);
}

#[tokio::test]
async fn rate_limit_bursts_are_ridden_out() {
    let hourly = new_fiione_key();
    let (emu, keys) = start_multi(&[], &[format!("fii.one {hourly} requests_per_hour=1")]);
    let base = fiione_url(&emu);
    let remote = fiione_client(&base, &keys.fiione);
    let root = remote.root();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, b"burst").unwrap();

    emu.set_faults(json!({"rate_limit_burst": 4}));
    emu.reset_stats();
    let uploaded = remote
        .upload(&root, "f", UploadSource::Path(path), None)
        .await
        .unwrap();
    assert_eq!(emu.request_count("fii.one:upload"), 5);
    emu.set_faults(json!({"rate_limit_burst": 3}));
    let listing = remote.list_folder(&root).await.unwrap();
    assert_eq!(listing.files, vec![uploaded.clone()]);
    emu.set_faults(json!({"rate_limit_burst": 2}));
    remote.remove_file(&uploaded.id).await.unwrap();

    // An hour-long wait is not sat out: the caller hears of it at once.
    let limited = fiione_client(&base, &hourly);
    limited.list_folder(&root).await.unwrap();
    let started = std::time::Instant::now();
    let err = limited.list_folder(&root).await.unwrap_err();
    assert!(matches!(err, RemoteError::RateLimited { .. }), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn every_command_works_or_says_why_not() {
    use common::multi::write_multi_config;
    use common::remote::{assert_key_never_printed, cli_ok, run_cli};
    let (emu, keys) = start_multi(&[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_multi_config(&emu, &keys, dir.path(), "");
    let local = dir.path().join("photo.jpg");
    std::fs::write(&local, b"not really a jpeg").unwrap();
    let fails = |args: &[&str], expected: &str| {
        let out = run_cli(&config, args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{args:?} succeeded");
        let last = stderr.lines().last().unwrap_or("").to_string();
        assert!(last.contains(expected), "{args:?}: {stderr}");
        assert_eq!(
            stderr.lines().filter(|l| l.contains("error")).count(),
            1,
            "{stderr}"
        );
    };

    cli_ok(&config, &["put", local.to_str().unwrap(), "pics:"]);
    assert_eq!(cli_ok(&config, &["ls", "pics:"]).trim(), "photo.jpg");
    cli_ok(&config, &["mv", "pics:photo.jpg", "pics:holiday.jpg"]);
    assert_eq!(cli_ok(&config, &["ls", "pics:"]).trim(), "holiday.jpg");
    let link = cli_ok(&config, &["link", "pics:holiday.jpg"]);
    assert!(link.trim().starts_with(&emu.base_url()), "{link}");
    let about = cli_ok(&config, &["about", "pics:"]);
    assert!(about.contains("17 bytes"), "{about}");
    let fetched = dir.path().join("fetched.jpg");
    cli_ok(
        &config,
        &["get", "pics:holiday.jpg", fetched.to_str().unwrap()],
    );
    assert_eq!(std::fs::read(&fetched).unwrap(), b"not really a jpeg");

    // What fii.one cannot do, each refused with a one-line reason.
    fails(&["mkdir", "pics:albums"], "no folders");
    fails(
        &["put", local.to_str().unwrap(), "pics:albums/photo.jpg"],
        "no folders",
    );
    // A key without delete permission.
    fails(&["rm", "pics-nodelete:holiday.jpg"], "No delete permission");
    cli_ok(&config, &["rm", "pics:holiday.jpg"]);
    assert_eq!(cli_ok(&config, &["ls", "pics:"]).trim(), "");

    // The key never shows up in output, even at the most verbose log level.
    assert_key_never_printed(
        &config,
        &keys.fiione,
        &[
            &["ls", "pics:"][..],
            &["about", "pics:"],
            &["rm", "pics:no-such-file"],
        ],
    );
}

#[tokio::test]
async fn server_errors_are_retried() {
    let (emu, keys) = start_multi(&[], &[]);
    let remote = fiione_client(&fiione_url(&emu), &keys.fiione);
    let root = remote.root();
    emu.set_faults(json!({"error_rate": 0.3}));
    for i in 0..5 {
        let data = format!("file {i}").into_bytes();
        let size = data.len() as u64;
        let source = UploadSource::Reader {
            reader: Box::pin(std::io::Cursor::new(data)),
            size,
        };
        // A stream cannot be sent twice, so a failed attempt is not
        // retried: the caller sees it and may try again.
        let _ = remote.upload(&root, &format!("f{i}"), source, None).await;
    }
    for _ in 0..5 {
        let listing = remote.list_folder(&root).await.unwrap();
        for file in &listing.files {
            remote.stat_file(&file.id).await.unwrap();
            collect(remote.download_range(&file.id, 0, 100).await.unwrap()).await;
        }
    }
    emu.set_faults(json!({"error_rate": 0.0}));
}
