//! The NATS bus: how services reach NATS (`connect`), the JetStream resources natter owns
//! (`resources`: the streams and the KV buckets; `durable`: the shared pull consumers), and the
//! loops that take messages off it (`serve`). Every service calls the `ensure_*` functions it
//! depends on at startup; they are idempotent, so start order does not matter.

pub mod attachment_quota;
mod connect;
pub mod consumer_metrics;
mod durable;
mod history_floor;
pub mod leaders;
mod messages;
pub mod partition_tasks;
mod pulled;
mod resources;
mod serve;
pub mod shares;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use connect::{connect, permission_violations, round_trip};
pub use durable::{Durable, HANDOVER_DELAY, ensure_durable, ensure_holding_durable, release_pin};
pub use history_floor::HistoryFloor;
pub use messages::{
    MessageStreams, ensure_messages_streams, epoch, first_from, head_of, heads, messages_streams,
    stream_epoch, stream_partitions,
};
pub use pulled::Pulled;
pub use resources::{ATTACHMENT_QUOTA, Attachments, ensure_attachments};
pub use resources::{
    BucketSpec, GATEWAYS, GROUPS, PRESENCE, PUSH_TOKENS, PresenceBuckets, SESSIONS, ensure_bucket,
    ensure_groups_bucket, ensure_offline_stream, ensure_presence_buckets,
    ensure_push_tokens_bucket, offline_stream,
};
pub use serve::{answer_requests, answer_shard, next_json, next_or_stop, reply, serve_queue};

/// How services reach NATS and how the shared JetStream resources are shaped.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BusConfig {
    /// NATS server URL(s), comma separated. Empty in the all-in-one means "start one".
    pub nats_url: String,
    /// Replicas for streams and buckets: 1 for a single node, 3 for a cluster.
    pub replicas: usize,
    /// Partitions of the message plane (1 to 64): each conversation belongs to one, and the
    /// history writers (one durable consumer per partition) share them among the running
    /// instances. Fixed when the messages stream is created: every service refuses to start
    /// against a stream made with another count (see docs/operations.md, "Partitions").
    pub partitions: u32,
    /// Window in which a resend with the same client message id is recognised, in
    /// milliseconds.
    pub dedup_window_ms: u64,
    /// How long the messages stream keeps messages, in milliseconds (the history store keeps
    /// them for good).
    pub messages_max_age_ms: u64,
    /// The most bytes the messages streams keep together (each partition's stream an equal
    /// share); past it the oldest messages are dropped
    /// (as past `messages_max_age_ms`): devices further behind get `synced` with
    /// `gap: "trimmed"` and refetch from history, which keeps everything. 1 GiB by default:
    /// JetStream reserves it in its store when the stream is created (a server without that
    /// much room refuses the stream), so a deployment raises it to the store it has.
    pub messages_max_bytes: i64,
    /// The most bytes the attachments store keeps in all (-1: no limit but the per-user
    /// quota, `gateway.attachment_quota_bytes`). Like `messages_max_bytes`, JetStream reserves
    /// a set limit in its store when the store is created.
    pub attachments_max_bytes: i64,
    /// The seed file of this service's NATS identity (an nkey user, as `natter nats-auth`
    /// writes them: `gateway.nk`, `chat.nk`, …). Unset: connect without credentials, which a
    /// natter NATS refuses (see docs/security.md).
    pub nkey_file: Option<PathBuf>,
    /// The CA certificate that signed the NATS servers' certificates (`ca.pem` of
    /// `natter nats-auth`). Set, the connection must be TLS and the server must present a
    /// certificate from this CA.
    pub tls_ca_file: Option<PathBuf>,
}

impl BusConfig {
    /// The environment that points a natter binary at this bus: URL and credentials, as
    /// `NATTER_BUS__*` variables (what tests and benchmarks set on the processes they start).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("NATTER_BUS__NATS_URL", self.nats_url.clone())];
        if let Some(seed) = &self.nkey_file {
            env.push(("NATTER_BUS__NKEY_FILE", seed.display().to_string()));
        }
        if let Some(ca) = &self.tls_ca_file {
            env.push(("NATTER_BUS__TLS_CA_FILE", ca.display().to_string()));
        }
        env
    }
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            nats_url: String::new(),
            replicas: 1,
            partitions: 1,
            dedup_window_ms: 60_000,
            messages_max_age_ms: 7 * 24 * 3600 * 1000,
            messages_max_bytes: 1024 * 1024 * 1024,
            attachments_max_bytes: -1,
            nkey_file: None,
            tls_ca_file: None,
        }
    }
}
