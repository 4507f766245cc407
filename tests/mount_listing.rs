//! Browsing through a real mount: big folders, nesting, names, duplicates,
//! the listing cache and its expiry, and a slow service.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::mount::{sha256_hex, sha256_of_file, test_bytes, upload_in_batches, Mount, Seeder};
use common::Emulator;
use serde_json::json;

/// Listing calls the emulator counted (1fichier lists a folder with
/// `folder/ls`, optionally with its files, and/or `file/ls`).
fn listing_requests(emu: &Emulator) -> u64 {
    emu.request_count("1fichier:file/ls") + emu.request_count("1fichier:folder/ls")
}

/// What listing one folder once costs through the Remote layer.
fn one_listing_cost(emu: &Emulator, seed: &Seeder, folder: &filehostfs::remote::FolderId) -> u64 {
    emu.reset_stats();
    seed.runtime
        .block_on(seed.remote.list_folder(folder))
        .unwrap();
    let cost = listing_requests(emu);
    assert!(cost >= 1);
    cost
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// `ls -l` of a folder; returns its output lines (without the "total" line).
fn ls_l(dir: &Path) -> Vec<String> {
    let output = Command::new("ls").arg("-l").arg(dir).output().unwrap();
    assert!(
        output.status.success(),
        "ls -l {}: {output:?}",
        dir.display()
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("total"))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_folder_of_ten_thousand_files_lists_fully() {
    let emu = Emulator::start();
    let seed = Seeder::new(&emu);
    let folder = seed.folder("big");
    let files: Vec<(String, Vec<u8>)> = (0..10_000)
        .map(|i| {
            let name = format!("file-{i:05}.txt");
            let body = format!("content of {name}\n").into_bytes();
            (name, body)
        })
        .collect();
    upload_in_batches(&emu, &folder, &files);
    let cost = one_listing_cost(&emu, &seed, &folder);
    let mount = Mount::start(&emu, "", &[]);
    let dir = mount.path().join("big");
    // The root's listing (to find "big") is not what is being counted.
    assert!(dir.is_dir());
    emu.reset_stats();
    let lines = ls_l(&dir);
    assert_eq!(lines.len(), 10_000);
    assert_eq!(ls_l(&dir), lines);
    assert_eq!(listing_requests(&emu), cost, "{}", emu.stats());
    let names = names_in(&dir);
    let expected: BTreeSet<String> = files.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, expected);
    for i in [0, 4_999, 9_999] {
        let (name, body) = &files[i];
        assert_eq!(&std::fs::read(dir.join(name)).unwrap(), body);
    }
    mount.unmount();
}

#[test]
fn nested_unicode_encoded_and_duplicate_names() {
    let emu = Emulator::start();
    let seed = Seeder::new(&emu);
    seed.upload("a/b/c/d", "deep.txt", b"deep down");
    let odd_names = [
        "Été ☀ 日本語.txt",
        "quote\"d 'name'.txt",
        "<angle> $dollar `tick` back\\slash",
        " leading space",
        "trailing space ",
        "emoji 🎬.mkv",
    ];
    for (i, name) in odd_names.iter().enumerate() {
        seed.upload("names", name, format!("file {i}").as_bytes());
    }
    let first = seed.upload("dups", "report.pdf", b"first version");
    let second = seed.upload("dups", "report.pdf", b"second version!");
    seed.upload("dups", "unique.txt", b"only one");
    let mount = Mount::start(&emu, "", &[]);
    let root = mount.path();

    assert_eq!(
        std::fs::read(root.join("a/b/c/d/deep.txt")).unwrap(),
        b"deep down"
    );
    assert_eq!(
        names_in(&root.join("a/b")),
        BTreeSet::from(["c".to_string()])
    );
    assert!(root.join("a/b/c").is_dir());

    let shown = names_in(&root.join("names"));
    let expected: BTreeSet<String> = odd_names.iter().map(|s| s.to_string()).collect();
    assert_eq!(shown, expected);
    for (i, name) in odd_names.iter().enumerate() {
        assert_eq!(
            std::fs::read(root.join("names").join(name)).unwrap(),
            format!("file {i}").as_bytes(),
            "{name:?}"
        );
    }

    // Both copies of report.pdf are there under names derived from their ids.
    let suffix = |id: &str| id.rsplit('?').next().unwrap().to_string();
    let first_name = format!("report ({}).pdf", suffix(&first.id.0));
    let second_name = format!("report ({}).pdf", suffix(&second.id.0));
    assert_eq!(
        names_in(&root.join("dups")),
        BTreeSet::from([
            first_name.clone(),
            second_name.clone(),
            "unique.txt".to_string()
        ])
    );
    assert_eq!(
        std::fs::read(root.join("dups").join(&first_name)).unwrap(),
        b"first version"
    );
    assert_eq!(
        std::fs::read(root.join("dups").join(&second_name)).unwrap(),
        b"second version!"
    );
    // The names are stable: a remount shows the same ones.
    mount.unmount();
    let mount = Mount::start(&emu, "dups", &[]);
    assert!(mount.path().join(&first_name).exists());
    assert!(mount.path().join(&second_name).exists());
    mount.unmount();
}

#[test]
fn listings_come_from_the_cache_until_they_expire() {
    let emu = Emulator::start();
    let seed = Seeder::new(&emu);
    let folder = seed.folder("cached");
    let files: Vec<(String, Vec<u8>)> = (0..50)
        .map(|i| (format!("f{i:02}.txt"), vec![b'x'; i + 1]))
        .collect();
    seed.upload_many(&folder, files, 8);

    let cost = one_listing_cost(&emu, &seed, &folder);
    let mount = Mount::start(&emu, "", &[]);
    let dir = mount.path().join("cached");
    assert!(dir.is_dir());
    emu.reset_stats();
    let first = ls_l(&dir);
    assert_eq!(first.len(), 50);
    for i in 0..50 {
        let meta = std::fs::metadata(dir.join(format!("f{i:02}.txt"))).unwrap();
        assert_eq!(meta.len(), i as u64 + 1);
    }
    assert_eq!(ls_l(&dir), first);
    assert!(std::fs::metadata(dir.join("missing.txt")).is_err());
    // One listing however many lookups and attribute reads followed.
    assert_eq!(listing_requests(&emu), cost, "{}", emu.stats());
    mount.unmount();

    // With a short time-to-live, a change made elsewhere shows up after it.
    let mount = Mount::start(&emu, "", &["--dir-cache-time", "2s"]);
    let dir = mount.path().join("cached");
    assert_eq!(names_in(&dir).len(), 50);
    seed.upload_into(&folder, "late.txt", b"arrived later");
    assert!(
        !names_in(&dir).contains("late.txt"),
        "served from the cache"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !names_in(&dir).contains("late.txt") {
        assert!(Instant::now() < deadline, "the new file never appeared");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        std::fs::read(dir.join("late.txt")).unwrap(),
        b"arrived later"
    );
    // The kernel keeps its copy of an unchanged listing between `ls` runs;
    // a removal elsewhere must still make it start over after the TTL.
    let late = seed
        .runtime
        .block_on(seed.remote.list_folder(&folder))
        .unwrap()
        .files
        .into_iter()
        .find(|file| file.name == "late.txt")
        .unwrap();
    seed.runtime
        .block_on(seed.remote.remove_file(&late.id))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while names_in(&dir).contains("late.txt") {
        assert!(
            Instant::now() < deadline,
            "the removed file never went away"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(names_in(&dir).len(), 50);
    mount.unmount();
}

#[test]
fn a_slow_service_stalls_neither_cached_folders_nor_parallel_reads() {
    let emu = Emulator::start();
    let seed = Seeder::new(&emu);
    seed.upload("fast", "here.txt", b"cached");
    seed.upload("slow", "there.txt", b"not cached");
    let mut expected = Vec::new();
    for i in 0..3 {
        let data = test_bytes(100_000, 300 + i);
        seed.upload("reads", &format!("r{i}.bin"), &data);
        expected.push(sha256_hex(&data));
    }
    let mount = Mount::start(&emu, "", &[]);
    let root = mount.path().to_path_buf();
    // Cache the folders this test browses while the service is slow.
    assert_eq!(names_in(&root.join("fast")).len(), 1);
    assert_eq!(names_in(&root.join("reads")).len(), 3);

    emu.set_faults(json!({"latency_ms": 6000}));
    let slow_root = root.clone();
    let slow = std::thread::spawn(move || names_in(&slow_root.join("slow")));
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(ls_l(&root.join("fast")).len(), 1);
    assert!(std::fs::metadata(root.join("fast/here.txt")).is_ok());
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(3),
        "ls of a cached folder took {elapsed:?}"
    );
    assert!(
        !slow.is_finished(),
        "the slow listing should still be waiting"
    );
    assert_eq!(slow.join().unwrap().len(), 1);

    // Three reads, each needing a link and a range request (2 × 2 s when
    // done one after the other): in parallel they take about one file's time.
    emu.set_faults(json!({"latency_ms": 2000}));
    let started = Instant::now();
    let readers: Vec<_> = (0..3)
        .map(|i| {
            let path = root.join(format!("reads/r{i}.bin"));
            std::thread::spawn(move || sha256_of_file(&path))
        })
        .collect();
    for (i, reader) in readers.into_iter().enumerate() {
        assert_eq!(reader.join().unwrap(), expected[i]);
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "parallel reads took {elapsed:?}"
    );
    emu.set_faults(json!({"latency_ms": 0}));
    mount.unmount();
}
