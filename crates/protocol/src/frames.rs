//! Client and server frames: what travels over the WebSocket, in either encoding.
//!
//! Ids in client frames arrive as plain strings so that a bad id gets its own error code
//! (`invalid_id`) rather than a generic decode failure; `ClientFrame::validate` (`requests`)
//! parses them once.

use serde::{Deserialize, Serialize};

use crate::codes::ErrorCode;
use crate::cursor::{Cursor, SyncGap};
use crate::groups::{GroupEvent, GroupInfo, GroupOp, Member};
use crate::ids::{AttachmentId, ClientMsgId, ConnId, ConversationId, GroupId, MessageId, UserId};

/// A frame from a client to the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Send a message to a user (`to`) or to a group (`group`): exactly one of the two.
    /// `cid` is the client's own id, reused on retries.
    Send {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        to: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
        cid: String,
        body: String,
        /// The id of the message of the same conversation this one answers (a reply).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<String>,
        /// The id of a file this user uploaded for this conversation (`POST /v1/attachments`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attachment: Option<String>,
    },
    /// This device received message `id` of `conversation`; the sender sees `delivered`.
    Ack { conversation: String, id: String },
    /// Replace the text of your message `id` of `conversation` (within the server's edit
    /// window). Answered like a `send`: `accepted`, then `sent` with the edit's own id.
    Edit {
        conversation: String,
        cid: String,
        id: String,
        body: String,
    },
    /// Delete message `id` of `conversation` for everyone: your own message (within the
    /// server's delete window), or any member's message in a group you manage. Answered like
    /// a `send`.
    Delete {
        conversation: String,
        cid: String,
        id: String,
    },
    /// React to message `id` of `conversation` with `emoji` (one per user per message: it
    /// replaces the user's earlier one; empty removes it). Answered like a `send`.
    React {
        conversation: String,
        cid: String,
        id: String,
        emoji: String,
    },
    /// The user read `conversation` up to and including `up_to`; the sender sees `seen`.
    Read { conversation: String, up_to: String },
    /// The user is typing in `conversation`. Ephemeral: never stored, rate-limited by the
    /// gateway to one per second per connection, shown to the other participant's devices.
    Typing { conversation: String },
    /// Messages of a conversation: the newest `limit` (default 50, at most 100), or those
    /// `before` a message id (scrolling back), or those `after` one (catching up).
    History {
        qid: String,
        conversation: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// The user's conversations, most recently active first, with unread counts.
    Conversations {
        qid: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Replay what this device missed: every message for the user after `cursor` (the cursor
    /// of the last message the device processed), in stream order, then `synced`. Without a
    /// cursor (a new device) nothing is replayed and `synced` says where live traffic starts.
    Sync {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
    },
    /// Watch the presence of these users (people you share a conversation with). Answered
    /// with one `presence` frame per user, then another whenever one of them changes.
    Presence { users: Vec<String> },
    /// A group operation (create, rename, add, remove, leave, set_role, info, mine,
    /// members), answered with `group`, `groups` or `group_members` carrying the same `qid`.
    Group {
        qid: String,
        #[serde(flatten)]
        op: GroupOp,
    },
    /// Who received and who read message `id` of a group conversation (the sender asks).
    Receipts {
        qid: String,
        conversation: String,
        id: String,
    },
    /// Application heartbeat; `ts` is echoed in the `pong`.
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts: Option<u64>,
    },
    /// Register this device's push token (or, with `remove: true`, forget it), for the
    /// notifier's digests while the user has no device online. `platform` matches
    /// `[a-z0-9_-]{1,16}` (`fcm`, `apns`...), `token` is 1 to 4096 bytes without control
    /// characters. Answered with `push_token` carrying the same `qid`, or an `error` with it.
    PushToken {
        qid: String,
        platform: String,
        token: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        remove: bool,
    },
}

impl ClientFrame {
    /// Every `type` a client may send; used to tell an unknown type from a malformed frame.
    pub const TYPES: &'static [&'static str] = &[
        "send",
        "edit",
        "delete",
        "react",
        "ack",
        "read",
        "typing",
        "history",
        "conversations",
        "sync",
        "presence",
        "group",
        "receipts",
        "ping",
        "push_token",
    ];
}

/// A message as stored in the messages stream and delivered to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub conversation: ConversationId,
    pub from: UserId,
    pub to: UserId,
    /// The sender's client message id.
    pub cid: ClientMsgId,
    /// The text; for a system event, a readable summary of it ("alice added bob").
    pub body: String,
    /// Server time of acceptance, milliseconds since the Unix epoch.
    pub ts: u64,
    /// The device's cursor once it has processed this message (live and replayed messages;
    /// absent in history pages and in the stream itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
    /// Set on a group's system messages: the membership change they record (`from` made it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<GroupEvent>,
    /// In a history page, on the asker's own messages: how far the message got, so a client
    /// that reloads shows the ticks it showed live. Absent everywhere else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<MessageState>,
    /// On a reply: the message it answers, quoted as it was when the reply was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Quote>,
    /// A file sent with the message (download it from `GET /v1/attachments/<id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Attachment>,
    /// On an edit or a delete: the message it changes. Such a message is an event in the
    /// conversation's stream (delivered live and replayed like any other, each with its own
    /// id and cursor); history pages never hold one: they show its effect instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    /// In a history page: when the message was last edited (milliseconds since the Unix
    /// epoch); its `body` is the edited text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited: Option<u64>,
    /// In a history page: the message was deleted for everyone; its `body` is empty and it
    /// has no `reply`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// In a history page: the reactions to the message, one entry per emoji, most given
    /// first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<Reaction>,
    /// Each user's reaction as the history store keeps it, from which a page's `reactions`
    /// are counted for the asker. Never sent to clients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reacted: Vec<Reacted>,
}

/// One emoji's reactions to a message, in a history page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    pub emoji: String,
    pub count: u32,
    /// The asker's own reaction is this one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mine: bool,
}

/// A user's reaction to a message as history keeps it: `emoji` is empty once removed, and
/// `at` (the reaction's time) orders the user's changes, so an older one arriving late (a
/// replay) changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reacted {
    pub user: UserId,
    pub emoji: String,
    pub at: u64,
}

/// What an edit, delete or reaction event changes (see [`Message::change`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// Message `id` now reads as this event's `body`.
    Edit { id: MessageId },
    /// Message `id` is deleted for everyone.
    Delete { id: MessageId },
    /// The event's sender reacts to message `id` with `emoji`, replacing their earlier
    /// reaction; an empty `emoji` removes it. `replaces` is that earlier reaction, as the
    /// server knew it when it accepted this one (absent: none), so a client holding counts
    /// moves one from it to `emoji`.
    React {
        id: MessageId,
        emoji: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        replaces: String,
    },
}

impl Change {
    /// The message changed.
    pub fn target(&self) -> MessageId {
        match self {
            Change::Edit { id } | Change::Delete { id } | Change::React { id, .. } => *id,
        }
    }
}

impl Message {
    /// Applies an edit or delete event to the message it changes, idempotently: an edit
    /// replaces the text unless the message is deleted or holds a later edit; a delete
    /// empties it for good. Whether the message changed.
    pub fn apply(&mut self, event: &Message) -> bool {
        match &event.change {
            Some(change) if change.target() == self.id && !self.deleted => match change {
                Change::Edit { .. } => {
                    // An earlier edit arriving late (a redelivery) changes nothing; one of the
                    // same millisecond is taken as the later, as the stream orders them.
                    let stale = self.edited.is_some_and(|at| at > event.ts);
                    let applied = self.edited == Some(event.ts) && self.body == event.body;
                    if stale || applied {
                        return false;
                    }
                    self.body.clone_from(&event.body);
                    self.edited = Some(event.ts);
                    true
                }
                Change::Delete { .. } => {
                    self.body.clear();
                    self.reply = None;
                    self.attachment = None;
                    self.reacted.clear();
                    self.deleted = true;
                    true
                }
                Change::React { emoji, .. } => self.react(&event.from, emoji, event.ts),
            },
            _ => false,
        }
    }
}

/// A file attached to a message: what a client shows before downloading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub id: AttachmentId,
    /// The file name the uploader gave (at most 255 bytes, no path).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type, as the uploader gave it (`application/octet-stream` when none).
    pub content_type: String,
}

/// The message a reply answers: enough to show the quote without fetching it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub id: MessageId,
    pub from: UserId,
    /// The start of its body (at most `limits::PREVIEW_CHARS` characters).
    pub preview: String,
    /// In a history page: the quoted message was deleted for everyone since, so `preview` is
    /// empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

impl Quote {
    pub fn of(message: &Message) -> Self {
        Self {
            id: message.id,
            from: message.from.clone(),
            preview: message
                .body
                .chars()
                .take(crate::limits::PREVIEW_CHARS)
                .collect(),
            deleted: false,
        }
    }
}

/// How far one of your messages got (see "Message states" in docs/protocol.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    /// Stored; no recipient device has acknowledged it.
    Sent,
    /// A recipient device acknowledged it (`ack`).
    Delivered,
    /// A recipient read the conversation up to it or beyond (`read`).
    Seen,
}

impl Message {
    /// `user` reacts with `emoji` (empty: removes their reaction) at `at`, unless they changed
    /// it later already; a new kind of reaction beyond `REACTION_KINDS_MAX` is dropped.
    fn react(&mut self, user: &UserId, emoji: &str, at: u64) -> bool {
        let kinds: std::collections::BTreeSet<&str> = self
            .reacted
            .iter()
            .filter(|r| !r.emoji.is_empty())
            .map(|r| r.emoji.as_str())
            .collect();
        if !emoji.is_empty()
            && !kinds.contains(emoji)
            && kinds.len() >= crate::limits::REACTION_KINDS_MAX
        {
            return false;
        }
        // Kept in user order, as every store reads them back.
        match self.reacted.binary_search_by(|r| r.user.cmp(user)) {
            Ok(i) => {
                let r = &mut self.reacted[i];
                if r.at > at || (r.at == at && r.emoji == emoji) {
                    return false;
                }
                r.emoji = emoji.to_string();
                r.at = at;
                true
            }
            Err(i) => {
                let reacted = Reacted {
                    user: user.clone(),
                    emoji: emoji.to_string(),
                    at,
                };
                self.reacted.insert(i, reacted);
                true
            }
        }
    }

    /// Replaces the stored reactions with their counts as `asker` sees them (a history page).
    pub fn count_reactions(&mut self, asker: &UserId) {
        let mut counts: Vec<Reaction> = Vec::new();
        for r in std::mem::take(&mut self.reacted) {
            if r.emoji.is_empty() || self.deleted {
                continue;
            }
            let mine = &r.user == asker;
            match counts.iter_mut().find(|c| c.emoji == r.emoji) {
                Some(c) => {
                    c.count += 1;
                    c.mine |= mine;
                }
                None => counts.push(Reaction {
                    emoji: r.emoji,
                    count: 1,
                    mine,
                }),
            }
        }
        counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.emoji.cmp(&b.emoji)));
        self.reactions = counts;
    }
}

/// One entry of a user's conversation list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationSummary {
    pub conversation: ConversationId,
    /// The newest message: its id, time, sender and the start of its body.
    pub last_id: MessageId,
    pub last_ts: u64,
    pub last_from: UserId,
    pub preview: String,
    /// Messages from others after the user's read marker (capped at 1000).
    pub unread: u32,
    /// The newest message was deleted for everyone (its `preview` is empty).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// A frame from the gateway to a client.
// Messages are most of the frames that exist at once (a replay's pages hold nothing else):
// boxing the largest variant would cost each of them an allocation to shrink the rare others.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame of every session: who the token says you are, and the limits in force.
    Welcome {
        user: UserId,
        conn: ConnId,
        heartbeat_timeout_ms: u64,
        max_body_bytes: usize,
    },
    /// The gateway took the `send` with this `cid` and is persisting it.
    Accepted { cid: ClientMsgId },
    /// The message is durable under its permanent `id` (state SENT).
    Sent {
        cid: ClientMsgId,
        id: MessageId,
        conversation: ConversationId,
        ts: u64,
    },
    /// A message for this device: from the peer, or sent by the user from another device.
    Message(Message),
    /// A device of `by` received message `id` (state DELIVERED).
    Delivered {
        conversation: ConversationId,
        id: MessageId,
        by: UserId,
    },
    /// `by` read the conversation up to and including `up_to` (state SEEN).
    Seen {
        conversation: ConversationId,
        up_to: MessageId,
        by: UserId,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts: Option<u64>,
    },
    /// `by` is typing in `conversation` (show it for a few seconds; it is repeated while the
    /// user keeps typing).
    Typing {
        conversation: ConversationId,
        by: UserId,
    },
    /// Answer to `history`: messages in ascending order; `more` says whether further
    /// messages exist beyond this page in the direction asked (older, or newer for `after`).
    History {
        qid: ClientMsgId,
        conversation: ConversationId,
        messages: Vec<Message>,
        more: bool,
    },
    /// The end of a `sync` replay. With `recovered: true` every message after the device's
    /// cursor was replayed. With `recovered: false` (`gap` says why) nothing was replayed and
    /// the device must refetch from history (`conversations`, then `history` per
    /// conversation). Either way it stores `cursor` and live messages follow.
    Synced {
        cursor: Cursor,
        recovered: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gap: Option<SyncGap>,
        /// Large groups of the user, which replays leave out: fetch their `history` after
        /// the newest message the device has (fan-out on read).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        history: Vec<ConversationId>,
    },
    /// `user` is online (one of their devices is connected) or not; `last_seen` is when their
    /// last device disconnected, milliseconds since the Unix epoch (absent: never seen).
    Presence {
        user: UserId,
        online: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seen: Option<u64>,
    },
    /// Answer to a `group` operation: the group as the asking user now sees it.
    Group { qid: ClientMsgId, group: GroupInfo },
    /// Answer to `group` `mine`: a page of the user's groups by group id; `more` says whether
    /// further groups follow (ask again with `after` set to the last group).
    Groups {
        qid: ClientMsgId,
        groups: Vec<GroupInfo>,
        /// Absent from servers before paging, which sent every group at once.
        #[serde(default)]
        more: bool,
    },
    /// Answer to `group` `members`: a page of members by user id; `more` says whether
    /// further members follow (ask again with `after` set to the last user).
    GroupMembers {
        qid: ClientMsgId,
        group: GroupId,
        members: Vec<Member>,
        more: bool,
    },
    /// Answer to `receipts`: how many of the group's other members received (`delivered`)
    /// and read (`seen`) the message, of `recipients`; and who, for groups up to the
    /// server's `receipt_lists_max` members (absent above it).
    Receipts {
        qid: ClientMsgId,
        conversation: ConversationId,
        id: MessageId,
        recipients: u32,
        delivered: u32,
        seen: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delivered_by: Option<Vec<UserId>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seen_by: Option<Vec<UserId>>,
    },
    /// Answer to `conversations`.
    Conversations {
        qid: ClientMsgId,
        conversations: Vec<ConversationSummary>,
    },
    /// A request failed; `cid` names the `send` it answers, when there is one.
    Error {
        code: ErrorCode,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cid: Option<ClientMsgId>,
        /// The query (`history`, `conversations`) it answers, when there is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        qid: Option<ClientMsgId>,
        /// For `1501`: wait at least this long before sending the frame again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// Answer to `push_token`: the token is now registered (`registered: true`) or was
    /// removed (`registered: false`).
    PushToken { qid: ClientMsgId, registered: bool },
}

impl ServerFrame {
    pub fn error(code: ErrorCode, reason: impl Into<String>, cid: Option<ClientMsgId>) -> Self {
        ServerFrame::Error {
            code,
            reason: reason.into(),
            cid,
            qid: None,
            retry_after_ms: None,
        }
    }

    /// The `cid` and `qid` this frame answers, when it answers a request.
    pub fn answers(&self) -> (Option<&ClientMsgId>, Option<&ClientMsgId>) {
        use ServerFrame::*;
        match self {
            Sent { cid, .. } | Accepted { cid } => (Some(cid), None),
            Error { cid, qid, .. } => (cid.as_ref(), qid.as_ref()),
            History { qid, .. }
            | Conversations { qid, .. }
            | Group { qid, .. }
            | Groups { qid, .. }
            | GroupMembers { qid, .. }
            | Receipts { qid, .. }
            | PushToken { qid, .. } => (None, Some(qid)),
            Welcome { .. }
            | Message(_)
            | Delivered { .. }
            | Seen { .. }
            | Pong { .. }
            | Typing { .. }
            | Synced { .. }
            | Presence { .. } => (None, None),
        }
    }

    /// The error sent instead of this answer when it is larger than `max_bytes`, the most
    /// one NATS message carries: `1009`, for the same `cid` or `qid`.
    pub fn too_large(&self, max_bytes: usize) -> Self {
        let (cid, qid) = self.answers();
        ServerFrame::Error {
            code: ErrorCode::AnswerTooLarge,
            reason: format!(
                "the answer exceeds the server's {max_bytes}-byte message limit; ask for a smaller page"
            ),
            cid: cid.cloned(),
            qid: qid.cloned(),
            retry_after_ms: None,
        }
    }

    /// An error answering the query `qid`.
    pub fn query_error(code: ErrorCode, reason: impl Into<String>, qid: ClientMsgId) -> Self {
        ServerFrame::Error {
            code,
            reason: reason.into(),
            cid: None,
            qid: Some(qid),
            retry_after_ms: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: u64, ts: u64, body: &str, change: Option<Change>) -> Message {
        Message {
            attachment: None,
            reacted: Vec::new(),
            reactions: Vec::new(),
            id: MessageId(ulid::Ulid::from_parts(ts, id.into())),
            conversation: "dm:alice:bob".parse().unwrap(),
            from: UserId::new("alice").unwrap(),
            to: UserId::new("bob").unwrap(),
            cid: ClientMsgId::new(format!("c{id}")).unwrap(),
            body: body.into(),
            ts,
            cursor: None,
            event: None,
            state: None,
            reply: None,
            change,
            edited: None,
            deleted: false,
        }
    }

    #[test]
    fn changes_apply_once_and_a_delete_is_final() {
        let mut m = message(1, 100, "helo", None);
        let target = m.id;
        let edit = |id, ts, body: &str| message(id, ts, body, Some(Change::Edit { id: target }));
        let (first, second) = (edit(2, 200, "hello"), edit(3, 300, "hello!"));
        assert!(m.apply(&first));
        assert!(!m.apply(&first), "a replay changes nothing");
        assert!(m.apply(&second));
        assert!(
            !m.apply(&first),
            "an earlier edit arriving late changes nothing"
        );
        assert_eq!((m.body.as_str(), m.edited), ("hello!", Some(300)));
        let other = message(9, 300, "x", Some(Change::Edit { id: first.id }));
        assert!(!m.apply(&other), "an edit of another message");
        m.reply = Some(Quote::of(&first));
        let delete = message(
            4,
            400,
            "alice deleted a message",
            Some(Change::Delete { id: target }),
        );
        assert!(m.apply(&delete));
        assert!(m.deleted && m.body.is_empty() && m.reply.is_none());
        assert!(!m.apply(&edit(5, 500, "back")), "deleted is final");
        assert!(m.body.is_empty());
    }

    #[test]
    fn one_reaction_per_user_changeable_removable_and_bounded() {
        let mut m = message(1, 100, "lunch?", None);
        let id = m.id;
        let react = |from: &str, ts, emoji: &str| {
            let change = Change::React {
                id,
                emoji: emoji.into(),
                replaces: String::new(),
            };
            let mut event = message(ts, ts, "", Some(change));
            event.from = UserId::new(from).unwrap();
            event
        };
        let bob = UserId::new("bob").unwrap();
        assert!(m.apply(&react("bob", 200, "👍")));
        assert!(m.apply(&react("carol", 210, "👍")));
        assert!(m.apply(&react("alice", 220, "❤")));
        assert!(!m.apply(&react("bob", 200, "👍")), "a replay");
        let counted = |m: &Message, asker: &UserId| {
            let mut m = m.clone();
            m.count_reactions(asker);
            assert!(m.reacted.is_empty(), "who reacted is not shown");
            m.reactions
                .iter()
                .map(|r| (r.emoji.clone(), r.count, r.mine))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            counted(&m, &bob),
            vec![("👍".into(), 2, true), ("❤".into(), 1, false)]
        );
        // bob changes his mind, then removes it; an older reaction arriving late is ignored.
        assert!(m.apply(&react("bob", 300, "❤")));
        assert!(!m.apply(&react("bob", 250, "😂")));
        assert_eq!(
            counted(&m, &bob),
            vec![("❤".into(), 2, true), ("👍".into(), 1, false)]
        );
        assert!(m.apply(&react("bob", 400, "")));
        assert_eq!(counted(&m, &bob).len(), 2);
        assert!(!counted(&m, &bob).iter().any(|r| r.2), "bob has none");
        // At most REACTION_KINDS_MAX different ones; a known one is still accepted.
        for i in 0..crate::limits::REACTION_KINDS_MAX {
            m.apply(&react(&format!("u{i}"), 500 + i as u64, &format!("e{i}")));
        }
        assert_eq!(counted(&m, &bob).len(), crate::limits::REACTION_KINDS_MAX);
        assert!(!m.apply(&react("dave", 900, "🆕")));
        assert!(m.apply(&react("dave", 901, "e0")));
    }
}
