//! The gateways' leases, as the session shards need them: one per gateway (thousands, not
//! millions), so every chat instance that routes follows them all.
//!
//! Lease clocks run only while this service can see refreshes: the sweeper pauses while its
//! own NATS connection is down, and after a reconnect every lease that lapsed meanwhile gets
//! a full TTL again. Otherwise a NATS outage longer than the TTL would take every gateway
//! offline here, and the purges queued during it would land after the gateways re-registered.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use plumbing::kv_follow::Progress;
use protocol::payloads::GatewayLease;
use protocol::{GatewayId, subjects};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Route;

pub(crate) struct Lease {
    pub boot: protocol::ConnId,
    pub expires: Instant,
    pub ttl: Duration,
    /// The gateway purged it (shutdown): a reconnect does not revive it.
    pub released: bool,
}

pub(crate) struct Book {
    pub leases: HashMap<GatewayId, Lease>,
    /// This service's NATS connects when the book last accounted for them.
    connects: u64,
    /// When the sweeper last saw this service connected to NATS.
    connected_at: Instant,
}

impl Book {
    #[cfg(test)]
    pub fn with(leases: HashMap<GatewayId, Lease>) -> Self {
        Self {
            leases,
            connects: 0,
            connected_at: Instant::now(),
        }
    }

    /// Whether `route` belongs to a gateway's current run under a live lease.
    pub fn live(&self, route: &Route, now: Instant) -> bool {
        self.leases
            .get(&route.gateway)
            .is_some_and(|l| l.expires > now && route.conn > l.boot)
    }
}

/// This service's own NATS connection, as the lease clocks need it.
#[derive(Clone)]
struct Link {
    nats: async_nats::Client,
    statistics: Arc<async_nats::Statistics>,
}

/// Cloneable handle to the leases.
#[derive(Clone)]
pub(crate) struct Leases {
    book: Arc<RwLock<Book>>,
    progress: Progress,
    link: Link,
}

impl Leases {
    /// Loads the leases and keeps them up to date until `stop`.
    pub async fn follow(
        js: &jetstream::Context,
        bucket: &kv::Store,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let nats = js.client();
        let link = Link {
            statistics: nats.statistics(),
            nats,
        };
        let book = Arc::new(RwLock::new(Book {
            leases: HashMap::new(),
            connects: link.statistics.connects.load(Ordering::Relaxed),
            connected_at: Instant::now(),
        }));
        let applying = book.clone();
        let progress = Progress::follow(
            js,
            bucket,
            subjects::GATEWAYS_BUCKET,
            move |entry| apply_lease(&mut applying.write().unwrap(), entry),
            stop,
        )
        .await?;
        Ok(Self {
            book,
            progress,
            link,
        })
    }

    /// The leases, read-locked, with lapses during this service's own outage forgiven.
    pub fn read(&self) -> RwLockReadGuard<'_, Book> {
        self.rebase_after_reconnect();
        self.book.read().unwrap()
    }

    /// Waits until every lease written before following began is in (at most `patience`).
    pub async fn loaded(&self, patience: Duration) -> bool {
        self.progress.loaded(patience).await
    }

    /// Waits until the gateways-bucket change with revision `rev` is applied.
    pub async fn reach(&self, rev: u64, patience: Duration) -> bool {
        self.progress.reach(rev, patience).await
    }

    /// Whether this service is connected to NATS; if so, records that it was just now and
    /// forgets leases gone for an hour. Cut off, the sweeper cannot tell a dead gateway from
    /// its own outage.
    pub fn connected(&self) -> bool {
        if self.link.nats.connection_state() != async_nats::connection::State::Connected {
            return false;
        }
        self.rebase_after_reconnect();
        let mut book = self.book.write().unwrap();
        let now = Instant::now();
        book.connected_at = now;
        book.leases
            .retain(|_, l| l.expires + Duration::from_secs(3600) > now);
        true
    }

    /// After this service reconnected to NATS, gives every lease that lapsed while it could
    /// not see refreshes a full TTL from now. A gateway that really died meanwhile is then
    /// counted offline up to one TTL late, never early. Costs one atomic load when nothing
    /// happened.
    fn rebase_after_reconnect(&self) {
        let connects = self.link.statistics.connects.load(Ordering::Relaxed);
        if self.book.read().unwrap().connects == connects {
            return;
        }
        let mut book = self.book.write().unwrap();
        if book.connects == connects {
            return;
        }
        book.connects = connects;
        let now = Instant::now();
        let blind_since = book.connected_at;
        let mut rebased = 0;
        for lease in book.leases.values_mut() {
            if !lease.released && lease.expires > blind_since {
                lease.expires = lease.expires.max(now + lease.ttl);
                rebased += 1;
            }
        }
        tracing::info!(
            leases = rebased,
            "nats connection re-established; lease clocks restarted"
        );
    }
}

fn apply_lease(book: &mut Book, entry: &kv::Entry) {
    let Ok(gateway) = GatewayId::new(&entry.key) else {
        return;
    };
    match entry.operation {
        kv::Operation::Put => {
            let Ok(lease) = serde_json::from_slice::<GatewayLease>(&entry.value) else {
                tracing::warn!(%gateway, "undecodable lease");
                return;
            };
            // Counted from when we see it: after a chat restart a dead gateway's replayed
            // lease can therefore live up to one TTL longer, never shorter.
            let ttl = Duration::from_millis(lease.ttl_ms);
            book.leases.insert(
                gateway,
                Lease {
                    boot: lease.boot,
                    expires: Instant::now() + ttl,
                    ttl,
                    released: false,
                },
            );
        }
        kv::Operation::Delete | kv::Operation::Purge => {
            tracing::info!(%gateway, "gateway released its lease");
            if let Some(lease) = book.leases.get_mut(&gateway) {
                lease.expires = Instant::now();
                lease.released = true;
            }
        }
    }
}
