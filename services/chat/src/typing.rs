//! Routing typing indicators on `natter.chat.typing` to the other participant's devices, or
//! to the other members of a group (groups up to `typing_group_members`).
//! Ephemeral by design: nothing is stored, nothing is retried.

use std::sync::Arc;

use protocol::frames::ServerFrame;
use protocol::payloads::Typing;
use protocol::{UserId, subjects};
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
        let recipients: Vec<UserId> = match typing.conversation.group_id() {
            None => typing
                .conversation
                .peer_of(&typing.by)
                .into_iter()
                .collect(),
            Some(group) => {
                let limit = router.config.typing_group_members;
                let members = match router.groups.members_if_at_most(&group, limit).await {
                    Ok((Some(members), _)) if members.contains(&typing.by) => members,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "typing notice dropped: members unknown");
                        continue;
                    }
                };
                members.into_iter().filter(|m| *m != typing.by).collect()
            }
        };
        let frame = ServerFrame::Typing {
            conversation: typing.conversation,
            by: typing.by,
        };
        router.notify_users(&recipients, frame).await;
    }
    Ok(())
}
