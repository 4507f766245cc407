//! The file.io backend against the emulator: every `Remote` operation and
//! its errors, local copies, spending downloads only when asked, expiry and
//! 429 bursts.

mod common;

use filehostfs::fs::error::Errno as _;
use std::time::Duration;

use common::multi::{
    collect, fileio_client, fileio_url, http, json_of, new_fileio_key, start_multi,
};
use filehostfs::remote::fileio::UploadOptions;
use filehostfs::remote::{FileId, FolderId, Remote, RemoteError, UploadSource};
use serde_json::json;

fn errno<T>(result: Result<T, RemoteError>) -> i32 {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(err) => err.errno(),
    }
}

/// Uploads through HTTP with the account's key, as another machine would.
async fn upload_elsewhere(base: &str, key: &str, name: &str, bytes: &[u8]) -> String {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(name.to_string()),
    );
    let (status, body) = json_of(
        http()
            .post(format!("{base}/"))
            .bearer_auth(key)
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["key"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn every_operation_and_its_errors() {
    let tiny = new_fileio_key();
    let (emu, keys) = start_multi(
        &[],
        &[format!("file.io {tiny} rate_limit=0 max_upload_bytes=4")],
    );
    let base = fileio_url(&emu);
    let copies = tempfile::tempdir().unwrap();
    let options = UploadOptions {
        expires: Some("2d".into()),
        max_downloads: Some(2),
        auto_delete: Some(true),
    };
    let remote = fileio_client(&base, &keys.fileio, copies.path(), options);
    let root = remote.root();
    assert_eq!(remote.service(), "file.io");
    let caps = remote.capabilities();
    assert!(!caps.folders && !caps.rename_file && !caps.move_file);
    assert!(caps.downloads_consume && caps.files_expire);
    assert!(remote.list_folder(&root).await.unwrap().files.is_empty());

    // Upload with the remote's options; the entry carries link and expiry.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.pdf");
    let content: Vec<u8> = (0..50_000u32).map(|i| (i % 199) as u8).collect();
    std::fs::write(&path, &content).unwrap();
    let before = chrono::Utc::now();
    let mine = remote
        .upload(&root, "report.pdf", UploadSource::Path(path.clone()), None)
        .await
        .unwrap();
    assert_eq!(mine.name, "report.pdf");
    assert_eq!(mine.size, content.len() as u64);
    assert_eq!(
        mine.share_link.as_deref(),
        Some(format!("{base}/{}", mine.id).as_str())
    );
    let lifetime = mine.expires.unwrap() - before;
    assert!(
        (lifetime - chrono::Duration::days(2)).num_seconds().abs() < 60,
        "{lifetime}"
    );
    let (_, listed) = json_of(
        http()
            .get(format!("{base}/"))
            .bearer_auth(&keys.fileio)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed["nodes"][0]["maxDownloads"], 2);
    assert_eq!(listed["nodes"][0]["autoDelete"], true);

    // Listing, stat, link.
    let listing = remote.list_folder(&root).await.unwrap();
    assert_eq!(listing.files, vec![mine.clone()]);
    assert_eq!(remote.stat_file(&mine.id).await.unwrap(), mine);
    assert_eq!(
        remote.direct_link(&mine.id).await.unwrap().url,
        mine.share_link.clone().unwrap()
    );

    // Reading a file uploaded from here uses the local copy: no download.
    assert!(!remote.read_consumes_download(&mine.id));
    emu.reset_stats();
    assert_eq!(
        collect(remote.download_range(&mine.id, 0, u64::MAX).await.unwrap()).await,
        content
    );
    assert_eq!(
        collect(remote.download_range(&mine.id, 100, 50).await.unwrap()).await,
        &content[100..150]
    );
    assert_eq!(emu.request_count("file.io:download"), 0);

    // Awkward names survive the trip through the multipart file name.
    let awkward = "q\"uo\\te é; x=1.txt";
    let odd = remote
        .upload(
            &root,
            awkward,
            UploadSource::Reader {
                reader: Box::pin(std::io::Cursor::new(b"x".to_vec())),
                size: 1,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(odd.name, awkward);
    assert!(remote
        .list_folder(&root)
        .await
        .unwrap()
        .files
        .iter()
        .any(|f| f.name == awkward));
    remote.remove_file(&odd.id).await.unwrap();

    // What the service cannot do.
    assert_eq!(
        errno(remote.rename_file(&mine.id, "other.pdf").await),
        libc::ENOTSUP
    );
    assert_eq!(
        errno(remote.move_file(&mine.id, &root, Some("x")).await),
        libc::ENOTSUP
    );
    assert_eq!(errno(remote.create_folder(&root, "d").await), libc::ENOTSUP);
    assert_eq!(errno(remote.remove_folder(&root).await), libc::ENOTSUP);
    assert_eq!(errno(remote.rename_folder(&root, "d").await), libc::ENOTSUP);
    assert_eq!(errno(remote.move_folder(&root, &root).await), libc::ENOTSUP);
    assert_eq!(
        errno(remote.list_folder(&FolderId("x".into())).await),
        libc::ENOENT
    );

    // about comes from /me.
    let about = remote.about().await.unwrap();
    assert_eq!(about.used, content.len() as u64);

    // Delete: gone from the service and from the local copies.
    remote.remove_file(&mine.id).await.unwrap();
    assert!(remote.list_folder(&root).await.unwrap().files.is_empty());
    assert!(!copies.path().join(&mine.id.0).exists());
    assert_eq!(errno(remote.remove_file(&mine.id).await), libc::ENOENT);
    assert_eq!(errno(remote.stat_file(&mine.id).await), libc::ENOENT);

    // Errors: a wrong key, the plan's size limit.
    let stranger = fileio_client(
        &base,
        &new_fileio_key(),
        copies.path(),
        UploadOptions::default(),
    );
    assert_eq!(errno(stranger.list_folder(&root).await), libc::EACCES);
    let small = fileio_client(&base, &tiny, dir.path(), UploadOptions::default());
    assert_eq!(
        errno(
            small
                .upload(&root, "big", UploadSource::Path(path), None)
                .await
        ),
        libc::EFBIG
    );
}

#[tokio::test]
async fn foreign_files_spend_one_download_only_when_read() {
    let (emu, keys) = start_multi(&[], &[]);
    let base = fileio_url(&emu);
    let copies = tempfile::tempdir().unwrap();
    let remote = fileio_client(&base, &keys.fileio, copies.path(), UploadOptions::default());
    let root = remote.root();
    let key = upload_elsewhere(
        &base,
        &keys.fileio,
        "from-elsewhere.txt",
        b"someone else's bytes",
    )
    .await;
    let id = FileId(key.clone());
    let listing = remote.list_folder(&root).await.unwrap();
    assert_eq!(listing.files.len(), 1);
    // Listing and stat spend nothing; reading would.
    assert!(remote.read_consumes_download(&id));
    remote.stat_file(&id).await.unwrap();
    emu.reset_stats();
    // Concurrent reads share one download.
    let (a, b) = tokio::join!(
        remote.download_range(&id, 0, 4),
        remote.download_range(&id, 5, 4)
    );
    assert_eq!(collect(a.unwrap()).await, b"some");
    assert_eq!(collect(b.unwrap()).await, b"ne e");
    assert_eq!(
        collect(remote.download_range(&id, 0, 1000).await.unwrap()).await,
        b"someone else's bytes"
    );
    assert_eq!(emu.request_count("file.io:download"), 1);
    // That was its one download: the service deleted it.
    assert!(remote.list_folder(&root).await.unwrap().files.is_empty());
}

#[tokio::test]
async fn expiry_from_the_remote_settings_is_honoured() {
    let (emu, keys) = start_multi(&[], &[]);
    let base = fileio_url(&emu);
    let copies = tempfile::tempdir().unwrap();
    let options = UploadOptions {
        expires: Some("3s".into()),
        ..UploadOptions::default()
    };
    let remote = fileio_client(&base, &keys.fileio, copies.path(), options);
    let root = remote.root();
    let entry = remote
        .upload(
            &root,
            "short-lived",
            UploadSource::Reader {
                reader: Box::pin(std::io::Cursor::new(b"bye".to_vec())),
                size: 3,
            },
            None,
        )
        .await
        .unwrap();
    assert!(entry.expires.unwrap() <= chrono::Utc::now() + chrono::Duration::seconds(3));
    assert_eq!(remote.list_folder(&root).await.unwrap().files.len(), 1);
    assert!(copies.path().join(&entry.id.0).exists());
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(remote.list_folder(&root).await.unwrap().files.is_empty());
    // Its local copy goes with it (once clearly older than the listing).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    remote.list_folder(&root).await.unwrap();
    assert!(!copies.path().join(&entry.id.0).exists());
}

#[tokio::test]
async fn rate_limit_bursts_are_ridden_out() {
    let (emu, keys) = start_multi(&[], &[]);
    let base = fileio_url(&emu);
    let copies = tempfile::tempdir().unwrap();
    let remote = fileio_client(&base, &keys.fileio, copies.path(), UploadOptions::default());
    let root = remote.root();
    emu.set_faults(json!({"rate_limit_burst": 4}));
    emu.reset_stats();
    let entry = remote
        .upload(
            &root,
            "n",
            UploadSource::Reader {
                reader: Box::pin(std::io::Cursor::new(b"n".to_vec())),
                size: 1,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(emu.request_count("file.io:upload"), 5);
    emu.set_faults(json!({"rate_limit_burst": 3}));
    assert_eq!(
        remote.list_folder(&root).await.unwrap().files,
        vec![entry.clone()]
    );
    emu.set_faults(json!({"rate_limit_burst": 2}));
    remote.about().await.unwrap();
    emu.set_faults(json!({"rate_limit_burst": 2}));
    remote.remove_file(&entry.id).await.unwrap();
}

#[test]
fn every_command_works_or_says_why_not() {
    use common::multi::write_multi_config;
    use common::remote::{assert_key_never_printed, cli_ok, run_cli};
    let (emu, keys) = start_multi(&[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_multi_config(
        &emu,
        &keys,
        dir.path(),
        "expires = \"1h\"\nmax_downloads = 2\n",
    );
    let local = dir.path().join("slides.pdf");
    std::fs::write(&local, b"slides").unwrap();
    let fails = |args: &[&str], expected: &str| {
        let out = run_cli(&config, args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr.lines().last().unwrap_or("").contains(expected),
            "{args:?}: {stderr}"
        );
    };

    cli_ok(&config, &["put", local.to_str().unwrap(), "outbox:"]);
    assert_eq!(cli_ok(&config, &["ls", "outbox:"]).trim(), "slides.pdf");
    let long = cli_ok(&config, &["ls", "-l", "outbox:"]);
    assert!(long.contains("slides.pdf  (expires "), "{long}");
    let link = cli_ok(&config, &["link", "outbox:slides.pdf"]);
    assert!(
        link.trim().starts_with(&format!("{}/", fileio_url(&emu))),
        "{link}"
    );
    let about = cli_ok(&config, &["about", "outbox:"]);
    assert!(about.contains("6 bytes"), "{about}");
    // Getting a file put from here reads the local copy: nothing is spent.
    emu.reset_stats();
    let fetched = dir.path().join("fetched.pdf");
    cli_ok(
        &config,
        &["get", "outbox:slides.pdf", fetched.to_str().unwrap()],
    );
    assert_eq!(std::fs::read(&fetched).unwrap(), b"slides");
    assert_eq!(emu.request_count("file.io:download"), 0);

    fails(
        &["mv", "outbox:slides.pdf", "outbox:deck.pdf"],
        "cannot rename",
    );
    fails(&["mkdir", "outbox:drafts"], "no folders");
    cli_ok(&config, &["rm", "outbox:slides.pdf"]);
    assert_eq!(cli_ok(&config, &["ls", "outbox:"]).trim(), "");
    fails(&["rm", "outbox:slides.pdf"], "not found");

    // The key never shows up in output, even at the most verbose log level.
    assert_key_never_printed(
        &config,
        &keys.fileio,
        &[
            &["ls", "outbox:"][..],
            &["about", "outbox:"],
            &["rm", "outbox:no-such-file"],
        ],
    );
}

#[tokio::test]
async fn server_errors_are_retried() {
    let (emu, keys) = start_multi(&[], &[]);
    let copies = tempfile::tempdir().unwrap();
    let remote = fileio_client(
        &fileio_url(&emu),
        &keys.fileio,
        copies.path(),
        UploadOptions::default(),
    );
    let root = remote.root();
    emu.set_faults(json!({"error_rate": 0.3}));
    // Uploads come from a staged copy, so they are retried too.
    for i in 0..5 {
        let data = format!("file {i}").into_bytes();
        let size = data.len() as u64;
        let source = UploadSource::Reader {
            reader: Box::pin(std::io::Cursor::new(data)),
            size,
        };
        remote
            .upload(&root, &format!("f{i}"), source, None)
            .await
            .unwrap();
    }
    for _ in 0..5 {
        remote.list_folder(&root).await.unwrap();
        remote.about().await.unwrap();
    }
    emu.set_faults(json!({"error_rate": 0.0}));
    // A retried upload may have reached the service before failing: at
    // least the five files, each readable from its local copy.
    let listing = remote.list_folder(&root).await.unwrap();
    assert!(listing.files.len() >= 5);
    for i in 0..5 {
        assert!(listing.files.iter().any(|f| f.name == format!("f{i}")));
    }
}
