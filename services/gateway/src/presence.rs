//! Presence registration for routing. Each session is one key in `natter_sessions`, written at
//! connect and purged at disconnect. Liveness is one lease per gateway in `natter_gateways`,
//! refreshed every third of its TTL: upkeep costs one KV write per gateway, not one per user.
//! When the lease lapses (the gateway died or was cut off), the chat service counts all of
//! the gateway's sessions as offline.

use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::future::BoxFuture;
use plumbing::bus::PresenceBuckets;
use protocol::payloads::{GatewayLease, SessionEntry, UserPresence};
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
    gateway: GatewayId,
    boot: ConnId,
    lease_ttl: Duration,
}

impl Presence {
    pub fn new(
        buckets: PresenceBuckets,
        gateway: GatewayId,
        boot: ConnId,
        lease_ttl: Duration,
    ) -> Self {
        Self {
            sessions: buckets.sessions,
            gateways: buckets.gateways,
            users: buckets.users,
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
        Box::pin(async move {
            sessions
                .put(key, Bytes::from(serde_json::to_vec(&entry)?))
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
        self.gateways
            .put(
                subjects::lease_key(&self.gateway),
                Bytes::from(serde_json::to_vec(&lease)?),
            )
            .await?;
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
