//! `natter check`: what a deployment needs, looked up where it lives — the JetStream streams,
//! durable consumers (with their lag) and buckets natter's services create, the gateways
//! holding a lease, and optionally a WebSocket round trip — with a non-zero exit when
//! something is missing.

use std::time::{Duration, Instant};

use anyhow::anyhow;
use async_nats::jetstream;
use clap::Args;
use futures::TryStreamExt;
use plumbing::nats_auth::Role;
use protocol::frames::ServerFrame;
use protocol::payloads::GatewayLease;
use protocol::subjects;
use serde::Serialize;

use super::{ANSWER_TIMEOUT, Login, print_json};
use crate::config::NatterConfig;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// NATS URL(s) natter's services use; defaults to the configured `bus.nats_url`.
    #[arg(long)]
    pub nats_url: Option<String>,
    /// Also do a WebSocket round trip (welcome, ping/pong) with this gateway.
    #[arg(long, env = "NATTER_URL")]
    pub url: Option<String>,
    /// The user for the round trip (a token is minted with the configured secret).
    #[arg(long = "as", value_name = "USER", default_value = "natter-check")]
    pub user: String,
    /// A token for the round trip instead of minting one.
    #[arg(long, env = "NATTER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The components this deployment runs; what only the others create is not checked
    /// (`--components gateway,chat,history` for a deployment without push notifications).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "gateway,chat,history,notifier"
    )]
    pub components: Vec<Component>,
}

/// A natter component, as `--components` names it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    Gateway,
    Chat,
    History,
    Notifier,
}

/// One thing looked at.
#[derive(Serialize, Debug)]
struct Item {
    kind: &'static str,
    name: String,
    ok: bool,
    detail: String,
}

/// A resource's name and the services that create it.
type Named = (&'static str, &'static str);

/// A consumer's name, the service that creates it, and that service's component.
type Created = (&'static str, &'static str, Component);

/// A stream and the consumers on it that natter's services create, with who creates them.
/// (The messages streams, one per partition with its router and history writer, are
/// checked from the partition count the first one records.)
const STREAMS: &[(&str, &str, &[Created])] = &[(
    subjects::OFFLINE_STREAM,
    "chat service and notifier",
    &[(subjects::NOTIFIER_CONSUMER, "notifier", Component::Notifier)],
)];

const BUCKETS: &[Named] = &[
    (subjects::SESSIONS_BUCKET, "gateway and chat service"),
    (subjects::GATEWAYS_BUCKET, "gateway and chat service"),
    (subjects::PRESENCE_BUCKET, "gateway and chat service"),
    (subjects::GROUPS_BUCKET, "chat and history services"),
    (subjects::PUSH_TOKENS_BUCKET, "gateway and notifier"),
];

pub async fn run(args: CheckArgs, config: &NatterConfig, json: bool) -> anyhow::Result<bool> {
    let nats_url = args
        .nats_url
        .clone()
        .filter(|u| !u.is_empty())
        .or_else(|| Some(config.bus.nats_url.clone()).filter(|u| !u.is_empty()))
        .ok_or_else(|| {
            anyhow!(
                "no NATS URL: pass --nats-url or set bus.nats_url (NATTER_BUS__NATS_URL); \
                 `natter up` prints the URL it uses"
            )
        })?;
    let bus = plumbing::BusConfig {
        nats_url: nats_url.clone(),
        ..config.bus_as(Role::Operator)?
    };
    let nats = plumbing::bus::connect(&bus, Role::Operator, "natter-check")
        .await
        .map_err(|e| {
            anyhow!(
                "{e} — is nats-server running there, and is this the URL natter's services use \
                 (bus.nats_url)?"
            )
        })?;
    let js = jetstream::new(nats.clone());
    let runs = |c: &Component| args.components.contains(c);
    let mut items = Vec::new();
    check_messages_streams(&js, &runs, &mut items).await;
    for (stream_name, creators, consumers) in STREAMS {
        let consumers = consumers
            .iter()
            .filter(|(_, _, component)| runs(component))
            .map(|(c, by, _)| (c.to_string(), *by))
            .collect();
        check_stream(&js, stream_name, creators, consumers, &mut items).await;
    }
    for (bucket, creators) in BUCKETS {
        items.push(check_bucket(&js, bucket, creators).await);
    }
    let gateways = live_gateways(&js).await;
    items.extend(runs(&Component::Gateway).then(|| match &gateways {
        Ok(g) if !g.is_empty() => Item {
            kind: "gateways",
            name: subjects::GATEWAYS_BUCKET.into(),
            ok: true,
            detail: format!("{} live: {}", g.len(), g.join(", ")),
        },
        Ok(_) => Item {
            kind: "gateways",
            name: subjects::GATEWAYS_BUCKET.into(),
            ok: false,
            detail: "no gateway holds a lease — start one (`natter up` or natter-gateway)".into(),
        },
        Err(e) => Item {
            kind: "gateways",
            name: subjects::GATEWAYS_BUCKET.into(),
            ok: false,
            detail: format!("cannot list: {e}"),
        },
    }));
    if let Some(url) = &args.url {
        items.push(round_trip(&args, url, config).await);
    }
    let ok = items.iter().all(|i| i.ok);
    let problems = items.iter().filter(|i| !i.ok).count();
    if json {
        let components = &args.components;
        print_json(
            &serde_json::json!({ "ok": ok, "nats_url": nats_url, "components": components, "items": items }),
        )?;
    } else {
        println!("NATS {nats_url}: connected");
        let names: Vec<String> = (args.components.iter())
            .filter_map(clap::ValueEnum::to_possible_value)
            .map(|v| v.get_name().to_string())
            .collect();
        println!("components: {}", names.join(", "));
        for i in &items {
            let mark = if i.ok { "ok  " } else { "FAIL" };
            println!("{mark} {:<9} {:<22} {}", i.kind, i.name, i.detail);
        }
        if ok {
            println!("all {} checks passed", items.len());
        } else {
            println!("{problems} of {} checks failed", items.len());
        }
    }
    Ok(ok)
}

/// Every partition's messages stream with its router and history writer, and the sessions
/// stream with every shard's presence decider; the one stream of
/// before partitions had streams of their own fails the check (the services refuse to start
/// next to it).
async fn check_messages_streams(
    js: &jetstream::Context,
    runs: &impl Fn(&Component) -> bool,
    items: &mut Vec<Item>,
) {
    let creators = "gateway, chat and history services";
    if js.get_stream(subjects::MESSAGES_STREAM).await.is_ok() {
        items.push(Item {
            kind: "stream",
            name: subjects::MESSAGES_STREAM.into(),
            ok: false,
            detail: "the one stream of before a stream per partition: upgrade as \
                     docs/operations.md (\"Partitions\") says"
                .into(),
        });
    }
    let first = subjects::messages_stream(0);
    let partitions = match js.get_stream(&first).await {
        Ok(mut s) => s
            .info()
            .await
            .ok()
            .and_then(plumbing::bus::stream_partitions)
            .unwrap_or(1),
        Err(_) => 1,
    };
    for k in 0..partitions {
        let consumers = [
            (
                subjects::router(k),
                "chat service (router)",
                Component::Chat,
            ),
            (
                subjects::history_writer(k),
                "history service (writer)",
                Component::History,
            ),
        ]
        .into_iter()
        .filter(|(_, _, component)| runs(component))
        .map(|(c, by, _)| (c, by))
        .collect();
        let name = subjects::messages_stream(k);
        check_stream(js, &name, creators, consumers, items).await;
    }
    // The sessions bucket's stream, with each session shard's presence decider (one shard
    // per partition).
    let deciders = (0..partitions)
        .map(|k| {
            (
                subjects::presence_decider(k),
                "chat service (user presence)",
            )
        })
        .filter(|_| runs(&Component::Chat))
        .collect();
    check_stream(
        js,
        subjects::SESSIONS_STREAM,
        "gateway and chat service",
        deciders,
        items,
    )
    .await;
}

async fn check_stream(
    js: &jetstream::Context,
    name: &str,
    creators: &str,
    consumers: Vec<(String, &str)>,
    items: &mut Vec<Item>,
) {
    let mut stream = match js.get_stream(name).await {
        Ok(s) => s,
        Err(e) => {
            items.push(Item {
                kind: "stream",
                name: name.into(),
                ok: false,
                detail: format!("missing ({e}) — created by the {creators} on start; are they running against this NATS?"),
            });
            for (consumer, creator) in consumers {
                items.push(Item {
                    kind: "consumer",
                    name: consumer,
                    ok: false,
                    detail: format!("missing with its stream {name} — created by the {creator}"),
                });
            }
            return;
        }
    };
    let detail = match stream.info().await {
        Ok(info) => match plumbing::bus::stream_partitions(info) {
            Some(partitions) => format!(
                "{} messages, {} bytes, one of {partitions} partitions",
                info.state.messages, info.state.bytes
            ),
            None => format!(
                "{} messages, {} bytes",
                info.state.messages, info.state.bytes
            ),
        },
        Err(e) => format!("exists (info failed: {e})"),
    };
    items.push(Item {
        kind: "stream",
        name: name.into(),
        ok: true,
        detail,
    });
    for (consumer, creator) in consumers {
        items.push(match stream.consumer_info(&consumer).await {
            Ok(info) => Item {
                kind: "consumer",
                name: consumer.clone(),
                ok: true,
                detail: format!(
                    "lag {} not yet delivered, {} awaiting ack",
                    info.num_pending, info.num_ack_pending
                ),
            },
            Err(e) => Item {
                kind: "consumer",
                name: consumer,
                ok: false,
                detail: format!(
                    "missing on {name} ({e}) — created by the {creator} on start; is it running?"
                ),
            },
        });
    }
}

async fn check_bucket(js: &jetstream::Context, bucket: &str, creators: &str) -> Item {
    let status = match js.get_key_value(bucket).await {
        Ok(store) => store.status().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match status {
        Ok(status) => Item {
            kind: "bucket",
            name: bucket.into(),
            ok: true,
            detail: format!("{} values", status.values()),
        },
        Err(e) => Item {
            kind: "bucket",
            name: bucket.into(),
            ok: false,
            detail: format!("missing ({e}) — created by the {creators} on start"),
        },
    }
}

/// The gateways holding a lease, by id.
async fn live_gateways(js: &jetstream::Context) -> anyhow::Result<Vec<String>> {
    let store = js.get_key_value(subjects::GATEWAYS_BUCKET).await?;
    let keys: Vec<String> = store.keys().await?.try_collect().await?;
    let mut gateways = Vec::new();
    for key in keys {
        if let Some(value) = store.get(&key).await?
            && let Ok(lease) = serde_json::from_slice::<GatewayLease>(&value)
        {
            gateways.push(lease.gateway.to_string());
        }
    }
    gateways.sort();
    Ok(gateways)
}

async fn round_trip(args: &CheckArgs, url: &str, config: &NatterConfig) -> Item {
    let login = Login {
        user: Some(args.user.clone()),
        url: url.into(),
        token: args.token.clone(),
    };
    let item = |ok, detail| Item {
        kind: "websocket",
        name: url.into(),
        ok,
        detail,
    };
    let started = Instant::now();
    let mut session = match login.connect(config).await {
        Ok(s) => s,
        Err(e) => return item(false, format!("{e:#}")),
    };
    let welcome = started.elapsed();
    let ts = 42;
    let sent = Instant::now();
    if let Err(e) = session.conn.ping(Some(ts)).await {
        return item(false, format!("ping failed: {e}"));
    }
    let pong = tokio::time::timeout(ANSWER_TIMEOUT, async {
        loop {
            match session.conn.next_frame().await {
                Ok(ServerFrame::Pong { ts: Some(t) }) if t == ts => return Ok(()),
                Ok(_) => continue,
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    let rtt = sent.elapsed();
    let user = session.user.clone();
    session.close().await;
    match pong {
        Ok(Ok(())) => item(
            true,
            format!("welcome as {user} in {}, pong in {}", ms(welcome), ms(rtt)),
        ),
        Ok(Err(e)) => item(false, format!("welcome, but no pong: {e}")),
        Err(_) => item(
            false,
            format!("welcome, but no pong within {} s", ANSWER_TIMEOUT.as_secs()),
        ),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
