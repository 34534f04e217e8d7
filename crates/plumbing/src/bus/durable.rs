//! Durable pull consumers that several service instances share, optionally pinned to one
//! instance at a time (JetStream's pinned-client priority policy): creating them, pulling
//! from them, and handing the pin over on shutdown.

use std::time::Duration;

use async_nats::jetstream::consumer::{self, PullConsumer};
use async_nats::jetstream::stream;

/// The priority group of pinned durables (see [`Durable::pinned`]).
const PINNED_GROUP: &str = "natter";
/// How long a pinned instance keeps its pin without pulling; the standby takes over after it.
const PIN_TIMEOUT: Duration = Duration::from_secs(6);
/// Pull expiry for pinned durables, well below [`PIN_TIMEOUT`] so a live instance keeps its pin.
const PINNED_PULL_EXPIRY: Duration = Duration::from_secs(2);

/// How long to delay the redelivery of messages a stopping instance hands back (a NAK with
/// this delay): longer than a pinned pull request lives, so they cannot land in the pull
/// request this instance left behind and go to whichever instance pulls next.
pub const HANDOVER_DELAY: Duration = Duration::from_secs(3);

/// A durable pull consumer that several service instances share (each message goes to one
/// of them, and is redelivered if not acknowledged within `ack_wait`).
pub struct Durable<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub deliver_policy: consumer::DeliverPolicy,
    /// Only the stream's messages on these subjects (wildcards allowed); none: all of them.
    pub filters: Vec<String>,
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
) -> anyhow::Result<PullConsumer> {
    let max_ack_pending = durable.batch * 4;
    ensure_holding_durable(stream, durable, max_ack_pending).await
}

/// As [`ensure_durable`], for a consumer that holds messages unacknowledged for a long time
/// (the notifier, over its batching window): up to `max_ack_pending` of them.
pub async fn ensure_holding_durable(
    stream: &stream::Stream,
    durable: Durable<'_>,
    max_ack_pending: usize,
) -> anyhow::Result<PullConsumer> {
    let config = consumer::pull::Config {
        durable_name: Some(durable.name.into()),
        description: Some(durable.description.into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: durable.ack_wait,
        max_ack_pending: max_ack_pending as i64,
        deliver_policy: durable.deliver_policy,
        filter_subjects: durable.filters.clone(),
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

/// The message stream of a shared durable consumer, pulled `batch` at a time.
pub(super) async fn pull(
    consumer: &PullConsumer,
    batch: usize,
) -> anyhow::Result<consumer::pull::Stream> {
    let builder = consumer.stream().max_messages_per_batch(batch);
    let pinned =
        consumer.cached_info().config.priority_policy == consumer::PriorityPolicy::PinnedClient;
    let builder = if pinned {
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

/// Releases this instance's pin on a pinned durable, so a standby (or this service,
/// restarted) takes over at once instead of after the pin timeout. Call it after the last
/// pull has stopped.
pub async fn release_pin(stream: &stream::Stream, consumer: &str) -> anyhow::Result<()> {
    stream
        .unpin_consumer(consumer, PINNED_GROUP)
        .await
        .map_err(|e| anyhow::anyhow!("cannot unpin consumer {consumer}: {e}"))
}
