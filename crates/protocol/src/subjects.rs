//! Every NATS subject, stream, consumer and KV bucket natter uses. This is the only place that
//! formats a subject; `subjects.md` documents the same names, and a test keeps them in step.

use crate::ids::{ClientMsgId, ConnId, ConversationId, GatewayId, UserId};

/// Request/reply: send a message (gateways and integrators → chat).
pub const CHAT_SEND: &str = "natter.chat.send";
/// Publish: a delivered/seen receipt (gateways → chat).
pub const CHAT_RECEIPT: &str = "natter.chat.receipt";
/// Publish: a typing indicator (gateways → chat); never stored.
pub const CHAT_TYPING: &str = "natter.chat.typing";
/// Queue group shared by all chat service instances.
pub const CHAT_QUEUE: &str = "natter-chat";

/// Request/reply: history queries (gateways and integrators → history service).
pub const HISTORY_QUERY: &str = "natter.history.query";
/// Queue group shared by all history service instances.
pub const HISTORY_QUEUE: &str = "natter-history";
/// Durable consumer on [`MESSAGES_STREAM`] that writes messages to the history store.
pub const HISTORY_CONSUMER: &str = "natter-history-writer";

/// JetStream stream holding every accepted message.
pub const MESSAGES_STREAM: &str = "NATTER_MESSAGES";
/// Subjects captured by [`MESSAGES_STREAM`].
pub const MESSAGES_SUBJECTS: &str = "natter.msg.>";
/// Durable consumer on [`MESSAGES_STREAM`] that routes messages to gateways.
pub const ROUTER_CONSUMER: &str = "natter-router";

/// KV bucket: one key per connected session.
pub const SESSIONS_BUCKET: &str = "natter_sessions";
/// The JetStream stream behind [`SESSIONS_BUCKET`] (watched for its last revision).
pub const SESSIONS_STREAM: &str = "KV_natter_sessions";
/// KV bucket: one lease per live gateway.
pub const GATEWAYS_BUCKET: &str = "natter_gateways";

/// Header carrying the de-duplication key on publishes to [`MESSAGES_STREAM`].
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// `natter.msg.<conversation>`: a message of one conversation, in the messages stream.
pub fn message(conversation: &ConversationId) -> String {
    format!("natter.msg.{conversation}")
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

/// `<gateway>`: a gateway's lease key in [`GATEWAYS_BUCKET`].
pub fn lease_key(gateway: &GatewayId) -> String {
    gateway.to_string()
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
        CHAT_SEND.into(),
        CHAT_RECEIPT.into(),
        CHAT_TYPING.into(),
        CHAT_QUEUE.into(),
        HISTORY_QUERY.into(),
        HISTORY_QUEUE.into(),
        HISTORY_CONSUMER.into(),
        MESSAGES_STREAM.into(),
        MESSAGES_SUBJECTS.into(),
        ROUTER_CONSUMER.into(),
        SESSIONS_BUCKET.into(),
        SESSIONS_STREAM.into(),
        GATEWAYS_BUCKET.into(),
        MSG_ID_HEADER.into(),
        "natter.msg.<conversation>".into(),
        gateway_inbox(&gw).replace("GW", "<gateway>"),
        gateway_deliver(&gw).replace("GW", "<gateway>"),
        "<user>.<gateway>.<conn>".into(),
        "<from>:<cid>".into(),
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
            "natter.msg.dm:alice:bob"
        );
        assert_eq!(gateway_deliver(&gw), "natter.gw.gw-1.deliver");
        assert_eq!(gateway_inbox(&gw), "natter.gw.gw-1.>");
        assert_eq!(dedup_id(&a, &ClientMsgId::new("c1").unwrap()), "alice:c1");
    }
}
