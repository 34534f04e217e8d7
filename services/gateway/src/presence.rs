//! Presence registration for routing. Each session is one key in `natter_sessions`, written at
//! connect and purged at disconnect. Liveness is one lease per gateway in `natter_gateways`,
//! refreshed every third of its TTL: upkeep costs one KV write per gateway, not one per user.
//! When the lease lapses (the gateway died or was cut off), the chat service counts all of
//! the gateway's sessions as offline.
//!
//! A registration also appends a session marker to the messages stream, naming the revisions
//! just written. The router reads markers in order with the messages and waits, at a marker,
//! until its presence view has those revisions: a message written after a device registered
//! is therefore always routed to it, and everything before is the device's replay.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::future::BoxFuture;
use plumbing::bus::PresenceBuckets;
use protocol::payloads::{GatewayLease, SessionEntry, SessionMarker, UserPresence};
use protocol::{ConnId, GatewayId, UserId, subjects};
use tokio_util::sync::CancellationToken;

/// How long a purge marker stays in the sessions bucket: long enough for every watcher to see
/// it, short enough that disconnected sessions leave nothing behind.
const MARKER_TTL: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Presence {
    sessions: kv::Store,
    gateways: kv::Store,
    users: kv::Store,
    js: jetstream::Context,
    gateway: GatewayId,
    boot: ConnId,
    lease_ttl: Duration,
    /// Revision of the lease's last write, named in session markers.
    lease_revision: Arc<AtomicU64>,
}

impl Presence {
    pub fn new(
        buckets: PresenceBuckets,
        js: jetstream::Context,
        gateway: GatewayId,
        boot: ConnId,
        lease_ttl: Duration,
    ) -> Self {
        Self {
            sessions: buckets.sessions,
            gateways: buckets.gateways,
            users: buckets.users,
            js,
            lease_revision: Arc::default(),
            gateway,
            boot,
            lease_ttl,
        }
    }

    // `register` and `unregister` return boxed futures built in a plain function: the KV
    // futures are large and every session awaits them once, so keeping them out of the
    // session's own state machine saves memory on every idle connection.

    pub fn register(&self, user: &UserId, conn: ConnId) -> BoxFuture<'static, anyhow::Result<()>> {
        let entry = SessionEntry {
            user: user.clone(),
            gateway: self.gateway.clone(),
            conn,
        };
        let key = subjects::session_key(user, &self.gateway, conn);
        let sessions = self.sessions.clone();
        let js = self.js.clone();
        let lease_revision = self.lease_revision.clone();
        Box::pin(async move {
            let session_revision = sessions
                .put(key, Bytes::from(serde_json::to_vec(&entry)?))
                .await?;
            let marker = SessionMarker {
                user: entry.user,
                gateway: entry.gateway,
                conn,
                session_revision,
                lease_revision: lease_revision.load(Ordering::Acquire),
            };
            js.publish(
                subjects::SESSION_MARKERS,
                serde_json::to_vec(&marker)?.into(),
            )
            .await?
            .await?;
            Ok(())
        })
    }

    pub fn unregister(
        &self,
        user: &UserId,
        conn: ConnId,
    ) -> BoxFuture<'static, anyhow::Result<()>> {
        let key = subjects::session_key(user, &self.gateway, conn);
        let sessions = self.sessions.clone();
        Box::pin(async move {
            sessions.purge_with_ttl(key, MARKER_TTL).await?;
            Ok(())
        })
    }

    /// A user's recorded presence (offline and never seen if nothing is recorded).
    pub async fn of_user(&self, user: &UserId) -> anyhow::Result<UserPresence> {
        let recorded = self.users.get(user.as_str()).await?;
        Ok(recorded
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or(UserPresence {
                user: user.clone(),
                online: false,
                last_seen: None,
            }))
    }

    /// Writes the lease now and then every third of its TTL until `stop`; removes it on stop.
    pub async fn keep_lease(self, stop: CancellationToken) {
        let every = self.lease_ttl / 3;
        loop {
            if let Err(e) = self.put_lease().await {
                // A lapse of one refresh is absorbed by the TTL; keep trying.
                tracing::warn!(error = %e, "presence lease refresh failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => break,
            }
        }
    }

    pub async fn put_lease(&self) -> anyhow::Result<()> {
        let lease = GatewayLease {
            gateway: self.gateway.clone(),
            boot: self.boot,
            ttl_ms: self.lease_ttl.as_millis() as u64,
        };
        let revision = self
            .gateways
            .put(
                subjects::lease_key(&self.gateway),
                Bytes::from(serde_json::to_vec(&lease)?),
            )
            .await?;
        self.lease_revision.fetch_max(revision, Ordering::AcqRel);
        Ok(())
    }

    /// Removes the lease at once, so the chat service drops this gateway's sessions without
    /// waiting for the TTL (drain on shutdown).
    pub async fn release_lease(&self) -> anyhow::Result<()> {
        self.gateways
            .purge_with_ttl(subjects::lease_key(&self.gateway), MARKER_TTL)
            .await?;
        Ok(())
    }
}
