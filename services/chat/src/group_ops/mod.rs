//! Group operations on `natter.chat.group`: create, rename, add, remove, leave, set a role,
//! and the read-only info, mine and members. This module serves the subject and dispatches
//! each operation; its children check the request (`validate`), decide who may do what
//! (`authorise`) and who may be added by whom (`consent`), make the changes (`changes`)
//! through the bucket writes (`writes`), record them in the conversation (`system_message`),
//! and answer the reads (`reads`).
//!
//! A change is two writes: the membership keys in the `natter_groups` bucket (the truth), then
//! a system message in the group's conversation recording it. The message carries the bucket
//! revision of the change, and the router applies that revision before routing anything
//! written after the message (see `router`), which is what makes a removal take effect at
//! once. Authorisation reads the bucket, not a view, so it always sees the latest write.
//!
//! Any chat instance serves any operation: what the group's shard knows (its member count,
//! its members, the users' lists of groups) is asked of the shard's holder
//! (`groups::Groups`), naming the revision of the change just made so the answer includes
//! it. The member limit is checked against that count: two additions racing on
//! different instances can overshoot it by the size of the second one. Operations on one
//! group are rare enough that this is preferred over serialising them.

mod authorise;
mod changes;
mod consent;
mod reads;
mod system_message;
mod validate;
mod writes;

use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use groups::Groups;
use protocol::frames::ServerFrame;
use protocol::payloads::GroupRequest;
use protocol::{GroupOp, subjects};
use tokio_util::sync::CancellationToken;

use crate::config::ChatConfig;
use crate::ids::MessageIds;
use crate::metrics::ChatMetrics;
use crate::refusal::GroupError;
use validate::{group_id, user_id};

/// Operations one instance works on at once.
const OPERATIONS_AT_ONCE: usize = 256;

pub struct GroupOps {
    pub config: ChatConfig,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub bucket: kv::Store,
    /// The deployment's partition count, which names a system message's subject.
    pub partitions: u32,
    pub groups: Groups,
    pub ids: Arc<MessageIds>,
    pub metrics: ChatMetrics,
    /// How far history has stored the messages streams (for contact checks, see `consent`).
    pub history_floor: Arc<plumbing::bus::HistoryFloor>,
}

/// An operation's answer, or why it was refused.
type Answer = Result<ServerFrame, GroupError>;

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
    plumbing::bus::answer_requests(nats, sub, OPERATIONS_AT_ONCE, stop, |subject, payload| {
        let ops = ops.clone();
        async move { ops.answer(&subject, &payload).await }
    })
    .await
}

impl GroupOps {
    async fn answer(&self, subject: &str, payload: &[u8]) -> ServerFrame {
        let Ok(request) = serde_json::from_slice::<GroupRequest>(payload) else {
            return GroupError::NotARequest.frame(None);
        };
        let qid = request.qid.clone();
        // Only the subject is guarded by NATS permissions.
        if subjects::requesting_user(subject).as_ref() != Some(&request.user) {
            return GroupError::NotTheSubjectsUser.frame(Some(qid));
        }
        self.handle(request)
            .await
            .unwrap_or_else(|refused| refused.frame(Some(qid)))
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
                let target = user_id(&target)?;
                self.set_role(user, qid, group_id(&group)?, target, role)
                    .await
            }
            GroupOp::Info { group } => self.group_info(user, qid, group_id(&group)?).await,
            GroupOp::Mine { after, limit } => self.mine(user, qid, after.as_deref(), limit).await,
            GroupOp::Members {
                group,
                after,
                limit,
            } => {
                let group = group_id(&group)?;
                self.members(user, qid, group, after.as_deref(), limit)
                    .await
            }
        }
    }
}
