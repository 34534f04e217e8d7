//! The operations that change a group (create, rename, add, remove, leave, set a role), each
//! in the same order: check the request, authorise against the bucket, write the bucket,
//! record the system message with the revision, answer with the group as the actor sees it.

use futures::StreamExt;
use groups::{GroupRecord, group_record};
use protocol::{ClientMsgId, GroupEvent, GroupId, Role, UserId};

use super::authorise::{may_add, may_remove_users};
use super::validate::{group_name, user_ids};
use super::writes::{WRITES_AT_ONCE, now_ms};
use super::{Answer, GroupOps};
use crate::refusal::GroupError;

impl GroupOps {
    pub(super) async fn create(
        &self,
        owner: UserId,
        qid: ClientMsgId,
        name: &str,
        members: &[String],
    ) -> Answer {
        let name = group_name(name)?;
        let members = user_ids(members, &owner)?;
        self.check_size(members.len() + 1)?;
        let mut joining = vec![owner.clone()];
        joining.extend(members.iter().cloned());
        self.check_groups_of(&joining).await?;
        self.check_consent(&owner, &members).await?;
        let group = GroupId::new(ulid::Ulid::new().to_string()).expect("a ULID is a valid id");
        let now = now_ms();
        let record = GroupRecord {
            name: name.clone(),
            created_by: owner.clone(),
            created_ts: now,
        };
        self.create_group(&group, &record).await?;
        let rev = self.put_member(&group, &owner, Role::Owner, now).await?;
        let (members, last) = self
            .create_members(&group, members, Role::Member, now)
            .await?;
        let rev = rev.max(last);
        let mut everyone = vec![owner.clone()];
        everyone.extend(members);
        let event = GroupEvent::Created {
            name,
            members: everyone,
        };
        self.record(&group, &owner, event, rev).await;
        self.answer_info(qid, &group, &owner, rev).await
    }

    pub(super) async fn rename(
        &self,
        actor: UserId,
        qid: ClientMsgId,
        group: GroupId,
        name: &str,
    ) -> Answer {
        let name = group_name(name)?;
        self.require_manager(&group, &actor).await?;
        let Some((mut record, revision)) =
            group_record(&self.bucket, &group, self.partitions).await?
        else {
            return Err(GroupError::NoSuchGroup);
        };
        record.name = name.clone();
        let rev = self.update_group(&group, &record, revision).await?;
        self.record(&group, &actor, GroupEvent::Renamed { name }, rev)
            .await;
        self.answer_info(qid, &group, &actor, rev).await
    }

    pub(super) async fn add(
        &self,
        actor: UserId,
        qid: ClientMsgId,
        group: GroupId,
        users: &[String],
        role: Option<Role>,
    ) -> Answer {
        let actor_role = self.require_manager(&group, &actor).await?;
        let role = role.unwrap_or(Role::Member);
        may_add(actor_role, role)?;
        let users = user_ids(users, &actor)?;
        let newcomers = self.not_members(&group, users).await?;
        let members = self
            .groups
            .info(&group, &actor, 0)
            .await?
            .map_or(0, |facts| facts.members as usize);
        self.check_size(members + newcomers.len())?;
        self.check_groups_of(&newcomers).await?;
        self.check_consent(&actor, &newcomers).await?;
        let (added, rev) = self
            .create_members(&group, newcomers, role, now_ms())
            .await?;
        if !added.is_empty() {
            let event = GroupEvent::Added { users: added, role };
            self.record(&group, &actor, event, rev).await;
        }
        self.answer_info(qid, &group, &actor, rev).await
    }

    pub(super) async fn remove(
        &self,
        actor: UserId,
        qid: ClientMsgId,
        group: GroupId,
        users: &[String],
    ) -> Answer {
        let actor_role = self.require_manager(&group, &actor).await?;
        may_remove_users(&actor, users)?;
        let users = user_ids(users, &actor)?;
        let targets = self.removable(&group, users, actor_role).await?;
        let mut rev = 0;
        if !targets.is_empty() {
            rev = self.delete_members(&group, &targets).await?;
            let event = GroupEvent::Removed { users: targets };
            self.record(&group, &actor, event, rev).await;
        }
        self.answer_info(qid, &group, &actor, rev).await
    }

    pub(super) async fn leave(&self, user: UserId, qid: ClientMsgId, group: GroupId) -> Answer {
        let role = self.role_of(&group, &user).await?;
        let mut rev = self
            .delete_members(&group, std::slice::from_ref(&user))
            .await?;
        self.record(&group, &user, GroupEvent::Left, rev).await;
        if role == Role::Owner {
            rev = self.hand_over(&group, &user, rev).await?;
        }
        self.answer_info(qid, &group, &user, rev).await
    }

    /// After the owner left (the bucket at `rev`): the first admin by user id becomes owner,
    /// else the first member; with nobody left, the group is deleted. Returns the revision
    /// of that write.
    async fn hand_over(
        &self,
        group: &GroupId,
        former: &UserId,
        rev: u64,
    ) -> Result<u64, GroupError> {
        match self.groups.heir(group, rev).await? {
            Some(heir) => {
                let rev = self.put_member(group, &heir, Role::Owner, now_ms()).await?;
                let event = GroupEvent::RoleChanged {
                    user: heir,
                    role: Role::Owner,
                };
                self.record(group, former, event, rev).await;
                Ok(rev)
            }
            None => self.delete_group(group).await,
        }
    }

    pub(super) async fn set_role(
        &self,
        actor: UserId,
        qid: ClientMsgId,
        group: GroupId,
        target: UserId,
        role: Role,
    ) -> Answer {
        let current = self.role_settable(&group, &actor, &target).await?;
        let mut rev = self
            .put_member_since(&group, &target, role, current.since)
            .await?;
        if role == Role::Owner {
            // Handing over: the former owner stays on as an admin.
            rev = self
                .put_member(&group, &actor, Role::Admin, now_ms())
                .await?;
        }
        let event = GroupEvent::RoleChanged { user: target, role };
        self.record(&group, &actor, event, rev).await;
        self.answer_info(qid, &group, &actor, rev).await
    }

    /// Those of `users` who are not members of `group`.
    async fn not_members(
        &self,
        group: &GroupId,
        users: Vec<UserId>,
    ) -> Result<Vec<UserId>, GroupError> {
        let checked: Vec<(UserId, anyhow::Result<bool>)> = futures::stream::iter(users)
            .map(|user| async move {
                let member = self.groups.is_member(group, &user).await;
                (user, member)
            })
            .buffered(WRITES_AT_ONCE)
            .collect()
            .await;
        let mut newcomers = Vec::new();
        for (user, member) in checked {
            if !member? {
                newcomers.push(user);
            }
        }
        Ok(newcomers)
    }

    /// Refused if any of `joining` is already in the most groups a user may be in (as their
    /// shards' holders count them now, like the member limit).
    async fn check_groups_of(&self, joining: &[UserId]) -> Result<(), GroupError> {
        let max_groups = self.config.max_groups_per_user;
        let counts = self.groups.group_counts(joining).await?;
        let users: Vec<String> = joining
            .iter()
            .zip(counts)
            .filter(|(_, groups)| *groups >= max_groups)
            .map(|(u, _)| u.to_string())
            .collect();
        if users.is_empty() {
            Ok(())
        } else {
            Err(GroupError::TooManyGroups { users, max_groups })
        }
    }

    /// Refused if a group of `size` members would pass the limit, as this instance's view
    /// counts them (see the module doc for the race).
    fn check_size(&self, size: usize) -> Result<(), GroupError> {
        let max_members = self.config.max_group_members;
        if size > max_members {
            return Err(GroupError::Full { max_members });
        }
        Ok(())
    }
}
