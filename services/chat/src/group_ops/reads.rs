//! The read-only operations (info, mine, members) and the group as a user sees it, all
//! answered from this instance's view once the asker's membership is established.

use protocol::frames::ServerFrame;
use protocol::{ClientMsgId, ConversationId, GroupId, GroupInfo, UserId, limits};

use super::validate::{group_id, user_id};
use super::{Answer, GroupOps};

impl GroupOps {
    /// `info`: members only.
    pub(super) async fn group_info(
        &self,
        user: UserId,
        qid: ClientMsgId,
        group: GroupId,
    ) -> Answer {
        self.role_of(&group, &user).await?;
        Ok(self.answer_info(qid, &group, &user))
    }

    /// `mine`: one page of the user's groups by group id, after `after`, ending at `limit`
    /// groups or [`limits::LIST_PAGE_MAX_BYTES`], so no answer outgrows one NATS message
    /// however many groups a user is in.
    pub(super) fn mine(
        &self,
        user: UserId,
        qid: ClientMsgId,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Answer {
        let after = after.map(group_id).transpose()?;
        let limit = limits::page(limit, limits::GROUPS_PAGE_DEFAULT, limits::GROUPS_PAGE_MAX);
        let mut ids = self.view.groups_of(&user);
        ids.retain(|g| after.as_ref().is_none_or(|a| g > a));
        ids.sort();
        let mut groups: Vec<GroupInfo> = Vec::new();
        for g in &ids {
            if groups.len() > limit as usize {
                break;
            }
            groups.extend(self.info(g, &user));
        }
        let more = bounded(&mut groups, limit as usize);
        Ok(ServerFrame::Groups { qid, groups, more })
    }

    /// `members`: one page by user id, after `after`. Members only; the view answers for
    /// most, the bucket for one the view has not seen yet.
    pub(super) async fn members(
        &self,
        user: UserId,
        qid: ClientMsgId,
        group: GroupId,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Answer {
        if !self.view.is_member(&group, &user) {
            self.role_of(&group, &user).await?;
        }
        let after = after.map(user_id).transpose()?;
        let limit = limits::page(
            limit,
            limits::MEMBERS_PAGE_DEFAULT,
            limits::MEMBERS_PAGE_MAX,
        ) as usize;
        let (mut members, mut more) = self.view.members_page(&group, after.as_ref(), limit);
        more |= bounded(&mut members, limit);
        Ok(ServerFrame::GroupMembers {
            qid,
            group,
            members,
            more,
        })
    }

    /// The answer to a change: the group as `user` sees it now, or an empty one if it is gone.
    pub(super) fn answer_info(
        &self,
        qid: ClientMsgId,
        group: &GroupId,
        user: &UserId,
    ) -> ServerFrame {
        let group = self.info(group, user).unwrap_or_else(|| GroupInfo {
            group: group.clone(),
            conversation: ConversationId::group(group),
            name: String::new(),
            members: 0,
            role: None,
            large: false,
            created_by: user.clone(),
            created_ts: 0,
        });
        ServerFrame::Group { qid, group }
    }

    /// The group as `user` sees it, from the view.
    fn info(&self, group: &GroupId, user: &UserId) -> Option<GroupInfo> {
        let record = self.view.record(group)?;
        let members = self.view.member_count(group);
        Some(GroupInfo {
            group: group.clone(),
            conversation: ConversationId::group(group),
            name: record.name,
            members: members as u32,
            role: self.view.role(group, user),
            large: members > self.config.large_group_members,
            created_by: record.created_by,
            created_ts: record.created_ts,
        })
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
