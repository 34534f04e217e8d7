//! History queries on `natter.history.query` (queue group `natter-history`): pages of a
//! conversation, the conversation list, and who of a group received and read a message.
//! Only participants of a 1:1 conversation and current members of a group may ask.

use std::collections::HashSet;
use std::sync::Arc;

use protocol::frames::ServerFrame;
use protocol::limits;
use protocol::payloads::{HistoryQuery, HistoryRequest};
use protocol::{ClientMsgId, ConversationId, ErrorCode, MessageId, UserId, subjects};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::HistoryCache;
use crate::membership::{Membership, can_read};
use crate::store::{Page, Store};

/// What answering a query needs.
pub struct Queries<S> {
    pub cache: Arc<HistoryCache<S>>,
    pub membership: Arc<dyn Membership>,
    /// See [`crate::HistoryConfig::receipt_lists_max`].
    pub receipt_lists_max: usize,
}

fn unavailable(qid: ClientMsgId) -> ServerFrame {
    ServerFrame::query_error(
        ErrorCode::Unavailable,
        "history store unavailable; retry",
        qid,
    )
}

/// Subscribes to queries and receipts; both are live on the server when this returns.
pub async fn subscribe(
    nats: &async_nats::Client,
) -> anyhow::Result<(async_nats::Subscriber, async_nats::Subscriber)> {
    let queries =
        plumbing::bus::serve_queue(nats, subjects::HISTORY_QUERY, subjects::HISTORY_QUEUE).await?;
    let receipts =
        plumbing::bus::serve_queue(nats, subjects::CHAT_RECEIPT, subjects::HISTORY_QUEUE).await?;
    Ok((queries, receipts))
}

/// Answers queries until `stop`.
pub async fn serve<S: Store>(
    queries: Arc<Queries<S>>,
    nats: async_nats::Client,
    mut sub: async_nats::Subscriber,
    max_concurrent: usize,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let tracker = TaskTracker::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(max_concurrent));
    loop {
        let Some(msg) = plumbing::bus::next_or_stop(&mut sub, &stop).await else {
            break;
        };
        let Some(reply) = msg.reply.clone() else {
            continue;
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (queries, nats) = (queries.clone(), nats.clone());
        tracker.spawn(async move {
            let _permit = permit;
            let frame = queries.answer(&msg.payload).await;
            let payload = serde_json::to_vec(&frame).expect("frame to JSON");
            if let Err(e) = nats.publish(reply, payload.into()).await {
                tracing::warn!(error = %e, "could not answer a history query");
            }
        });
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

impl<S: Store> Queries<S> {
    async fn answer(&self, payload: &[u8]) -> ServerFrame {
        let Ok(request) = serde_json::from_slice::<HistoryRequest>(payload) else {
            return ServerFrame::error(ErrorCode::MalformedFrame, "not a history request", None);
        };
        let (user, qid) = (request.user, request.qid);
        match request.query {
            HistoryQuery::Conversations { limit } => self.conversations(&user, qid, limit).await,
            HistoryQuery::Messages {
                conversation,
                before,
                after,
                limit,
            } => {
                if !can_read(&*self.membership, &user, &conversation) {
                    return ServerFrame::query_error(
                        ErrorCode::Forbidden,
                        "not a participant of that conversation",
                        qid,
                    );
                }
                let page = match (before, after) {
                    (Some(id), None) => Page::Before(id),
                    (None, Some(id)) => Page::After(id),
                    (None, None) => Page::Latest,
                    (Some(_), Some(_)) => {
                        return ServerFrame::query_error(
                            ErrorCode::MalformedFrame,
                            "give before or after, not both",
                            qid,
                        );
                    }
                };
                self.messages(qid, conversation, page, limit).await
            }
            HistoryQuery::Receipts { conversation, id } => {
                self.receipts(&user, qid, conversation, id).await
            }
        }
    }

    async fn conversations(&self, user: &UserId, qid: ClientMsgId, limit: u32) -> ServerFrame {
        let limit = limit.clamp(1, limits::HISTORY_PAGE_MAX) as usize;
        let groups = self.membership.groups_of(user);
        match self.cache.store().conversations(user, &groups, limit).await {
            Ok(conversations) => ServerFrame::Conversations { qid, conversations },
            Err(e) => {
                tracing::warn!(error = %e, "conversation list failed");
                unavailable(qid)
            }
        }
    }

    async fn messages(
        &self,
        qid: ClientMsgId,
        conversation: ConversationId,
        page: Page,
        limit: u32,
    ) -> ServerFrame {
        let limit = limit.clamp(1, limits::HISTORY_PAGE_MAX) as usize;
        // One more than asked tells whether there is more beyond the page.
        match self.cache.page(&conversation, page, limit + 1).await {
            Ok(mut messages) => {
                let more = messages.len() > limit;
                messages.truncate(limit);
                if !matches!(page, Page::After(_)) {
                    messages.reverse(); // answers are always oldest first
                }
                ServerFrame::History {
                    qid,
                    conversation,
                    messages,
                    more,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "history read failed");
                unavailable(qid)
            }
        }
    }

    /// Who of the group's current members, other than the sender, received and read `id`.
    async fn receipts(
        &self,
        user: &UserId,
        qid: ClientMsgId,
        conversation: ConversationId,
        id: MessageId,
    ) -> ServerFrame {
        let Some(group) = conversation.group_id() else {
            return ServerFrame::query_error(
                ErrorCode::NotFound,
                "receipts are kept for group conversations only",
                qid,
            );
        };
        if !self.membership.is_member(&group, user) {
            return ServerFrame::query_error(
                ErrorCode::Forbidden,
                "not a member of that group",
                qid,
            );
        }
        let sender = match self.cache.message(&conversation, id).await {
            Ok(Some(m)) => m.from,
            Ok(None) => {
                return ServerFrame::query_error(ErrorCode::NotFound, "no such message", qid);
            }
            Err(e) => {
                tracing::warn!(error = %e, "message read failed");
                return unavailable(qid);
            }
        };
        let markers = match self.cache.store().group_markers(&group).await {
            Ok(markers) => markers,
            Err(e) => {
                tracing::warn!(error = %e, "group markers read failed");
                return unavailable(qid);
            }
        };
        let listed = self
            .membership
            .members_if_at_most(&group, self.receipt_lists_max)
            .map(|members| members.into_iter().collect::<HashSet<_>>());
        let is_member = |u: &UserId| match &listed {
            Some(members) => members.contains(u),
            None => self.membership.is_member(&group, u),
        };
        let recipients = self
            .membership
            .member_count(&group)
            .saturating_sub(usize::from(is_member(&sender)));
        let mut delivered_by = Vec::new();
        let mut seen_by = Vec::new();
        for m in markers {
            if m.user == sender || !is_member(&m.user) {
                continue; // former members' markers stay behind; they are nobody's business
            }
            if m.seen >= Some(id) {
                seen_by.push(m.user.clone());
            }
            if m.delivered >= Some(id) {
                delivered_by.push(m.user);
            }
        }
        let with_names = listed.is_some();
        ServerFrame::Receipts {
            qid,
            conversation,
            id,
            recipients: recipients as u32,
            delivered: delivered_by.len() as u32,
            seen: seen_by.len() as u32,
            delivered_by: with_names.then_some(delivered_by),
            seen_by: with_names.then_some(seen_by),
        }
    }
}
