//! What a client sees when chat refuses a request: one error type per operation (`SendError`
//! for `natter.chat.send`, `GroupError` for `natter.chat.group`), each mapped here, and only
//! here, to its `ErrorCode` and fixed text.
//!
//! A variant's `#[error]` message is the text the client reads; it may repeat data the client
//! gave (a user id, a limit) but nothing from inside the server. A backend failure keeps its
//! cause as the `source`, which is logged when the error frame is built and never sent.

use protocol::frames::ServerFrame;
use protocol::groups::MAX_GROUP_NAME_CHARS;
use protocol::{ClientMsgId, ErrorCode, limits};

/// A backend failure: NATS, JetStream or the groups bucket. Logged, never shown.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a send was refused.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("not a send request")]
    NotARequest,
    #[error("cid is not a valid id")]
    InvalidCid,
    /// `from` is not the user of the request's subject (`natter.chat.send.<user>`).
    #[error("from must be the user of the subject the request was sent on")]
    NotTheSubjectsUser,
    #[error("body exceeds {max_bytes} bytes")]
    BodyTooLarge { max_bytes: usize },
    #[error("to is not a valid user id")]
    InvalidRecipient,
    #[error("give a valid group id, or to, not both")]
    InvalidGroupAddress,
    #[error("not a member of this group")]
    NotAMember,
    #[error("reply_to is not a valid message id")]
    InvalidReplyTo,
    #[error("reply_to names no message of this conversation")]
    UnknownReplyTo,
    /// An edit, delete or reaction that also names `reply_to` or an attachment.
    #[error("an edit, delete or reaction cannot be a reply nor carry an attachment")]
    ReplyingChange,
    #[error("attachment is not a valid attachment id")]
    InvalidAttachment,
    /// No such attachment, or not one the sender uploaded for this conversation.
    #[error("attachment names no file you uploaded for this conversation")]
    UnknownAttachment,
    /// The attachments store did not answer.
    #[error("attachments unavailable; retry with the same cid")]
    AttachmentsUnavailable(#[source] Cause),
    #[error("id names no message of this conversation")]
    UnknownTarget,
    #[error("the message was deleted")]
    TargetDeleted,
    #[error("system messages cannot be edited, deleted or reacted to")]
    SystemMessage,
    #[error(
        "a reaction is 1 to {} bytes without spaces or control characters (empty removes it)",
        limits::REACTION_MAX_BYTES
    )]
    InvalidReaction,
    #[error(
        "the message has the most different reactions it may ({})",
        limits::REACTION_KINDS_MAX
    )]
    TooManyReactions,
    /// An edit of someone else's message, or a delete of it by someone who does not manage
    /// the group.
    #[error("only the sender may edit a message, or delete it outside a group they manage")]
    NotTheSender,
    #[error("the message is older than the {window_secs}-second window to {verb} it")]
    TooLate {
        verb: &'static str,
        window_secs: u64,
    },
    /// History did not answer whether the message replied to (or changed) exists.
    #[error("history unavailable to check the message named; retry with the same cid")]
    HistoryUnavailable(#[source] Cause),
    /// The groups bucket did not answer the membership check.
    #[error("group directory unavailable; retry with the same cid")]
    DirectoryUnavailable(#[source] Cause),
    /// The message was not persisted, or a duplicate's original could not be read back.
    #[error("message store unavailable; retry with the same cid")]
    StoreUnavailable(#[source] Cause),
}

impl SendError {
    /// The code and the text the client sees.
    pub fn to_client(&self) -> (ErrorCode, String) {
        use SendError::*;
        let code = match self {
            NotARequest | ReplyingChange | InvalidReaction => ErrorCode::MalformedFrame,
            TooManyReactions => ErrorCode::TooManyReactions,
            InvalidCid | InvalidRecipient | InvalidGroupAddress | InvalidReplyTo
            | InvalidAttachment => ErrorCode::InvalidId,
            UnknownReplyTo | UnknownTarget | TargetDeleted | UnknownAttachment => {
                ErrorCode::NotFound
            }
            SystemMessage | NotTheSender => ErrorCode::Forbidden,
            TooLate { .. } => ErrorCode::TooLate,
            BodyTooLarge { .. } => ErrorCode::BodyTooLarge,
            NotAMember | NotTheSubjectsUser => ErrorCode::Forbidden,
            DirectoryUnavailable(_)
            | StoreUnavailable(_)
            | HistoryUnavailable(_)
            | AttachmentsUnavailable(_) => ErrorCode::Unavailable,
        };
        (code, self.to_string())
    }

    /// The error frame answering the send `cid` (none when the cid itself was not valid);
    /// a backend failure is logged here.
    pub fn frame(self, cid: Option<ClientMsgId>) -> ServerFrame {
        match &self {
            SendError::DirectoryUnavailable(cause) => {
                tracing::warn!(error = %cause, "group directory unavailable");
            }
            SendError::AttachmentsUnavailable(cause) => {
                tracing::warn!(error = %cause, "attachments unavailable");
            }
            SendError::HistoryUnavailable(cause) => {
                tracing::warn!(error = %cause, "history unavailable for a reply or change");
            }
            SendError::StoreUnavailable(cause) => {
                plumbing::jetstream_error("publish");
                tracing::warn!(error = %cause, "message store unavailable");
            }
            _ => {}
        }
        let (code, reason) = self.to_client();
        ServerFrame::error(code, reason, cid)
    }
}

/// Why a group operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("not a group request")]
    NotARequest,
    /// `user` is not the user of the request's subject (`natter.chat.group.<user>`).
    #[error("user must be the user of the subject the request was sent on")]
    NotTheSubjectsUser,
    #[error("not a valid group id")]
    InvalidGroupId,
    /// A user id the client gave (in `users`, `member` or `after`).
    #[error("{0:?} is not a valid user id")]
    InvalidUserId(String),
    #[error("at most {} users per operation", limits::USERS_PER_GROUP_OPERATION)]
    TooManyUsers,
    #[error("a group name has 1 to {MAX_GROUP_NAME_CHARS} characters")]
    NameLength,
    #[error("a group name has no control characters")]
    NameControlCharacters,
    #[error("a group has at most {max_members} members")]
    Full { max_members: usize },
    /// Users the operation names who are in the most groups a user may be in.
    #[error("{} already in {max_groups} groups, the most allowed", names(.users))]
    TooManyGroups {
        users: Vec<String>,
        max_groups: usize,
    },
    /// Users the operation would add who accept adds from their contacts only
    /// (`group_adds = contacts`), and the one adding is not a contact of theirs.
    #[error(
        "{} can be added only by someone they have exchanged a message with",
        names(.users)
    )]
    NotContacts { users: Vec<String> },
    /// The history service did not say whether the users named are contacts.
    #[error("contacts could not be checked; retry")]
    ContactsUnavailable(#[source] Cause),
    #[error("no such group")]
    NoSuchGroup,
    /// The one asking is not a member.
    #[error("not a member of this group")]
    NotAMember,
    /// The member whose role was to be set is not one.
    #[error("not a member of this group")]
    NoSuchMember,
    #[error("only the owner and admins manage the group")]
    NotAManager,
    #[error("a group has one owner")]
    SecondOwner,
    #[error("only the owner adds admins")]
    AdminAddedByAdmin,
    #[error("to remove yourself, leave the group")]
    RemovingSelf,
    #[error("the owner cannot be removed")]
    RemovingOwner,
    #[error("only the owner removes admins")]
    AdminRemovedByAdmin,
    #[error("only the owner changes roles")]
    RoleSetByNonOwner,
    #[error("hand ownership to another member")]
    OwnRole,
    /// The group record changed between reading and writing it (a concurrent rename).
    #[error("the group changed; retry")]
    Changed,
    /// The groups bucket or the stream behind it did not answer.
    #[error("group directory unavailable; retry")]
    Unavailable(#[source] Cause),
}

impl GroupError {
    pub fn unavailable(cause: impl Into<Cause>) -> Self {
        GroupError::Unavailable(cause.into())
    }

    /// The code and the text the client sees.
    pub fn to_client(&self) -> (ErrorCode, String) {
        use GroupError::*;
        let code = match self {
            NotARequest | TooManyUsers | NameLength | NameControlCharacters => {
                ErrorCode::MalformedFrame
            }
            InvalidGroupId | InvalidUserId(_) => ErrorCode::InvalidId,
            Full { .. } => ErrorCode::GroupFull,
            TooManyGroups { .. } => ErrorCode::TooManyGroups,
            NotContacts { .. } => ErrorCode::NotAContact,
            NoSuchGroup | NoSuchMember => ErrorCode::NotFound,
            NotTheSubjectsUser | NotAMember | NotAManager | SecondOwner | AdminAddedByAdmin
            | RemovingSelf | RemovingOwner | AdminRemovedByAdmin | RoleSetByNonOwner | OwnRole => {
                ErrorCode::Forbidden
            }
            Changed | Unavailable(_) | ContactsUnavailable(_) => ErrorCode::Unavailable,
        };
        (code, self.to_string())
    }

    /// The error frame answering the operation `qid` (none when the request could not be
    /// read); a backend failure is logged here.
    pub fn frame(self, qid: Option<ClientMsgId>) -> ServerFrame {
        match &self {
            GroupError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "group directory unavailable");
            }
            GroupError::ContactsUnavailable(cause) => {
                tracing::warn!(error = %cause, "contacts could not be checked");
            }
            _ => {}
        }
        let (code, reason) = self.to_client();
        match qid {
            Some(qid) => ServerFrame::query_error(code, reason, qid),
            None => ServerFrame::error(code, reason, None),
        }
    }
}

/// The groups crate reads the bucket with `anyhow`; any such failure is the directory's.
impl From<anyhow::Error> for GroupError {
    fn from(e: anyhow::Error) -> Self {
        GroupError::unavailable(e)
    }
}

/// Names listed in an error's text before "and N others".
const NAMES_IN_TEXT: usize = 10;

/// `bob`, `bob and carol`, `bob, carol and dave`; past ten names, `… and 3 others`.
fn names(users: &[String]) -> String {
    match users {
        [] => String::new(),
        [one] => one.clone(),
        _ if users.len() <= NAMES_IN_TEXT => {
            let (last, rest) = users.split_last().expect("two or more");
            format!("{} and {last}", rest.join(", "))
        }
        _ => {
            let (named, rest) = users.split_at(NAMES_IN_TEXT);
            let others = match rest.len() {
                1 => "1 other".to_string(),
                n => format!("{n} others"),
            };
            format!("{} and {others}", named.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "nats: connection to 10.0.0.7:4222 refused";

    fn cause() -> Cause {
        SECRET.into()
    }

    #[test]
    fn each_send_refusal_has_its_code() {
        use SendError::*;
        let cases = [
            (NotARequest, ErrorCode::MalformedFrame),
            (InvalidCid, ErrorCode::InvalidId),
            (NotTheSubjectsUser, ErrorCode::Forbidden),
            (BodyTooLarge { max_bytes: 8 }, ErrorCode::BodyTooLarge),
            (InvalidRecipient, ErrorCode::InvalidId),
            (InvalidGroupAddress, ErrorCode::InvalidId),
            (NotAMember, ErrorCode::Forbidden),
            (InvalidReplyTo, ErrorCode::InvalidId),
            (UnknownReplyTo, ErrorCode::NotFound),
            (ReplyingChange, ErrorCode::MalformedFrame),
            (UnknownTarget, ErrorCode::NotFound),
            (TargetDeleted, ErrorCode::NotFound),
            (SystemMessage, ErrorCode::Forbidden),
            (InvalidReaction, ErrorCode::MalformedFrame),
            (TooManyReactions, ErrorCode::TooManyReactions),
            (NotTheSender, ErrorCode::Forbidden),
            (
                TooLate {
                    verb: "edit",
                    window_secs: 900,
                },
                ErrorCode::TooLate,
            ),
            (HistoryUnavailable(cause()), ErrorCode::Unavailable),
            (InvalidAttachment, ErrorCode::InvalidId),
            (UnknownAttachment, ErrorCode::NotFound),
            (AttachmentsUnavailable(cause()), ErrorCode::Unavailable),
            (DirectoryUnavailable(cause()), ErrorCode::Unavailable),
            (StoreUnavailable(cause()), ErrorCode::Unavailable),
        ];
        for (error, code) in cases {
            assert_eq!(error.to_client().0, code, "{error:?}");
        }
        let (_, text) = BodyTooLarge { max_bytes: 8 }.to_client();
        assert_eq!(text, "body exceeds 8 bytes");
        let late = TooLate {
            verb: "delete",
            window_secs: 60,
        };
        assert_eq!(
            late.to_client().1,
            "the message is older than the 60-second window to delete it"
        );
    }

    #[test]
    fn each_group_refusal_has_its_code() {
        use GroupError::*;
        let cases = [
            (NotARequest, ErrorCode::MalformedFrame),
            (NotTheSubjectsUser, ErrorCode::Forbidden),
            (InvalidGroupId, ErrorCode::InvalidId),
            (InvalidUserId("bob.*".into()), ErrorCode::InvalidId),
            (TooManyUsers, ErrorCode::MalformedFrame),
            (NameLength, ErrorCode::MalformedFrame),
            (NameControlCharacters, ErrorCode::MalformedFrame),
            (Full { max_members: 3 }, ErrorCode::GroupFull),
            (
                TooManyGroups {
                    users: vec!["bob".into()],
                    max_groups: 2,
                },
                ErrorCode::TooManyGroups,
            ),
            (
                NotContacts {
                    users: vec!["bob".into()],
                },
                ErrorCode::NotAContact,
            ),
            (ContactsUnavailable(cause()), ErrorCode::Unavailable),
            (NoSuchGroup, ErrorCode::NotFound),
            (NotAMember, ErrorCode::Forbidden),
            (NoSuchMember, ErrorCode::NotFound),
            (NotAManager, ErrorCode::Forbidden),
            (SecondOwner, ErrorCode::Forbidden),
            (AdminAddedByAdmin, ErrorCode::Forbidden),
            (RemovingSelf, ErrorCode::Forbidden),
            (RemovingOwner, ErrorCode::Forbidden),
            (AdminRemovedByAdmin, ErrorCode::Forbidden),
            (RoleSetByNonOwner, ErrorCode::Forbidden),
            (OwnRole, ErrorCode::Forbidden),
            (Changed, ErrorCode::Unavailable),
            (Unavailable(cause()), ErrorCode::Unavailable),
        ];
        for (error, code) in cases {
            assert_eq!(error.to_client().0, code, "{error:?}");
        }
        assert_eq!(
            InvalidUserId("bob.*".into()).to_client().1,
            r#""bob.*" is not a valid user id"#
        );
        let users = ["bob", "carol", "dave"].map(String::from).to_vec();
        assert_eq!(
            NotContacts { users }.to_client().1,
            "bob, carol and dave can be added only by someone they have exchanged a message with"
        );
    }

    #[test]
    fn long_lists_of_names_are_cut() {
        let users: Vec<String> = (0..12).map(|i| format!("u{i}")).collect();
        assert_eq!(
            names(&users),
            "u0, u1, u2, u3, u4, u5, u6, u7, u8, u9 and 2 others"
        );
        assert_eq!(names(&users[..11]).rsplit(" and ").next(), Some("1 other"));
        assert_eq!(names(&users[..2]), "u0 and u1");
    }

    #[test]
    fn internal_error_text_never_reaches_the_client() {
        let frames = [
            SendError::DirectoryUnavailable(cause()).frame(None),
            SendError::StoreUnavailable(cause()).frame(Some(ClientMsgId::new("c1").unwrap())),
            GroupError::unavailable(anyhow::anyhow!(SECRET)).frame(None),
            GroupError::Unavailable(cause()).frame(Some(ClientMsgId::new("q1").unwrap())),
        ];
        for frame in frames {
            let ServerFrame::Error { code, reason, .. } = frame else {
                panic!("not an error frame: {frame:?}");
            };
            assert_eq!(code, ErrorCode::Unavailable);
            assert!(!reason.contains("10.0.0.7"), "{reason}");
            assert!(reason.ends_with("; retry") || reason.ends_with("the same cid"));
        }
    }

    #[test]
    fn a_group_error_answers_the_query_it_refuses() {
        let qid = ClientMsgId::new("q7").unwrap();
        let ServerFrame::Error {
            qid: answered, cid, ..
        } = GroupError::NoSuchGroup.frame(Some(qid.clone()))
        else {
            panic!("not an error frame");
        };
        assert_eq!((answered, cid), (Some(qid), None));
    }
}
