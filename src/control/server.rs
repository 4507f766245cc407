//! The control API's HTTP server, on a private Unix socket or on TCP with a
//! bearer token.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::metrics::METRICS_CONTENT_TYPE;
use super::paths::canonical_mountpoint;
use super::{
    load_or_create_token, operations, page, render_metrics, tokens_match, ApiError, ControlPaths,
    ControlSurface, MountRecord, RcListen, TokenError,
};

/// How long a stop waits for open connections (a status page keeps one
/// alive) before dropping them.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Where a running server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RcEndpoint {
    Unix {
        socket: PathBuf,
    },
    /// The bound address (the real port when 0 was asked for).
    Tcp {
        addr: SocketAddr,
        token_file: PathBuf,
    },
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum RcServerError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("cannot prepare the runtime folder {path}: {source}")]
    RuntimeDir { path: PathBuf, source: io::Error },
    #[error("another process already serves the control socket {0}")]
    SocketInUse(PathBuf),
    #[error("cannot listen on {what}: {source}")]
    Bind { what: String, source: io::Error },
    #[error("cannot write the mount record {path}: {source}")]
    Record { path: PathBuf, source: io::Error },
}

#[derive(Clone)]
struct AppState {
    surface: Arc<dyn ControlSurface>,
    /// `None` on the Unix socket, whose permissions are the guard.
    token: Option<Arc<str>>,
}

/// A running control server; stops (and removes its socket and record)
/// on [`RcServer::stop`] or when dropped.
pub struct RcServer {
    endpoint: RcEndpoint,
    record: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RcServer {
    /// Starts serving `surface` for the mount at `mountpoint` as `listen`
    /// says, and records where for `filehostfs status`.
    pub async fn start(
        surface: Arc<dyn ControlSurface>,
        listen: RcListen,
        mountpoint: &Path,
        paths: &ControlPaths,
    ) -> Result<RcServer, RcServerError> {
        paths
            .ensure_private_dir()
            .map_err(|source| RcServerError::RuntimeDir {
                path: paths.dir().to_path_buf(),
                source,
            })?;
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let signal = async {
            let _ = shutdown_rx.await;
        };
        let (endpoint, task) = match listen {
            RcListen::Unix { socket } => {
                let listener = bind_private_socket(&socket).await?;
                let app = router(AppState {
                    surface,
                    token: None,
                });
                let task = tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, app)
                        .with_graceful_shutdown(signal)
                        .await
                    {
                        tracing::warn!("control API stopped: {e}");
                    }
                });
                (RcEndpoint::Unix { socket }, task)
            }
            RcListen::Tcp { addr, token_file } => {
                let token = load_or_create_token(&token_file)?;
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| RcServerError::Bind {
                        what: addr.to_string(),
                        source,
                    })?;
                let addr = listener
                    .local_addr()
                    .map_err(|source| RcServerError::Bind {
                        what: addr.to_string(),
                        source,
                    })?;
                let app = router(AppState {
                    surface,
                    token: Some(token.into()),
                });
                let task = tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, app)
                        .with_graceful_shutdown(signal)
                        .await
                    {
                        tracing::warn!("control API stopped: {e}");
                    }
                });
                (RcEndpoint::Tcp { addr, token_file }, task)
            }
        };
        let mut server = RcServer {
            endpoint,
            record: PathBuf::new(),
            shutdown: Some(shutdown),
            task: Some(task),
        };
        let record = MountRecord {
            mountpoint: canonical_mountpoint(mountpoint),
            pid: std::process::id(),
            socket: match &server.endpoint {
                RcEndpoint::Unix { socket } => Some(socket.clone()),
                RcEndpoint::Tcp { .. } => None,
            },
            addr: match &server.endpoint {
                RcEndpoint::Tcp { addr, .. } => Some(addr.to_string()),
                RcEndpoint::Unix { .. } => None,
            },
            token_file: match &server.endpoint {
                RcEndpoint::Tcp { token_file, .. } => Some(token_file.clone()),
                RcEndpoint::Unix { .. } => None,
            },
        };
        server.record = paths
            .write_record(&record)
            .map_err(|source| RcServerError::Record {
                path: paths.record_for(mountpoint),
                source,
            })?;
        match &server.endpoint {
            RcEndpoint::Unix { socket } => {
                tracing::info!("control API and status page on {}", socket.display())
            }
            RcEndpoint::Tcp { addr, token_file } => tracing::info!(
                "control API and status page on http://{addr}/ (token in {})",
                token_file.display()
            ),
        }
        Ok(server)
    }

    pub fn endpoint(&self) -> &RcEndpoint {
        &self.endpoint
    }

    /// Stops serving, waiting briefly for open requests to finish.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
                task.abort();
            }
        }
        self.remove_files();
    }

    fn remove_files(&self) {
        if let RcEndpoint::Unix { socket } = &self.endpoint {
            let _ = std::fs::remove_file(socket);
        }
        if !self.record.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.record);
        }
    }
}

impl Drop for RcServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            self.remove_files();
        }
    }
}

/// Binds `socket` with mode 0600, replacing a stale socket left by a
/// crashed mount but never one that still answers.
async fn bind_private_socket(socket: &Path) -> Result<tokio::net::UnixListener, RcServerError> {
    if socket.exists() {
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            return Err(RcServerError::SocketInUse(socket.to_path_buf()));
        }
        let _ = std::fs::remove_file(socket);
    }
    let bind_err = |source| RcServerError::Bind {
        what: socket.display().to_string(),
        source,
    };
    let listener = tokio::net::UnixListener::bind(socket).map_err(bind_err)?;
    // The folder is 0700 already, so the window before this chmod is closed
    // to other users.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/{*op}", post(operation))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// On TCP every request carries `Authorization: Bearer <token>`; the page
/// alone may take it as `?token=` so that a browser can open it.
async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.token else {
        return next.run(request).await;
    };
    let from_header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let from_query = (request.method() == Method::GET && request.uri().path() == "/")
        .then(|| query_token(request.uri().query().unwrap_or("")))
        .flatten();
    let authorized = from_header
        .into_iter()
        .chain(from_query.as_deref())
        .any(|given| tokens_match(expected, given));
    if authorized {
        return next.run(request).await;
    }
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing or wrong token: send Authorization: Bearer <token from the token file>",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn query_token(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "token")
        .map(|(_, value)| value.into_owned())
}

async fn operation(
    State(state): State<AppState>,
    axum::extract::Path(op): axum::extract::Path<String>,
    body: Bytes,
) -> Response {
    let params = match parse_params(&body) {
        Ok(params) => params,
        Err(e) => return e.into_response(),
    };
    match operations::run(state.surface.as_ref(), &op, params).await {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The body is a JSON object of parameters; an empty body means none.
fn parse_params(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(params)) => Ok(params),
        Ok(_) => Err(ApiError::bad_params("parameters must be a JSON object")),
        Err(e) => Err(ApiError::bad_params(format!("body is not JSON: {e}"))),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let surface = state.surface.as_ref();
    let (mount, stats, queue) =
        futures::join!(surface.mount_info(), surface.stats(), surface.queue());
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        render_metrics(&mount, &stats, &queue),
    )
        .into_response()
}

async fn status_page() -> Response {
    page::response()
}

async fn not_found(request: Request) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no such path {}: operations are POST /<operation>",
            request.uri().path()
        ),
    )
    .into_response()
}

async fn method_not_allowed(request: Request) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} is not allowed on {}: operations are POST, the page and /metrics GET",
            request.method(),
            request.uri().path()
        ),
    )
    .into_response()
}
