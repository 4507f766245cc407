//! file.io through a real mount: the outbox scenario of issue 7.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::mount::Mount;
use common::multi::{fileio_url, http, json_of, start_multi, write_multi_config};
use filehostfs::config::Config;
use filehostfs::remote::FileEntry;

const SETTLE: Duration = Duration::from_secs(60);

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for: {what}");
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn service_files(config: &Path) -> Vec<FileEntry> {
    let remote = Config::load(Some(config))
        .unwrap()
        .open_remote("outbox")
        .unwrap();
    block_on(async move { remote.list_folder(&remote.root()).await.unwrap().files })
}

fn xattr(path: &Path, name: &str) -> std::io::Result<String> {
    common::mount::getxattr(path, name).map(|value| String::from_utf8(value).unwrap())
}

const FAST: [&str; 4] = ["--dir-cache-time", "1s", "--write-back", "0s"];

#[test]
fn outbox_scenario() {
    let (emu, keys) = start_multi(&[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_multi_config(&emu, &keys, dir.path(), "");
    let mount = Mount::start_remote(&config, "outbox:", &FAST);

    // Copy a file in: it is uploaded and listed with its link.
    let local = dir.path().join("invoice.pdf");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(&local, &content).unwrap();
    let inside = mount.path().join("invoice.pdf");
    std::fs::copy(&local, &inside).unwrap();
    eventually("the upload", || {
        service_files(&config)
            .iter()
            .any(|f| f.name == "invoice.pdf" && f.size == 200_000)
    });
    let entry = service_files(&config)
        .into_iter()
        .find(|f| f.name == "invoice.pdf")
        .unwrap();
    let link = entry.share_link.clone().unwrap();
    eventually("the listing to show the uploaded file", || {
        xattr(&inside, "user.filehostfs.link")
            .map(|l| l == link)
            .unwrap_or(false)
    });
    let expires = xattr(&inside, "user.filehostfs.expires").unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(&expires).unwrap(),
        entry.expires.unwrap()
    );
    assert!(std::fs::read_dir(mount.path())
        .unwrap()
        .flatten()
        .any(|e| e.file_name() == "invoice.pdf"));

    // Reading it back spends nothing: it comes from the copy kept here.
    emu.reset_stats();
    assert_eq!(std::fs::read(&inside).unwrap(), content);
    assert_eq!(emu.request_count("file.io:download"), 0);

    // A second file stays for the rename check below.
    let inside_kept = mount.path().join("kept.txt");
    std::fs::write(&inside_kept, b"kept").unwrap();
    eventually("the second upload", || {
        service_files(&config).iter().any(|f| f.name == "kept.txt")
    });

    // Someone downloads it with the link: it is gone from the mount after
    // the listing's lifetime.
    let fetched = block_on(async {
        http()
            .get(&link)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    });
    assert_eq!(fetched.as_ref(), &content[..]);
    eventually("the consumed file to vanish", || !inside.exists());

    // Renames are refused, and the file stays.
    let renamed = std::fs::rename(&inside_kept, mount.path().join("renamed.txt")).unwrap_err();
    assert_eq!(renamed.raw_os_error(), Some(libc::EPERM));
    assert!(inside_kept.exists());
    mount.unmount();
}

#[test]
fn the_mount_expiry_setting_is_honoured() {
    let (emu, keys) = start_multi(&[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_multi_config(&emu, &keys, dir.path(), "expires = \"1w\"\n");
    let mut args = FAST.to_vec();
    args.extend(["--expires", "6s", "--max-downloads", "2"]);
    let mount = Mount::start_remote(&config, "outbox:", &args);
    std::fs::write(mount.path().join("fleeting.txt"), b"soon gone").unwrap();
    eventually("the upload", || {
        service_files(&config)
            .iter()
            .any(|f| f.name == "fleeting.txt")
    });
    let entry = service_files(&config)
        .into_iter()
        .find(|f| f.name == "fleeting.txt")
        .unwrap();
    let left = entry.expires.unwrap() - chrono::Utc::now();
    assert!(left <= chrono::Duration::seconds(6), "expires in {left}");
    let (_, listed) = block_on(async {
        json_of(
            http()
                .get(format!("{}/", fileio_url(&emu)))
                .bearer_auth(&keys.fileio)
                .send()
                .await
                .unwrap(),
        )
        .await
    });
    assert_eq!(listed["nodes"][0]["maxDownloads"], 2);
    eventually("the expired file to vanish", || {
        !mount.path().join("fleeting.txt").exists()
    });
    mount.unmount();
}

#[test]
fn foreign_files_need_consent() {
    let (emu, keys) = start_multi(&[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_multi_config(&emu, &keys, dir.path(), "");
    let mount = Mount::start_remote(&config, "outbox:", &["--dir-cache-time", "1s"]);
    // A file uploaded elsewhere cannot be opened without consent, and
    // nothing is spent trying.
    let base = fileio_url(&emu);
    block_on(async {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(b"for someone".to_vec()).file_name("gift.txt"),
        );
        let (status, _) = json_of(
            http()
                .post(format!("{base}/"))
                .bearer_auth(&keys.fileio)
                .multipart(form)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200);
    });
    let gift = mount.path().join("gift.txt");
    eventually("the foreign file to be listed", || gift.exists());
    // Its link is there to hand out, without touching the file.
    let entry = service_files(&config)
        .into_iter()
        .find(|f| f.name == "gift.txt")
        .unwrap();
    assert_eq!(
        xattr(&gift, "user.filehostfs.link").unwrap(),
        entry.share_link.unwrap()
    );
    emu.reset_stats();
    let refused = std::fs::read(&gift).unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::EACCES));
    let refused = std::fs::OpenOptions::new()
        .append(true)
        .open(&gift)
        .unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::EACCES));
    assert_eq!(emu.request_count("file.io:download"), 0);
    assert!(
        mount.log().contains("--consume-downloads"),
        "{}",
        mount.log()
    );
    assert!(
        service_files(&config).iter().any(|f| f.name == "gift.txt"),
        "the gift was spent"
    );
    mount.unmount();

    // With consent: one download is spent, later reads use the copy kept,
    // and the used-up file leaves the listing.
    let consenting = Mount::start_remote(
        &config,
        "outbox:",
        &["--dir-cache-time", "1s", "--consume-downloads"],
    );
    let gift = consenting.path().join("gift.txt");
    emu.reset_stats();
    assert_eq!(std::fs::read(&gift).unwrap(), b"for someone");
    assert_eq!(std::fs::read(&gift).unwrap(), b"for someone");
    assert_eq!(emu.request_count("file.io:download"), 1);
    eventually("the used-up file to vanish", || !gift.exists());
    consenting.unmount();
}

/// `filehostfs demo --service fii.one|file.io`: a flat account with the
/// samples, whose own uploads read without spending downloads.
#[test]
fn demos_of_the_flat_services() {
    let data = tempfile::tempdir().unwrap();
    for service in ["fii.one", "file.io"] {
        let dir = tempfile::tempdir().unwrap();
        let mountpoint = dir.path().join("demo");
        let command_line = vec![
            "demo".into(),
            mountpoint.clone().into(),
            "--service".into(),
            service.into(),
            "--data-dir".into(),
            data.path().into(),
        ];
        let demo = Mount::launch(dir, mountpoint, command_line);
        let names: Vec<String> = std::fs::read_dir(demo.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !demo.path().join(n).is_dir()),
            "{service}: {names:?}"
        );
        assert_eq!(
            names.iter().filter(|n| n.starts_with("report (")).count(),
            2,
            "{service}: {names:?}"
        );
        let readme = std::fs::read_to_string(demo.path().join("README.txt")).unwrap();
        assert!(readme.contains(service), "{readme}");
        assert_eq!(
            std::fs::metadata(demo.path().join("random-8MiB.bin"))
                .unwrap()
                .len(),
            8 << 20
        );
        let link = xattr(&demo.path().join("notes.md"), "user.filehostfs.link").unwrap();
        assert!(link.starts_with("http://127.0.0.1:"), "{link}");
        demo.unmount();
    }
    // Both accounts live in the one emulator data dir, beside 1fichier's.
    let keys = std::fs::read_to_string(data.path().join("emulator/keys.txt")).unwrap();
    assert!(
        keys.lines().any(|l| l.starts_with("fii.one fii_")),
        "{keys}"
    );
    assert!(keys.lines().any(|l| l.starts_with("file.io ")), "{keys}");
}
