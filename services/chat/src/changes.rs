//! Edits and deletes (`SendRequest.change`): who may change which message, and until when.
//!
//! A change is not applied here: it is stored as an event of the conversation (a message
//! with `change` set, and its own id), so it keeps its place in the conversation's order, is
//! routed live and replayed like any message, and is applied by history to the message it
//! names (see `Message::apply`). This module only decides whether the sender may make it:
//!
//! * an edit: the sender's own message, not deleted, within `edit_window_secs`;
//! * a delete: the sender's own message within `delete_window_secs`, or, in a group, any
//!   member's message by an owner or admin of the group (moderation, at any time). Deleting
//!   a deleted message is accepted and changes nothing, so a retry after the de-duplication
//!   window still gets `sent`;
//! * a reaction: any participant's (member's) to any message not deleted, one per user and
//!   message (a new one replaces theirs, an empty one removes it), and at most
//!   `REACTION_KINDS_MAX` different ones per message;
//! * system messages (a group's membership changes) are neither edited, deleted nor reacted
//!   to.

use std::time::{SystemTime, UNIX_EPOCH};

use protocol::frames::{Attachment, Change};
use protocol::{ConversationId, UserId, limits};

use crate::ingest::Ingest;
use crate::refusal::SendError;

/// A change the sender may make: its event's body and change, and the attachment a delete
/// removes once stored (with its uploader, whose quota gets the bytes back).
pub(crate) struct Checked {
    pub body: String,
    pub change: Change,
    pub removes: Option<(UserId, Attachment)>,
}

impl Checked {
    fn new(body: String, change: Change) -> Self {
        Self {
            body,
            change,
            removes: None,
        }
    }
}

impl Ingest {
    /// The body and change of the event, once `from` may make it: an edit's new text; for a
    /// delete or a reaction a readable summary (as a system message has), which a client that
    /// does not know `change` shows in place of an empty message. A reaction names the one it
    /// replaces, as history knows it.
    pub(crate) async fn check_change(
        &self,
        from: &UserId,
        conversation: &ConversationId,
        change: &Change,
        body: String,
    ) -> Result<Checked, SendError> {
        if let Change::React { emoji, .. } = change
            && !emoji.is_empty()
            && !limits::valid_reaction(emoji)
        {
            return Err(SendError::InvalidReaction);
        }
        let target = self
            .target(from, conversation, change.target())
            .await?
            .ok_or(SendError::UnknownTarget)?;
        if target.event.is_some() {
            return Err(SendError::SystemMessage);
        }
        let age_ms = now_ms().saturating_sub(target.ts);
        match change {
            Change::Edit { .. } => {
                if target.deleted {
                    return Err(SendError::TargetDeleted);
                }
                if target.from != *from {
                    return Err(SendError::NotTheSender);
                }
                within(age_ms, self.config.edit_window_secs, "edit")?;
                Ok(Checked::new(body, change.clone()))
            }
            Change::Delete { .. } => {
                if target.from == *from {
                    within(age_ms, self.config.delete_window_secs, "delete")?;
                } else if !self.manages(from, conversation).await? {
                    return Err(SendError::NotTheSender);
                }
                let body = format!("{from} deleted a message");
                let removes = target.attachment.map(|a| (target.from, a));
                Ok(Checked {
                    removes,
                    ..Checked::new(body, change.clone())
                })
            }
            Change::React { id, emoji, .. } => {
                if target.deleted {
                    return Err(SendError::TargetDeleted);
                }
                let kinds = &target.reactions;
                if !emoji.is_empty()
                    && kinds.len() >= limits::REACTION_KINDS_MAX
                    && !kinds.iter().any(|r| &r.emoji == emoji)
                {
                    return Err(SendError::TooManyReactions);
                }
                let body = match emoji.as_str() {
                    "" => format!("{from} removed a reaction"),
                    emoji => format!("{from} reacted {emoji}"),
                };
                // History counted the page for `from`: `mine` is their reaction now.
                let replaces = kinds.iter().find(|r| r.mine).map(|r| r.emoji.clone());
                let change = Change::React {
                    id: *id,
                    emoji: emoji.clone(),
                    replaces: replaces.unwrap_or_default(),
                };
                Ok(Checked::new(body, change))
            }
        }
    }

    /// Whether `user` is an owner or admin of the group of `conversation` (never, in 1:1).
    async fn manages(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> Result<bool, SendError> {
        let Some(group) = conversation.group_id() else {
            return Ok(false);
        };
        let role = self
            .groups
            .role(&group, user)
            .await
            .map_err(|e| SendError::DirectoryUnavailable(e.into()))?;
        Ok(role.is_some_and(|r| r.manages()))
    }
}

/// A message `age_ms` old may still be changed within a window of `window_secs` (0: never).
fn within(age_ms: u64, window_secs: u64, verb: &'static str) -> Result<(), SendError> {
    if age_ms < window_secs.saturating_mul(1000) {
        Ok(())
    } else {
        Err(SendError::TooLate { verb, window_secs })
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_open_until_they_close() {
        assert!(within(0, 900, "edit").is_ok());
        assert!(within(899_999, 900, "edit").is_ok());
        assert!(matches!(
            within(900_000, 900, "edit"),
            Err(SendError::TooLate {
                verb: "edit",
                window_secs: 900
            })
        ));
        assert!(within(0, 0, "delete").is_err(), "a window of 0 never opens");
    }
}
