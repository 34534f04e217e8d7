//! The session directory: who is connected where, split into session shards by user
//! (`subjects::user_shard`, as many shards as partitions). The chat instance that routes
//! partition `k` also holds session shard `k`: it follows that shard's keys in the sessions
//! bucket into memory, answers other instances' lookups for it on
//! `natter.chat.sessions.<k>`, sweeps its dead sessions and decides its users' presence
//! (`decider.rs`). So an instance's memory and start-up grow with its share of the users,
//! not with everyone; the price is a request to the holder for recipients in shards held
//! elsewhere (ARCHITECTURE.md, "Partitions").
//!
//! A shard held here is also shard `k` of the groups bucket (the groups of partition `k` and
//! the group lists of the shard's users, `groups::GroupView`), answered on
//! `natter.chat.groups.<k>`: one holder, one hand-over and one stand-in rule for both.
//!
//! A session counts only while its gateway holds a live lease and the session belongs to the
//! gateway's current run (its connection id is newer than the lease's boot id). Leases are
//! one per gateway, and every routing instance follows them all (`leases.rs`).
//!
//! **No missed registrations.** A router passing a session marker records, for each
//! registration it stands for, the user's key revision as the floor of the user's shard;
//! every later lookup in that shard, here or at its holder, waits until the shard's view has
//! applied it. A message written after a device
//! registered is therefore routed to it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use plumbing::kv_follow::Progress;
use protocol::payloads::{Registration, SessionEntry, SessionsFound, SessionsQuery};
use protocol::{ConnId, GatewayId, UserId, subjects};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::decider::Decider;
use super::leases::Leases;
use super::shard::Shard;
use super::{Route, RouteCache};
use crate::metrics::ChatMetrics;

/// Marker TTL for purges done by the sweeper (see the gateway's presence module).
const MARKER_TTL: Duration = Duration::from_secs(60);
/// How long a lookup waits for a shard's view to apply a registration it must include.
const FLOOR_PATIENCE: Duration = Duration::from_millis(500);
/// How long one lookup request to a shard's holder may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause before asking again when no instance holds the shard (it is being handed over).
const ASK_RETRY: Duration = Duration::from_millis(50);
/// How long taking a shard may take to load its sessions.
const LOAD_PATIENCE: Duration = Duration::from_secs(120);
/// How often shards that could not be taken are tried again.
const HOLD_RETRY: Duration = Duration::from_secs(1);
/// How long a shard may have no holder answering (none subscribed) before an instance that
/// needs it takes it itself: a holder that crashed leaves its shard so until its key in
/// `natter_instances` lapses (6 s) and the survivors share its work out.
const ORPHANED_AFTER: Duration = Duration::from_secs(1);
/// How long a shard taken that way is kept although not assigned here.
const STAND_IN_FOR: Duration = Duration::from_secs(20);

/// The live sessions of some users, and those of them with none.
#[derive(Debug, Default)]
pub struct Found {
    pub routes: Vec<(UserId, Route)>,
    pub offline: Vec<UserId>,
}

/// Cloneable handle to the directory.
#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

struct Inner {
    js: jetstream::Context,
    sessions: kv::Store,
    groups: kv::Store,
    leases: Leases,
    decider: Decider,
    shards: u32,
    held: RwLock<HashMap<u32, Arc<Held>>>,
    /// Taken by one holder at a time, so a shard is never loaded twice at once.
    taking: tokio::sync::Mutex<()>,
    /// Shards held because nobody answered for them, and since when (see [`ORPHANED_AFTER`]).
    stand_ins: Mutex<HashMap<u32, Instant>>,
    /// Shards a stand-in is being taken for now (see [`Directory::stand_in_soon`]).
    stand_ins_loading: Mutex<std::collections::HashSet<u32>>,
    /// Per shard, the newest registration a router here has passed (see the module doc).
    floors: Mutex<HashMap<u32, Floor>>,
    metrics: ChatMetrics,
    stop: CancellationToken,
}

/// A shard this instance holds.
struct Held {
    shard: Arc<RwLock<Shard>>,
    progress: Progress,
    groups: groups::GroupView,
    stop: CancellationToken,
}

#[derive(Debug, Clone, Copy, Default)]
struct Floor {
    session: u64,
    lease: u64,
}

impl Directory {
    /// Follows the leases and sweeps the shards this instance will hold, until `stop`. It
    /// holds no shard yet: see [`Directory::follow_assignment`] and [`Directory::hold`].
    pub async fn start(
        js: &jetstream::Context,
        buckets: plumbing::bus::PresenceBuckets,
        groups: kv::Store,
        shards: u32,
        sweep_every: Duration,
        metrics: ChatMetrics,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let leases = Leases::follow(js, &buckets.gateways, stop.clone()).await?;
        // Until the leases are in, every session would look dead.
        anyhow::ensure!(
            leases.loaded(LOAD_PATIENCE).await,
            "the gateways' leases did not load within {LOAD_PATIENCE:?}"
        );
        let decider = Decider {
            nats: js.client(),
            users: buckets.users,
            metrics: metrics.clone(),
        };
        let directory = Self {
            inner: Arc::new(Inner {
                js: js.clone(),
                sessions: buckets.sessions,
                groups,
                leases,
                decider,
                shards: shards.max(1),
                held: RwLock::default(),
                taking: tokio::sync::Mutex::new(()),
                stand_ins: Mutex::default(),
                stand_ins_loading: Mutex::default(),
                floors: Mutex::default(),
                metrics,
                stop: stop.clone(),
            }),
        };
        tokio::spawn(sweep(directory.clone(), sweep_every, stop));
        Ok(directory)
    }

    /// The deployment's shard count.
    pub fn shards(&self) -> u32 {
        self.inner.shards
    }

    /// Holds the shards `assigned` names (the partitions this instance routes) as that
    /// changes, until the directory stops.
    pub async fn follow_assignment(self, mut assigned: plumbing::bus::shares::Assigned) {
        let stop = self.inner.stop.clone();
        let mut retry = tokio::time::interval(HOLD_RETRY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let want = assigned.borrow_and_update().clone();
            let held: Vec<u32> = self.inner.held.read().unwrap().keys().copied().collect();
            let standing_in = self.standing_in(&want);
            for k in held
                .into_iter()
                .filter(|k| !want.contains(k) && !standing_in.contains(k))
            {
                self.release(k).await;
            }
            for k in want {
                // Loading takes a while: a shard given away meanwhile is not taken.
                if assigned.borrow().contains(&k)
                    && let Err(e) = self.hold(k).await
                {
                    tracing::warn!(error = %e, shard = k, "session shard not taken");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                changed = assigned.changed() => if changed.is_err() { break },
                _ = retry.tick() => {}
            }
        }
        let held: Vec<u32> = self.inner.held.read().unwrap().keys().copied().collect();
        for k in held {
            self.release(k).await;
        }
    }

    /// Holds every shard (one instance alone, and tests).
    pub async fn hold_all(&self) -> anyhow::Result<()> {
        for k in 0..self.inner.shards {
            self.hold(k).await?;
        }
        Ok(())
    }

    /// The shards held as a stand-in for lately (assigned ones are no longer stand-ins).
    fn standing_in(&self, assigned: &std::collections::BTreeSet<u32>) -> Vec<u32> {
        let mut stand_ins = self.inner.stand_ins.lock().unwrap();
        stand_ins.retain(|k, since| !assigned.contains(k) && since.elapsed() < STAND_IN_FOR);
        stand_ins.keys().copied().collect()
    }

    /// Takes shard `k` as a stand-in ([`Directory::stand_in`]) in a task of its own, once at
    /// a time: whoever asks goes on asking (and may stop) while the shard loads.
    fn stand_in_soon(&self, k: u32) {
        if self.holds(k) || !self.inner.stand_ins_loading.lock().unwrap().insert(k) {
            return;
        }
        let directory = self.clone();
        tokio::spawn(async move {
            if let Err(e) = directory.stand_in(k).await {
                tracing::warn!(error = %e, shard = k, "shard not taken");
            }
            directory.inner.stand_ins_loading.lock().unwrap().remove(&k);
        });
    }

    /// Takes shard `k`, which nobody answers for, until its work is shared out again.
    async fn stand_in(&self, k: u32) -> anyhow::Result<()> {
        if self.holds(k) {
            return Ok(());
        }
        tracing::warn!(
            shard = k,
            "no instance answers for a session shard; taking it"
        );
        self.inner
            .stand_ins
            .lock()
            .unwrap()
            .insert(k, Instant::now());
        self.hold(k).await
    }

    /// Takes shard `k`: loads its sessions and groups, then answers lookups and questions
    /// about groups for it and decides its users' presence. Nothing if it is held already.
    pub async fn hold(&self, k: u32) -> anyhow::Result<()> {
        let _taking = self.inner.taking.lock().await;
        if self.inner.held.read().unwrap().contains_key(&k) {
            return Ok(());
        }
        let started = Instant::now();
        let stop = self.inner.stop.child_token();
        let shard = Arc::new(RwLock::new(Shard::default()));
        let applying = shard.clone();
        let progress = Progress::follow_keys(
            &self.inner.js,
            &self.inner.sessions,
            subjects::SESSIONS_BUCKET,
            &format!("{k}.>"),
            move |entry| apply_session(&mut applying.write().unwrap(), entry),
            stop.clone(),
        )
        .await;
        let progress = match progress {
            Ok(p) => p,
            Err(e) => {
                stop.cancel();
                return Err(e);
            }
        };
        let loaded = async {
            let groups = groups::GroupView::follow_shard(
                &self.inner.js,
                &self.inner.groups,
                k,
                stop.clone(),
            )
            .await?;
            let (sessions, groups_in) =
                tokio::join!(progress.loaded(LOAD_PATIENCE), groups.loaded(LOAD_PATIENCE));
            anyhow::ensure!(
                sessions && groups_in,
                "shard {k} did not load within {LOAD_PATIENCE:?}"
            );
            let nats = self.inner.js.client();
            let queries = nats.subscribe(subjects::sessions_query(k)).await?;
            let questions = nats.subscribe(subjects::groups_query(k)).await?;
            anyhow::Ok((groups, queries, questions))
        };
        let (groups, queries, questions) = match loaded.await {
            Ok(loaded) => loaded,
            Err(e) => {
                stop.cancel();
                return Err(e);
            }
        };
        let held = Arc::new(Held {
            shard,
            progress,
            groups: groups.clone(),
            stop: stop.clone(),
        });
        tokio::spawn(answer(self.clone(), k, queries, stop.clone()));
        let nats = self.inner.js.client();
        tokio::spawn(groups::serve_shard(
            nats,
            groups.clone(),
            questions,
            stop.clone(),
        ));
        tokio::spawn(self.inner.decider.clone().run(self.clone(), k, stop));
        let sessions = held.shard.read().unwrap().len();
        self.inner.held.write().unwrap().insert(k, held);
        self.inner.metrics.session_shards_held.inc();
        let (group_count, memberships) = groups.size();
        tracing::info!(
            shard = k,
            sessions,
            groups = group_count,
            memberships,
            load_ms = started.elapsed().as_millis() as u64,
            "shard taken"
        );
        Ok(())
    }

    /// The view of groups shard `k`, taking the shard if it is not held yet (a router needs
    /// the shard of its partition).
    pub async fn groups_of_shard(&self, k: u32) -> anyhow::Result<groups::GroupView> {
        if let Some(view) = groups::Holder::held(self, k) {
            return Ok(view);
        }
        self.hold(k).await?;
        groups::Holder::held(self, k)
            .ok_or_else(|| anyhow::anyhow!("shard {k} was given up while being taken"))
    }

    /// Gives shard `k` up: stops answering for it and deciding its presence.
    pub async fn release(&self, k: u32) {
        let Some(held) = self.inner.held.write().unwrap().remove(&k) else {
            return;
        };
        held.stop.cancel();
        self.inner.metrics.session_shards_held.dec();
        self.inner.decider.release(&self.inner.js, k).await;
        tracing::info!(shard = k, "shard given up");
    }

    /// Whether this instance holds shard `k`.
    pub fn holds(&self, k: u32) -> bool {
        self.inner.held.read().unwrap().contains_key(&k)
    }

    /// How many sessions the shards held here hold.
    pub fn sessions_held(&self) -> usize {
        let held = self.inner.held.read().unwrap();
        held.values().map(|h| h.shard.read().unwrap().len()).sum()
    }

    /// How many group memberships the shards held here hold.
    pub fn memberships_held(&self) -> usize {
        let held = self.inner.held.read().unwrap();
        held.values().map(|h| h.groups.size().1).sum()
    }

    /// A router passed a session marker standing for `registrations`, written when the
    /// gateways bucket stood at `lease_revision`: later lookups in each registered user's
    /// shard include that user's new session. (A marker stands for every registration a
    /// gateway had waiting, whatever their shards, so each gets its own key's revision: a
    /// shard's view reaches only revisions of its own keys.)
    pub fn note_registrations(&self, registrations: &[Registration], lease_revision: u64) {
        let mut floors = self.inner.floors.lock().unwrap();
        raise_floors(
            &mut floors,
            registrations,
            lease_revision,
            self.inner.shards,
        );
    }

    /// The live sessions of `users`, and those of them with none. Shards held here are read
    /// in memory, others asked of their holder, again while none answers (a shard being
    /// handed over). `None` if that lasted `patience` (`None`: no limit) or `stop` came.
    pub async fn lookup<'a>(
        &self,
        users: impl IntoIterator<Item = &'a UserId>,
        patience: Option<Duration>,
        stop: &CancellationToken,
    ) -> Option<Found> {
        let deadline = patience.map(|p| Instant::now() + p);
        let mut by_shard: BTreeMap<u32, Vec<&UserId>> = BTreeMap::new();
        for user in users {
            let k = subjects::user_shard(user, self.inner.shards);
            by_shard.entry(k).or_default().push(user);
        }
        let mut found = Found::default();
        for (k, users) in by_shard {
            let floor = self.floor(k);
            let mut unanswered_since = None;
            loop {
                let held = self.inner.held.read().unwrap().get(&k).cloned();
                if let Some(held) = held {
                    self.reach(&held, floor).await;
                    self.read(&held, users.iter().copied(), &mut found);
                    break;
                }
                match self.ask(k, &users, floor).await {
                    Ok(sessions) => {
                        take_found(&users, sessions, &mut found);
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, shard = k, "session lookup not answered");
                        if e.orphaned() {
                            let since = *unanswered_since.get_or_insert_with(Instant::now);
                            if since.elapsed() >= ORPHANED_AFTER {
                                self.stand_in_soon(k);
                            }
                        }
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            return None;
                        }
                        tokio::select! {
                            _ = stop.cancelled() => return None,
                            _ = self.inner.stop.cancelled() => return None,
                            _ = tokio::time::sleep(ASK_RETRY) => {}
                        }
                    }
                }
            }
        }
        Some(found)
    }

    /// [`Directory::lookup`] for a partition router: users of shards held elsewhere are taken
    /// from `cache` while fresh, and those looked up are remembered there.
    pub async fn lookup_cached<'a>(
        &self,
        users: impl IntoIterator<Item = &'a UserId>,
        cache: &mut RouteCache,
        stop: &CancellationToken,
    ) -> Option<Found> {
        let now = Instant::now();
        let mut found = Found::default();
        let mut ask = Vec::new();
        {
            // Remembered sessions count only while their gateway's current run holds a live
            // lease: a gateway that restarted or went away makes its users be asked again.
            let book = self.inner.leases.read();
            for user in users {
                let k = subjects::user_shard(user, self.inner.shards);
                let cached = if self.holds(k) {
                    None
                } else {
                    cache.get(user, now)
                };
                match cached {
                    Some([]) => found.offline.push(user.clone()),
                    Some(routes) if routes.iter().all(|r| book.live(r, now)) => found
                        .routes
                        .extend(routes.iter().map(|r| (user.clone(), r.clone()))),
                    _ => ask.push(user),
                }
            }
        }
        if ask.is_empty() {
            return Some(found);
        }
        let asked = self.lookup(ask.iter().copied(), None, stop).await?;
        let mut remembered: HashMap<&UserId, Vec<Route>> = ask
            .iter()
            .filter(|u| !self.holds(subjects::user_shard(u, self.inner.shards)))
            .map(|u| (*u, Vec::new()))
            .collect();
        for (user, route) in &asked.routes {
            if let Some(routes) = remembered.get_mut(user) {
                routes.push(route.clone());
            }
        }
        // Users found offline are remembered too: one who registers a session afterwards
        // has a session marker in this router's stream before any message written after
        // the registration, and the marker drops the entry (`RouteCache::forget`). (Asking
        // again for them at every message cost a request per message from a sender with no
        // device online: `natter-bench scale` routed 5 times slower with two instances.)
        for (user, routes) in remembered {
            cache.put(user.clone(), routes, now);
        }
        found.routes.extend(asked.routes);
        found.offline.extend(asked.offline);
        Some(found)
    }

    /// The live sessions of `user` if its shard is held here (empty otherwise): for the
    /// shard's own presence decisions, and tests.
    pub fn local_routes_of(&self, user: &UserId) -> Vec<Route> {
        let k = subjects::user_shard(user, self.inner.shards);
        let Some(held) = self.inner.held.read().unwrap().get(&k).cloned() else {
            return Vec::new();
        };
        let mut found = Found::default();
        self.read(&held, [user], &mut found);
        found.routes.into_iter().map(|(_, r)| r).collect()
    }

    /// Waits until the view of shard `k`, held here, has applied the sessions-bucket change
    /// `rev`.
    pub async fn reach_session_revision(&self, k: u32, rev: u64, patience: Duration) {
        let held = self.inner.held.read().unwrap().get(&k).cloned();
        if let Some(held) = held {
            held.progress.reach(rev, patience).await;
        }
    }

    /// Drops a session the gateway reported gone: at once if its shard is held here, and from
    /// the bucket (its holder then drops it too).
    pub async fn forget(&self, user: &UserId, gateway: &GatewayId, conn: ConnId) {
        let k = subjects::user_shard(user, self.inner.shards);
        let held = self.inner.held.read().unwrap().get(&k).cloned();
        if let Some(held) = held {
            held.shard
                .write()
                .unwrap()
                .remove_session(user, gateway, conn);
        }
        let key = subjects::session_key(user, gateway, conn, self.inner.shards);
        if let Err(e) = self.inner.sessions.purge_with_ttl(key, MARKER_TTL).await {
            tracing::debug!(error = %e, "purge of a gone session failed");
        }
    }

    fn floor(&self, k: u32) -> Floor {
        self.inner
            .floors
            .lock()
            .unwrap()
            .get(&k)
            .copied()
            .unwrap_or_default()
    }

    async fn reach(&self, held: &Held, floor: Floor) {
        tokio::join!(
            held.progress.reach(floor.session, FLOOR_PATIENCE),
            self.inner.leases.reach(floor.lease, FLOOR_PATIENCE)
        );
    }

    /// The live sessions of `users` in a held shard, into `found`.
    fn read<'a>(
        &self,
        held: &Held,
        users: impl IntoIterator<Item = &'a UserId>,
        found: &mut Found,
    ) {
        let book = self.inner.leases.read();
        let shard = held.shard.read().unwrap();
        let now = Instant::now();
        for user in users {
            let before = found.routes.len();
            for route in shard.routes(user).iter().filter(|r| book.live(r, now)) {
                found.routes.push((user.clone(), route.clone()));
            }
            if found.routes.len() == before {
                found.offline.push(user.clone());
            }
        }
    }

    /// Asks the holder of shard `k` for the live sessions of `users`.
    async fn ask(
        &self,
        k: u32,
        users: &[&UserId],
        floor: Floor,
    ) -> Result<SessionsFound, AskError> {
        self.inner.metrics.session_queries.inc();
        let query = SessionsQuery {
            users: users.iter().map(|u| (*u).clone()).collect(),
            session_revision: floor.session,
            lease_revision: floor.lease,
        };
        let payload = serde_json::to_vec(&query).expect("query to JSON");
        let reply = tokio::time::timeout(
            ASK_TIMEOUT,
            self.inner
                .js
                .client()
                .request(subjects::sessions_query(k), payload.into()),
        )
        .await
        .map_err(|_| AskError::TimedOut)?
        .map_err(AskError::Request)?;
        serde_json::from_slice(&reply.payload).map_err(AskError::Undecodable)
    }
}

impl groups::Holder for Directory {
    fn held(&self, k: u32) -> Option<groups::GroupView> {
        let held = self.inner.held.read().unwrap();
        held.get(&k).map(|h| h.groups.clone())
    }

    fn orphaned(&self, k: u32) {
        self.stand_in_soon(k);
    }
}

/// Why a holder gave no answer.
#[derive(Debug, thiserror::Error)]
enum AskError {
    #[error("no answer within {ASK_TIMEOUT:?}")]
    TimedOut,
    #[error(transparent)]
    Request(async_nats::RequestError),
    #[error("undecodable answer: {0}")]
    Undecodable(serde_json::Error),
}

impl AskError {
    /// Nobody holds the shard: no instance subscribes to its lookups.
    fn orphaned(&self) -> bool {
        matches!(self, AskError::Request(e) if e.kind() == async_nats::RequestErrorKind::NoResponders)
    }
}

/// Raises each registered user's shard floor to that user's key revision.
fn raise_floors(
    floors: &mut HashMap<u32, Floor>,
    registrations: &[Registration],
    lease_revision: u64,
    shards: u32,
) {
    for registration in registrations {
        let k = subjects::user_shard(&registration.user, shards);
        let floor = floors.entry(k).or_default();
        floor.session = floor.session.max(registration.session_revision);
        floor.lease = floor.lease.max(lease_revision);
    }
}

/// The routes of a holder's answer, into `found`; the users it gave none are offline.
fn take_found(users: &[&UserId], sessions: SessionsFound, found: &mut Found) {
    let mut online: HashMap<&UserId, bool> = users.iter().map(|u| (*u, false)).collect();
    for s in sessions.sessions {
        let Some(seen) = online.get_mut(&s.user) else {
            continue;
        };
        *seen = true;
        let route = Route {
            gateway: s.gateway,
            conn: s.conn,
        };
        found.routes.push((s.user, route));
    }
    for user in users {
        if online.get(user) == Some(&false) {
            found.offline.push((*user).clone());
        }
    }
}

/// Answers lookups for held shard `k` until `stop` (it is given up).
async fn answer(
    directory: Directory,
    k: u32,
    queries: async_nats::Subscriber,
    stop: CancellationToken,
) {
    let nats = directory.inner.js.client();
    let answer = move |query: SessionsQuery| {
        let directory = directory.clone();
        async move {
            // Given up meanwhile: no answer, so the asker asks the new holder.
            let held = directory.inner.held.read().unwrap().get(&k).cloned()?;
            let floor = Floor {
                session: query.session_revision,
                lease: query.lease_revision,
            };
            directory.reach(&held, floor).await;
            let users = query
                .users
                .iter()
                .filter(|u| subjects::user_shard(u, directory.inner.shards) == k);
            let mut found = Found::default();
            directory.read(&held, users, &mut found);
            let sessions = found
                .routes
                .into_iter()
                .map(|(user, r)| SessionEntry {
                    user,
                    gateway: r.gateway,
                    conn: r.conn,
                })
                .collect();
            Some(SessionsFound { sessions })
        }
    };
    plumbing::bus::answer_shard(nats, "sessions", queries, stop, answer).await;
}

fn parse_session_key(key: &str) -> Option<(UserId, GatewayId, ConnId)> {
    let mut parts = key.split('.');
    parts.next()?.parse::<u32>().ok()?;
    let user = UserId::new(parts.next()?).ok()?;
    let gateway = GatewayId::new(parts.next()?).ok()?;
    let conn = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((user, gateway, conn))
}

fn apply_session(shard: &mut Shard, entry: &kv::Entry) {
    let Some((user, gateway, conn)) = parse_session_key(&entry.key) else {
        return;
    };
    match entry.operation {
        kv::Operation::Put => shard.add_session(user, gateway, conn),
        kv::Operation::Delete | kv::Operation::Purge => shard.remove_session(&user, &gateway, conn),
    }
}

/// Forgets, and purges from the bucket, the held shards' sessions of gateways whose lease
/// has lapsed and sessions left over from a gateway's previous run.
async fn sweep(directory: Directory, every: Duration, stop: CancellationToken) {
    let inner = &directory.inner;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if !inner.leases.connected() {
            continue;
        }
        let started = Instant::now();
        let held: Vec<Arc<Held>> = inner.held.read().unwrap().values().cloned().collect();
        let mut sessions = 0;
        let memberships = directory.memberships_held();
        inner.metrics.memberships_held.set(memberships as i64);
        for held in held {
            let dead = {
                let book = inner.leases.read();
                let mut shard = held.shard.write().unwrap();
                let dead = shard.drop_dead(&book, Instant::now());
                sessions += shard.len();
                dead
            };
            if !dead.is_empty() {
                tracing::info!(sessions = dead.len(), "dropping sessions of dead gateways");
            }
            for (user, route) in dead {
                let key = subjects::session_key(&user, &route.gateway, route.conn, inner.shards);
                if let Err(e) = inner.sessions.purge_with_ttl(key, MARKER_TTL).await {
                    plumbing::jetstream_error("kv");
                    tracing::debug!(error = %e, "purge of a dead session failed");
                }
            }
        }
        inner.metrics.sessions_held.set(sessions as i64);
        inner.metrics.presence_sweep.observe(started.elapsed());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        inner.metrics.presence_swept_at.set(now.as_secs() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_keys_parse_back() {
        let user = UserId::new("alice").unwrap();
        let gateway = GatewayId::new("gw-1").unwrap();
        let conn = ConnId(ulid::Ulid::new());
        let key = subjects::session_key(&user, &gateway, conn, 8);
        assert!(key.starts_with(&format!("{}.", subjects::user_shard(&user, 8))));
        assert_eq!(parse_session_key(&key), Some((user, gateway, conn)));
        // A key of before sessions were sharded has one token less.
        assert_eq!(parse_session_key(&format!("alice.gw-1.{conn}")), None);
    }

    #[test]
    fn a_marker_of_several_registrations_raises_each_users_shard_to_its_own_key() {
        let shards = 4;
        let users: Vec<UserId> = (0..40)
            .map(|i| UserId::new(format!("user{i}")).unwrap())
            .collect();
        let registrations: Vec<Registration> = users
            .iter()
            .enumerate()
            .map(|(i, user)| Registration {
                user: user.clone(),
                session_revision: 100 + i as u64,
            })
            .collect();
        let mut floors = HashMap::new();
        raise_floors(&mut floors, &registrations, 7, shards);
        for k in 0..shards {
            let newest = registrations
                .iter()
                .filter(|r| subjects::user_shard(&r.user, shards) == k)
                .map(|r| r.session_revision)
                .max()
                .expect("forty users fill four shards");
            assert_eq!(floors[&k].session, newest, "shard {k}");
            assert_eq!(floors[&k].lease, 7);
        }
        // Floors only rise.
        raise_floors(&mut floors, &registrations[..1], 1, shards);
        assert_eq!(floors[&subjects::user_shard(&users[0], shards)].lease, 7);
    }

    #[test]
    fn a_holders_answer_names_who_is_offline() {
        let (alice, bob) = (UserId::new("alice").unwrap(), UserId::new("bob").unwrap());
        let gateway = GatewayId::new("gw").unwrap();
        let conn = ConnId(ulid::Ulid::new());
        let answer = SessionsFound {
            sessions: vec![
                SessionEntry {
                    user: alice.clone(),
                    gateway: gateway.clone(),
                    conn,
                },
                // Not asked about: ignored.
                SessionEntry {
                    user: UserId::new("mallory").unwrap(),
                    gateway,
                    conn,
                },
            ],
        };
        let mut found = Found::default();
        take_found(&[&alice, &bob], answer, &mut found);
        assert_eq!(found.routes.len(), 1);
        assert_eq!(found.routes[0].0, alice);
        assert_eq!(found.offline, vec![bob]);
    }
}
