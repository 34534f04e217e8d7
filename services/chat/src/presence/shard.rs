//! One session shard's sessions (`<shard>.<user>.<gateway>.<conn>` keys), as the chat
//! instance holding the shard keeps them.
//!
//! The sweeper never walks every session: sessions are also indexed by gateway, and a pass
//! looks at one entry per gateway with sessions here, plus the sessions it drops.

use std::collections::HashMap;

use protocol::{ConnId, GatewayId, UserId};
use tokio::time::Instant;

use super::Route;
use super::leases::Book;

#[derive(Default)]
pub(crate) struct Shard {
    sessions: HashMap<UserId, Vec<Route>>,
    /// The same sessions by gateway, so that a dead gateway's are found without a pass over
    /// everyone's.
    by_gateway: HashMap<GatewayId, HashMap<ConnId, UserId>>,
    /// The lease boot each gateway's sessions were last checked against: sessions of an
    /// earlier run (a connection id not above the boot) are dropped.
    checked: HashMap<GatewayId, ConnId>,
    count: usize,
}

impl Shard {
    /// How many sessions the shard holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// The sessions of `user` (live or not).
    pub fn routes(&self, user: &UserId) -> &[Route] {
        self.sessions.get(user).map_or(&[], Vec::as_slice)
    }

    pub fn add_session(&mut self, user: UserId, gateway: GatewayId, conn: ConnId) {
        if self.checked.get(&gateway).is_some_and(|boot| conn <= *boot) {
            // It may belong to an earlier run: the next pass checks the gateway again.
            self.checked.remove(&gateway);
        }
        let on_gateway = self.by_gateway.entry(gateway.clone()).or_default();
        if on_gateway.insert(conn, user.clone()).is_none() {
            self.count += 1;
            self.sessions
                .entry(user)
                .or_default()
                .push(Route { gateway, conn });
        }
    }

    pub fn remove_session(&mut self, user: &UserId, gateway: &GatewayId, conn: ConnId) {
        let Some(on_gateway) = self.by_gateway.get_mut(gateway) else {
            return;
        };
        if on_gateway.remove(&conn).is_none() {
            return;
        }
        if on_gateway.is_empty() {
            self.by_gateway.remove(gateway);
            self.checked.remove(gateway);
        }
        self.drop_route(user, conn);
    }

    fn drop_route(&mut self, user: &UserId, conn: ConnId) {
        if let Some(routes) = self.sessions.get_mut(user) {
            let before = routes.len();
            routes.retain(|r| r.conn != conn);
            self.count -= before - routes.len();
            if routes.is_empty() {
                self.sessions.remove(user);
            }
        }
    }

    /// Drops the sessions of gateways whose lease has lapsed, and those older than their
    /// gateway's current run; returns them, to be purged from the bucket. Sessions of a
    /// gateway without a known lease are kept: its lease may not have been replayed yet.
    pub fn drop_dead(&mut self, book: &Book, now: Instant) -> Vec<(UserId, Route)> {
        let due: Vec<(GatewayId, Option<ConnId>)> = self
            .by_gateway
            .keys()
            .filter_map(|gateway| {
                let lease = book.leases.get(gateway)?;
                if lease.expires <= now {
                    Some((gateway.clone(), None))
                } else if self.checked.get(gateway) != Some(&lease.boot) {
                    Some((gateway.clone(), Some(lease.boot)))
                } else {
                    None
                }
            })
            .collect();
        let mut dead = Vec::new();
        for (gateway, boot) in due {
            let sessions = self.by_gateway.remove(&gateway).unwrap_or_default();
            self.checked.remove(&gateway);
            let stale = match boot {
                // Lapsed: all of them.
                None => sessions,
                Some(boot) => {
                    let (stale, current): (HashMap<_, _>, HashMap<_, _>) =
                        sessions.into_iter().partition(|(c, _)| *c <= boot);
                    if !current.is_empty() {
                        self.by_gateway.insert(gateway.clone(), current);
                        self.checked.insert(gateway.clone(), boot);
                    }
                    stale
                }
            };
            for (conn, user) in stale {
                self.drop_route(&user, conn);
                let gateway = gateway.clone();
                dead.push((user, Route { gateway, conn }));
            }
        }
        dead
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::presence::leases::Lease;

    fn book(leases: Vec<(&str, ConnId, Instant)>) -> Book {
        Book::with(
            leases
                .into_iter()
                .map(|(g, boot, expires)| {
                    let lease = Lease {
                        boot,
                        expires,
                        ttl: Duration::from_secs(60),
                        released: false,
                    };
                    (gw(g), lease)
                })
                .collect::<HashMap<_, _>>(),
        )
    }

    /// Ids in the order they are made, as a gateway makes them.
    fn id() -> ConnId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
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
        let (boot_a, boot_b) = (id(), id());
        let book = book(vec![
            ("a", boot_a, now - Duration::from_secs(1)),
            ("b", boot_b, now + Duration::from_secs(60)),
        ]);
        let mut s = Shard::default();
        let (on_a, on_b) = (id(), id());
        s.add_session(user("alice"), gw("a"), on_a);
        s.add_session(user("alice"), gw("b"), on_b);
        s.add_session(user("bob"), gw("a"), id());
        assert_eq!(s.len(), 3);

        let dead = s.drop_dead(&book, now);
        assert_eq!(dead.len(), 2);
        assert!(dead.iter().all(|(_, r)| r.gateway == gw("a")));
        assert_eq!(
            s.routes(&user("alice")),
            &[Route {
                gateway: gw("b"),
                conn: on_b
            }]
        );
        assert!(s.routes(&user("bob")).is_empty());
        assert_eq!(s.len(), 1);
        assert!(s.drop_dead(&book, now).is_empty(), "nothing left to drop");
    }

    #[test]
    fn sessions_of_a_previous_run_go_and_unknown_gateways_wait_for_their_lease() {
        let now = Instant::now();
        let mut s = Shard::default();
        let old = id();
        // The lease has not been replayed yet: the session is kept.
        s.add_session(user("carol"), gw("c"), old);
        assert!(s.drop_dead(&book(vec![]), now).is_empty());
        // The gateway restarted: its lease carries a boot newer than the old session.
        let boot = id();
        let current = id();
        let restarted = book(vec![("c", boot, now + Duration::from_secs(60))]);
        s.add_session(user("carol"), gw("c"), current);
        let dead = s.drop_dead(&restarted, now);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].1.conn, old);
        assert_eq!(s.routes(&user("carol")).len(), 1);
        assert!(s.drop_dead(&restarted, now).is_empty(), "checked already");
        // A late replay of an old session is found again.
        s.add_session(user("carol"), gw("c"), old);
        assert_eq!(s.drop_dead(&restarted, now).len(), 1);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn removing_a_session_twice_counts_it_once() {
        let mut s = Shard::default();
        let conn = id();
        s.add_session(user("dave"), gw("d"), conn);
        s.add_session(user("dave"), gw("d"), conn);
        assert_eq!(s.len(), 1);
        s.remove_session(&user("dave"), &gw("d"), conn);
        s.remove_session(&user("dave"), &gw("d"), conn);
        assert_eq!(s.len(), 0);
        assert!(s.routes(&user("dave")).is_empty());
    }
}
