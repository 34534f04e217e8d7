//! The gateway's NATS inbox, `natter.gw.<id>.>`: deliveries from the chat service, each one
//! frame for a list of this gateway's connections, handed to [`Local::deliver`], and the
//! routers' progress notes, handed to [`Local::progress`]. One subscription for both, so a
//! note arrives after the deliveries its router published before it.

use std::sync::Arc;

use futures::StreamExt;
use protocol::payloads::{Delivery, Progress};
use protocol::subjects;
use tokio::task::JoinHandle;

use crate::local::Local;

/// Subscribes and returns the task that pushes deliveries to sessions.
pub async fn subscribe(local: Arc<Local>) -> anyhow::Result<JoinHandle<()>> {
    let mut sub = local
        .nats
        .subscribe(subjects::gateway_inbox(&local.gateway))
        .await?;
    plumbing::bus::round_trip(&local.nats).await;
    let deliver = subjects::gateway_deliver(&local.gateway);
    let progress = subjects::gateway_progress(&local.gateway);
    Ok(tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let subject = msg.subject.as_str();
            if subject == deliver {
                match serde_json::from_slice::<Delivery>(&msg.payload) {
                    Ok(delivery) => local.deliver(delivery),
                    Err(e) => tracing::warn!(error = %e, "undecodable delivery"),
                }
            } else if subject == progress {
                match serde_json::from_slice::<Progress>(&msg.payload) {
                    Ok(note) => local.progress(note),
                    Err(e) => tracing::warn!(error = %e, "undecodable progress note"),
                }
            } else {
                tracing::debug!(subject = %msg.subject, "ignoring unknown gateway subject");
            }
        }
    }))
}
