//! Attachments named by sends: a gateway stored the file in the attachments object store
//! with its uploader and conversation in the object's metadata (see the gateway's
//! `attachments.rs`); a message may carry it only when its sender uploaded it for the
//! message's conversation. A deleted message's attachment is removed from the store and its
//! bytes given back to the uploader's quota.
//!
//! An attachment is meant for one message. Sent again in a second message, both carry the
//! same file, and deleting either removes it.
//!
//! Once a message carries it, the object is marked with the message's id; an upload never
//! sent is removed after `unsent_attachment_ttl_secs` by [`sweep`], so files nobody sent do
//! not hold their uploader's quota for ever.

use std::time::Duration;

use async_nats::jetstream::object_store::{DeleteErrorKind, InfoErrorKind, UpdateMetadata};
use futures::StreamExt;
use protocol::frames::Attachment;
use protocol::subjects::{
    ATTACHMENT_CONTENT_TYPE, ATTACHMENT_CONVERSATION, ATTACHMENT_NAME, ATTACHMENT_OWNER,
    ATTACHMENT_SENT_IN,
};
use protocol::{AttachmentId, ConversationId, MessageId, UserId};
use tokio_util::sync::CancellationToken;

use crate::ingest::Ingest;
use crate::refusal::SendError;

impl Ingest {
    /// The attachment `id` names, if `from` uploaded it for `conversation`.
    pub(crate) async fn attachment(
        &self,
        from: &UserId,
        conversation: &ConversationId,
        id: &str,
    ) -> Result<Attachment, SendError> {
        let id: AttachmentId = id.parse().map_err(|_| SendError::InvalidAttachment)?;
        let info = match self.attachments.store.info(id.to_string()).await {
            Ok(info) if !info.deleted => info,
            Ok(_) => return Err(SendError::UnknownAttachment),
            Err(e) if e.kind() == InfoErrorKind::NotFound => {
                return Err(SendError::UnknownAttachment);
            }
            Err(e) => return Err(SendError::AttachmentsUnavailable(e.into())),
        };
        let meta = |key: &str| info.metadata.get(key).map(String::as_str);
        // Someone else's, or uploaded for another conversation: not the sender's to send.
        if meta(ATTACHMENT_OWNER) != Some(from.as_str())
            || meta(ATTACHMENT_CONVERSATION) != Some(conversation.as_str())
        {
            return Err(SendError::UnknownAttachment);
        }
        Ok(Attachment {
            id,
            name: meta(ATTACHMENT_NAME).unwrap_or("file").into(),
            size: info.size as u64,
            content_type: meta(ATTACHMENT_CONTENT_TYPE)
                .unwrap_or("application/octet-stream")
                .into(),
        })
    }

    /// Marks `attachment` as carried by message `id`, so the sweep keeps it.
    pub(crate) async fn mark_sent(&self, attachment: &Attachment, id: MessageId) {
        let store = &self.attachments.store;
        let name = attachment.id.to_string();
        let marked = async {
            let info = store.info(&name).await?;
            if is_sent(&info) {
                return Ok(());
            }
            let update = UpdateMetadata {
                name: name.clone(),
                description: Some(format!("{ATTACHMENT_SENT_IN}{id}")),
                metadata: info.metadata.clone(),
                headers: info.headers.clone(),
            };
            store.update_metadata(&name, update).await.map(|_| ())?;
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        };
        if let Err(e) = marked.await {
            // Swept as unsent later: the message would lose its file.
            tracing::warn!(error = %e, "a sent attachment was not marked as sent");
        }
    }

    /// Removes a deleted message's attachment, and gives its bytes back to `owner`'s quota.
    pub(crate) async fn remove_attachment(&self, owner: &UserId, attachment: &Attachment) {
        match self
            .attachments
            .store
            .delete(attachment.id.to_string())
            .await
        {
            Ok(()) => {}
            // Removed already (a delete sent again).
            Err(e) if e.kind() == DeleteErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(error = %e, "a deleted message's attachment was not removed");
                return;
            }
        }
        let quota = &self.attachments.quota;
        if let Err(e) =
            plumbing::bus::attachment_quota::release(quota, owner, attachment.size).await
        {
            tracing::warn!(error = %e, "attachment quota not given back");
        }
    }
}

/// Removes, every `every`, the uploads no message carries that are older than `ttl`, and
/// gives their bytes back to their uploaders' quotas. Several chat instances may sweep at
/// once: a file removed by another is not found again, so its bytes are given back once.
pub async fn sweep(
    attachments: plumbing::bus::Attachments,
    ttl: Duration,
    every: Duration,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = sweep_once(&attachments, ttl).await {
            tracing::warn!(error = %e, "unsent attachments not swept");
        }
    }
}

/// One pass over the attachments; how many were removed.
pub async fn sweep_once(
    attachments: &plumbing::bus::Attachments,
    ttl: Duration,
) -> anyhow::Result<usize> {
    let store = &attachments.store;
    let now = std::time::SystemTime::now();
    let mut list = store.list().await?;
    let mut unsent = Vec::new();
    while let Some(info) = list.next().await {
        let info = info?;
        let modified = info.modified.map(std::time::SystemTime::from);
        let old = modified.is_some_and(|at| now.duration_since(at).unwrap_or_default() >= ttl);
        if !info.deleted && old && !is_sent(&info) {
            unsent.push(info);
        }
    }
    let mut removed = 0;
    for info in unsent {
        match store.delete(&info.name).await {
            Ok(()) => {}
            Err(e) if e.kind() == DeleteErrorKind::NotFound => continue,
            Err(e) => {
                tracing::warn!(error = %e, "an unsent attachment was not removed");
                continue;
            }
        }
        removed += 1;
        let owner = info
            .metadata
            .get(ATTACHMENT_OWNER)
            .and_then(|o| UserId::new(o).ok());
        if let Some(owner) = owner {
            let quota = &attachments.quota;
            if let Err(e) =
                plumbing::bus::attachment_quota::release(quota, &owner, info.size as u64).await
            {
                tracing::warn!(error = %e, "attachment quota not given back");
            }
        }
    }
    if removed > 0 {
        tracing::info!(removed, "unsent attachments removed");
    }
    Ok(removed)
}

/// Whether a message carries the object (see `Ingest::mark_sent`).
fn is_sent(info: &async_nats::jetstream::object_store::ObjectInfo) -> bool {
    info.description
        .as_deref()
        .is_some_and(|d| d.starts_with(ATTACHMENT_SENT_IN))
}
