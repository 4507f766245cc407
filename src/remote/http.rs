//! HTTP pieces shared by the backends.

use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{HeaderMap, RANGE, RETRY_AFTER};
use reqwest::StatusCode;
use tokio::io::AsyncReadExt;

use super::{ByteStream, ProgressFn, RemoteError, RemoteResult, UploadSource};

/// A client builder with the settings every backend wants.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("filehostfs/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(20))
        .read_timeout(Duration::from_secs(120))
}

/// The wait a `Retry-After` header asks for (seconds form only).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// An upload body streamed from `source`, reporting progress, and its size.
pub async fn upload_body(
    source: UploadSource,
    progress: Option<ProgressFn>,
) -> RemoteResult<(reqwest::Body, u64)> {
    let (reader, size): (std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>, u64) = match source {
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
    let mut sent = 0u64;
    let stream = tokio_util::io::ReaderStream::new(reader.take(size)).map(move |chunk| {
        if let Ok(bytes) = &chunk {
            sent += bytes.len() as u64;
            if let Some(report) = &progress {
                report(sent);
            }
        }
        chunk
    });
    Ok((reqwest::Body::wrap_stream(stream), size))
}

/// Bytes `offset .. offset + len` of `url` (fewer at the end of the file).
pub async fn ranged_download(
    client: &reqwest::Client,
    url: &str,
    offset: u64,
    len: u64,
) -> RemoteResult<ByteStream> {
    if len == 0 {
        return Ok(Box::pin(futures::stream::empty()));
    }
    let last = offset.saturating_add(len - 1);
    let response = client
        .get(url)
        .header(RANGE, format!("bytes={offset}-{last}"))
        .send()
        .await
        .map_err(|e| RemoteError::Transient(format!("download: {}", e.without_url())))?;
    let status = response.status();
    let skip = match status {
        StatusCode::PARTIAL_CONTENT => 0,
        StatusCode::OK => offset,
        StatusCode::RANGE_NOT_SATISFIABLE => return Ok(Box::pin(futures::stream::empty())),
        StatusCode::NOT_FOUND | StatusCode::GONE => {
            return Err(RemoteError::NotFound(format!("download answered {status}")))
        }
        StatusCode::TOO_MANY_REQUESTS => {
            return Err(RemoteError::RateLimited {
                wait: retry_after(response.headers()),
                message: "download".into(),
            })
        }
        s if s.is_server_error() => {
            return Err(RemoteError::Transient(format!(
                "download answered {status}"
            )))
        }
        _ => return Err(RemoteError::Fatal(format!("download answered {status}"))),
    };
    let mut to_skip = skip;
    let mut remaining = len;
    let stream = response.bytes_stream().filter_map(move |chunk| {
        let out = match chunk {
            Err(e) => Some(Err(RemoteError::Transient(format!(
                "download cut: {}",
                e.without_url()
            )))),
            Ok(mut bytes) => {
                let drop = to_skip.min(bytes.len() as u64);
                to_skip -= drop;
                let _ = bytes.split_to(drop as usize);
                let keep = remaining.min(bytes.len() as u64);
                remaining -= keep;
                bytes.truncate(keep as usize);
                (!bytes.is_empty()).then_some(Ok(bytes))
            }
        };
        futures::future::ready(out)
    });
    Ok(Box::pin(stream))
}
