//! Reads through a real mount while the emulator misbehaves: server errors,
//! bodies cut mid-way, direct links that expire. The bytes must still match.

mod common;

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::mount::{sha256_hex, test_bytes, Mount, Seeder};
use common::Emulator;
use serde_json::json;

const SIZE: usize = 3 * 1024 * 1024 + 17;

#[test]
fn reads_survive_server_errors_cut_bodies_and_expiring_links() {
    // Links die on the server after 3 s while the client trusts them for
    // its default five minutes: the server's refusal is what tells it.
    let emu = Emulator::start_with(&["--link-expiry-secs", "3"]);
    let seed = Seeder::new(&emu);
    let names = ["errors.bin", "cuts.bin", "expiry.bin", "refused.bin"];
    let mut expected = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let data = test_bytes(SIZE, 500 + i as u64);
        seed.upload("", name, &data);
        expected.push(sha256_hex(&data));
    }
    let mount = Mount::start(
        &emu,
        "",
        &["--block-size", "256K", "--read-ahead-request", "1M"],
    );
    // Listing first, so the faults hit the reads.
    assert!(mount.path().join("errors.bin").exists());

    let phase = Instant::now();
    // Half the API calls (here the direct-link requests) fail, and so do
    // the first four range GETs themselves.
    emu.set_faults(json!({"error_rate": 0.5, "download_error_burst": 4}));
    assert_eq!(mount.sha256("errors.bin"), expected[0]);
    let left = emu.set_faults(json!({"error_rate": 0.0}));
    assert_eq!(left["download_error_burst"], 0, "{left}");
    eprintln!("server errors: {:?}", phase.elapsed());

    let phase = Instant::now();
    emu.set_faults(json!({"cut_body_after": 400_000}));
    assert_eq!(mount.sha256("cuts.bin"), expected[1]);
    emu.set_faults(json!({"cut_body_after": null}));
    eprintln!("cut bodies: {:?}", phase.elapsed());

    // Start reading (the link gets cached), let the link expire, read on.
    let phase = Instant::now();
    let file = std::fs::File::open(mount.path().join("expiry.bin")).unwrap();
    let mut head = vec![0u8; 1000];
    file.read_exact_at(&mut head, 0).unwrap();
    drop(file);
    emu.reset_stats();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(mount.sha256("expiry.bin"), expected[2]);
    assert!(
        emu.request_count("1fichier:download/get_token") >= 1,
        "{}",
        emu.stats()
    );
    eprintln!("expired link: {:?}", phase.elapsed());

    // While the service hands out only dead links, a read fails (it does
    // not hang); once it recovers, the same file reads fine.
    let phase = Instant::now();
    emu.set_faults(json!({"expire_links": true}));
    let refused = std::fs::read(mount.path().join("refused.bin"));
    assert!(
        refused.is_err(),
        "a read with only dead links cannot succeed"
    );
    emu.set_faults(json!({"expire_links": false}));
    assert_eq!(mount.sha256("refused.bin"), expected[3]);
    eprintln!("refused links: {:?}", phase.elapsed());

    assert!(!mount.log().contains("panicked"), "{}", mount.log());
    mount.unmount();
}
