//! The in-memory view of the `natter_groups` bucket: who is in which group, kept by watching
//! the bucket, so routing a group message and authorising a send cost no round trip.
//!
//! The view trails the bucket by the time a change takes to arrive (milliseconds). Where that
//! matters, the writer knows the revision of its write and waits for the view to reach it
//! (`reach`): the router does so at every membership event in the messages stream, so nothing
//! written after a removal reaches the removed member and everything after an addition
//! reaches the new one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use plumbing::kv_follow::Progress;
use protocol::{GroupId, Member, Role, UserId, subjects};
use tokio_util::sync::CancellationToken;

use crate::records::{GroupRecord, Key, MemberRecord};

/// Cloneable handle to the view.
#[derive(Clone)]
pub struct GroupView {
    state: Arc<RwLock<State>>,
    progress: Progress,
}

#[derive(Default)]
struct State {
    groups: HashMap<GroupId, Group>,
    of_user: HashMap<UserId, HashSet<GroupId>>,
}

#[derive(Default)]
struct Group {
    record: Option<GroupRecord>,
    members: BTreeMap<UserId, MemberRecord>,
    /// The member list as routing reads it, rebuilt on first use after a change.
    snapshot: Option<Arc<[UserId]>>,
}

impl GroupView {
    /// Loads the bucket and keeps the view up to date until `stop`.
    pub async fn start(
        js: &jetstream::Context,
        bucket: &kv::Store,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let state = Arc::new(RwLock::new(State::default()));
        let applying = state.clone();
        let progress = Progress::follow(
            js,
            bucket,
            subjects::GROUPS_BUCKET,
            move |entry| applying.write().unwrap().apply(entry),
            stop,
        )
        .await?;
        Ok(Self { state, progress })
    }

    /// Waits until the bucket change with revision `rev` is applied (at most `patience`).
    pub async fn reach(&self, rev: u64, patience: Duration) -> bool {
        self.progress.reach(rev, patience).await
    }

    pub fn record(&self, group: &GroupId) -> Option<GroupRecord> {
        let state = self.state.read().unwrap();
        state.groups.get(group)?.record.clone()
    }

    pub fn role(&self, group: &GroupId, user: &UserId) -> Option<Role> {
        let state = self.state.read().unwrap();
        Some(state.groups.get(group)?.members.get(user)?.role)
    }

    pub fn is_member(&self, group: &GroupId, user: &UserId) -> bool {
        self.role(group, user).is_some()
    }

    pub fn member_count(&self, group: &GroupId) -> usize {
        let state = self.state.read().unwrap();
        state.groups.get(group).map_or(0, |g| g.members.len())
    }

    /// Every member (empty for an unknown group). Cheap to call per message: the list is
    /// shared until the membership changes.
    pub fn members(&self, group: &GroupId) -> Arc<[UserId]> {
        if let Some(g) = self.state.read().unwrap().groups.get(group)
            && let Some(snapshot) = &g.snapshot
        {
            return snapshot.clone();
        }
        let mut state = self.state.write().unwrap();
        let Some(g) = state.groups.get_mut(group) else {
            return Arc::from([]);
        };
        g.snapshot
            .get_or_insert_with(|| g.members.keys().cloned().collect())
            .clone()
    }

    /// Up to `limit` members after `after`, by user id, and whether more follow.
    pub fn members_page(
        &self,
        group: &GroupId,
        after: Option<&UserId>,
        limit: usize,
    ) -> (Vec<Member>, bool) {
        let state = self.state.read().unwrap();
        let Some(g) = state.groups.get(group) else {
            return (Vec::new(), false);
        };
        let range = match after {
            Some(a) => g
                .members
                .range::<UserId, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => g.members.range::<UserId, _>(..),
        };
        let mut page: Vec<Member> = range
            .take(limit.saturating_add(1))
            .map(|(user, m)| Member {
                user: user.clone(),
                role: m.role,
            })
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        (page, more)
    }

    /// How many groups `user` is a member of.
    pub fn group_count(&self, user: &UserId) -> usize {
        self.state
            .read()
            .unwrap()
            .of_user
            .get(user)
            .map_or(0, |gs| gs.len())
    }

    /// The groups `user` is a member of, in no particular order.
    pub fn groups_of(&self, user: &UserId) -> Vec<GroupId> {
        let state = self.state.read().unwrap();
        state
            .of_user
            .get(user)
            .map(|gs| gs.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl State {
    fn apply(&mut self, entry: &kv::Entry) {
        let Some(key) = Key::parse(&entry.key) else {
            tracing::warn!(key = %entry.key, "unexpected key in the groups bucket");
            return;
        };
        let put = entry.operation == kv::Operation::Put;
        match key {
            Key::Group(group) => {
                let record = if put {
                    match serde_json::from_slice::<GroupRecord>(&entry.value) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            tracing::warn!(error = %e, %group, "undecodable group record");
                            return;
                        }
                    }
                } else {
                    None
                };
                self.groups.entry(group.clone()).or_default().record = record;
                self.drop_if_empty(&group);
            }
            Key::Member(group, user) => {
                let g = self.groups.entry(group.clone()).or_default();
                g.snapshot = None;
                if put {
                    match serde_json::from_slice::<MemberRecord>(&entry.value) {
                        Ok(m) => {
                            g.members.insert(user.clone(), m);
                            self.of_user.entry(user).or_default().insert(group);
                        }
                        Err(e) => tracing::warn!(error = %e, %group, "undecodable membership"),
                    }
                } else {
                    g.members.remove(&user);
                    if let Some(gs) = self.of_user.get_mut(&user) {
                        gs.remove(&group);
                        if gs.is_empty() {
                            self.of_user.remove(&user);
                        }
                    }
                    self.drop_if_empty(&group);
                }
            }
        }
    }

    fn drop_if_empty(&mut self, group: &GroupId) {
        if self
            .groups
            .get(group)
            .is_some_and(|g| g.record.is_none() && g.members.is_empty())
        {
            self.groups.remove(group);
        }
    }
}
