//! A partition router's memory of the sessions it looked up in shards held elsewhere, so a
//! busy conversation does not cost a request per message.
//!
//! An entry is dropped when the router passes a session marker of its user (the user has a
//! new session, which the next lookup must include: see `directory.rs`), and is used for at
//! most [`TTL`]. A session that ended within that time is still a target (its gateway reports
//! it undelivered, and the user is then announced offline); a gateway that died is noticed
//! only after its lease TTL anyway. The cache is the router task's own: it must see its
//! partition's markers in the order of its messages, which a cache shared by routers at
//! different places of their streams would not.

use std::collections::HashMap;
use std::time::Duration;

use protocol::UserId;
use tokio::time::Instant;

use super::Route;

/// How long a looked-up user's sessions are used.
const TTL: Duration = Duration::from_secs(1);
/// Users remembered at most; past it, stale entries go, and if none are, all do.
const MAX_USERS: usize = 65_536;

#[derive(Default)]
pub struct RouteCache {
    users: HashMap<UserId, Cached>,
}

struct Cached {
    routes: Vec<Route>,
    at: Instant,
}

impl RouteCache {
    /// `user` registered a session: the next lookup asks.
    pub fn forget(&mut self, user: &UserId) {
        self.users.remove(user);
    }

    /// The remembered sessions of `user`, if fresh (none: the user was offline).
    pub fn get(&self, user: &UserId, now: Instant) -> Option<&[Route]> {
        self.users
            .get(user)
            .filter(|c| now.duration_since(c.at) < TTL)
            .map(|c| c.routes.as_slice())
    }

    pub fn put(&mut self, user: UserId, routes: Vec<Route>, now: Instant) {
        if self.users.len() >= MAX_USERS && !self.users.contains_key(&user) {
            self.users.retain(|_, c| now.duration_since(c.at) < TTL);
            if self.users.len() >= MAX_USERS {
                self.users.clear();
            }
        }
        self.users.insert(user, Cached { routes, at: now });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{ConnId, GatewayId};

    fn route() -> Route {
        Route {
            gateway: GatewayId::new("gw").unwrap(),
            conn: ConnId(ulid::Ulid::new()),
        }
    }

    #[test]
    fn entries_last_a_second_and_a_registration_drops_one() {
        let (alice, bob) = (UserId::new("alice").unwrap(), UserId::new("bob").unwrap());
        let now = Instant::now();
        let mut cache = RouteCache::default();
        cache.put(alice.clone(), vec![route()], now);
        cache.put(bob.clone(), Vec::new(), now);
        assert_eq!(cache.get(&alice, now).map(<[Route]>::len), Some(1));
        assert_eq!(
            cache.get(&bob, now).map(<[Route]>::len),
            Some(0),
            "offline is remembered"
        );
        assert!(cache.get(&alice, now + TTL).is_none(), "stale");
        cache.forget(&bob);
        assert!(cache.get(&bob, now).is_none());
    }

    #[test]
    fn a_full_cache_makes_room() {
        let now = Instant::now();
        let mut cache = RouteCache::default();
        for i in 0..MAX_USERS {
            cache.put(UserId::new(format!("u{i}")).unwrap(), Vec::new(), now);
        }
        let later = now + TTL;
        let newcomer = UserId::new("newcomer").unwrap();
        cache.put(newcomer.clone(), Vec::new(), later);
        assert_eq!(cache.users.len(), 1, "the stale entries went");
        assert!(cache.get(&newcomer, later).is_some());
    }
}
