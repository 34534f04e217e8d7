//! Who may do what in a group. Roles are read from the bucket, not a view, so a decision
//! always sees the latest write (a member removed a moment ago on another instance is refused).

use futures::StreamExt;
use groups::{MemberRecord, group_record, membership};
use protocol::{GroupId, Role, UserId};

use super::GroupOps;
use super::writes::WRITES_AT_ONCE;
use crate::refusal::GroupError;

impl GroupOps {
    /// The user's role, read from the bucket; refused if they are not a member.
    pub(super) async fn role_of(&self, group: &GroupId, user: &UserId) -> Result<Role, GroupError> {
        match membership(&self.bucket, group, user, self.partitions).await? {
            Some(m) => Ok(m.role),
            None if group_record(&self.bucket, group, self.partitions)
                .await?
                .is_none() =>
            {
                Err(GroupError::NoSuchGroup)
            }
            None => Err(GroupError::NotAMember),
        }
    }

    /// The role of `user`, who must be the owner or an admin.
    pub(super) async fn require_manager(
        &self,
        group: &GroupId,
        user: &UserId,
    ) -> Result<Role, GroupError> {
        let role = self.role_of(group, user).await?;
        if !role.manages() {
            return Err(GroupError::NotAManager);
        }
        Ok(role)
    }

    /// Those of `users` who are members, if a manager with `actor_role` may remove them all;
    /// the owner is never removed, and admins only by the owner.
    pub(super) async fn removable(
        &self,
        group: &GroupId,
        users: Vec<UserId>,
        actor_role: Role,
    ) -> Result<Vec<UserId>, GroupError> {
        let found: Vec<(UserId, anyhow::Result<Option<MemberRecord>>)> =
            futures::stream::iter(users)
                .map(|user| {
                    let (bucket, group) = (self.bucket.clone(), group.clone());
                    let shards = self.partitions;
                    async move {
                        let m = membership(&bucket, &group, &user, shards).await;
                        (user, m)
                    }
                })
                .buffered(WRITES_AT_ONCE)
                .collect()
                .await;
        let mut targets = Vec::new();
        for (user, member) in found {
            match member? {
                None => {}
                Some(m) if m.role == Role::Owner => return Err(GroupError::RemovingOwner),
                Some(m) if m.role == Role::Admin && actor_role != Role::Owner => {
                    return Err(GroupError::AdminRemovedByAdmin);
                }
                Some(_) => targets.push(user),
            }
        }
        Ok(targets)
    }

    /// The current membership of `target`, whose role `actor` sets: only the owner sets
    /// roles, and only other members'.
    pub(super) async fn role_settable(
        &self,
        group: &GroupId,
        actor: &UserId,
        target: &UserId,
    ) -> Result<MemberRecord, GroupError> {
        if self.role_of(group, actor).await? != Role::Owner {
            return Err(GroupError::RoleSetByNonOwner);
        }
        if target == actor {
            return Err(GroupError::OwnRole);
        }
        membership(&self.bucket, group, target, self.partitions)
            .await?
            .ok_or(GroupError::NoSuchMember)
    }
}

/// Whether a manager with `actor_role` may add members with `role`: a group has one owner,
/// and only the owner adds admins.
pub(super) fn may_add(actor_role: Role, role: Role) -> Result<(), GroupError> {
    match role {
        Role::Owner => Err(GroupError::SecondOwner),
        Role::Admin if actor_role != Role::Owner => Err(GroupError::AdminAddedByAdmin),
        _ => Ok(()),
    }
}

/// Managers remove others; members leave by themselves.
pub(super) fn may_remove_users(actor: &UserId, users: &[String]) -> Result<(), GroupError> {
    if users.iter().any(|u| u == actor.as_str()) {
        return Err(GroupError::RemovingSelf);
    }
    Ok(())
}
