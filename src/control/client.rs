//! The command-line client: `filehostfs rc OP key=value...` and
//! `filehostfs status [MOUNTPOINT]`. The CLI parses its arguments into
//! [`RcClientArgs`] and calls [`run_rc`] or [`run_status`].

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::header;
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{
    load_or_create_token, paths::canonical_mountpoint, ControlPaths, MountRecord, QueueItem,
    QueueState, StatsResponse, TokenError, MAX_UNMOUNT_TIMEOUT_SECS,
};

/// Default bound on one call (unmount gets its own timeout on top).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How to reach a mount's control API.
#[derive(Clone, Debug, Default, Args)]
pub struct RcClientArgs {
    /// The control API's TCP address (a mount started with --rc-addr).
    #[arg(long, value_name = "IP:PORT", conflicts_with = "rc_socket")]
    pub rc_addr: Option<SocketAddr>,

    /// The control API's Unix socket (default: found from the mountpoint).
    #[arg(long, value_name = "PATH")]
    pub rc_socket: Option<PathBuf>,

    /// File holding the token for --rc-addr.
    #[arg(long, value_name = "FILE")]
    pub rc_token_file: Option<PathBuf>,

    /// Which mount to talk to, when several run with --rc.
    #[arg(long, value_name = "MOUNTPOINT")]
    pub rc_mount: Option<PathBuf>,
}

/// Where one call goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RcTarget {
    Unix(PathBuf),
    Tcp { addr: String, token: String },
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("parameter {0:?} is not key=value")]
    BadParam(String),
    #[error("--rc-addr needs --rc-token-file (the token the mount was started with)")]
    MissingToken,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("no mount at {0} serves a control API (was it mounted with --rc?)")]
    NoControlApi(PathBuf),
    #[error("no running mount serves a control API (mount with --rc)")]
    NoMounts,
    #[error("several mounts serve a control API; pick one with a mountpoint: {0}")]
    SeveralMounts(String),
    #[error("cannot read the mount records in {path}: {source}")]
    Records { path: PathBuf, source: io::Error },
    #[error("cannot reach the control API at {target}: {source}")]
    Connect { target: String, source: io::Error },
    #[error("control API at {target}: {message}")]
    Http { target: String, message: String },
    #[error("control API answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error("control API answered something that is not the expected JSON: {0}")]
    BadAnswer(String),
    #[error("cannot print: {0}")]
    Output(#[from] io::Error),
}

impl std::fmt::Display for RcTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RcTarget::Unix(socket) => write!(f, "{}", socket.display()),
            RcTarget::Tcp { addr, .. } => write!(f, "http://{addr}"),
        }
    }
}

/// Turns `key=value` arguments into a parameter object; a value that parses
/// as JSON (`true`, `3`, `"x"`, `[1]`) is taken as such, else as a string.
pub fn parse_params(args: &[String]) -> Result<Map<String, Value>, ClientError> {
    let mut params = Map::new();
    for arg in args {
        let (key, value) = arg
            .split_once('=')
            .filter(|(key, _)| !key.is_empty())
            .ok_or_else(|| ClientError::BadParam(arg.clone()))?;
        let value =
            serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
        params.insert(key.to_string(), value);
    }
    Ok(params)
}

/// Where to send calls: explicit options first, else the record of the
/// mount at `mountpoint`, else the only running mount with a control API.
pub fn resolve_target(
    args: &RcClientArgs,
    paths: &ControlPaths,
    mountpoint: Option<&Path>,
) -> Result<RcTarget, ClientError> {
    if let Some(addr) = args.rc_addr {
        let token_file = args
            .rc_token_file
            .as_ref()
            .ok_or(ClientError::MissingToken)?;
        return Ok(RcTarget::Tcp {
            addr: addr.to_string(),
            token: read_token(token_file)?,
        });
    }
    if let Some(socket) = &args.rc_socket {
        return Ok(RcTarget::Unix(socket.clone()));
    }
    let record = match mountpoint.or(args.rc_mount.as_deref()) {
        Some(mountpoint) => paths
            .read_record(mountpoint)
            .map_err(|source| ClientError::Records {
                path: paths.dir().to_path_buf(),
                source,
            })?
            .ok_or_else(|| ClientError::NoControlApi(canonical_mountpoint(mountpoint)))?,
        None => {
            let mut records = paths
                .live_records()
                .map_err(|source| ClientError::Records {
                    path: paths.dir().to_path_buf(),
                    source,
                })?;
            match records.len() {
                0 => return Err(ClientError::NoMounts),
                1 => records.remove(0),
                _ => {
                    let names: Vec<String> = records
                        .iter()
                        .map(|r| r.mountpoint.display().to_string())
                        .collect();
                    return Err(ClientError::SeveralMounts(names.join(", ")));
                }
            }
        }
    };
    target_from_record(&record, args.rc_token_file.as_deref())
}

fn target_from_record(
    record: &MountRecord,
    token_file: Option<&Path>,
) -> Result<RcTarget, ClientError> {
    if let Some(socket) = &record.socket {
        return Ok(RcTarget::Unix(socket.clone()));
    }
    match (&record.addr, token_file.or(record.token_file.as_deref())) {
        (Some(addr), Some(token_file)) => Ok(RcTarget::Tcp {
            addr: addr.clone(),
            token: read_token(token_file)?,
        }),
        (Some(_), None) => Err(ClientError::MissingToken),
        (None, _) => Err(ClientError::NoControlApi(record.mountpoint.clone())),
    }
}

/// Reads an existing token file; a client never creates one.
fn read_token(path: &Path) -> Result<String, ClientError> {
    if !path.exists() {
        return Err(TokenError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotFound, "no such file"),
        }
        .into());
    }
    Ok(load_or_create_token(path)?)
}

/// Calls `op` with `params` and returns the JSON answer.
pub async fn call(
    target: &RcTarget,
    op: &str,
    params: &Map<String, Value>,
) -> Result<Value, ClientError> {
    let timeout = match params.get("timeout_secs").and_then(Value::as_u64) {
        Some(secs) => Duration::from_secs(secs.min(MAX_UNMOUNT_TIMEOUT_SECS)) + CALL_TIMEOUT,
        None => CALL_TIMEOUT,
    };
    let body = serde_json::to_vec(params).map_err(|e| ClientError::BadParam(e.to_string()))?;
    let path = format!("/{}", op.trim_start_matches('/'));
    let exchange = async {
        match target {
            RcTarget::Unix(socket) => {
                let stream = tokio::net::UnixStream::connect(socket)
                    .await
                    .map_err(|source| connect_error(target, source))?;
                exchange(stream, target, "localhost", None, &path, body).await
            }
            RcTarget::Tcp { addr, token } => {
                let stream = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(|source| connect_error(target, source))?;
                exchange(stream, target, addr, Some(token), &path, body).await
            }
        }
    };
    let (status, bytes) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ClientError::Http {
            target: target.to_string(),
            message: format!("no answer within {} s", timeout.as_secs()),
        })??;
    let answer: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ClientError::BadAnswer(format!("{e}: {}", String::from_utf8_lossy(&bytes))))?;
    if (200..300).contains(&status) {
        return Ok(answer);
    }
    let message = answer
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| answer.to_string());
    Err(ClientError::Api { status, message })
}

fn connect_error(target: &RcTarget, source: io::Error) -> ClientError {
    ClientError::Connect {
        target: target.to_string(),
        source,
    }
}

/// One HTTP/1.1 request over a fresh connection.
async fn exchange<S>(
    stream: S,
    target: &RcTarget,
    host: &str,
    token: Option<&String>,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, Bytes), ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http_err = |e: &dyn std::fmt::Display| ClientError::Http {
        target: target.to_string(),
        message: e.to_string(),
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http_err(&e))?;
    let driver = tokio::spawn(connection);
    let mut request = hyper::Request::post(path)
        .header(header::HOST, host)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| http_err(&e))?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| http_err(&e))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| http_err(&e))?
            .to_bytes();
        Ok((status, bytes))
    }
    .await;
    driver.abort();
    result
}

/// `filehostfs rc OP key=value...`: prints the answer as indented JSON.
pub async fn run_rc(
    args: &RcClientArgs,
    paths: &ControlPaths,
    op: &str,
    params: &[String],
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let params = parse_params(params)?;
    let target = resolve_target(args, paths, None)?;
    let answer = call(&target, op, &params).await?;
    let text =
        serde_json::to_string_pretty(&answer).map_err(|e| ClientError::BadAnswer(e.to_string()))?;
    writeln!(out, "{text}")?;
    Ok(())
}

/// `filehostfs status [MOUNTPOINT]`: prints a summary for people.
pub async fn run_status(
    args: &RcClientArgs,
    paths: &ControlPaths,
    mountpoint: Option<&Path>,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let target = resolve_target(args, paths, mountpoint)?;
    let none = Map::new();
    let stats = call(&target, "vfs/stats", &none).await?;
    let queue = call(&target, "vfs/queue", &none).await?;
    let stats: StatsResponse =
        serde_json::from_value(stats).map_err(|e| ClientError::BadAnswer(e.to_string()))?;
    let queue: Vec<QueueItem> = serde_json::from_value(queue["queue"].clone())
        .map_err(|e| ClientError::BadAnswer(e.to_string()))?;
    out.write_all(format_status(&stats, &queue).as_bytes())?;
    Ok(())
}

/// The summary `filehostfs status` prints.
pub fn format_status(stats: &StatsResponse, queue: &[QueueItem]) -> String {
    let mount = &stats.mount;
    let s = &stats.stats;
    let mut lines = Vec::new();
    lines.push(format!(
        "{} ({}) on {}{}",
        mount.remote,
        mount.service,
        mount.mountpoint,
        if mount.read_only { ", read-only" } else { "" }
    ));
    if let Some(space) = mount.space {
        lines.push(match space.free_bytes() {
            Some(free) => format!(
                "Space:    {} used, {} free",
                human_bytes(space.used_bytes),
                human_bytes(free)
            ),
            None => format!("Space:    {} used", human_bytes(space.used_bytes)),
        });
    }
    let pending: Vec<&QueueItem> = queue.iter().filter(|i| i.state.is_pending()).collect();
    let failed = queue
        .iter()
        .filter(|i| i.state == QueueState::Failed)
        .count();
    lines.push(format!(
        "Uploads:  {} pending ({}), {} failed",
        pending.len(),
        human_bytes(pending.iter().map(|i| i.size).sum()),
        failed
    ));
    for item in queue.iter().filter(|i| i.state != QueueState::Done) {
        let mut line = format!(
            "  {:<9} {} ({}, {} attempt{})",
            item.state.name(),
            item.path,
            human_bytes(item.size),
            item.attempts,
            if item.attempts == 1 { "" } else { "s" }
        );
        if let Some(error) = &item.last_error {
            line.push_str(&format!(": {error}"));
        }
        lines.push(line);
    }
    let cache_limit = s
        .cache
        .limit_bytes
        .map(|l| format!(" of {}", human_bytes(l)))
        .unwrap_or_default();
    let hit_ratio = s
        .counters
        .cache_hit_ratio
        .map(|r| format!(", {:.0}% hits", r * 100.0))
        .unwrap_or_default();
    lines.push(format!(
        "Cache:    {}{cache_limit} in {} files{hit_ratio}",
        human_bytes(s.cache.used_bytes),
        s.cache.files
    ));
    let budget = match (s.pacer.budget_left, s.pacer.budget_per_hour) {
        (Some(left), Some(per_hour)) => format!(", {left} of {per_hour} left"),
        (Some(left), None) => format!(", {left} left"),
        _ => String::new(),
    };
    lines.push(format!(
        "Requests: {} this hour{budget}, {} since mount ({} failed)",
        s.pacer.requests_last_hour, s.counters.requests_total, s.counters.request_errors
    ));
    lines.push(format!("Errors:   {} recent", s.recent_errors.len()));
    for error in s.recent_errors.iter().rev().take(5) {
        let path = error
            .path
            .as_deref()
            .map(|p| format!("{p}: "))
            .unwrap_or_default();
        lines.push(format!(
            "  {} {} {path}{}",
            error.at.format("%Y-%m-%d %H:%M:%S"),
            error.source,
            error.message
        ));
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// Bytes in binary units, one decimal: `1.5 MiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_json_when_they_parse() {
        let args: Vec<String> = ["dir=Movies", "recursive=true", "id=7", "name=\"007\"", "x="]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let params = parse_params(&args).unwrap();
        assert_eq!(params["dir"], Value::String("Movies".into()));
        assert_eq!(params["recursive"], Value::Bool(true));
        assert_eq!(params["id"], Value::from(7));
        assert_eq!(params["name"], Value::String("007".into()));
        assert_eq!(params["x"], Value::String(String::new()));
        assert!(matches!(
            parse_params(&["novalue".to_string()]),
            Err(ClientError::BadParam(_))
        ));
        assert!(matches!(
            parse_params(&["=3".to_string()]),
            Err(ClientError::BadParam(_))
        ));
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }
}
