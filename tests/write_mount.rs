//! The writable mount end to end: real `filehostfs mount` processes on a
//! real `filehostfs serve`, driven with ordinary tools (cp, rsync, dd, mv).

mod common;

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use common::mount::{sha256_hex, sha256_of_file, test_bytes};
use common::write_mount::{wait_until, RemoteView, WriteMount};
use common::{Emulator, EmulatorOptions};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};

fn run(command: &mut Command) -> String {
    let output = command.output().expect("running a tool");
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A local tree of mixed sizes (no empty files: those stay local
/// placeholders and so do not reach a cold remount).
fn make_tree(root: &Path) {
    let files: &[(&str, usize)] = &[
        ("one-byte", 1),
        ("small.txt", 1000),
        ("docs/block-edge.bin", 65_537),
        ("docs/notes.md", 4_321),
        ("docs/deep/er/image.raw", 1_500_000),
        ("media/clip.bin", 3 << 20),
        ("media/name with spaces & 'quotes'.txt", 77),
        ("media/ünïcødé — ok.txt", 12),
    ];
    for (i, (path, size)) in files.iter().enumerate() {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, test_bytes(*size, i as u64 + 1)).unwrap();
    }
    fs::create_dir_all(root.join("empty-folder")).unwrap();
}

fn diff_r(a: &Path, b: &Path) {
    run(Command::new("diff").arg("-r").arg(a).arg(b));
}

#[test]
fn copied_tree_arrives_and_matches_after_a_cold_remount() {
    let emu = Emulator::start();
    let source = tempfile::tempdir().unwrap();
    make_tree(source.path());
    let cache = tempfile::tempdir().unwrap();
    let mount = WriteMount::start(&emu, cache.path(), &["--write-back", "1s"]);
    run(Command::new("cp")
        .arg("-r")
        .arg(source.path())
        .arg(mount.path().join("tree")));
    // Pending files are listed and read back with their new content.
    diff_r(source.path(), &mount.path().join("tree"));
    let log = mount.unmount();
    assert!(!log.contains("left journaled"), "{log}");

    let cold_cache = tempfile::tempdir().unwrap();
    let mount = WriteMount::start(&emu, cold_cache.path(), &[]);
    diff_r(source.path(), &mount.path().join("tree"));
    mount.unmount();
    let remote = RemoteView::new(&emu, &emu.key());
    assert_eq!(remote.files_named("tree/media", "clip.bin").len(), 1);
}

#[test]
fn rsync_into_the_mount_and_back_is_byte_identical() {
    let emu = Emulator::start();
    let source = tempfile::tempdir().unwrap();
    make_tree(source.path());
    let cache = tempfile::tempdir().unwrap();
    let mount = WriteMount::start(&emu, cache.path(), &["--write-back", "0"]);
    let inside = mount.path().join("synced");
    // rsync writes temporary files and renames them over the targets, and
    // sets times and modes (accepted by the mount).
    run(Command::new("rsync")
        .arg("-a")
        .arg(format!("{}/", source.path().display()))
        .arg(format!("{}/", inside.display())));
    let back = tempfile::tempdir().unwrap();
    run(Command::new("rsync")
        .arg("-a")
        .arg(format!("{}/", inside.display()))
        .arg(format!("{}/", back.path().display())));
    diff_r(source.path(), back.path());
    // Twice: the second run finds nothing to change and must not fail.
    run(Command::new("rsync")
        .arg("-a")
        .arg(format!("{}/", source.path().display()))
        .arg(format!("{}/", inside.display())));
    mount.unmount();
    let remote = RemoteView::new(&emu, &emu.key());
    let names: Vec<String> = remote.file_names("synced");
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        names.len(),
        sorted.len(),
        "no duplicates or temp files: {names:?}"
    );
    assert_eq!(sorted, ["one-byte", "small.txt"]);
}

/// rsync's pattern, many times over with immediate uploads, so that stats,
/// listings and renames land before, during and after each upload's
/// hand-over from the pending file to the remote one: a file must never
/// show a stale size (0, from its create), vanish, or appear twice.
#[test]
fn files_renamed_while_their_upload_finishes_keep_size_and_name() {
    const FILES: usize = 40;
    let emu = Emulator::start();
    let cache = tempfile::tempdir().unwrap();
    let mount = WriteMount::start(&emu, cache.path(), &["--write-back", "0"]);
    let dir = mount.path().join("burst");
    fs::create_dir(&dir).unwrap();
    let fail = |what: String| -> ! { panic!("{what}; log:\n{}", mount.log()) };
    let mut expected = Vec::new();
    for i in 0..FILES {
        let data = test_bytes(50 + i * 997, 500 + i as u64);
        let temp = dir.join(format!(".file-{i}.XXXXXX"));
        let name = dir.join(format!("file-{i}"));
        {
            let mut file = fs::File::create(&temp).unwrap();
            file.write_all(&data).unwrap();
        }
        let when =
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        fs::File::options()
            .write(true)
            .open(&temp)
            .and_then(|f| f.set_modified(when))
            .unwrap_or_else(|e| fail(format!("setting the mtime of {temp:?}: {e}")));
        fs::rename(&temp, &name).unwrap_or_else(|e| fail(format!("renaming {temp:?}: {e}")));
        let len = fs::metadata(&name)
            .unwrap_or_else(|e| fail(format!("stat {name:?}: {e}")))
            .len();
        if len != data.len() as u64 {
            fail(format!("{name:?} shows {len} bytes, wrote {}", data.len()));
        }
        // A listing now and then, racing the uploads of earlier files.
        if i % 4 == 3 {
            let names: Vec<String> = fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            if names.iter().any(|n| n.starts_with('.')) || names.len() != i + 1 {
                fail(format!(
                    "after {} renames the folder lists {names:?}",
                    i + 1
                ));
            }
        }
        expected.push((name, data));
    }
    let check = |when: &str| {
        for (name, data) in &expected {
            let back = fs::read(name).unwrap_or_else(|e| fail(format!("{when}: {name:?}: {e}")));
            if &back != data {
                fail(format!(
                    "{when}: {name:?} reads {} bytes, wrote {}",
                    back.len(),
                    data.len()
                ));
            }
        }
    };
    check("while uploading");
    let remote = RemoteView::new(&emu, &emu.key());
    wait_until("every file uploaded", || {
        remote.listing("burst").files.len() >= FILES
    });
    check("after the uploads");
    mount.unmount();
    let mut names: Vec<String> = remote.file_names("burst");
    names.sort();
    let mut wanted: Vec<String> = (0..FILES).map(|i| format!("file-{i}")).collect();
    wanted.sort();
    assert_eq!(names, wanted, "each file exactly once, no temporary names");
}

#[test]
fn overwrite_append_and_editor_style_saves() {
    let emu = Emulator::start();
    let remote = RemoteView::new(&emu, &emu.key());
    let original = test_bytes(300_000, 9);
    remote.upload("", "edit.bin", &original);
    remote.upload("", "log.txt", b"line 1\n");
    remote.upload("", "doc.md", b"old document");
    let cache = tempfile::tempdir().unwrap();
    let mount = WriteMount::start(&emu, cache.path(), &["--write-back", "500ms"]);
    let m = mount.path();

    // Random writes into an existing remote file (fetched into staging first).
    let mut expected = original.clone();
    {
        let file = OpenOptions::new()
            .write(true)
            .open(m.join("edit.bin"))
            .unwrap();
        for (offset, len, seed) in [(0u64, 10usize, 1u64), (150_000, 4096, 2), (299_990, 30, 3)] {
            let data = test_bytes(len, 100 + seed);
            file.write_all_at(&data, offset).unwrap();
            let end = offset as usize + len;
            if end > expected.len() {
                expected.resize(end, 0);
            }
            expected[offset as usize..end].copy_from_slice(&data);
        }
    }
    assert_eq!(fs::read(m.join("edit.bin")).unwrap(), expected);

    // Append.
    OpenOptions::new()
        .append(true)
        .open(m.join("log.txt"))
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", mount.log()))
        .write_all(b"line 2\n")
        .unwrap();
    assert_eq!(fs::read(m.join("log.txt")).unwrap(), b"line 1\nline 2\n");

    // Editor-style: write a temp file, then rename it over the original.
    fs::write(m.join(".doc.md.swp"), b"new document, saved").unwrap();
    fs::rename(m.join(".doc.md.swp"), m.join("doc.md")).unwrap();
    assert_eq!(fs::read(m.join("doc.md")).unwrap(), b"new document, saved");
    assert!(!m.join(".doc.md.swp").exists());

    // Overwrite in place (O_TRUNC), twice in a row: uploaded once.
    fs::write(m.join("log.txt"), b"rewritten\n").unwrap();
    fs::write(m.join("log.txt"), b"rewritten again\n").unwrap();
    mount.unmount();

    let check = |name: &str, content: &[u8]| {
        let files = remote.files_named("", name);
        assert_eq!(files.len(), 1, "one {name}: {files:#?}");
        assert_eq!(remote.content(&files[0]), content, "{name}");
    };
    check("edit.bin", &expected);
    check("log.txt", b"rewritten again\n");
    check("doc.md", b"new document, saved");
    assert_eq!(remote.listing("").files.len(), 3);
}

fn xattr(path: &Path, name: &str) -> Option<String> {
    let value = common::mount::getxattr(path, name).ok()?;
    Some(String::from_utf8_lossy(&value).into_owned())
}

fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> std::io::Result<()> {
    let from = CString::new(from.as_os_str().as_bytes()).unwrap();
    let to = CString::new(to.as_os_str().as_bytes()).unwrap();
    // SAFETY: two valid NUL-terminated paths; no memory is retained.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn rename_move_delete_and_refusals() {
    let emu = Emulator::start();
    let remote = RemoteView::new(&emu, &emu.key());
    remote.upload("", "a.txt", b"file a");
    remote.upload("", "b.txt", b"file b");
    let cache = tempfile::tempdir().unwrap();
    let mount = WriteMount::start(&emu, cache.path(), &["--write-back", "60s"]);
    let m = mount.path();

    fs::create_dir(m.join("d1")).unwrap();
    fs::create_dir_all(m.join("d2/sub")).unwrap();
    fs::write(m.join("d2/sub/inner.txt"), b"inner").unwrap();
    // Remote files: rename within a folder, move across folders.
    fs::rename(m.join("a.txt"), m.join("a-renamed.txt")).unwrap();
    fs::rename(m.join("a-renamed.txt"), m.join("d1/a-moved.txt")).unwrap();
    // Onto an existing file: replaced.
    fs::rename(m.join("b.txt"), m.join("d1/a-moved.txt")).unwrap();
    assert_eq!(fs::read(m.join("d1/a-moved.txt")).unwrap(), b"file b");
    // RENAME_NOREPLACE onto an existing name.
    fs::write(m.join("d1/c.txt"), b"file c").unwrap();
    let err = renameat2(
        &m.join("d1/c.txt"),
        &m.join("d1/a-moved.txt"),
        libc::RENAME_NOREPLACE,
    )
    .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
    renameat2(
        &m.join("d1/c.txt"),
        &m.join("d1/c2.txt"),
        libc::RENAME_NOREPLACE,
    )
    .unwrap();
    // Folders: rename, and move into another folder with a pending file inside.
    fs::rename(m.join("d2/sub"), m.join("d2/sub-renamed")).unwrap();
    fs::rename(m.join("d2/sub-renamed"), m.join("d1/sub-moved")).unwrap();
    assert_eq!(
        fs::read(m.join("d1/sub-moved/inner.txt")).unwrap(),
        b"inner"
    );
    // rmdir of a non-empty folder.
    let err = fs::remove_dir(m.join("d1")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY));
    fs::remove_dir(m.join("d2")).unwrap();
    // Unlink of a file whose upload is pending: it never reaches the service.
    fs::write(m.join("d1/doomed.txt"), b"never uploaded").unwrap();
    fs::remove_file(m.join("d1/doomed.txt")).unwrap();
    assert!(!m.join("d1/doomed.txt").exists());
    // What the services cannot store.
    let err = std::os::unix::fs::symlink("a", m.join("link")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    let err = fs::hard_link(m.join("d1/c2.txt"), m.join("hard")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    let mut names: Vec<String> = fs::read_dir(m.join("d1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a-moved.txt", "c2.txt", "sub-moved"]);
    let log = mount.unmount();
    assert!(!log.contains("left journaled"), "{log}");

    let root = remote.listing("");
    assert!(root.files.is_empty(), "{:#?}", root.files);
    let folders: Vec<String> = root.folders.into_iter().map(|f| f.name).collect();
    assert_eq!(folders, ["d1"]);
    let d1 = remote.listing("d1");
    let mut files: Vec<(String, Vec<u8>)> = d1
        .files
        .iter()
        .map(|f| (f.name.clone(), remote.content(f)))
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            ("a-moved.txt".to_string(), b"file b".to_vec()),
            ("c2.txt".to_string(), b"file c".to_vec())
        ]
    );
    assert_eq!(remote.files_named("d1/sub-moved", "inner.txt").len(), 1);
    assert_eq!(
        emu.request_count("1fichier:upload"),
        2 + 2,
        "seeds + c2 + inner"
    );
}

#[derive(Clone, Debug)]
enum Op {
    Write { offset: u64, len: usize, seed: u64 },
    Truncate { size: u64 },
    TruncateByPath { size: u64 },
    Append { len: usize, seed: u64 },
    Reopen,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..150_000, 1usize..60_000, any::<u64>())
            .prop_map(|(offset, len, seed)| Op::Write { offset, len, seed }),
        1 => (0u64..180_000).prop_map(|size| Op::Truncate { size }),
        1 => (0u64..180_000).prop_map(|size| Op::TruncateByPath { size }),
        1 => (1usize..20_000, any::<u64>()).prop_map(|(len, seed)| Op::Append { len, seed }),
        2 => Just(Op::Reopen),
    ]
}

/// open/write/truncate/close/reopen on one file of the mount, compared
/// with the same operations on a local file. Uploads happen while the
/// sequence runs (no write-back delay), so reopening catches files that
/// are pending, uploading and already uploaded.
#[test]
fn random_operations_on_one_file_match_a_local_model() {
    let emu = Emulator::start();
    let cache = tempfile::tempdir().unwrap();
    let mount = WriteMount::start(&emu, cache.path(), &["--write-back", "0"]);
    let model_dir = tempfile::tempdir().unwrap();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 10,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let case = std::sync::atomic::AtomicU32::new(0);
    let result = runner.run(&proptest::collection::vec(op_strategy(), 1..10), |ops| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let name = format!("model-{n}.bin");
        let ours = mount.path().join(&name);
        let model = model_dir.path().join(&name);
        let open = |path: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .unwrap()
        };
        let (mut a, mut b) = (open(&ours), open(&model));
        for op in &ops {
            match op {
                Op::Write { offset, len, seed } => {
                    let data = test_bytes(*len, *seed);
                    a.write_all_at(&data, *offset).unwrap();
                    b.write_all_at(&data, *offset).unwrap();
                }
                Op::Truncate { size } => {
                    a.set_len(*size).unwrap();
                    b.set_len(*size).unwrap();
                }
                Op::TruncateByPath { size } => {
                    drop((a, b));
                    OpenOptions::new()
                        .write(true)
                        .open(&ours)
                        .unwrap()
                        .set_len(*size)
                        .unwrap();
                    OpenOptions::new()
                        .write(true)
                        .open(&model)
                        .unwrap()
                        .set_len(*size)
                        .unwrap();
                    (a, b) = (open(&ours), open(&model));
                }
                Op::Append { len, seed } => {
                    let data = test_bytes(*len, *seed);
                    for path in [&ours, &model] {
                        let mut appender = OpenOptions::new().append(true).open(path).unwrap();
                        appender.write_all(&data).unwrap();
                    }
                }
                Op::Reopen => {
                    drop((a, b));
                    (a, b) = (open(&ours), open(&model));
                }
            }
            let mut seen = Vec::new();
            a.seek(SeekFrom::Start(0)).unwrap();
            a.read_to_end(&mut seen).unwrap();
            let wanted = fs::read(&model).unwrap();
            prop_assert_eq!(sha256_hex(&seen), sha256_hex(&wanted), "after {:?}", op);
        }
        drop((a, b));
        let wanted = fs::read(&model).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(sha256_of_file(&ours), sha256_hex(&wanted));
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}\nmount log:\n{}", mount.log());
    }
    // Everything reaches the service exactly as the model says.
    mount.unmount();
    let remote = RemoteView::new(&emu, &emu.key());
    for entry in fs::read_dir(model_dir.path()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let wanted = fs::read(entry.path()).unwrap();
        let files = remote.files_named("", &name);
        if wanted.is_empty() {
            assert!(files.is_empty(), "empty files stay local placeholders");
        } else {
            assert_eq!(files.len(), 1, "{name}: {files:#?}");
            assert_eq!(
                sha256_hex(&remote.content(&files[0])),
                sha256_hex(&wanted),
                "{name}"
            );
        }
    }
}

#[test]
fn a_mount_killed_during_a_large_upload_completes_it_after_remount() {
    let emu = Emulator::start();
    let remote = RemoteView::new(&emu, &emu.key());
    let source = tempfile::tempdir().unwrap();
    let data = test_bytes(24 << 20, 77);
    let local = source.path().join("large.bin");
    fs::write(&local, &data).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mount = WriteMount::start(&emu, cache.path(), &["--write-back", "0"]);
    // Slow answers keep the upload in flight long enough to kill the mount.
    emu.set_faults(serde_json::json!({"latency_ms": 1500}));
    emu.reset_stats();
    run(Command::new("cp")
        .arg(&local)
        .arg(mount.path().join("large.bin")));
    wait_until("the upload to start", || {
        emu.request_count("1fichier:upload") >= 1
    });
    mount.kill9();
    emu.set_faults(serde_json::json!({"latency_ms": 0}));

    let mount = WriteMount::start(&emu, cache.path(), &["--write-back", "0"]);
    wait_until("the resumed upload to finish", || {
        mount.log().contains("upload complete")
    });
    assert!(
        mount.log().contains("resumed 1 pending upload(s)"),
        "{}",
        mount.log()
    );
    assert_eq!(
        sha256_of_file(&mount.path().join("large.bin")),
        sha256_hex(&data)
    );
    mount.unmount();
    let files = remote.files_named("", "large.bin");
    assert_eq!(files.len(), 1, "exactly one copy: {files:#?}");
    assert_eq!(sha256_hex(&remote.content(&files[0])), sha256_hex(&data));
}

#[test]
fn uploads_arrive_despite_server_errors_and_rate_limit_bursts() {
    let emu = Emulator::start();
    let cache = tempfile::tempdir().unwrap();
    let mount = WriteMount::start(&emu, cache.path(), &["--write-back", "0"]);
    fs::create_dir(mount.path().join("batch")).unwrap();
    // Listed before the faults: the uploads are what this test is about. A
    // lookup is retried only so long (8 attempts, the first 5 of them
    // spent on the burst), and then answers EIO; the queue retries an
    // upload for as long as it takes.
    assert_eq!(fs::read_dir(mount.path().join("batch")).unwrap().count(), 0);
    emu.set_faults(serde_json::json!({"error_rate": 0.25, "rate_limit_burst": 5}));
    let mut expected = Vec::new();
    for i in 0..8u64 {
        let name = format!("f{i}.bin");
        let data = test_bytes(10_000 + 3_333 * i as usize, 200 + i);
        if let Err(error) = fs::write(mount.path().join("batch").join(&name), &data) {
            panic!("writing {name}: {error}\n{}", mount.log());
        }
        expected.push((name, data));
    }
    let log = mount.unmount();
    emu.set_faults(serde_json::json!({"error_rate": 0.0, "rate_limit_burst": 0}));
    assert!(!log.contains("left journaled"), "{log}");
    let remote = RemoteView::new(&emu, &emu.key());
    assert_eq!(remote.listing("batch").files.len(), expected.len());
    for (name, data) in expected {
        let files = remote.files_named("batch", &name);
        assert_eq!(files.len(), 1, "{name}");
        assert_eq!(remote.content(&files[0]), data, "{name}");
    }
}

#[test]
fn quota_exceeded_gives_enospc_and_keeps_the_staged_file() {
    let key = uuid::Uuid::new_v4().simple().to_string();
    let emu = Emulator::start_opts(EmulatorOptions {
        keys_file_lines: vec![format!("1fichier {key} quota=200000")],
        ..EmulatorOptions::default()
    });
    let cache = tempfile::tempdir().unwrap();
    let mount = WriteMount::start_for_key(&emu, &key, cache.path(), &["--write-back-wait", "2s"]);
    let path = mount.path().join("too-big.bin");
    let mut file = fs::File::create(&path).unwrap();
    file.write_all(&test_bytes(300_000, 5)).unwrap();
    let err = file
        .sync_all()
        .expect_err("fsync must report the full account");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    drop(file);
    // Saved again: close reports what the service said last time.
    let mut again = OpenOptions::new().append(true).open(&path).unwrap();
    again.write_all(b"!").unwrap();
    let fd = std::os::unix::io::IntoRawFd::into_raw_fd(again);
    // SAFETY: closing the descriptor we own, exactly once.
    let rc = unsafe { libc::close(fd) };
    assert_eq!(rc, -1, "close must report the refusal");
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOSPC)
    );
    // Kept: still listed and readable, and staged on disk, with its reason.
    assert_eq!(fs::metadata(&path).unwrap().len(), 300_001);
    // (the kernel releases the handle just after close returns)
    wait_until("the closed file to be queued", || {
        xattr(&path, "user.filehostfs.pending").as_deref() == Some("queued")
    });
    let reason = xattr(&path, "user.filehostfs.last_error").expect("a reason");
    assert!(reason.contains("space"), "{reason}");
    let mut expected = test_bytes(300_000, 5);
    expected.push(b'!');
    assert_eq!(fs::read(&path).unwrap(), expected);
    let staged = fs::read_dir(cache.path().join("staging"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".data")
        })
        .count();
    assert_eq!(staged, 1);
    // A file that fits still goes through.
    let mut small = fs::File::create(mount.path().join("fits.txt")).unwrap();
    small.write_all(b"small enough").unwrap();
    small.sync_all().expect("a file within the quota");
    drop(small);
    let log = mount.unmount();
    assert!(log.contains("left journaled"), "{log}");
    assert!(log.contains("too-big.bin"), "{log}");
    let remote = RemoteView::new(&emu, &key);
    let names: Vec<String> = remote.file_names("");
    assert_eq!(names, ["fits.txt"]);
}

#[test]
fn empty_files_live_on_as_placeholders_and_fsync_is_durable() {
    let emu = Emulator::start();
    let remote = RemoteView::new(&emu, &emu.key());
    let cache = tempfile::tempdir().unwrap();
    let mount = WriteMount::start(&emu, cache.path(), &["--write-back", "60s"]);
    fs::File::create(mount.path().join("empty.txt")).unwrap();
    // fsync means "stored by the service", whatever the write-back delay.
    let mut file = fs::File::create(mount.path().join("durable.txt")).unwrap();
    file.write_all(b"on the service when fsync returns")
        .unwrap();
    file.sync_all().unwrap();
    assert_eq!(remote.files_named("", "durable.txt").len(), 1);
    drop(file);
    mount.unmount();
    assert!(remote.files_named("", "empty.txt").is_empty());

    let mount = WriteMount::start(&emu, cache.path(), &["--write-back", "0"]);
    assert_eq!(
        fs::metadata(mount.path().join("empty.txt")).unwrap().len(),
        0
    );
    fs::write(mount.path().join("empty.txt"), b"content at last").unwrap();
    mount.unmount();
    let files = remote.files_named("", "empty.txt");
    assert_eq!(files.len(), 1);
    assert_eq!(remote.content(&files[0]), b"content at last");
}

#[test]
fn impossible_sizes_and_names_are_refused_at_once() {
    let emu = Emulator::start();
    let cache = tempfile::tempdir().unwrap();
    let mount = WriteMount::start(&emu, cache.path(), &[]);
    let m = mount.path();
    // 1fichier takes names of at most 250 characters (after encoding).
    let long = "x".repeat(251);
    let too_long = |result: std::io::Result<()>, what: &str| {
        let error = result.expect_err(what);
        assert_eq!(
            error.raw_os_error(),
            Some(libc::ENAMETOOLONG),
            "{what}: {error}"
        );
    };
    too_long(fs::write(m.join(&long), b"data"), "create");
    too_long(fs::create_dir(m.join(&long)), "mkdir");
    fs::write(m.join("short.txt"), b"data").unwrap();
    too_long(fs::rename(m.join("short.txt"), m.join(&long)), "rename");
    // Over the service's 300 GB file size limit (sparse: no disk used).
    let file = fs::File::create(m.join("huge.bin")).unwrap();
    let error = file.set_len(300_000_000_001).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EFBIG), "{error}");
    let error = file.write_all_at(b"x", 300_000_000_000).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EFBIG), "{error}");
    drop(file);
    fs::remove_file(m.join("huge.bin")).unwrap();
    mount.unmount();
    let remote = RemoteView::new(&emu, &emu.key());
    let names: Vec<String> = remote.file_names("");
    assert_eq!(names, ["short.txt"]);
}
