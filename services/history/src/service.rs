//! Starting and stopping the history service.

use std::sync::Arc;
use std::time::Duration;

use plumbing::BusConfig;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cache::HistoryCache;
use crate::config::HistoryConfig;
use crate::store::Store;
use crate::{queries, writer};

/// A running history service instance.
pub struct History<S> {
    pub metrics: plumbing::Metrics,
    pub cache: Arc<HistoryCache<S>>,
    tasks: JoinSet<anyhow::Result<()>>,
    stop: CancellationToken,
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
        let stop = shutdown.child_token();
        let (query_sub, receipt_sub) = queries::subscribe(&nats).await?;

        let mut tasks = JoinSet::new();
        tasks.spawn(writer::serve(
            cache.clone(),
            consumer.clone(),
            config.writer_batch,
            stop.clone(),
        ));
        let lag_stop = stop.clone();
        tasks.spawn(async move {
            writer::report_lag(consumer, lag, lag_stop).await;
            Ok(())
        });
        tasks.spawn(queries::serve(
            cache.clone(),
            nats,
            query_sub,
            config.max_concurrent_queries,
            stop.clone(),
        ));
        tasks.spawn(queries::serve_markers(
            cache.clone(),
            receipt_sub,
            stop.clone(),
        ));
        tracing::info!("history service started");
        Ok(Self {
            metrics,
            cache,
            tasks,
            stop,
        })
    }

    /// Waits until every task has stopped (after shutdown), returning the first error.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        while let Some(done) = self.tasks.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::error!(error = %e, "history task failed");
                self.stop.cancel();
                result = Err(e);
            }
        }
        result
    }

    /// Kills every task at once, as a crash would (tests).
    pub fn abort(mut self) {
        self.tasks.abort_all();
        self.stop.cancel();
    }
}
