//! The 1fichier API (`/shared/api/1fichier.md`), written from the document
//! alone: JSON endpoints under `/v1`, the upload node (`/upload.cgi`,
//! `/end.pl`) and direct-download links (`/dl/<token>`), all on one listener.
//!
//! Errors are a non-2xx status plus `{"status":"KO","message":"... #NNN"}`;
//! the numbers this emulator invented are listed in `src/emulator/README.md`.

mod account;
mod download;
mod files;
mod folders;
mod public_dir;
mod remote_upload;
mod upload;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use chrono::TimeZone;
use serde_json::{Map, Value};

use super::faults::{nginx_error_page, InjectedFailure};
use super::flood::FloodVerdict;
use super::storage::{AccountId, FileRow, Storage};
use super::AppState;

pub const SERVICE: &str = "1fichier";
pub const API_PREFIX: &str = "/v1";

/// Length of generated file link ids (the real ones are 5–20 characters).
const LINK_ID_LEN: usize = 20;

/// 1fichier-specific shared state (download tokens, remote uploads).
pub struct FichierState {
    pub tokens: download::TokenStore,
    /// Account that receives uploads sent without an API key.
    pub anonymous_account: AccountId,
}

impl FichierState {
    pub async fn new(storage: &Storage) -> anyhow::Result<FichierState> {
        // The empty key can never authenticate, so nobody lists this account.
        let anonymous_account = storage
            .call(|conn| super::storage::ensure_account(conn, SERVICE, ""))
            .await?;
        Ok(FichierState {
            tokens: download::TokenStore::default(),
            anonymous_account,
        })
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/{*endpoint}", any(api_call))
        .route("/upload.cgi", any(upload::upload_cgi))
        .route("/end.pl", any(upload::end_pl))
        .route("/dl/{token}", any(download::direct_link))
        .route("/dir/{folder}", any(public_dir::public_dir))
        .route("/", any(public_dir::file_page))
        .with_state(state)
}

/// An error answer in the service's shape.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 403, the status the service uses for almost every refusal.
    pub fn refused(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }

    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "Resource not found #469")
    }

    pub fn bad_request(detail: impl std::fmt::Display) -> ApiError {
        ApiError::refused(format!("Invalid request: {detail} #700"))
    }

    pub fn invalid_name(name: &str) -> ApiError {
        ApiError::refused(format!("Invalid name {name:?} #703"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(
            self.status,
            &serde_json::json!({"status": "KO", "message": self.message}),
            false,
        )
    }
}

/// Turns a handler failure into its answer: an [`ApiError`] carried inside
/// `anyhow` is the client's fault, anything else is ours (500).
pub fn error_response(err: anyhow::Error) -> Response {
    match err.downcast::<ApiError>() {
        Ok(api) => api.into_response(),
        Err(other) => {
            tracing::error!("1fichier emulator: {other:#}");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error #500").into_response()
        }
    }
}

pub fn json_response(status: StatusCode, value: &Value, pretty: bool) -> Response {
    let body = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    }
    .unwrap_or_else(|_| "{}".to_string());
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// A parsed JSON request body with typed, strict accessors: a missing
/// required member or one of the wrong type is a KO answer; members the
/// emulator does not know are ignored.
pub struct Req(pub Map<String, Value>);

impl Req {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub fn int(&self, name: &str) -> Result<i64, ApiError> {
        self.opt_int(name)?
            .ok_or_else(|| ApiError::bad_request(format!("missing {name}")))
    }

    pub fn opt_int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("{name} must be an integer"))),
        }
    }

    pub fn string(&self, name: &str) -> Result<String, ApiError> {
        self.opt_string(name)?
            .ok_or_else(|| ApiError::bad_request(format!("missing {name}")))
    }

    pub fn opt_string(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::bad_request(format!("{name} must be a string"))),
        }
    }

    pub fn array(&self, name: &str) -> Result<&Vec<Value>, ApiError> {
        match self.get(name) {
            None => Err(ApiError::bad_request(format!("missing {name}"))),
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(ApiError::bad_request(format!("{name} must be an array"))),
        }
    }

    /// An array of strings, non-empty.
    pub fn string_array(&self, name: &str) -> Result<Vec<String>, ApiError> {
        let items = self.array(name)?;
        if items.is_empty() {
            return Err(ApiError::bad_request(format!("{name} is empty")));
        }
        items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::bad_request(format!("{name} must hold strings")))
            })
            .collect()
    }

    /// `0`/`1` flags; anything else is refused.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.opt_int(name)? {
            None | Some(0) => Ok(false),
            Some(1) => Ok(true),
            Some(_) => Err(ApiError::bad_request(format!("{name} must be 0 or 1"))),
        }
    }

    /// `destination_user` / `sharing_user` name another account's share,
    /// which the emulator does not model: only empty is accepted.
    pub fn no_sharing(&self, name: &str) -> Result<(), ApiError> {
        match self.opt_string(name)? {
            None => Ok(()),
            Some(s) if s.is_empty() => Ok(()),
            Some(_) => Err(ApiError::refused("Resource not allowed #631")),
        }
    }
}

/// The account an API call acts for.
pub struct Caller {
    pub account: AccountId,
    pub key: String,
}

/// Endpoints, the methods they accept, and whether a body is optional.
const ENDPOINTS: &[(&str, &[Method], bool)] = &[
    ("folder/ls", &[Method::POST], false),
    ("folder/mkdir", &[Method::POST], false),
    ("folder/rm", &[Method::POST], false),
    ("folder/mv", &[Method::POST], false),
    ("folder/share", &[Method::POST], false),
    ("file/ls", &[Method::POST], false),
    ("file/info", &[Method::POST], false),
    ("file/rm", &[Method::POST], false),
    ("file/mv", &[Method::POST], false),
    ("file/rename", &[Method::POST], false),
    ("file/cp", &[Method::POST], false),
    ("download/get_token", &[Method::POST], false),
    (
        "upload/get_upload_server",
        &[Method::GET, Method::POST],
        true,
    ),
    ("user/info", &[Method::POST], true),
    ("remote/request", &[Method::POST], false),
    ("remote/ls", &[Method::POST], true),
    ("remote/info", &[Method::POST], false),
];

pub fn bearer_key(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let key = key.trim();
    (!key.is_empty()).then_some(key)
}

pub fn flood_error(state: &AppState) -> ApiError {
    ApiError::refused(format!(
        "Flood detected: IP Locked #{}",
        state.settings.flood_code
    ))
}

/// Answer injected by fault settings, if this call draws one.
pub fn injected_failure(state: &AppState) -> Option<Response> {
    match state.faults.draw_api_failure()? {
        InjectedFailure::RateLimited => Some(flood_error(state).into_response()),
        InjectedFailure::ServerError(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            Some(
                (
                    status,
                    [(header::CONTENT_TYPE, "text/html")],
                    nginx_error_page(code),
                )
                    .into_response(),
            )
        }
    }
}

async fn api_call(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(endpoint): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(name) = endpoint.strip_suffix(".cgi") else {
        return ApiError::new(StatusCode::NOT_FOUND, "Unknown API endpoint #716").into_response();
    };
    let Some(&(name, methods, body_optional)) = ENDPOINTS.iter().find(|(n, _, _)| *n == name)
    else {
        return ApiError::new(StatusCode::NOT_FOUND, "Unknown API endpoint #716").into_response();
    };
    state.stats.count(&format!("{SERVICE}:{name}"));
    state.faults.apply_latency().await;

    if !methods.contains(&method) {
        let mut response = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Method {method} not allowed #702"),
        )
        .into_response();
        let allow = methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        if let Ok(value) = HeaderValue::from_str(&allow) {
            response.headers_mut().insert(header::ALLOW, value);
        }
        return response;
    }

    let presented_key = bearer_key(&headers).map(str::to_string);
    let flood_caller = presented_key
        .clone()
        .unwrap_or_else(|| peer.ip().to_string());
    if state.flood.check(&flood_caller, None) != FloodVerdict::Allowed {
        return flood_error(&state).into_response();
    }

    let Some(key) = presented_key else {
        return ApiError::new(StatusCode::UNAUTHORIZED, "Not authenticated #247").into_response();
    };
    let Some(account) = state.account(SERVICE, &key) else {
        return ApiError::refused("No such user #93").into_response();
    };
    let caller = Caller {
        account: account.id,
        key,
    };

    if let Some(response) = injected_failure(&state) {
        return response;
    }

    // The service wants JSON declared even on body-less calls (rclone's
    // "1fichier API is bad" comment), so a client that omits it is caught.
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return ApiError::refused("Content-Type must be application/json #701").into_response();
    }
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        if !body_optional {
            return ApiError::bad_request("empty body").into_response();
        }
        Req(Map::new())
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => Req(map),
            Ok(_) => return ApiError::bad_request("body is not a JSON object").into_response(),
            Err(err) => return ApiError::bad_request(format!("bad JSON ({err})")).into_response(),
        }
    };
    let pretty = matches!(request.0.get("pretty").and_then(Value::as_i64), Some(1));

    let result = match name {
        "folder/ls" => folders::ls(&state, &caller, request).await,
        "folder/mkdir" => folders::mkdir(&state, &caller, request).await,
        "folder/rm" => folders::rm(&state, &caller, request).await,
        "folder/mv" => folders::mv(&state, &caller, request).await,
        "folder/share" => folders::share(&state, &caller, request).await,
        "file/ls" => files::ls(&state, &caller, request).await,
        "file/info" => files::info(&state, &caller, request).await,
        "file/rm" => files::rm(&state, &caller, request).await,
        "file/mv" => files::mv(&state, &caller, request).await,
        "file/rename" => files::rename(&state, &caller, request).await,
        "file/cp" => files::cp(&state, &caller, request).await,
        "download/get_token" => download::get_token(&state, &caller, request).await,
        "upload/get_upload_server" => upload::get_upload_server(&state, &caller).await,
        "user/info" => account::user_info(&state, &caller).await,
        "remote/request" => remote_upload::request(&state, &caller, request).await,
        "remote/ls" => remote_upload::ls(&state, &caller).await,
        "remote/info" => remote_upload::info(&state, &caller, request).await,
        _ => Err(anyhow::Error::new(ApiError::new(
            StatusCode::NOT_FOUND,
            "Unknown API endpoint #716",
        ))),
    };
    match result {
        Ok(value) => json_response(StatusCode::OK, &value, pretty),
        Err(err) => error_response(err),
    }
}

// ---- shapes shared by several endpoints ----

/// `"YYYY-MM-DD HH:MM:SS"` in French local time, as the service writes dates.
pub fn paris_date(unix: i64) -> String {
    chrono_tz::Europe::Paris
        .timestamp_opt(unix, 0)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// Parses a date written as [`paris_date`] does.
pub fn parse_paris_date(text: &str) -> Option<i64> {
    let naive = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").ok()?;
    chrono_tz::Europe::Paris
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.timestamp())
}

pub fn file_url(state: &AppState, link_id: &str) -> String {
    format!("{}/?{link_id}", state.public_url)
}

/// The link id of a file URL this emulator handed out, if `url` is one.
pub fn link_id_of(state: &AppState, url: &str) -> Option<String> {
    let rest = url.strip_prefix(&state.public_url)?.strip_prefix("/?")?;
    let valid = (5..=20).contains(&rest.len())
        && rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    valid.then(|| rest.to_string())
}

/// A file as `file/ls.cgi` lists it (note `content-type` with a hyphen).
pub fn list_item(state: &AppState, file: &FileRow) -> Value {
    serde_json::json!({
        "url": file_url(state, &file.link_id),
        "filename": file.name,
        "size": file.size,
        "date": paris_date(file.created_at),
        "checksum": file.whirlpool,
        "content-type": file.content_type,
        "pass": 0,
        "acl": 0,
        "cdn": 0,
    })
}

/// Longest name the service accepts (its documented folder-name limit; the
/// emulator applies it to file names too).
pub const MAX_NAME_CHARS: usize = 250;

/// Checks a file or folder name against §7 of the document: the emulator
/// rejects (rather than strips) the characters 1fichier does not accept.
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    const FORBIDDEN: &[char] = &['\\', '<', '>', '"', '\'', '$', '`', '/'];
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.chars().count() > MAX_NAME_CHARS
        || name.starts_with(' ')
        || name.ends_with(' ')
        || name
            .chars()
            .any(|c| FORBIDDEN.contains(&c) || c.is_control());
    if bad {
        Err(ApiError::invalid_name(name))
    } else {
        Ok(())
    }
}

/// Escapes text for an HTML page.
pub fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// MIME type the service would report, guessed from the name as the real
/// one does (it lists `test.txt` as `text/plain` whatever was sent).
pub fn content_type_for(name: &str) -> String {
    mime_guess::from_path(name)
        .first_raw()
        .unwrap_or("application/octet-stream")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_section_7() {
        for ok in ["a", "with space.txt", "été ☃.bin", "a.b.c", "x (1)"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            " lead",
            "trail ",
            "a/b",
            "a\\b",
            "a<b",
            "a>b",
            "a\"b",
            "a'b",
            "a$b",
            "a`b",
            "tab\there",
            "del\u{7f}",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"x".repeat(250)).is_ok());
        assert!(validate_name(&"x".repeat(251)).is_err());
    }

    #[test]
    fn dates_are_paris_local() {
        // 2024-01-15 12:00:00 UTC is 13:00 in Paris (CET), 2024-07-15 is CEST.
        assert_eq!(paris_date(1_705_320_000), "2024-01-15 13:00:00");
        assert_eq!(paris_date(1_721_044_800), "2024-07-15 14:00:00");
        assert_eq!(parse_paris_date("2024-07-15 14:00:00"), Some(1_721_044_800));
    }
}
