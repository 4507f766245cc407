//! Serving a stored blob over HTTP with single-range support, shared by every
//! service's direct-download links.
//!
//! Supported: `bytes=N-M`, `bytes=N-`, `bytes=-N`, HEAD, 206 + Content-Range,
//! 416 + `Content-Range: bytes */SIZE` when unsatisfiable. A syntactically
//! invalid Range header or a multi-range request is ignored and the whole
//! file is sent with 200, which RFC 9110 §14.2 allows.

use std::future::Future as _;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::Stream;

use super::pacing::{TokenBucket, QUANTUM};
use super::slots::DownloadSlot;
use super::stats::Stats;
use super::storage::FileRow;
use super::AppState;

/// Read size per chunk: large enough that per-chunk overhead (a blocking
/// task hop, a syscall) is negligible next to the copy itself.
const CHUNK: usize = 1 << 20;

/// How long a cut download waits, after its last byte, before dropping.
const CUT_FLUSH_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// A byte range resolved against the file size; `end` is inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes in the range (never 0: `end` is inclusive).
    pub fn byte_count(&self) -> u64 {
        self.end - self.start + 1
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable Range header: send everything.
    Full,
    Partial(ByteRange),
    Unsatisfiable,
}

/// Interprets a Range header value against a file of `size` bytes.
pub fn parse_range(value: Option<&str>, size: u64) -> RangeRequest {
    let Some(value) = value else {
        return RangeRequest::Full;
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if first.is_empty() {
        // Suffix range: the last N bytes.
        if !digits(last) {
            return RangeRequest::Full;
        }
        let Ok(suffix) = last.parse::<u64>() else {
            return RangeRequest::Full;
        };
        if suffix == 0 || size == 0 {
            return RangeRequest::Unsatisfiable;
        }
        let len = suffix.min(size);
        return RangeRequest::Partial(ByteRange {
            start: size - len,
            end: size - 1,
        });
    }
    if !digits(first) || !(last.is_empty() || digits(last)) {
        return RangeRequest::Full;
    }
    let Ok(start) = first.parse::<u64>() else {
        // Longer than u64: certainly past the end.
        return RangeRequest::Unsatisfiable;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        last.parse::<u64>().unwrap_or(u64::MAX)
    };
    if end < start {
        return RangeRequest::Full;
    }
    if start >= size {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial(ByteRange {
        start,
        end: end.min(size - 1),
    })
}

/// What to send and how, for one download request.
pub struct BlobResponse {
    pub path: PathBuf,
    pub size: u64,
    pub content_type: String,
    pub file_name: String,
    /// Abort the body after this many bytes (fault injection).
    pub cut_after: Option<u64>,
    /// Answer with this 5xx and nginx's error page instead (fault injection).
    pub server_error: Option<u16>,
    pub stats: Arc<Stats>,
    /// Kept alive until the body is finished or dropped (e.g. a guard that
    /// marks a single-use link as idle again).
    pub guard: Option<Box<dyn Send + Sync + 'static>>,
    /// Pace of the body in bytes per second (the link's, when it started).
    pub rate: Option<u64>,
    /// The account's download slot, held until the body is done.
    pub slot: Option<DownloadSlot>,
}

/// RFC 8187 `attr-char` minus what must be escaped.
const FILENAME_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'-')
    .remove(b'_')
    .remove(b'~');

fn content_disposition(name: &str) -> HeaderValue {
    let encoded = percent_encoding::utf8_percent_encode(name, FILENAME_ESCAPES).to_string();
    HeaderValue::from_str(&format!("attachment; filename*=UTF-8''{encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

impl BlobResponse {
    /// `file`'s bytes, with the download faults currently set; `guard` is
    /// kept alive until the body is done.
    pub fn for_file(
        state: &AppState,
        file: &FileRow,
        guard: Option<Box<dyn Send + Sync + 'static>>,
    ) -> BlobResponse {
        BlobResponse {
            path: state.storage.blob_path(&file.blob_id),
            size: file.size,
            content_type: file.content_type.clone(),
            file_name: file.name.clone(),
            cut_after: state.faults.cut_body_after(),
            server_error: state.faults.draw_download_error(),
            stats: state.stats.clone(),
            guard,
            rate: state.link.download_rate(),
            slot: None,
        }
    }

    /// Holds `slot` (if any) until the body is fully sent or dropped.
    pub fn with_slot(mut self, slot: Option<DownloadSlot>) -> BlobResponse {
        self.slot = slot;
        self
    }

    pub async fn into_response(self, method: &Method, headers: &HeaderMap) -> Response {
        if let Some(code) = self.server_error {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let page = super::faults::nginx_error_page(code);
            return (status, [(header::CONTENT_TYPE, "text/html")], page).into_response();
        }
        let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
        let request = parse_range(range_header, self.size);
        let content_type = HeaderValue::from_str(&self.content_type)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));

        let (status, range) = match request {
            RangeRequest::Unsatisfiable => {
                let mut response = (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [
                        (header::CONTENT_RANGE, format!("bytes */{}", self.size)),
                        (header::ACCEPT_RANGES, "bytes".to_string()),
                    ],
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
                return response;
            }
            RangeRequest::Full => (StatusCode::OK, None),
            RangeRequest::Partial(range) => (StatusCode::PARTIAL_CONTENT, Some(range)),
        };
        let (offset, length) = match range {
            Some(r) => (r.start, r.byte_count()),
            None => (0, self.size),
        };

        let mut builder = Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::ACCEPT_RANGES, "bytes")
            .header(header::CONTENT_LENGTH, length)
            .header(
                header::CONTENT_DISPOSITION,
                content_disposition(&self.file_name),
            );
        if let Some(r) = range {
            builder = builder.header(
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{}", r.start, r.end, self.size),
            );
        }

        if *method == Method::HEAD || length == 0 {
            return builder
                .body(Body::empty())
                .unwrap_or_else(|_| internal_error());
        }

        let file = match tokio::task::spawn_blocking({
            let path = self.path.clone();
            move || -> std::io::Result<std::fs::File> {
                let mut file = std::fs::File::open(path)?;
                file.seek(SeekFrom::Start(offset))?;
                Ok(file)
            }
        })
        .await
        {
            Ok(Ok(file)) => file,
            Ok(Err(err)) => {
                tracing::error!("opening blob {}: {err}", self.path.display());
                return internal_error();
            }
            Err(_) => return internal_error(),
        };
        let stream = BlobStream {
            file: Some(file),
            remaining: length,
            sent: 0,
            cut_after: self.cut_after,
            pending: None,
            cut_pause: None,
            ready: None,
            pacer: self.rate.map(TokenBucket::new),
            stats: self.stats,
            _guard: self.guard,
            _slot: self.slot,
        };
        builder
            .body(Body::from_stream(stream))
            .unwrap_or_else(|_| internal_error())
    }
}

fn internal_error() -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
}

type ReadResult = std::io::Result<(std::fs::File, Bytes)>;

/// Reads the file in large chunks on the blocking pool, one read in flight
/// at a time, and hands each chunk to hyper without copying it again.
struct BlobStream {
    file: Option<std::fs::File>,
    remaining: u64,
    sent: u64,
    cut_after: Option<u64>,
    pending: Option<tokio::task::JoinHandle<ReadResult>>,
    cut_pause: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Bytes read but not yet handed on (a paced body leaves in quanta).
    ready: Option<Bytes>,
    pacer: Option<TokenBucket>,
    stats: Arc<Stats>,
    _guard: Option<Box<dyn Send + Sync + 'static>>,
    _slot: Option<DownloadSlot>,
}

impl Stream for BlobStream {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(chunk) = this.ready.as_mut() {
                let n = match this.pacer.as_mut() {
                    Some(pacer) => {
                        let n = chunk.len().min(QUANTUM);
                        if pacer.poll_take(cx, n).is_pending() {
                            return Poll::Pending;
                        }
                        n
                    }
                    None => chunk.len(),
                };
                let out = chunk.split_to(n);
                if chunk.is_empty() {
                    this.ready = None;
                }
                this.stats.add_bytes_served(out.len() as u64);
                return Poll::Ready(Some(Ok(out)));
            }
            if let Some(limit) = this.cut_after {
                if this.sent >= limit {
                    // Pause first so hyper flushes what was sent (it flushes
                    // while the body is pending), then fail: an error, not a
                    // clean end, makes hyper drop the connection short of
                    // Content-Length, like a real network cut.
                    let pause = this
                        .cut_pause
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(CUT_FLUSH_PAUSE)));
                    if pause.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.cut_after = None;
                    this.remaining = 0;
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "download cut by fault injection",
                    ))));
                }
            }
            if this.pending.is_none() {
                if this.remaining == 0 {
                    return Poll::Ready(None);
                }
                let Some(mut file) = this.file.take() else {
                    return Poll::Ready(None);
                };
                let mut want = this.remaining.min(CHUNK as u64) as usize;
                if let Some(limit) = this.cut_after {
                    want = want.min((limit - this.sent) as usize);
                }
                this.pending = Some(tokio::task::spawn_blocking(move || {
                    let mut buf = BytesMut::zeroed(want);
                    let mut filled = 0;
                    while filled < want {
                        let n = file.read(&mut buf[filled..])?;
                        if n == 0 {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "blob shorter than recorded",
                            ));
                        }
                        filled += n;
                    }
                    Ok((file, buf.freeze()))
                }));
            }
            let pending = this.pending.as_mut().expect("read in flight");
            let Poll::Ready(joined) = Pin::new(pending).poll(cx) else {
                return Poll::Pending;
            };
            this.pending = None;
            match joined {
                Ok(Ok((file, chunk))) => {
                    this.file = Some(file);
                    this.remaining -= chunk.len() as u64;
                    this.sent += chunk.len() as u64;
                    // Handed on (in quanta when paced) at the top of the loop.
                    this.ready = Some(chunk);
                }
                Ok(Err(err)) => {
                    this.remaining = 0;
                    return Poll::Ready(Some(Err(err)));
                }
                Err(_) => {
                    this.remaining = 0;
                    return Poll::Ready(Some(Err(std::io::Error::other("read task failed"))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_against_size() {
        let p = |s: &str, size| parse_range(Some(s), size);
        assert_eq!(
            p("bytes=0-0", 10),
            RangeRequest::Partial(ByteRange { start: 0, end: 0 })
        );
        assert_eq!(
            p("bytes=9-", 10),
            RangeRequest::Partial(ByteRange { start: 9, end: 9 })
        );
        assert_eq!(
            p("bytes=5-100", 10),
            RangeRequest::Partial(ByteRange { start: 5, end: 9 })
        );
        assert_eq!(
            p("bytes=-3", 10),
            RangeRequest::Partial(ByteRange { start: 7, end: 9 })
        );
        assert_eq!(
            p("bytes=-30", 10),
            RangeRequest::Partial(ByteRange { start: 0, end: 9 })
        );
        assert_eq!(p("bytes=10-", 10), RangeRequest::Unsatisfiable);
        assert_eq!(p("bytes=-0", 10), RangeRequest::Unsatisfiable);
        assert_eq!(p("bytes=0-", 0), RangeRequest::Unsatisfiable);
        assert_eq!(p("bytes=-1", 0), RangeRequest::Unsatisfiable);
        assert_eq!(
            p("bytes=99999999999999999999999-", 10),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(p("bytes=5-3", 10), RangeRequest::Full);
        assert_eq!(p("bytes=0-1,3-4", 10), RangeRequest::Full);
        assert_eq!(p("items=0-1", 10), RangeRequest::Full);
        assert_eq!(p("bytes=a-b", 10), RangeRequest::Full);
        assert_eq!(parse_range(None, 10), RangeRequest::Full);
    }

    proptest::proptest! {
        /// RFC 9110 §14.1.2 semantics, stated case by case.
        #[test]
        fn single_ranges_follow_rfc_9110(size in 0u64..5000, a in 0u64..6000, b in 0u64..6000) {
            let closed = parse_range(Some(&format!("bytes={a}-{b}")), size);
            if a > b {
                proptest::prop_assert_eq!(closed, RangeRequest::Full);
            } else if a >= size {
                proptest::prop_assert_eq!(closed, RangeRequest::Unsatisfiable);
            } else {
                proptest::prop_assert_eq!(
                    closed,
                    RangeRequest::Partial(ByteRange { start: a, end: b.min(size - 1) })
                );
            }
            let open = parse_range(Some(&format!("bytes={a}-")), size);
            if a >= size {
                proptest::prop_assert_eq!(open, RangeRequest::Unsatisfiable);
            } else {
                proptest::prop_assert_eq!(
                    open,
                    RangeRequest::Partial(ByteRange { start: a, end: size - 1 })
                );
            }
            let suffix = parse_range(Some(&format!("bytes=-{b}")), size);
            if b == 0 || size == 0 {
                proptest::prop_assert_eq!(suffix, RangeRequest::Unsatisfiable);
            } else {
                proptest::prop_assert_eq!(
                    suffix,
                    RangeRequest::Partial(ByteRange { start: size - b.min(size), end: size - 1 })
                );
            }
        }
    }

    async fn serve(path: PathBuf, size: u64, range: Option<&str>, method: Method) -> Response {
        let mut headers = HeaderMap::new();
        if let Some(r) = range {
            headers.insert(header::RANGE, HeaderValue::from_str(r).unwrap());
        }
        BlobResponse {
            path,
            size,
            content_type: "text/plain".into(),
            file_name: "a b.txt".into(),
            cut_after: None,
            server_error: None,
            stats: Arc::new(Stats::default()),
            guard: None,
            rate: None,
            slot: None,
        }
        .into_response(&method, &headers)
        .await
    }

    async fn body_bytes(response: Response) -> Vec<u8> {
        use http_body_util::BodyExt;
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    #[tokio::test]
    async fn zero_length_blob() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        std::fs::write(&path, b"").unwrap();
        let full = serve(path.clone(), 0, None, Method::GET).await;
        assert_eq!(full.status(), StatusCode::OK);
        assert_eq!(full.headers()[header::CONTENT_LENGTH], "0");
        assert!(body_bytes(full).await.is_empty());
        let ranged = serve(path.clone(), 0, Some("bytes=0-"), Method::GET).await;
        assert_eq!(ranged.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(ranged.headers()[header::CONTENT_RANGE], "bytes */0");
    }

    #[tokio::test]
    async fn partial_and_head() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let size = data.len() as u64;
        let r = serve(
            path.clone(),
            size,
            Some("bytes=1048570-2097160"),
            Method::GET,
        )
        .await;
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            r.headers()[header::CONTENT_RANGE],
            format!("bytes 1048570-2097160/{size}")
        );
        assert_eq!(body_bytes(r).await, &data[1048570..=2097160]);
        let head = serve(path.clone(), size, None, Method::HEAD).await;
        assert_eq!(head.headers()[header::CONTENT_LENGTH], size.to_string());
        assert!(body_bytes(head).await.is_empty());
        let full = serve(path, size, None, Method::GET).await;
        assert_eq!(body_bytes(full).await, data);
    }
}
