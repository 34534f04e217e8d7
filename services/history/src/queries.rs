//! History queries on `natter.history.query` (queue group `natter-history`), and read markers
//! from `natter.chat.receipt`. Only participants of a 1:1 conversation and members of a group
//! may read it.

use std::sync::Arc;

use protocol::frames::ServerFrame;
use protocol::payloads::{HistoryQuery, HistoryRequest, Receipt, ReceiptKind};
use protocol::{ErrorCode, subjects};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::HistoryCache;
use crate::store::{Page, Store};

/// The most messages or conversations one query returns.
pub const MAX_PAGE: u32 = 100;

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
    cache: Arc<HistoryCache<S>>,
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
        let (cache, nats) = (cache.clone(), nats.clone());
        tracker.spawn(async move {
            let _permit = permit;
            let frame = answer(&cache, &msg.payload).await;
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

async fn answer<S: Store>(cache: &HistoryCache<S>, payload: &[u8]) -> ServerFrame {
    let Ok(request) = serde_json::from_slice::<HistoryRequest>(payload) else {
        return ServerFrame::error(ErrorCode::MalformedFrame, "not a history request", None);
    };
    let qid = request.qid.clone();
    let unavailable = |qid| {
        ServerFrame::query_error(
            ErrorCode::Unavailable,
            "history store unavailable; retry",
            qid,
        )
    };
    match request.query {
        HistoryQuery::Receipts { .. } => {
            ServerFrame::query_error(ErrorCode::NotFound, "receipts are not answered yet", qid)
        }
        HistoryQuery::Conversations { limit } => {
            let limit = limit.clamp(1, MAX_PAGE) as usize;
            match cache.store().conversations(&request.user, limit).await {
                Ok(conversations) => ServerFrame::Conversations { qid, conversations },
                Err(e) => {
                    tracing::warn!(error = %e, "conversation list failed");
                    unavailable(qid)
                }
            }
        }
        HistoryQuery::Messages {
            conversation,
            before,
            after,
            limit,
        } => {
            match cache.store().can_read(&request.user, &conversation).await {
                Ok(true) => {}
                Ok(false) => {
                    return ServerFrame::query_error(
                        ErrorCode::Forbidden,
                        "not a participant of that conversation",
                        qid,
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "membership check failed");
                    return unavailable(qid);
                }
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
            let limit = limit.clamp(1, MAX_PAGE) as usize;
            // One more than asked tells whether there is more beyond the page.
            match cache.page(&conversation, page, limit + 1).await {
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
    }
}

/// Stores read markers from `seen` receipts until `stop`.
pub async fn serve_markers<S: Store>(
    cache: Arc<HistoryCache<S>>,
    mut sub: async_nats::Subscriber,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    while let Some(receipt) = plumbing::bus::next_json::<Receipt>(&mut sub, &stop).await {
        if receipt.kind != ReceiptKind::Seen {
            continue;
        }
        match cache
            .store()
            .can_read(&receipt.by, &receipt.conversation)
            .await
        {
            Ok(true) => {}
            _ => continue,
        }
        if let Err(e) = cache
            .store()
            .mark_read(&receipt.by, &receipt.conversation, receipt.id)
            .await
        {
            tracing::warn!(error = %e, "read marker not stored");
        }
    }
    Ok(())
}
