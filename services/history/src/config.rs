//! The history service's configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cache::CacheConfig;
use crate::store::scylla::ScyllaConfig;

/// Which store holds history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// redb on local disk: one machine.
    Embedded,
    /// ScyllaDB (or Cassandra) through `scylla`.
    Scylla,
}

/// Configuration of one history service instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryConfig {
    pub store: StoreKind,
    /// The cluster, when `store = "scylla"`.
    pub scylla: ScyllaConfig,
    /// Where the embedded store keeps its file.
    pub embedded_path: PathBuf,
    pub cache: CacheConfig,
    /// Messages written to the store in one batch, at most.
    pub writer_batch: usize,
    /// How long a message handed to the writer may stay unacknowledged before it is
    /// delivered again (to this or another instance).
    pub writer_ack_wait_ms: u64,
    /// History queries answered at once by this instance.
    pub max_concurrent_queries: usize,
    /// Groups with at most this many members get receipts per person: senders are told who
    /// received and read their messages (`delivered`/`seen` notifications), and `receipts`
    /// answers name them. Larger groups get counts only.
    pub receipt_lists_max: usize,
    /// The most bytes of messages (as JSON) one `history` page carries; a page that would
    /// be larger ends early with `more: true`, so no conversation can make its own history
    /// unreadable (NATS refuses payloads over `max_payload`, 1 MiB by default). At least one
    /// message is always returned.
    pub page_max_bytes: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            store: StoreKind::Embedded,
            scylla: ScyllaConfig::default(),
            embedded_path: PathBuf::from(".data/history.redb"),
            cache: CacheConfig::default(),
            writer_batch: 256,
            writer_ack_wait_ms: 30_000,
            max_concurrent_queries: 1024,
            receipt_lists_max: 256,
            page_max_bytes: 512 * 1024,
        }
    }
}
