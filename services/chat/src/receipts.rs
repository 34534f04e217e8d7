//! Routing receipts on `natter.chat.receipt`: a recipient's device acknowledged (DELIVERED) or
//! the recipient read (SEEN) a 1:1 message; the sender's devices are told. Group receipts are
//! the history service's: it keeps each member's markers and tells the senders (through
//! `natter.chat.notify`), since it knows who sent which message.

use std::sync::Arc;

use protocol::frames::ServerFrame;
use protocol::payloads::{Receipt, ReceiptKind};
use protocol::subjects;
use tokio_util::sync::CancellationToken;

use crate::router::Router;

/// Joins the chat queue group on receipts.
pub async fn subscribe(nats: &async_nats::Client) -> anyhow::Result<async_nats::Subscriber> {
    plumbing::bus::serve_queue(nats, subjects::CHAT_RECEIPT, subjects::CHAT_QUEUE).await
}

pub async fn serve(
    router: Arc<Router>,
    mut sub: async_nats::Subscriber,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    while let Some(receipt) = plumbing::bus::next_json::<Receipt>(&mut sub, &stop).await {
        if receipt.conversation.group_id().is_some() {
            continue;
        }
        // Only a participant may report on a conversation; the peer is the sender.
        let Some(sender) = receipt.conversation.peer_of(&receipt.by) else {
            tracing::warn!(by = %receipt.by, "receipt for a foreign conversation");
            continue;
        };
        let frame = match receipt.kind {
            ReceiptKind::Delivered => ServerFrame::Delivered {
                conversation: receipt.conversation,
                id: receipt.id,
                by: receipt.by,
            },
            ReceiptKind::Seen => ServerFrame::Seen {
                conversation: receipt.conversation,
                up_to: receipt.id,
                by: receipt.by,
            },
        };
        router.metrics.receipts.inc();
        router.notify_user(&sender, frame).await;
    }
    Ok(())
}
