//! Test harness: runs a real `filehostfs serve` process on loopback.
//!
//! ```ignore
//! let emu = Emulator::start();              // flood control off, faults off
//! let base = emu.fichier_url();              // http://127.0.0.1:PORT/v1
//! let key = emu.key();                       // first 1fichier account
//! emu.reset_stats();
//! assert_eq!(emu.request_count("1fichier:file/ls"), 0);
//! ```
//! The child is killed when the `Emulator` is dropped. Admin calls run on
//! their own thread so the harness works from sync and async tests alike.
//!
//! Other helpers extend the harness in sibling files (declare them below).
#![allow(dead_code)]

pub mod control;
pub mod core_config;
pub mod fichier_client;
pub mod file_meta;
pub mod mount;
pub mod multi;
pub mod remote;
pub mod tls;
pub mod write_mount;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long the emulator gets to print its address (the machine is loaded).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// What to start; `Default` is what [`Emulator::start`] uses.
#[derive(Clone, Debug)]
pub struct EmulatorOptions {
    /// Extra `filehostfs serve` arguments.
    pub args: Vec<String>,
    /// Flood control is off unless a test asks for it.
    pub flood_control: bool,
    /// Lines of the keys file; default: two 1fichier accounts.
    pub keys_file_lines: Vec<String>,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions {
            args: Vec::new(),
            flood_control: false,
            keys_file_lines: vec![random_key(), random_key()],
        }
    }
}

fn random_key() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Lines the child printed on stdout, shared with the reader thread.
#[derive(Default)]
struct StdoutLines {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

impl StdoutLines {
    /// Waits until a line satisfying `pick` appears.
    fn wait_for<T>(&self, timeout: Duration, pick: impl Fn(&str) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut lines = self.lines.lock().unwrap();
        loop {
            if let Some(found) = lines.iter().find_map(|l| pick(l)) {
                return Some(found);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            lines = self.changed.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }
}

pub struct Emulator {
    child: Option<Child>,
    /// Bound address (stable across [`Emulator::restart`]).
    pub addr: SocketAddr,
    /// Service name → API base URL, from the child's stdout.
    pub services: HashMap<String, String>,
    /// All lines of the keys file, as written.
    pub keys_file_lines: Vec<String>,
    pub admin_key: String,
    options: EmulatorOptions,
    /// Owns the data dir, keys file, admin key file and log.
    dir: tempfile::TempDir,
    stdout: Arc<StdoutLines>,
}

impl Emulator {
    /// An emulator with two 1fichier accounts, flood control and faults off.
    pub fn start() -> Emulator {
        Emulator::start_opts(EmulatorOptions::default())
    }

    /// Like [`Emulator::start`] with extra `serve` arguments.
    pub fn start_with(args: &[&str]) -> Emulator {
        Emulator::start_opts(EmulatorOptions {
            args: args.iter().map(|s| s.to_string()).collect(),
            ..EmulatorOptions::default()
        })
    }

    /// With flood control on (as `filehostfs serve` runs by default).
    pub fn start_with_flood_control(args: &[&str]) -> Emulator {
        Emulator::start_opts(EmulatorOptions {
            args: args.iter().map(|s| s.to_string()).collect(),
            flood_control: true,
            ..EmulatorOptions::default()
        })
    }

    pub fn start_opts(options: EmulatorOptions) -> Emulator {
        let dir = tempfile::Builder::new()
            .prefix("filehostfs-emu-")
            .tempdir()
            .expect("creating the emulator temp dir");
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::write(
            dir.path().join("keys.txt"),
            options.keys_file_lines.join("\n") + "\n",
        )
        .unwrap();
        let admin_key = random_key();
        std::fs::write(dir.path().join("admin.key"), format!("{admin_key}\n")).unwrap();
        let mut emulator = Emulator {
            child: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            services: HashMap::new(),
            keys_file_lines: options.keys_file_lines.clone(),
            admin_key,
            options,
            dir,
            stdout: Arc::new(StdoutLines::default()),
        };
        emulator
            .spawn("127.0.0.1:0")
            .expect("starting filehostfs serve");
        emulator
    }

    fn spawn(&mut self, listen: &str) -> Result<(), String> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_filehostfs"));
        command
            .arg("serve")
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--keys-file")
            .arg(self.dir.path().join("keys.txt"))
            .arg("--admin-key-file")
            .arg(self.dir.path().join("admin.key"));
        if !self.options.flood_control {
            command.arg("--no-flood-control");
        }
        command.args(&self.options.args);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| e.to_string())?;
        command
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "filehostfs=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = command.spawn().map_err(|e| format!("spawn: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(StdoutLines::default());
        let reader_lines = lines.clone();
        // Keeps draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                reader_lines.lines.lock().unwrap().push(line);
                reader_lines.changed.notify_all();
            }
        });
        self.child = Some(child);
        self.stdout = lines;

        let addr = self.wait_for_line(|line| line.trim().parse::<SocketAddr>().ok())?;
        self.addr = addr;
        // The service lines come in one write; file.io's is the last.
        self.wait_for_line(|line| line.strip_prefix("file.io ").map(str::to_string))?;
        self.services = self
            .stdout
            .lines
            .lock()
            .unwrap()
            .iter()
            .skip(1)
            .filter_map(|line| {
                let (name, url) = line.split_once(' ')?;
                url.starts_with("http")
                    .then(|| (name.to_string(), url.to_string()))
            })
            .collect();
        Ok(())
    }

    /// Waits for a stdout line `pick` accepts, failing early if the child exits.
    fn wait_for_line<T>(&mut self, pick: impl Fn(&str) -> Option<T>) -> Result<T, String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(found) = self.stdout.wait_for(Duration::from_millis(200), &pick) {
                return Ok(found);
            }
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait().ok().flatten().is_some(),
                None => true,
            };
            if exited {
                // One last look: the line may have raced with the exit.
                if let Some(found) = self.stdout.wait_for(Duration::from_millis(200), &pick) {
                    return Ok(found);
                }
                self.kill9();
                return Err(format!(
                    "the emulator exited during start-up; log:\n{}",
                    self.log()
                ));
            }
        }
        self.kill9();
        Err(format!(
            "the emulator did not start in time; log:\n{}",
            self.log()
        ))
    }

    /// `http://127.0.0.1:PORT` (what handed-out URLs start with;
    /// `https://` with `--tls-cert`).
    pub fn base_url(&self) -> String {
        match self.tls_cert() {
            Some(_) => format!("https://{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    /// The certificate given with `--tls-cert`, if the emulator speaks TLS.
    pub fn tls_cert(&self) -> Option<PathBuf> {
        let args = &self.options.args;
        let at = args.iter().position(|arg| arg == "--tls-cert")?;
        args.get(at + 1).map(PathBuf::from)
    }

    /// The API base of a service, as the emulator printed it.
    pub fn service_url(&self, service: &str) -> String {
        self.services
            .get(service)
            .cloned()
            .unwrap_or_else(|| panic!("the emulator serves no {service}"))
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn fichier_url(&self) -> String {
        self.service_url("1fichier")
    }

    /// Keys of the 1fichier accounts (bare keys-file lines or `1fichier KEY ...`).
    pub fn fichier_keys(&self) -> Vec<String> {
        self.keys_file_lines
            .iter()
            .filter_map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    [key] => Some(key.to_string()),
                    ["1fichier", key, ..] => Some(key.to_string()),
                    _ => None,
                }
            })
            .collect()
    }

    /// The first 1fichier account's key.
    pub fn key(&self) -> String {
        self.fichier_keys()
            .into_iter()
            .next()
            .expect("no 1fichier key")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Scratch space removed with the emulator.
    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("emulator.log")
    }

    /// The child's stderr so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// One admin call; returns (status, body).
    pub fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, String) {
        let url = format!("{}{path}", self.base_url());
        let key = self.admin_key.clone();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let trusted = self
            .tls_cert()
            .map(|path| reqwest::Certificate::from_pem(&std::fs::read(path).unwrap()).unwrap());
        std::thread::spawn(move || {
            let mut client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .no_proxy();
            if let Some(certificate) = trusted {
                client = client.add_root_certificate(certificate);
            }
            let client = client.build().unwrap();
            let mut request = client.request(method, url).bearer_auth(key);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().expect("admin request");
            let status = response.status().as_u16();
            (status, response.text().unwrap_or_default())
        })
        .join()
        .expect("admin thread")
    }

    /// `GET /_emulator/stats`.
    pub fn stats(&self) -> serde_json::Value {
        let (status, body) = self.admin("GET", "/_emulator/stats", None);
        assert_eq!(status, 200, "stats: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Requests counted for `endpoint`, e.g. `"1fichier:file/ls"` (0 if none).
    pub fn request_count(&self, endpoint: &str) -> u64 {
        self.stats()["requests"][endpoint].as_u64().unwrap_or(0)
    }

    pub fn reset_stats(&self) {
        let (status, body) = self.admin("POST", "/_emulator/stats/reset", None);
        assert_eq!(status, 200, "reset stats: {body}");
    }

    /// `POST /_emulator/faults` with a partial update such as
    /// `json!({"error_rate": 0.5})`; returns the resulting settings.
    pub fn set_faults(&self, faults: serde_json::Value) -> serde_json::Value {
        let (status, body) = self.admin("POST", "/_emulator/faults", Some(faults));
        assert_eq!(status, 200, "set faults: {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn faults(&self) -> serde_json::Value {
        let (status, body) = self.admin("GET", "/_emulator/faults", None);
        assert_eq!(status, 200, "faults: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// SIGKILL the child and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the child if it runs, then starts it again on the same data
    /// dir, keys and port (so URLs handed out before stay valid).
    pub fn restart(&mut self) {
        self.kill9();
        let listen = self.addr.to_string();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut last_error = String::new();
        // The port can stay busy for a moment after the kill.
        while Instant::now() < deadline {
            match self.spawn(&listen) {
                Ok(()) => return,
                Err(err) => last_error = err,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("restarting the emulator on {listen} failed: {last_error}");
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.kill9();
    }
}
