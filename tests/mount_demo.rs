//! `filehostfs demo`: an embedded emulator, seeded once, mounted in the
//! foreground until Ctrl-C.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::mount::{is_mounted, Mount};

fn tree(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            found.insert(
                path.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
            if entry.file_type().unwrap().is_dir() {
                pending.push(path);
            }
        }
    }
    found
}

fn start_demo(data: &Path) -> Mount {
    let dir = tempfile::tempdir().unwrap();
    // The demo creates its mount point.
    let mountpoint = dir.path().join("demo-mnt");
    let command_line = vec![
        "demo".into(),
        mountpoint.clone().into(),
        "--data-dir".into(),
        data.into(),
    ];
    Mount::launch(dir, mountpoint, command_line)
}

#[test]
fn the_demo_seeds_once_mounts_and_stops_on_ctrl_c() {
    let data = tempfile::tempdir().unwrap();
    let mut demo = start_demo(data.path());
    let first = tree(demo.path());
    for wanted in [
        "README.txt",
        "Documents/notes.md",
        "Data/random-8MiB.bin",
        "Videos/Holidays/postcard.txt",
    ] {
        assert!(first.contains(wanted), "{wanted} missing from {first:?}");
    }
    let reports = first
        .iter()
        .filter(|p| p.starts_with("Documents/report ("))
        .count();
    assert_eq!(reports, 2, "{first:?}");
    let readme = std::fs::read_to_string(demo.path().join("README.txt")).unwrap();
    assert!(readme.contains("filehostfs demo"));
    assert_eq!(
        std::fs::metadata(demo.path().join("Data/random-8MiB.bin"))
            .unwrap()
            .len(),
        8 << 20
    );
    let video = demo.path().join("Videos/sample.mp4");
    if video.exists() {
        let probe = Command::new("ffprobe")
            .arg("-hide_banner")
            .arg(&video)
            .output()
            .unwrap();
        assert!(probe.status.success(), "{probe:?}");
    }
    demo.signal(libc::SIGINT);
    let status = demo.wait_for_exit().expect("the demo did not stop");
    assert!(status.success(), "{status}; log:\n{}", demo.log());
    assert!(!is_mounted(demo.path()));

    // A second run finds the same account, not a second copy of the samples.
    let demo = start_demo(data.path());
    assert_eq!(tree(demo.path()), first);
    demo.unmount();
}
