//! A small Prometheus registry: lock-free counters, gauges and fixed-bucket histograms,
//! families of them by one label (error code, consumer, role), rendered in the text
//! exposition format. Names are registered once at startup.
//!
//! [`process`] holds what belongs to the process rather than to one service (its NATS
//! connections, JetStream errors): every `/metrics` of a process renders it once.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// A monotonically increasing count.
#[derive(Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Clone, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bucket upper bounds in seconds, for latencies from 100 µs to 10 s.
const BUCKETS_SECONDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A latency histogram with fixed buckets.
#[derive(Clone, Default)]
pub struct Histogram(Arc<HistogramInner>);

#[derive(Default)]
struct HistogramInner {
    buckets: [AtomicU64; BUCKETS_SECONDS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        for (i, bound) in BUCKETS_SECONDS.iter().enumerate() {
            if secs <= *bound {
                self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.0.count.fetch_add(1, Ordering::Relaxed);
        self.0
            .sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Counters by the value of one label (`natter_chat_sends_rejected_total{code="1004"}`).
#[derive(Clone)]
pub struct CounterVec(Family<Counter>);

/// Gauges by the value of one label (`natter_consumer_pending_messages{consumer="…"}`).
#[derive(Clone)]
pub struct GaugeVec(Family<Gauge>);

#[derive(Clone)]
struct Family<T> {
    label: &'static str,
    members: Arc<Mutex<BTreeMap<String, T>>>,
}

impl<T: Clone + Default> Family<T> {
    fn new(label: &'static str) -> Self {
        Self {
            label,
            members: Arc::default(),
        }
    }

    fn with(&self, value: &str) -> T {
        let mut members = self.members.lock().unwrap();
        if let Some(m) = members.get(value) {
            return m.clone();
        }
        members.entry(value.to_string()).or_default().clone()
    }

    fn remove(&self, value: &str) {
        self.members.lock().unwrap().remove(value);
    }

    fn render(&self, out: &mut String, name: &str, value_of: impl Fn(&T) -> String) {
        for (value, m) in self.members.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "{name}{{{}=\"{}\"}} {}",
                self.label,
                escape_label(value),
                value_of(m)
            );
        }
    }
}

impl CounterVec {
    /// The counter of `value` (made at 0 on first use).
    pub fn with(&self, value: &str) -> Counter {
        self.0.with(value)
    }
}

impl GaugeVec {
    /// The gauge of `value` (made at 0 on first use).
    pub fn with(&self, value: &str) -> Gauge {
        self.0.with(value)
    }

    /// Stops exporting `value` (a partition this instance no longer holds).
    pub fn remove(&self, value: &str) {
        self.0.remove(value)
    }
}

/// A label value in the exposition format: backslash, quote and newline escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

enum Metric {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
    CounterVec(CounterVec),
    GaugeVec(GaugeVec),
}

/// One registered metric: name, help text, value.
type Entry = (&'static str, &'static str, Metric);

/// The registry a service renders at `/metrics`.
#[derive(Clone, Default)]
pub struct Metrics {
    entries: Arc<Mutex<Vec<Entry>>>,
}

impl Metrics {
    pub fn counter(&self, name: &'static str, help: &'static str) -> Counter {
        let c = Counter::default();
        self.register(name, help, Metric::Counter(c.clone()));
        c
    }

    pub fn gauge(&self, name: &'static str, help: &'static str) -> Gauge {
        let g = Gauge::default();
        self.register(name, help, Metric::Gauge(g.clone()));
        g
    }

    pub fn histogram(&self, name: &'static str, help: &'static str) -> Histogram {
        let h = Histogram::default();
        self.register(name, help, Metric::Histogram(h.clone()));
        h
    }

    pub fn counter_vec(
        &self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
    ) -> CounterVec {
        let c = CounterVec(Family::new(label));
        self.register(name, help, Metric::CounterVec(c.clone()));
        c
    }

    pub fn gauge_vec(
        &self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
    ) -> GaugeVec {
        let g = GaugeVec(Family::new(label));
        self.register(name, help, Metric::GaugeVec(g.clone()));
        g
    }

    fn register(&self, name: &'static str, help: &'static str, m: Metric) {
        self.entries.lock().unwrap().push((name, help, m));
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, m) in self.entries.lock().unwrap().iter() {
            let _ = writeln!(out, "# HELP {name} {help}");
            match m {
                Metric::Counter(c) => {
                    let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", c.get());
                }
                Metric::Gauge(g) => {
                    let _ = writeln!(out, "# TYPE {name} gauge\n{name} {}", g.get());
                }
                Metric::CounterVec(c) => {
                    let _ = writeln!(out, "# TYPE {name} counter");
                    c.0.render(&mut out, name, |c| c.get().to_string());
                }
                Metric::GaugeVec(g) => {
                    let _ = writeln!(out, "# TYPE {name} gauge");
                    g.0.render(&mut out, name, |g| g.get().to_string());
                }
                Metric::Histogram(h) => {
                    let _ = writeln!(out, "# TYPE {name} histogram");
                    for (i, bound) in BUCKETS_SECONDS.iter().enumerate() {
                        let n = h.0.buckets[i].load(Ordering::Relaxed);
                        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
                    }
                    let count = h.0.count.load(Ordering::Relaxed);
                    let sum = h.0.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
                    let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
                }
            }
        }
        out
    }
}

/// What belongs to the process rather than to one of its services.
pub struct ProcessMetrics {
    pub registry: Metrics,
    /// 1 while the NATS connection of a role is up, 0 while it is down.
    pub nats_connected: GaugeVec,
    /// Times a role's NATS connection was lost.
    pub nats_disconnects: CounterVec,
    /// Messages the server dropped for a role's connection because it read too slowly.
    pub nats_slow_consumers: CounterVec,
    /// JetStream requests that failed, by operation.
    pub jetstream_errors: CounterVec,
    /// Every NATS connection this process made, with its role: their message counts are
    /// rendered as `natter_nats_messages_total` (closed connections included).
    connections: Mutex<Vec<(&'static str, Arc<async_nats::Statistics>)>>,
}

impl ProcessMetrics {
    /// Counts the messages of a new NATS connection of `role` from now on.
    pub fn count_nats_messages(&self, role: &'static str, client: &async_nats::Client) {
        let mut connections = self.connections.lock().unwrap();
        connections.push((role, client.statistics()));
    }

    /// The process's metrics in the text format, with the NATS messages its connections
    /// sent and received by role (what a message costs in NATS operations: publishes,
    /// requests and their answers, acks, pulls, deliveries).
    pub fn render(&self) -> String {
        let mut out = self.registry.render();
        let mut totals: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for (role, stats) in self.connections.lock().unwrap().iter() {
            let total = totals.entry(role).or_default();
            total.0 += stats.in_messages.load(Ordering::Relaxed);
            total.1 += stats.out_messages.load(Ordering::Relaxed);
        }
        if !totals.is_empty() {
            let name = "natter_nats_messages_total";
            let _ = writeln!(
                out,
                "# HELP {name} NATS messages this process's connections of the role received (in) and sent (out)\n# TYPE {name} counter"
            );
            for (role, (received, sent)) in totals {
                let _ = writeln!(out, "{name}{{role=\"{role}\",direction=\"in\"}} {received}");
                let _ = writeln!(out, "{name}{{role=\"{role}\",direction=\"out\"}} {sent}");
            }
        }
        out
    }
}

/// The process's own metrics; every `/metrics` endpoint renders them after its service's.
pub fn process() -> &'static ProcessMetrics {
    static PROCESS: OnceLock<ProcessMetrics> = OnceLock::new();
    PROCESS.get_or_init(|| {
        let m = Metrics::default();
        ProcessMetrics {
            nats_connected: m.gauge_vec(
                "natter_nats_connected",
                "1 while this process's NATS connection of the role is up",
                "role",
            ),
            nats_disconnects: m.counter_vec(
                "natter_nats_disconnects_total",
                "NATS connections of the role lost",
                "role",
            ),
            nats_slow_consumers: m.counter_vec(
                "natter_nats_slow_consumers_total",
                "times the NATS client dropped messages of the role's connection, read too slowly",
                "role",
            ),
            jetstream_errors: m.counter_vec(
                "natter_jetstream_errors_total",
                "JetStream requests that failed (publish, fetch, ack, kv, consumer_info, read)",
                "operation",
            ),
            connections: Default::default(),
            registry: m,
        }
    })
}

/// How long ago `ts_ms` (milliseconds since the Unix epoch, as messages carry it) was; zero
/// for a time ahead of this clock.
pub fn age_of(ts_ms: u64) -> std::time::Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.saturating_sub(std::time::Duration::from_millis(ts_ms))
}

/// Counts a failed JetStream request of `operation` (`publish`, `fetch`, `ack`, `kv`,
/// `consumer_info`, `read`).
pub fn jetstream_error(operation: &str) {
    process().jetstream_errors.with(operation).inc();
}

/// Serves `/metrics` and `/healthz` on `addr` until `shutdown` (for services without a
/// gateway's HTTP listener). `healthy` decides the health answer.
pub async fn serve(
    addr: std::net::SocketAddr,
    metrics: Metrics,
    healthy: impl Fn() -> bool + Clone + Send + Sync + 'static,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    use warp::Filter;
    let render = warp::path!("metrics").map(move || {
        warp::reply::with_header(
            metrics.render() + &process().render(),
            "content-type",
            "text/plain; version=0.0.4",
        )
    });
    let health = warp::path!("healthz").map(move || {
        if healthy() {
            warp::reply::with_status("ok", warp::http::StatusCode::OK)
        } else {
            warp::reply::with_status("unhealthy", warp::http::StatusCode::SERVICE_UNAVAILABLE)
        }
    });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let server = warp::serve(render.or(health))
        .incoming(listener)
        .graceful(async move { shutdown.cancelled().await });
    tokio::spawn(server.run());
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.counter("natter_x_total", "x").add(3);
        m.gauge("natter_y", "y").set(-2);
        m.histogram("natter_z_seconds", "z")
            .observe(std::time::Duration::from_millis(2));
        let text = m.render();
        assert!(text.contains("natter_x_total 3\n"));
        assert!(text.contains("natter_y -2\n"));
        assert!(text.contains("natter_z_seconds_bucket{le=\"0.001\"} 0\n"));
        assert!(text.contains("natter_z_seconds_bucket{le=\"0.0025\"} 1\n"));
        assert!(text.contains("natter_z_seconds_count 1\n"));
    }

    #[test]
    fn renders_families_by_label() {
        let m = Metrics::default();
        let errors = m.counter_vec("natter_e_total", "e", "code");
        errors.with("1004").add(2);
        errors.with("1001").inc();
        let lag = m.gauge_vec("natter_lag", "l", "consumer");
        lag.with("a\"b").set(7);
        lag.with("gone").set(1);
        lag.remove("gone");
        let text = m.render();
        assert!(text.contains("# TYPE natter_e_total counter\n"));
        assert!(
            text.contains("natter_e_total{code=\"1001\"} 1\nnatter_e_total{code=\"1004\"} 2\n")
        );
        assert!(text.contains("natter_lag{consumer=\"a\\\"b\"} 7\n"));
        assert!(!text.contains("gone"));
    }
}
