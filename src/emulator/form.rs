//! Reading request bodies the way HTTP defines them: the media type of a
//! request and `multipart/form-data` parts and their headers.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use futures::TryStreamExt;

use super::stats::Stats;

/// The request's `Content-Type` as sent ("" when absent or not text).
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The media type of a `Content-Type` value without its parameters,
/// lower-cased (`multipart/form-data` for `Multipart/Form-Data; boundary=x`).
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A multipart reader over `body` that adds every byte read to the
/// received-bytes counter.
pub fn counted_multipart(
    body: Body,
    boundary: String,
    stats: Arc<Stats>,
) -> multer::Multipart<'static> {
    let stream = body.into_data_stream().inspect_ok(move |chunk| {
        stats.add_bytes_received(chunk.len() as u64);
    });
    multer::Multipart::new(stream, boundary)
}

/// The file name of a multipart part, from its raw `Content-Disposition`:
/// `filename*=UTF-8''…` (RFC 5987/6266) when present, else `filename="…"`
/// with its quoted-pair escapes undone (RFC 9110 §5.6.4), so a name sent
/// as `a\"b\\c` is stored as `a"b\c`. `None` when the part is not a file.
pub fn part_file_name(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(header::CONTENT_DISPOSITION)?.as_bytes();
    let text = String::from_utf8_lossy(raw);
    let mut plain = None;
    let mut extended = None;
    for (name, value) in parameters(&text) {
        match name.to_ascii_lowercase().as_str() {
            "filename" => plain = Some(value),
            "filename*" => extended = decode_extended(&value),
            _ => {}
        }
    }
    extended.or(plain)
}

/// `name=value` parameters after the disposition type; quoted values are
/// unquoted and unescaped.
fn parameters(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    // Skip the disposition type ("form-data").
    for c in chars.by_ref() {
        if c == ';' {
            break;
        }
    }
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ';') {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ';' {
                break;
            }
            name.push(c);
            chars.next();
        }
        if name.is_empty() && chars.peek().is_none() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(escaped) = chars.next() {
                                value.push(escaped);
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
                // Anything between the closing quote and the next ';'.
                while chars.peek().is_some_and(|c| *c != ';') {
                    chars.next();
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ';' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                value = value.trim_end().to_string();
            }
        }
        out.push((name.trim().to_string(), value));
        if chars.peek().is_none() {
            return out;
        }
    }
}

/// `UTF-8'lang'percent-encoded` → the text; other charsets are not used by
/// any client of these services and are ignored.
fn decode_extended(value: &str) -> Option<String> {
    let mut parts = value.splitn(3, '\'');
    let charset = parts.next()?;
    let _language = parts.next()?;
    let encoded = parts.next()?;
    if !charset.eq_ignore_ascii_case("utf-8") {
        return None;
    }
    percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn name_of(disposition: &str) -> Option<String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_bytes(disposition.as_bytes()).unwrap(),
        );
        part_file_name(&headers)
    }

    #[test]
    fn quoted_names_are_unescaped() {
        assert_eq!(
            name_of(r#"form-data; name="file"; filename="a.txt""#).as_deref(),
            Some("a.txt")
        );
        assert_eq!(
            name_of(r#"form-data; name="file"; filename="q\"uo\\te; x=1.txt""#).as_deref(),
            Some(r#"q"uo\te; x=1.txt"#)
        );
        assert_eq!(
            name_of(r#"form-data; name="file"; filename="ends\\""#).as_deref(),
            Some("ends\\")
        );
        assert_eq!(
            name_of("form-data; name=file; filename=plain.bin").as_deref(),
            Some("plain.bin")
        );
        assert_eq!(
            name_of("form-data; name=\"file\"; filename=\"été.txt\"").as_deref(),
            Some("été.txt")
        );
    }

    #[test]
    fn extended_names_win() {
        assert_eq!(
            name_of("form-data; name=\"file\"; filename=\"fallback\"; filename*=UTF-8''%C3%A9t%C3%A9.txt").as_deref(),
            Some("été.txt")
        );
    }

    #[test]
    fn text_parts_have_no_file_name() {
        assert_eq!(name_of(r#"form-data; name="expires""#), None);
        assert_eq!(name_of(r#"form-data; name="filename_hint""#), None);
    }
}
