//! Presence registration for routing. Each session is one key in `natter_sessions`, written at
//! connect and purged at disconnect. Liveness is one lease per gateway in `natter_gateways`,
//! refreshed every third of its TTL: upkeep costs one KV write per gateway, not one per user.
//! When the lease lapses (the gateway died or was cut off), the chat service counts all of
//! the gateway's sessions as offline.
//!
//! The lease is written over a NATS connection of its own. A reconnect storm sends thousands
//! of replay reads over the gateway's main connection, and a write queued behind them (in
//! the client's buffer and in the server's read loop for that connection) waited seconds;
//! a lease that lapses takes every user of the gateway offline. A refresh that fails is
//! tried again after `LEASE_RETRY`, not a third of the TTL later.
//!
//! A registration also appends a session marker to every partition's messages stream, naming
//! the revisions just written. Each partition's router reads its markers in order with the
//! messages and waits, at a marker, until its presence view has those revisions: a message
//! written after a device registered is therefore always routed to it, and everything before
//! is the device's replay.
//!
//! Markers are appended in batches: registrations that arrive while a batch is being written
//! share the next marker of each partition, which names the newest revisions among them (a
//! router that has applied those has applied every registration before them). So a
//! reconnect storm writes about one marker per partition per round trip, not one per device
//! and partition.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::future::BoxFuture;
use plumbing::bus::PresenceBuckets;
use plumbing::{Counter, Histogram};
use protocol::payloads::{GatewayLease, Registration, SessionEntry, SessionMarker, UserPresence};
use protocol::{ConnId, GatewayId, UserId, subjects};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::metrics::GatewayMetrics;

/// How long a purge marker stays in the sessions bucket: long enough for every watcher to see
/// it, short enough that disconnected sessions leave nothing behind.
const MARKER_TTL: Duration = Duration::from_secs(60);
/// Pause before a failed lease refresh is tried again.
const LEASE_RETRY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Presence {
    sessions: kv::Store,
    gateways: kv::Store,
    users: kv::Store,
    gateway: GatewayId,
    boot: ConnId,
    lease_ttl: Duration,
    /// The deployment's partition count, which is also its session shard count.
    shards: u32,
    /// Revision of the lease's last write, named in session markers.
    lease_revision: Arc<AtomicU64>,
    /// Registrations waiting for their marker, and where to say it is written.
    markers: mpsc::UnboundedSender<(SessionMarker, oneshot::Sender<MarkerWritten>)>,
    lease_writes: Histogram,
    lease_write_failures: Counter,
    /// When the lease was last written, and whether a write failed since.
    lease_health: Arc<Mutex<LeaseHealth>>,
}

#[derive(Default)]
struct LeaseHealth {
    written_at: Option<Instant>,
    failed_since: bool,
}

impl Presence {
    pub fn new(
        buckets: PresenceBuckets,
        js: jetstream::Context,
        gateway: GatewayId,
        boot: ConnId,
        lease_ttl: Duration,
        partitions: u32,
        metrics: &GatewayMetrics,
    ) -> Self {
        let (markers, waiting) = mpsc::unbounded_channel();
        tokio::spawn(append_markers(js, partitions, waiting));
        Self {
            markers,
            lease_writes: metrics.lease_writes.clone(),
            lease_write_failures: metrics.lease_write_failures.clone(),
            sessions: buckets.sessions,
            gateways: buckets.gateways,
            users: buckets.users,
            lease_revision: Arc::default(),
            lease_health: Arc::default(),
            gateway,
            boot,
            lease_ttl,
            shards: partitions,
        }
    }

    /// Whether the lease has been refreshed without a failure and lately enough (within half
    /// its TTL) that no chat service can have counted it lapsed: then none has purged this
    /// gateway's sessions, and they need not be registered again after a reconnect.
    pub fn lease_unbroken(&self) -> bool {
        let health = self.lease_health.lock().unwrap();
        !health.failed_since
            && health
                .written_at
                .is_some_and(|at| at.elapsed() < self.lease_ttl / 2)
    }

    fn lease_written(&self, ok: bool) {
        let mut health = self.lease_health.lock().unwrap();
        if ok {
            health.written_at = Some(Instant::now());
        }
        health.failed_since = !ok;
    }

    // `register` and `unregister` return boxed futures built in a plain function: the KV
    // futures are large and every session awaits them once, so keeping them out of the
    // session's own state machine saves memory on every idle connection.

    /// Registers a session; returns the stream sequence of its marker in each partition:
    /// every message after them is routed to the session, and a replay for it reads up to
    /// them (see `crate::replay`).
    pub fn register(
        &self,
        user: &UserId,
        conn: ConnId,
    ) -> BoxFuture<'static, anyhow::Result<Vec<u64>>> {
        let entry = SessionEntry {
            user: user.clone(),
            gateway: self.gateway.clone(),
            conn,
        };
        let key = subjects::session_key(user, &self.gateway, conn, self.shards);
        let sessions = self.sessions.clone();
        let markers = self.markers.clone();
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
                registered: Vec::new(),
            };
            let (written, done) = oneshot::channel();
            markers
                .send((marker, written))
                .map_err(|_| anyhow::anyhow!("the gateway is stopping"))?;
            done.await
                .map_err(|_| anyhow::anyhow!("the gateway is stopping"))?
                .map_err(|e| anyhow::anyhow!(e))
        })
    }

    pub fn unregister(
        &self,
        user: &UserId,
        conn: ConnId,
    ) -> BoxFuture<'static, anyhow::Result<()>> {
        let key = subjects::session_key(user, &self.gateway, conn, self.shards);
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

    /// Writes the lease now and then every third of its TTL until `stop` (a failed write is
    /// tried again within `LEASE_RETRY`). The lease says deliveries reach this gateway, so it
    /// is not refreshed while `deliveries`, the connection they arrive on, is down: the lease
    /// connection may be on a cluster node that is still up.
    pub async fn keep_lease(self, deliveries: async_nats::Client, stop: CancellationToken) {
        let every = self.lease_ttl / 3;
        loop {
            let written = match deliveries.connection_state() {
                async_nats::connection::State::Connected => self.put_lease().await,
                _ => Err(anyhow::anyhow!("the delivery connection is down")),
            };
            let pause = match written {
                Ok(()) => every,
                Err(e) => {
                    // One lapse is absorbed by the TTL; keep trying.
                    self.lease_written(false);
                    plumbing::jetstream_error("kv");
                    tracing::warn!(error = %e, "presence lease refresh failed");
                    LEASE_RETRY.min(every)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
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
        let started = Instant::now();
        let written = self
            .gateways
            .put(
                subjects::lease_key(&self.gateway),
                Bytes::from(serde_json::to_vec(&lease)?),
            )
            .await;
        self.lease_writes.observe(started.elapsed());
        self.lease_written(written.is_ok());
        let revision = written.inspect_err(|_| self.lease_write_failures.inc())?;
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

/// Registrations taken in one batch at most.
const MARKER_BATCH: usize = 4096;

/// Appends markers for waiting registrations, a batch at a time, until the presence is
/// dropped. One marker per partition names the newest revisions of the batch.
async fn append_markers(
    js: jetstream::Context,
    partitions: u32,
    mut waiting: mpsc::UnboundedReceiver<(SessionMarker, oneshot::Sender<MarkerWritten>)>,
) {
    while let Some(first) = waiting.recv().await {
        let mut batch = vec![first];
        while batch.len() < MARKER_BATCH
            && let Ok(more) = waiting.try_recv()
        {
            batch.push(more);
        }
        let mut marker = batch.last().expect("one at least").0.clone();
        marker.session_revision = batch
            .iter()
            .map(|(m, _)| m.session_revision)
            .max()
            .unwrap_or(0);
        marker.lease_revision = batch
            .iter()
            .map(|(m, _)| m.lease_revision)
            .max()
            .unwrap_or(0);
        marker.registered = batch
            .iter()
            .map(|(m, _)| Registration {
                user: m.user.clone(),
                session_revision: m.session_revision,
            })
            .collect();
        let written = write_marker(&js, partitions, &marker)
            .await
            .map_err(|e| e.to_string());
        for (_, done) in batch {
            let _ = done.send(written.clone());
        }
    }
}

/// A marker's stream sequence in each partition, or why it could not be written.
type MarkerWritten = Result<Vec<u64>, String>;

/// One marker in every partition, acknowledged; its sequence in each.
async fn write_marker(
    js: &jetstream::Context,
    partitions: u32,
    marker: &SessionMarker,
) -> anyhow::Result<Vec<u64>> {
    let payload = Bytes::from(serde_json::to_vec(marker)?);
    let mut acks = Vec::with_capacity(partitions as usize);
    for k in 0..partitions {
        acks.push(
            js.publish(subjects::session_markers(k), payload.clone())
                .await?,
        );
    }
    let mut seqs = Vec::with_capacity(acks.len());
    for ack in acks {
        seqs.push(ack.await?.sequence);
    }
    Ok(seqs)
}
