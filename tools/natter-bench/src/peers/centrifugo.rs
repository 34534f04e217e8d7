//! Centrifugo as a peer: not built yet (issue 7).

use std::time::{Duration, Instant};

use super::Run;

/// A running Centrifugo server, stopped when dropped.
pub struct Centrifugo {
    pid: u32,
}

impl Centrifugo {
    /// Starts a fresh server with its own temporary state.
    pub async fn start() -> anyhow::Result<Self> {
        anyhow::bail!("the centrifugo peer is not built yet")
    }

    /// The process whose resident memory the idle scenario measures.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Opens idle authenticated connections up to each count in turn (cumulative, after a
    /// warm-up of 200) and returns (connections, KiB of server RSS growth per connection).
    pub async fn idle(&self, _counts: &[usize]) -> anyhow::Result<Vec<(usize, f64)>> {
        anyhow::bail!("not built yet")
    }

    /// Persisted 1:1 messages: `pairs` senders to `pairs` receivers at `rate` messages
    /// per second in total for `seconds`.
    pub async fn direct(
        &self,
        _epoch: Instant,
        _rate: u64,
        _seconds: u64,
        _pairs: usize,
    ) -> anyhow::Result<Run> {
        anyhow::bail!("not built yet")
    }

    /// Group fan-out: one of `online` members sends `rate` messages per second for
    /// `seconds`; each latency is to the last of the other online members.
    pub async fn group(
        &self,
        _epoch: Instant,
        _rate: u64,
        _seconds: u64,
        _online: usize,
    ) -> anyhow::Result<Run> {
        anyhow::bail!("not built yet")
    }

    /// `reads` sequential reads of the last 50 messages of a conversation, in microseconds.
    pub async fn history(&self, _reads: usize) -> anyhow::Result<Vec<u64>> {
        anyhow::bail!("not built yet")
    }

    /// `clients` clients each with `per_client` messages waiting reconnect at once; the
    /// time until all have received them.
    pub async fn storm(&self, _clients: usize, _per_client: usize) -> anyhow::Result<Duration> {
        anyhow::bail!("not built yet")
    }
}
