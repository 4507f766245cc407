//! The rc operations: parameters in, a call on the surface, JSON out.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{ApiError, ControlSurface, MountInfo, StatsSnapshot};

/// The longest `mount/unmount` waits for uploads.
pub const MAX_UNMOUNT_TIMEOUT_SECS: u64 = 3600;
const DEFAULT_UNMOUNT_TIMEOUT_SECS: u64 = 60;

/// The operations, for the unknown-operation message.
const OPERATIONS: [&str; 7] = [
    "vfs/refresh",
    "vfs/forget",
    "vfs/stats",
    "vfs/queue",
    "vfs/queue-retry",
    "core/version",
    "mount/unmount",
];

/// `vfs/refresh`: list `dir` again (and below it when `recursive`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshParams {
    #[serde(default)]
    pub dir: String,
    #[serde(default)]
    pub recursive: bool,
}

/// `vfs/forget`: drop `path` from the caches.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetParams {
    pub path: String,
}

/// `vfs/queue-retry`: retry queue item `id` now.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueRetryParams {
    pub id: u64,
}

/// `mount/unmount`: wait up to `timeout_secs` for uploads, then unmount.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnmountParams {
    #[serde(default = "default_unmount_timeout")]
    pub timeout_secs: u64,
}

fn default_unmount_timeout() -> u64 {
    DEFAULT_UNMOUNT_TIMEOUT_SECS
}

/// Operations that take no parameters still refuse unknown ones.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

/// `vfs/stats` answers the mount's identity along with its activity, so
/// one poll fills the status page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsResponse {
    pub mount: MountInfo,
    #[serde(flatten)]
    pub stats: StatsSnapshot,
}

/// Runs operation `op` with `params`.
pub(super) async fn run(
    surface: &dyn ControlSurface,
    op: &str,
    params: Map<String, Value>,
) -> Result<Value, ApiError> {
    let answer = match op {
        "vfs/refresh" => {
            let p: RefreshParams = parse(op, params)?;
            let dir = mount_relative(&p.dir, "dir")?;
            let report = surface.refresh(&dir, p.recursive).await?;
            json!({ "dir": dir, "recursive": p.recursive, "result": report })
        }
        "vfs/forget" => {
            let p: ForgetParams = parse(op, params)?;
            let path = mount_relative(&p.path, "path")?;
            let report = surface.forget(&path).await?;
            json!({ "path": path, "result": report })
        }
        "vfs/stats" => {
            let NoParams {} = parse(op, params)?;
            let response = StatsResponse {
                mount: surface.mount_info().await,
                stats: surface.stats().await,
            };
            to_value(&response)?
        }
        "vfs/queue" => {
            let NoParams {} = parse(op, params)?;
            json!({ "queue": surface.queue().await })
        }
        "vfs/queue-retry" => {
            let p: QueueRetryParams = parse(op, params)?;
            json!({ "item": surface.queue_retry(p.id).await? })
        }
        "core/version" => {
            let NoParams {} = parse(op, params)?;
            to_value(&surface.version())?
        }
        "mount/unmount" => {
            let p: UnmountParams = parse(op, params)?;
            if p.timeout_secs > MAX_UNMOUNT_TIMEOUT_SECS {
                return Err(ApiError::bad_params(format!(
                    "timeout_secs {} is above the limit of {MAX_UNMOUNT_TIMEOUT_SECS}",
                    p.timeout_secs
                )));
            }
            let report = surface.unmount(Duration::from_secs(p.timeout_secs)).await?;
            to_value(&report)?
        }
        _ => {
            return Err(ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                format!("unknown operation {op:?}; known: {}", OPERATIONS.join(", ")),
            ))
        }
    };
    Ok(answer)
}

fn parse<T: DeserializeOwned>(op: &str, params: Map<String, Value>) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(params))
        .map_err(|e| ApiError::bad_params(format!("bad parameters for {op}: {e}")))
}

fn to_value<T: Serialize>(value: &T) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer: {e}"),
        )
    })
}

/// A path inside the mount, `/`-separated without leading or trailing
/// slashes (`""` is the root); `.`/`..` components would escape or alias
/// it, so they are refused.
fn mount_relative(path: &str, name: &str) -> Result<String, ApiError> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" => continue,
            "." | ".." => {
                return Err(ApiError::bad_params(format!(
                    "{name} {path:?} must not contain . or .. components"
                )))
            }
            _ if part.contains('\0') => {
                return Err(ApiError::bad_params(format!("{name} must not contain NUL")))
            }
            _ => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_normalized_and_checked() {
        assert_eq!(
            mount_relative("/Movies//2024/", "dir").unwrap(),
            "Movies/2024"
        );
        assert_eq!(mount_relative("", "dir").unwrap(), "");
        assert_eq!(mount_relative("/", "dir").unwrap(), "");
        assert_eq!(mount_relative("a/../b", "dir").unwrap_err().status, 400);
        assert_eq!(mount_relative("./a", "dir").unwrap_err().status, 400);
    }
}
