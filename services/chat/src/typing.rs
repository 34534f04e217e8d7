//! Routing typing indicators on `natter.chat.typing` to the other participant's devices.
//! Ephemeral by design: nothing is stored, nothing is retried.

use std::sync::Arc;

use protocol::frames::ServerFrame;
use protocol::payloads::Typing;
use protocol::subjects;
use tokio_util::sync::CancellationToken;

use crate::router::Router;

/// Joins the chat queue group on typing indicators.
pub async fn subscribe(nats: &async_nats::Client) -> anyhow::Result<async_nats::Subscriber> {
    plumbing::bus::serve_queue(nats, subjects::CHAT_TYPING, subjects::CHAT_QUEUE).await
}

pub async fn serve(
    router: Arc<Router>,
    mut sub: async_nats::Subscriber,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    while let Some(typing) = plumbing::bus::next_json::<Typing>(&mut sub, &stop).await {
        let Some(peer) = typing.conversation.peer_of(&typing.by) else {
            continue;
        };
        let frame = ServerFrame::Typing {
            conversation: typing.conversation,
            by: typing.by,
        };
        router.notify_user(&peer, frame).await;
    }
    Ok(())
}
