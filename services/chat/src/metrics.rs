//! The chat service's metrics.

use plumbing::{Counter, CounterVec, Gauge, Histogram, Metrics};

#[derive(Clone)]
pub struct ChatMetrics {
    pub registry: Metrics,
    pub sends: Counter,
    pub sends_rejected: CounterVec,
    pub route_lag: Histogram,
    pub presence_sweep: Histogram,
    pub presence_swept_at: Gauge,
    pub duplicates: Counter,
    pub persist_latency: Histogram,
    pub routed: Counter,
    pub routed_from_stream: Counter,
    pub routing_partitions: Gauge,
    pub gateway_publishes: Counter,
    pub message_publishes: Counter,
    pub group_operations: Counter,
    pub receipts: Counter,
    pub offline_recipients: Counter,
    pub undelivered: Counter,
    pub presence_changes: Counter,
    pub sessions_held: Gauge,
    pub session_shards_held: Gauge,
    pub memberships_held: Gauge,
    pub session_queries: Counter,
}

impl Default for ChatMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ChatMetrics {
    pub fn new() -> Self {
        let m = Metrics::default();
        Self {
            sends: m.counter("natter_chat_sends_total", "messages accepted and persisted"),
            sends_rejected: m.counter_vec(
                "natter_chat_sends_rejected_total",
                "sends refused, by error code",
                "code",
            ),
            route_lag: m.histogram(
                "natter_chat_route_lag_seconds",
                "time from a message's acceptance to its routing to the gateways",
            ),
            presence_sweep: m.histogram(
                "natter_chat_presence_sweep_seconds",
                "time one pass of the presence sweeper took",
            ),
            presence_swept_at: m.gauge(
                "natter_chat_presence_swept_timestamp_seconds",
                "when the presence sweeper last finished a pass (Unix time)",
            ),
            duplicates: m.counter(
                "natter_chat_duplicates_total",
                "resends answered with the original message id",
            ),
            persist_latency: m.histogram(
                "natter_chat_persist_seconds",
                "time for JetStream to acknowledge a message",
            ),
            routed: m.counter(
                "natter_chat_routed_total",
                "messages routed from the stream",
            ),
            routing_partitions: m.gauge(
                "natter_chat_routing_partitions",
                "partitions this instance routes now",
            ),
            routed_from_stream: m.counter(
                "natter_chat_routed_from_stream_total",
                "messages the router's consumer delivered and lost on the way, read from the \
                 stream and routed in order",
            ),
            gateway_publishes: m.counter(
                "natter_chat_gateway_publishes_total",
                "per-gateway delivery publishes (one per gateway per event)",
            ),
            message_publishes: m.counter(
                "natter_chat_message_publishes_total",
                "per-gateway publishes of routed messages (one per gateway per message)",
            ),
            group_operations: m.counter(
                "natter_chat_group_operations_total",
                "group operations that changed a group",
            ),
            receipts: m.counter("natter_chat_receipts_total", "receipts routed to senders"),
            offline_recipients: m.counter(
                "natter_chat_offline_recipients_total",
                "messages whose recipient had no online device",
            ),
            undelivered: m.counter(
                "natter_chat_undelivered_total",
                "deliveries a gateway reported as undeliverable (connection gone)",
            ),
            sessions_held: m.gauge(
                "natter_chat_sessions_held",
                "sessions in the session shards this instance holds (at the last sweep)",
            ),
            session_shards_held: m.gauge(
                "natter_chat_session_shards_held",
                "session shards this instance holds",
            ),
            memberships_held: m.gauge(
                "natter_chat_group_memberships_held",
                "group memberships in the shards this instance holds (at the last sweep)",
            ),
            session_queries: m.counter(
                "natter_chat_session_queries_total",
                "lookups of sessions asked of the instance holding another shard",
            ),
            presence_changes: m.counter(
                "natter_chat_presence_changes_total",
                "users that went online or offline",
            ),
            registry: m,
        }
    }
}
