//! The command-line tools end to end: a real `filehostfs` binary talking
//! to a real `filehostfs serve` over loopback.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::remote::{cli_ok, run_cli, write_config};
use common::Emulator;

/// Every file under `root` (relative path → bytes).
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path
                    .strip_prefix(base)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn make_tree(root: &Path) {
    let files: [(&str, Vec<u8>); 5] = [
        ("readme.txt", b"hello from the top\n".to_vec()),
        (
            "photos/cat $1.jpg",
            (0..70_000u32).map(|i| (i % 253) as u8).collect(),
        ),
        (
            "photos/old/'quoted' <name>.txt",
            b"odd names survive".to_vec(),
        ),
        ("docs/a.txt", b"a".to_vec()),
        ("docs/deeper/still/b.bin", vec![7u8; 4096]),
    ];
    for (rel, bytes) in files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

/// The single stderr line of a failed command.
fn failure_line(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {stderr}");
    lines[0].to_string()
}

#[test]
fn put_ls_get_mv_rm_round_trip() {
    let emu = Emulator::start();
    let work = tempfile::tempdir().unwrap();
    let config = write_config(&emu, work.path(), "");
    let src = work.path().join("src");
    make_tree(&src);

    // put DIR puts DIR's contents into the target, creating it.
    cli_ok(&config, &["put", src.to_str().unwrap(), "work:backup/2024"]);
    assert_eq!(cli_ok(&config, &["ls", "work:"]), "backup/\n");
    assert_eq!(
        cli_ok(&config, &["ls", "work:backup/2024"]),
        "docs/\nphotos/\nreadme.txt\n"
    );
    let long = cli_ok(&config, &["ls", "-l", "work:backup/2024/photos"]);
    let lines: Vec<&str> = long.lines().collect();
    assert_eq!(lines.len(), 2, "{long}");
    assert!(lines[0].ends_with(" old/"), "{long}");
    assert!(lines[1].ends_with(" cat $1.jpg"), "{long}");
    assert!(lines[1].trim_start().starts_with("70000 "), "{long}");
    // A second put of the same tree uploads nothing new.
    emu.reset_stats();
    cli_ok(&config, &["put", src.to_str().unwrap(), "work:backup/2024"]);
    assert_eq!(emu.request_count("1fichier:upload"), 0, "{}", emu.stats());

    // get a folder: its contents into the local folder, bytes identical.
    let back = work.path().join("back");
    cli_ok(
        &config,
        &["get", "work:backup/2024", back.to_str().unwrap()],
    );
    assert_eq!(tree(&back), tree(&src));

    // put FILE into an existing folder, or under a new name.
    let single = work.path().join("single.txt");
    std::fs::write(&single, b"one file").unwrap();
    cli_ok(&config, &["put", single.to_str().unwrap(), "work:backup"]);
    cli_ok(
        &config,
        &["put", single.to_str().unwrap(), "work:backup/renamed.txt"],
    );
    assert_eq!(
        cli_ok(&config, &["ls", "work:backup"]),
        "2024/\nrenamed.txt\nsingle.txt\n"
    );
    // Replacing a file leaves one copy with the new bytes.
    std::fs::write(&single, b"one file, changed").unwrap();
    cli_ok(
        &config,
        &["put", single.to_str().unwrap(), "work:backup/renamed.txt"],
    );
    let got = work.path().join("got.txt");
    cli_ok(
        &config,
        &["get", "work:backup/renamed.txt", got.to_str().unwrap()],
    );
    assert_eq!(std::fs::read(&got).unwrap(), b"one file, changed");
    assert_eq!(
        cli_ok(&config, &["ls", "work:backup"]),
        "2024/\nrenamed.txt\nsingle.txt\n"
    );

    // Missing parents are created; get FILE DIR saves under the file's name.
    cli_ok(
        &config,
        &["put", single.to_str().unwrap(), "work:new/deep/s.txt"],
    );
    assert_eq!(cli_ok(&config, &["ls", "work:new/deep"]), "s.txt\n");
    let into = work.path().join("into");
    std::fs::create_dir(&into).unwrap();
    cli_ok(
        &config,
        &["get", "work:new/deep/s.txt", into.to_str().unwrap()],
    );
    assert_eq!(
        std::fs::read(into.join("s.txt")).unwrap(),
        b"one file, changed"
    );
    // mkdir of an existing folder is fine (like mkdir -p).
    cli_ok(&config, &["mkdir", "work:new/deep"]);
    cli_ok(&config, &["rm", "-r", "work:new"]);

    // mv: rename a file, move a file into a folder, move+rename a folder.
    cli_ok(
        &config,
        &["mv", "work:backup/single.txt", "work:backup/solo.txt"],
    );
    cli_ok(
        &config,
        &["mv", "work:backup/solo.txt", "work:backup/2024/docs"],
    );
    cli_ok(&config, &["mv", "work:backup/2024/photos", "work:pictures"]);
    assert_eq!(cli_ok(&config, &["ls", "work:"]), "backup/\npictures/\n");
    assert_eq!(
        cli_ok(&config, &["ls", "work:backup/2024/docs"]),
        "deeper/\na.txt\nsolo.txt\n"
    );
    assert_eq!(
        cli_ok(&config, &["ls", "work:pictures"]),
        "old/\ncat $1.jpg\n"
    );

    // link prints a direct link that serves the file.
    let link = cli_ok(&config, &["link", "work:backup/2024/readme.txt"]);
    assert!(link.trim().starts_with("http://127.0.0.1:"), "{link}");
    let served = reqwest::blocking::Client::new()
        .get(link.trim())
        .bearer_auth(emu.key())
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.bytes())
        .expect("fetching the printed link");
    assert_eq!(&served[..], b"hello from the top\n");

    // about prints used/total.
    let about = cli_ok(&config, &["about", "work:"]);
    assert!(about.starts_with("Used:"), "{about}");

    // rm: files, empty folders, -r for the rest.
    let line = failure_line(&run_cli(&config, &["rm", "work:pictures"], &[]));
    assert!(
        line.starts_with("filehostfs: error: work:pictures: ") && line.contains("-r"),
        "{line}"
    );
    cli_ok(&config, &["rm", "-r", "work:pictures"]);
    cli_ok(&config, &["rm", "work:backup/renamed.txt"]);
    cli_ok(&config, &["mkdir", "work:empty/nested"]);
    cli_ok(&config, &["rm", "work:empty/nested"]);
    cli_ok(&config, &["rm", "work:empty"]);
    assert_eq!(cli_ok(&config, &["ls", "work:"]), "backup/\n");
    assert_eq!(cli_ok(&config, &["ls", "work:backup"]), "2024/\n");
}

#[test]
fn failures_print_one_line_naming_the_path() {
    let emu = Emulator::start();
    let work = tempfile::tempdir().unwrap();
    let config = write_config(&emu, work.path(), "");

    let line = failure_line(&run_cli(&config, &["ls", "work:no/such/place"], &[]));
    assert!(
        line.starts_with("filehostfs: error: work:no/such/place: "),
        "{line}"
    );
    assert!(line.contains("not found"), "{line}");

    let line = failure_line(&run_cli(&config, &["ls", "nosuchremote:"], &[]));
    assert!(line.contains("no remote named \"nosuchremote\""), "{line}");

    let empty = work.path().join("empty.txt");
    std::fs::write(&empty, b"").unwrap();
    let line = failure_line(&run_cli(
        &config,
        &["put", empty.to_str().unwrap(), "work:"],
        &[],
    ));
    assert!(
        line.starts_with("filehostfs: error: work:empty.txt: ") && line.contains("empty"),
        "{line}"
    );

    let line = failure_line(&run_cli(&config, &["rm", "work:"], &[]));
    assert!(line.contains("top folder"), "{line}");
}

#[test]
fn config_with_a_readable_inline_key_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let emu = Emulator::start();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[work]\ntype = \"1fichier\"\napi_url = \"{}\"\nkey = \"{}\"\nrate = 100\n",
            emu.fichier_url(),
            emu.key()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run_cli(&config, &["ls", "work:"], &[]);
    let line = failure_line(&out);
    assert!(line.contains("chmod 600"), "{line}");
    assert!(!line.contains(&emu.key()), "{line}");

    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    cli_ok(&config, &["ls", "work:"]);
}

#[test]
fn the_key_never_reaches_the_logs() {
    let emu = Emulator::start();
    let work = tempfile::tempdir().unwrap();
    // Key from the environment, config without any key.
    let config = work.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[work]\ntype = \"1fichier\"\napi_url = \"{}\"\nrate = 100\n",
            emu.fichier_url()
        ),
    )
    .unwrap();
    let key = emu.key();
    let file = work.path().join("f.txt");
    std::fs::write(&file, b"some bytes").unwrap();
    let env = [("FILEHOSTFS_WORK_KEY", key.as_str()), ("RUST_LOG", "trace")];
    for args in [
        vec!["put", file.to_str().unwrap(), "work:dir/f.txt"],
        vec!["ls", "-l", "work:dir"],
        vec!["link", "work:dir/f.txt"],
        vec![
            "get",
            "work:dir/f.txt",
            work.path().join("g.txt").to_str().unwrap(),
        ],
        vec!["rm", "-r", "work:dir"],
    ] {
        let out = run_cli(&config, &args, &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.len() > 200,
            "{args:?}: expected trace output, got {stderr}"
        );
        assert!(
            !stderr.contains(&key),
            "{args:?}: the key appears in the logs"
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains(&key));
    }
    // A wrong key fails without echoing it.
    let out = run_cli(
        &config,
        &["ls", "work:"],
        &[("FILEHOSTFS_WORK_KEY", "wrong-key-123")],
    );
    let line = failure_line(&out);
    assert!(!line.contains("wrong-key-123"), "{line}");
}
