//! The gateway's metrics.

use plumbing::{Counter, CounterVec, Gauge, Histogram, Metrics};

#[derive(Clone)]
pub struct GatewayMetrics {
    pub registry: Metrics,
    pub connections: Gauge,
    pub users_online: Gauge,
    pub connections_total: Counter,
    pub handshakes_refused: Counter,
    pub frames_in: Counter,
    pub frames_out: Counter,
    pub deliveries: Counter,
    pub bad_frames: Counter,
    pub slow_consumers: Counter,
    pub heartbeat_timeouts: Counter,
    pub typing_dropped: Counter,
    pub receipts_coalesced: Counter,
    pub sends_rate_limited: Counter,
    pub reregistrations: Counter,
    pub send_latency: Histogram,
    pub errors: CounterVec,
    pub delivery_latency: Histogram,
    pub replay_time: Histogram,
    pub undelivered: Counter,
    pub attachment_bytes_in: Counter,
    pub attachment_bytes_out: Counter,
    pub replays: Counter,
    pub replays_direct: Counter,
    pub replays_with_consumers: Counter,
    pub replay_gaps: Counter,
    pub replayed: Counter,
    pub delivery_gaps: Counter,
    pub progress_notes: Counter,
    pub jetstream_api_requests: Counter,
    pub replays_shared: Counter,
    pub gap_reads: Counter,
    pub replays_waiting: Gauge,
    pub replays_deferred: Counter,
    pub lease_writes: Histogram,
    pub lease_write_failures: Counter,
}

impl GatewayMetrics {
    pub fn new() -> Self {
        let m = Metrics::default();
        Self {
            connections: m.gauge("natter_gateway_connections", "open WebSocket sessions"),
            users_online: m.gauge("natter_gateway_users_online", "users with a session here"),
            connections_total: m.counter("natter_gateway_connections_total", "sessions opened"),
            handshakes_refused: m.counter(
                "natter_gateway_handshakes_refused_total",
                "upgrades refused (auth, headers, limits)",
            ),
            frames_in: m.counter("natter_gateway_frames_in_total", "client frames received"),
            frames_out: m.counter("natter_gateway_frames_out_total", "frames sent to clients"),
            deliveries: m.counter(
                "natter_gateway_deliveries_total",
                "delivery batches received from NATS",
            ),
            bad_frames: m.counter("natter_gateway_bad_frames_total", "client frames refused"),
            slow_consumers: m.counter(
                "natter_gateway_slow_consumers_total",
                "sessions closed because their outbound queue filled",
            ),
            heartbeat_timeouts: m.counter(
                "natter_gateway_heartbeat_timeouts_total",
                "sessions closed for silence",
            ),
            typing_dropped: m.counter(
                "natter_gateway_typing_dropped_total",
                "typing indicators over the rate limit, dropped",
            ),
            sends_rate_limited: m.counter(
                "natter_gateway_sends_rate_limited_total",
                "sends refused with 1501: the user was over send_messages_per_sec or send_bytes_per_sec",
            ),
            receipts_coalesced: m.counter(
                "natter_gateway_receipts_coalesced_total",
                "acks and reads not forwarded because they moved no marker (repeats, older ones)",
            ),
            reregistrations: m.counter(
                "natter_gateway_reregistrations_total",
                "times the lease and every session were written again after NATS came back",
            ),
            send_latency: m.histogram(
                "natter_gateway_send_seconds",
                "time from a client send to its sent answer",
            ),
            errors: m.counter_vec(
                "natter_gateway_errors_total",
                "error frames sent to clients, by error code",
                "code",
            ),
            delivery_latency: m.histogram(
                "natter_gateway_delivery_seconds",
                "time from a message's acceptance to its arrival in its recipients' outboxes on this gateway (live deliveries)",
            ),
            replay_time: m.histogram(
                "natter_gateway_replay_seconds",
                "time from a replay's start (a sync, a resume, a resync) to its synced",
            ),
            undelivered: m.counter(
                "natter_gateway_undelivered_total",
                "messages for connections that had just closed, reported to chat",
            ),
            attachment_bytes_in: m.counter(
                "natter_gateway_attachment_bytes_in_total",
                "bytes of attachments uploaded and stored",
            ),
            attachment_bytes_out: m.counter(
                "natter_gateway_attachment_bytes_out_total",
                "bytes of attachments downloads were started for",
            ),
            replays: m.counter("natter_gateway_replays_total", "sync requests answered"),
            replays_direct: m.counter(
                "natter_gateway_replays_direct_total",
                "replays that read the changed conversations with direct gets (no consumer)",
            ),
            replays_with_consumers: m.counter(
                "natter_gateway_replays_with_consumers_total",
                "replays that read with consumers because history was behind or unreachable",
            ),
            replay_gaps: m.counter(
                "natter_gateway_replay_gaps_total",
                "sync requests answered recovered: false",
            ),
            replayed: m.counter(
                "natter_gateway_replayed_messages_total",
                "messages sent by sync replays",
            ),
            delivery_gaps: m.counter(
                "natter_gateway_delivery_gaps_total",
                "lost deliveries noticed (a gap in the router's numbering, or a progress note ahead of the last delivery); sessions replayed",
            ),
            progress_notes: m.counter(
                "natter_gateway_progress_notes_total",
                "progress notes received from the partitions' routers",
            ),
            jetstream_api_requests: m.counter(
                "natter_gateway_jetstream_api_requests_total",
                "JetStream API requests made by replays (stream info, consumer creation and deletion; not direct gets or fetches)",
            ),
            replays_shared: m.counter(
                "natter_gateway_replays_shared_total",
                "replays after a NATS outage served from the gateway's one shared read of the gap",
            ),
            gap_reads: m.counter(
                "natter_gateway_gap_reads_total",
                "reads of what the gateway may have missed during a NATS outage, shared by its sessions",
            ),
            replays_waiting: m.gauge(
                "natter_gateway_replays_waiting",
                "replay steps waiting for one of the sync_concurrency slots",
            ),
            replays_deferred: m.counter(
                "natter_gateway_replays_deferred_total",
                "connections with a cursor refused with 503 and Retry-After because the replay queue would keep them waiting over sync_wait_max_ms",
            ),
            lease_writes: m.histogram(
                "natter_gateway_lease_write_seconds",
                "time to write this gateway's liveness lease (it lapses after lease_ttl_ms without one)",
            ),
            lease_write_failures: m.counter(
                "natter_gateway_lease_write_failures_total",
                "lease writes that failed or timed out (retried within a second)",
            ),
            registry: m,
        }
    }
}
