//! The gateway's local registry: connection id → session handle, and user → connections.
//! A small lock, never held across `.await`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use protocol::{ConnId, Encoding, UserId};

use crate::outbox::Outbox;

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

#[derive(Default)]
struct Inner {
    sessions: HashMap<ConnId, Arc<SessionHandle>>,
    users: HashMap<UserId, Vec<ConnId>>,
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

    pub fn remove(&self, conn: ConnId) {
        let mut inner = self.inner.write().unwrap();
        if let Some(handle) = inner.sessions.remove(&conn)
            && let Some(conns) = inner.users.get_mut(&handle.user)
        {
            conns.retain(|c| *c != conn);
            if conns.is_empty() {
                inner.users.remove(&handle.user);
            }
        }
    }

    /// Calls `f` for each of `conns` that is connected here.
    pub fn for_each_of(&self, conns: &[ConnId], mut f: impl FnMut(&SessionHandle)) {
        let inner = self.inner.read().unwrap();
        for conn in conns {
            if let Some(handle) = inner.sessions.get(conn) {
                f(handle);
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

    pub fn len(&self) -> usize {
        self.inner.read().unwrap().sessions.len()
    }

    pub fn users_online(&self) -> usize {
        self.inner.read().unwrap().users.len()
    }
}
