//! The presence role, one per session shard: turns a shard's session changes into user
//! presence. A user is online while any of their devices is; when the last one goes (it
//! disconnected, its gateway was drained, or its gateway's lease lapsed and the sweeper
//! removed it), the user is offline and last seen at that moment. Each change is written to
//! the `natter_presence` bucket and published on `natter.presence.<user>`, where gateways
//! pass it to the users watching.
//!
//! Shard `k`'s session changes are read from the sessions bucket's stream by the durable
//! consumer `natter-presence-<k>`, filtered to the shard's keys and pinned to the instance
//! holding the shard, so every change is decided once and in order. The decision uses the
//! shard's view after it has applied the change being processed.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv};
use bytes::Bytes;
use protocol::payloads::UserPresence;
use protocol::{UserId, subjects};
use tokio_util::sync::CancellationToken;

use super::directory::Directory;
use crate::metrics::ChatMetrics;

/// How long to wait for the view to apply a change before deciding with what it has.
const VIEW_PATIENCE: Duration = Duration::from_secs(2);
/// Pause before a decider that could not start, or lost its consumer, starts again.
const RESTART: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub(crate) struct Decider {
    pub nats: async_nats::Client,
    pub users: kv::Store,
    pub metrics: ChatMetrics,
}

impl Decider {
    /// Decides shard `k`'s presence changes until `stop` (the shard is given up).
    pub async fn run(self, directory: Directory, k: u32, stop: CancellationToken) {
        let js = jetstream::new(self.nats.clone());
        while !stop.is_cancelled() {
            if let Err(e) = self.decide_shard(&js, &directory, k, &stop).await {
                tracing::warn!(error = %e, shard = k, "presence decider stopped");
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(RESTART) => {}
            }
        }
    }

    /// Releases shard `k`'s pin, so the next holder decides at once.
    pub async fn release(&self, js: &jetstream::Context, k: u32) {
        let stream = match js.get_stream(subjects::SESSIONS_STREAM).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "sessions stream not found to release a pin");
                return;
            }
        };
        let consumer = subjects::presence_decider(k);
        if let Err(e) = plumbing::bus::release_pin(&stream, &consumer).await {
            tracing::debug!(error = %e, shard = k, "presence pin not released");
        }
    }

    async fn decide_shard(
        &self,
        js: &jetstream::Context,
        directory: &Directory,
        k: u32,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        let consumer = ensure_consumer(js, k).await?;
        let mut messages = plumbing::bus::Pulled::start(&consumer, 256).await?;
        // Users this instance has seen online; others are looked up in the bucket.
        let mut online: HashSet<UserId> = HashSet::new();
        let prefix = format!("$KV.{}.{k}.", subjects::SESSIONS_BUCKET);
        while let Some(msg) = messages.next(stop).await {
            let user = msg
                .subject
                .strip_prefix(prefix.as_str())
                .and_then(|key| key.split('.').next())
                .and_then(|u| UserId::new(u).ok());
            if let (Some(user), Ok(info)) = (user, msg.info()) {
                directory
                    .reach_session_revision(k, info.stream_sequence, VIEW_PATIENCE)
                    .await;
                let at = (info.published.unix_timestamp_nanos() / 1_000_000) as u64;
                let now_online = !directory.local_routes_of(&user).is_empty();
                self.decide(&user, now_online, at, &mut online).await;
            }
            if let Err(e) = msg.ack().await {
                tracing::debug!(error = %e, "presence ack failed; the change is decided again");
            }
        }
        Ok(())
    }

    /// Records and announces `user`'s presence if it changed; `at` is when the session
    /// change was written.
    async fn decide(&self, user: &UserId, now_online: bool, at: u64, online: &mut HashSet<UserId>) {
        if now_online && online.contains(user) {
            return;
        }
        let recorded = self.recorded(user).await;
        online.remove(user);
        if now_online {
            online.insert(user.clone());
        }
        if recorded.as_ref().map(|p| p.online) == Some(now_online) {
            return;
        }
        let presence = UserPresence {
            user: user.clone(),
            online: now_online,
            last_seen: if now_online {
                recorded.and_then(|p| p.last_seen)
            } else {
                Some(at)
            },
        };
        let payload = Bytes::from(serde_json::to_vec(&presence).expect("presence to JSON"));
        if let Err(e) = self.users.put(user.as_str(), payload.clone()).await {
            plumbing::jetstream_error("kv");
            tracing::warn!(error = %e, "presence not recorded");
        }
        if let Err(e) = self.nats.publish(subjects::presence(user), payload).await {
            tracing::debug!(error = %e, "presence change not published");
        }
        self.metrics.presence_changes.inc();
    }

    async fn recorded(&self, user: &UserId) -> Option<UserPresence> {
        match self.users.get(user.as_str()).await {
            Ok(Some(v)) => serde_json::from_slice(&v).ok(),
            _ => None,
        }
    }
}

/// Creates shard `k`'s durable consumer on the sessions bucket's stream if needed.
async fn ensure_consumer(
    js: &jetstream::Context,
    k: u32,
) -> anyhow::Result<consumer::PullConsumer> {
    let stream = js.get_stream(subjects::SESSIONS_STREAM).await?;
    plumbing::bus::ensure_durable(
        &stream,
        plumbing::bus::Durable {
            name: &subjects::presence_decider(k),
            filters: vec![subjects::session_shard_filter(k)],
            description: "turns one session shard's changes into user presence",
            deliver_policy: consumer::DeliverPolicy::New,
            batch: 256,
            ack_wait: Duration::from_secs(30),
            pinned: true,
        },
    )
    .await
}

/// Deletes the one presence consumer of before sessions were sharded, if it is still there:
/// it would hold every session change of the deployment for ever.
pub async fn delete_unsharded_consumer(js: &jetstream::Context) {
    let Ok(stream) = js.get_stream(subjects::SESSIONS_STREAM).await else {
        return;
    };
    if stream
        .consumer_info(subjects::PRESENCE_CONSUMER)
        .await
        .is_ok()
    {
        match stream.delete_consumer(subjects::PRESENCE_CONSUMER).await {
            Ok(_) => tracing::info!("deleted the unsharded presence consumer"),
            Err(e) => tracing::debug!(error = %e, "unsharded presence consumer not deleted"),
        }
    }
}
