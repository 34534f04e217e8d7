//! Presence watching: which local connections watch which users. The gateway subscribes to
//! `natter.presence.<user>` once per watched user, however many of its connections watch
//! them, and passes each change to the watchers like any delivery.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use protocol::frames::ServerFrame;
use protocol::payloads::{Delivery, UserPresence};
use protocol::{ConnId, UserId, subjects};
use tokio::task::AbortHandle;

use crate::local::Local;

#[derive(Default)]
pub struct Watchers {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    users: HashMap<UserId, Watched>,
    by_conn: HashMap<ConnId, Vec<UserId>>,
}

struct Watched {
    conns: Vec<ConnId>,
    task: Option<AbortHandle>,
}

impl Watchers {
    /// How many users `conn` watches.
    pub fn count(&self, conn: ConnId) -> usize {
        self.inner
            .lock()
            .unwrap()
            .by_conn
            .get(&conn)
            .map_or(0, Vec::len)
    }

    /// `conn` watches `user` from now on; changes are delivered through `local`. The
    /// subscription is live on the server when this returns, so no change after it is missed.
    pub async fn watch(
        self: &Arc<Self>,
        local: &Arc<Local>,
        conn: ConnId,
        user: UserId,
    ) -> anyhow::Result<()> {
        let watchers = self;
        {
            let mut inner = watchers.inner.lock().unwrap();
            let watching = inner.by_conn.entry(conn).or_default();
            if watching.contains(&user) {
                return Ok(());
            }
            watching.push(user.clone());
            if let Some(w) = inner.users.get_mut(&user) {
                w.conns.push(conn);
                return Ok(());
            }
            inner.users.insert(
                user.clone(),
                Watched {
                    conns: vec![conn],
                    task: None,
                },
            );
        }
        let mut sub = match local.nats.subscribe(subjects::presence(&user)).await {
            Ok(sub) => sub,
            Err(e) => {
                watchers.inner.lock().unwrap().unwatch(conn, &user);
                return Err(e.into());
            }
        };
        plumbing::bus::round_trip(&local.nats).await;
        let task = {
            let (watchers, local) = (self.clone(), local.clone());
            let user = user.clone();
            tokio::spawn(async move {
                while let Some(msg) = sub.next().await {
                    let Ok(p) = serde_json::from_slice::<UserPresence>(&msg.payload) else {
                        continue;
                    };
                    let targets = watchers.conns_of(&user);
                    let frame = ServerFrame::Presence {
                        user: p.user,
                        online: p.online,
                        last_seen: p.last_seen,
                    };
                    let delivery = Delivery {
                        position: None,
                        targets,
                        frame,
                        order: None,
                    };
                    local.deliver(delivery);
                }
            })
        };
        let mut inner = watchers.inner.lock().unwrap();
        match inner.users.get_mut(&user) {
            Some(w) if w.task.is_none() => w.task = Some(task.abort_handle()),
            // Everyone stopped watching while we subscribed.
            _ => task.abort(),
        }
        Ok(())
    }

    fn conns_of(&self, user: &UserId) -> Vec<ConnId> {
        self.inner
            .lock()
            .unwrap()
            .users
            .get(user)
            .map(|w| w.conns.clone())
            .unwrap_or_default()
    }

    /// `conn` has closed: it watches nobody any more.
    pub fn forget(&self, conn: ConnId) {
        let mut inner = self.inner.lock().unwrap();
        let Some(users) = inner.by_conn.remove(&conn) else {
            return;
        };
        for user in users {
            inner.unwatch(conn, &user);
        }
    }
}

impl Inner {
    fn unwatch(&mut self, conn: ConnId, user: &UserId) {
        if let Some(watching) = self.by_conn.get_mut(&conn) {
            watching.retain(|u| u != user);
        }
        if let Some(w) = self.users.get_mut(user) {
            w.conns.retain(|c| *c != conn);
            if w.conns.is_empty() {
                if let Some(task) = w.task.take() {
                    task.abort();
                }
                self.users.remove(user);
            }
        }
    }
}
