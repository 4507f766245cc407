//! Trust of HTTPS servers: a remote's `ca_cert` and the system trust store
//! are added to the bundled roots. A real `filehostfs` binary talks to
//! `filehostfs serve --tls-cert` with a certificate made for the test.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::remote::{cli_ok, run_cli, write_config};
use common::Emulator;

/// A self-signed certificate for 127.0.0.1 and its key, made by `openssl`.
fn make_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
        ])
        .arg("/CN=localhost")
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is needed to make a test certificate");
    assert!(status.success());
    (cert, key)
}

fn start_tls_emulator(dir: &Path) -> (Emulator, PathBuf) {
    let (cert, key) = make_certificate(dir);
    let emu = Emulator::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(emu.fichier_url().starts_with("https://127.0.0.1:"));
    (emu, cert)
}

/// The one line of a failed command's stderr.
fn failure(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

#[test]
fn an_unknown_certificate_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, _cert) = start_tls_emulator(dir.path());
    let config = write_config(&emu, dir.path(), "");
    let error = failure(&run_cli(&config, &["ls", "work:"], &[]));
    assert!(
        error.contains("certificate is not trusted") && error.contains("ca_cert"),
        "{error}"
    );
    // Refused at once: no retries against a certificate that will not change.
    assert_eq!(error.lines().count(), 1, "{error}");
}

#[test]
fn ca_cert_makes_the_server_trusted_for_api_uploads_and_downloads() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, cert) = start_tls_emulator(dir.path());
    let config = write_config(
        &emu,
        dir.path(),
        &format!("ca_cert = \"{}\"\n", cert.display()),
    );
    assert_eq!(cli_ok(&config, &["ls", "work:"]), "");
    let local = dir.path().join("hello.txt");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    cli_ok(&config, &["put", local.to_str().unwrap(), "work:"]);
    assert_eq!(cli_ok(&config, &["ls", "work:"]), "hello.txt\n");
    let back = dir.path().join("back.txt");
    cli_ok(&config, &["get", "work:hello.txt", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), data);
}

#[test]
fn the_system_trust_store_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, cert) = start_tls_emulator(dir.path());
    let config = write_config(&emu, dir.path(), "");
    // SSL_CERT_FILE replaces the system store's file (as with OpenSSL).
    let out = run_cli(
        &config,
        &["ls", "work:"],
        &[("SSL_CERT_FILE", cert.to_str().unwrap())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_bad_ca_cert_file_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, _cert) = start_tls_emulator(dir.path());
    let missing = dir.path().join("missing.pem");
    let config = write_config(
        &emu,
        dir.path(),
        &format!("ca_cert = \"{}\"\n", missing.display()),
    );
    let error = failure(&run_cli(&config, &["ls", "work:"], &[]));
    assert!(error.contains("missing.pem"), "{error}");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let config = write_config(
        &emu,
        dir.path(),
        &format!("ca_cert = \"{}\"\n", garbage.display()),
    );
    let error = failure(&run_cli(&config, &["ls", "work:"], &[]));
    assert!(
        error.contains("garbage.pem") && error.contains("no certificate"),
        "{error}"
    );
}
