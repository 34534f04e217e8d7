//! What a client sees when a history query is refused: `QueryError`, mapped here, and only
//! here, to its `ErrorCode` and fixed text.
//!
//! A variant's `#[error]` message is the text the client reads. A store failure keeps the
//! `StoreError` as its `source`, which is logged when the error frame is built and never sent.

use protocol::frames::ServerFrame;
use protocol::{ClientMsgId, ErrorCode};

use crate::store::StoreError;

/// Why a history query (`natter.history.query`) was refused.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("not a history request")]
    NotARequest,
    /// `user` is not the user of the request's subject (`natter.history.query.<user>`).
    #[error("user must be the user of the subject the request was sent on")]
    NotTheSubjectsUser,
    #[error("not a participant of that conversation")]
    NotAParticipant,
    #[error("give before or after, not both")]
    BeforeAndAfter,
    #[error("receipts are kept for group conversations only")]
    NotAGroup,
    #[error("not a member of that group")]
    NotAMember,
    #[error("no such message")]
    NoSuchMessage,
    /// The store failed while reading `what`.
    #[error("history store unavailable; retry")]
    Unavailable {
        what: &'static str,
        #[source]
        source: StoreError,
    },
    /// Nobody answered for the group's shard (the chat instances holding groups).
    #[error("group membership unavailable; retry")]
    MembershipUnavailable {
        #[source]
        source: anyhow::Error,
    },
}

impl QueryError {
    /// The store failed while reading `what` (for the log: "conversation list", …).
    pub fn unavailable(what: &'static str) -> impl FnOnce(StoreError) -> Self {
        move |source| QueryError::Unavailable { what, source }
    }

    /// Group membership could not be asked.
    pub fn membership(source: anyhow::Error) -> Self {
        QueryError::MembershipUnavailable { source }
    }

    /// The code and the text the client sees.
    pub fn to_client(&self) -> (ErrorCode, String) {
        use QueryError::*;
        let code = match self {
            NotARequest | BeforeAndAfter => ErrorCode::MalformedFrame,
            NotAParticipant | NotAMember | NotTheSubjectsUser => ErrorCode::Forbidden,
            NotAGroup | NoSuchMessage => ErrorCode::NotFound,
            Unavailable { .. } | MembershipUnavailable { .. } => ErrorCode::Unavailable,
        };
        (code, self.to_string())
    }

    /// The error frame answering the query `qid` (none when the request could not be read);
    /// a store failure is logged here.
    pub fn frame(self, qid: Option<ClientMsgId>) -> ServerFrame {
        if let QueryError::Unavailable { what, source } = &self {
            tracing::warn!(error = %source, read = what, "history read failed");
        }
        if let QueryError::MembershipUnavailable { source } = &self {
            tracing::warn!(error = %source, "group membership not answered");
        }
        let (code, reason) = self.to_client();
        match qid {
            Some(qid) => ServerFrame::query_error(code, reason, qid),
            None => ServerFrame::error(code, reason, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> QueryError {
        QueryError::unavailable("messages")(StoreError::Unavailable(
            "scylla node 10.0.0.9:9042 timed out".into(),
        ))
    }

    #[test]
    fn each_refusal_has_its_code() {
        use QueryError::*;
        let cases = [
            (NotARequest, ErrorCode::MalformedFrame),
            (NotAParticipant, ErrorCode::Forbidden),
            (NotTheSubjectsUser, ErrorCode::Forbidden),
            (BeforeAndAfter, ErrorCode::MalformedFrame),
            (NotAGroup, ErrorCode::NotFound),
            (NotAMember, ErrorCode::Forbidden),
            (NoSuchMessage, ErrorCode::NotFound),
            (unavailable(), ErrorCode::Unavailable),
        ];
        for (error, code) in cases {
            assert_eq!(error.to_client().0, code, "{error:?}");
        }
    }

    #[test]
    fn store_error_text_never_reaches_the_client() {
        let qid = ClientMsgId::new("q1").unwrap();
        let ServerFrame::Error {
            code,
            reason,
            qid: answered,
            ..
        } = unavailable().frame(Some(qid.clone()))
        else {
            panic!("not an error frame");
        };
        assert_eq!(code, ErrorCode::Unavailable);
        assert_eq!(reason, "history store unavailable; retry");
        assert_eq!(answered, Some(qid));
    }
}
