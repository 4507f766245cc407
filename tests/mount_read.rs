//! Reading through a real mount of a real emulator: contents, random reads,
//! parallel readers, read-only answers, extended attributes, statfs.

mod common;

use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use common::mount::{sha256_hex, sha256_of_file, test_bytes, Mount, Seeder};
use common::Emulator;
use proptest::prelude::*;

const BLOCK: usize = 64 * 1024;
const BLOCK_ARG: &str = "64K";

#[test]
fn contents_match_for_every_size_around_block_boundaries() {
    let emu = Emulator::start();
    let seed = Seeder::new(&emu);
    // The service refuses empty files (the emulator too, like 1fichier), so
    // a 0-byte file cannot be seeded; the Remote layer reports it.
    let sizes = [1, BLOCK - 1, BLOCK, BLOCK + 1, 5 * BLOCK + 123, 64 << 20];
    let mut expected = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let data = test_bytes(*size, i as u64);
        let name = format!("size-{size}.bin");
        seed.upload("sizes", &name, &data);
        expected.push((name, *size, sha256_hex(&data)));
    }
    let mount = Mount::start(&emu, "", &["--block-size", BLOCK_ARG]);
    let folder = mount.path().join("sizes");
    for (name, size, sha) in &expected {
        let path = folder.join(name);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            *size as u64,
            "{name}"
        );
        assert_eq!(&sha256_of_file(&path), sha, "{name}");
    }
    // Read-ahead merged the 1024 blocks of the large file into far fewer requests.
    let downloads = emu.request_count("1fichier:download");
    assert!(
        downloads < 400,
        "{downloads} range requests for ~1040 blocks"
    );
    // A second read of everything is served from the caches.
    emu.reset_stats();
    for (name, _, sha) in &expected {
        assert_eq!(&sha256_of_file(&folder.join(name)), sha, "{name}");
    }
    assert_eq!(emu.request_count("1fichier:download"), 0);
    mount.unmount();
}

#[test]
fn random_reads_match_a_local_copy() {
    let emu = Emulator::start();
    let seed = Seeder::new(&emu);
    let data = Arc::new(test_bytes(3 * 1024 * 1024 + 777, 42));
    seed.upload("", "random.bin", &data);
    let mount = Mount::start(
        &emu,
        "",
        &["--block-size", BLOCK_ARG, "--cache-max-memory", "1M"],
    );
    let file = std::fs::File::open(mount.path().join("random.bin")).unwrap();
    let len = data.len() as u64;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&(0..len + 1000, 0usize..300_000), |(offset, size)| {
            let mut buffer = vec![0u8; size];
            let mut got = 0;
            // pread may return short counts; loop like a careful reader.
            while got < size {
                let n = file
                    .read_at(&mut buffer[got..], offset + got as u64)
                    .unwrap();
                if n == 0 {
                    break;
                }
                got += n;
            }
            let start = (offset as usize).min(data.len());
            let end = (offset as usize + size).min(data.len());
            prop_assert_eq!(got, end - start);
            prop_assert!(buffer[..got] == data[start..end]);
            Ok(())
        })
        .unwrap();
    drop(file);
    mount.unmount();
}

#[test]
fn eight_parallel_readers_of_different_and_of_the_same_file() {
    let emu = Emulator::start();
    let seed = Seeder::new(&emu);
    let mut expected = Vec::new();
    for i in 0..8 {
        let data = test_bytes(2 * 1024 * 1024 + i * 1000, 100 + i as u64);
        seed.upload("many", &format!("f{i}.bin"), &data);
        expected.push(sha256_hex(&data));
    }
    let shared = test_bytes(8 * 1024 * 1024, 7);
    seed.upload("", "shared.bin", &shared);
    let shared_sha = sha256_hex(&shared);
    let mount = Mount::start(&emu, "", &["--block-size", BLOCK_ARG]);

    let root = mount.path().to_path_buf();
    let readers: Vec<_> = (0..8)
        .map(|i| {
            let path = root.join(format!("many/f{i}.bin"));
            std::thread::spawn(move || sha256_of_file(&path))
        })
        .collect();
    for (i, reader) in readers.into_iter().enumerate() {
        assert_eq!(reader.join().unwrap(), expected[i], "f{i}.bin");
    }

    emu.reset_stats();
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let path = root.join("shared.bin");
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                sha256_of_file(&path)
            })
        })
        .collect();
    for reader in readers {
        assert_eq!(reader.join().unwrap(), shared_sha);
    }
    // Readers of the same blocks share fetches: the file crossed the wire
    // about once, not eight times.
    let served = emu.stats()["bytes_served"].as_u64().unwrap();
    assert!(
        served < 2 * shared.len() as u64,
        "{served} bytes served for 8 readers of {} bytes",
        shared.len()
    );
    mount.unmount();
}

#[test]
fn the_kernel_reads_ahead_a_mebibyte_at_a_time() {
    // The kernel starts a FUSE mount's read-ahead at 128 KiB; the mount
    // raises it through sysfs, which takes root (as CI runs).
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: raising the kernel read-ahead needs root");
        return;
    }
    let emu = Emulator::start();
    let seed = Seeder::new(&emu);
    let data = test_bytes(3 << 20, 77);
    seed.upload("", "sequential.bin", &data);
    let mount = Mount::start(&emu, "", &[]);
    let device = std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(mount.path()).unwrap());
    let knob = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(device),
        libc::minor(device)
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let value = std::fs::read_to_string(&knob).unwrap_or_default();
        if value.trim() == "1024" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{knob} is {value:?}, not 1024"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(mount.sha256("sequential.bin"), sha256_hex(&data));
    mount.unmount();
}

#[test]
fn changes_answer_read_only() {
    let emu = Emulator::start();
    let seed = Seeder::new(&emu);
    seed.upload("docs", "a.txt", b"hello");
    let mount = Mount::start(&emu, "", &["--read-only"]);
    let docs = mount.path().join("docs");
    let erofs = |result: std::io::Result<()>, what: &str| {
        let error = result.expect_err(what);
        assert_eq!(error.raw_os_error(), Some(libc::EROFS), "{what}: {error}");
    };
    erofs(std::fs::write(docs.join("new.txt"), b"x"), "create");
    erofs(
        std::fs::OpenOptions::new()
            .write(true)
            .open(docs.join("a.txt"))
            .map(drop),
        "open for writing",
    );
    erofs(std::fs::create_dir(docs.join("sub")), "mkdir");
    erofs(std::fs::remove_file(docs.join("a.txt")), "unlink");
    erofs(std::fs::remove_dir(&docs), "rmdir");
    erofs(
        std::fs::rename(docs.join("a.txt"), docs.join("b.txt")),
        "rename",
    );
    erofs(
        std::fs::set_permissions(
            docs.join("a.txt"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        ),
        "chmod",
    );
    erofs(
        std::os::unix::fs::symlink("a.txt", docs.join("link")),
        "symlink",
    );
    // Nothing changed.
    assert_eq!(std::fs::read(docs.join("a.txt")).unwrap(), b"hello");
    let names: Vec<_> = std::fs::read_dir(&docs)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["a.txt"]);
    mount.unmount();
}

fn getxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    common::mount::getxattr(path, name).ok()
}

fn listxattr(path: &Path) -> Vec<String> {
    let path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buffer = vec![0u8; 4096];
    // SAFETY: a valid C string and a buffer of the length passed.
    let n = unsafe { libc::listxattr(path.as_ptr(), buffer.as_mut_ptr().cast(), buffer.len()) };
    assert!(n >= 0, "listxattr failed");
    buffer.truncate(n as usize);
    buffer
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect()
}

#[test]
fn attributes_xattrs_and_statfs() {
    let emu = Emulator::start();
    let seed = Seeder::new(&emu);
    let entry = seed.upload("docs", "a.txt", b"hello xattrs");
    let mount = Mount::start(&emu, "", &["--umask", "027"]);
    let file = mount.path().join("docs/a.txt");

    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!(meta.uid(), unsafe { libc::getuid() });
    // The mount shows the service's date from the listing; the upload's
    // answer carries none, so `entry.modified` is the client's clock at the
    // end of the upload and may be one second past the service's stamp.
    let shown = meta.mtime();
    let uploaded = entry.modified.timestamp();
    assert!(
        (uploaded - 1..=uploaded).contains(&shown),
        "mtime {shown}, uploaded at {uploaded}"
    );
    let dir_meta = std::fs::metadata(mount.path().join("docs")).unwrap();
    assert_eq!(dir_meta.mode() & 0o7777, 0o750);
    assert!(dir_meta.is_dir());

    let names = listxattr(&file);
    for wanted in [
        "user.filehostfs.id",
        "user.filehostfs.checksum",
        "user.filehostfs.link",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing from {names:?}"
        );
    }
    assert_eq!(
        getxattr(&file, "user.filehostfs.id").unwrap(),
        entry.id.0.as_bytes()
    );
    assert_eq!(
        getxattr(&file, "user.filehostfs.checksum").unwrap(),
        entry.checksum.clone().unwrap().as_bytes()
    );
    let link = String::from_utf8(getxattr(&file, "user.filehostfs.link").unwrap()).unwrap();
    assert!(link.starts_with("http://127.0.0.1:"), "{link}");
    // The direct link serves the file's bytes.
    let mut body = Vec::new();
    reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(&link)
        .bearer_auth(emu.key())
        .send()
        .unwrap()
        .read_to_end(&mut body)
        .unwrap();
    assert_eq!(body, b"hello xattrs");
    assert!(getxattr(&file, "user.filehostfs.nothing").is_none());
    assert!(getxattr(&mount.path().join("docs"), "user.filehostfs.id").is_some());

    // statfs comes from the account's space figures, asked for once.
    let path = CString::new(mount.path().as_os_str().as_bytes()).unwrap();
    for _ in 0..3 {
        // SAFETY: a valid C string and a zeroed out-struct.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut stat) }, 0);
        assert!(stat.f_blocks > 0);
        assert!(stat.f_bfree <= stat.f_blocks);
        // 1fichier: every name of 250 bytes fits its 250 characters.
        assert_eq!(stat.f_namemax, 250);
    }
    assert_eq!(emu.request_count("1fichier:user/info"), 1);
    mount.unmount();
}
