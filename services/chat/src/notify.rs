//! Routing frames other services address to users, on `natter.chat.notify`: the history
//! service tells group senders who received and read their messages this way. At most once,
//! like receipts.

use std::sync::Arc;

use protocol::payloads::Notify;
use protocol::subjects;
use tokio_util::sync::CancellationToken;

use crate::router::Router;

/// Users one notification may name.
const MAX_USERS: usize = 1000;

/// Joins the chat queue group on notifications.
pub async fn subscribe(nats: &async_nats::Client) -> anyhow::Result<async_nats::Subscriber> {
    plumbing::bus::serve_queue(nats, subjects::CHAT_NOTIFY, subjects::CHAT_QUEUE).await
}

pub async fn serve(
    router: Arc<Router>,
    mut sub: async_nats::Subscriber,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    while let Some(notify) = plumbing::bus::next_json::<Notify>(&mut sub, &stop).await {
        if notify.users.len() > MAX_USERS {
            tracing::warn!(
                users = notify.users.len(),
                "notification for too many users"
            );
            continue;
        }
        router.metrics.receipts.inc();
        router.notify_users(&notify.users, notify.frame).await;
    }
    Ok(())
}
