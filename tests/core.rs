//! The filesystem core driven directly, without FUSE, against the
//! emulator on loopback: the shape reference-model tests build on.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::Emulator;
use filehostfs::fs::error::Errno as _;
use filehostfs::fs::{Core, FsConfig};
use filehostfs::remote::Remote;

fn config(staging: &Path, delay: Duration) -> FsConfig {
    common::core_config::small_core(staging, "core-test", delay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_core_leaves_its_writes_to_the_next_one_on_the_same_staging_dir() {
    let emu = Emulator::start();
    let remote: Arc<dyn Remote> = Arc::new(common::remote::fast_client(&emu));
    let root = remote.root();
    let staging = tempfile::tempdir().unwrap();

    // Uploads wait an hour: the core is killed with the file still pending.
    let (core, _) = Core::new(
        remote.clone(),
        root.clone(),
        config(staging.path(), Duration::from_secs(3600)),
    )
    .unwrap();
    let name = OsStr::new("note.txt");
    let (attr, fh) = core
        .create(core.root(), name, libc::S_IFREG | 0o644, libc::O_WRONLY)
        .await
        .unwrap();
    assert_eq!(attr.size, 0);
    assert_eq!(core.write(fh, 0, b"written before the kill").unwrap(), 23);
    core.flush(fh).await.unwrap();
    core.release(fh).await.unwrap();
    let listed = core.readdir(core.root()).await.unwrap();
    assert!(
        listed.iter().any(|(n, a)| n == "note.txt" && a.size == 23),
        "{listed:?}"
    );
    let taken = core
        .create(core.root(), name, libc::S_IFREG | 0o644, libc::O_WRONLY)
        .await;
    assert_eq!(taken.err().map(|e| e.errno()), Some(libc::EEXIST));
    core.kill().await;
    assert!(
        remote.list_folder(&root).await.unwrap().files.is_empty(),
        "nothing was uploaded yet"
    );

    // The next core resumes the upload; its unmount waits for it.
    let (core, recovery) = Core::new(
        remote.clone(),
        root.clone(),
        config(staging.path(), Duration::ZERO),
    )
    .unwrap();
    assert_eq!(recovery.resumed.len(), 1, "{recovery:?}");
    let attr = core.lookup(core.root(), name).await.unwrap();
    assert_eq!(attr.size, 23);
    core.finish(std::future::pending()).await;
    let files = remote.list_folder(&root).await.unwrap().files;
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].name, "note.txt");
    let fh = core.open(attr.ino, libc::O_RDONLY).await.unwrap();
    let data = core.read(fh, 0, 4096).await.unwrap();
    assert_eq!(&data[..], b"written before the kill");
    core.release(fh).await.unwrap();
    let missing = core.lookup(core.root(), OsStr::new("absent")).await;
    assert_eq!(missing.err().map(|e| e.errno()), Some(libc::ENOENT));
}
