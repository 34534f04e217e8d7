//! Starting and stopping the history service.

use std::sync::Arc;
use std::time::Duration;

use plumbing::BusConfig;
use plumbing::roles::Roles;
use tokio_util::sync::CancellationToken;

use crate::cache::HistoryCache;
use crate::config::HistoryConfig;
use crate::store::Store;
use crate::{queries, writer};

/// A running history service instance.
pub struct History<S> {
    pub metrics: plumbing::Metrics,
    pub cache: Arc<HistoryCache<S>>,
    roles: Roles,
}

impl<S: Store> History<S> {
    /// Starts the writer, the queries and the read markers over `store`.
    pub async fn start(
        config: HistoryConfig,
        bus: &BusConfig,
        nats: async_nats::Client,
        store: S,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let js = async_nats::jetstream::new(nats.clone());
        let stream = plumbing::bus::ensure_messages_stream(&js, bus).await?;
        let ack_wait = Duration::from_millis(config.writer_ack_wait_ms);
        let consumer = writer::ensure_consumer(&stream, config.writer_batch, ack_wait).await?;
        let metrics = plumbing::Metrics::default();
        let lag = metrics.gauge(
            "natter_history_writer_lag_messages",
            "messages in the stream not yet written to the store",
        );
        let cache = Arc::new(HistoryCache::new(store, &config.cache, &metrics));
        let mut roles = Roles::new(&shutdown);
        let stop = roles.stop();
        let (query_sub, receipt_sub) = queries::subscribe(&nats).await?;

        roles.spawn(writer::serve(
            cache.clone(),
            consumer.clone(),
            config.writer_batch,
            stop.clone(),
        ));
        let lag_stop = stop.clone();
        roles.spawn(async move {
            writer::report_lag(consumer, lag, lag_stop).await;
            Ok(())
        });
        roles.spawn(queries::serve(
            cache.clone(),
            nats,
            query_sub,
            config.max_concurrent_queries,
            stop.clone(),
        ));
        roles.spawn(queries::serve_markers(
            cache.clone(),
            receipt_sub,
            stop.clone(),
        ));
        tracing::info!("history service started");
        Ok(Self {
            metrics,
            cache,
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
