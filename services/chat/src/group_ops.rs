//! Group operations on `natter.chat.group`: create, rename, add, remove, leave, set a role,
//! and the read-only info, mine and members.
//!
//! A change is two writes: the membership keys in the `natter_groups` bucket (the truth), then
//! a system message in the group's conversation recording it. The message carries the bucket
//! revision of the change, and the router applies that revision before routing anything
//! written after the message (see `router`), which is what makes a removal take effect at
//! once. Authorisation reads the bucket, not the view, so it always sees the latest write.
//!
//! The member limit is checked against this instance's view: two additions racing on
//! different instances can overshoot it by the size of the second one. Operations on one
//! group are rare enough that this is preferred over serialising them.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use groups::{GroupRecord, GroupView, MemberRecord, group_record, membership};
use protocol::frames::{Message, ServerFrame};
use protocol::groups::MAX_GROUP_NAME_CHARS;
use protocol::limits;
use protocol::payloads::{GroupRequest, StoredMessage};
use protocol::{
    ClientMsgId, ConversationId, ErrorCode, GroupEvent, GroupId, GroupInfo, GroupOp, Role, UserId,
    subjects,
};
use tokio_util::sync::CancellationToken;

use crate::config::ChatConfig;
use crate::ids::MessageIds;
use crate::metrics::ChatMetrics;

/// How long an answer waits for this instance's view to show the change it made.
const VIEW_PATIENCE: Duration = Duration::from_secs(2);
/// Operations one instance works on at once.
const OPERATIONS_AT_ONCE: usize = 256;
/// Bucket writes one operation keeps in flight.
const WRITES_AT_ONCE: usize = 64;
/// Names listed in a system message's text before "and N others".
const NAMES_IN_TEXT: usize = 10;

pub struct GroupOps {
    pub config: ChatConfig,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub bucket: kv::Store,
    pub view: GroupView,
    pub ids: Arc<MessageIds>,
    pub metrics: ChatMetrics,
}

/// Why an operation was refused.
struct Refused(ErrorCode, String);

type Answer = Result<ServerFrame, Refused>;

fn refuse<T>(code: ErrorCode, reason: impl Into<String>) -> Result<T, Refused> {
    Err(Refused(code, reason.into()))
}

impl From<anyhow::Error> for Refused {
    fn from(e: anyhow::Error) -> Self {
        tracing::warn!(error = %e, "group directory unavailable");
        Refused(
            ErrorCode::Unavailable,
            "group directory unavailable; retry".into(),
        )
    }
}

fn unavailable(e: impl std::fmt::Display) -> Refused {
    Refused::from(anyhow::anyhow!("{e}"))
}

/// Joins the chat queue group on group operations.
pub async fn subscribe(nats: &async_nats::Client) -> anyhow::Result<async_nats::Subscriber> {
    plumbing::bus::serve_queue(nats, subjects::CHAT_GROUP, subjects::CHAT_QUEUE).await
}

/// Answers group operations until `stop`; operations in progress are finished.
pub async fn serve(
    ops: Arc<GroupOps>,
    sub: async_nats::Subscriber,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let nats = ops.nats.clone();
    plumbing::bus::answer_requests(nats, sub, OPERATIONS_AT_ONCE, stop, |payload| {
        let ops = ops.clone();
        async move { ops.answer(&payload).await }
    })
    .await
}

fn group_id(s: &str) -> Result<GroupId, Refused> {
    GroupId::new(s).or_else(|_| refuse(ErrorCode::InvalidId, "not a valid group id"))
}

/// Valid, distinct user ids, at most [`limits::USERS_PER_GROUP_OPERATION`], without `except`.
fn user_ids(users: &[String], except: &UserId) -> Result<Vec<UserId>, Refused> {
    if users.len() > limits::USERS_PER_GROUP_OPERATION {
        return refuse(
            ErrorCode::MalformedFrame,
            format!(
                "at most {} users per operation",
                limits::USERS_PER_GROUP_OPERATION
            ),
        );
    }
    let mut out = Vec::with_capacity(users.len());
    for u in users {
        let Ok(user) = UserId::new(u) else {
            return refuse(
                ErrorCode::InvalidId,
                format!("{u:?} is not a valid user id"),
            );
        };
        if &user != except && !out.contains(&user) {
            out.push(user);
        }
    }
    Ok(out)
}

fn group_name(name: &str) -> Result<String, Refused> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_GROUP_NAME_CHARS {
        return refuse(
            ErrorCode::MalformedFrame,
            format!("a group name has 1 to {MAX_GROUP_NAME_CHARS} characters"),
        );
    }
    if name.chars().any(char::is_control) {
        return refuse(
            ErrorCode::MalformedFrame,
            "a group name has no control characters",
        );
    }
    Ok(name.to_string())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl GroupOps {
    async fn answer(&self, payload: &[u8]) -> ServerFrame {
        let Ok(request) = serde_json::from_slice::<GroupRequest>(payload) else {
            return ServerFrame::error(ErrorCode::MalformedFrame, "not a group request", None);
        };
        let qid = request.qid.clone();
        match self.handle(request).await {
            Ok(frame) => frame,
            Err(Refused(code, reason)) => ServerFrame::query_error(code, reason, qid),
        }
    }

    async fn handle(&self, request: GroupRequest) -> Answer {
        let GroupRequest { user, qid, op } = request;
        match op {
            GroupOp::Create { name, members } => self.create(user, qid, &name, &members).await,
            GroupOp::Rename { group, name } => {
                self.rename(user, qid, group_id(&group)?, &name).await
            }
            GroupOp::Add { group, users, role } => {
                self.add(user, qid, group_id(&group)?, &users, role).await
            }
            GroupOp::Remove { group, users } => {
                self.remove(user, qid, group_id(&group)?, &users).await
            }
            GroupOp::Leave { group } => self.leave(user, qid, group_id(&group)?).await,
            GroupOp::SetRole {
                group,
                member: target,
                role,
            } => {
                let Ok(target) = UserId::new(&target) else {
                    return refuse(ErrorCode::InvalidId, "not a valid user id");
                };
                self.set_role(user, qid, group_id(&group)?, target, role)
                    .await
            }
            GroupOp::Info { group } => {
                let group = group_id(&group)?;
                self.role_of(&group, &user).await?;
                self.answer_info(qid, &group, &user)
            }
            GroupOp::Mine => {
                let mut groups: Vec<GroupInfo> = self
                    .view
                    .groups_of(&user)
                    .iter()
                    .filter_map(|g| self.info(g, &user))
                    .collect();
                groups.sort_by(|a, b| a.name.cmp(&b.name).then(a.group.cmp(&b.group)));
                Ok(ServerFrame::Groups { qid, groups })
            }
            GroupOp::Members {
                group,
                after,
                limit,
            } => {
                let group = group_id(&group)?;
                if !self.view.is_member(&group, &user) {
                    self.role_of(&group, &user).await?;
                }
                let after = match after {
                    Some(a) => Some(
                        UserId::new(&a)
                            .or_else(|_| refuse(ErrorCode::InvalidId, "after is not a user id"))?,
                    ),
                    None => None,
                };
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
        }
    }

    async fn create(
        &self,
        owner: UserId,
        qid: ClientMsgId,
        name: &str,
        members: &[String],
    ) -> Answer {
        let name = group_name(name)?;
        let members = user_ids(members, &owner)?;
        if members.len() + 1 > self.config.max_group_members {
            return refuse(
                ErrorCode::GroupFull,
                format!(
                    "a group has at most {} members",
                    self.config.max_group_members
                ),
            );
        }
        let group = GroupId::new(ulid::Ulid::new().to_string()).expect("a ULID is a valid id");
        let now = now_ms();
        let record = GroupRecord {
            name: name.clone(),
            created_by: owner.clone(),
            created_ts: now,
        };
        self.bucket
            .create(subjects::group_key(&group), json(&record))
            .await
            .map_err(unavailable)?;
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
        self.answer_info(qid, &group, &owner)
    }

    async fn rename(&self, actor: UserId, qid: ClientMsgId, group: GroupId, name: &str) -> Answer {
        let name = group_name(name)?;
        self.require_manager(&group, &actor).await?;
        let Some((mut record, revision)) = group_record(&self.bucket, &group).await? else {
            return refuse(ErrorCode::NotFound, "no such group");
        };
        record.name = name.clone();
        let rev = self
            .bucket
            .update(subjects::group_key(&group), json(&record), revision)
            .await
            .map_err(|_| Refused(ErrorCode::Unavailable, "the group changed; retry".into()))?;
        self.record(&group, &actor, GroupEvent::Renamed { name }, rev)
            .await;
        self.answer_info(qid, &group, &actor)
    }

    async fn add(
        &self,
        actor: UserId,
        qid: ClientMsgId,
        group: GroupId,
        users: &[String],
        role: Option<Role>,
    ) -> Answer {
        let actor_role = self.require_manager(&group, &actor).await?;
        let role = role.unwrap_or(Role::Member);
        match role {
            Role::Owner => return refuse(ErrorCode::Forbidden, "a group has one owner"),
            Role::Admin if actor_role != Role::Owner => {
                return refuse(ErrorCode::Forbidden, "only the owner adds admins");
            }
            _ => {}
        }
        let users = user_ids(users, &actor)?;
        let newcomers: Vec<UserId> = users
            .into_iter()
            .filter(|u| !self.view.is_member(&group, u))
            .collect();
        let size = self.view.member_count(&group) + newcomers.len();
        if size > self.config.max_group_members {
            return refuse(
                ErrorCode::GroupFull,
                format!(
                    "a group has at most {} members",
                    self.config.max_group_members
                ),
            );
        }
        let (added, rev) = self
            .create_members(&group, newcomers, role, now_ms())
            .await?;
        if !added.is_empty() {
            let event = GroupEvent::Added { users: added, role };
            self.record(&group, &actor, event, rev).await;
        }
        self.answer_info(qid, &group, &actor)
    }

    async fn remove(
        &self,
        actor: UserId,
        qid: ClientMsgId,
        group: GroupId,
        users: &[String],
    ) -> Answer {
        let actor_role = self.require_manager(&group, &actor).await?;
        if users.iter().any(|u| u == actor.as_str()) {
            return refuse(ErrorCode::Forbidden, "to remove yourself, leave the group");
        }
        let users = user_ids(users, &actor)?;
        let found: Vec<(UserId, anyhow::Result<Option<MemberRecord>>)> =
            futures::stream::iter(users)
                .map(|user| {
                    let (bucket, group) = (self.bucket.clone(), group.clone());
                    async move {
                        let m = membership(&bucket, &group, &user).await;
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
                Some(m) if m.role == Role::Owner => {
                    return refuse(ErrorCode::Forbidden, "the owner cannot be removed");
                }
                Some(m) if m.role == Role::Admin && actor_role != Role::Owner => {
                    return refuse(ErrorCode::Forbidden, "only the owner removes admins");
                }
                Some(_) => targets.push(user),
            }
        }
        if !targets.is_empty() {
            let deleted: Vec<_> = futures::stream::iter(targets.clone())
                .map(|user| {
                    let bucket = self.bucket.clone();
                    let key = subjects::member_key(&group, &user);
                    async move { bucket.delete(key).await }
                })
                .buffer_unordered(WRITES_AT_ONCE)
                .collect()
                .await;
            if let Some(Err(e)) = deleted.into_iter().find(Result::is_err) {
                return Err(unavailable(e));
            }
            let rev = self.revision_after_write().await?;
            let event = GroupEvent::Removed { users: targets };
            self.record(&group, &actor, event, rev).await;
        }
        self.answer_info(qid, &group, &actor)
    }

    async fn leave(&self, user: UserId, qid: ClientMsgId, group: GroupId) -> Answer {
        let role = self.role_of(&group, &user).await?;
        self.bucket
            .delete(subjects::member_key(&group, &user))
            .await
            .map_err(unavailable)?;
        let rev = self.revision_after_write().await?;
        self.record(&group, &user, GroupEvent::Left, rev).await;
        if role == Role::Owner {
            self.hand_over(&group, &user).await?;
        }
        self.answer_info(qid, &group, &user)
    }

    /// After the owner left: the first admin by user id becomes owner, else the first member;
    /// with nobody left, the group is deleted.
    async fn hand_over(&self, group: &GroupId, former: &UserId) -> Result<(), Refused> {
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
            None => {
                self.bucket
                    .delete(subjects::group_key(group))
                    .await
                    .map_err(unavailable)?;
            }
        }
        Ok(())
    }

    async fn set_role(
        &self,
        actor: UserId,
        qid: ClientMsgId,
        group: GroupId,
        target: UserId,
        role: Role,
    ) -> Answer {
        if self.role_of(&group, &actor).await? != Role::Owner {
            return refuse(ErrorCode::Forbidden, "only the owner changes roles");
        }
        if target == actor {
            return refuse(ErrorCode::Forbidden, "hand ownership to another member");
        }
        let Some(current) = membership(&self.bucket, &group, &target).await? else {
            return refuse(ErrorCode::NotFound, "not a member of this group");
        };
        let now = now_ms();
        let mut rev = self
            .put_member_since(&group, &target, role, current.since)
            .await?;
        if role == Role::Owner {
            // Handing over: the former owner stays on as an admin.
            rev = self.put_member(&group, &actor, Role::Admin, now).await?;
        }
        let event = GroupEvent::RoleChanged { user: target, role };
        self.record(&group, &actor, event, rev).await;
        self.answer_info(qid, &group, &actor)
    }

    /// The user's role, read from the bucket; refused if they are not a member.
    async fn role_of(&self, group: &GroupId, user: &UserId) -> Result<Role, Refused> {
        match membership(&self.bucket, group, user).await? {
            Some(m) => Ok(m.role),
            None if group_record(&self.bucket, group).await?.is_none() => {
                refuse(ErrorCode::NotFound, "no such group")
            }
            None => refuse(ErrorCode::Forbidden, "not a member of this group"),
        }
    }

    async fn require_manager(&self, group: &GroupId, user: &UserId) -> Result<Role, Refused> {
        let role = self.role_of(group, user).await?;
        if !role.manages() {
            return refuse(
                ErrorCode::Forbidden,
                "only the owner and admins manage the group",
            );
        }
        Ok(role)
    }

    /// Adds new members, many writes at once; a key that exists already (a member the view
    /// had not seen yet) is left as it is. Returns who was added and the last revision.
    async fn create_members(
        &self,
        group: &GroupId,
        users: Vec<UserId>,
        role: Role,
        now: u64,
    ) -> Result<(Vec<UserId>, u64), Refused> {
        let value = json(&MemberRecord { role, since: now });
        let results: Vec<(UserId, Result<u64, kv::CreateError>)> = futures::stream::iter(users)
            .map(|user| {
                let (bucket, value) = (self.bucket.clone(), value.clone());
                let key = subjects::member_key(group, &user);
                async move { (user, bucket.create(key, value).await) }
            })
            .buffered(WRITES_AT_ONCE)
            .collect()
            .await;
        let mut added = Vec::new();
        let mut rev = 0;
        for (user, result) in results {
            match result {
                Ok(r) => {
                    rev = rev.max(r);
                    added.push(user);
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok((added, rev))
    }

    async fn put_member(
        &self,
        group: &GroupId,
        user: &UserId,
        role: Role,
        now: u64,
    ) -> Result<u64, Refused> {
        let since = match membership(&self.bucket, group, user).await? {
            Some(m) => m.since,
            None => now,
        };
        self.put_member_since(group, user, role, since).await
    }

    async fn put_member_since(
        &self,
        group: &GroupId,
        user: &UserId,
        role: Role,
        since: u64,
    ) -> Result<u64, Refused> {
        let record = MemberRecord { role, since };
        self.bucket
            .put(subjects::member_key(group, user), json(&record))
            .await
            .map_err(unavailable)
    }

    /// The bucket's last revision: a delete does not return the revision it wrote.
    async fn revision_after_write(&self) -> Result<u64, Refused> {
        let mut stream = self
            .js
            .get_stream(subjects::GROUPS_STREAM)
            .await
            .map_err(unavailable)?;
        Ok(stream
            .info()
            .await
            .map_err(unavailable)?
            .state
            .last_sequence)
    }

    /// Appends the system message recording `event` to the group's conversation. The change
    /// is already in the bucket; a failure here loses the record, not the change.
    async fn record(&self, group: &GroupId, actor: &UserId, event: GroupEvent, rev: u64) {
        self.metrics.group_operations.inc();
        let id = self.ids.next();
        let stored = StoredMessage {
            message: Message {
                id,
                conversation: ConversationId::group(group),
                from: actor.clone(),
                to: UserId::new(group.as_str()).expect("a group id is a valid user id"),
                cid: ClientMsgId::new(id.to_string()).expect("a ULID is a valid id"),
                body: describe(actor, &event),
                ts: id.timestamp_ms(),
                cursor: None,
                event: Some(event),
            },
            origin: None,
            groups_revision: Some(rev),
        };
        let subject = subjects::message(&stored.message.conversation);
        let published = match self.js.publish(subject, json(&stored)).await {
            Ok(ack) => ack.await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = published {
            tracing::warn!(error = %e, %group, "group event not recorded in the conversation");
        }
        self.view.reach(rev, VIEW_PATIENCE).await;
    }

    fn answer_info(&self, qid: ClientMsgId, group: &GroupId, user: &UserId) -> Answer {
        match self.info(group, user) {
            Some(group) => Ok(ServerFrame::Group { qid, group }),
            None => Ok(ServerFrame::Group {
                qid,
                group: GroupInfo {
                    group: group.clone(),
                    conversation: ConversationId::group(group),
                    name: String::new(),
                    members: 0,
                    role: None,
                    large: false,
                    created_by: user.clone(),
                    created_ts: 0,
                },
            }),
        }
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

fn json(value: &impl serde::Serialize) -> bytes::Bytes {
    serde_json::to_vec(value).expect("value to JSON").into()
}

/// The readable text of a system message.
fn describe(actor: &UserId, event: &GroupEvent) -> String {
    let names = |users: &[UserId]| {
        let mut text = users
            .iter()
            .take(NAMES_IN_TEXT)
            .map(UserId::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        if users.len() > NAMES_IN_TEXT {
            text.push_str(&format!(" and {} others", users.len() - NAMES_IN_TEXT));
        }
        text
    };
    match event {
        GroupEvent::Created { name, .. } => format!("{actor} created the group {name}"),
        GroupEvent::Renamed { name } => format!("{actor} renamed the group to {name}"),
        GroupEvent::Added { users, role } => match role {
            Role::Admin => format!("{actor} added {} as admin", names(users)),
            _ => format!("{actor} added {}", names(users)),
        },
        GroupEvent::Removed { users } => format!("{actor} removed {}", names(users)),
        GroupEvent::Left => format!("{actor} left"),
        GroupEvent::RoleChanged { user, role } => {
            let role = match role {
                Role::Owner => "the owner",
                Role::Admin => "an admin",
                Role::Member => "a member",
            };
            format!("{actor} made {user} {role}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_messages_read_well_and_stay_short() {
        let alice = UserId::new("alice").unwrap();
        let users: Vec<UserId> = (0..12)
            .map(|i| UserId::new(format!("u{i}")).unwrap())
            .collect();
        let event = GroupEvent::Added {
            users,
            role: Role::Member,
        };
        assert_eq!(
            describe(&alice, &event),
            "alice added u0, u1, u2, u3, u4, u5, u6, u7, u8, u9 and 2 others"
        );
        let event = GroupEvent::RoleChanged {
            user: UserId::new("bob").unwrap(),
            role: Role::Admin,
        };
        assert_eq!(describe(&alice, &event), "alice made bob an admin");
    }

    #[test]
    fn names_and_user_lists_are_checked() {
        assert!(group_name("  ").is_err());
        assert!(group_name(&"x".repeat(101)).is_err());
        assert!(group_name("a\nb").is_err());
        assert_eq!(group_name(" Team ").ok().as_deref(), Some("Team"));
        let alice = UserId::new("alice").unwrap();
        let users = user_ids(&["bob".into(), "bob".into(), "alice".into()], &alice)
            .ok()
            .unwrap();
        assert_eq!(users, [UserId::new("bob").unwrap()]);
        assert!(user_ids(&["bob.*".into()], &alice).is_err());
        assert!(user_ids(&vec!["x".to_string(); 1001], &alice).is_err());
    }
}
