//! Deliveries a gateway could not make because the connection was gone
//! (`natter.chat.undelivered`). The session is removed from presence at once instead of when
//! its gateway's lease lapses, and a recipient left with no device online is treated as
//! offline for that message: the notifier hears of it. The message itself is not lost: the
//! device replays it from its cursor when it reconnects.

use std::sync::Arc;

use protocol::payloads::{OfflineMessage, Undelivered};
use protocol::subjects;
use tokio_util::sync::CancellationToken;

use crate::router::Router;

/// Joins the chat queue group on undelivered reports.
pub async fn subscribe(nats: &async_nats::Client) -> anyhow::Result<async_nats::Subscriber> {
    plumbing::bus::serve_queue(nats, subjects::CHAT_UNDELIVERED, subjects::CHAT_QUEUE).await
}

pub async fn serve(
    router: Arc<Router>,
    mut sub: async_nats::Subscriber,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    while let Some(report) = plumbing::bus::next_json::<Undelivered>(&mut sub, &stop).await {
        router.metrics.undelivered.inc();
        router
            .directory
            .forget(&report.user, &report.gateway, report.conn)
            .await;
        if !report.silent
            && report.user != report.from
            && router.offline_but(&report.user, report.conn).await
        {
            router.metrics.offline_recipients.inc();
            let offline = OfflineMessage {
                users: vec![report.user],
                conversation: report.conversation,
                id: report.id,
                from: report.from,
                group_name: None,
                ts: report.id.timestamp_ms(),
            };
            router.publish_offline(&offline).await;
        }
    }
    Ok(())
}
