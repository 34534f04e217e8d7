//! Payloads on NATS subjects (JSON), between services and for integrators.
//! `subjects.md` documents each one next to its subject.

use serde::{Deserialize, Serialize};

use crate::frames::{Change, Message, ServerFrame};
use crate::groups::{Member, Role};
use crate::ids::{ConnId, ConversationId, GatewayId, GroupId, MessageId, UserId};

/// `natter.chat.send` request: a user sends a message to a user (`to`) or a group (`group`),
/// exactly one of the two. Answered with a [`ServerFrame::Sent`] or [`ServerFrame::Error`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequest {
    /// The authenticated sender. Gateways fill it from the token; integrators are trusted by
    /// their NATS permissions.
    pub from: UserId,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub cid: String,
    pub body: String,
    /// The device that sent it; it gets `sent` instead of an echo of the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<ConnId>,
    /// The id of the message of the same conversation this one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// The id of a file `from` uploaded for this conversation, sent with the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<String>,
    /// An edit (`body` is the new text) or a delete (`body` is ignored) of a message of the
    /// same conversation, instead of a new message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
}

/// An entry of the messages stream: the message plus routing facts that are not shown to
/// clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    #[serde(flatten)]
    pub message: Message,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<ConnId>,
    /// On a group's system message: the revision of the `natter_groups` bucket that holds
    /// the change. The router applies it before routing anything written after it, so a
    /// removed member gets nothing sent after the removal and an added one everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_revision: Option<u64>,
}

/// `natter.gw.<gateway>.deliver`: one frame for a list of connections on one gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub targets: Vec<ConnId>,
    pub frame: ServerFrame,
    /// Set on routed messages: this delivery's place in the router's sequence for this
    /// gateway, so the gateway notices a delivery lost on the way (see [`DeliveryOrder`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<DeliveryOrder>,
    /// Set on routed messages, whose frame then carries no cursor: where the message is in
    /// the stream. The gateway writes each device's own cursor into the frame from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
}

/// A routed message's place in the messages stream, from which a gateway moves each target
/// device's cursor (see `Cursor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The stream's epoch (its creation time).
    pub epoch: u64,
    /// The message's partition and stream sequence.
    pub partition: u32,
    pub seq: u64,
}

/// A partition's router numbers the message deliveries it publishes to each gateway: `n`
/// counts up from 1 within one router `run` of `partition`. A gateway that sees `n` skip
/// within a run lost a delivery (a NATS node died with it) and has its sessions replay that
/// partition from before the gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryOrder {
    pub run: u64,
    pub n: u64,
    #[serde(default)]
    pub partition: u32,
}

/// `natter.gw.<gateway>.progress`: a partition router's note to a gateway it delivered to,
/// once a second for a few seconds once those deliveries stop: how many deliveries its run
/// has published to the gateway (`order.n`) and how far it has routed the partition
/// (`position`). It leaves on the router's connection after those deliveries, so it arrives
/// after them: a gateway that has seen fewer lost the rest, which no later delivery would
/// show when the partition goes quiet; one that has them all knows its sessions have the
/// partition up to `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub order: DeliveryOrder,
    pub position: Position,
}

/// What a receipt reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    /// A device of `by` received message `id`.
    Delivered,
    /// `by` read the conversation up to and including `id`.
    Seen,
}

/// `natter.chat.receipt`: a recipient's device acknowledged or read a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub kind: ReceiptKind,
    pub by: UserId,
    pub conversation: ConversationId,
    pub id: MessageId,
}

/// `natter.chat.typing`: a user is typing in a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Typing {
    pub by: UserId,
    pub conversation: ConversationId,
}

/// `natter.chat.undelivered`: a delivery named a connection this gateway no longer has (its
/// socket is gone). The chat service removes the stale session from presence; the device
/// gets the message from its cursor when it reconnects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undelivered {
    pub gateway: GatewayId,
    pub conn: ConnId,
    /// The user the connection belonged to.
    pub user: UserId,
    pub conversation: ConversationId,
    pub id: MessageId,
    /// Who sent the message.
    pub from: UserId,
    /// The message is not worth a push (a system message, an edit or a delete): it only
    /// removes the stale session.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub silent: bool,
}

/// `natter.user.offline_message`: a new message reached `users`, none of whose devices is
/// online. One event per message (a group message to many offline members is split into
/// events of at most [`OfflineMessage::MAX_USERS`] users). The notifier batches these into
/// digests; integrators may send their own pushes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineMessage {
    pub users: Vec<UserId>,
    pub conversation: ConversationId,
    pub id: MessageId,
    pub from: UserId,
    /// The group's name, for a group message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    /// When the message was accepted, milliseconds since the Unix epoch.
    pub ts: u64,
}

impl OfflineMessage {
    pub const MAX_USERS: usize = 1000;
}

/// `natter.chat.group` request: `user` asks for a group operation. Answered with a
/// [`ServerFrame::Group`], [`ServerFrame::Groups`], [`ServerFrame::GroupMembers`] or
/// [`ServerFrame::Error`] carrying the same `qid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRequest {
    pub user: UserId,
    pub qid: crate::ids::ClientMsgId,
    #[serde(flatten)]
    pub op: crate::groups::GroupOp,
}

/// `natter.chat.notify`: route `frame` to every connected device of `users` (at most once).
/// The history service uses it to tell group senders who received and read their messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    pub users: Vec<UserId>,
    pub frame: ServerFrame,
}

/// `natter.presence.<user>` event and value of `<user>` in the `natter_presence` bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPresence {
    pub user: UserId,
    pub online: bool,
    /// When the user's last device disconnected, milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<u64>,
}

/// `natter.msg.<k>.session`, in every partition: a gateway registered a session; the
/// revisions of its session key and of the gateway's lease that each partition's router's
/// presence view must have applied before it routes anything written after this marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionMarker {
    pub user: UserId,
    pub gateway: GatewayId,
    pub conn: ConnId,
    pub session_revision: u64,
    pub lease_revision: u64,
    /// Every registration the marker stands for, with its session key's revision: a gateway
    /// writes one marker for the registrations waiting at once, and each user's session shard
    /// must have applied that user's key. Empty in markers of before sessions were sharded:
    /// then the marker stands for `user` alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registered: Vec<Registration>,
}

/// One registration named by a [`SessionMarker`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub user: UserId,
    pub session_revision: u64,
}

impl SessionMarker {
    /// The registrations this marker stands for.
    pub fn registrations(&self) -> Vec<Registration> {
        if self.registered.is_empty() {
            vec![Registration {
                user: self.user.clone(),
                session_revision: self.session_revision,
            }]
        } else {
            self.registered.clone()
        }
    }
}

/// `natter.chat.sessions.<k>` request: the live sessions of `users` (all of session shard
/// `k`), once the holder of the shard has applied the sessions bucket up to
/// `session_revision` and the gateways bucket up to `lease_revision` (the newest registration
/// the asking router has passed in its stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionsQuery {
    pub users: Vec<UserId>,
    #[serde(default)]
    pub session_revision: u64,
    #[serde(default)]
    pub lease_revision: u64,
}

/// Answer to a [`SessionsQuery`]: every live session of the users asked about; a user with
/// none is offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionsFound {
    pub sessions: Vec<SessionEntry>,
}

/// A question on `natter.chat.groups.<k>` to the chat instance holding shard `k`, about a
/// group of partition `k` or the group lists of shard `k`'s users. The holder answers (a
/// [`GroupsAnswer`]) once its view of the groups bucket has applied `revision` (0: at once),
/// so an asker that has just written a change sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupsQuery {
    #[serde(default)]
    pub revision: u64,
    #[serde(flatten)]
    pub ask: GroupsAsk,
}

/// What a [`GroupsQuery`] asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ask", rename_all = "snake_case")]
pub enum GroupsAsk {
    /// The group's record and member count, and `user`'s role in it.
    Info { group: GroupId, user: UserId },
    /// [`GroupsAsk::Info`] for each of `groups` (of this shard), in the same order.
    Infos { groups: Vec<GroupId>, user: UserId },
    /// Up to `limit` members after `after` (by user id), and whether more follow.
    Members {
        group: GroupId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<UserId>,
        limit: u32,
    },
    /// Who takes over a group its owner left: the first admin by user id, else the first
    /// member.
    Heir { group: GroupId },
    /// The groups of each of `users`, in the same order.
    GroupsOf { users: Vec<UserId> },
    /// How many groups each of `users` is in, in the same order.
    GroupCounts { users: Vec<UserId> },
}

/// The answer to a [`GroupsQuery`], named like its question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum GroupsAnswer {
    /// `facts` is none for a group that does not exist.
    Info {
        facts: Option<GroupFacts>,
    },
    Infos {
        facts: Vec<Option<GroupFacts>>,
    },
    Members {
        members: Vec<Member>,
        more: bool,
        /// How many members the group has.
        count: u32,
    },
    Heir {
        heir: Option<UserId>,
    },
    GroupsOf {
        groups: Vec<Vec<GroupId>>,
    },
    GroupCounts {
        counts: Vec<u32>,
    },
}

/// A group as its shard's holder knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupFacts {
    pub name: String,
    pub created_by: UserId,
    pub created_ts: u64,
    pub members: u32,
    /// The asker's role; none for a non-member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

/// Value of a gateway's presence lease in the `natter_gateways` bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayLease {
    pub gateway: GatewayId,
    /// Connection ids of this run are all greater than `boot`; older ones are stale.
    pub boot: ConnId,
    /// How long the lease lives without a refresh, in milliseconds.
    pub ttl_ms: u64,
}

/// Value stored under a session's key in `natter_sessions` (the key says who and where).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEntry {
    pub user: UserId,
    pub gateway: GatewayId,
    pub conn: ConnId,
}

/// `natter.history.query` request: a user asks for history. Answered with a
/// [`ServerFrame::History`], [`ServerFrame::Conversations`] or [`ServerFrame::Error`] carrying
/// the same `qid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRequest {
    /// The authenticated user; only participants and members may read a conversation.
    pub user: UserId,
    pub qid: crate::ids::ClientMsgId,
    pub query: HistoryQuery,
}

/// What a history request asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HistoryQuery {
    /// The newest `limit` messages, or those before/after a cursor (at most one of the two).
    Messages {
        conversation: ConversationId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<MessageId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<MessageId>,
        limit: u32,
    },
    /// The user's conversation list, most recently active first.
    Conversations { limit: u32 },
    /// The user's 1:1 conversations whose newest message is from `since` (milliseconds since
    /// the Unix epoch, the message id's time) on, most recently active first, at most
    /// `limit`; answered with `conversations`, unread counts not computed (0). Gateways use
    /// it to find what changed for a device that was away.
    Changed { since: u64, limit: u32 },
    /// Who of a group received and read message `id` (see [`ServerFrame::Receipts`]).
    Receipts {
        conversation: ConversationId,
        id: MessageId,
    },
}

/// Value of a push token's key `<user>.<hash>` in the `natter_push_tokens` bucket, written
/// by the gateway on a client's `push_token` frame and read by the notifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushTokenEntry {
    pub user: UserId,
    /// `[a-z0-9_-]{1,16}`, as the client named it (`fcm`, `apns`...).
    pub platform: String,
    pub token: String,
    /// When the device registered it, milliseconds since the Unix epoch.
    pub registered: u64,
}

impl PushTokenEntry {
    /// The longest token accepted, in bytes.
    pub const MAX_TOKEN_BYTES: usize = 4096;
    /// The longest platform name accepted, in bytes.
    pub const MAX_PLATFORM_BYTES: usize = 16;

    /// Whether `platform` matches `[a-z0-9_-]{1,16}`.
    pub fn valid_platform(platform: &str) -> bool {
        (1..=Self::MAX_PLATFORM_BYTES).contains(&platform.len())
            && platform
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    }

    /// Whether `token` is 1 to 4096 bytes without control characters.
    pub fn valid_token(token: &str) -> bool {
        (1..=Self::MAX_TOKEN_BYTES).contains(&token.len()) && !token.chars().any(char::is_control)
    }
}
