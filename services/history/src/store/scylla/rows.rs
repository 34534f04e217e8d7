//! Decoding CQL rows into protocol types.

use std::collections::HashMap;

use protocol::frames::{Attachment, ConversationSummary, Message, Quote, Reacted};
use protocol::{ClientMsgId, ConversationId, GroupEvent, GroupId, MessageId, UserId};

use super::corrupt;
use crate::store::StoreError;

/// The `reactions` column: user → "<time>:<emoji>".
pub(super) type ReactionsCell = Option<HashMap<String, String>>;
/// A 1:1 row: (id, ts, from, to, cid, body, the quote of a reply as JSON, edited, deleted,
/// reactions).
pub(super) type MessageRow = (
    String,
    i64,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<bool>,
    ReactionsCell,
    Option<String>,
);
/// A group row: (id, ts, from, cid, body, event as JSON, the quote of a reply as JSON,
/// edited, deleted, reactions).
pub(super) type GroupRow = (
    String,
    i64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<bool>,
    ReactionsCell,
    Option<String>,
);
/// A conversation summary row: (last id, last ts, last from, preview, last deleted).
pub(super) type SummaryRow = (String, i64, String, String, Option<bool>);

pub(super) fn to_message(
    conversation: &ConversationId,
    row: MessageRow,
) -> Result<Message, StoreError> {
    let (id, ts, from, to, cid, body, reply, edited, deleted, reactions, attachment) = row;
    let attachment = attachment
        .map(|json| serde_json::from_str::<Attachment>(&json))
        .transpose()
        .map_err(corrupt)?;
    let reply = reply
        .map(|json| serde_json::from_str::<Quote>(&json))
        .transpose()
        .map_err(corrupt)?;
    Ok(Message {
        attachment,
        reacted: reacted(reactions)?,
        reactions: Vec::new(),
        id: id.parse().map_err(corrupt)?,
        conversation: conversation.clone(),
        from: UserId::new(&from).map_err(corrupt)?,
        to: UserId::new(&to).map_err(corrupt)?,
        cid: ClientMsgId::new(&cid).map_err(corrupt)?,
        body,
        ts: ts as u64,
        cursor: None,
        event: None,
        state: None,
        reply,
        change: None,
        edited: edited.map(|ms| ms as u64),
        deleted: deleted.unwrap_or(false),
    })
}

/// Group rows have no recipient column: the group is the recipient.
pub(super) fn to_group_message(
    conversation: &ConversationId,
    group: &GroupId,
    row: GroupRow,
) -> Result<Message, StoreError> {
    let (id, ts, from, cid, body, event, reply, edited, deleted, reactions, attachment) = row;
    let event = event
        .map(|json| serde_json::from_str::<GroupEvent>(&json))
        .transpose()
        .map_err(corrupt)?;
    Ok(Message {
        event,
        ..to_message(
            conversation,
            (
                id,
                ts,
                from,
                group.to_string(),
                cid,
                body,
                reply,
                edited,
                deleted,
                reactions,
                attachment,
            ),
        )?
    })
}

pub(super) fn to_summary(
    conversation: ConversationId,
    row: SummaryRow,
) -> Result<ConversationSummary, StoreError> {
    let (last_id, last_ts, last_from, preview, deleted) = row;
    Ok(ConversationSummary {
        conversation,
        last_id: last_id.parse().map_err(corrupt)?,
        last_ts: last_ts as u64,
        last_from: UserId::new(&last_from).map_err(corrupt)?,
        preview,
        unread: 0,
        deleted: deleted.unwrap_or(false),
    })
}

/// Each user's reaction from the `reactions` column, in user order.
fn reacted(cell: ReactionsCell) -> Result<Vec<Reacted>, StoreError> {
    let mut out = Vec::new();
    for (user, value) in cell.unwrap_or_default() {
        let (at, emoji) = value
            .split_once(':')
            .ok_or_else(|| corrupt(format!("reaction {value:?}")))?;
        out.push(Reacted {
            user: UserId::new(&user).map_err(corrupt)?,
            emoji: emoji.to_string(),
            at: at.parse().map_err(corrupt)?,
        });
    }
    out.sort_by(|a, b| a.user.cmp(&b.user));
    Ok(out)
}

pub(super) fn parse_id(text: Option<String>) -> Result<Option<MessageId>, StoreError> {
    text.filter(|t| !t.is_empty())
        .map(|t| t.parse().map_err(corrupt))
        .transpose()
}
