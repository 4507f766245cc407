//! Helpers for the Remote-layer and CLI tests: a `Fichier` client pointed
//! at the emulator with test-sized waits, and a runner for the CLI binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use filehostfs::remote::fichier::{Fichier, FichierOptions};
use filehostfs::remote::ApiKey;

use super::Emulator;

/// Options for a client of the emulator's first account: fast pacing (the
/// emulator's flood control is off unless a test turns it on) and waits
/// shortened from seconds to milliseconds.
pub fn fast_options(emu: &Emulator) -> FichierOptions {
    let mut options = FichierOptions::new(ApiKey::new(emu.key()));
    options.api_url = emu.fichier_url();
    options.pacer.rate_per_sec = 200.0;
    options.pacer.burst = 20;
    options.pacer.max_attempts = 5;
    options.pacer.initial_backoff = Duration::from_millis(20);
    options.pacer.max_backoff = Duration::from_millis(200);
    options.flood_wait = Duration::from_millis(200);
    options.download.retry_backoff = Duration::from_millis(20);
    options
}

pub fn fast_client(emu: &Emulator) -> Fichier {
    Fichier::new(fast_options(emu)).expect("building the 1fichier client")
}

/// A config file naming the emulator's first account `work`, its key in a
/// separate key file; returns the config path.
pub fn write_config(emu: &Emulator, dir: &Path, extra: &str) -> PathBuf {
    let key_file = dir.join("work.key");
    std::fs::write(&key_file, format!("{}\n", emu.key())).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[work]\ntype = \"1fichier\"\napi_url = \"{}\"\nkey_file = \"{}\"\nrate = 100\nburst = 10\nretry_backoff = 0.02\nflood_wait = 0.2\n{extra}",
            emu.fichier_url(),
            key_file.display()
        ),
    )
    .unwrap();
    config
}

/// Runs `filehostfs ARGS` with `--config CONFIG`, no inherited key or
/// config variables, and returns its output.
pub fn run_cli(config: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_filehostfs"));
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("FILEHOSTFS_CONFIG")
        .env_remove("FILEHOSTFS_WORK_KEY")
        .env("RUST_LOG", "warn");
    for (k, v) in envs {
        command.env(k, v);
    }
    command.output().expect("running filehostfs")
}

/// Like [`run_cli`], failing the test (with stderr) unless it exits 0.
pub fn cli_ok(config: &Path, args: &[&str]) -> String {
    let out = run_cli(config, args, &[]);
    assert!(
        out.status.success(),
        "filehostfs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs each command at the most verbose log level and fails the test if
/// `key` shows up in what it prints.
pub fn assert_key_never_printed(config: &Path, key: &str, commands: &[&[&str]]) {
    for args in commands {
        let out = run_cli(config, args, &[("RUST_LOG", "trace")]);
        let shown = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!shown.contains(key), "{args:?} printed the key");
    }
}
