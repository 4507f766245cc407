//! `download/get_token.cgi` and the temporary direct links it hands out.
//!
//! Tokens live in memory: like the real ones they are short-lived, and a
//! client must be ready to ask for a new one anyway.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::{link_id_of, ApiError, Caller, Req, SERVICE};
use crate::emulator::ranges::BlobResponse;
use crate::emulator::storage::{self, random_lower_alnum};
use crate::emulator::AppState;

/// Expired tokens are remembered this long so they answer "expired" (410)
/// rather than "unknown" (404).
const REMEMBER_EXPIRED: Duration = Duration::from_secs(3600);

struct Token {
    file_id: i64,
    expires_at: Instant,
    /// `single: 1`: no parallel requests on this link.
    single: bool,
    in_flight: Arc<AtomicUsize>,
}

/// Forgotten tokens are swept at most this often (a sweep walks them all).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct TokenStore {
    tokens: Mutex<Tokens>,
}

#[derive(Default)]
struct Tokens {
    by_token: HashMap<String, Token>,
    last_sweep: Option<Instant>,
}

enum Lookup {
    Unknown,
    Expired,
    Valid {
        file_id: i64,
        single: bool,
        in_flight: Arc<AtomicUsize>,
    },
}

impl TokenStore {
    fn issue(&self, file_id: i64, lifetime: Duration, single: bool) -> String {
        let now = Instant::now();
        let token = random_lower_alnum(24);
        let mut tokens = self.tokens.lock();
        if tokens
            .last_sweep
            .is_none_or(|last| now.duration_since(last) >= SWEEP_EVERY)
        {
            tokens
                .by_token
                .retain(|_, t| t.expires_at + REMEMBER_EXPIRED > now);
            tokens.last_sweep = Some(now);
        }
        tokens.by_token.insert(
            token.clone(),
            Token {
                file_id,
                expires_at: now + lifetime,
                single,
                in_flight: Arc::new(AtomicUsize::new(0)),
            },
        );
        token
    }

    fn lookup(&self, token: &str) -> Lookup {
        let tokens = self.tokens.lock();
        match tokens.by_token.get(token) {
            None => Lookup::Unknown,
            Some(t) if Instant::now() >= t.expires_at => Lookup::Expired,
            Some(t) => Lookup::Valid {
                file_id: t.file_id,
                single: t.single,
                in_flight: t.in_flight.clone(),
            },
        }
    }
}

pub async fn get_token(state: &AppState, caller: &Caller, req: Req) -> anyhow::Result<Value> {
    let url = req.string("url")?;
    let single = req.flag("single")?;
    // Accepted for shape only: the emulator has no passwords, CDN or ACLs.
    let _ = req.opt_string("pass")?;
    let _ = req.flag("cdn")?;
    let _ = req.flag("inline")?;
    let _ = req.flag("no_ssl")?;
    let _ = req.opt_int("restrict_ip")?;

    let account = state.account(SERVICE, &caller.key);
    if account.is_some_and(|a| a.entry.option("offer") == Some("free")) {
        return Err(ApiError::refused("Must be a customer (Premium, Access) #200").into());
    }
    let link_id = link_id_of(state, &url).ok_or_else(ApiError::not_found)?;
    let account_id = caller.account;
    let file = state
        .storage
        .call(move |conn| {
            storage::file_by_link(conn, account_id, &link_id)?
                .ok_or_else(|| ApiError::not_found().into())
        })
        .await?;
    let lifetime = if state.faults.expire_links() {
        Duration::ZERO
    } else {
        state.settings.link_expiry
    };
    let token = state.fichier.tokens.issue(file.id, lifetime, single);
    Ok(json!({
        "url": format!("{}/dl/{token}", state.public_url),
        "status": "OK",
    }))
}

/// Decrements a link's in-flight count when the response body is done.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// GET/HEAD on a token URL: the file's bytes with Range support.
pub async fn direct_link(
    State(state): State<Arc<AppState>>,
    Path(token): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    state.stats.count(&format!("{SERVICE}:download"));
    state.faults.apply_latency().await;
    if method != Method::GET && method != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let (file_id, single, in_flight) = match state.fichier.tokens.lookup(&token) {
        Lookup::Unknown => return plain(StatusCode::NOT_FOUND, "unknown download link\n"),
        Lookup::Expired => return plain(StatusCode::GONE, "download link expired\n"),
        Lookup::Valid {
            file_id,
            single,
            in_flight,
        } => (file_id, single, in_flight),
    };
    let file = match state
        .storage
        .call(move |conn| storage::file_by_id(conn, file_id))
        .await
    {
        Ok(Some(file)) => file,
        Ok(None) => return plain(StatusCode::NOT_FOUND, "file no longer exists\n"),
        Err(err) => {
            tracing::error!("download lookup: {err:#}");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
        }
    };
    let previous = in_flight.fetch_add(1, Ordering::AcqRel);
    let guard = InFlight(in_flight);
    if single && previous > 0 && method == Method::GET {
        return plain(
            StatusCode::FORBIDDEN,
            "parallel requests are not allowed on this link (single=1)\n",
        );
    }
    let slot = match method {
        Method::GET => match state.acquire_download(file.account_id) {
            Some(slot) => Some(slot),
            None => {
                return plain(
                    StatusCode::FORBIDDEN,
                    "Too many simultaneous downloads for this account\n",
                )
            }
        },
        _ => None,
    };
    BlobResponse::for_file(&state, &file, Some(Box::new(guard)))
        .with_slot(slot)
        .into_response(&method, &headers)
        .await
}
