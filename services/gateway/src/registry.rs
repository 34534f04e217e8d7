//! The gateway's local registry: connection id → session handle, and user → connections.
//! A small lock, never held across `.await`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use protocol::{ConnId, Encoding, UserId};

use crate::outbox::Outbox;
use crate::quota::SendQuota;

/// What the rest of the gateway may do with a live session.
pub struct SessionHandle {
    pub user: UserId,
    pub encoding: Encoding,
    pub outbox: Outbox,
}

#[derive(Default)]
pub struct Registry {
    inner: RwLock<Inner>,
}

/// Closed connections remembered, so a delivery arriving just after a close can be reported
/// with its user (see `inbox`).
const RECENTLY_CLOSED: usize = 4096;

#[derive(Default)]
struct Inner {
    sessions: HashMap<ConnId, Arc<SessionHandle>>,
    users: HashMap<UserId, Vec<ConnId>>,
    /// Each connected user's send limits, shared by their connections here.
    quotas: HashMap<UserId, Arc<SendQuota>>,
    closed: VecDeque<(ConnId, UserId)>,
}

impl Registry {
    pub fn insert(&self, conn: ConnId, handle: Arc<SessionHandle>) {
        let mut inner = self.inner.write().unwrap();
        inner
            .users
            .entry(handle.user.clone())
            .or_default()
            .push(conn);
        inner.sessions.insert(conn, handle);
    }

    /// The send quota of `user`, a connected user, shared by their connections here; made
    /// with `make` on their first send (idle users cost nothing for it).
    pub fn quota(&self, user: &UserId, make: impl FnOnce() -> SendQuota) -> Arc<SendQuota> {
        let mut inner = self.inner.write().unwrap();
        inner
            .quotas
            .entry(user.clone())
            .or_insert_with(|| Arc::new(make()))
            .clone()
    }

    pub fn remove(&self, conn: ConnId) {
        let mut inner = self.inner.write().unwrap();
        if let Some(handle) = inner.sessions.remove(&conn)
            && let Some(conns) = inner.users.get_mut(&handle.user)
        {
            conns.retain(|c| *c != conn);
            if conns.is_empty() {
                inner.users.remove(&handle.user);
                inner.quotas.remove(&handle.user);
            }
            if inner.closed.len() == RECENTLY_CLOSED {
                inner.closed.pop_front();
            }
            inner.closed.push_back((conn, handle.user.clone()));
        }
    }

    /// Calls `f` for each of `conns` that is connected here, and `gone` with the user of each
    /// one that recently closed.
    pub fn deliver_to(
        &self,
        conns: &[ConnId],
        mut f: impl FnMut(&SessionHandle),
        mut gone: impl FnMut(ConnId, &UserId),
    ) {
        let inner = self.inner.read().unwrap();
        for conn in conns {
            if let Some(handle) = inner.sessions.get(conn) {
                f(handle);
            } else if let Some((_, user)) = inner.closed.iter().rev().find(|(c, _)| c == conn) {
                gone(*conn, user);
            }
        }
    }

    /// Every session, for shutdown and re-registration.
    pub fn all(&self) -> Vec<(ConnId, Arc<SessionHandle>)> {
        let inner = self.inner.read().unwrap();
        inner
            .sessions
            .iter()
            .map(|(c, h)| (*c, h.clone()))
            .collect()
    }

    pub fn contains(&self, conn: ConnId) -> bool {
        self.inner.read().unwrap().sessions.contains_key(&conn)
    }

    /// How many connections `user` has here.
    pub fn connections_of(&self, user: &UserId) -> usize {
        self.inner
            .read()
            .unwrap()
            .users
            .get(user)
            .map_or(0, Vec::len)
    }

    pub fn len(&self) -> usize {
        self.inner.read().unwrap().sessions.len()
    }

    pub fn users_online(&self) -> usize {
        self.inner.read().unwrap().users.len()
    }
}
