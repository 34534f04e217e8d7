//! Starting and stopping the notifier.

use plumbing::bus::consumer_metrics::{self, ConsumerGauges};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer;
use plumbing::BusConfig;
use plumbing::roles::Roles;
use protocol::subjects;
use tokio_util::sync::CancellationToken;

use crate::batcher::Batcher;
use crate::config::{NotifierConfig, ProviderKind};
use crate::delivery::Courier;
use crate::metrics::NotifierMetrics;
use crate::provider::{LogProvider, Provider};
use crate::webhook::WebhookProvider;

/// Events pulled at once, at most.
const PULL_BATCH: usize = 256;

/// A running notifier instance.
pub struct Notifier {
    pub metrics: plumbing::Metrics,
    roles: Roles,
}

impl Notifier {
    /// Ensures the offline-message stream, its consumer and the buckets it reads, then starts
    /// batching.
    ///
    /// The consumer `natter-notifier` is **pinned**: JetStream delivers its events to one
    /// instance at a time (the others stand by and take over within seconds when it stops
    /// pulling), so in normal operation one instance holds every user's window and no digest
    /// is sent twice. Sharing the consumer unpinned would spread one user's events over
    /// several instances, each sending its own partial digest; partitioning by user is not
    /// possible because one event names up to 1,000 users. A digest is still delivered at
    /// least once: after a crash, or while a cut-off instance keeps sending, a digest may go
    /// out twice (its `id` lets the receiver tell).
    pub async fn start(
        config: NotifierConfig,
        bus: &BusConfig,
        nats: async_nats::Client,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        config.check()?;
        let metrics = NotifierMetrics::new();
        let provider: Box<dyn Provider> = match config.provider {
            ProviderKind::Log => Box::new(LogProvider),
            ProviderKind::Webhook => Box::new(WebhookProvider::new(
                &config.webhook_url,
                Duration::from_millis(config.webhook_timeout_ms),
                metrics.clone(),
            )?),
        };
        let js = async_nats::jetstream::new(nats.clone());
        let stream = plumbing::bus::offline_stream(&js, bus).await?;
        let presence = plumbing::bus::ensure_bucket(&js, &plumbing::bus::PRESENCE, bus).await?;
        let tokens = plumbing::bus::ensure_push_tokens_bucket(&js, bus).await?;
        let batch = PULL_BATCH.min(config.max_pending_events);
        let consumer = plumbing::bus::ensure_holding_durable(
            &stream,
            plumbing::bus::Durable {
                name: subjects::NOTIFIER_CONSUMER,
                filters: Vec::new(),
                description: "batches offline-message events into push digests",
                deliver_policy: consumer::DeliverPolicy::All,
                batch,
                ack_wait: Duration::from_millis(config.ack_wait_ms),
                pinned: true,
            },
            config.max_pending_events,
        )
        .await?;
        let presence_events = nats.subscribe(subjects::PRESENCE_ALL).await?;
        plumbing::bus::round_trip(&nats).await;

        let provider_kind = config.provider;
        let window_ms = config.window_ms;
        let courier = Arc::new(Courier {
            config,
            provider,
            presence,
            tokens,
            metrics: metrics.clone(),
        });
        let mut roles = Roles::new(&shutdown);
        let stop = roles.stop();
        let consumers = ConsumerGauges::register(&metrics.registry);
        roles.spawn({
            let (stream, stop) = (stream.clone(), stop.clone());
            async move {
                consumer_metrics::report_one(stream, subjects::NOTIFIER_CONSUMER, consumers, stop)
                    .await;
                Ok(())
            }
        });
        roles.spawn(Batcher::new(courier).serve(stream, consumer, batch, presence_events, stop));
        tracing::info!(provider = ?provider_kind, window_ms, "notifier started");
        Ok(Self {
            metrics: metrics.registry,
            roles,
        })
    }

    /// Waits until the notifier has stopped (after shutdown) and handed back what it held.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.roles.wait().await
    }

    /// Kills it at once, as a crash would (tests): held events come again after the ack wait.
    pub fn abort(self) {
        self.roles.abort();
    }
}

/// Runs the notifier until `shutdown`. Shutdown order: stop pulling events, stop the
/// deliveries in flight, hand every held event back to JetStream, release the consumer's pin.
pub async fn run(
    config: NotifierConfig,
    bus: &BusConfig,
    nats: async_nats::Client,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    Notifier::start(config, bus, nats, shutdown)
        .await?
        .wait()
        .await
}
