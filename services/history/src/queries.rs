//! History queries on `natter.history.query` (queue group `natter-history`): pages of a
//! conversation, the conversation list, and who of a group received and read a message.
//! Only participants of a 1:1 conversation and current members of a group may ask.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use protocol::frames::{Message, ServerFrame};
use protocol::limits;
use protocol::payloads::{HistoryQuery, HistoryRequest};
use protocol::{ClientMsgId, ConversationId, MessageId, UserId, subjects};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::HistoryCache;
use crate::membership::{Membership, can_read};
use crate::refusal::QueryError;
use crate::store::{Page, Store};

/// A query's answer, or why it was refused.
type Answer = Result<ServerFrame, QueryError>;

/// What answering a query needs.
pub struct Queries<S> {
    pub cache: Arc<HistoryCache<S>>,
    pub membership: Arc<dyn Membership>,
    /// See [`crate::HistoryConfig::receipt_lists_max`].
    pub receipt_lists_max: usize,
    /// See [`crate::HistoryConfig::page_max_bytes`].
    pub page_max_bytes: usize,
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
            let frame = queries.answer(&msg.subject, &msg.payload).await;
            plumbing::bus::reply(&nats, reply, &frame).await;
        });
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

impl<S: Store> Queries<S> {
    async fn answer(&self, subject: &str, payload: &[u8]) -> ServerFrame {
        let Ok(request) = serde_json::from_slice::<HistoryRequest>(payload) else {
            return QueryError::NotARequest.frame(None);
        };
        let (user, qid) = (request.user, request.qid);
        // Only the subject is guarded by NATS permissions.
        if subjects::requesting_user(subject).as_ref() != Some(&user) {
            return QueryError::NotTheSubjectsUser.frame(Some(qid));
        }
        let answer = match request.query {
            HistoryQuery::Conversations { limit } => {
                self.conversations(&user, qid.clone(), limit).await
            }
            HistoryQuery::Changed { since, limit } => {
                self.changed(&user, qid.clone(), since, limit).await
            }
            HistoryQuery::Messages {
                conversation,
                before,
                after,
                limit,
            } => {
                self.messages(&user, qid.clone(), conversation, before, after, limit)
                    .await
            }
            HistoryQuery::Receipts { conversation, id } => {
                self.receipts(&user, qid.clone(), conversation, id).await
            }
        };
        answer.unwrap_or_else(|refused| refused.frame(Some(qid)))
    }

    async fn conversations(&self, user: &UserId, qid: ClientMsgId, limit: u32) -> Answer {
        let limit = limit.clamp(1, limits::HISTORY_PAGE_MAX) as usize;
        let groups = self
            .membership
            .groups_of(user)
            .await
            .map_err(QueryError::membership)?;
        let conversations = self
            .cache
            .store()
            .conversations(user, &groups, limit)
            .await
            .map_err(QueryError::unavailable("conversation list"))?;
        Ok(ServerFrame::Conversations { qid, conversations })
    }

    /// The user's 1:1 conversations active from `since` (ms) on, newest first, without
    /// previews or unread counts: what a replay reads.
    async fn changed(&self, user: &UserId, qid: ClientMsgId, since: u64, limit: u32) -> Answer {
        let limit = limit.clamp(1, limits::CHANGED_CONVERSATIONS_MAX) as usize;
        let mut conversations = self
            .cache
            .store()
            .direct_conversations(user)
            .await
            .map_err(QueryError::unavailable("conversation list"))?;
        conversations.retain(|c| c.last_ts >= since);
        crate::store::newest_first(&mut conversations, limit);
        for c in &mut conversations {
            c.preview.clear();
        }
        Ok(ServerFrame::Conversations { qid, conversations })
    }

    /// Empties the quotes of messages deleted since they were quoted: a delete is for
    /// everyone, also where a reply quoted it. Quoted messages outside the page are read from
    /// the cache (or the store): one read per such reply.
    async fn blank_deleted_quotes(
        &self,
        conversation: &ConversationId,
        messages: &mut [Message],
    ) -> Result<(), QueryError> {
        let mut deleted = HashMap::new();
        for m in messages.iter() {
            deleted.insert(m.id, m.deleted);
        }
        for m in messages.iter_mut() {
            let Some(quote) = m.reply.as_mut() else {
                continue;
            };
            let gone = match deleted.get(&quote.id) {
                Some(gone) => *gone,
                None => {
                    let quoted = self
                        .cache
                        .message(conversation, quote.id)
                        .await
                        .map_err(QueryError::unavailable("quoted message"))?;
                    let gone = quoted.is_some_and(|q| q.deleted);
                    deleted.insert(quote.id, gone);
                    gone
                }
            };
            if gone {
                quote.preview.clear();
                quote.deleted = true;
            }
        }
        Ok(())
    }

    /// A page of a participant's conversation: the newest, or before or after an id.
    async fn messages(
        &self,
        user: &UserId,
        qid: ClientMsgId,
        conversation: ConversationId,
        before: Option<MessageId>,
        after: Option<MessageId>,
        limit: u32,
    ) -> Answer {
        if !can_read(&*self.membership, user, &conversation)
            .await
            .map_err(QueryError::membership)?
        {
            return Err(QueryError::NotAParticipant);
        }
        let page = match (before, after) {
            (Some(id), None) => Page::Before(id),
            (None, Some(id)) => Page::After(id),
            (None, None) => Page::Latest,
            (Some(_), Some(_)) => return Err(QueryError::BeforeAndAfter),
        };
        let limit = limit.clamp(1, limits::HISTORY_PAGE_MAX) as usize;
        // One more than asked tells whether there is more beyond the page.
        let mut messages = self
            .cache
            .page(&conversation, page, limit + 1)
            .await
            .map_err(QueryError::unavailable("messages"))?;
        let mut more = messages.len() > limit;
        messages.truncate(limit);
        // Who reacted with what stays here: the page says how many, and which is the asker's.
        for m in &mut messages {
            m.count_reactions(user);
        }
        self.blank_deleted_quotes(&conversation, &mut messages)
            .await?;
        // Nearest the anchor first (newest for a latest or `before` page, oldest for
        // `after`), so the next page continues where this one stopped.
        let fits = fitting(&messages, self.page_max_bytes);
        if fits < messages.len() {
            messages.truncate(fits);
            more = true;
        }
        if !matches!(page, Page::After(_)) {
            messages.reverse(); // answers are always oldest first
        }
        crate::states::mark_own(
            self.cache.store(),
            &*self.membership,
            self.receipt_lists_max,
            user,
            &conversation,
            &mut messages,
        )
        .await;
        Ok(ServerFrame::History {
            qid,
            conversation,
            messages,
            more,
        })
    }

    /// Who of the group's current members, other than the sender, received and read `id`.
    async fn receipts(
        &self,
        user: &UserId,
        qid: ClientMsgId,
        conversation: ConversationId,
        id: MessageId,
    ) -> Answer {
        let Some(group) = conversation.group_id() else {
            return Err(QueryError::NotAGroup);
        };
        if !self
            .membership
            .is_member(&group, user)
            .await
            .map_err(QueryError::membership)?
        {
            return Err(QueryError::NotAMember);
        }
        let sender = self
            .cache
            .message(&conversation, id)
            .await
            .map_err(QueryError::unavailable("message"))?
            .ok_or(QueryError::NoSuchMessage)?
            .from;
        let markers = self
            .cache
            .store()
            .group_markers(&group)
            .await
            .map_err(QueryError::unavailable("group markers"))?;
        let (listed, count) = self
            .membership
            .members_if_at_most(&group, self.receipt_lists_max)
            .await
            .map_err(QueryError::membership)?;
        let listed = listed.map(|members| members.into_iter().collect::<HashSet<_>>());
        let is_member = async |u: &UserId| match &listed {
            Some(members) => Ok(members.contains(u)),
            None => self
                .membership
                .is_member(&group, u)
                .await
                .map_err(QueryError::membership),
        };
        let recipients = count.saturating_sub(usize::from(is_member(&sender).await?));
        let mut delivered_by = Vec::new();
        let mut seen_by = Vec::new();
        for m in markers {
            if m.user == sender || !is_member(&m.user).await? {
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
        Ok(ServerFrame::Receipts {
            qid,
            conversation,
            id,
            recipients: recipients as u32,
            delivered: delivered_by.len() as u32,
            seen: seen_by.len() as u32,
            delivered_by: with_names.then_some(delivered_by),
            seen_by: with_names.then_some(seen_by),
        })
    }
}
/// How many of `messages`, from the first, fit in `max_bytes` of JSON; at least one.
fn fitting(messages: &[protocol::frames::Message], max_bytes: usize) -> usize {
    // Usual pages are far below the limit: bound them without encoding anything. A message
    // without a group event is at most its body escaped (six bytes a character) plus its
    // ids and field names, well under 1 KiB; one with an event can name many users.
    let bound: Option<usize> = messages
        .iter()
        .map(|m| m.event.is_none().then(|| m.body.len() * 6 + 1024))
        .sum();
    if bound.is_some_and(|b| b <= max_bytes) {
        return messages.len();
    }
    let mut total = 0;
    for (i, message) in messages.iter().enumerate() {
        total += serde_json::to_vec(message).map_or(usize::MAX, |json| json.len() + 1);
        if total > max_bytes {
            return i.max(1);
        }
    }
    messages.len()
}
