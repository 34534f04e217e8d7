//! The session directory's memory and start-up per chat instance: `--sessions` sessions
//! (distinct users on 100 gateways with live leases) written into the sessions bucket of a
//! deployment with `--partitions` shards, and `--memberships` group memberships (groups of
//! `--group-size` of those users) into the groups bucket, then, for each count of shards
//! held, a fresh process (`natter-bench directory-holder`) takes that many shards as a chat
//! instance does when it starts. Figures per count: the sessions and memberships it holds, how
//! long loading them took, and its resident memory above what it used before taking any.
//!
//! A chat instance routing `k` of `P` partitions holds `k` shards, so with `n` instances each
//! holds about `1/n` of the sessions and of the memberships: the memory and start-up figures
//! should fall in proportion.

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt;
use plumbing::BusConfig;
use plumbing::nats_auth::{NatsAuth, Role};
use plumbing::nats_server::{NatsServer, NatsServerOptions};
use protocol::payloads::{GatewayLease, SessionEntry};
use protocol::{ConnId, GatewayId, UserId, subjects};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

use crate::report::{Report, Table};

/// Gateways the sessions are spread over.
const GATEWAYS: usize = 100;
/// Session key writes in flight at once.
const WRITES_IN_FLIGHT: usize = 4_096;

pub struct Options {
    pub sessions: usize,
    pub memberships: usize,
    pub group_size: usize,
    pub partitions: u32,
    /// Shard counts to measure, one fresh process each.
    pub held: Vec<u32>,
}

/// What a holder process prints: one JSON line.
#[derive(serde::Serialize, serde::Deserialize)]
struct Held {
    shards: u32,
    sessions: usize,
    #[serde(default)]
    memberships: usize,
    load_s: f64,
    rss_kib: u64,
    error: Option<String>,
}

pub async fn run(options: &Options, out: &crate::report::Output) -> anyhow::Result<()> {
    let report = Report::new(out, options.held.len() as u64 + 1)?;
    let store = tempfile::tempdir()?;
    let nats = NatsServer::start(NatsServerOptions::scratch(
        store.path().join("nats"),
        NatsAuth::ensure(&store.path().join("auth"), &[], &[])?,
    ))?;
    report.step(format!("writing {} sessions", options.sessions));
    let written = Instant::now();
    write_sessions(&nats, options).await?;
    report.step(format!("writing {} memberships", options.memberships));
    write_memberships(&nats, options).await?;
    let write_s = written.elapsed().as_secs_f64();
    let mut table = Table::new(
        format!(
            "Session directory: {} sessions and {} memberships, {} shards (written in {write_s:.1} s)",
            options.sessions, options.memberships, options.partitions
        ),
        &[
            "shards held",
            "sessions held",
            "memberships held",
            "load",
            "RSS above empty",
        ],
    );
    for &shards in &options.held {
        report.step(format!("a chat instance holding {shards} shards"));
        let held = hold_in_child(&nats, options.partitions, shards).await?;
        if let Some(e) = held.error {
            anyhow::bail!("holder of {shards} shards failed: {e}");
        }
        report.measurement(
            serde_json::json!({
                "scenario": "directory",
                "partitions": options.partitions,
                "shards_held": shards,
                "sessions_total": options.sessions,
                "sessions_held": held.sessions,
                "memberships_total": options.memberships,
                "memberships_held": held.memberships,
                "load_s": held.load_s,
                "rss_mib": held.rss_kib as f64 / 1024.0,
            }),
            format!(
                "{shards} shards: {} sessions, {} memberships, {:.2} s, {:.1} MiB",
                held.sessions,
                held.memberships,
                held.load_s,
                held.rss_kib as f64 / 1024.0
            ),
        );
        table.row(vec![
            shards.to_string(),
            held.sessions.to_string(),
            held.memberships.to_string(),
            format!("{:.2} s", held.load_s),
            format!("{:.1} MiB", held.rss_kib as f64 / 1024.0),
        ]);
    }
    report.finish(&[table], &[]);
    Ok(())
}

/// Writes the leases of [`GATEWAYS`] gateways and `options.sessions` session keys, one user
/// each, many writes in flight.
async fn write_sessions(nats: &NatsServer, options: &Options) -> anyhow::Result<()> {
    let client = nats.client_as(Role::Gateway).await?;
    let js = async_nats::jetstream::new(client);
    let bus = BusConfig {
        partitions: options.partitions,
        ..BusConfig::default()
    };
    let buckets = plumbing::bus::ensure_presence_buckets(&js, &bus).await?;
    let boot = ConnId(ulid::Ulid::new());
    let gateways: Vec<GatewayId> = (0..GATEWAYS)
        .map(|g| GatewayId::new(format!("gw-{g}")).expect("gateway id"))
        .collect();
    for gateway in &gateways {
        let lease = GatewayLease {
            gateway: gateway.clone(),
            boot,
            ttl_ms: 3_600_000,
        };
        buckets
            .gateways
            .put(gateway.as_str(), serde_json::to_vec(&lease)?.into())
            .await?;
    }
    let entries = (0..options.sessions).map(|i| {
        let gateway = gateways[i % GATEWAYS].clone();
        let user = UserId::new(format!("user-{i}")).expect("user id");
        let conn = ConnId(ulid::Ulid::new());
        let key = subjects::session_key(&user, &gateway, conn, options.partitions);
        let entry = SessionEntry {
            user,
            gateway,
            conn,
        };
        let value = serde_json::to_vec(&entry).expect("session entry to JSON");
        (key, value)
    });
    put_all(&js, subjects::SESSIONS_BUCKET, entries).await
}

/// Puts every `(key, value)` into `bucket`, [`WRITES_IN_FLIGHT`] at a time.
async fn put_all(
    js: &async_nats::jetstream::Context,
    bucket: &str,
    entries: impl Iterator<Item = (String, Vec<u8>)>,
) -> anyhow::Result<()> {
    let writes = futures::stream::iter(entries).map(|(key, value)| {
        let js = js.clone();
        let subject = format!("$KV.{bucket}.{key}");
        async move {
            js.publish(subject, value.into()).await?.await?;
            anyhow::Ok(())
        }
    });
    let mut writes = writes.buffer_unordered(WRITES_IN_FLIGHT);
    while let Some(written) = writes.next().await {
        written?;
    }
    Ok(())
}

/// Writes `options.memberships` memberships in groups of `options.group_size` users (user
/// `i` of the sessions' users in groups `i / size` onwards, wrapping), with the group records
/// and each user's list of groups, as group operations write them.
async fn write_memberships(nats: &NatsServer, options: &Options) -> anyhow::Result<()> {
    let client = nats.client_as(Role::Chat).await?;
    let js = async_nats::jetstream::new(client);
    let bus = BusConfig {
        partitions: options.partitions,
        ..BusConfig::default()
    };
    plumbing::bus::ensure_groups_bucket(&js, &bus).await?;
    let size = options.group_size.max(1);
    let groups = options.memberships.div_ceil(size);
    let users = options.sessions.max(1);
    let shards = options.partitions;
    let record = serde_json::to_vec(&groups::GroupRecord {
        name: "bench".into(),
        created_by: UserId::new("user-0").expect("user id"),
        created_ts: 0,
    })?;
    let member = serde_json::to_vec(&groups::MemberRecord {
        role: protocol::Role::Member,
        since: 0,
    })?;
    // Key and value of every write: a group's record before its members.
    let keys = (0..groups).flat_map(|g| {
        let group = protocol::GroupId::new(format!("g{g:08}")).expect("group id");
        let first = (g * size) % users;
        let members = (0..size)
            .take(options.memberships - g * size)
            .map(move |m| UserId::new(format!("user-{}", (first + m) % users)).expect("user id"));
        let mut writes = vec![(subjects::group_key(&group, shards), record.clone())];
        for user in members {
            writes.push((subjects::user_group_key(&user, &group, shards), Vec::new()));
            writes.push((subjects::member_key(&group, &user, shards), member.clone()));
        }
        writes
    });
    // The mark chat writes once the bucket has the sharded layout.
    let layout = (
        subjects::GROUPS_LAYOUT_KEY.to_string(),
        subjects::GROUPS_SHARDED.as_bytes().to_vec(),
    );
    put_all(&js, subjects::GROUPS_BUCKET, keys.chain([layout])).await
}

async fn hold_in_child(nats: &NatsServer, partitions: u32, shards: u32) -> anyhow::Result<Held> {
    let bus = nats.bus(Role::Chat);
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command
        .args(["--peers", "none", "directory-holder"])
        .args(["--url", &bus.nats_url])
        .args(["--partitions", &partitions.to_string()])
        .args(["--shards", &shards.to_string()]);
    if let Some(seed) = &bus.nkey_file {
        command.args(["--nkey-file", &seed.display().to_string()]);
    }
    if let Some(ca) = &bus.tls_ca_file {
        command.args(["--tls-ca-file", &ca.display().to_string()]);
    }
    let mut child = command.stdout(Stdio::piped()).kill_on_drop(true).spawn()?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(600), lines.next_line())
        .await??
        .ok_or_else(|| anyhow::anyhow!("the holder process printed nothing"))?;
    child.wait().await?;
    Ok(serde_json::from_str(&line)?)
}

/// The holder process (`natter-bench directory-holder`): takes shards `0..shards` of a
/// directory of `partitions` shards as a chat instance does, and prints one [`Held`] line.
pub async fn holder(access: Access, partitions: u32, shards: u32) -> anyhow::Result<()> {
    let held = match hold(access, partitions, shards).await {
        Ok(held) => held,
        Err(e) => Held {
            shards,
            sessions: 0,
            memberships: 0,
            load_s: 0.0,
            rss_kib: 0,
            error: Some(format!("{e:#}")),
        },
    };
    println!("{}", serde_json::to_string(&held)?);
    Ok(())
}

/// How the holder process reaches NATS as the chat identity.
pub struct Access {
    pub url: String,
    pub nkey_file: Option<std::path::PathBuf>,
    pub tls_ca_file: Option<std::path::PathBuf>,
}

async fn hold(access: Access, partitions: u32, shards: u32) -> anyhow::Result<Held> {
    let bus = BusConfig {
        nats_url: access.url,
        nkey_file: access.nkey_file,
        tls_ca_file: access.tls_ca_file,
        partitions,
        ..BusConfig::default()
    };
    let client = plumbing::bus::connect(&bus, Role::Chat, "directory-holder").await?;
    let js = async_nats::jetstream::new(client);
    let buckets = plumbing::bus::ensure_presence_buckets(&js, &bus).await?;
    let groups = plumbing::bus::ensure_groups_bucket(&js, &bus).await?;
    let stop = CancellationToken::new();
    let directory = chat::Directory::start(
        &js,
        buckets,
        groups,
        partitions,
        Duration::from_secs(3600),
        chat::ChatMetrics::new(),
        stop.clone(),
    )
    .await?;
    let before = crate::process::rss_kib(std::process::id())?;
    let started = Instant::now();
    for k in 0..shards {
        directory.hold(k).await?;
    }
    let load_s = started.elapsed().as_secs_f64();
    let after = crate::process::rss_kib(std::process::id())?;
    let sessions = directory.sessions_held();
    let memberships = directory.memberships_held();
    stop.cancel();
    Ok(Held {
        shards,
        sessions,
        memberships,
        load_s,
        rss_kib: after.saturating_sub(before),
        error: None,
    })
}
