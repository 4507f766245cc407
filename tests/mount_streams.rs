//! Reads through a real mount over a hoster-like link: the emulator over
//! TLS (a certificate made at test time), a few milliseconds away, each
//! download connection paced, and a per-account limit on connections. A
//! sequential reader's read-ahead spreads over several connections, never
//! more than the account allows; a refused connection costs no read, and
//! neither does a connection cut mid-stream; a media probe still costs at
//! most three requests.

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use common::mount::{
    sha256_hex, sha256_of_file, test_bytes, write_config_with as write_config, Mount, Seeder,
};
use common::tls::make_certificate;
use common::Emulator;

const MIB: usize = 1 << 20;
/// Download connections the emulator's account accepts at once.
const ACCOUNT_LIMIT: u64 = 4;

/// The hoster profile scaled down: 2 ms away, 5 MB/s per connection, four
/// downloads per account, over TLS.
fn start_hoster(dir: &Path) -> Emulator {
    let (cert, key) = make_certificate(dir);
    let limit = ACCOUNT_LIMIT.to_string();
    let emu = Emulator::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--link-latency-ms",
        "2",
        "--download-rate-per-connection",
        "5MB",
        "--max-downloads-per-key",
        &limit,
    ]);
    assert!(emu.fichier_url().starts_with("https://"));
    emu
}

/// Uploads `files` into the account's root folder through the library.
fn seed(config: &Path, files: &[(&str, &[u8])]) {
    let seeder = Seeder::from_config(config, "emu");
    for (name, data) in files {
        seeder.upload("", name, data);
    }
}

/// The emulator's download counters of the first account.
fn downloads(emu: &Emulator) -> Value {
    emu.stats()["downloads"][format!("1fichier:{}", emu.key())].clone()
}

fn sha256_of(path: &Path) -> String {
    sha256_of_file(path)
}

#[test]
fn sequential_reads_spread_over_the_connections_the_account_allows() {
    let dir = tempfile::tempdir().unwrap();
    let emu = start_hoster(dir.path());
    let config = write_config(&emu, dir.path(), "");
    let data = test_bytes(24 * MIB, 1);
    seed(&config, &[("movie.bin", &data)]);
    // Allowed twice what the account takes, with requests small enough to
    // want them: the refusals teach the mount.
    let mount = Mount::start_remote(
        &config,
        "emu:",
        &["--max-streams", "8", "--read-ahead-request", "2M"],
    );
    emu.reset_stats();

    assert_eq!(
        sha256_of(&mount.path().join("movie.bin")),
        sha256_hex(&data)
    );
    let counters = downloads(&emu);
    let peak = counters["peak"].as_u64().unwrap();
    assert!(peak <= ACCOUNT_LIMIT, "{counters}");
    assert!(
        peak >= 3,
        "read-ahead stayed on {peak} connection(s): {counters}"
    );

    // Random reads after a remount (cold): every byte right.
    drop(mount);
    let mount = Mount::start_remote(&config, "emu:", &["--max-streams", "8"]);
    let file = File::open(mount.path().join("movie.bin")).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..40 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let offset = (state % data.len() as u64) as usize;
        let len = (4096 + (state >> 40) as usize % (200 * 1024)).min(data.len() - offset);
        let mut buffer = vec![0; len];
        file.read_exact_at(&mut buffer, offset as u64).unwrap();
        assert!(
            buffer == data[offset..offset + len],
            "bytes at {offset}+{len}"
        );
    }
    assert!(downloads(&emu)["peak"].as_u64().unwrap() <= ACCOUNT_LIMIT);
    assert!(
        !mount.log().contains("block fetch failed"),
        "{}",
        mount.log()
    );
}

#[test]
fn a_refused_connection_is_absorbed_without_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let emu = start_hoster(dir.path());
    let config = write_config(&emu, dir.path(), "");
    let data = test_bytes(16 * MIB, 2);
    seed(&config, &[("a.bin", &data)]);
    // The account takes two connections at once; the mount, allowed
    // eight (and given requests small enough to want them), learns it
    // from the refusals.
    emu.admin(
        "POST",
        "/_emulator/link",
        Some(json!({ "max_downloads_per_key": 2 })),
    );
    let mount = Mount::start_remote(
        &config,
        "emu:",
        &["--max-streams", "8", "--read-ahead-request", "2M"],
    );
    emu.reset_stats();
    assert_eq!(sha256_of(&mount.path().join("a.bin")), sha256_hex(&data));
    let counters = downloads(&emu);
    assert!(counters["peak"].as_u64().unwrap() <= 2, "{counters}");
    assert!(
        counters["refused"].as_u64().unwrap() >= 1,
        "the mount never tried a third connection: {counters}"
    );
    assert!(
        !mount.log().contains("block fetch failed"),
        "{}",
        mount.log()
    );
}

#[test]
fn a_remote_max_streams_bounds_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let emu = start_hoster(dir.path());
    let config = write_config(&emu, dir.path(), "max_streams = 2\n");
    let data = test_bytes(12 * MIB, 3);
    seed(&config, &[("a.bin", &data)]);
    let mount = Mount::start_remote(&config, "emu:", &["--max-streams", "8"]);
    emu.reset_stats();
    assert_eq!(sha256_of(&mount.path().join("a.bin")), sha256_hex(&data));
    let counters = downloads(&emu);
    assert!(counters["peak"].as_u64().unwrap() <= 2, "{counters}");
    assert_eq!(counters["refused"].as_u64().unwrap(), 0, "{counters}");
}

#[test]
fn parallel_readers_of_one_file_and_of_several() {
    let dir = tempfile::tempdir().unwrap();
    let emu = start_hoster(dir.path());
    let config = write_config(&emu, dir.path(), "");
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("f{i}.bin"), test_bytes(8 * MIB, 10 + i)))
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(name, data)| (name.as_str(), data.as_slice()))
        .collect();
    seed(&config, &refs);
    let mount = Mount::start_remote(&config, "emu:", &["--max-streams", "8"]);
    emu.reset_stats();
    // Two readers of f0, one each of f1 and f2, all at once.
    let readers: Vec<_> = [0, 0, 1, 2]
        .into_iter()
        .map(|i| {
            let path = mount.path().join(&files[i].0);
            std::thread::spawn(move || (i, sha256_of(&path)))
        })
        .collect();
    for reader in readers {
        let (i, digest) = reader.join().unwrap();
        assert_eq!(digest, sha256_hex(&files[i].1), "{}", files[i].0);
    }
    assert!(downloads(&emu)["peak"].as_u64().unwrap() <= ACCOUNT_LIMIT);
    assert!(
        !mount.log().contains("block fetch failed"),
        "{}",
        mount.log()
    );
}

#[test]
fn a_connection_cut_mid_stream_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let emu = start_hoster(dir.path());
    let config = write_config(&emu, dir.path(), "");
    let data = test_bytes(12 * MIB, 4);
    seed(&config, &[("a.bin", &data)]);
    let mount = Mount::start_remote(&config, "emu:", &[]);
    // Every download connection dies after 3 MiB of body.
    emu.set_faults(json!({ "cut_body_after": 3 * MIB }));
    emu.reset_stats();
    let digest = sha256_of(&mount.path().join("a.bin"));
    emu.set_faults(json!({ "cut_body_after": null }));
    assert_eq!(digest, sha256_hex(&data));
    std::thread::sleep(Duration::from_millis(100));
    assert!(downloads(&emu)["peak"].as_u64().unwrap() <= ACCOUNT_LIMIT);
}

/// Every request the emulator answered (API and downloads).
fn total_requests(emu: &Emulator) -> u64 {
    emu.stats()["requests"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum()
}

#[test]
fn a_probe_costs_at_most_three_requests_over_the_hoster_link() {
    let dir = tempfile::tempdir().unwrap();
    let emu = start_hoster(dir.path());
    let config = write_config(&emu, dir.path(), "");
    // A clip of several blocks with its index at the end, like a film's.
    let clip = dir.path().join("clip.mp4");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc=duration=10:size=640x360:rate=25,noise=alls=30:allf=t",
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:duration=10"])
        .args(["-c:v", "mpeg4", "-b:v", "6M", "-c:a", "aac", "-b:a", "96k"])
        .arg(&clip)
        .status()
        .expect("ffmpeg is needed (scripts/test.sh installs it)");
    assert!(status.success(), "ffmpeg failed");
    seed(&config, &[("clip.mp4", &std::fs::read(&clip).unwrap())]);
    let mount = Mount::start_remote(&config, "emu:", &["--max-streams", "8"]);
    assert_eq!(std::fs::read_dir(mount.path()).unwrap().count(), 1);
    emu.reset_stats();
    let output = Command::new("ffprobe")
        .args(["-hide_banner", "-show_format", "-show_streams"])
        .arg(mount.path().join("clip.mp4"))
        .output()
        .unwrap();
    assert!(output.status.success(), "ffprobe: {output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("codec_type=video"), "{text}");
    let requests = total_requests(&emu);
    assert!(requests <= 3, "{requests} requests: {}", emu.stats());
    assert!(downloads(&emu)["peak"].as_u64().unwrap() <= 2);
}

#[test]
fn a_seek_in_an_open_file_costs_one_request() {
    let dir = tempfile::tempdir().unwrap();
    let emu = start_hoster(dir.path());
    let config = write_config(&emu, dir.path(), "");
    let data = test_bytes(64 * MIB, 41);
    seed(&config, &[("film.bin", &data)]);
    let mount = Mount::start_remote(&config, "emu:", &["--max-streams", "8"]);
    let file = File::open(mount.path().join("film.bin")).unwrap();
    // A player reads the head (and so holds the link), then jumps.
    let mut head = vec![0; 4096];
    file.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head, data[..4096]);
    std::thread::sleep(Duration::from_millis(200));
    emu.reset_stats();
    let middle = 32 * MIB;
    let mut block = vec![0; MIB];
    file.read_exact_at(&mut block, middle as u64).unwrap();
    assert_eq!(sha256_hex(&block), sha256_hex(&data[middle..middle + MIB]));
    // Whatever the read set off afterwards counts too.
    std::thread::sleep(Duration::from_millis(300));
    let requests = total_requests(&emu);
    assert_eq!(requests, 1, "{}", emu.stats());
}

#[test]
fn a_seek_cuts_the_read_ahead_it_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let emu = start_hoster(dir.path());
    let config = write_config(&emu, dir.path(), "");
    let data = test_bytes(64 * MIB, 43);
    seed(&config, &[("film.bin", &data)]);
    let mount = Mount::start_remote(
        &config,
        "emu:",
        &["--max-streams", "4", "--read-ahead-request", "4M"],
    );
    let file = File::open(mount.path().join("film.bin")).unwrap();
    emu.reset_stats();
    // A player reads from the middle: read-ahead fills every connection
    // the account allows with 4 MiB requests.
    let mut buffer = vec![0; MIB];
    for block in 32..36 {
        file.read_exact_at(&mut buffer, (block * MIB) as u64)
            .unwrap();
    }
    // Then jumps back (a jump forward inside the read-ahead window would
    // be served by it): its read needs a connection now, and the
    // read-ahead it left behind is wanted no more.
    let back = 4 * MIB;
    file.read_exact_at(&mut buffer, back as u64).unwrap();
    assert_eq!(sha256_hex(&buffer), sha256_hex(&data[back..back + MIB]));
    // Long enough (5 MB/s per connection) for every request sent before
    // the jump to have ended had it run to its end.
    std::thread::sleep(Duration::from_secs(4));
    let served = emu.stats()["bytes_served"].as_u64().unwrap() as usize;
    // The blocks read, and at most a block more per cut request; uncut,
    // the four 4 MiB requests alone would be 16 MiB.
    assert!(
        served < 14 * MIB,
        "{served} bytes served: the read-ahead ran on after the jump"
    );
    assert!(
        !mount.log().contains("block fetch failed"),
        "{}",
        mount.log()
    );
}
