//! What every part of one gateway shares: its configuration, its NATS client, its sessions
//! (`Local`), presence, replays and watchers, and the shutdown signal. Built once by
//! `server::Gateway::start`; the parts that need only a piece of it take that piece
//! (`Local` for deliveries, the push-token bucket for registrations).

use std::sync::{Arc, Mutex};

use protocol::{ConnId, GatewayId};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Verifier;
use crate::config::GatewayConfig;
use crate::local::Local;
use crate::metrics::GatewayMetrics;
use crate::origins::Origins;
use crate::presence::Presence;
use crate::replay::Replayer;
use crate::watchers::Watchers;

/// State shared by every session of this gateway.
pub struct GatewayState {
    pub config: GatewayConfig,
    pub gateway: GatewayId,
    pub nats: async_nats::Client,
    pub verifier: Verifier,
    /// Browser origins allowed to open a WebSocket.
    pub origins: Origins,
    /// The sessions here, and delivery to them.
    pub local: Arc<Local>,
    pub presence: Presence,
    /// Devices' push tokens (`push_tokens.rs`), read by the notifier.
    pub push_tokens: async_nats::jetstream::kv::Store,
    /// The attachments object store and the users' quotas (`attachments.rs`).
    pub attachments: plumbing::bus::Attachments,
    pub replayer: Replayer,
    pub watchers: Arc<Watchers>,
    pub metrics: GatewayMetrics,
    pub shutdown: CancellationToken,
    /// Every session task, so shutdown can wait for them.
    pub sessions: TaskTracker,
    /// Makes connection ids; see [`GatewayState::next_conn_id`].
    pub conn_ids: Mutex<ulid::Generator>,
    /// Other registries rendered at `/metrics` (the chat service's, in the all-in-one).
    pub extra_metrics: Mutex<Vec<plumbing::Metrics>>,
    /// The NATS client's connect count as `reregister` last saw it (checked every 100 ms):
    /// a send waiting for its answer asks again when it changes.
    pub reconnected: tokio::sync::watch::Sender<u64>,
}

impl GatewayState {
    /// A new connection id, greater than the boot id and every id before it.
    pub fn next_conn_id(&self) -> ConnId {
        let mut g = self.conn_ids.lock().unwrap();
        // The monotonic generator only fails after 2^80 ids in one millisecond.
        ConnId(g.generate().unwrap_or_else(|_| ulid::Ulid::new()))
    }
}
