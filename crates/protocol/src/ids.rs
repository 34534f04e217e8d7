//! Validated identifiers. An id that reaches a NATS subject or a KV key is built only through
//! these constructors, so user input can never smuggle `.`, `*`, `>` or whitespace into one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;

/// Longest user, gateway or client message id, in bytes.
pub const MAX_ID_BYTES: usize = 64;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id is empty")]
    Empty,
    #[error("id is longer than {MAX_ID_BYTES} bytes")]
    TooLong,
    #[error("id contains {0:?}; allowed are ASCII letters, digits, '-' and '_'")]
    BadChar(char),
    #[error("not a conversation id")]
    BadConversation,
    #[error("not a ULID")]
    BadUlid,
}

/// Checks the token alphabet shared by every textual id: `[A-Za-z0-9_-]{1,64}`.
/// The alphabet is a subset of both NATS subject tokens and JetStream KV key characters.
fn check_token(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong);
    }
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        Some(c) => Err(IdError::BadChar(c)),
        None => Ok(()),
    }
}

macro_rules! token_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Box<str>);

        impl $name {
            pub fn new(s: impl AsRef<str>) -> Result<Self, IdError> {
                let s = s.as_ref();
                check_token(s)?;
                Ok(Self(s.into()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::new(&*s).map_err(serde::de::Error::custom)
            }
        }
    };
}

token_id!(
    /// A user, as named by the `sub` claim of their token.
    UserId
);
token_id!(
    /// A gateway process; names its NATS subjects and presence lease.
    GatewayId
);
token_id!(
    /// The sender's own id for a message, reused on retries; the de-duplication key.
    ClientMsgId
);
token_id!(
    /// A group chat.
    GroupId
);

macro_rules! ulid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Ulid);

        impl $name {
            /// Milliseconds since the Unix epoch encoded in the id.
            pub fn timestamp_ms(&self) -> u64 {
                self.0.timestamp_ms()
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                // 26 base32 digits hold 130 bits, a ULID 128: the ulid crate drops the top
                // two, so "8..." would name the same id as "0...". Refused, as the ULID spec
                // asks, so that each id has one text (found by fuzz/, target `ids`).
                if s.as_bytes().first().is_some_and(|&b| b > b'7') {
                    return Err(IdError::BadUlid);
                }
                Ulid::from_string(s).map(Self).map_err(|_| IdError::BadUlid)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0.to_string())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

ulid_id!(
    /// The permanent id of a message, assigned by the chat service; sorts by creation time.
    MessageId
);
ulid_id!(
    /// An uploaded attachment (an object of the attachments store), named by the gateway
    /// that took the upload.
    AttachmentId
);
ulid_id!(
    /// One WebSocket connection (one device session) on a gateway. Generated monotonically
    /// after the gateway's boot id, so ids older than the boot belong to a previous run.
    ConnId
);

/// A conversation: `dm:<a>:<b>` for a 1:1 chat, with the two user ids sorted, so both
/// participants derive the same id; `g:<group>` for a group. `:` cannot occur in an id, so
/// the forms are unambiguous.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationId(Box<str>);

impl ConversationId {
    /// The 1:1 conversation between two users (the same for either order).
    pub fn direct(a: &UserId, b: &UserId) -> Self {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        Self(format!("dm:{lo}:{hi}").into())
    }

    /// The conversation of a group.
    pub fn group(group: &GroupId) -> Self {
        Self(format!("g:{group}").into())
    }

    /// The group, for a group conversation.
    pub fn group_id(&self) -> Option<GroupId> {
        self.0.strip_prefix("g:").map(|g| GroupId(g.into()))
    }

    pub fn is_direct(&self) -> bool {
        self.0.starts_with("dm:")
    }

    /// The two participants of a 1:1 conversation.
    fn participants(&self) -> (UserId, UserId) {
        let mut parts = self.0.splitn(3, ':').skip(1);
        let a = parts.next().unwrap_or_default();
        let b = parts.next().unwrap_or_default();
        // Both parts were validated in `parse`/`direct`.
        (UserId(a.into()), UserId(b.into()))
    }

    /// The participant of a 1:1 conversation who is not `me`, or `None` if `me` is not in it
    /// (or it is a group: membership lives in the history store).
    pub fn peer_of(&self, me: &UserId) -> Option<UserId> {
        if !self.is_direct() {
            return None;
        }
        let (a, b) = self.participants();
        if &a == me {
            Some(b)
        } else if &b == me {
            Some(a)
        } else {
            None
        }
    }

    pub fn has_participant(&self, user: &UserId) -> bool {
        self.peer_of(user).is_some()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ConversationId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let mut parts = s.split(':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("dm"), Some(a), Some(b), None) => {
                let (a, b) = (UserId::new(a)?, UserId::new(b)?);
                if a > b {
                    return Err(IdError::BadConversation);
                }
                Ok(Self::direct(&a, &b))
            }
            (Some("g"), Some(g), None, None) => Ok(Self::group(&GroupId::new(g)?)),
            _ => Err(IdError::BadConversation),
        }
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConversationId({:?})", &*self.0)
    }
}

impl Serialize for ConversationId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ConversationId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_reject_subject_metacharacters() {
        for bad in ["bob.*", "bob.", "*", ">", "a b", "a\tb", "", "é", "a:b"] {
            assert!(UserId::new(bad).is_err(), "{bad:?} must be rejected");
        }
        assert!(UserId::new("x".repeat(65)).is_err());
        for good in ["bob", "Alice_2", "a-b", &"x".repeat(64)] {
            assert!(UserId::new(good).is_ok(), "{good:?} must be accepted");
        }
    }

    #[test]
    fn direct_conversation_is_symmetric_and_parses_back() {
        let (a, b) = (UserId::new("bob").unwrap(), UserId::new("alice").unwrap());
        let c = ConversationId::direct(&a, &b);
        assert_eq!(c, ConversationId::direct(&b, &a));
        assert_eq!(c.as_str(), "dm:alice:bob");
        assert_eq!(c.as_str().parse::<ConversationId>().unwrap(), c);
        assert_eq!(c.peer_of(&a), Some(b.clone()));
        assert_eq!(c.peer_of(&UserId::new("carol").unwrap()), None);
    }

    #[test]
    fn conversation_parse_rejects_unsorted_and_garbage() {
        let g: ConversationId = "g:team-1".parse().unwrap();
        assert_eq!(g.group_id(), Some(GroupId::new("team-1").unwrap()));
        assert_eq!(g.peer_of(&UserId::new("alice").unwrap()), None);
        for bad in [
            "g:x.y",
            "g:",
            "x:y",
            "dm:bob:alice",
            "dm:alice",
            "dm:a:b:c",
            "dm:a.b:c",
            "",
        ] {
            assert!(bad.parse::<ConversationId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_ulid_has_one_text() {
        let max = "7ZZZZZZZZZZZZZZZZZZZZZZZZZ";
        assert_eq!(max.parse::<MessageId>().unwrap().to_string(), max);
        let lower = "01arz3ndektsv4rrffq69g5fav";
        let id: MessageId = lower.parse().unwrap();
        assert_eq!(id.to_string(), lower.to_ascii_uppercase());
        // Beyond 128 bits: these would wrap onto "0ZZ...", "01ARZ..." and the like.
        for overflowing in [
            "8ZZZZZZZZZZZZZZZZZZZZZZZZZ",
            "Z1ARZ3NDEKTSV4RRFFQ69G5FAV",
            "JJCcJJJJTTTTTTTTTTTTTTTTTc",
        ] {
            assert_eq!(overflowing.parse::<MessageId>(), Err(IdError::BadUlid));
            assert_eq!(overflowing.parse::<ConnId>(), Err(IdError::BadUlid));
        }
    }

    #[test]
    fn deserializing_an_invalid_id_fails() {
        assert!(serde_json::from_str::<UserId>("\"bob.*\"").is_err());
        assert!(serde_json::from_str::<MessageId>("\"nope\"").is_err());
    }
}
