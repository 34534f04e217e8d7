//! Starting and stopping the chat service.

use plumbing::bus::consumer_metrics::{self, ConsumerGauges};
use std::sync::Arc;
use std::time::Duration;

use groups::Groups;
use plumbing::BusConfig;
use plumbing::roles::Roles;
use tokio_util::sync::CancellationToken;

use crate::config::ChatConfig;
use crate::group_ops::{self, GroupOps};
use crate::ids::MessageIds;
use crate::ingest::{self, Ingest};
use crate::metrics::ChatMetrics;
use crate::notify;
use crate::presence::{self, Directory};
use crate::receipts;
use crate::router::Router;
use crate::routers::{self, Routers};
use crate::typing;
use crate::undelivered;

/// A running chat service instance.
pub struct Chat {
    pub metrics: plumbing::Metrics,
    roles: Roles,
}

impl Chat {
    /// Ensures the stream and consumer exist, then starts the enabled roles.
    pub async fn start(
        config: ChatConfig,
        bus: &BusConfig,
        nats: async_nats::Client,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let js = async_nats::jetstream::new(nats.clone());
        let streams = plumbing::bus::ensure_messages_streams(&js, bus).await?;
        plumbing::bus::ensure_offline_stream(&js, bus).await?;
        let ack_wait = Duration::from_millis(config.router_ack_wait_ms);
        // Every partition's router consumer exists before anything is persisted, so that a
        // message persisted before any router ran is still routed.
        for k in 0..bus.partitions {
            routers::ensure_consumer(streams.get(k), k, config.router_batch, ack_wait).await?;
        }
        let metrics = ChatMetrics::new();
        let mut roles = Roles::new(&shutdown);
        let stop = roles.stop();
        roles.spawn({
            let (js, streams, stop) = (js.clone(), streams.clone(), stop.clone());
            async move {
                plumbing::bus::leaders::keep_spread(js, streams, stop).await;
                Ok(())
            }
        });
        let groups_bucket = plumbing::bus::ensure_groups_bucket(&js, bus).await?;
        groups::layout::shard_keys(&js, &groups_bucket, bus.partitions).await?;
        // Groups are held with their shard by the instance routing it; an instance that does
        // not route holds none and asks.
        let mut groups = Groups::new(nats.clone(), groups_bucket.clone(), bus.partitions, None);
        let ids = Arc::new(MessageIds::default());

        if config.route {
            let buckets = plumbing::bus::ensure_presence_buckets(&js, bus).await?;
            let sweep = Duration::from_millis(config.presence_sweep_ms);
            presence::delete_unsharded_consumer(&js).await;
            let directory = Directory::start(
                &js,
                buckets,
                groups_bucket.clone(),
                bus.partitions,
                sweep,
                metrics.clone(),
                stop.clone(),
            )
            .await?;
            let epoch = streams.epoch();
            let holder: Arc<dyn groups::Holder> = Arc::new(directory.clone());
            groups = Groups::new(
                nats.clone(),
                groups_bucket.clone(),
                bus.partitions,
                Some(holder),
            );
            let router = Arc::new(Router {
                nats: nats.clone(),
                directory: directory.clone(),
                groups: groups.clone(),
                config: config.clone(),
                metrics: metrics.clone(),
                epoch,
                partitions: bus.partitions,
            });
            let instance = ulid::Ulid::new().to_string().to_lowercase();
            let (assigned, membership_task) =
                plumbing::bus::shares::join(&js, bus, "router", instance, stop.clone()).await?;
            roles.spawn(membership_task);
            // Session shard k is held where partition k is routed.
            roles.spawn({
                let assigned = assigned.clone();
                async move {
                    directory.follow_assignment(assigned).await;
                    Ok(())
                }
            });
            let routers = Routers {
                router: router.clone(),
                streams: streams.clone(),
                batch: config.router_batch,
                ack_wait,
            };
            roles.spawn(plumbing::bus::partition_tasks::run_partitions(
                routers,
                assigned.clone(),
                stop.clone(),
            ));
            let consumers = ConsumerGauges::register(&metrics.registry);
            let (streams, report_stop) = (streams.clone(), stop.clone());
            roles.spawn(async move {
                let name = protocol::subjects::router;
                consumer_metrics::report_partitions(
                    streams,
                    assigned,
                    name,
                    consumers,
                    |_| {},
                    report_stop,
                )
                .await;
                Ok(())
            });
            let sub = receipts::subscribe(&nats).await?;
            roles.spawn(receipts::serve(router.clone(), sub, stop.clone()));
            let sub = typing::subscribe(&nats).await?;
            roles.spawn(typing::serve(router.clone(), sub, stop.clone()));
            let sub = undelivered::subscribe(&nats).await?;
            roles.spawn(undelivered::serve(router.clone(), sub, stop.clone()));
            let sub = notify::subscribe(&nats).await?;
            roles.spawn(notify::serve(router.clone(), sub, stop.clone()));
        }
        if config.ingest {
            // Contact checks and replies wait for history to catch up before saying no.
            let history_floor = plumbing::bus::HistoryFloor::new(streams.clone());
            let sub = group_ops::subscribe(&nats).await?;
            let ops = Arc::new(GroupOps {
                config: config.clone(),
                nats: nats.clone(),
                js: js.clone(),
                bucket: groups_bucket,
                partitions: bus.partitions,
                groups: groups.clone(),
                ids: ids.clone(),
                metrics: metrics.clone(),
                history_floor: history_floor.clone(),
            });
            roles.spawn(group_ops::serve(ops, sub, stop.clone()));
            let attachments = plumbing::bus::ensure_attachments(&js, bus).await?;
            roles.spawn(crate::attachments::sweep(
                attachments.clone(),
                Duration::from_secs(config.unsent_attachment_ttl_secs),
                Duration::from_secs(config.attachment_sweep_secs.max(1)),
                stop.clone(),
            ));
            let sub = ingest::subscribe(&nats).await?;
            let ingest = Arc::new(Ingest {
                attachments,
                config: config.clone(),
                nats,
                js,
                streams,
                partitions: bus.partitions,
                metrics: metrics.clone(),
                ids,
                groups,
                history_floor,
            });
            roles.spawn(ingest::serve(ingest, sub, stop.clone()));
        }
        tracing::info!(
            ingest = config.ingest,
            route = config.route,
            "chat service started"
        );
        Ok(Self {
            metrics: metrics.registry,
            roles,
        })
    }

    /// Waits until every role has stopped (after shutdown), returning the first error.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.roles.wait().await
    }

    /// Kills every role at once, as a crash would (tests).
    pub fn abort(self) {
        self.roles.abort();
    }
}

/// Runs the chat service until `shutdown`. Shutdown order: stop taking new sends (in-flight
/// ones are answered), stop routing (unacknowledged messages are routed again by another
/// instance or after restart), stop watching presence.
pub async fn run(
    config: ChatConfig,
    bus: &BusConfig,
    nats: async_nats::Client,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    Chat::start(config, bus, nats, shutdown).await?.wait().await
}
