//! Prometheus text metrics, kept in atomics: cheap to update from any task,
//! rendered on `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the API latency histogram buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A histogram with fixed buckets.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        writeln!(out, "# HELP {name} {help}").ok();
        writeln!(out, "# TYPE {name} histogram").ok();
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            let v = self.buckets[i].load(Ordering::Relaxed);
            writeln!(out, "{name}_bucket{{le=\"{le}\"}} {v}").ok();
        }
        let count = self.count.load(Ordering::Relaxed);
        writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}").ok();
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        writeln!(out, "{name}_sum {sum}").ok();
        writeln!(out, "{name}_count {count}").ok();
    }
}

/// The value of an unlabelled metric.
enum Sample {
    /// A count since start.
    Counter(u64),
    /// A value now.
    Gauge(f64),
}

impl Sample {
    /// Writes the metric `name` with its `help` and this sample.
    fn render(&self, out: &mut String, name: &str, help: &str) {
        writeln!(out, "# HELP {name} {help}").ok();
        match self {
            Sample::Counter(v) => {
                writeln!(out, "# TYPE {name} counter").ok();
                writeln!(out, "{name} {v}").ok();
            }
            Sample::Gauge(v) => {
                writeln!(out, "# TYPE {name} gauge").ok();
                writeln!(out, "{name} {v}").ok();
            }
        }
    }
}

/// Every metric the daemon exports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Results taken off the queue by the processor.
    pub results_processed: AtomicU64,
    /// Applied check state changes this node published (processor results,
    /// operator actions, stale marks).
    pub transitions: AtomicU64,
    /// Executes taken off the queue by this node's workers.
    pub executes_taken: AtomicU64,
    /// Results this node published (workers' results and stale marks).
    pub results_published: AtomicU64,
    /// Time from the scheduler sending an execute to a worker of this node
    /// taking it, last observed (µs).
    pub scheduler_lag_micros: AtomicU64,
    /// Maximum of the above since start (µs).
    pub scheduler_lag_max_micros: AtomicU64,
    /// Executes this node's scheduler dispatched (execute-now included).
    pub scheduler_dispatched: AtomicU64,
    /// Worst lateness after the due time in this node's last dispatch round (µs).
    pub scheduler_lateness_micros: AtomicU64,
    /// Worst lateness after the due time since start (µs).
    pub scheduler_lateness_max_micros: AtomicU64,
    /// Stale marks (synthetic results for checks without a fresh result)
    /// this node's freshness task published.
    pub stale_marked: AtomicU64,
    /// Websocket clients connected now.
    pub ws_clients: AtomicU64,
    /// Messages (updates and replies) sent to websocket clients.
    pub ws_messages_sent: AtomicU64,
    /// Websocket frames sent to clients (each a JSON array of messages).
    pub ws_frames_sent: AtomicU64,
    /// Payload bytes of the websocket frames sent to clients.
    pub ws_bytes_sent: AtomicU64,
    /// Updates folded into a pending update of the same object (slow clients).
    pub ws_coalesced: AtomicU64,
    /// Updates skipped because the client already had a newer version.
    pub ws_stale_skipped: AtomicU64,
    /// Alert updates dropped because a client's alert queue was full.
    pub ws_alerts_dropped: AtomicU64,
    /// Clients disconnected because they fell too far behind.
    pub ws_clients_dropped: AtomicU64,
    /// Updates waiting to be sent, over all clients, now.
    pub ws_pending: AtomicU64,
    /// Largest number of updates ever pending for one client.
    pub ws_pending_max: AtomicU64,
    /// API requests answered.
    api_latency: Histogram,
    /// This node's roles and the peers it heard from (`/healthz`).
    pub health: crate::health::Health,
    /// Webhooks accepted by the test receiver `POST /api/notifications/echo`.
    pub webhook_echo_received: AtomicU64,
    /// The notifier of this node, whose counters `/metrics` shows.
    pub notifier: parking_lot::RwLock<Option<std::sync::Arc<crate::roles::notifier::NotifyShared>>>,
}

impl Metrics {
    /// Records the latency of one API request.
    pub fn observe_api(&self, d: Duration) {
        self.api_latency.observe(d);
    }

    /// Records the lag between scheduling an execute and a worker taking it.
    pub fn observe_scheduler_lag(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.scheduler_lag_micros.store(micros, Ordering::Relaxed);
        self.scheduler_lag_max_micros
            .fetch_max(micros, Ordering::Relaxed);
        self.executes_taken.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let count = |v: &AtomicU64| Sample::Counter(v.load(Ordering::Relaxed));
        let level = |v: &AtomicU64| Sample::Gauge(v.load(Ordering::Relaxed) as f64);
        let secs = |v: &AtomicU64| Sample::Gauge(v.load(Ordering::Relaxed) as f64 / 1e6);
        let samples = [
            (
                "bergamot_results_processed_total",
                "Check results taken by the result processor.",
                count(&self.results_processed),
            ),
            (
                "bergamot_transitions_total",
                "Applied check state changes published by this node.",
                count(&self.transitions),
            ),
            (
                "bergamot_executes_taken_total",
                "Check executions taken by this node's workers.",
                count(&self.executes_taken),
            ),
            (
                "bergamot_results_published_total",
                "Check results this node published (its workers' results and stale marks).",
                count(&self.results_published),
            ),
            (
                "bergamot_scheduler_lag_seconds",
                "Time from scheduling an execution to a worker of this node taking it (last observed).",
                secs(&self.scheduler_lag_micros),
            ),
            (
                "bergamot_scheduler_lag_max_seconds",
                "Largest time from scheduling an execution to a worker of this node taking it, since start.",
                secs(&self.scheduler_lag_max_micros),
            ),
            (
                "bergamot_scheduler_dispatched_total",
                "Check executions this node's scheduler sent (execute-now included).",
                count(&self.scheduler_dispatched),
            ),
            (
                "bergamot_scheduler_lateness_seconds",
                "Worst lateness after the due time in this node's last dispatch round.",
                secs(&self.scheduler_lateness_micros),
            ),
            (
                "bergamot_scheduler_lateness_max_seconds",
                "Worst lateness after the due time in this node's dispatch rounds, since start.",
                secs(&self.scheduler_lateness_max_micros),
            ),
            (
                "bergamot_stale_marked_total",
                "Stale marks (TIMEOUT results for checks without a fresh result) this node published.",
                count(&self.stale_marked),
            ),
            (
                "bergamot_websocket_clients",
                "Websocket clients connected.",
                level(&self.ws_clients),
            ),
            (
                "bergamot_websocket_messages_sent_total",
                "Messages sent to websocket clients.",
                count(&self.ws_messages_sent),
            ),
            (
                "bergamot_websocket_frames_sent_total",
                "Websocket frames sent to clients (each carries one or more messages).",
                count(&self.ws_frames_sent),
            ),
            (
                "bergamot_websocket_bytes_sent_total",
                "Payload bytes of the websocket frames sent to clients.",
                count(&self.ws_bytes_sent),
            ),
            (
                "bergamot_websocket_coalesced_total",
                "Updates folded into a pending update of the same object for a slow client.",
                count(&self.ws_coalesced),
            ),
            (
                "bergamot_websocket_stale_skipped_total",
                "Check updates dropped because a newer version had been dispatched.",
                count(&self.ws_stale_skipped),
            ),
            (
                "bergamot_websocket_alerts_dropped_total",
                "Alert updates dropped from a full client queue.",
                count(&self.ws_alerts_dropped),
            ),
            (
                "bergamot_websocket_clients_dropped_total",
                "Websocket clients disconnected for falling behind.",
                count(&self.ws_clients_dropped),
            ),
            (
                "bergamot_websocket_pending_updates",
                "Updates waiting to be sent, over all clients.",
                level(&self.ws_pending),
            ),
            (
                "bergamot_websocket_pending_updates_max",
                "Largest number of updates ever pending for one client.",
                level(&self.ws_pending_max),
            ),
        ];
        for (name, help, sample) in samples {
            sample.render(&mut out, name, help);
        }
        self.api_latency.render(
            &mut out,
            "bergamot_api_request_duration_seconds",
            "Latency of REST API requests.",
        );
        self.health.render(&mut out);
        count(&self.webhook_echo_received).render(
            &mut out,
            "bergamot_webhook_echo_received_total",
            "Webhooks accepted by the test receiver POST /api/notifications/echo.",
        );
        let notifier = self.notifier.read().clone();
        writeln!(
            out,
            "# HELP bergamot_notifications_total Notification send attempts by channel and outcome (sent, retried, failed, cancelled)."
        ).ok();
        writeln!(out, "# TYPE bergamot_notifications_total counter").ok();
        if let Some(d) = notifier.and_then(|n| n.dispatcher()) {
            for (channel, outcome, n) in d.counters() {
                let channel = channel.replace('\\', "\\\\").replace('"', "\\\"");
                writeln!(
                    out,
                    "bergamot_notifications_total{{channel=\"{channel}\",outcome=\"{}\"}} {n}",
                    outcome.as_str()
                )
                .ok();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.transitions.fetch_add(3, Ordering::Relaxed);
        m.observe_api(Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("bergamot_transitions_total 3\n"));
        assert!(text.contains("bergamot_api_request_duration_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(text.contains("bergamot_api_request_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("bergamot_api_request_duration_seconds_count 1\n"));
    }
}
