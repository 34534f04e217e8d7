//! Starting and stopping the history service.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use plumbing::BusConfig;
use plumbing::roles::Roles;
use plumbing::service::Started;
use tokio_util::sync::CancellationToken;

use crate::cache::HistoryCache;
use crate::config::{HistoryConfig, StoreKind};
use crate::membership::{self, Membership};
use crate::queries::{self, Queries};
use crate::receipts::{self, ReceiptMetrics, Receipts};
use crate::store::Store;
use crate::store::embedded::EmbeddedStore;
use crate::store::scylla::ScyllaStore;
use crate::writer;

/// A running history service instance.
pub struct History<S> {
    pub metrics: plumbing::Metrics,
    pub cache: Arc<HistoryCache<S>>,
    /// The partitions this instance writes, as they change.
    pub assigned: plumbing::bus::shares::Assigned,
    roles: Roles,
}

impl<S: Store> History<S> {
    /// Starts the writer, the queries and the receipts over `store`. `membership` says who
    /// is in which group now (the chat service owns it).
    pub async fn start(
        config: HistoryConfig,
        bus: &BusConfig,
        nats: async_nats::Client,
        store: S,
        membership: Arc<dyn Membership>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let js = async_nats::jetstream::new(nats.clone());
        let streams = plumbing::bus::messages_streams(&js, bus).await?;
        let ack_wait = Duration::from_millis(config.writer_ack_wait_ms);
        let metrics = plumbing::Metrics::default();
        let lag = metrics.gauge(
            "natter_history_writer_lag_messages",
            "messages of this instance's partitions not yet written to the store",
        );
        let cache = Arc::new(HistoryCache::new(
            store,
            &config.cache,
            bus.partitions,
            &metrics,
        ));
        let mut roles = Roles::new(&shutdown);
        let stop = roles.stop();
        let (query_sub, receipt_sub) = queries::subscribe(&nats).await?;
        let instance = ulid::Ulid::new().to_string().to_lowercase();
        let (assigned, membership_task) =
            plumbing::bus::shares::join(&js, bus, "history", instance, stop.clone()).await?;
        roles.spawn(membership_task);

        let writers = writer::Writers {
            cache: cache.clone(),
            streams: streams.clone(),
            batch: config.writer_batch,
            ack_wait,
        };
        roles.spawn(plumbing::bus::partition_tasks::run_partitions(
            writers,
            assigned.clone(),
            stop.clone(),
        ));
        let (lag_stop, lag_assigned) = (stop.clone(), assigned.clone());
        let consumers = plumbing::bus::consumer_metrics::ConsumerGauges::register(&metrics);
        roles.spawn(async move {
            writer::report_lag(streams, lag_assigned, lag, consumers, lag_stop).await;
            Ok(())
        });
        let answers = Arc::new(Queries {
            cache: cache.clone(),
            membership: membership.clone(),
            receipt_lists_max: config.receipt_lists_max,
            page_max_bytes: config.page_max_bytes,
        });
        roles.spawn(queries::serve(
            answers,
            nats.clone(),
            query_sub,
            config.max_concurrent_queries,
            stop.clone(),
        ));
        let receipts = Arc::new(Receipts {
            cache: cache.clone(),
            membership,
            nats,
            receipt_lists_max: config.receipt_lists_max,
            metrics: ReceiptMetrics::new(&metrics),
        });
        roles.spawn(receipts::serve(receipts, receipt_sub, stop.clone()));
        tracing::info!("history service started");
        Ok(Self {
            metrics,
            cache,
            assigned,
            roles,
        })
    }

    /// Waits until every task has stopped (after shutdown), returning the first error.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.roles.wait().await
    }

    /// Kills every task at once, as a crash would (tests).
    pub fn abort(self) {
        self.roles.abort();
    }
}

/// Opens the store `config.store` names and starts the service over it, with group membership
/// from the groups bucket (what `natter-history` runs).
pub async fn start(
    config: HistoryConfig,
    bus: &BusConfig,
    nats: async_nats::Client,
    shutdown: CancellationToken,
) -> anyhow::Result<Started> {
    let membership = membership::held_elsewhere(&nats, bus).await?;
    match config.store {
        StoreKind::Embedded => {
            let path = &config.embedded_path;
            let store =
                EmbeddedStore::open(path).with_context(|| format!("opening {}", path.display()))?;
            let history = History::start(config, bus, nats, store, membership, shutdown).await?;
            Ok(Started::new(history.metrics.clone(), history.wait()))
        }
        StoreKind::Scylla => {
            let store = ScyllaStore::connect(&config.scylla).await?;
            let history = History::start(config, bus, nats, store, membership, shutdown).await?;
            Ok(Started::new(history.metrics.clone(), history.wait()))
        }
    }
}

/// Runs the history service over the store `config.store` names until `shutdown`. Shutdown
/// order: every role stops together; the writer acknowledges only batches the store
/// confirmed, so what it held is delivered again after restart, and queries in progress are
/// answered.
pub async fn run(
    config: HistoryConfig,
    bus: &BusConfig,
    nats: async_nats::Client,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    start(config, bus, nats, shutdown).await?.wait().await
}
