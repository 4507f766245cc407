//! Harness additions for fii.one and file.io: an emulator with accounts of
//! both services, and plain HTTP helpers for their APIs.

use std::time::Duration;

use super::{Emulator, EmulatorOptions};

/// A fii.one-shaped key: `fii_` + 56 lower-case hex characters.
pub fn new_fiione_key() -> String {
    let hex: String = (0..2)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    format!("fii_{}", &hex[..56])
}

/// A file.io-shaped key.
pub fn new_fileio_key() -> String {
    uuid::Uuid::new_v4().simple().to_string().to_uppercase()
}

/// Accounts of an emulator started by [`start_multi`].
pub struct MultiKeys {
    /// fii.one key with every permission.
    pub fiione: String,
    /// Key of the same fii.one account with `read,upload` only (no delete).
    pub fiione_no_delete: String,
    /// file.io key without a rate limit.
    pub fileio: String,
}

/// An emulator serving all three APIs with one fii.one account reachable
/// through two keys and one file.io account, rate limits off; `extra_lines`
/// add keys-file lines, `args` serve arguments.
pub fn start_multi(args: &[&str], extra_lines: &[String]) -> (Emulator, MultiKeys) {
    let keys = MultiKeys {
        fiione: new_fiione_key(),
        fiione_no_delete: new_fiione_key(),
        fileio: new_fileio_key(),
    };
    let mut lines = vec![
        uuid::Uuid::new_v4().simple().to_string(),
        format!("fii.one {} account=main", keys.fiione),
        format!(
            "fii.one {} account=main permissions=read,upload",
            keys.fiione_no_delete
        ),
        format!("file.io {} rate_limit=0", keys.fileio),
    ];
    lines.extend(extra_lines.iter().cloned());
    let mut all_args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    if !args.contains(&"--fileio-rate-limit") {
        all_args.extend(["--fileio-rate-limit".to_string(), "0".to_string()]);
    }
    let emulator = Emulator::start_opts(EmulatorOptions {
        args: all_args,
        keys_file_lines: lines,
        ..EmulatorOptions::default()
    });
    (emulator, keys)
}

pub fn fiione_url(emulator: &Emulator) -> String {
    emulator.service_url("fii.one")
}

pub fn fileio_url(emulator: &Emulator) -> String {
    emulator.service_url("file.io")
}

/// An async client that never uses a proxy and has a generous timeout.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("building the HTTP client")
}

/// Status and parsed JSON body of a response.
pub async fn json_of(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("reading the body");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text}"));
    (status, value)
}

/// Checks a fii.one error envelope: status, `code` = status, exact message.
#[track_caller]
pub fn assert_fiione_error(answer: &(u16, serde_json::Value), status: u16, message: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["error"]["code"], status, "{body}");
    assert_eq!(body["error"]["message"], message, "{body}");
}

/// Checks a file.io error body: status mirrored, `code`, help URL.
#[track_caller]
pub fn assert_fileio_error(answer: &(u16, serde_json::Value), status: u16, code: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(
        body["help"],
        format!("https://file.io/help/api/errors/{code}"),
        "{body}"
    );
}
