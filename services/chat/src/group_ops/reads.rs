//! The read-only operations (info, mine, members) and the group as a user sees it, all
//! answered by the shards' holders once the asker's membership is established.

use protocol::frames::ServerFrame;
use protocol::payloads::GroupFacts;
use protocol::{ClientMsgId, ConversationId, GroupId, GroupInfo, UserId, limits};

use super::validate::{group_id, user_id};
use super::{Answer, GroupOps};
use crate::refusal::GroupError;

impl GroupOps {
    /// `info`: members only.
    pub(super) async fn group_info(
        &self,
        user: UserId,
        qid: ClientMsgId,
        group: GroupId,
    ) -> Answer {
        self.role_of(&group, &user).await?;
        self.answer_info(qid, &group, &user, 0).await
    }

    /// `mine`: one page of the user's groups by group id, after `after`, ending at `limit`
    /// groups or [`limits::LIST_PAGE_MAX_BYTES`], so no answer outgrows one NATS message
    /// however many groups a user is in. The user's list of groups comes from their shard,
    /// each group's facts from the group's.
    pub(super) async fn mine(
        &self,
        user: UserId,
        qid: ClientMsgId,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Answer {
        let after = after.map(group_id).transpose()?;
        let limit = limits::page(limit, limits::GROUPS_PAGE_DEFAULT, limits::GROUPS_PAGE_MAX);
        let mut ids = self
            .groups
            .groups_of(std::slice::from_ref(&user))
            .await?
            .pop()
            .unwrap_or_default();
        ids.retain(|g| after.as_ref().is_none_or(|a| g > a));
        ids.sort();
        let mut groups: Vec<GroupInfo> = Vec::new();
        // One more than the page, to know whether more follow; in chunks, since a list may
        // name a group the user has just left.
        for chunk in ids.chunks(limit as usize + 1) {
            let facts = self.groups.infos(chunk, &user).await?;
            for (group, facts) in chunk.iter().zip(facts) {
                let info = facts.map(|f| self.group_info_of(group, f));
                groups.extend(info.filter(|i| i.role.is_some()));
            }
            if groups.len() > limit as usize {
                break;
            }
        }
        let more = bounded(&mut groups, limit as usize);
        Ok(ServerFrame::Groups { qid, groups, more })
    }

    /// `members`: one page by user id, after `after`. Members only.
    pub(super) async fn members(
        &self,
        user: UserId,
        qid: ClientMsgId,
        group: GroupId,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Answer {
        if !self.groups.is_member(&group, &user).await? {
            self.role_of(&group, &user).await?;
        }
        let after = after.map(user_id).transpose()?;
        let limit = limits::page(
            limit,
            limits::MEMBERS_PAGE_DEFAULT,
            limits::MEMBERS_PAGE_MAX,
        ) as usize;
        let (mut members, mut more, _) = self
            .groups
            .members_page(&group, after.as_ref(), limit, 0)
            .await?;
        more |= bounded(&mut members, limit);
        Ok(ServerFrame::GroupMembers {
            qid,
            group,
            members,
            more,
        })
    }

    /// The answer to a change: the group as `user` sees it once its shard has applied `rev`
    /// (the change), or an empty one if it is gone.
    pub(super) async fn answer_info(
        &self,
        qid: ClientMsgId,
        group: &GroupId,
        user: &UserId,
        rev: u64,
    ) -> Answer {
        let group = self
            .info(group, user, rev)
            .await?
            .unwrap_or_else(|| GroupInfo {
                group: group.clone(),
                conversation: ConversationId::group(group),
                name: String::new(),
                members: 0,
                role: None,
                large: false,
                created_by: user.clone(),
                created_ts: 0,
            });
        Ok(ServerFrame::Group { qid, group })
    }

    /// The group as `user` sees it, from its shard's holder.
    async fn info(
        &self,
        group: &GroupId,
        user: &UserId,
        rev: u64,
    ) -> Result<Option<GroupInfo>, GroupError> {
        let facts = self.groups.info(group, user, rev).await?;
        Ok(facts.map(|f| self.group_info_of(group, f)))
    }

    fn group_info_of(&self, group: &GroupId, facts: GroupFacts) -> GroupInfo {
        GroupInfo {
            group: group.clone(),
            conversation: ConversationId::group(group),
            name: facts.name,
            members: facts.members,
            role: facts.role,
            large: facts.members as usize > self.config.large_group_members,
            created_by: facts.created_by,
            created_ts: facts.created_ts,
        }
    }
}

/// Cuts `entries` to at most `limit` and to [`limits::LIST_PAGE_MAX_BYTES`] of JSON; whether
/// any were cut.
fn bounded<T: serde::Serialize>(entries: &mut Vec<T>, limit: usize) -> bool {
    let sizes = entries
        .iter()
        .take(limit)
        .map(|e| serde_json::to_vec(e).map_or(0, |v| v.len()));
    let keep = limits::fitting(sizes, limits::LIST_PAGE_MAX_BYTES);
    let cut = entries.len() > keep;
    entries.truncate(keep);
    cut
}
