//! The NATS connection and the JetStream resources natter owns: the messages stream and the
//! presence buckets. Every service calls the `ensure_*` functions it depends on at startup;
//! they are idempotent, so start order does not matter.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use protocol::subjects;
use serde::{Deserialize, Serialize};

/// How services reach NATS and how the shared JetStream resources are shaped.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BusConfig {
    /// NATS server URL(s), comma separated. Empty in the all-in-one means "start one".
    pub nats_url: String,
    /// Replicas for streams and buckets: 1 for a single node, 3 for a cluster.
    pub replicas: usize,
    /// Window in which a resend with the same client message id is recognised.
    pub dedup_window_ms: u64,
    /// How long the messages stream keeps messages (the history store keeps them for good).
    pub messages_max_age_ms: u64,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            nats_url: String::new(),
            replicas: 1,
            dedup_window_ms: 60_000,
            messages_max_age_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// Connects to NATS. `url` may list several servers, comma separated (the nodes of a
/// cluster); the client picks one and fails over to the others. The first connect must
/// succeed (a typo'd URL fails fast); afterwards the client reconnects forever and buffers
/// publishes while disconnected.
pub async fn connect(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(5)))
        .connect(server_urls(url))
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to NATS at {url}: {e}"))?;
    Ok(client)
}

/// The servers of a comma-separated list. async-nats parses a single string as one URL, so a
/// list must be split before it is handed over.
fn server_urls(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// Returns once the server has processed everything this client sent before the call (for
/// example a SUB), so that other connections' messages can already reach it. `flush` alone
/// only empties our write buffer. A request to a subject nobody serves comes back as "no
/// responders" from the server itself: one round trip.
pub async fn round_trip(client: &async_nats::Client) {
    let subject = format!("_NATTER.sync.{}", client.new_inbox().replace('.', "_"));
    let _ = client.request(subject, bytes::Bytes::new()).await;
}

/// Creates or updates the stream that holds every accepted message.
pub async fn ensure_messages_stream(
    js: &jetstream::Context,
    cfg: &BusConfig,
) -> anyhow::Result<stream::Stream> {
    let config = stream::Config {
        name: subjects::MESSAGES_STREAM.into(),
        description: Some("every accepted natter message; see subjects.md".into()),
        subjects: vec![subjects::MESSAGES_SUBJECTS.into()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: Duration::from_millis(cfg.messages_max_age_ms),
        duplicate_window: Duration::from_millis(cfg.dedup_window_ms),
        num_replicas: cfg.replicas,
        allow_direct: true,
        ..Default::default()
    };
    js.create_or_update_stream(config)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create stream {}: {e}", subjects::MESSAGES_STREAM))?;
    Ok(js.get_stream(subjects::MESSAGES_STREAM).await?)
}

/// How long the offline-message stream keeps an event nobody acknowledged.
const OFFLINE_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Creates or updates the stream that makes `natter.user.offline_message` durable for the
/// notifier. Ensured by the chat service (the publisher) and by the notifier, so events
/// published before the notifier first ran are kept. Limits retention: events stay a day
/// whether acknowledged or not, so integrators may read them with consumers of their own.
pub async fn ensure_offline_stream(
    js: &jetstream::Context,
    cfg: &BusConfig,
) -> anyhow::Result<stream::Stream> {
    let config = stream::Config {
        name: subjects::OFFLINE_STREAM.into(),
        description: Some("offline-message events for the notifier; see subjects.md".into()),
        subjects: vec![subjects::USER_OFFLINE_MESSAGE.into()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: OFFLINE_MAX_AGE,
        num_replicas: cfg.replicas,
        ..Default::default()
    };
    js.create_or_update_stream(config)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create stream {}: {e}", subjects::OFFLINE_STREAM))?;
    Ok(js.get_stream(subjects::OFFLINE_STREAM).await?)
}

/// How long a push token lives without being registered again; dead devices' tokens expire.
const PUSH_TOKEN_MAX_AGE: Duration = Duration::from_secs(60 * 24 * 3600);

/// Creates the push-token bucket if it does not exist yet (gateways write, the notifier
/// reads).
pub async fn ensure_push_tokens_bucket(
    js: &jetstream::Context,
    cfg: &BusConfig,
) -> anyhow::Result<kv::Store> {
    ensure_bucket(
        js,
        kv::Config {
            bucket: subjects::PUSH_TOKENS_BUCKET.into(),
            description: "devices' push tokens: <user>.<token hash>".into(),
            history: 1,
            max_age: PUSH_TOKEN_MAX_AGE,
            num_replicas: cfg.replicas,
            ..Default::default()
        },
    )
    .await
}

/// The presence buckets: sessions (one key per connection), gateway leases, and each user's
/// online state and last-seen time.
#[derive(Clone)]
pub struct PresenceBuckets {
    pub sessions: kv::Store,
    pub gateways: kv::Store,
    pub users: kv::Store,
}

/// Creates the presence buckets if they do not exist yet.
pub async fn ensure_presence_buckets(
    js: &jetstream::Context,
    cfg: &BusConfig,
) -> anyhow::Result<PresenceBuckets> {
    let sessions = ensure_bucket(
        js,
        kv::Config {
            bucket: subjects::SESSIONS_BUCKET.into(),
            description: "one key per connected session: <user>.<gateway>.<conn>".into(),
            history: 1,
            // Purge markers carry a TTL so disconnected sessions leave nothing behind.
            limit_markers: Some(Duration::from_secs(60)),
            num_replicas: cfg.replicas,
            ..Default::default()
        },
    )
    .await?;
    let gateways = ensure_bucket(
        js,
        kv::Config {
            bucket: subjects::GATEWAYS_BUCKET.into(),
            description: "one lease per live gateway, refreshed by the gateway".into(),
            history: 1,
            limit_markers: Some(Duration::from_secs(60)),
            num_replicas: cfg.replicas,
            ..Default::default()
        },
    )
    .await?;
    let users = ensure_bucket(
        js,
        kv::Config {
            bucket: subjects::PRESENCE_BUCKET.into(),
            description: "per user: online or not, and when last seen".into(),
            history: 1,
            num_replicas: cfg.replicas,
            ..Default::default()
        },
    )
    .await?;
    Ok(PresenceBuckets {
        sessions,
        gateways,
        users,
    })
}

/// Creates the groups bucket if it does not exist yet: group records and memberships.
pub async fn ensure_groups_bucket(
    js: &jetstream::Context,
    cfg: &BusConfig,
) -> anyhow::Result<kv::Store> {
    ensure_bucket(
        js,
        kv::Config {
            bucket: subjects::GROUPS_BUCKET.into(),
            description: "groups: <group> → metadata, <group>.<user> → membership".into(),
            history: 1,
            storage: jetstream::stream::StorageType::File,
            num_replicas: cfg.replicas,
            ..Default::default()
        },
    )
    .await
}

async fn ensure_bucket(js: &jetstream::Context, config: kv::Config) -> anyhow::Result<kv::Store> {
    if let Ok(store) = js.get_key_value(&config.bucket).await {
        return Ok(store);
    }
    let name = config.bucket.clone();
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        // Another service created it between our get and create.
        Err(_) => js
            .get_key_value(&name)
            .await
            .map_err(|e| anyhow::anyhow!("cannot create KV bucket {name}: {e}")),
    }
}

/// The priority group of pinned durables (see [`Durable::pinned`]).
const PINNED_GROUP: &str = "natter";
/// How long a pinned instance keeps its pin without pulling; the standby takes over after it.
const PIN_TIMEOUT: Duration = Duration::from_secs(6);
/// Pull expiry for pinned durables, well below [`PIN_TIMEOUT`] so a live instance keeps its pin.
const PINNED_PULL_EXPIRY: Duration = Duration::from_secs(2);

/// The creation time of a stream in milliseconds since the Unix epoch: tells one incarnation
/// of a stream from the next, whose sequence numbers start again at 1.
pub fn stream_epoch(info: &stream::Info) -> u64 {
    (info.created.unix_timestamp_nanos() / 1_000_000) as u64
}

/// A durable pull consumer that several service instances share (each message goes to one
/// of them, and is redelivered if not acknowledged within `ack_wait`).
pub struct Durable<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub deliver_policy: async_nats::jetstream::consumer::DeliverPolicy,
    /// Messages pulled at once; up to four batches may be unacknowledged.
    pub batch: usize,
    pub ack_wait: Duration,
    /// Deliver to one instance at a time, in stream order (JetStream's pinned-client priority
    /// policy); the others stand by and take over within a few seconds if it stops pulling.
    pub pinned: bool,
}

/// Creates the durable consumer if it does not exist yet.
pub async fn ensure_durable(
    stream: &stream::Stream,
    durable: Durable<'_>,
) -> anyhow::Result<async_nats::jetstream::consumer::PullConsumer> {
    let max_ack_pending = durable.batch * 4;
    ensure_holding_durable(stream, durable, max_ack_pending).await
}

/// As [`ensure_durable`], for a consumer that holds messages unacknowledged for a long time
/// (the notifier, over its batching window): up to `max_ack_pending` of them.
pub async fn ensure_holding_durable(
    stream: &stream::Stream,
    durable: Durable<'_>,
    max_ack_pending: usize,
) -> anyhow::Result<async_nats::jetstream::consumer::PullConsumer> {
    use async_nats::jetstream::consumer;
    let config = consumer::pull::Config {
        durable_name: Some(durable.name.into()),
        description: Some(durable.description.into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: durable.ack_wait,
        max_ack_pending: max_ack_pending as i64,
        deliver_policy: durable.deliver_policy,
        ..Default::default()
    };
    let created = if durable.pinned {
        // Create or update, so a consumer made before pinning existed is converted.
        stream
            .create_consumer(consumer::pull::Config {
                priority_policy: consumer::PriorityPolicy::PinnedClient,
                priority_groups: vec![PINNED_GROUP.into()],
                priority_timeout: PIN_TIMEOUT,
                ..config
            })
            .await
    } else {
        stream.get_or_create_consumer(durable.name, config).await
    };
    created.map_err(|e| anyhow::anyhow!("cannot create consumer {}: {e}", durable.name))
}

/// How long to delay the redelivery of messages a stopping instance hands back (a NAK with
/// this delay): longer than a pinned pull request lives, so they cannot land in the pull
/// request this instance left behind and go to whichever instance pulls next.
pub const HANDOVER_DELAY: Duration = Duration::from_secs(3);

/// Releases this instance's pin on a pinned durable, so a standby (or this service,
/// restarted) takes over at once instead of after the pin timeout. Call it after the last
/// pull has stopped.
pub async fn release_pin(stream: &stream::Stream, consumer: &str) -> anyhow::Result<()> {
    stream
        .unpin_consumer(consumer, PINNED_GROUP)
        .await
        .map_err(|e| anyhow::anyhow!("cannot unpin consumer {consumer}: {e}"))
}

/// The next message of `sub`, or `None` once `stop` is cancelled or the subscription ends.
pub async fn next_or_stop(
    sub: &mut async_nats::Subscriber,
    stop: &tokio_util::sync::CancellationToken,
) -> Option<async_nats::Message> {
    use futures::StreamExt;
    tokio::select! {
        _ = stop.cancelled() => None,
        next = sub.next() => next,
    }
}

/// The next message of `sub` that decodes as JSON `T`, or `None` once `stop` is cancelled or
/// the subscription ends. Undecodable messages are logged (not their content) and skipped.
pub async fn next_json<T: serde::de::DeserializeOwned>(
    sub: &mut async_nats::Subscriber,
    stop: &tokio_util::sync::CancellationToken,
) -> Option<T> {
    loop {
        let msg = next_or_stop(sub, stop).await?;
        match serde_json::from_slice(&msg.payload) {
            Ok(value) => return Some(value),
            Err(e) => tracing::warn!(error = %e, subject = %msg.subject, "undecodable payload"),
        }
    }
}

/// The next message pulled from a durable, or `None` once `stop` is cancelled or the pull
/// stream ends. Pull errors (heartbeats missed during a reconnect...) are logged and skipped:
/// the stream keeps pulling.
pub async fn next_pulled(
    messages: &mut async_nats::jetstream::consumer::pull::Stream,
    stop: &tokio_util::sync::CancellationToken,
) -> Option<async_nats::jetstream::Message> {
    use futures::StreamExt;
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return None,
            next = messages.next() => next,
        };
        match next? {
            Ok(msg) => return Some(msg),
            Err(e) => tracing::debug!(error = %e, "pull consumer"),
        }
    }
}

/// Joins `queue` on `subject`; the subscription is live on the server when this returns, so
/// requests sent from other connections right after can already reach it.
pub async fn serve_queue(
    nats: &async_nats::Client,
    subject: &'static str,
    queue: &'static str,
) -> anyhow::Result<async_nats::Subscriber> {
    let sub = nats.queue_subscribe(subject, queue.into()).await?;
    round_trip(nats).await;
    Ok(sub)
}

/// Answers requests from `sub` until `stop`: each with `answer`'s frame (as JSON) on its reply
/// subject, at most `concurrency` at once (further requests wait in the subscription).
/// Requests in progress when `stop` comes are finished.
pub async fn answer_requests<T, F, Fut>(
    nats: async_nats::Client,
    mut sub: async_nats::Subscriber,
    concurrency: usize,
    stop: tokio_util::sync::CancellationToken,
    answer: F,
) -> anyhow::Result<()>
where
    T: serde::Serialize,
    F: Fn(bytes::Bytes) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let tracker = tokio_util::task::TaskTracker::new();
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
    while let Some(msg) = next_or_stop(&mut sub, &stop).await {
        let Some(reply) = msg.reply else {
            continue;
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let answering = answer(msg.payload);
        let nats = nats.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let payload = serde_json::to_vec(&answering.await).expect("answer to JSON");
            if let Err(e) = nats.publish(reply, payload.into()).await {
                tracing::warn!(error = %e, "could not answer a request");
            }
        });
    }
    let _ = sub.unsubscribe().await;
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// The message stream of a shared durable consumer, pulled `batch` at a time.
pub async fn pull(
    consumer: &async_nats::jetstream::consumer::PullConsumer,
    batch: usize,
) -> anyhow::Result<async_nats::jetstream::consumer::pull::Stream> {
    use async_nats::jetstream::consumer::PriorityPolicy;
    let builder = consumer.stream().max_messages_per_batch(batch);
    let builder = if consumer.cached_info().config.priority_policy == PriorityPolicy::PinnedClient {
        builder
            .group(PINNED_GROUP)
            .expires(PINNED_PULL_EXPIRY)
            .heartbeat(PINNED_PULL_EXPIRY / 4)
    } else {
        builder
            .expires(Duration::from_secs(30))
            .heartbeat(Duration::from_secs(5))
    };
    Ok(builder.messages().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comma_separated_url_lists_every_server() {
        assert_eq!(
            server_urls("nats://a:4222, nats://b:4222,nats://c:4222,"),
            ["nats://a:4222", "nats://b:4222", "nats://c:4222"]
        );
        assert_eq!(server_urls("nats://a:4222"), ["nats://a:4222"]);
    }
}
