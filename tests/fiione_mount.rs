//! fii.one through a real mount: a flat account, renames, and a key
//! without the delete permission.

mod common;

use std::time::{Duration, Instant};

use common::mount::Mount;
use common::multi::{fiione_client, fiione_url, start_multi, write_multi_config};
use filehostfs::remote::{Remote, UploadSource};

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for: {what}");
}

#[test]
fn flat_account_rename_and_a_key_without_delete() {
    let (emu, keys) = start_multi(&[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_multi_config(&emu, &keys, dir.path(), "");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let remote = fiione_client(&fiione_url(&emu), &keys.fiione);
    for name in ["a.txt", "b.txt", "a.txt"] {
        let bytes = format!("content of {name}").into_bytes();
        let size = bytes.len() as u64;
        runtime
            .block_on(remote.upload(
                &remote.root(),
                name,
                UploadSource::Reader {
                    reader: Box::pin(std::io::Cursor::new(bytes)),
                    size,
                },
                None,
            ))
            .unwrap();
    }

    // A file of several blocks, read through ranged requests of its
    // public direct link.
    let big: Vec<u8> = (0..3_500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let size = big.len() as u64;
    runtime
        .block_on(remote.upload(
            &remote.root(),
            "big.bin",
            UploadSource::Reader {
                reader: Box::pin(std::io::Cursor::new(big.clone())),
                size,
            },
            None,
        ))
        .unwrap();

    let mount = Mount::start_remote(
        &config,
        "pics-nodelete:",
        &["--dir-cache-time", "1s", "--block-size", "256K"],
    );
    emu.reset_stats();
    assert!(
        std::fs::read(mount.path().join("big.bin")).unwrap() == big,
        "big.bin differs"
    );
    assert!(emu.request_count("fii.one:download") >= 2);
    std::fs::remove_file(mount.path().join("big.bin")).unwrap_err();
    let mut names: Vec<String> = std::fs::read_dir(mount.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.contains(&"b.txt".to_string()), "{names:?}");
    assert_eq!(
        names.iter().filter(|n| n.starts_with("a ")).count(),
        2,
        "duplicates shown apart: {names:?}"
    );
    assert_eq!(
        std::fs::read(mount.path().join("b.txt")).unwrap(),
        b"content of b.txt"
    );

    // A burst of 429 answers is waited out: the listing still arrives.
    std::thread::sleep(Duration::from_millis(1100));
    emu.set_faults(serde_json::json!({"rate_limit_burst": 3}));
    emu.reset_stats();
    let relisted = std::fs::read_dir(mount.path()).unwrap().count();
    assert_eq!(relisted, 4);
    assert!(
        emu.request_count("fii.one:files") >= 4,
        "{}",
        emu.request_count("fii.one:files")
    );

    // No folders on fii.one.
    let err = std::fs::create_dir(mount.path().join("album")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));

    // The key may not delete: EACCES, and the file stays.
    let err = std::fs::remove_file(mount.path().join("b.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{}", mount.log());
    let still = runtime
        .block_on(remote.list_folder(&remote.root()))
        .unwrap();
    assert!(still.files.iter().any(|f| f.name == "b.txt"));
    assert!(mount.path().join("b.txt").exists());

    // It may rename (edit): the title changes on the service.
    std::fs::rename(mount.path().join("b.txt"), mount.path().join("c.txt")).unwrap();
    eventually("the rename on the service", || {
        let files = runtime
            .block_on(remote.list_folder(&remote.root()))
            .unwrap()
            .files;
        files.iter().any(|f| f.name == "c.txt") && files.iter().all(|f| f.name != "b.txt")
    });
    assert_eq!(
        std::fs::read(mount.path().join("c.txt")).unwrap(),
        b"content of b.txt"
    );
    mount.unmount();
}
