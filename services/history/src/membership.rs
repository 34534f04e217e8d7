//! Group membership as the history service sees it. The chat service owns membership (the
//! `natter_groups` KV bucket, sharded, each shard held by a chat instance); history holds no
//! shard and asks, through this seam: who may read a group, whose groups are whose, and whom
//! to tell about receipts.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use protocol::{ConversationId, GroupId, UserId};

/// Group membership as the history service sees it (the chat instances holding the groups'
/// shards in production).
///
/// Answers are about "now": a removed member is no member, whatever they could read before.
pub trait Membership: Send + Sync + 'static {
    fn is_member<'a>(
        &'a self,
        group: &'a GroupId,
        user: &'a UserId,
    ) -> BoxFuture<'a, anyhow::Result<bool>>;
    /// The user's groups now.
    fn groups_of<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, anyhow::Result<Vec<GroupId>>>;
    /// How many members the group has now (0: no such group), and the members if at most
    /// `limit`.
    fn members_if_at_most<'a>(
        &'a self,
        group: &'a GroupId,
        limit: usize,
    ) -> BoxFuture<'a, anyhow::Result<(Option<Vec<UserId>>, usize)>>;
}

/// Whether `user` may read `conversation` through the server: a participant of a 1:1
/// conversation, or a current member of the group. A removed member reads nothing of the
/// group's history, not even what was written before the removal (their devices keep what
/// they received).
pub async fn can_read(
    membership: &dyn Membership,
    user: &UserId,
    conversation: &ConversationId,
) -> anyhow::Result<bool> {
    match conversation.group_id() {
        Some(group) => membership.is_member(&group, user).await,
        None => Ok(conversation.has_participant(user)),
    }
}

/// How long the member list of a small group is reused for receipts: a receipt is a notice
/// (at most once), and a group's members would otherwise be asked for at every receipt.
const RECEIPT_MEMBERS_FOR: Duration = Duration::from_secs(1);

/// A group's member list (if at most the limit asked with) and member count.
type Listed = (Option<Arc<[UserId]>>, usize);

/// Membership for a running service: asked of the chat instances holding the shards.
pub struct HeldElsewhere {
    groups: groups::Groups,
    /// Small groups' member lists and counts, by group and limit, for
    /// [`RECEIPT_MEMBERS_FOR`].
    recent: moka::future::Cache<(GroupId, usize), Listed>,
}

/// Membership asked of the chat service's shard holders.
pub async fn held_elsewhere(
    nats: &async_nats::Client,
    bus: &plumbing::BusConfig,
) -> anyhow::Result<Arc<dyn Membership>> {
    let js = async_nats::jetstream::new(nats.clone());
    let bucket = plumbing::bus::ensure_groups_bucket(&js, bus).await?;
    Ok(Arc::new(HeldElsewhere {
        groups: groups::Groups::new(nats.clone(), bucket, bus.partitions, None),
        recent: moka::future::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(RECEIPT_MEMBERS_FOR)
            .build(),
    }))
}

impl Membership for HeldElsewhere {
    /// Exact: read from the bucket.
    fn is_member<'a>(
        &'a self,
        group: &'a GroupId,
        user: &'a UserId,
    ) -> BoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(self.groups.is_member(group, user))
    }

    fn groups_of<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, anyhow::Result<Vec<GroupId>>> {
        Box::pin(async move {
            let mut lists = self.groups.groups_of(std::slice::from_ref(user)).await?;
            Ok(lists.pop().unwrap_or_default())
        })
    }

    fn members_if_at_most<'a>(
        &'a self,
        group: &'a GroupId,
        limit: usize,
    ) -> BoxFuture<'a, anyhow::Result<(Option<Vec<UserId>>, usize)>> {
        Box::pin(async move {
            // Receipts of one group come in bursts: one question answers them all.
            let asked = async {
                let (members, count) = self.groups.members_if_at_most(group, limit).await?;
                anyhow::Ok((members.map(Arc::<[UserId]>::from), count))
            };
            let (members, count) = self
                .recent
                .try_get_with((group.clone(), limit), asked)
                .await
                .map_err(|e| anyhow::anyhow!("{e:#}"))?;
            Ok((members.map(|m| m.to_vec()), count))
        })
    }
}

/// Membership held in memory and set by hand, for tests.
#[derive(Default)]
pub struct StaticMembership {
    groups: RwLock<HashMap<GroupId, Vec<UserId>>>,
}

impl StaticMembership {
    /// Replaces the members of `group` (an empty list removes the group).
    pub fn set(&self, group: GroupId, members: Vec<UserId>) {
        let mut groups = self.groups.write().unwrap();
        if members.is_empty() {
            groups.remove(&group);
        } else {
            groups.insert(group, members);
        }
    }
}

impl Membership for StaticMembership {
    fn is_member<'a>(
        &'a self,
        group: &'a GroupId,
        user: &'a UserId,
    ) -> BoxFuture<'a, anyhow::Result<bool>> {
        let member = self
            .groups
            .read()
            .unwrap()
            .get(group)
            .is_some_and(|members| members.contains(user));
        Box::pin(std::future::ready(Ok(member)))
    }

    fn groups_of<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, anyhow::Result<Vec<GroupId>>> {
        let groups = self
            .groups
            .read()
            .unwrap()
            .iter()
            .filter(|(_, members)| members.contains(user))
            .map(|(group, _)| group.clone())
            .collect();
        Box::pin(std::future::ready(Ok(groups)))
    }

    fn members_if_at_most<'a>(
        &'a self,
        group: &'a GroupId,
        limit: usize,
    ) -> BoxFuture<'a, anyhow::Result<(Option<Vec<UserId>>, usize)>> {
        let groups = self.groups.read().unwrap();
        let members = groups.get(group).map(Vec::as_slice).unwrap_or_default();
        let listed = (members.len() <= limit).then(|| members.to_vec());
        Box::pin(std::future::ready(Ok((listed, members.len()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    #[tokio::test]
    async fn participants_and_current_members_only() {
        let membership = StaticMembership::default();
        let g = GroupId::new("club").unwrap();
        membership.set(g.clone(), vec![user("alice"), user("bob")]);
        let ab = ConversationId::direct(&user("alice"), &user("bob"));
        let reads = |u: &'static str, c: ConversationId| {
            let membership = &membership;
            async move { can_read(membership, &user(u), &c).await.unwrap() }
        };
        assert!(reads("alice", ab.clone()).await);
        assert!(!reads("mallory", ab).await);
        let club = ConversationId::group(&g);
        assert!(reads("bob", club.clone()).await);
        assert!(!reads("mallory", club.clone()).await);

        // Removed: no longer readable, whatever was written before.
        membership.set(g.clone(), vec![user("alice")]);
        assert!(!reads("bob", club).await);
        assert_eq!(
            membership.groups_of(&user("alice")).await.unwrap(),
            vec![g.clone()]
        );
        assert_eq!(
            membership.members_if_at_most(&g, 1).await.unwrap(),
            (Some(vec![user("alice")]), 1)
        );
        assert_eq!(
            membership.members_if_at_most(&g, 0).await.unwrap(),
            (None, 1)
        );
        membership.set(g.clone(), vec![]);
        assert_eq!(
            membership.members_if_at_most(&g, 0).await.unwrap(),
            (Some(vec![]), 0)
        );
    }
}
