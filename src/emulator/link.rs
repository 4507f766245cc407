//! The link between the emulator and its clients made to look like a file
//! hoster's over the internet: a latency on every answer, a pace per
//! download connection, a cap on concurrent downloads per account. Set by
//! `serve` flags or a named profile, changed at run time through
//! `/_emulator/link`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::slots::DownloadSlots;
use super::AppState;

/// The link's current settings; 0 turns a setting off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSettings {
    /// One-way delay: a request reaches its handler this long after it
    /// arrived, and the answer's first byte leaves this long after the
    /// handler answered, so a client sees twice this as the round trip.
    pub latency_ms: u64,
    /// Bytes per second each download connection (GET on a direct link)
    /// is paced to, on its own.
    pub download_rate_per_connection: u64,
    /// Concurrent download connections per account; one more is refused.
    pub max_downloads_per_key: u32,
}

/// Named sets of link settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LinkProfile {
    /// A file hoster seen from a home line: 40 ms round trip, 20 MiB/s per
    /// download connection, 8 concurrent downloads per account.
    Hoster,
}

impl LinkProfile {
    pub fn settings(self) -> LinkSettings {
        match self {
            LinkProfile::Hoster => LinkSettings {
                latency_ms: 20,
                download_rate_per_connection: 20 * 1024 * 1024,
                max_downloads_per_key: 8,
            },
        }
    }
}

/// A partial update: members left out keep their value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkUpdate {
    pub latency_ms: Option<u64>,
    pub download_rate_per_connection: Option<u64>,
    pub max_downloads_per_key: Option<u32>,
    /// Replaces all three with a profile's values, before the members above.
    pub profile: Option<String>,
}

/// The settings plus the per-account download slots they limit.
pub struct Link {
    settings: Mutex<LinkSettings>,
    pub slots: DownloadSlots,
}

impl Link {
    pub fn new(settings: LinkSettings) -> Link {
        Link {
            settings: Mutex::new(settings),
            slots: DownloadSlots::default(),
        }
    }

    pub fn get(&self) -> LinkSettings {
        *self.settings.lock()
    }

    pub fn update(&self, update: LinkUpdate) -> Result<LinkSettings, String> {
        let profile = match update.profile.as_deref() {
            None => None,
            Some(name) => Some(
                <LinkProfile as clap::ValueEnum>::from_str(name, true)
                    .map_err(|_| format!("unknown link profile {name:?}"))?,
            ),
        };
        let mut settings = self.settings.lock();
        if let Some(profile) = profile {
            *settings = profile.settings();
        }
        if let Some(v) = update.latency_ms {
            settings.latency_ms = v;
        }
        if let Some(v) = update.download_rate_per_connection {
            settings.download_rate_per_connection = v;
        }
        if let Some(v) = update.max_downloads_per_key {
            settings.max_downloads_per_key = v;
        }
        Ok(*settings)
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.settings.lock().latency_ms)
    }

    /// The pace for a download connection starting now (`None`: unpaced).
    pub fn download_rate(&self) -> Option<u64> {
        Some(self.settings.lock().download_rate_per_connection).filter(|r| *r > 0)
    }

    pub fn max_downloads_per_key(&self) -> Option<u32> {
        Some(self.settings.lock().max_downloads_per_key).filter(|n| *n > 0)
    }
}

/// Middleware on every service route (not the admin API): the request's
/// trip, the handler, then the answer's trip. A download's pacing starts
/// only when its body is first polled, after both.
pub async fn delay_answers(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let latency = state.link.latency();
    if request.uri().path().starts_with("/_emulator/") || latency.is_zero() {
        return next.run(request).await;
    }
    tokio::time::sleep(latency).await;
    let response = next.run(request).await;
    tokio::time::sleep(state.link.latency()).await;
    response
}

/// Reads a rate such as `20MiB`, `20M`, `500k` or `1048576` (bytes per
/// second; k/M/G are powers of 1000, KiB/MiB/GiB of 1024).
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let text = text.strip_suffix("/s").unwrap_or(text);
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a rate such as 20MiB or 1048576"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "k" | "K" | "kB" | "KB" => 1000,
        "M" | "MB" => 1000 * 1000,
        "G" | "GB" => 1000 * 1000 * 1000,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        "GiB" => 1024 * 1024 * 1024,
        other => {
            return Err(format!(
                "unknown rate unit {other:?} (k, M, G, KiB, MiB, GiB)"
            ))
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_with_units() {
        assert_eq!(parse_rate("1048576"), Ok(1048576));
        assert_eq!(parse_rate("20MiB"), Ok(20 * 1024 * 1024));
        assert_eq!(parse_rate("20M"), Ok(20_000_000));
        assert_eq!(parse_rate("500k/s"), Ok(500_000));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("20XB").is_err());
        assert!(parse_rate("99999999999GiB").is_err());
    }

    #[test]
    fn updates_are_partial_and_a_profile_comes_first() {
        let link = Link::new(LinkSettings::default());
        let set = link
            .update(LinkUpdate {
                profile: Some("hoster".into()),
                latency_ms: Some(2),
                ..LinkUpdate::default()
            })
            .unwrap();
        assert_eq!(set.latency_ms, 2);
        assert_eq!(set.download_rate_per_connection, 20 * 1024 * 1024);
        assert_eq!(set.max_downloads_per_key, 8);
        let set = link
            .update(LinkUpdate {
                max_downloads_per_key: Some(0),
                ..LinkUpdate::default()
            })
            .unwrap();
        assert_eq!((set.latency_ms, set.max_downloads_per_key), (2, 0));
        assert_eq!(link.max_downloads_per_key(), None);
        assert!(link
            .update(LinkUpdate {
                profile: Some("dialup".into()),
                ..LinkUpdate::default()
            })
            .is_err());
    }
}
