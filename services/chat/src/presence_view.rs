//! The chat service's in-memory view of who is connected where, kept by watching the presence
//! buckets, so routing a message costs no lookup round trip.
//!
//! A session counts only while its gateway holds a live lease and the session belongs to the
//! gateway's current run (its connection id is newer than the lease's boot id). A gateway
//! whose lease lapses or is released takes all its sessions offline at once; their keys are
//! then purged by the sweeper.
//!
//! Lease clocks run only while this service can see refreshes: the sweeper pauses while its
//! own NATS connection is down, and after a reconnect every lease that lapsed meanwhile gets
//! a full TTL again. Otherwise a NATS outage longer than the TTL would take every gateway
//! offline here, and the purges queued during it would land after the gateways re-registered.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use plumbing::kv_follow::Progress;
use protocol::payloads::GatewayLease;
use protocol::{ConnId, GatewayId, UserId, subjects};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Marker TTL for purges done by the sweeper (see the gateway's presence module).
const MARKER_TTL: Duration = Duration::from_secs(60);

/// A session as routing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub gateway: GatewayId,
    pub conn: ConnId,
}

struct Lease {
    boot: ConnId,
    expires: Instant,
    ttl: Duration,
    /// The gateway purged it (shutdown): a reconnect does not revive it.
    released: bool,
}

struct State {
    sessions: HashMap<UserId, Vec<Route>>,
    leases: HashMap<GatewayId, Lease>,
    /// This service's NATS connects when the view last accounted for them.
    connects: u64,
    /// When the sweeper last saw this service connected to NATS.
    connected_at: Instant,
}

/// This service's own NATS connection, as the lease clocks need it.
#[derive(Clone)]
struct Link {
    nats: async_nats::Client,
    statistics: Arc<async_nats::Statistics>,
}

/// Cloneable handle to the view.
#[derive(Clone)]
pub struct PresenceView {
    state: Arc<RwLock<State>>,
    sessions: Progress,
    leases: Progress,
    bucket: kv::Store,
    link: Link,
}

impl PresenceView {
    /// Loads the current presence and keeps it up to date until `stop`.
    pub async fn start(
        js: &jetstream::Context,
        buckets: plumbing::bus::PresenceBuckets,
        sweep_every: Duration,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let nats = js.client();
        let link = Link {
            statistics: nats.statistics(),
            nats,
        };
        let state = Arc::new(RwLock::new(State {
            sessions: HashMap::new(),
            leases: HashMap::new(),
            connects: link.statistics.connects.load(Ordering::Relaxed),
            connected_at: Instant::now(),
        }));
        let sessions = Progress::follow(
            js,
            &buckets.sessions,
            subjects::SESSIONS_BUCKET,
            applier(&state, apply_session),
            stop.clone(),
        )
        .await?;
        let leases = Progress::follow(
            js,
            &buckets.gateways,
            subjects::GATEWAYS_BUCKET,
            applier(&state, apply_lease),
            stop.clone(),
        )
        .await?;
        let bucket = buckets.sessions.clone();
        tokio::spawn(sweep(
            state.clone(),
            link.clone(),
            buckets.sessions,
            sweep_every,
            stop,
        ));
        Ok(Self {
            state,
            sessions,
            leases,
            bucket,
            link,
        })
    }

    /// The live sessions of `user`.
    pub fn routes_of(&self, user: &UserId) -> Vec<Route> {
        let mut routes = Vec::new();
        self.routes_of_all([user], |r| routes.push(r.clone()));
        routes
    }

    /// Calls `each` with every live session of `users` (under one lock, for a group's
    /// members), and returns the users who have none.
    pub fn routes_of_all<'a>(
        &self,
        users: impl IntoIterator<Item = &'a UserId>,
        mut each: impl FnMut(&Route),
    ) -> Vec<&'a UserId> {
        rebase_after_reconnect(&self.state, &self.link);
        let state = self.state.read().unwrap();
        let now = Instant::now();
        let live = |r: &&Route| {
            state
                .leases
                .get(&r.gateway)
                .is_some_and(|l| l.expires > now && r.conn > l.boot)
        };
        let mut offline = Vec::new();
        for user in users {
            let mut online = false;
            for route in state.sessions.get(user).into_iter().flatten().filter(live) {
                online = true;
                each(route);
            }
            if !online {
                offline.push(user);
            }
        }
        offline
    }

    /// Waits until the view has applied a registration: its session key's revision and the
    /// lease revision current when it was written (at most `patience` for each).
    pub async fn reach(&self, session_revision: u64, lease_revision: u64, patience: Duration) {
        tokio::join!(
            self.sessions.reach(session_revision, patience),
            self.leases.reach(lease_revision, patience)
        );
    }

    /// Drops a session the gateway reported gone: from the view at once, and from the bucket.
    pub async fn forget(&self, user: &UserId, gateway: &GatewayId, conn: ConnId) {
        {
            let mut s = self.state.write().unwrap();
            if let Some(routes) = s.sessions.get_mut(user) {
                routes.retain(|r| r.conn != conn);
                if routes.is_empty() {
                    s.sessions.remove(user);
                }
            }
        }
        let key = subjects::session_key(user, gateway, conn);
        if let Err(e) = self.bucket.purge_with_ttl(key, MARKER_TTL).await {
            tracing::debug!(error = %e, "purge of a gone session failed");
        }
    }

    /// Waits until the sessions-bucket change with revision `rev` is applied.
    pub async fn reach_session_revision(&self, rev: u64, patience: Duration) {
        self.sessions.reach(rev, patience).await;
    }
}

fn parse_session_key(key: &str) -> Option<(UserId, GatewayId, ConnId)> {
    let mut parts = key.split('.');
    let user = UserId::new(parts.next()?).ok()?;
    let gateway = GatewayId::new(parts.next()?).ok()?;
    let conn = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((user, gateway, conn))
}

/// `apply` as a bucket follower: under the view's write lock.
fn applier(
    state: &Arc<RwLock<State>>,
    apply: fn(&mut State, &kv::Entry),
) -> impl FnMut(&kv::Entry) + Send + 'static {
    let state = state.clone();
    move |entry| apply(&mut state.write().unwrap(), entry)
}

fn apply_session(s: &mut State, entry: &kv::Entry) {
    let Some((user, gateway, conn)) = parse_session_key(&entry.key) else {
        return;
    };
    match entry.operation {
        kv::Operation::Put => {
            let routes = s.sessions.entry(user).or_default();
            if !routes.iter().any(|r| r.conn == conn) {
                routes.push(Route { gateway, conn });
            }
        }
        kv::Operation::Delete | kv::Operation::Purge => {
            if let Some(routes) = s.sessions.get_mut(&user) {
                routes.retain(|r| r.conn != conn);
                if routes.is_empty() {
                    s.sessions.remove(&user);
                }
            }
        }
    }
}

fn apply_lease(s: &mut State, entry: &kv::Entry) {
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
            let expires = Instant::now() + Duration::from_millis(lease.ttl_ms);
            s.leases.insert(
                gateway,
                Lease {
                    boot: lease.boot,
                    expires,
                    ttl: Duration::from_millis(lease.ttl_ms),
                    released: false,
                },
            );
        }
        kv::Operation::Delete | kv::Operation::Purge => {
            tracing::info!(%gateway, "gateway released its lease");
            if let Some(lease) = s.leases.get_mut(&gateway) {
                lease.expires = Instant::now();
                lease.released = true;
            }
        }
    }
}

/// Forgets, and purges from the bucket, sessions of gateways whose lease has lapsed and
/// sessions left over from a gateway's previous run.
async fn sweep(
    state: Arc<RwLock<State>>,
    link: Link,
    sessions: kv::Store,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        // Cut off, the view cannot tell a dead gateway from its own outage.
        if link.nats.connection_state() != async_nats::connection::State::Connected {
            continue;
        }
        rebase_after_reconnect(&state, &link);
        let dead: Vec<(UserId, Route)> = {
            let mut s = state.write().unwrap();
            let now = Instant::now();
            s.connected_at = now;
            let State {
                sessions, leases, ..
            } = &mut *s;
            let mut dead = Vec::new();
            sessions.retain(|user, routes| {
                routes.retain(|r| {
                    // Unknown gateways are kept: their lease may not have been replayed yet.
                    let alive = leases
                        .get(&r.gateway)
                        .is_none_or(|l| l.expires > now && r.conn > l.boot);
                    if !alive {
                        dead.push((user.clone(), r.clone()));
                    }
                    alive
                });
                !routes.is_empty()
            });
            leases.retain(|_, l| l.expires + Duration::from_secs(3600) > now);
            dead
        };
        if !dead.is_empty() {
            tracing::info!(sessions = dead.len(), "dropping sessions of dead gateways");
        }
        for (user, route) in dead {
            let key = subjects::session_key(&user, &route.gateway, route.conn);
            if let Err(e) = sessions.purge_with_ttl(key, MARKER_TTL).await {
                tracing::debug!(error = %e, "purge of a dead session failed");
            }
        }
    }
}

/// After this service reconnected to NATS, gives every lease that lapsed while it could not
/// see refreshes a full TTL from now. A gateway that really died meanwhile is then counted
/// offline up to one TTL late, never early. Costs one atomic load when nothing happened.
fn rebase_after_reconnect(state: &RwLock<State>, link: &Link) {
    let connects = link.statistics.connects.load(Ordering::Relaxed);
    if state.read().unwrap().connects == connects {
        return;
    }
    let mut s = state.write().unwrap();
    if s.connects == connects {
        return;
    }
    s.connects = connects;
    let now = Instant::now();
    let blind_since = s.connected_at;
    let mut rebased = 0;
    for lease in s.leases.values_mut() {
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
