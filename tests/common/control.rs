//! Helpers to talk to a control API (`--rc`) the way outside clients do:
//! raw HTTP over its Unix socket, reqwest over TCP, headless Chromium for
//! the status page, and a checker for Prometheus' text format. They take
//! only a socket path or an address, so they serve tests of the server
//! alone and of a real mount alike.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long one call or one browser run may take on a loaded machine.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

/// `POST /<op>` with `body` over the Unix socket; the status and the JSON.
pub fn post_unix(socket: &Path, op: &str, body: &str) -> (u16, Value) {
    let mut stream = UnixStream::connect(socket).expect("connect to the control socket");
    stream.set_read_timeout(Some(CALL_TIMEOUT)).unwrap();
    write!(
        stream,
        "POST /{op} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let (status, body) = read_response(&mut stream);
    (
        status,
        serde_json::from_slice(&body).expect("a JSON answer"),
    )
}

/// `GET <path>` over the Unix socket; the status and the raw body.
pub fn get_unix(socket: &Path, path: &str) -> (u16, String) {
    let mut stream = UnixStream::connect(socket).expect("connect to the control socket");
    stream.set_read_timeout(Some(CALL_TIMEOUT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let (status, body) = read_response(&mut stream);
    (status, String::from_utf8(body).unwrap())
}

/// Reads a whole `Connection: close` response; handles chunked bodies.
fn read_response(stream: &mut UnixStream) -> (u16, Vec<u8>) {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..line_end])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// `POST http://addr/<op>` with `body`, with the token as a bearer header
/// when given; the status and the JSON.
pub fn post_tcp(addr: &str, token: Option<&str>, op: &str, body: &str) -> (u16, Value) {
    let client = reqwest::blocking::Client::builder()
        .timeout(CALL_TIMEOUT)
        .build()
        .unwrap();
    let mut request = client
        .post(format!("http://{addr}/{op}"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().expect("the control API answers");
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, json)
}

/// `GET http://addr<path>` with an optional bearer token; status and body.
pub fn get_tcp(addr: &str, token: Option<&str>, path: &str) -> (u16, String) {
    let client = reqwest::blocking::Client::builder()
        .timeout(CALL_TIMEOUT)
        .build()
        .unwrap();
    let mut request = client.get(format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().expect("the control API answers");
    (response.status().as_u16(), response.text().unwrap())
}

/// Checks `text` against Prometheus' text exposition format and returns
/// each sample (`name{labels}`) with its value. Every metric needs its
/// `# HELP` and `# TYPE` lines before its samples, counters end in
/// `_total`, and no series repeats.
pub fn parse_prometheus(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let mut helped = std::collections::HashSet::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            if !helped.insert(name.to_string()) {
                return Err(format!("line {n}: second HELP for {name}"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(format!("line {n}: unknown type {kind:?}"));
            }
            if kind == "counter" && !name.ends_with("_total") {
                return Err(format!("line {n}: counter {name} does not end in _total"));
            }
            if types.insert(name.to_string(), kind.to_string()).is_some() {
                return Err(format!("line {n}: second TYPE for {name}"));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("line {n}: no value: {line}"))?;
        let name = series.split('{').next().unwrap();
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid_name {
            return Err(format!("line {n}: bad metric name {name:?}"));
        }
        if !types.contains_key(name) || !helped.contains(name) {
            return Err(format!("line {n}: {name} has no HELP/TYPE before it"));
        }
        if series.contains('{') && !series.ends_with('}') {
            return Err(format!("line {n}: unclosed labels: {series}"));
        }
        let value: f64 = value
            .parse()
            .map_err(|_| format!("line {n}: value {value:?} is not a number"))?;
        if samples.insert(series.to_string(), value).is_some() {
            return Err(format!("line {n}: series {series} repeats"));
        }
    }
    Ok(samples)
}

/// Whether headless Chromium is installed (scripts/test.sh installs it).
pub fn chromium_binary() -> &'static str {
    for candidate in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {candidate}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if found {
            return candidate;
        }
    }
    panic!("headless Chromium is missing: install the chromium package (scripts/test.sh does)");
}

/// Opens `url` in headless Chromium, lets the page run for `budget` of
/// virtual time (its polling included) and returns the rendered DOM.
pub fn chromium_dom(url: &str, budget: Duration) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium_binary())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={}", budget.as_millis()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut dom = String::new();
        let _ = stdout.read_to_string(&mut dom);
        dom
    });
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish rendering {url} within {BROWSER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

/// Renders `url` until `done` holds for the DOM (bounded by `timeout`);
/// returns the last DOM either way so the caller's assertion can show it.
pub fn chromium_dom_until(url: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let dom = chromium_dom(url, Duration::from_millis(2500));
        if done(&dom) || Instant::now() > deadline {
            return dom;
        }
    }
}

/// The text inside the element with `id` (up to its first child tag).
pub fn element_text(dom: &str, id: &str) -> Option<String> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let open_end = start + dom[start..].find('>')? + 1;
    let close = open_end + dom[open_end..].find('<')?;
    Some(unescape(&dom[open_end..close]))
}

/// The value of attribute `name` on the element with `id`.
pub fn element_attr(dom: &str, id: &str, name: &str) -> Option<String> {
    let start = dom[..dom.find(&format!("id=\"{id}\""))?].rfind('<')?;
    let tag = &dom[start..start + dom[start..].find('>')?];
    attr(tag, name)
}

/// One row of the page's upload queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueRow {
    pub id: String,
    pub path: String,
    pub state: String,
}

/// The upload queue as the page shows it (`data-queue-item` rows).
pub fn queue_rows(dom: &str) -> Vec<QueueRow> {
    let mut rows = Vec::new();
    let mut rest = dom;
    while let Some(at) = rest.find("<tr ") {
        let tag_end = at + rest[at..].find('>').unwrap();
        let tag = &rest[at..tag_end];
        if let Some(id) = attr(tag, "data-queue-item") {
            rows.push(QueueRow {
                id,
                path: attr(tag, "data-path").unwrap_or_default(),
                state: attr(tag, "data-state").unwrap_or_default(),
            });
        }
        rest = &rest[tag_end..];
    }
    rows
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = start + tag[start..].find('"')?;
    Some(unescape(&tag[start..end]))
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}
