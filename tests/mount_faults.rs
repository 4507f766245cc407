//! Reads through a real mount while the emulator misbehaves: server errors,
//! bodies cut mid-way, direct links that expire. The bytes must still match.

mod common;

use common::mount::{sha256_hex, sha256_of_file, test_bytes, Mount, Seeder};
use common::Emulator;
use serde_json::json;

#[test]
fn reads_survive_server_errors_cut_bodies_and_expiring_links() {
    let emu = Emulator::start();
    let seed = Seeder::new(&emu);
    let mut expected = Vec::new();
    for (i, name) in ["errors.bin", "cuts.bin", "expiry.bin"].iter().enumerate() {
        let data = test_bytes(3 * 1024 * 1024 + 17, 500 + i as u64);
        seed.upload("", name, &data);
        expected.push((name.to_string(), sha256_hex(&data)));
    }
    let mount = Mount::start(&emu, "", &["--block-size", "256K"]);
    // Listing first, so the faults hit the reads.
    assert!(mount.path().join("errors.bin").exists());

    emu.set_faults(json!({"error_rate": 0.3}));
    assert_eq!(
        sha256_of_file(&mount.path().join(&expected[0].0)),
        expected[0].1
    );
    emu.set_faults(json!({"error_rate": 0.0}));

    emu.set_faults(json!({"cut_body_after": 300_000}));
    emu.reset_stats();
    assert_eq!(
        sha256_of_file(&mount.path().join(&expected[1].0)),
        expected[1].1
    );
    emu.set_faults(json!({"cut_body_after": null}));

    emu.set_faults(json!({"expire_links": true}));
    assert_eq!(
        sha256_of_file(&mount.path().join(&expected[2].0)),
        expected[2].1
    );
    emu.set_faults(json!({"expire_links": false}));

    assert!(!mount.log().contains("panicked"), "{}", mount.log());
    mount.unmount();
}
