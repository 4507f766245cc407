//! `GET /`: the status page, one self-contained HTML file (inline CSS and
//! JS, no external assets) that polls `vfs/stats` and `vfs/queue` each
//! second. On TCP the page is opened once as `/?token=...`; its script keeps
//! the token in the tab's session storage, drops it from the address bar and
//! sends it as a bearer header.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("page.html");

/// Inline script and style only, requests only to this server.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

pub(super) fn response() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            // The address may carry the token: never send it on.
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
        .into_response()
}
