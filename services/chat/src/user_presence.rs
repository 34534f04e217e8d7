//! The presence role: turns session changes into user presence. A user is online while any
//! of their devices is; when the last one goes (it disconnected, its gateway was drained, or
//! its gateway's lease lapsed and the sweeper removed it), the user is offline and last seen
//! at that moment. Each change is written to the `natter_presence` bucket and published on
//! `natter.presence.<user>`, where gateways pass it to the users watching.
//!
//! Session changes are read from the sessions bucket's stream by the durable consumer
//! `natter-presence`, pinned to one chat instance at a time, so every change is decided once
//! and in order. The decision uses the presence view (which knows every session and lease),
//! after it has applied the change being processed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv};
use bytes::Bytes;
use protocol::payloads::UserPresence;
use protocol::{UserId, subjects};
use tokio_util::sync::CancellationToken;

use crate::metrics::ChatMetrics;
use crate::presence_view::PresenceView;

/// How long to wait for the view to apply a change before deciding with what it has.
const VIEW_PATIENCE: Duration = Duration::from_secs(2);

pub struct UserPresenceRole {
    pub nats: async_nats::Client,
    pub view: PresenceView,
    pub users: kv::Store,
    pub metrics: ChatMetrics,
}

/// Creates the role's durable consumer on the sessions bucket's stream if needed.
pub async fn ensure_consumer(js: &jetstream::Context) -> anyhow::Result<consumer::PullConsumer> {
    let stream = js.get_stream(subjects::SESSIONS_STREAM).await?;
    plumbing::bus::ensure_durable(
        &stream,
        plumbing::bus::Durable {
            name: subjects::PRESENCE_CONSUMER,
            filters: Vec::new(),
            description: "turns session changes into user presence",
            deliver_policy: consumer::DeliverPolicy::New,
            batch: 256,
            ack_wait: Duration::from_secs(30),
            pinned: true,
        },
    )
    .await
}

/// Decides presence changes until `stop`.
pub async fn serve(
    role: Arc<UserPresenceRole>,
    consumer: consumer::PullConsumer,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut messages = plumbing::bus::Pulled::start(&consumer, 256).await?;
    // Users this instance has seen online; others are looked up in the bucket.
    let mut online: HashSet<UserId> = HashSet::new();
    let prefix = format!("$KV.{}.", subjects::SESSIONS_BUCKET);
    while let Some(msg) = messages.next(&stop).await {
        let user = msg
            .subject
            .strip_prefix(prefix.as_str())
            .and_then(|key| key.split('.').next())
            .and_then(|u| UserId::new(u).ok());
        if let (Some(user), Ok(info)) = (user, msg.info()) {
            role.view
                .reach_session_revision(info.stream_sequence, VIEW_PATIENCE)
                .await;
            let at = (info.published.unix_timestamp_nanos() / 1_000_000) as u64;
            role.decide(&user, at, &mut online).await;
        }
        if let Err(e) = msg.ack().await {
            tracing::debug!(error = %e, "presence ack failed; the change is decided again");
        }
    }
    Ok(())
}

impl UserPresenceRole {
    /// Records and announces `user`'s presence if it changed; `at` is when the session
    /// change was written.
    async fn decide(&self, user: &UserId, at: u64, online: &mut HashSet<UserId>) {
        let now_online = !self.view.routes_of(user).is_empty();
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
