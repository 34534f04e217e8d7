//! The in-memory view of one shard of the `natter_groups` bucket: the groups of partition
//! `k` (their records and members) and the group lists of shard `k`'s users, kept by
//! watching the shard's keys (`<k>.>`), so routing a group message costs no round trip and
//! an instance holds only its shards, not every group.
//!
//! The view trails the bucket by the time a change takes to arrive (milliseconds). Where that
//! matters, the writer knows the revision of its write and waits for the view to reach it
//! (`reach`): the router does so at every membership event in the messages stream, so nothing
//! written after a removal reaches the removed member and everything after an addition
//! reaches the new one. A shard's view reaches only revisions of its own keys, so a writer
//! waits for the revision of its last write in that shard.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use plumbing::kv_follow::Progress;
use protocol::payloads::{GroupFacts, GroupsAnswer, GroupsAsk};
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
    /// The group lists of the shard's users.
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
    /// Starts following shard `k`'s keys and keeps the view up to date until `stop`; see
    /// [`GroupView::loaded`] for when it holds what the bucket held.
    pub async fn follow_shard(
        js: &jetstream::Context,
        bucket: &kv::Store,
        k: u32,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let state = Arc::new(RwLock::new(State::default()));
        let applying = state.clone();
        let progress = Progress::follow_keys(
            js,
            bucket,
            subjects::GROUPS_BUCKET,
            &format!("{k}.>"),
            move |entry| applying.write().unwrap().apply(entry),
            stop,
        )
        .await?;
        Ok(Self { state, progress })
    }

    /// Waits until the view holds what the shard held when following began.
    pub async fn loaded(&self, patience: Duration) -> bool {
        self.progress.loaded(patience).await
    }

    /// How many groups and memberships the view holds (for the start-up log and benchmarks).
    pub fn size(&self) -> (usize, usize) {
        let state = self.state.read().unwrap();
        let memberships = state.groups.values().map(|g| g.members.len()).sum();
        (state.groups.len(), memberships)
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

    /// The groups `user` (a user of this shard) is a member of, in no particular order.
    pub fn groups_of(&self, user: &UserId) -> Vec<GroupId> {
        let state = self.state.read().unwrap();
        state
            .of_user
            .get(user)
            .map(|gs| gs.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl GroupView {
    fn facts(&self, group: &GroupId, user: &UserId) -> Option<GroupFacts> {
        let record = self.record(group)?;
        Some(GroupFacts {
            name: record.name,
            created_by: record.created_by,
            created_ts: record.created_ts,
            members: self.member_count(group) as u32,
            role: self.role(group, user),
        })
    }

    /// The answer to `ask`, once the view has applied `revision` (at most `patience`).
    pub async fn answer(&self, revision: u64, ask: GroupsAsk, patience: Duration) -> GroupsAnswer {
        self.reach(revision, patience).await;
        match ask {
            GroupsAsk::Info { group, user } => GroupsAnswer::Info {
                facts: self.facts(&group, &user),
            },
            GroupsAsk::Infos { groups, user } => GroupsAnswer::Infos {
                facts: groups.iter().map(|g| self.facts(g, &user)).collect(),
            },
            GroupsAsk::Members {
                group,
                after,
                limit,
            } => {
                let (members, more) = self.members_page(&group, after.as_ref(), limit as usize);
                GroupsAnswer::Members {
                    members,
                    more,
                    count: self.member_count(&group) as u32,
                }
            }
            GroupsAsk::Heir { group } => {
                let state = self.state.read().unwrap();
                let members = state.groups.get(&group).map(|g| &g.members);
                let heir = members.and_then(|members| {
                    members
                        .iter()
                        .find(|(_, m)| m.role == Role::Admin)
                        .or(members.iter().next())
                        .map(|(user, _)| user.clone())
                });
                GroupsAnswer::Heir { heir }
            }
            GroupsAsk::GroupsOf { users } => GroupsAnswer::GroupsOf {
                groups: users.iter().map(|u| self.groups_of(u)).collect(),
            },
            GroupsAsk::GroupCounts { users } => {
                let state = self.state.read().unwrap();
                let count = |u: &UserId| state.of_user.get(u).map_or(0, |gs| gs.len() as u32);
                GroupsAnswer::GroupCounts {
                    counts: users.iter().map(count).collect(),
                }
            }
        }
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
                            g.members.insert(user, m);
                        }
                        Err(e) => tracing::warn!(error = %e, %group, "undecodable membership"),
                    }
                } else {
                    g.members.remove(&user);
                    self.drop_if_empty(&group);
                }
            }
            Key::GroupOf(user, group) => {
                if put {
                    self.of_user.entry(user).or_default().insert(group);
                } else if let Some(gs) = self.of_user.get_mut(&user) {
                    gs.remove(&group);
                    if gs.is_empty() {
                        self.of_user.remove(&user);
                    }
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
