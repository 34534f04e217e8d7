//! Backlogs written straight into the messages stream, as ingest would write them, so that a
//! scenario measures what reads them (a replay, the routers) and not the sending.

use protocol::frames::Message;
use protocol::payloads::StoredMessage;
use protocol::{ClientMsgId, ConversationId, MessageId, UserId, subjects};
use testkit::Stack;

/// Writes one 1:1 message per `(from, to)`, in order, pipelining the acks; the `i`-th is
/// numbered `i` in its cid and body.
pub async fn write(
    stack: &Stack,
    messages: impl IntoIterator<Item = (UserId, UserId)>,
) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(stack.nats.client().await);
    write_to(&js, stack.bus.partitions, messages).await
}

/// [`write`] through `js`, to a deployment of `partitions` partitions.
pub async fn write_to(
    js: &async_nats::jetstream::Context,
    partitions: u32,
    messages: impl IntoIterator<Item = (UserId, UserId)>,
) -> anyhow::Result<()> {
    let mut acks = Vec::new();
    let mut ids = ulid::Generator::new();
    for (i, (from, to)) in messages.into_iter().enumerate() {
        let conversation = ConversationId::direct(&from, &to);
        let id = MessageId(ids.generate()?);
        let stored = StoredMessage {
            message: Message {
                attachment: None,
                reacted: Vec::new(),
                reactions: Vec::new(),
                change: None,
                deleted: false,
                edited: None,
                id,
                conversation: conversation.clone(),
                from,
                to,
                cid: ClientMsgId::new(format!("b{i}"))?,
                body: format!("backlog message {i}, about as long as a chat line"),
                ts: id.timestamp_ms(),
                cursor: None,
                event: None,
                state: None,
                reply: None,
            },
            origin: None,
            groups_revision: None,
        };
        let subject = subjects::message(&conversation, partitions);
        acks.push(
            js.publish(subject, serde_json::to_vec(&stored)?.into())
                .await?,
        );
        if acks.len() >= 1024 {
            for ack in acks.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in acks {
        ack.await?;
    }
    Ok(())
}
