//! Fault injection: failures a client must survive, off by default, set by
//! flags at start-up and changed at run time through `/_emulator/faults`.

use parking_lot::Mutex;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// The current fault settings. Every member is optional in a POST so a test
/// can change one setting without restating the others.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultSettings {
    /// Fraction (0.0–1.0) of API calls answered with a 5xx.
    pub error_rate: f64,
    /// Fraction (0.0–1.0) of direct downloads (GET/HEAD on a link, ranged
    /// or not) answered with a 5xx instead of the bytes.
    pub download_error_rate: f64,
    /// The next N direct downloads are answered with a 5xx; counts down.
    pub download_error_burst: u64,
    /// The next N API calls get the flood (rate-limit) answer; counts down.
    pub rate_limit_burst: u64,
    /// Added before answering every API call, upload and download.
    pub latency_ms: u64,
    /// Direct-download bodies are cut (connection dropped) after N bytes.
    pub cut_body_after: Option<u64>,
    /// Download links are handed out already expired.
    pub expire_links: bool,
}

/// A partial update: members left out keep their value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultUpdate {
    pub error_rate: Option<f64>,
    pub download_error_rate: Option<f64>,
    pub download_error_burst: Option<u64>,
    pub rate_limit_burst: Option<u64>,
    pub latency_ms: Option<u64>,
    #[serde(default, deserialize_with = "explicit_option")]
    pub cut_body_after: Option<Option<u64>>,
    pub expire_links: Option<bool>,
}

/// Tells "absent" (keep) from `null` (clear) for `cut_body_after`.
fn explicit_option<'de, D>(deserializer: D) -> Result<Option<Option<u64>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Some(Option::deserialize(deserializer)?))
}

/// What an API call should suffer before being handled.
#[derive(Debug, PartialEq, Eq)]
pub enum InjectedFailure {
    ServerError(u16),
    RateLimited,
}

#[derive(Default)]
pub struct Faults {
    settings: Mutex<FaultSettings>,
}

impl Faults {
    pub fn new(settings: FaultSettings) -> Faults {
        Faults {
            settings: Mutex::new(settings),
        }
    }

    pub fn get(&self) -> FaultSettings {
        self.settings.lock().clone()
    }

    pub fn update(&self, update: FaultUpdate) -> Result<FaultSettings, String> {
        for (name, rate) in [
            ("error_rate", update.error_rate),
            ("download_error_rate", update.download_error_rate),
        ] {
            if let Some(rate) = rate {
                if !(0.0..=1.0).contains(&rate) {
                    return Err(format!("{name} must be within 0.0..=1.0, got {rate}"));
                }
            }
        }
        let mut settings = self.settings.lock();
        if let Some(v) = update.error_rate {
            settings.error_rate = v;
        }
        if let Some(v) = update.download_error_rate {
            settings.download_error_rate = v;
        }
        if let Some(v) = update.download_error_burst {
            settings.download_error_burst = v;
        }
        if let Some(v) = update.rate_limit_burst {
            settings.rate_limit_burst = v;
        }
        if let Some(v) = update.latency_ms {
            settings.latency_ms = v;
        }
        if let Some(v) = update.cut_body_after {
            settings.cut_body_after = v;
        }
        if let Some(v) = update.expire_links {
            settings.expire_links = v;
        }
        Ok(settings.clone())
    }

    pub fn latency(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.settings.lock().latency_ms)
    }

    pub async fn apply_latency(&self) {
        let latency = self.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }

    /// Decides whether this API call fails by injection (and consumes one
    /// unit of a rate-limit burst if so).
    pub fn draw_api_failure(&self) -> Option<InjectedFailure> {
        let mut settings = self.settings.lock();
        if settings.rate_limit_burst > 0 {
            settings.rate_limit_burst -= 1;
            return Some(InjectedFailure::RateLimited);
        }
        draw_server_error(settings.error_rate).map(InjectedFailure::ServerError)
    }

    /// The 5xx status this direct download fails with by injection, if any.
    pub fn draw_download_error(&self) -> Option<u16> {
        let mut settings = self.settings.lock();
        if settings.download_error_burst > 0 {
            settings.download_error_burst -= 1;
            return Some(503);
        }
        draw_server_error(settings.download_error_rate)
    }

    pub fn cut_body_after(&self) -> Option<u64> {
        self.settings.lock().cut_body_after
    }

    pub fn expire_links(&self) -> bool {
        self.settings.lock().expire_links
    }
}

/// With probability `rate`, one of the statuses nginx answers when the
/// service behind it fails.
fn draw_server_error(rate: f64) -> Option<u16> {
    if rate <= 0.0 {
        return None;
    }
    let mut rng = rand::thread_rng();
    if !rng.gen_bool(rate.min(1.0)) {
        return None;
    }
    const STATUSES: [u16; 4] = [500, 502, 503, 504];
    Some(STATUSES[rng.gen_range(0..STATUSES.len())])
}

/// The HTML page nginx (in front of the real service) sends with a 5xx.
pub fn nginx_error_page(status: u16) -> String {
    let reason = match status {
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Temporarily Unavailable",
        504 => "Gateway Time-out",
        _ => "Error",
    };
    format!(
        "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n\
         <center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n\
         </body>\r\n</html>\r\n"
    )
}
