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
//!
//! The sweeper never walks every session: sessions are also indexed by gateway, and each pass
//! looks only at gateways whose lease lapsed (all their sessions go) or whose sessions need
//! checking against a new boot id. A pass costs one look per lease plus the sessions it drops.

use std::collections::{HashMap, HashSet};
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
    /// The same sessions by gateway, so that a dead gateway's are found without a pass over
    /// everyone's.
    by_gateway: HashMap<GatewayId, HashMap<ConnId, UserId>>,
    leases: HashMap<GatewayId, Lease>,
    /// Gateways whose sessions the sweeper must check against their lease's boot id: the
    /// lease is new or has a new boot, or a session arrived that may predate the boot.
    unchecked: HashSet<GatewayId>,
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
        metrics: SweepMetrics,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let nats = js.client();
        let link = Link {
            statistics: nats.statistics(),
            nats,
        };
        let state = Arc::new(RwLock::new(State {
            sessions: HashMap::new(),
            by_gateway: HashMap::new(),
            leases: HashMap::new(),
            unchecked: HashSet::new(),
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
            metrics,
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
        self.state
            .write()
            .unwrap()
            .remove_session(user, gateway, conn);
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

impl State {
    fn add_session(&mut self, user: UserId, gateway: GatewayId, conn: ConnId) {
        if self.leases.get(&gateway).is_some_and(|l| conn <= l.boot) {
            self.unchecked.insert(gateway.clone());
        }
        let on_gateway = self.by_gateway.entry(gateway.clone()).or_default();
        if on_gateway.insert(conn, user.clone()).is_none() {
            self.sessions
                .entry(user)
                .or_default()
                .push(Route { gateway, conn });
        }
    }

    fn remove_session(&mut self, user: &UserId, gateway: &GatewayId, conn: ConnId) {
        if let Some(on_gateway) = self.by_gateway.get_mut(gateway) {
            on_gateway.remove(&conn);
            if on_gateway.is_empty() {
                self.by_gateway.remove(gateway);
            }
        }
        self.drop_route(user, conn);
    }

    fn drop_route(&mut self, user: &UserId, conn: ConnId) {
        if let Some(routes) = self.sessions.get_mut(user) {
            routes.retain(|r| r.conn != conn);
            if routes.is_empty() {
                self.sessions.remove(user);
            }
        }
    }

    /// Drops `sessions` of `gateway` (already out of `by_gateway`) from the users' routes, and
    /// adds them to `dead`.
    fn bury(
        &mut self,
        gateway: &GatewayId,
        sessions: HashMap<ConnId, UserId>,
        dead: &mut Vec<(UserId, Route)>,
    ) {
        for (conn, user) in sessions {
            self.drop_route(&user, conn);
            let gateway = gateway.clone();
            dead.push((user, Route { gateway, conn }));
        }
    }

    /// Drops the sessions of gateways whose lease has lapsed, and those older than their
    /// gateway's current run; returns them, to be purged from the bucket. Sessions of a
    /// gateway without a known lease are kept: its lease may not have been replayed yet.
    fn drop_dead(&mut self, now: Instant) -> Vec<(UserId, Route)> {
        let mut dead = Vec::new();
        let lapsed: Vec<GatewayId> = self
            .leases
            .iter()
            .filter(|(gateway, lease)| {
                lease.expires <= now && self.by_gateway.contains_key(*gateway)
            })
            .map(|(gateway, _)| gateway.clone())
            .collect();
        for gateway in lapsed {
            let sessions = self.by_gateway.remove(&gateway).unwrap_or_default();
            self.bury(&gateway, sessions, &mut dead);
        }
        for gateway in std::mem::take(&mut self.unchecked) {
            let Some(boot) = self.leases.get(&gateway).map(|l| l.boot) else {
                continue;
            };
            let Some(on_gateway) = self.by_gateway.get_mut(&gateway) else {
                continue;
            };
            let (stale, current): (HashMap<_, _>, HashMap<_, _>) = std::mem::take(on_gateway)
                .into_iter()
                .partition(|(c, _)| *c <= boot);
            if current.is_empty() {
                self.by_gateway.remove(&gateway);
            } else {
                *on_gateway = current;
            }
            self.bury(&gateway, stale, &mut dead);
        }
        dead
    }
}

fn apply_session(s: &mut State, entry: &kv::Entry) {
    let Some((user, gateway, conn)) = parse_session_key(&entry.key) else {
        return;
    };
    match entry.operation {
        kv::Operation::Put => s.add_session(user, gateway, conn),
        kv::Operation::Delete | kv::Operation::Purge => s.remove_session(&user, &gateway, conn),
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
            if s.leases.get(&gateway).is_none_or(|l| l.boot != lease.boot) {
                s.unchecked.insert(gateway.clone());
            }
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
    metrics: SweepMetrics,
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
        let started = Instant::now();
        rebase_after_reconnect(&state, &link);
        let dead: Vec<(UserId, Route)> = {
            let mut s = state.write().unwrap();
            let now = Instant::now();
            s.connected_at = now;
            let dead = s.drop_dead(now);
            s.leases
                .retain(|_, l| l.expires + Duration::from_secs(3600) > now);
            dead
        };
        if !dead.is_empty() {
            tracing::info!(sessions = dead.len(), "dropping sessions of dead gateways");
        }
        for (user, route) in dead {
            let key = subjects::session_key(&user, &route.gateway, route.conn);
            if let Err(e) = sessions.purge_with_ttl(key, MARKER_TTL).await {
                plumbing::jetstream_error("kv");
                tracing::debug!(error = %e, "purge of a dead session failed");
            }
        }
        metrics.pass.observe(started.elapsed());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        metrics.finished_at.set(now.as_secs() as i64);
    }
}

/// What the sweeper reports: how long a pass takes and when the last one finished (the
/// alert "presence sweeper behind" fires when that falls far back).
#[derive(Default)]
pub struct SweepMetrics {
    pub pass: plumbing::Histogram,
    pub finished_at: plumbing::Gauge,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            sessions: HashMap::new(),
            by_gateway: HashMap::new(),
            leases: HashMap::new(),
            unchecked: HashSet::new(),
            connects: 0,
            connected_at: Instant::now(),
        }
    }

    fn lease(boot: ConnId, expires: Instant) -> Lease {
        Lease {
            boot,
            expires,
            ttl: Duration::from_secs(60),
            released: false,
        }
    }

    /// Ids in the order they are made, as a gateway makes them.
    fn id() -> ConnId {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        ConnId(ulid::Ulid::from_parts(1_750_000_000_000 + n, 0))
    }

    fn user(u: &str) -> UserId {
        UserId::new(u).unwrap()
    }

    fn gw(g: &str) -> GatewayId {
        GatewayId::new(g).unwrap()
    }

    #[test]
    fn a_lapsed_gateway_takes_its_sessions_and_only_its_own() {
        let now = Instant::now();
        let mut s = state();
        let (boot_a, boot_b) = (id(), id());
        s.leases
            .insert(gw("a"), lease(boot_a, now - Duration::from_secs(1)));
        s.leases
            .insert(gw("b"), lease(boot_b, now + Duration::from_secs(60)));
        let (on_a, on_b) = (id(), id());
        s.add_session(user("alice"), gw("a"), on_a);
        s.add_session(user("alice"), gw("b"), on_b);
        s.add_session(user("bob"), gw("a"), id());

        let dead = s.drop_dead(now);
        assert_eq!(dead.len(), 2);
        assert!(dead.iter().all(|(_, r)| r.gateway == gw("a")));
        assert_eq!(
            s.sessions.get(&user("alice")),
            Some(&vec![Route {
                gateway: gw("b"),
                conn: on_b
            }])
        );
        assert!(!s.sessions.contains_key(&user("bob")));
        assert!(!s.by_gateway.contains_key(&gw("a")));
        assert!(s.drop_dead(now).is_empty(), "nothing left to drop");
    }

    #[test]
    fn sessions_of_a_previous_run_go_and_unknown_gateways_wait_for_their_lease() {
        let now = Instant::now();
        let mut s = state();
        let old = id();
        // The lease has not been replayed yet: the session is kept.
        s.add_session(user("carol"), gw("c"), old);
        assert!(s.drop_dead(now).is_empty());
        // The gateway restarted: its lease carries a boot newer than the old session.
        let boot = id();
        let current = id();
        apply_lease_at(&mut s, "c", boot, now);
        s.add_session(user("carol"), gw("c"), current);
        let dead = s.drop_dead(now);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].1.conn, old);
        assert_eq!(s.sessions[&user("carol")].len(), 1);
        // A late replay of an old session is found again.
        s.add_session(user("carol"), gw("c"), old);
        assert_eq!(s.drop_dead(now).len(), 1);
    }

    /// What `apply_lease` does for a put, with the lease given directly.
    fn apply_lease_at(s: &mut State, gateway: &str, boot: ConnId, now: Instant) {
        let gateway = gw(gateway);
        if s.leases.get(&gateway).is_none_or(|l| l.boot != boot) {
            s.unchecked.insert(gateway.clone());
        }
        s.leases
            .insert(gateway, lease(boot, now + Duration::from_secs(60)));
    }
}
