//! `GET /metrics`: the same numbers as `vfs/stats` in Prometheus' text
//! exposition format (version 0.0.4): a `# HELP` and a `# TYPE` line per
//! metric, counters named `*_total`.

use std::fmt::Write;

use super::{MountInfo, QueueItem, QueueState, RequestKind, StatsSnapshot};

/// The content type Prometheus expects for this format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders the metrics of one mount.
pub fn render_metrics(mount: &MountInfo, stats: &StatsSnapshot, queue: &[QueueItem]) -> String {
    let mut out = Metrics(String::new());
    let c = &stats.counters;

    let labels = [
        ("remote", mount.remote.as_str()),
        ("service", mount.service.as_str()),
    ];
    out.family(
        "filehostfs_mount_info",
        "gauge",
        "The mounted remote (always 1).",
    );
    out.sample("filehostfs_mount_info", &labels, 1.0);

    let counters: [(&str, &str, f64); 9] = [
        (
            "filehostfs_remote_read_bytes_total",
            "File bytes received from the remote service.",
            c.remote_read_bytes as f64,
        ),
        (
            "filehostfs_cache_read_bytes_total",
            "File bytes served from the local cache.",
            c.cache_read_bytes as f64,
        ),
        (
            "filehostfs_upload_bytes_total",
            "File bytes sent to the remote service.",
            c.upload_bytes as f64,
        ),
        (
            "filehostfs_request_errors_total",
            "Requests to the remote service that failed.",
            c.request_errors as f64,
        ),
        (
            "filehostfs_cache_hits_total",
            "Cache lookups answered locally.",
            c.cache_hits as f64,
        ),
        (
            "filehostfs_cache_misses_total",
            "Cache lookups that went to the remote service.",
            c.cache_misses as f64,
        ),
        (
            "filehostfs_pacer_waits_total",
            "Requests the pacer held back to stay within the service's limits.",
            c.pacer_waits as f64,
        ),
        (
            "filehostfs_pacer_wait_seconds_total",
            "Time requests spent waiting for the pacer.",
            c.pacer_wait_seconds,
        ),
        (
            "filehostfs_uptime_seconds_total",
            "Seconds since the mount started.",
            c.uptime_seconds as f64,
        ),
    ];
    for (name, help, value) in counters {
        out.family(name, "counter", help);
        out.sample(name, &[], value);
    }

    out.family(
        "filehostfs_requests_total",
        "counter",
        "Requests sent to the remote service, by kind.",
    );
    for kind in RequestKind::ALL {
        let count = c.requests.get(&kind).copied().unwrap_or(0);
        out.sample(
            "filehostfs_requests_total",
            &[("kind", kind.name())],
            count as f64,
        );
    }

    let mut gauges: Vec<(&str, &str, f64)> = vec![
        (
            "filehostfs_cache_used_bytes",
            "Bytes of file data in the local cache.",
            stats.cache.used_bytes as f64,
        ),
        (
            "filehostfs_cache_files",
            "Files with data in the local cache.",
            stats.cache.files as f64,
        ),
        (
            "filehostfs_pacer_requests_last_hour",
            "Requests sent in the last hour.",
            stats.pacer.requests_last_hour as f64,
        ),
        (
            "filehostfs_pacer_waiting_requests",
            "Requests waiting for the pacer now.",
            stats.pacer.waiting as f64,
        ),
    ];
    if let Some(limit) = stats.cache.limit_bytes {
        gauges.push((
            "filehostfs_cache_limit_bytes",
            "The local cache's configured bound.",
            limit as f64,
        ));
    }
    if let Some(left) = stats.pacer.budget_left {
        gauges.push((
            "filehostfs_pacer_budget_left",
            "Requests left in the service's current window.",
            left as f64,
        ));
    }
    if let Some(space) = mount.space {
        gauges.push((
            "filehostfs_space_used_bytes",
            "Bytes the account uses.",
            space.used_bytes as f64,
        ));
        if let Some(free) = space.free_bytes() {
            gauges.push((
                "filehostfs_space_free_bytes",
                "Bytes the account has left.",
                free as f64,
            ));
        }
    }
    for (name, help, value) in gauges {
        out.family(name, "gauge", help);
        out.sample(name, &[], value);
    }

    out.family(
        "filehostfs_upload_queue_items",
        "gauge",
        "Files in the upload queue, by state.",
    );
    for state in QueueState::ALL {
        let count = queue.iter().filter(|item| item.state == state).count();
        out.sample(
            "filehostfs_upload_queue_items",
            &[("state", state.name())],
            count as f64,
        );
    }
    out.0
}

struct Metrics(String);

impl Metrics {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let rendered: Vec<String> = labels
                .iter()
                .map(|(key, value)| format!("{key}=\"{}\"", escape_label(value)))
                .collect();
            let _ = write!(self.0, "{{{}}}", rendered.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
