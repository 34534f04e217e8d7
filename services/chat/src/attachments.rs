//! Attachments named by sends: a gateway stored the file in the attachments object store
//! with its uploader and conversation in the object's metadata (see the gateway's
//! `attachments.rs`); a message may carry it only when its sender uploaded it for the
//! message's conversation. A deleted message's attachment is removed from the store and its
//! bytes given back to the uploader's quota.
//!
//! An attachment is meant for one message. Sent again in a second message, both carry the
//! same file, and deleting either removes it.

use async_nats::jetstream::object_store::{DeleteErrorKind, InfoErrorKind};
use protocol::frames::Attachment;
use protocol::subjects::{
    ATTACHMENT_CONTENT_TYPE, ATTACHMENT_CONVERSATION, ATTACHMENT_NAME, ATTACHMENT_OWNER,
};
use protocol::{AttachmentId, ConversationId, UserId};

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
