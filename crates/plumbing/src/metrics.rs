//! A small Prometheus registry: lock-free counters, gauges and fixed-bucket histograms,
//! rendered in the text exposition format. Names are registered once at startup.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

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

enum Metric {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
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
            metrics.render(),
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
}
