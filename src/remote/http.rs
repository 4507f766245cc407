//! HTTP plumbing shared by the backends: the client every remote builds its
//! one connection pool from, the mapping of transport failures and HTTP
//! statuses to [`RemoteError`], and a ranged download stream that survives
//! cut connections and expired links.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{Stream, StreamExt, TryStreamExt};
use reqwest::header::{HeaderMap, CONTENT_RANGE, RANGE, RETRY_AFTER};
use reqwest::StatusCode;
use tokio_util::io::ReaderStream;

use super::error::{RemoteError, RemoteResult};
use super::secret::ApiKey;
use super::{ByteStream, ProgressFn, UploadSource};

/// Timeouts and identity of one remote's HTTP client.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpSettings {
    /// Time allowed to establish a connection (TCP + TLS).
    pub connect_timeout: Duration,
    /// Longest silence tolerated while waiting for response bytes; a stalled
    /// body fails after this instead of hanging a reader forever.
    pub read_timeout: Duration,
    pub user_agent: String,
    /// Certificates trusted for this remote on top of the bundled roots and
    /// the system's store (a TLS-inspecting proxy, a private server).
    pub extra_roots: Option<TrustedCertificates>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
            user_agent: concat!("filehostfs/", env!("CARGO_PKG_VERSION")).to_string(),
            extra_roots: None,
        }
    }
}

/// `Authorization: Bearer <key>`, marked sensitive so reqwest never prints it,
/// as default headers for a backend's clients.
pub fn bearer_headers(key: &ApiKey) -> RemoteResult<HeaderMap> {
    let mut auth = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", key.expose()))
        .map_err(|_| {
            RemoteError::Fatal("the API key contains characters not allowed in a header".into())
        })?;
    auth.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, auth);
    Ok(headers)
}

/// A configured API base without its trailing slash, refused unless it is an
/// http(s) URL.
pub fn checked_api_url(service: &str, raw: &str) -> RemoteResult<String> {
    let api_url = raw.trim_end_matches('/').to_string();
    match url::Url::parse(&api_url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(api_url),
        _ => Err(RemoteError::Fatal(format!(
            "invalid {service} api_url {api_url:?}: expected an http(s) URL"
        ))),
    }
}

/// The certificates of one PEM file, to be trusted as roots.
#[derive(Clone, Debug)]
pub struct TrustedCertificates {
    path: PathBuf,
    certificates: Vec<reqwest::Certificate>,
}

impl TrustedCertificates {
    /// Reads every certificate of a PEM file; a file that holds none, or
    /// that cannot be read or parsed, is an error naming the file.
    pub fn load(path: &Path) -> RemoteResult<Self> {
        let shown = path.display();
        let pem =
            std::fs::read(path).map_err(|e| RemoteError::Fatal(format!("ca_cert {shown}: {e}")))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            RemoteError::Fatal(format!("ca_cert {shown}: not a PEM certificate file: {e}"))
        })?;
        if certificates.is_empty() {
            return Err(RemoteError::Fatal(format!(
                "ca_cert {shown}: no certificate in the file (expected PEM)"
            )));
        }
        Ok(TrustedCertificates {
            path: path.to_path_buf(),
            certificates,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Certificates compare by the file they came from.
impl PartialEq for TrustedCertificates {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

/// A client builder with the settings every backend shares: rustls,
/// connect and idle-read timeouts, pooled keep-alive connections. Backends
/// add their own default headers or redirect policy, then build once per
/// remote so all requests of a remote share one pool.
///
/// The read timeout also bounds the wait for an answer's headers counted
/// from the start of the request, so it is unfit for sending large bodies:
/// use [`upload_client_builder`] for those.
pub fn client_builder(settings: &HttpSettings) -> reqwest::ClientBuilder {
    base_builder(settings).read_timeout(settings.read_timeout)
}

/// Like [`client_builder`] but without the read timeout, for the requests
/// that carry file bytes: sending a large file takes longer than any idle
/// timeout. Give each such request its own deadline with [`upload_deadline`].
pub fn upload_client_builder(settings: &HttpSettings) -> reqwest::ClientBuilder {
    base_builder(settings)
}

/// Trust: the bundled Mozilla roots, the system's store (reqwest loads both
/// with its `rustls-tls-webpki-roots` and `rustls-tls-native-roots`
/// features) and the remote's own `extra_roots`.
fn base_builder(settings: &HttpSettings) -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(settings.connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(8)
        .tcp_keepalive(Duration::from_secs(30))
        .user_agent(settings.user_agent.clone());
    if let Some(roots) = &settings.extra_roots {
        for certificate in &roots.certificates {
            builder = builder.add_root_certificate(certificate.clone());
        }
    }
    builder
}

/// Slowest average upload speed tolerated before an upload is abandoned.
const SLOWEST_UPLOAD_BYTES_PER_SEC: u64 = 16 * 1024;

/// A deadline for sending `size` bytes and getting the answer: the read
/// timeout plus the time the bytes take at a very slow line's speed, so a
/// stalled upload ends some day without cutting a merely slow one.
pub fn upload_deadline(settings: &HttpSettings, size: u64) -> Duration {
    settings.read_timeout + Duration::from_secs(size / SLOWEST_UPLOAD_BYTES_PER_SEC)
}

/// A transport-level failure (no HTTP answer, or a broken body).
pub fn transport_error(err: reqwest::Error) -> RemoteError {
    // reqwest's messages name the URL; the URLs we use carry no secrets.
    if err.is_builder() {
        RemoteError::Fatal(format!("invalid request: {err}"))
    } else if err.is_decode() {
        RemoteError::Fatal(format!("unreadable answer: {err}"))
    } else if let Some(refusal) = certificate_refusal(&err) {
        // Trying again cannot help: say what to change.
        RemoteError::Fatal(format!(
            "TLS: the server's certificate is not trusted ({refusal}); if it is \
             right, add its CA to the system trust store or to the remote's \
             ca_cert setting"
        ))
    } else {
        RemoteError::Transient(describe_chain(&err))
    }
}

/// The certificate error rustls reported somewhere in `err`'s sources.
fn certificate_refusal(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source = Some(err);
    while let Some(current) = source {
        // rustls reports through an io::Error, whose `source` skips it.
        let inner = current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|e| e as &(dyn std::error::Error + 'static))
            .unwrap_or(current);
        if let Some(rustls::Error::InvalidCertificate(reason)) =
            inner.downcast_ref::<rustls::Error>()
        {
            return Some(format!("{reason:?}"));
        }
        // Layers between reqwest and rustls may wrap it in their own types;
        // rustls's message is then all that is left of it.
        if let Some(reason) = inner.to_string().strip_prefix("invalid peer certificate: ") {
            return Some(reason.to_string());
        }
        source = current.source();
    }
    None
}

/// `err` and its sources on one line ("error sending request: connection refused").
fn describe_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The wait a server asked for in `Retry-After` (seconds or an HTTP date).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// The generic meaning of an HTTP error status, for answers that carry no
/// service-specific error body (backends check their own error bodies first).
pub fn status_error(status: StatusCode, headers: &HeaderMap, context: &str) -> RemoteError {
    let message = format!("{context}: HTTP {status}");
    match status.as_u16() {
        429 => RemoteError::RateLimited {
            wait: retry_after(headers),
            message,
        },
        408 | 500 | 502 | 503 | 504 | 509 | 520..=524 => RemoteError::Transient(message),
        404 | 410 => RemoteError::NotFound(message),
        401 | 403 => RemoteError::PermissionDenied(message),
        413 => RemoteError::TooLarge(message),
        507 => RemoteError::QuotaExceeded(message),
        _ => RemoteError::Fatal(message),
    }
}

/// Produces the URL to download from. Called with `true` after the server
/// refused the previous URL (expired link), which must then not be reused.
pub type LinkProvider = Arc<dyn Fn(bool) -> BoxFuture<'static, RemoteResult<String>> + Send + Sync>;

/// Bounds of a resumable download.
#[derive(Clone, Debug, PartialEq)]
pub struct DownloadSettings {
    /// Re-requests allowed in a row, without a byte received in between,
    /// after a cut body, a failed connection or a 5xx.
    pub max_resumes: u32,
    /// New links allowed in a row, without a byte received in between,
    /// after the server refused one as expired.
    pub max_link_refreshes: u32,
    /// Wait before the first re-request; doubled each time up to 5 s.
    pub retry_backoff: Duration,
}

impl Default for DownloadSettings {
    fn default() -> Self {
        DownloadSettings {
            max_resumes: 8,
            max_link_refreshes: 3,
            retry_backoff: Duration::from_millis(250),
        }
    }
}

/// An upload body streamed from `source`, reporting the bytes sent so far
/// to `progress`, and its size. The body fails (rather than sending a
/// truncated or over-long file) if the source does not hold exactly the
/// announced number of bytes, e.g. because a file changed meanwhile.
pub async fn upload_body(
    source: UploadSource,
    progress: Option<ProgressFn>,
) -> RemoteResult<(reqwest::Body, u64)> {
    let (reader, size): (Pin<Box<dyn tokio::io::AsyncRead + Send>>, u64) = match source {
        UploadSource::Path(path) => {
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| RemoteError::Fatal(format!("cannot read {}: {e}", path.display())))?;
            let size = file
                .metadata()
                .await
                .map_err(|e| RemoteError::Fatal(format!("cannot read {}: {e}", path.display())))?
                .len();
            (Box::pin(file), size)
        }
        UploadSource::Reader { reader, size } => (reader, size),
    };
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let chunks = ReaderStream::with_capacity(reader, 256 * 1024).map(move |chunk| {
        let chunk = chunk?;
        let len = chunk.len() as u64;
        let so_far = counter.fetch_add(len, Ordering::SeqCst) + len;
        if so_far > size {
            return Err(std::io::Error::other(format!(
                "the source grew past its announced {size} bytes while being uploaded"
            )));
        }
        if let Some(progress) = &progress {
            progress(so_far);
        }
        Ok(chunk)
    });
    let end_check = futures::stream::once(async move {
        let total = sent.load(Ordering::SeqCst);
        if total == size {
            Ok(Bytes::new())
        } else {
            Err(std::io::Error::other(format!(
                "the source ended after {total} of its announced {size} bytes"
            )))
        }
    });
    let stream = chunks
        .chain(end_check)
        .try_filter(|chunk| futures::future::ready(!chunk.is_empty()));
    Ok((reqwest::Body::wrap_stream(stream), size))
}

type BodyStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

struct RangedDownload {
    client: reqwest::Client,
    link: LinkProvider,
    settings: DownloadSettings,
    /// Next byte to hand to the reader.
    pos: u64,
    /// One past the last byte wanted (lowered once the file size is known).
    end: u64,
    url: Option<String>,
    body: Option<BodyStream>,
    /// Bytes at the start of the current body that precede `pos`.
    skip: u64,
    resumes: u32,
    refreshes: u32,
    finished: bool,
}

/// Bytes `offset .. offset + len` of the file behind `link`, as a stream.
///
/// When the body is cut before the end, the download continues with a new
/// `Range` request from the last byte received; when the server refuses the
/// link (403/404/410) a fresh one is asked from `link`. Both are bounded by
/// `settings`. Reading past the end of the file yields fewer bytes (or none).
pub fn ranged_download(
    client: reqwest::Client,
    link: LinkProvider,
    offset: u64,
    len: u64,
    settings: DownloadSettings,
) -> ByteStream {
    let state = RangedDownload {
        client,
        link,
        settings,
        pos: offset,
        end: offset.saturating_add(len),
        url: None,
        body: None,
        skip: 0,
        resumes: 0,
        refreshes: 0,
        finished: false,
    };
    Box::pin(futures::stream::unfold(state, |mut state| async move {
        let item = state.next_chunk().await?;
        if item.is_err() {
            state.finished = true;
        }
        Some((item, state))
    }))
}

/// What to do after a request was answered.
enum Opened {
    Body,
    /// The range starts at or after the end of the file.
    PastEnd,
    Retry,
}

impl RangedDownload {
    async fn next_chunk(&mut self) -> Option<RemoteResult<Bytes>> {
        loop {
            if self.finished || self.pos >= self.end {
                return None;
            }
            let Some(body) = self.body.as_mut() else {
                match self.open().await {
                    Ok(Opened::Body) | Ok(Opened::Retry) => continue,
                    Ok(Opened::PastEnd) => {
                        self.end = self.pos;
                        return None;
                    }
                    Err(err) => return Some(Err(err)),
                }
            };
            match body.next().await {
                Some(Ok(mut chunk)) => {
                    if self.skip > 0 {
                        let dropped = self.skip.min(chunk.len() as u64);
                        let _ = chunk.split_to(dropped as usize);
                        self.skip -= dropped;
                    }
                    let wanted = self.end - self.pos;
                    if chunk.len() as u64 > wanted {
                        chunk.truncate(wanted as usize);
                    }
                    if chunk.is_empty() {
                        continue;
                    }
                    self.pos += chunk.len() as u64;
                    // The budget bounds failures in a row: a long download
                    // over a flaky line may resume any number of times as
                    // long as each attempt makes progress.
                    self.resumes = 0;
                    self.refreshes = 0;
                    if self.pos >= self.end {
                        // Do not keep a connection busy for bytes nobody reads.
                        self.body = None;
                    }
                    return Some(Ok(chunk));
                }
                Some(Err(err)) => {
                    let cause = describe_chain(&err);
                    if let Err(e) = self.after_cut(&cause).await {
                        return Some(Err(e));
                    }
                }
                None => {
                    if let Err(e) = self.after_cut("body ended early").await {
                        return Some(Err(e));
                    }
                }
            }
        }
    }

    /// Drops the broken body and waits before it is re-requested.
    async fn after_cut(&mut self, cause: &str) -> RemoteResult<()> {
        self.body = None;
        // The link may have expired while the body streamed; the provider
        // hands out its cached link while valid, else a new one.
        self.url = None;
        self.spend_resume(cause).await
    }

    async fn spend_resume(&mut self, cause: &str) -> RemoteResult<()> {
        self.resumes += 1;
        if self.resumes > self.settings.max_resumes {
            return Err(RemoteError::Transient(format!(
                "download interrupted at byte {} ({cause}); gave up after {} resumes",
                self.pos, self.settings.max_resumes
            )));
        }
        tracing::debug!(
            pos = self.pos,
            resumes = self.resumes,
            cause,
            "resuming download"
        );
        let shift = (self.resumes - 1).min(10);
        let wait = self
            .settings
            .retry_backoff
            .saturating_mul(1 << shift)
            .min(Duration::from_secs(5));
        tokio::time::sleep(wait).await;
        Ok(())
    }

    async fn refresh_link(&mut self, why: RemoteError) -> RemoteResult<()> {
        self.url = None;
        self.refreshes += 1;
        if self.refreshes > self.settings.max_link_refreshes {
            return Err(why);
        }
        tracing::debug!(
            refreshes = self.refreshes,
            "direct link refused; getting a new one"
        );
        self.url = Some((self.link)(true).await?);
        Ok(())
    }

    async fn open(&mut self) -> RemoteResult<Opened> {
        let url = match &self.url {
            Some(url) => url.clone(),
            None => {
                let url = (self.link)(false).await?;
                self.url = Some(url.clone());
                url
            }
        };
        let range = format!("bytes={}-{}", self.pos, self.end - 1);
        let response = match self.client.get(&url).header(RANGE, range).send().await {
            Ok(r) => r,
            Err(err) => {
                let err = transport_error(err);
                if !err.is_retryable() {
                    return Err(err);
                }
                self.spend_resume(&err.to_string()).await?;
                return Ok(Opened::Retry);
            }
        };
        let status = response.status();
        if status == StatusCode::FORBIDDEN {
            let why = status_error(status, response.headers(), "direct link refused");
            if refuses_one_more_download(response).await {
                return Err(RemoteError::TooManyDownloads(format!(
                    "download: HTTP {status}"
                )));
            }
            self.refresh_link(why).await?;
            return Ok(Opened::Retry);
        }
        match status {
            StatusCode::PARTIAL_CONTENT => {
                let (start, total) = parse_content_range(response.headers()).ok_or_else(|| {
                    RemoteError::Fatal("206 answer without a usable Content-Range".into())
                })?;
                if start > self.pos {
                    return Err(RemoteError::Fatal(format!(
                        "asked for bytes from {} but the server sent from {start}",
                        self.pos
                    )));
                }
                self.skip = self.pos - start;
                if let Some(total) = total {
                    self.end = self.end.min(total);
                }
            }
            StatusCode::OK => {
                // The server ignored Range and sends the whole file.
                self.skip = self.pos;
                if let Some(total) = response.content_length() {
                    self.end = self.end.min(total);
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE => return Ok(Opened::PastEnd),
            StatusCode::TOO_MANY_REQUESTS if retry_after(response.headers()).is_none() => {
                // Without a wait to honour, a download server's 429 is the
                // account's connection limit (an S3-style `SlowDown`,
                // file.io's `TOO_MANY_REQUESTS`): the caller, who knows
                // how many it has open, decides.
                return Err(RemoteError::TooManyDownloads(format!(
                    "download: HTTP {status}"
                )));
            }
            StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::GONE => {
                let why = status_error(status, response.headers(), "direct link refused");
                self.refresh_link(why).await?;
                return Ok(Opened::Retry);
            }
            _ => {
                let err = status_error(status, response.headers(), "download");
                if !err.is_retryable() {
                    return Err(err);
                }
                if let RemoteError::RateLimited {
                    wait: Some(wait), ..
                } = &err
                {
                    tokio::time::sleep((*wait).min(Duration::from_secs(60))).await;
                }
                self.spend_resume(&err.to_string()).await?;
                return Ok(Opened::Retry);
            }
        }
        if self.pos >= self.end {
            return Ok(Opened::PastEnd);
        }
        self.body = Some(Box::pin(response.bytes_stream()));
        Ok(Opened::Body)
    }
}

/// Whether a download server's 403 says the account has too many
/// downloads open (rather than that the link expired): its short text
/// answer says so.
async fn refuses_one_more_download(mut response: reqwest::Response) -> bool {
    let mut text = Vec::new();
    while text.len() < 1024 {
        match response.chunk().await {
            Ok(Some(chunk)) => text.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&text).to_ascii_lowercase();
    text.contains("too many") && (text.contains("download") || text.contains("connection"))
}

/// `(first byte, total size if known)` from `Content-Range: bytes a-b/total`.
fn parse_content_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let value = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    let spec = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = spec.split_once('/')?;
    let (first, _last) = range.split_once('-')?;
    let first = first.trim().parse().ok()?;
    let total = total.trim().parse().ok();
    Some((first, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn upload_deadlines_grow_with_the_size() {
        let settings = HttpSettings::default();
        assert_eq!(upload_deadline(&settings, 0), settings.read_timeout);
        let gigabyte = upload_deadline(&settings, 1 << 30);
        assert!(gigabyte > Duration::from_secs(3600), "{gigabyte:?}");
    }

    #[test]
    fn content_range_parsing() {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_RANGE,
            HeaderValue::from_static("bytes 100-199/1000"),
        );
        assert_eq!(parse_content_range(&h), Some((100, Some(1000))));
        h.insert(CONTENT_RANGE, HeaderValue::from_static("bytes 0-9/*"));
        assert_eq!(parse_content_range(&h), Some((0, None)));
        h.insert(CONTENT_RANGE, HeaderValue::from_static("garbage"));
        assert_eq!(parse_content_range(&h), None);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }

    #[test]
    fn statuses_map_to_error_kinds() {
        let h = HeaderMap::new();
        assert!(status_error(StatusCode::BAD_GATEWAY, &h, "x").is_retryable());
        assert!(matches!(
            status_error(StatusCode::TOO_MANY_REQUESTS, &h, "x"),
            RemoteError::RateLimited { .. }
        ));
        assert!(matches!(
            status_error(StatusCode::GONE, &h, "x"),
            RemoteError::NotFound(_)
        ));
        assert!(!status_error(StatusCode::BAD_REQUEST, &h, "x").is_retryable());
    }
}
