//! natter's wire contract. Everything that crosses a socket or a NATS subject is defined here:
//! validated ids, client and server frames, NATS payloads, error and close codes, and the
//! functions that build subjects. No other crate formats a subject.

pub mod backoff;
pub mod codes;
pub mod cursor;
pub mod encoding;
pub mod frames;
pub mod groups;
pub mod ids;
pub mod limits;
pub mod payloads;
pub mod requests;
pub mod subjects;

pub use backoff::Backoff;
pub use codes::{CloseCode, ErrorCode};
pub use cursor::{Cursor, SyncGap};
pub use encoding::{DecodeError, Encoding};
pub use frames::{ClientFrame, ServerFrame};
pub use groups::{GroupEvent, GroupInfo, GroupOp, Member, Role};
pub use ids::{
    AttachmentId, ClientMsgId, ConnId, ConversationId, GatewayId, GroupId, IdError, MessageId,
    UserId,
};
pub use requests::{Fault, Invalid, Outgoing, Recipient, Request};
