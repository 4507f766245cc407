//! Upload and update options (`expires`, `maxDownloads`, `autoDelete`, ...):
//! parsed from form fields or the query and applied to a file's attributes.

use std::collections::HashMap;

use chrono::{DateTime, Months, NaiveDate, Utc};

use super::{Extra, DEFAULT_LIFETIME_DAYS};

// ---- the upload options ----

/// `expires`: `<n><unit>` (s, min, h, d, w, m = months, y) or an ISO-8601
/// date/time; the instant it means, counted from `now`.
fn parse_expires(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    let bad = || format!("Invalid expires value {text:?}");
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0).ok_or_else(bad)?.and_utc());
    }
    let digits = text.chars().take_while(char::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let n: u32 = number.parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(bad());
    }
    let seconds = |s: i64| chrono::Duration::try_seconds(s).ok_or_else(bad);
    let n64 = i64::from(n);
    let at = match unit {
        "s" => now + seconds(n64)?,
        "min" => now + seconds(n64 * 60)?,
        "h" => now + seconds(n64 * 3600)?,
        "d" => now + seconds(n64 * 86_400)?,
        "w" => now + seconds(n64 * 7 * 86_400)?,
        "m" => now.checked_add_months(Months::new(n)).ok_or_else(bad)?,
        "y" => now
            .checked_add_months(Months::new(n.checked_mul(12).ok_or_else(bad)?))
            .ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    Ok(at)
}

/// The three options as given in one request (form fields win over query
/// parameters); `None` = not given.
#[derive(Debug, Default)]
pub(super) struct Options {
    expires: Option<String>,
    max_downloads: Option<String>,
    auto_delete: Option<String>,
}

impl Options {
    pub(super) fn gather(
        form: &HashMap<String, String>,
        query: &HashMap<String, String>,
    ) -> Options {
        let pick = |name: &str| form.get(name).or_else(|| query.get(name)).cloned();
        Options {
            expires: pick("expires"),
            max_downloads: pick("maxDownloads"),
            auto_delete: pick("autoDelete"),
        }
    }

    /// Applies the given options to `extra`; omitted ones are reset to the
    /// defaults when `reset` (PUT, upload) and kept otherwise (PATCH).
    pub(super) fn apply(
        &self,
        extra: &mut Extra,
        reset: bool,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        match &self.expires {
            Some(text) => {
                let at = parse_expires(text, now)?;
                if at <= now {
                    return Err(format!("expires {text:?} is in the past"));
                }
                extra.expires_ms = at.timestamp_millis();
            }
            None if reset => {
                extra.expires_ms =
                    (now + chrono::Duration::days(DEFAULT_LIFETIME_DAYS)).timestamp_millis();
            }
            None => {}
        }
        match &self.max_downloads {
            Some(text) => match text.trim().parse::<u64>() {
                Ok(n) if n >= 1 => extra.max_downloads = n,
                _ => {
                    return Err(format!(
                        "maxDownloads must be a positive integer, not {text:?}"
                    ))
                }
            },
            None if reset => extra.max_downloads = 1,
            None => {}
        }
        match &self.auto_delete {
            Some(text) => match text.trim().to_ascii_lowercase().as_str() {
                "true" => extra.auto_delete = true,
                "false" => extra.auto_delete = false,
                _ => return Err(format!("autoDelete must be true or false, not {text:?}")),
            },
            None if reset => extra.auto_delete = true,
            None => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn expiry_formats() {
        let now = Utc.with_ymd_and_hms(2026, 1, 31, 12, 0, 0).unwrap();
        let at = |t: &str| parse_expires(t, now).map(|d| d.to_rfc3339());
        assert_eq!(at("30s").unwrap(), "2026-01-31T12:00:30+00:00");
        assert_eq!(at("15min").unwrap(), "2026-01-31T12:15:00+00:00");
        assert_eq!(at("2h").unwrap(), "2026-01-31T14:00:00+00:00");
        assert_eq!(at("1d").unwrap(), "2026-02-01T12:00:00+00:00");
        assert_eq!(at("2w").unwrap(), "2026-02-14T12:00:00+00:00");
        // `m` is months, as in the original API; the end of month clamps.
        assert_eq!(at("1m").unwrap(), "2026-02-28T12:00:00+00:00");
        assert_eq!(at("1y").unwrap(), "2027-01-31T12:00:00+00:00");
        assert_eq!(at("2026-03-01").unwrap(), "2026-03-01T00:00:00+00:00");
        assert_eq!(
            at("2026-03-01T10:00:00Z").unwrap(),
            "2026-03-01T10:00:00+00:00"
        );
        for bad in ["", "d", "0d", "1x", "tomorrow", "-1d", "1.5d", "1 d"] {
            assert!(parse_expires(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn put_resets_and_patch_keeps() {
        let now = Utc::now();
        let mut extra = Extra {
            max_downloads: 5,
            auto_delete: false,
            expires_ms: 1,
            ..Extra::default()
        };
        let only_max = Options {
            max_downloads: Some("3".into()),
            ..Options::default()
        };
        only_max.apply(&mut extra, false, now).unwrap();
        assert_eq!(
            (extra.max_downloads, extra.auto_delete, extra.expires_ms),
            (3, false, 1)
        );
        only_max.apply(&mut extra, true, now).unwrap();
        assert!(extra.auto_delete);
        assert!(extra.expires_ms > now.timestamp_millis());
        assert!(Options {
            auto_delete: Some("maybe".into()),
            ..Options::default()
        }
        .apply(&mut extra, false, now)
        .is_err());
    }
}
