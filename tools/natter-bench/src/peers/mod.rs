//! Peers: the servers teams run instead of natter, started by the bench on this machine and
//! given the same workloads in the same invocation. Each peer module starts its server from
//! a temporary directory with its documented production settings (see docs/benchmarks.md,
//! "How the peers are configured"), drives it with a load client speaking its own protocol,
//! and stops it when dropped.

pub mod centrifugo;
pub mod ejabberd;

/// One measured run of a latency workload.
#[derive(Debug, Default)]
pub struct Run {
    /// Messages the server accepted (acknowledged where the protocol acknowledges, else
    /// written to the socket).
    pub sent: u64,
    /// Messages that arrived, counted once per message (for fan-out: once all online
    /// members have it).
    pub received: u64,
    /// Microseconds from just before the send to the arrival (for fan-out: at the last
    /// online member), one per received message.
    pub latencies_us: Vec<u64>,
}
