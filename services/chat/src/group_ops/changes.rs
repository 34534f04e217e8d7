//! The operations that change a group (create, rename, add, remove, leave, set a role), each
//! in the same order: check the request, authorise against the bucket, write the bucket,
//! record the system message with the revision, answer with the group as the actor sees it.

use groups::{GroupRecord, group_record};
use protocol::{ClientMsgId, GroupEvent, GroupId, Role, UserId};

use super::authorise::{may_add, may_remove_users};
use super::validate::{group_name, user_ids};
use super::writes::now_ms;
use super::{Answer, GroupOps, VIEW_PATIENCE};
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
        self.check_groups_of(&joining)?;
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
        Ok(self.answer_info(qid, &group, &owner))
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
        let Some((mut record, revision)) = group_record(&self.bucket, &group).await? else {
            return Err(GroupError::NoSuchGroup);
        };
        record.name = name.clone();
        let rev = self.update_group(&group, &record, revision).await?;
        self.record(&group, &actor, GroupEvent::Renamed { name }, rev)
            .await;
        Ok(self.answer_info(qid, &group, &actor))
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
        let newcomers: Vec<UserId> = users
            .into_iter()
            .filter(|u| !self.view.is_member(&group, u))
            .collect();
        self.check_size(self.view.member_count(&group) + newcomers.len())?;
        self.check_groups_of(&newcomers)?;
        self.check_consent(&actor, &newcomers).await?;
        let (added, rev) = self
            .create_members(&group, newcomers, role, now_ms())
            .await?;
        if !added.is_empty() {
            let event = GroupEvent::Added { users: added, role };
            self.record(&group, &actor, event, rev).await;
        }
        Ok(self.answer_info(qid, &group, &actor))
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
        if !targets.is_empty() {
            let rev = self.delete_members(&group, &targets).await?;
            let event = GroupEvent::Removed { users: targets };
            self.record(&group, &actor, event, rev).await;
        }
        Ok(self.answer_info(qid, &group, &actor))
    }

    pub(super) async fn leave(&self, user: UserId, qid: ClientMsgId, group: GroupId) -> Answer {
        let role = self.role_of(&group, &user).await?;
        let rev = self
            .delete_members(&group, std::slice::from_ref(&user))
            .await?;
        self.record(&group, &user, GroupEvent::Left, rev).await;
        if role == Role::Owner {
            self.hand_over(&group, &user).await?;
        }
        Ok(self.answer_info(qid, &group, &user))
    }

    /// After the owner left: the first admin by user id becomes owner, else the first member;
    /// with nobody left, the group is deleted.
    async fn hand_over(&self, group: &GroupId, former: &UserId) -> Result<(), GroupError> {
        self.view
            .reach(self.revision_after_write().await?, VIEW_PATIENCE)
            .await;
        let (members, _) = self.view.members_page(group, None, usize::MAX);
        let heir = members
            .iter()
            .find(|m| m.role == Role::Admin)
            .or(members.first());
        match heir {
            Some(heir) => {
                let rev = self
                    .put_member(group, &heir.user, Role::Owner, now_ms())
                    .await?;
                let event = GroupEvent::RoleChanged {
                    user: heir.user.clone(),
                    role: Role::Owner,
                };
                self.record(group, former, event, rev).await;
            }
            None => self.delete_group(group).await?,
        }
        Ok(())
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
        Ok(self.answer_info(qid, &group, &actor))
    }

    /// Refused if any of `joining` is already in the most groups a user may be in (as this
    /// instance's view counts them, like the member limit).
    fn check_groups_of(&self, joining: &[UserId]) -> Result<(), GroupError> {
        let max_groups = self.config.max_groups_per_user;
        let users: Vec<String> = joining
            .iter()
            .filter(|u| self.view.group_count(u) >= max_groups)
            .map(|u| u.to_string())
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
