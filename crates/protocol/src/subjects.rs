//! Every NATS subject, stream, consumer and KV bucket natter uses. This is the only place that
//! formats a subject; `subjects.md` documents the same names, and a test keeps them in step.

use crate::ids::{ClientMsgId, ConnId, ConversationId, GatewayId, GroupId, UserId};

/// Request/reply: send a message (gateways and integrators → chat), one subject per sender:
/// `natter.chat.send.<user>` (see [`chat_send`]). The user is in the subject so that NATS
/// permissions, not a payload field, decide who may speak as whom.
pub const CHAT_SEND: &str = "natter.chat.send.*";
/// Publish: a delivered/seen receipt (gateways → chat).
pub const CHAT_RECEIPT: &str = "natter.chat.receipt";
/// Publish: a typing indicator (gateways → chat); never stored.
pub const CHAT_TYPING: &str = "natter.chat.typing";
/// Publish: a gateway could not deliver a message to a connection that is gone
/// (gateways → chat), which then corrects presence and treats the recipient as offline.
pub const CHAT_UNDELIVERED: &str = "natter.chat.undelivered";
/// Publish: a message reached a user none of whose devices is online (chat → the notifier
/// and any integrator sending pushes).
pub const USER_OFFLINE_MESSAGE: &str = "natter.user.offline_message";
/// Request/reply: group operations (gateways and integrators → chat), one subject per asking
/// user: `natter.chat.group.<user>` (see [`chat_group`]).
pub const CHAT_GROUP: &str = "natter.chat.group.*";
/// Publish: route a frame to every device of some users (history → chat), at most once.
pub const CHAT_NOTIFY: &str = "natter.chat.notify";
/// Queue group shared by all chat service instances.
pub const CHAT_QUEUE: &str = "natter-chat";

/// Request/reply: history queries (gateways and integrators → history service), one subject
/// per asking user: `natter.history.query.<user>` (see [`history_query`]).
pub const HISTORY_QUERY: &str = "natter.history.query.*";
/// Queue group shared by all history service instances.
pub const HISTORY_QUEUE: &str = "natter-history";
/// Durable consumer on [`MESSAGES_STREAM`] that writes messages to the history store.
pub const HISTORY_CONSUMER: &str = "natter-history-writer";

/// JetStream stream holding every accepted message.
pub const MESSAGES_STREAM: &str = "NATTER_MESSAGES";
/// Subjects captured by [`MESSAGES_STREAM`].
pub const MESSAGES_SUBJECTS: &str = "natter.msg.>";
/// Session markers in [`MESSAGES_STREAM`]: a gateway registered a session. They put the
/// registration in order with the messages, so the router never routes a message written
/// after a registration without knowing the session.
pub const SESSION_MARKERS: &str = "natter.msg.session";
/// Durable consumer on [`MESSAGES_STREAM`] that routes messages to gateways.
pub const ROUTER_CONSUMER: &str = "natter-router";

/// KV bucket: one key per connected session.
pub const SESSIONS_BUCKET: &str = "natter_sessions";
/// The JetStream stream behind [`SESSIONS_BUCKET`] (watched for its last revision).
pub const SESSIONS_STREAM: &str = "KV_natter_sessions";
/// KV bucket: one lease per live gateway.
pub const GATEWAYS_BUCKET: &str = "natter_gateways";
/// KV bucket: per user, online or not and when last seen (written by the presence role).
pub const PRESENCE_BUCKET: &str = "natter_presence";
/// KV bucket: group metadata (`<group>`) and membership (`<group>.<user>`), written by the
/// chat service's group operations and watched by chat and history.
pub const GROUPS_BUCKET: &str = "natter_groups";
/// The JetStream stream behind [`GROUPS_BUCKET`].
pub const GROUPS_STREAM: &str = "KV_natter_groups";
/// Durable consumer on [`SESSIONS_STREAM`] that turns session changes into user presence.
pub const PRESENCE_CONSUMER: &str = "natter-presence";

/// JetStream stream making [`USER_OFFLINE_MESSAGE`] durable for the notifier.
pub const OFFLINE_STREAM: &str = "NATTER_OFFLINE";
/// Durable consumer on [`OFFLINE_STREAM`] that batches offline messages into digests.
pub const NOTIFIER_CONSUMER: &str = "natter-notifier";
/// KV bucket: devices' push tokens, `<user>.<token hash>` (written by gateways, read by the
/// notifier).
pub const PUSH_TOKENS_BUCKET: &str = "natter_push_tokens";
/// Wildcard selecting every user's presence events (the notifier's subscription).
pub const PRESENCE_ALL: &str = "natter.presence.*";

/// Header carrying the de-duplication key on publishes to [`MESSAGES_STREAM`].
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// `natter.msg.dm.<a>.<b>` or `natter.msg.g.<group>`: a message of one conversation, in the
/// messages stream. The conversation id's `:` become subject tokens, so one user's 1:1
/// messages can be selected with two wildcard filters (see [`user_messages`]).
pub fn message(conversation: &ConversationId) -> String {
    format!("natter.msg.{}", conversation.as_str().replace(':', "."))
}

/// The filters selecting every 1:1 message of `user` in the messages stream (as first or
/// second participant): used to replay what a device missed.
pub fn user_messages(user: &UserId) -> [String; 2] {
    [
        format!("natter.msg.dm.{user}.*"),
        format!("natter.msg.dm.*.{user}"),
    ]
}

/// `natter.chat.send.<user>`: `user` sends a message.
pub fn chat_send(user: &UserId) -> String {
    format!("natter.chat.send.{user}")
}

/// `natter.chat.group.<user>`: `user` asks for a group operation.
pub fn chat_group(user: &UserId) -> String {
    format!("natter.chat.group.{user}")
}

/// `natter.history.query.<user>`: `user` asks the history service.
pub fn history_query(user: &UserId) -> String {
    format!("natter.history.query.{user}")
}

/// The user a request subject speaks for: its last token (`natter.chat.send.<user>`,
/// `natter.chat.group.<user>`, `natter.history.query.<user>`). Services take the asking user
/// from here and refuse a payload that names someone else, because only the subject is
/// guarded by NATS permissions.
pub fn requesting_user(subject: &str) -> Option<UserId> {
    UserId::new(subject.rsplit('.').next()?).ok()
}

/// `natter.presence.<user>`: a user went online or offline (presence role → gateways and
/// integrators).
pub fn presence(user: &UserId) -> String {
    format!("natter.presence.{user}")
}

/// `natter.gw.<gateway>.>`: everything addressed to one gateway.
pub fn gateway_inbox(gateway: &GatewayId) -> String {
    format!("natter.gw.{gateway}.>")
}

/// `natter.gw.<gateway>.deliver`: frames for a list of that gateway's connections.
pub fn gateway_deliver(gateway: &GatewayId) -> String {
    format!("natter.gw.{gateway}.deliver")
}

/// `<user>.<gateway>.<conn>`: a session's key in [`SESSIONS_BUCKET`].
pub fn session_key(user: &UserId, gateway: &GatewayId, conn: ConnId) -> String {
    format!("{user}.{gateway}.{conn}")
}

/// `<group>`: a group's metadata key in [`GROUPS_BUCKET`].
pub fn group_key(group: &GroupId) -> String {
    group.to_string()
}

/// `<group>.<user>`: a membership key in [`GROUPS_BUCKET`].
pub fn member_key(group: &GroupId, user: &UserId) -> String {
    format!("{group}.{user}")
}

/// `<gateway>`: a gateway's lease key in [`GATEWAYS_BUCKET`].
pub fn lease_key(gateway: &GatewayId) -> String {
    gateway.to_string()
}

/// `<user>.<hash>`: a push token's key in [`PUSH_TOKENS_BUCKET`]; the hash is the first 128
/// bits of the token's SHA-256 in hex, so the same token registered twice is one key and
/// the token itself never appears in a key or subject.
pub fn push_token_key(user: &UserId, token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{user}.{hex}")
}

/// `<user>.*`: the keys of every push token of `user` in [`PUSH_TOKENS_BUCKET`].
pub fn push_tokens_of(user: &UserId) -> String {
    format!("{user}.*")
}

/// `<from>:<cid>`: the JetStream de-duplication id of a send.
pub fn dedup_id(from: &UserId, cid: &ClientMsgId) -> String {
    format!("{from}:{cid}")
}

/// The documented catalogue: every name above as it appears in `subjects.md`, with wildcards
/// for the parameterised ones.
pub fn catalogue() -> Vec<String> {
    let gw = GatewayId::new("GW").unwrap();
    vec![
        "natter.chat.send.<user>".into(),
        CHAT_RECEIPT.into(),
        CHAT_TYPING.into(),
        CHAT_QUEUE.into(),
        "natter.history.query.<user>".into(),
        HISTORY_QUEUE.into(),
        HISTORY_CONSUMER.into(),
        MESSAGES_STREAM.into(),
        MESSAGES_SUBJECTS.into(),
        SESSION_MARKERS.into(),
        ROUTER_CONSUMER.into(),
        SESSIONS_BUCKET.into(),
        SESSIONS_STREAM.into(),
        GATEWAYS_BUCKET.into(),
        MSG_ID_HEADER.into(),
        "natter.msg.dm.<a>.<b>".into(),
        "natter.msg.g.<group>".into(),
        "natter.msg.dm.<user>.*".into(),
        "natter.msg.dm.*.<user>".into(),
        CHAT_UNDELIVERED.into(),
        "natter.chat.group.<user>".into(),
        CHAT_NOTIFY.into(),
        GROUPS_BUCKET.into(),
        GROUPS_STREAM.into(),
        "<group>.<user>".into(),
        USER_OFFLINE_MESSAGE.into(),
        PRESENCE_BUCKET.into(),
        PRESENCE_CONSUMER.into(),
        "natter.presence.<user>".into(),
        gateway_inbox(&gw).replace("GW", "<gateway>"),
        gateway_deliver(&gw).replace("GW", "<gateway>"),
        "<user>.<gateway>.<conn>".into(),
        "<from>:<cid>".into(),
        OFFLINE_STREAM.into(),
        NOTIFIER_CONSUMER.into(),
        PUSH_TOKENS_BUCKET.into(),
        PRESENCE_ALL.into(),
        "<user>.<hash>".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_match_the_catalogue_forms() {
        let (a, b) = (UserId::new("alice").unwrap(), UserId::new("bob").unwrap());
        let gw = GatewayId::new("gw-1").unwrap();
        assert_eq!(
            message(&ConversationId::direct(&a, &b)),
            "natter.msg.dm.alice.bob"
        );
        assert_eq!(
            user_messages(&b),
            ["natter.msg.dm.bob.*", "natter.msg.dm.*.bob"]
        );
        assert_eq!(presence(&a), "natter.presence.alice");
        assert_eq!(chat_send(&a), "natter.chat.send.alice");
        assert_eq!(chat_group(&a), "natter.chat.group.alice");
        assert_eq!(history_query(&a), "natter.history.query.alice");
        for subject in [chat_send(&a), chat_group(&a), history_query(&a)] {
            assert_eq!(requesting_user(&subject), Some(a.clone()));
        }
        assert_eq!(requesting_user("natter.chat.send.*"), None);
        assert_eq!(requesting_user("natter.chat.send.a b"), None);
        assert_eq!(gateway_deliver(&gw), "natter.gw.gw-1.deliver");
        assert_eq!(gateway_inbox(&gw), "natter.gw.gw-1.>");
        assert_eq!(dedup_id(&a, &ClientMsgId::new("c1").unwrap()), "alice:c1");
        let key = push_token_key(&b, "token-1");
        assert_eq!(key.len(), "bob.".len() + 32);
        assert!(key.starts_with("bob."));
        assert_eq!(key, push_token_key(&b, "token-1"));
        assert_ne!(key, push_token_key(&b, "token-2"));
        assert_eq!(push_tokens_of(&b), "bob.*");
    }
}
