//! `natter-bench`: measured figures, not hopes. Scenarios:
//!
//! * `idle`: RSS of a separate `natter-gateway` process per idle authenticated connection;
//! * `history`: store write throughput, "last 50" read latency, writer lag;
//! * `direct`: persisted 1:1 delivery latency (p50/p99/p99.9) at increasing offered rates,
//!   next to a raw core-NATS relay measured in the same invocation as the ceiling;
//! * `resync`: one device draining a large backlog from its cursor (next to a bare JetStream
//!   read), and a reconnect storm of many devices resuming at once;
//! * `storm-wide`: reconnect storms of up to 20,000 devices over several gateway processes,
//!   the devices in client processes of their own;
//! * `blip`: a gateway cut off from NATS for 3 s, its devices catching up when it is back;
//! * `group`: fan-out in a group of 500 with 200 online over 3 gateways: latency to the last
//!   member at fixed rates, and deliveries per second at saturation, next to a raw relay;
//! * `flood`: one user's delivery latency alone and while another user floods, with the
//!   default per-user limits on (natter alone: it measures natter's limits);
//! * `rolling`: every component restarted in turn under 1:1 and group traffic: what was lost
//!   or stored twice, and the pause each restart caused each user;
//! * `cost`: CPU time and NATS messages per persisted message, process by process (natter as
//!   separate processes at a fixed rate);
//! * `scale`: routing throughput and CPU per routed message with 1, 2, 3 routing chat
//!   processes on a 3-node cluster (natter alone);
//! * `reply`: send → sent of plain sends, replies, edits and reactions, in turn in one run.
//!
//! `--json` prints one JSON object per measurement, one per line.

mod backlog;
mod blip;
mod cost;
mod direct;
mod directory;
mod flood;
mod group;
mod history;
mod idle;
mod peers;
mod plot;
mod process;
mod processes;
mod reply;
mod report;
mod resync;
mod rolling;
mod scale;
mod storm_wide;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "natter-bench")]
struct Cli {
    /// Print one JSON line per measurement instead of the tables.
    #[arg(long, global = true)]
    json: bool,
    /// Directory for the SVG plots.
    #[arg(long, global = true, default_value = "bench-results")]
    plots: std::path::PathBuf,
    /// Also append every measurement as a JSON line to this file.
    #[arg(long, global = true)]
    record: Option<std::path::PathBuf>,
    /// Peers to run next to natter with the same workload: centrifugo, ejabberd, or none.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "centrifugo,ejabberd"
    )]
    peers: Vec<String>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Gateway RSS per idle authenticated connection.
    Idle {
        /// Connection counts to measure, in order (cumulative).
        #[arg(long, value_delimiter = ',', default_value = "5000,10000")]
        connections: Vec<usize>,
    },
    /// Persisted 1:1 delivery latency and throughput, with a raw NATS relay as the ceiling.
    Direct {
        /// Offered rates in messages per second, climbed until one is not sustained.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "500,1000,2000,4000,8000,16000"
        )]
        rates: Vec<u64>,
        /// Seconds per rate.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Sender/receiver pairs.
        #[arg(long, default_value_t = 50)]
        pairs: usize,
        /// JetStream sync_interval of the nats-server: `always` or a duration like `2m`.
        /// The default, nats-server's own, writes to the page cache and fsyncs periodically:
        /// the durability of the peers' stores (Centrifugo keeps history in memory, ejabberd's
        /// Mnesia tables are not fsynced per message). `always` is natter's single-node
        /// setting; scripts/bench measures it too.
        #[arg(long, default_value = "2m")]
        sync: String,
        /// Latency objective: a rate whose p99 exceeds it is not sustained.
        #[arg(long, default_value_t = 50.0)]
        slo_ms: f64,
        /// Skip the bisection between the last sustained rate and the first that was not.
        #[arg(long)]
        no_search: bool,
        /// Partitions of natter's message plane (`bus.partitions`); 1 is what one machine
        /// runs (`natter up`).
        #[arg(long, default_value_t = 1)]
        partitions: u32,
    },
    /// History store writes, "last 50" read latency (cache hit, embedded miss, CQL miss when
    /// NATTER_SCYLLA_URI is set) and the writer's lag at 5,000 msg/s.
    History {
        /// Sequential end-to-end reads of the last 50 messages, per system.
        #[arg(long, default_value_t = 2000)]
        reads: usize,
    },
    /// Group fan-out: latency to the last online member, and deliveries/s at saturation.
    Group {
        /// Offered rates in group messages per second.
        #[arg(long, value_delimiter = ',', default_value = "10,100")]
        rates: Vec<u64>,
        /// Seconds per rate, and of the saturation run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Members sending at once in the saturation run (each has one send in flight to
        /// the chat service at a time, so fewer cannot saturate a fsyncing JetStream).
        #[arg(long, default_value_t = 32)]
        senders: usize,
        /// JetStream sync_interval of the nats-server: `always` or a duration like `2m`.
        /// The default, nats-server's own, writes to the page cache and fsyncs periodically:
        /// the durability of the peers' stores (Centrifugo keeps history in memory, ejabberd's
        /// Mnesia tables are not fsynced per message). `always` is natter's single-node
        /// setting; scripts/bench measures it too.
        #[arg(long, default_value = "2m")]
        sync: String,
    },
    /// Replay after being away: one device's backlog drain rate, and a reconnect storm.
    Resync {
        /// Messages waiting for the draining device.
        #[arg(long, default_value_t = 10_000)]
        backlog: usize,
        /// Devices reconnecting at once in the storm.
        #[arg(long, default_value_t = 5_000)]
        clients: usize,
        /// Messages waiting for each of them.
        #[arg(long, default_value_t = 5)]
        per_client: usize,
        /// Also runs natter's storm with the gateway's lease written over its main NATS
        /// connection (as before it had one of its own), for the lease-write figures.
        #[arg(long)]
        lease_baseline: bool,
    },
    /// A reconnect storm over several gateway processes, devices in client processes of
    /// their own (5,000 each), in rounds of increasing size: time until all resynced, and
    /// per 1,000 devices.
    StormWide {
        /// Devices per round, one round each.
        #[arg(long, value_delimiter = ',', default_value = "1000,5000,20000")]
        clients: Vec<usize>,
        /// Gateway processes.
        #[arg(long, default_value_t = 4)]
        gateways: usize,
        /// Messages waiting for each device.
        #[arg(long, default_value_t = 5)]
        per_client: usize,
    },
    /// (Started by `storm-wide`: one client process of the storm.)
    #[command(hide = true)]
    StormClients {
        #[arg(long, value_delimiter = ',')]
        urls: Vec<String>,
        #[arg(long)]
        first: usize,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        cursor: protocol::Cursor,
        #[arg(long)]
        per_client: usize,
        #[arg(long)]
        source: std::net::IpAddr,
    },
    /// A NATS blip under a gateway: its devices catch up on what was routed meanwhile, from
    /// one shared read of the gap and, in the same run, with a replay per session.
    Blip {
        /// Devices on the gateway that is cut off.
        #[arg(long, default_value_t = 5_000)]
        clients: usize,
        /// Messages written for each of them while it is cut off.
        #[arg(long, default_value_t = 2)]
        per_client: usize,
        /// How long the gateway is cut off (at least as long as the writes take).
        #[arg(long, default_value_t = 3_000)]
        outage_ms: u64,
    },
    /// A rolling restart under load: each gateway, chat, history, notifier and NATS node
    /// restarted in turn; loss, double storage and the pause per restart per user.
    Rolling {
        /// Users, 1:1 with the next and in groups.
        #[arg(long, default_value_t = 60)]
        users: usize,
        /// Members per group.
        #[arg(long, default_value_t = 6)]
        group_size: usize,
        /// Messages each user sends per second.
        #[arg(long, default_value_t = 2.0)]
        rate: f64,
    },
    /// Routing throughput and CPU per message with more routing instances (`natter-chat`
    /// processes next to natter-bench), draining a backlog on a 3-node cluster.
    Scale {
        /// Routing instance counts, one round each.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
        instances: Vec<usize>,
        /// Partitions of the message plane; divisible by the instance counts for even shares.
        #[arg(long, default_value_t = 6)]
        partitions: u32,
        /// Messages drained per round.
        #[arg(long, default_value_t = 60_000)]
        backlog: usize,
        /// Online recipients (one conversation each).
        #[arg(long, default_value_t = 200)]
        pairs: usize,
    },
    /// CPU time and NATS messages per persisted 1:1 message, process by process, at a fixed
    /// rate (natter as separate processes next to natter-bench).
    Cost(cost::Options),
    /// The session directory's memory and start-up per chat instance (sessions and group
    /// memberships), by the number of shards it holds.
    Directory {
        /// Sessions written, one user each.
        #[arg(long, default_value_t = 1_000_000)]
        sessions: usize,
        /// Group memberships written, in groups of `--group-size` among the sessions' users.
        #[arg(long, default_value_t = 1_000_000)]
        memberships: usize,
        #[arg(long, default_value_t = 10)]
        group_size: usize,
        /// Session shards (the deployment's partition count).
        #[arg(long, default_value_t = 6)]
        partitions: u32,
        /// Shard counts held, one fresh process each.
        #[arg(long, value_delimiter = ',', default_value = "6,3,2,1")]
        held: Vec<u32>,
    },
    /// (Started by `directory`: one chat instance's directory taking shards.)
    #[command(hide = true)]
    DirectoryHolder {
        #[arg(long)]
        url: String,
        #[arg(long)]
        nkey_file: Option<std::path::PathBuf>,
        #[arg(long)]
        tls_ca_file: Option<std::path::PathBuf>,
        #[arg(long)]
        partitions: u32,
        #[arg(long)]
        shards: u32,
    },
    /// What naming a message costs the sender: send → sent for plain sends, replies, edits
    /// and reactions, in turn in one run
    Reply {
        /// Sends of each kind.
        #[arg(long, default_value_t = 2000)]
        sends: usize,
    },
    /// One user's delivery latency alone and while another user floods (per-user limits on).
    Flood {
        /// Messages per second alice sends bob.
        #[arg(long, default_value_t = 20)]
        rate: u64,
        /// Seconds per run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Before the in-process services start theirs: warnings only, and on stderr, so stdout
    // keeps the tables or the JSON lines; colours only when stderr is a terminal.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colour && std::env::var_os("NO_COLOR").is_none())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    let out = report::Output {
        json: cli.json,
        plots: cli.plots.clone(),
        record: cli.record.clone(),
    };
    let peers: Vec<String> = cli
        .peers
        .iter()
        .filter(|p| p.as_str() != "none")
        .cloned()
        .collect();
    match cli.scenario {
        Scenario::Idle { connections } => idle::run(&connections, &peers, &out).await,
        Scenario::Direct {
            rates,
            seconds,
            pairs,
            sync,
            slo_ms,
            no_search,
            partitions,
        } => {
            let options = direct::Options {
                rates,
                seconds,
                pairs,
                sync,
                slo_ms,
                search: !no_search,
                partitions,
            };
            direct::run(&options, &peers, &out).await
        }
        Scenario::History { reads } => history::run(reads, &peers, &out).await,
        Scenario::Group {
            rates,
            seconds,
            senders,
            sync,
        } => {
            let options = group::Options {
                rates,
                seconds,
                senders,
                sync,
            };
            group::run(&options, &peers, &out).await
        }
        Scenario::Flood { rate, seconds } => flood::run(rate, seconds, &out).await,
        Scenario::Reply { sends } => reply::run(sends, &out).await,
        Scenario::Cost(options) => cost::run(&options, &out).await,
        Scenario::Directory {
            sessions,
            memberships,
            group_size,
            partitions,
            held,
        } => {
            let options = directory::Options {
                sessions,
                memberships,
                group_size,
                partitions,
                held,
            };
            directory::run(&options, &out).await
        }
        Scenario::DirectoryHolder {
            url,
            nkey_file,
            tls_ca_file,
            partitions,
            shards,
        } => {
            let access = directory::Access {
                url,
                nkey_file,
                tls_ca_file,
            };
            directory::holder(access, partitions, shards).await
        }
        Scenario::Scale {
            instances,
            partitions,
            backlog,
            pairs,
        } => {
            let options = scale::Options {
                instances,
                partitions,
                backlog,
                pairs,
            };
            scale::run(&options, &out).await
        }
        Scenario::StormWide {
            clients,
            gateways,
            per_client,
        } => storm_wide::run(&clients, gateways, per_client, &out).await,
        Scenario::StormClients {
            urls,
            first,
            count,
            cursor,
            per_client,
            source,
        } => storm_wide::clients(&urls, first, count, cursor, per_client, source).await,
        Scenario::Rolling {
            users,
            group_size,
            rate,
        } => rolling::run(users, group_size, rate, &out).await,
        Scenario::Blip {
            clients,
            per_client,
            outage_ms,
        } => {
            let outage = std::time::Duration::from_millis(outage_ms);
            blip::run(clients, per_client, outage, &out).await
        }
        Scenario::Resync {
            backlog,
            clients,
            per_client,
            lease_baseline,
        } => resync::run(backlog, clients, per_client, lease_baseline, &peers, &out).await,
    }
}

/// Prints one measurement: a JSON line with `--json`, else a line of text.
pub fn emit(json: bool, value: serde_json::Value, text: String) {
    if json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

/// Latency samples in microseconds, sorted when made, so percentiles and plots (which both
/// need order) cannot be handed samples in arrival order.
pub struct Latencies(Vec<u64>);

impl Latencies {
    pub fn new(mut us: Vec<u64>) -> Self {
        us.sort_unstable();
        Self(us)
    }

    /// Percentile (0..=1), in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        percentile_ms(&self.0, p)
    }

    pub fn sorted_us(&self) -> &[u64] {
        &self.0
    }
}

/// Percentile (0..=1) of sorted microsecond samples, in milliseconds.
pub fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    sorted_us[i] as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_samples_in_arrival_order_are_ordered() {
        // Samples as a run records them: in arrival order, a slow one first.
        let latencies = Latencies::new(vec![900, 410, 380, 2_000, 400, 390, 420, 405, 395, 415]);
        let (p50, p99) = (latencies.percentile_ms(0.5), latencies.percentile_ms(0.99));
        assert!(p50 <= p99, "p50 {p50} above p99 {p99}");
        assert_eq!(p50, 0.41);
        assert_eq!(p99, 2.0);
        assert_eq!(latencies.sorted_us().first(), Some(&380));
    }
}
