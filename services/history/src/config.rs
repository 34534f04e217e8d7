//! The history service's configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cache::CacheConfig;

/// Configuration of one history service instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryConfig {
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
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            embedded_path: PathBuf::from(".data/history.redb"),
            cache: CacheConfig::default(),
            writer_batch: 256,
            writer_ack_wait_ms: 30_000,
            max_concurrent_queries: 1024,
        }
    }
}
