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

/// A peer chosen with `--peers`.
pub enum Peer {
    Centrifugo(centrifugo::Centrifugo),
    Ejabberd(ejabberd::Ejabberd),
}

/// The peers' names, as `--peers` takes them.
pub const NAMES: [&str; 2] = ["centrifugo", "ejabberd"];

impl Peer {
    /// Starts a fresh instance of the named peer.
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        let started = match name {
            "centrifugo" => centrifugo::Centrifugo::start().await.map(Peer::Centrifugo),
            "ejabberd" => ejabberd::Ejabberd::start().await.map(Peer::Ejabberd),
            other => anyhow::bail!("unknown peer {other}: the peers are {}", NAMES.join(", ")),
        };
        started.map_err(|e| {
            e.context(format!(
                "could not start {name} (install the peers with scripts/install-deps bench, or leave it out with --peers)"
            ))
        })
    }

    /// Starts each named peer.
    pub async fn start_all(names: &[String]) -> anyhow::Result<Vec<Self>> {
        let mut peers = Vec::new();
        for name in names {
            peers.push(Self::start(name).await?);
        }
        Ok(peers)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Peer::Centrifugo(_) => "centrifugo",
            Peer::Ejabberd(_) => "ejabberd",
        }
    }

    pub async fn idle(&self, counts: &[usize]) -> anyhow::Result<Vec<(usize, f64)>> {
        match self {
            Peer::Centrifugo(p) => p.idle(counts).await,
            Peer::Ejabberd(p) => p.idle(counts).await,
        }
    }

    pub async fn direct(
        &self,
        epoch: std::time::Instant,
        rate: u64,
        seconds: u64,
        pairs: usize,
    ) -> anyhow::Result<Run> {
        match self {
            Peer::Centrifugo(p) => p.direct(epoch, rate, seconds, pairs).await,
            Peer::Ejabberd(p) => p.direct(epoch, rate, seconds, pairs).await,
        }
    }

    pub async fn group(
        &self,
        epoch: std::time::Instant,
        rate: u64,
        seconds: u64,
        online: usize,
    ) -> anyhow::Result<Run> {
        match self {
            Peer::Centrifugo(p) => p.group(epoch, rate, seconds, online).await,
            Peer::Ejabberd(p) => p.group(epoch, rate, seconds, online).await,
        }
    }

    pub async fn history(&self, reads: usize) -> anyhow::Result<Vec<u64>> {
        match self {
            Peer::Centrifugo(p) => p.history(reads).await,
            Peer::Ejabberd(p) => p.history(reads).await,
        }
    }

    pub async fn storm(
        &self,
        clients: usize,
        per_client: usize,
    ) -> anyhow::Result<std::time::Duration> {
        match self {
            Peer::Centrifugo(p) => p.storm(clients, per_client).await,
            Peer::Ejabberd(p) => p.storm(clients, per_client).await,
        }
    }
}
