//! A digest: what one user missed during one window, summarised per conversation, and the
//! versioned JSON payload providers deliver (documented in `docs/operations.md`).

use std::collections::BTreeMap;

use protocol::payloads::{OfflineMessage, PushTokenEntry};
use protocol::{ConversationId, MessageId, UserId};
use serde::{Deserialize, Serialize};

/// Senders named per conversation, at most; further ones are only counted.
const MAX_SENDERS: usize = 10;

/// The version of [`DigestPayload`]; a change that could break a receiver bumps it.
pub const PAYLOAD_VERSION: u32 = 1;

/// What one user missed in one conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationDigest {
    pub conversation: ConversationId,
    /// The group's name, for a group conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    pub count: u32,
    /// Distinct senders in order of their first message, at most ten.
    pub from: Vec<UserId>,
    pub first_id: MessageId,
    pub last_id: MessageId,
    /// When the newest message was accepted, milliseconds since the Unix epoch.
    pub last_ts: u64,
}

/// One user's digest as it grows during the window.
#[derive(Debug, Clone, Default)]
pub struct Digest {
    conversations: BTreeMap<ConversationId, ConversationDigest>,
}

impl Digest {
    /// Counts one offline message.
    pub fn add(&mut self, event: &OfflineMessage) {
        let entry = self
            .conversations
            .entry(event.conversation.clone())
            .or_insert_with(|| ConversationDigest {
                conversation: event.conversation.clone(),
                group_name: None,
                count: 0,
                from: Vec::new(),
                first_id: event.id,
                last_id: event.id,
                last_ts: event.ts,
            });
        entry.count += 1;
        if event.group_name.is_some() {
            entry.group_name.clone_from(&event.group_name);
        }
        if entry.from.len() < MAX_SENDERS && !entry.from.contains(&event.from) {
            entry.from.push(event.from.clone());
        }
        entry.first_id = entry.first_id.min(event.id);
        if event.id >= entry.last_id {
            entry.last_id = event.id;
        }
        entry.last_ts = entry.last_ts.max(event.ts);
    }

    /// Forgets the conversations whose every message is older than `last_seen`: the user had
    /// a device online after them, which received them.
    pub fn forget_seen_before(&mut self, last_seen: u64) {
        self.conversations.retain(|_, c| c.last_ts > last_seen);
    }

    pub fn is_empty(&self) -> bool {
        self.conversations.is_empty()
    }

    /// Messages counted, over all conversations.
    pub fn total(&self) -> u32 {
        self.conversations.values().map(|c| c.count).sum()
    }

    /// The payload for `user`, carrying their push tokens.
    pub fn payload(&self, id: String, user: &UserId, tokens: Vec<PushToken>) -> DigestPayload {
        let mut conversations: Vec<_> = self.conversations.values().cloned().collect();
        // Most recent first, as a phone would list them.
        conversations.sort_by_key(|c| std::cmp::Reverse(c.last_id));
        DigestPayload {
            version: PAYLOAD_VERSION,
            id,
            user: user.clone(),
            total: self.total(),
            text: text(&conversations),
            conversations,
            tokens,
        }
    }
}

/// A device's push token, as delivered in a digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushToken {
    pub platform: String,
    pub token: String,
}

impl From<PushTokenEntry> for PushToken {
    fn from(e: PushTokenEntry) -> Self {
        Self {
            platform: e.platform,
            token: e.token,
        }
    }
}

/// What a provider delivers: one user's digest (the webhook's JSON body, version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestPayload {
    pub version: u32,
    /// Names this digest: `<user>.<stream sequence of its first event>`, the same on every
    /// attempt and after a notifier restart, so a receiver can drop a repeat.
    pub id: String,
    pub user: UserId,
    /// Messages over all conversations.
    pub total: u32,
    /// A ready-made notification text ("15 new messages in Team", "23 new messages in 3
    /// chats").
    pub text: String,
    /// Most recent first.
    pub conversations: Vec<ConversationDigest>,
    /// The user's registered push tokens (possibly none).
    pub tokens: Vec<PushToken>,
}

/// "1 new message from alice", "15 new messages in Team", "23 new messages in 3 chats".
fn text(conversations: &[ConversationDigest]) -> String {
    let total: u32 = conversations.iter().map(|c| c.count).sum();
    let messages = if total == 1 {
        "1 new message".to_string()
    } else {
        format!("{total} new messages")
    };
    match conversations {
        [] => messages,
        [one] => match (&one.group_name, one.conversation.group_id().is_some()) {
            (Some(name), _) => format!("{messages} in {name}"),
            (None, true) => format!("{messages} in a group"),
            (None, false) => match one.from.as_slice() {
                [sender] => format!("{messages} from {sender}"),
                _ => messages,
            },
        },
        many => format!("{messages} in {} chats", many.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(u: &str) -> UserId {
        UserId::new(u).unwrap()
    }

    fn event(conversation: &str, from: &str, group: Option<&str>, ts: u64) -> OfflineMessage {
        OfflineMessage {
            users: vec![user("bob")],
            conversation: conversation.parse().unwrap(),
            id: MessageId(ulid::Ulid::from_parts(ts, 0)),
            from: user(from),
            group_name: group.map(Into::into),
            ts,
        }
    }

    #[test]
    fn fifteen_messages_in_one_group_make_one_line() {
        let mut digest = Digest::default();
        for i in 0..15 {
            let from = if i % 2 == 0 { "alice" } else { "carol" };
            digest.add(&event("g:team", from, Some("Team"), 1000 + i));
        }
        let payload = digest.payload("bob.1".into(), &user("bob"), vec![]);
        assert_eq!(payload.total, 15);
        assert_eq!(payload.text, "15 new messages in Team");
        let [c] = payload.conversations.as_slice() else {
            panic!("one conversation expected")
        };
        assert_eq!(c.count, 15);
        assert_eq!(c.from, [user("alice"), user("carol")]);
        assert_eq!(c.first_id, MessageId(ulid::Ulid::from_parts(1000, 0)));
        assert_eq!(c.last_id, MessageId(ulid::Ulid::from_parts(1014, 0)));
    }

    #[test]
    fn several_conversations_are_counted_as_chats() {
        let mut digest = Digest::default();
        for i in 0..20 {
            digest.add(&event("g:team", "alice", Some("Team"), 1000 + i));
        }
        digest.add(&event("dm:alice:bob", "alice", None, 2000));
        digest.add(&event("dm:bob:carol", "carol", None, 2001));
        digest.add(&event("dm:bob:carol", "carol", None, 2002));
        let payload = digest.payload("bob.1".into(), &user("bob"), vec![]);
        assert_eq!(payload.text, "23 new messages in 3 chats");
        assert_eq!(
            payload.conversations[0].conversation.as_str(),
            "dm:bob:carol",
            "most recent first"
        );
    }

    #[test]
    fn a_direct_message_names_its_sender() {
        let mut digest = Digest::default();
        digest.add(&event("dm:alice:bob", "alice", None, 1000));
        let payload = digest.payload("bob.1".into(), &user("bob"), vec![]);
        assert_eq!(payload.text, "1 new message from alice");
    }

    #[test]
    fn conversations_seen_online_are_forgotten() {
        let mut digest = Digest::default();
        digest.add(&event("dm:alice:bob", "alice", None, 1000));
        digest.add(&event("dm:bob:carol", "carol", None, 3000));
        digest.forget_seen_before(2000);
        assert_eq!(digest.total(), 1);
        digest.forget_seen_before(3000);
        assert!(digest.is_empty());
    }

    #[test]
    fn senders_are_capped() {
        let mut digest = Digest::default();
        for i in 0..30 {
            digest.add(&event("g:big", &format!("u{i}"), Some("Big"), 1000 + i));
        }
        let payload = digest.payload("bob.1".into(), &user("bob"), vec![]);
        assert_eq!(payload.conversations[0].from.len(), MAX_SENDERS);
        assert_eq!(payload.total, 30);
    }

    #[test]
    fn the_payload_is_stable_json() {
        let mut digest = Digest::default();
        digest.add(&event("g:team", "alice", Some("G"), 1000));
        let token = PushToken {
            platform: "fcm".into(),
            token: "t".into(),
        };
        let json = serde_json::to_value(digest.payload("bob.7".into(), &user("bob"), vec![token]))
            .unwrap();
        let id = MessageId(ulid::Ulid::from_parts(1000, 0)).to_string();
        assert_eq!(
            json,
            serde_json::json!({
                "version": 1, "id": "bob.7", "user": "bob", "total": 1,
                "text": "1 new message in G",
                "conversations": [{"conversation": "g:team", "group_name": "G", "count": 1,
                    "from": ["alice"], "first_id": id, "last_id": id, "last_ts": 1000}],
                "tokens": [{"platform": "fcm", "token": "t"}]
            })
        );
    }
}
