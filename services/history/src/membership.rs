//! Group membership as the history service sees it. The chat service owns membership (the
//! `natter_groups` KV bucket); history only asks who may read a group and whom to tell about
//! receipts, through this seam.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use protocol::{ConversationId, GroupId, UserId};

/// Group membership as the history service sees it (the natter_groups KV view in production).
///
/// Answers are about "now": a removed member is no member, whatever they could read before.
/// Implementations answer from memory (no I/O), so callers may ask freely on every query.
pub trait Membership: Send + Sync + 'static {
    fn is_member(&self, group: &GroupId, user: &UserId) -> bool;
    /// The user's groups now.
    fn groups_of(&self, user: &UserId) -> Vec<GroupId>;
    /// How many members the group has now (0: no such group).
    fn member_count(&self, group: &GroupId) -> usize;
    /// The members, for groups up to `limit` members; None above it.
    fn members_if_at_most(&self, group: &GroupId, limit: usize) -> Option<Vec<UserId>>;
}

/// Whether `user` may read `conversation` through the server: a participant of a 1:1
/// conversation, or a current member of the group. A removed member reads nothing of the
/// group's history, not even what was written before the removal (their devices keep what
/// they received).
pub fn can_read(membership: &dyn Membership, user: &UserId, conversation: &ConversationId) -> bool {
    match conversation.group_id() {
        Some(group) => membership.is_member(&group, user),
        None => conversation.has_participant(user),
    }
}

/// The `natter_groups` bucket's view, kept until `stop`: membership for a running service.
pub async fn groups_view(
    nats: &async_nats::Client,
    bus: &plumbing::BusConfig,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Arc<dyn Membership>> {
    let js = async_nats::jetstream::new(nats.clone());
    let bucket = plumbing::bus::ensure_groups_bucket(&js, bus).await?;
    Ok(Arc::new(
        groups::GroupView::start(&js, &bucket, stop).await?,
    ))
}

impl Membership for groups::GroupView {
    fn is_member(&self, group: &GroupId, user: &UserId) -> bool {
        groups::GroupView::is_member(self, group, user)
    }

    fn groups_of(&self, user: &UserId) -> Vec<GroupId> {
        groups::GroupView::groups_of(self, user)
    }

    fn member_count(&self, group: &GroupId) -> usize {
        groups::GroupView::member_count(self, group)
    }

    fn members_if_at_most(&self, group: &GroupId, limit: usize) -> Option<Vec<UserId>> {
        (self.member_count(group) <= limit).then(|| self.members(group).to_vec())
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
    fn is_member(&self, group: &GroupId, user: &UserId) -> bool {
        self.groups
            .read()
            .unwrap()
            .get(group)
            .is_some_and(|members| members.contains(user))
    }

    fn groups_of(&self, user: &UserId) -> Vec<GroupId> {
        self.groups
            .read()
            .unwrap()
            .iter()
            .filter(|(_, members)| members.contains(user))
            .map(|(group, _)| group.clone())
            .collect()
    }

    fn member_count(&self, group: &GroupId) -> usize {
        self.groups.read().unwrap().get(group).map_or(0, Vec::len)
    }

    fn members_if_at_most(&self, group: &GroupId, limit: usize) -> Option<Vec<UserId>> {
        let groups = self.groups.read().unwrap();
        let members = groups.get(group).map(Vec::as_slice).unwrap_or_default();
        (members.len() <= limit).then(|| members.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    #[test]
    fn participants_and_current_members_only() {
        let membership = StaticMembership::default();
        let g = GroupId::new("club").unwrap();
        membership.set(g.clone(), vec![user("alice"), user("bob")]);
        let ab = ConversationId::direct(&user("alice"), &user("bob"));
        assert!(can_read(&membership, &user("alice"), &ab));
        assert!(!can_read(&membership, &user("mallory"), &ab));
        let club = ConversationId::group(&g);
        assert!(can_read(&membership, &user("bob"), &club));
        assert!(!can_read(&membership, &user("mallory"), &club));

        // Removed: no longer readable, whatever was written before.
        membership.set(g.clone(), vec![user("alice")]);
        assert!(!can_read(&membership, &user("bob"), &club));
        assert_eq!(membership.groups_of(&user("alice")), vec![g.clone()]);
        assert_eq!(membership.member_count(&g), 1);
        assert_eq!(
            membership.members_if_at_most(&g, 1),
            Some(vec![user("alice")])
        );
        assert_eq!(membership.members_if_at_most(&g, 0), None);
        membership.set(g.clone(), vec![]);
        assert_eq!(membership.member_count(&g), 0);
    }
}
