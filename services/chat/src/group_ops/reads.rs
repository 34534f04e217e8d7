//! The read-only operations (info, mine, members) and the group as a user sees it, all
//! answered from this instance's view once the asker's membership is established.

use protocol::frames::ServerFrame;
use protocol::{ClientMsgId, ConversationId, GroupId, GroupInfo, UserId, limits};

use super::validate::user_id;
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

    /// `mine`: the user's groups by name.
    pub(super) fn mine(&self, user: UserId, qid: ClientMsgId) -> ServerFrame {
        let mut groups: Vec<GroupInfo> = self
            .view
            .groups_of(&user)
            .iter()
            .filter_map(|g| self.info(g, &user))
            .collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name).then(a.group.cmp(&b.group)));
        ServerFrame::Groups { qid, groups }
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
        let (members, more) = self.view.members_page(&group, after.as_ref(), limit);
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
