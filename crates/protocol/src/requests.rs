//! Client frames checked once: [`ClientFrame::validate`] turns the strings a client sent into
//! a typed [`Request`], or says what was wrong in the terms the client sees ([`Invalid`]).
//!
//! Ids arrive as strings (see `frames`) so that a bad id gets `1002` rather than a generic
//! decode failure; after `validate` nobody parses an id again. What depends on the server's
//! configuration or on the session's state (the body limit, sends waiting, a replay running)
//! is checked by the gateway, not here.

use crate::codes::ErrorCode;
use crate::cursor::Cursor;
use crate::frames::{Change, ClientFrame, ServerFrame};
use crate::groups::GroupOp;
use crate::ids::{AttachmentId, ClientMsgId, ConversationId, GroupId, MessageId, UserId};
use crate::limits;
use crate::payloads::PushTokenEntry;

/// A client frame whose ids are valid and whose page sizes are within the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Send(Outgoing),
    /// An `edit` or `delete`: sent like a message to the conversation's other participant
    /// or group, which the gateway works out from `conversation` and the user.
    Change {
        conversation: ConversationId,
        cid: ClientMsgId,
        body: String,
        change: Change,
    },
    Ack {
        conversation: ConversationId,
        id: MessageId,
    },
    Read {
        conversation: ConversationId,
        up_to: MessageId,
    },
    Typing {
        conversation: ConversationId,
    },
    /// At most one of `before` and `after`; `limit` within `1..=HISTORY_PAGE_MAX`.
    History {
        qid: ClientMsgId,
        conversation: ConversationId,
        before: Option<MessageId>,
        after: Option<MessageId>,
        limit: u32,
    },
    Conversations {
        qid: ClientMsgId,
        limit: u32,
    },
    Sync {
        cursor: Option<Cursor>,
    },
    /// One to `WATCHED_USERS_MAX` users.
    Presence {
        users: Vec<UserId>,
    },
    Group {
        qid: ClientMsgId,
        op: GroupOp,
    },
    Receipts {
        qid: ClientMsgId,
        conversation: ConversationId,
        id: MessageId,
    },
    Ping {
        ts: Option<u64>,
    },
    /// `platform` and `token` within [`PushTokenEntry`]'s rules.
    PushToken {
        qid: ClientMsgId,
        platform: String,
        token: String,
        remove: bool,
    },
}

/// A `send`: who it is for, the client's id for it, the text, and the message it answers;
/// or an edit or delete (`change`) of a message of the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub to: Recipient,
    pub cid: ClientMsgId,
    pub body: String,
    pub reply_to: Option<MessageId>,
    pub attachment: Option<AttachmentId>,
    pub change: Option<Change>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    User(UserId),
    Group(GroupId),
}

/// What was wrong with a client frame. `code` and the text (`Display`) are what the client
/// sees, in the `error` frame that [`Invalid::answer`] builds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("cid is not a valid client message id")]
    Cid,
    #[error("to is not a valid user id")]
    To,
    #[error("give a valid group id, or to, not both")]
    Recipient,
    #[error("reply_to is not a valid message id")]
    ReplyTo,
    #[error("attachment is not a valid attachment id")]
    Attachment,
    #[error("invalid conversation or message id")]
    ChangeIds,
    #[error(
        "a reaction is 1 to {} bytes without spaces or control characters (empty removes it)",
        limits::REACTION_MAX_BYTES
    )]
    Reaction,
    #[error("qid is not a valid id")]
    Qid,
    #[error("invalid conversation or message id")]
    ReceiptIds,
    #[error("invalid conversation id")]
    Conversation,
    #[error("invalid conversation or cursor")]
    HistoryIds,
    #[error("give before or after, not both")]
    BeforeAndAfter,
    #[error("invalid conversation or id")]
    ReceiptsIds,
    #[error("a cursor is `<epoch>-<seq>` or `<epoch>-<seq>.<seq>…`, decimal numbers")]
    Cursor,
    #[error("invalid user id")]
    User,
    #[error(
        "watch between 1 and {} users per connection",
        limits::WATCHED_USERS_MAX
    )]
    WatchCount,
    #[error("platform must match [a-z0-9_-]{{1,16}}")]
    Platform,
    #[error(
        "token must be 1 to {} bytes without control characters",
        PushTokenEntry::MAX_TOKEN_BYTES
    )]
    PushToken,
}

impl Fault {
    pub fn code(&self) -> ErrorCode {
        match self {
            Fault::BeforeAndAfter
            | Fault::WatchCount
            | Fault::Platform
            | Fault::PushToken
            | Fault::Reaction => ErrorCode::MalformedFrame,
            _ => ErrorCode::InvalidId,
        }
    }
}

/// A refused frame: the fault, and the `cid` or `qid` the answer carries when the frame's
/// own was valid (a client matches the error to its request by them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{fault}")]
pub struct Invalid {
    pub fault: Fault,
    pub cid: Option<ClientMsgId>,
    pub qid: Option<ClientMsgId>,
}

impl From<Fault> for Invalid {
    /// A fault in a frame that has no `cid` or `qid` to answer.
    fn from(fault: Fault) -> Self {
        Self::bare(fault)
    }
}

impl Invalid {
    fn bare(fault: Fault) -> Self {
        Self {
            fault,
            cid: None,
            qid: None,
        }
    }

    fn send(fault: Fault, cid: ClientMsgId) -> Self {
        Self {
            fault,
            cid: Some(cid),
            qid: None,
        }
    }

    fn query(fault: Fault, qid: ClientMsgId) -> Self {
        Self {
            fault,
            cid: None,
            qid: Some(qid),
        }
    }

    /// The `error` frame answering the refused frame.
    pub fn answer(&self) -> ServerFrame {
        ServerFrame::Error {
            code: self.fault.code(),
            reason: self.fault.to_string(),
            cid: self.cid.clone(),
            qid: self.qid.clone(),
            retry_after_ms: None,
        }
    }
}

impl ClientFrame {
    /// Parses every id once and applies the contract's page limits.
    pub fn validate(self) -> Result<Request, Invalid> {
        let qid = |qid: &str| ClientMsgId::new(qid).map_err(|_| Invalid::bare(Fault::Qid));
        let receipt = |conversation: &str, id: &str| match (
            conversation.parse::<ConversationId>(),
            id.parse::<MessageId>(),
        ) {
            (Ok(c), Ok(id)) => Ok((c, id)),
            _ => Err(Invalid::bare(Fault::ReceiptIds)),
        };
        Ok(match self {
            ClientFrame::Send {
                to,
                group,
                cid,
                body,
                reply_to,
                attachment,
            } => {
                let cid = ClientMsgId::new(&cid).map_err(|_| Invalid::bare(Fault::Cid))?;
                let to = match group {
                    None => match UserId::new(&to) {
                        Ok(user) => Recipient::User(user),
                        Err(_) => return Err(Invalid::send(Fault::To, cid)),
                    },
                    Some(group) => match GroupId::new(&group) {
                        Ok(group) if to.is_empty() => Recipient::Group(group),
                        _ => return Err(Invalid::send(Fault::Recipient, cid)),
                    },
                };
                let reply_to = match reply_to.map(|id| id.parse::<MessageId>()) {
                    None => None,
                    Some(Ok(id)) => Some(id),
                    Some(Err(_)) => return Err(Invalid::send(Fault::ReplyTo, cid)),
                };
                let attachment = match attachment.map(|id| id.parse::<AttachmentId>()) {
                    None => None,
                    Some(Ok(id)) => Some(id),
                    Some(Err(_)) => return Err(Invalid::send(Fault::Attachment, cid)),
                };
                Request::Send(Outgoing {
                    to,
                    cid,
                    body,
                    reply_to,
                    attachment,
                    change: None,
                })
            }
            ClientFrame::Edit {
                conversation,
                cid,
                id,
                body,
            } => {
                let (conversation, cid, id) = change_ids(&conversation, &cid, &id)?;
                Request::Change {
                    conversation,
                    cid,
                    body,
                    change: Change::Edit { id },
                }
            }
            ClientFrame::React {
                conversation,
                cid,
                id,
                emoji,
            } => {
                let (conversation, cid, id) = change_ids(&conversation, &cid, &id)?;
                if !emoji.is_empty() && !limits::valid_reaction(&emoji) {
                    return Err(Invalid::send(Fault::Reaction, cid));
                }
                Request::Change {
                    conversation,
                    cid,
                    body: String::new(),
                    change: Change::React {
                        id,
                        emoji,
                        replaces: String::new(),
                    },
                }
            }
            ClientFrame::Delete {
                conversation,
                cid,
                id,
            } => {
                let (conversation, cid, id) = change_ids(&conversation, &cid, &id)?;
                Request::Change {
                    conversation,
                    cid,
                    body: String::new(),
                    change: Change::Delete { id },
                }
            }
            ClientFrame::Ack { conversation, id } => {
                let (conversation, id) = receipt(&conversation, &id)?;
                Request::Ack { conversation, id }
            }
            ClientFrame::Read {
                conversation,
                up_to,
            } => {
                let (conversation, up_to) = receipt(&conversation, &up_to)?;
                Request::Read {
                    conversation,
                    up_to,
                }
            }
            ClientFrame::Typing { conversation } => Request::Typing {
                conversation: conversation
                    .parse()
                    .map_err(|_| Invalid::bare(Fault::Conversation))?,
            },
            ClientFrame::History {
                qid: q,
                conversation,
                before,
                after,
                limit,
            } => {
                let qid = qid(&q)?;
                let id = |c: Option<String>| c.map(|c| c.parse::<MessageId>()).transpose();
                let (Ok(conversation), Ok(before), Ok(after)) = (
                    conversation.parse::<ConversationId>(),
                    id(before),
                    id(after),
                ) else {
                    return Err(Invalid::query(Fault::HistoryIds, qid));
                };
                if before.is_some() && after.is_some() {
                    return Err(Invalid::query(Fault::BeforeAndAfter, qid));
                }
                Request::History {
                    qid,
                    conversation,
                    before,
                    after,
                    limit: history_page(limit),
                }
            }
            ClientFrame::Conversations { qid: q, limit } => Request::Conversations {
                qid: qid(&q)?,
                limit: history_page(limit),
            },
            ClientFrame::Sync { cursor } => Request::Sync {
                cursor: cursor
                    .map(|c| c.parse::<Cursor>())
                    .transpose()
                    .map_err(|_| Invalid::bare(Fault::Cursor))?,
            },
            ClientFrame::Presence { users } => {
                let users = users
                    .iter()
                    .map(UserId::new)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| Invalid::bare(Fault::User))?;
                if users.is_empty() || users.len() > limits::WATCHED_USERS_MAX {
                    return Err(Invalid::bare(Fault::WatchCount));
                }
                Request::Presence { users }
            }
            ClientFrame::Group { qid: q, op } => Request::Group { qid: qid(&q)?, op },
            ClientFrame::Receipts {
                qid: q,
                conversation,
                id,
            } => {
                let qid = qid(&q)?;
                let (Ok(conversation), Ok(id)) = (
                    conversation.parse::<ConversationId>(),
                    id.parse::<MessageId>(),
                ) else {
                    return Err(Invalid::query(Fault::ReceiptsIds, qid));
                };
                Request::Receipts {
                    qid,
                    conversation,
                    id,
                }
            }
            ClientFrame::Ping { ts } => Request::Ping { ts },
            ClientFrame::PushToken {
                qid: q,
                platform,
                token,
                remove,
            } => {
                let qid = qid(&q)?;
                if !PushTokenEntry::valid_platform(&platform) {
                    return Err(Invalid::query(Fault::Platform, qid));
                }
                if !PushTokenEntry::valid_token(&token) {
                    return Err(Invalid::query(Fault::PushToken, qid));
                }
                Request::PushToken {
                    qid,
                    platform,
                    token,
                    remove,
                }
            }
        })
    }
}

/// The ids of an `edit` or `delete`; a fault in the conversation or message id names the cid.
fn change_ids(
    conversation: &str,
    cid: &str,
    id: &str,
) -> Result<(ConversationId, ClientMsgId, MessageId), Invalid> {
    let cid = ClientMsgId::new(cid).map_err(|_| Invalid::bare(Fault::Cid))?;
    match (conversation.parse(), id.parse()) {
        (Ok(conversation), Ok(id)) => Ok((conversation, cid, id)),
        _ => Err(Invalid::send(Fault::ChangeIds, cid)),
    }
}

fn history_page(asked: Option<u32>) -> u32 {
    limits::page(
        asked,
        limits::HISTORY_PAGE_DEFAULT,
        limits::HISTORY_PAGE_MAX,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(to: &str, group: Option<&str>, cid: &str) -> ClientFrame {
        ClientFrame::Send {
            attachment: None,
            to: to.into(),
            group: group.map(Into::into),
            cid: cid.into(),
            body: "hi".into(),
            reply_to: None,
        }
    }

    fn refused(frame: ClientFrame) -> Invalid {
        frame.validate().expect_err("refused")
    }

    #[test]
    fn a_send_names_one_valid_recipient() {
        let group = "01JGGVS2Q4M3TEAMS0000000AB";
        assert!(matches!(
            send("bob", None, "c1").validate(),
            Ok(Request::Send(Outgoing {
                to: Recipient::User(_),
                ..
            }))
        ));
        assert!(matches!(
            send("", Some(group), "c1").validate(),
            Ok(Request::Send(Outgoing {
                to: Recipient::Group(_),
                ..
            }))
        ));
        let bad_cid = refused(send("bob", None, "no spaces"));
        assert_eq!((bad_cid.fault, bad_cid.cid), (Fault::Cid, None));
        let bad_to = refused(send("bob.*", None, "c1"));
        assert_eq!(bad_to.fault, Fault::To);
        assert_eq!(bad_to.cid.as_ref().map(|c| c.as_str()), Some("c1"));
        assert_eq!(
            refused(send("bob", Some(group), "c1")).fault,
            Fault::Recipient
        );
        assert_eq!(refused(send("", Some("g>"), "c1")).fault, Fault::Recipient);
    }

    #[test]
    fn edits_and_deletes_name_a_conversation_and_a_message() {
        let id = "01JGGVSB0000000000000000AA";
        let edit = |conversation: &str, id: &str| ClientFrame::Edit {
            conversation: conversation.into(),
            cid: "e1".into(),
            id: id.into(),
            body: "fixed".into(),
        };
        match edit("dm:alice:bob", id).validate() {
            Ok(Request::Change { change, body, .. }) => {
                assert_eq!(
                    change,
                    Change::Edit {
                        id: id.parse().unwrap()
                    }
                );
                assert_eq!(body, "fixed");
            }
            other => panic!("{other:?}"),
        }
        let delete = ClientFrame::Delete {
            conversation: "g:team".into(),
            cid: "d1".into(),
            id: id.into(),
        };
        assert!(matches!(
            delete.validate(),
            Ok(Request::Change {
                change: Change::Delete { .. },
                ..
            })
        ));
        for bad in [edit("dm:bob:alice", id), edit("dm:alice:bob", "x")] {
            let refused = refused(bad);
            assert_eq!(refused.fault, Fault::ChangeIds);
            assert_eq!(refused.cid.as_ref().map(|c| c.as_str()), Some("e1"));
        }
    }

    #[test]
    fn history_pages_are_clamped_and_take_one_direction() {
        let history = |before: Option<&str>, after: Option<&str>, limit| ClientFrame::History {
            qid: "q1".into(),
            conversation: "dm:alice:bob".into(),
            before: before.map(Into::into),
            after: after.map(Into::into),
            limit,
        };
        let id = "01JGGVSB0000000000000000AA";
        for (asked, got) in [(None, 50), (Some(0), 1), (Some(7), 7), (Some(10_000), 100)] {
            match history(None, None, asked).validate() {
                Ok(Request::History { limit, .. }) => assert_eq!(limit, got),
                other => panic!("{other:?}"),
            }
        }
        let both = refused(history(Some(id), Some(id), None));
        assert_eq!(both.fault, Fault::BeforeAndAfter);
        assert_eq!(both.fault.code(), ErrorCode::MalformedFrame);
        assert_eq!(both.qid.as_ref().map(|q| q.as_str()), Some("q1"));
        assert_eq!(
            refused(history(Some("x"), None, None)).fault,
            Fault::HistoryIds
        );
    }

    #[test]
    fn push_tokens_are_checked_with_their_reason() {
        let frame = |qid: &str, platform: &str, token: &str| ClientFrame::PushToken {
            qid: qid.into(),
            platform: platform.into(),
            token: token.into(),
            remove: false,
        };
        assert!(frame("q1", "fcm", "abc:DEF-123_x").validate().is_ok());
        assert!(
            frame("q1", "apns_voip", &"f".repeat(4096))
                .validate()
                .is_ok()
        );
        let bad_qid = refused(frame("bad qid", "fcm", "t"));
        assert_eq!(
            (bad_qid.fault.code(), bad_qid.qid),
            (ErrorCode::InvalidId, None)
        );
        for platform in ["", "FCM", "a.b", "x".repeat(17).as_str()] {
            assert_eq!(refused(frame("q1", platform, "t")).fault, Fault::Platform);
        }
        for token in ["", "a\nb", "a\u{0}b", "t".repeat(4097).as_str()] {
            assert_eq!(refused(frame("q1", "fcm", token)).fault, Fault::PushToken);
        }
    }

    #[test]
    fn answers_carry_the_code_the_text_and_the_request_id() {
        let frame = ClientFrame::PushToken {
            qid: "p3".into(),
            platform: "FCM".into(),
            token: "t".into(),
            remove: false,
        };
        let answer = refused(frame).answer();
        assert_eq!(
            serde_json::to_string(&answer).unwrap(),
            r#"{"type":"error","code":1000,"reason":"platform must match [a-z0-9_-]{1,16}","qid":"p3"}"#
        );
        let watch = ClientFrame::Presence {
            users: vec!["u".into(); limits::WATCHED_USERS_MAX + 1],
        };
        assert_eq!(refused(watch).fault, Fault::WatchCount);
        let empty = ClientFrame::Presence { users: vec![] };
        assert_eq!(refused(empty).fault, Fault::WatchCount);
        assert_eq!(
            refused(ClientFrame::Sync {
                cursor: Some("12".into())
            })
            .fault,
            Fault::Cursor
        );
    }
}
