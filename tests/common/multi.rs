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

/// Sends `request`; status and parsed JSON body of the answer.
pub async fn send_json(request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    json_of(request.send().await.expect("sending the request")).await
}

/// Sends `request`; the status of the answer (its body is not read).
pub async fn send_status(request: reqwest::RequestBuilder) -> u16 {
    let response = request.send().await.expect("sending the request");
    response.status().as_u16()
}

/// Sends `request`; the body of the answer, whatever its status.
pub async fn send_bytes(request: reqwest::RequestBuilder) -> bytes::Bytes {
    let response = request.send().await.expect("sending the request");
    response.bytes().await.expect("reading the body")
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

/// Pacing fast enough for tests; retries with millisecond backoffs.
pub fn fast_pacer() -> filehostfs::remote::pacer::PacerConfig {
    filehostfs::remote::pacer::PacerConfig {
        rate_per_sec: 500.0,
        burst: 50,
        // Tests inject errors into 30 % of calls: with 12 attempts a call
        // gives up by chance with odds 0.3^12 (~5e-7), so a run of a few
        // dozen calls never fails spuriously (6 attempts failed ~2 % of runs).
        max_attempts: 12,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        max_server_wait: Duration::from_secs(5),
    }
}

/// A fii.one client of `key` talking to `api_url`.
pub fn fiione_client(api_url: &str, key: &str) -> filehostfs::remote::fiione::FiiOne {
    use filehostfs::remote::fiione::{FiiOne, FiiOneSettings};
    let mut settings = FiiOneSettings::new(filehostfs::remote::ApiKey::new(key));
    settings.api_url = api_url.to_string();
    settings.pacer = fast_pacer();
    settings.download.retry_backoff = Duration::from_millis(20);
    FiiOne::new(settings).expect("building the fii.one client")
}

/// A file.io client of `key` keeping its local copies in `copies`.
pub fn fileio_client(
    api_url: &str,
    key: &str,
    copies: &std::path::Path,
    upload: filehostfs::remote::fileio::UploadOptions,
) -> filehostfs::remote::fileio::FileIo {
    use filehostfs::remote::fileio::{FileIo, FileIoSettings};
    let mut settings =
        FileIoSettings::new(filehostfs::remote::ApiKey::new(key), copies.to_path_buf());
    settings.api_url = api_url.to_string();
    settings.upload = upload;
    settings.pacer = fast_pacer();
    FileIo::new(settings).expect("building the file.io client")
}

/// All bytes of a remote byte stream.
pub async fn collect(stream: filehostfs::remote::ByteStream) -> Vec<u8> {
    use futures::StreamExt;
    let mut out = Vec::new();
    let mut stream = stream;
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("reading the stream"));
    }
    out
}

/// A config file with remotes `pics` (fii.one, full key), `pics-nodelete`
/// (same account, no delete permission) and `outbox` (file.io, local copies
/// in `dir/copies`), paced for tests; `outbox_extra` adds lines to the
/// file.io table. Returns the config path.
pub fn write_multi_config(
    emulator: &Emulator,
    keys: &MultiKeys,
    dir: &std::path::Path,
    outbox_extra: &str,
) -> std::path::PathBuf {
    let config = dir.join("config.toml");
    let fast = "rate = 200\nburst = 20\nretry_backoff = 0.02\n";
    let text = format!(
        "[pics]\ntype = \"fii.one\"\napi_url = \"{fiione}\"\nkey = \"{full}\"\n{fast}\n\
         [pics-nodelete]\ntype = \"fii.one\"\napi_url = \"{fiione}\"\nkey = \"{nodelete}\"\n{fast}\n\
         [outbox]\ntype = \"file.io\"\napi_url = \"{fileio}\"\nkey = \"{fileio_key}\"\n\
         local_copies = \"{copies}\"\n{fast}{outbox_extra}\n",
        fiione = fiione_url(emulator),
        fileio = fileio_url(emulator),
        full = keys.fiione,
        nodelete = keys.fiione_no_delete,
        fileio_key = keys.fileio,
        copies = dir.join("copies").display(),
    );
    std::fs::write(&config, text).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    config
}
