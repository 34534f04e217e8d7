//! The properties the fuzz targets check, shared by the targets of the two encodings. Each
//! function takes the raw input libFuzzer made and panics (a crash libFuzzer reports) when a
//! property does not hold; inputs that are merely invalid return quietly.

use std::fmt::Debug;
use std::str::FromStr;

use protocol::cursor::Cursor;
use protocol::encoding::Encoded;
use protocol::ids::MAX_ID_BYTES;
use protocol::{
    ClientFrame, ClientMsgId, ConnId, ConversationId, DecodeError, Encoding, GatewayId, GroupId,
    MessageId, Recipient, Request, ServerFrame, UserId, limits,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A client frame as the gateway takes it: decoded from a text (JSON) or binary (MessagePack)
/// message, then validated. Besides never panicking:
/// * the same bytes in the other kind of WebSocket message are always refused as such;
/// * an unknown `type` is reported only for a type that is really unknown;
/// * every frame that decodes encodes again, in either encoding, to bytes that decode to the
///   same frame (so what a client library encodes is what the gateway reads);
/// * a frame that validates carries only ids that are safe in a NATS subject and parse back
///   to themselves, and page sizes within the contract; a refused one's answer encodes.
pub fn client_frame(encoding: Encoding, bytes: &[u8]) {
    let is_text = encoding == Encoding::Json;
    assert!(matches!(
        encoding.decode_client(bytes, !is_text),
        Err(DecodeError::WrongFrameKind(..))
    ));
    let frame = match encoding.decode_client(bytes, is_text) {
        Ok(frame) => frame,
        Err(DecodeError::UnknownType(kind)) => {
            assert!(!ClientFrame::TYPES.contains(&kind.as_str()), "{kind:?}");
            return;
        }
        Err(_) => return,
    };
    for again in [Encoding::Json, Encoding::MsgPack] {
        let decoded = match again.encode_client(&frame) {
            Encoded::Text(t) => again.decode_client(t.as_bytes(), true),
            Encoded::Binary(b) => again.decode_client(&b, false),
        };
        assert_eq!(decoded.as_ref(), Ok(&frame), "{again:?} round trip");
    }
    match frame.validate() {
        Ok(request) => check_request(&request),
        Err(invalid) => {
            let answer = invalid.answer();
            for e in [Encoding::Json, Encoding::MsgPack] {
                e.encode_server(&answer);
            }
        }
    }
}

/// A server frame as a client library takes it (`crates/client`), in either encoding: no
/// panic, and every frame that decodes encodes again to itself in both encodings.
pub fn server_frame(bytes: &[u8]) {
    for encoding in [Encoding::Json, Encoding::MsgPack] {
        let is_text = encoding == Encoding::Json;
        let Ok(frame) = encoding.decode_server(bytes, is_text) else {
            continue;
        };
        for again in [Encoding::Json, Encoding::MsgPack] {
            assert_eq!(
                round_trip_server(again, &frame).as_ref(),
                Ok(&frame),
                "{encoding:?} frame, {again:?} round trip"
            );
        }
    }
}

fn round_trip_server(encoding: Encoding, frame: &ServerFrame) -> Result<ServerFrame, DecodeError> {
    match encoding.encode_server(frame) {
        Encoded::Text(t) => encoding.decode_server(t.as_bytes(), true),
        Encoded::Binary(b) => encoding.decode_server(&b, false),
    }
}

/// Whether `s` may stand in a NATS subject token or a KV key: the id alphabet, plus the `:`
/// of conversation ids. Never `.`, `*`, `>` or whitespace.
pub fn subject_safe(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b':')
}

/// An id that came out of validation: safe in a subject, and parses back to itself.
fn check_id<T>(id: &T)
where
    T: std::fmt::Display + std::str::FromStr + PartialEq + std::fmt::Debug,
    T::Err: std::fmt::Debug,
{
    let text = id.to_string();
    assert!(subject_safe(&text), "{id:?}");
    assert_eq!(&text.parse::<T>().expect("parses back"), id);
}

fn check_conversation(c: &ConversationId) {
    check_id(c);
    assert_ne!(c.is_direct(), c.group_id().is_some(), "{c:?}");
}

fn check_request(request: &Request) {
    let page = |limit: u32| assert!((1..=limits::HISTORY_PAGE_MAX).contains(&limit));
    match request {
        Request::Send(outgoing) => {
            check_id(&outgoing.cid);
            match &outgoing.to {
                Recipient::User(user) => check_id(user),
                Recipient::Group(group) => check_id(group),
            }
            outgoing.reply_to.iter().for_each(check_id);
            outgoing.attachment.iter().for_each(check_id);
        }
        Request::Change {
            conversation,
            cid,
            change,
            ..
        } => {
            check_conversation(conversation);
            check_id(cid);
            check_id(&change.target());
            if let protocol::frames::Change::React { emoji, .. } = change {
                assert!(
                    emoji.is_empty() || limits::valid_reaction(emoji),
                    "{emoji:?}"
                );
            }
        }
        Request::Ack { conversation, id }
        | Request::Read {
            conversation,
            up_to: id,
        } => {
            check_conversation(conversation);
            check_id(id);
        }
        Request::Typing { conversation } => check_conversation(conversation),
        Request::History {
            qid,
            conversation,
            before,
            after,
            limit,
        } => {
            check_id(qid);
            check_conversation(conversation);
            assert!(before.is_none() || after.is_none());
            before.iter().chain(after).for_each(check_id);
            page(*limit);
        }
        Request::Conversations { qid, limit } => {
            check_id(qid);
            page(*limit);
        }
        // A cursor is never part of a subject (it holds a `.` between partitions): it only
        // has to read back as itself.
        Request::Sync { cursor } => {
            if let Some(c) = cursor {
                check_text_round_trip(c);
            }
        }
        Request::Presence { users } => {
            assert!((1..=limits::WATCHED_USERS_MAX).contains(&users.len()));
            users.iter().for_each(check_id);
        }
        Request::Group { qid, .. } => check_id(qid),
        Request::Receipts {
            qid,
            conversation,
            id,
        } => {
            check_id(qid);
            check_conversation(conversation);
            check_id(id);
        }
        Request::Ping { .. } => {}
        Request::PushToken {
            qid,
            platform,
            token,
            ..
        } => {
            check_id(qid);
            assert!(subject_safe(platform) && !platform.contains(':'));
            assert!(!token.is_empty() && !token.chars().any(char::is_control));
        }
    }
}

/// A cursor, from text (a `sync` frame, the `?cursor=` of the handshake) and from numbers:
/// it parses exactly when it is `<epoch>-<seq>[.<seq>…]`, decimal numbers of at most 20
/// digits that fit a u64, with 1 to 64 sequences (one per partition); what parses prints in
/// its shortest form and parses back to itself, also through serde.
pub fn cursor(bytes: &[u8]) {
    if let Some((epoch, rest)) = bytes.split_first_chunk::<8>() {
        let seqs: Vec<u64> = rest
            .chunks_exact(8)
            .take(64)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        if !seqs.is_empty() {
            let cursor = Cursor {
                epoch: u64::from_le_bytes(*epoch),
                seqs,
            };
            check_text_round_trip(&cursor);
        }
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let number = |t: &str| {
        (1..=20).contains(&t.len())
            && t.bytes().all(|b| b.is_ascii_digit())
            && t.parse::<u64>().is_ok()
    };
    let expected = text.split_once('-').is_some_and(|(epoch, seqs)| {
        let seqs: Vec<&str> = seqs.split('.').collect();
        number(epoch) && seqs.len() <= 64 && seqs.iter().all(|s| number(s))
    });
    let parsed = text.parse::<Cursor>();
    assert_eq!(parsed.is_ok(), expected, "{text:?}");
    assert_eq!(from_json_string::<Cursor>(text).ok(), parsed.clone().ok());
    if let Ok(cursor) = parsed {
        let shortest = cursor.to_string();
        assert!(shortest.len() <= text.len());
        assert!(!shortest.starts_with('0') || shortest.starts_with("0-"));
        check_text_round_trip(&cursor);
    }
}

/// Ids, from text (a frame's fields, a token's `sub`): the four token ids accept exactly
/// `[A-Za-z0-9_-]{1,64}` and keep the text as it is; a conversation id parses only in its
/// canonical form (`dm:<a>:<b>` sorted, or `g:<group>`), which is safe in a subject and
/// names its participants; ULIDs (message and connection ids) have one text each, up to
/// case (26 digits of Crockford's base32 within 128 bits), and print and parse back from any
/// 128-bit value. Through serde each decodes as its parser says.
pub fn ids(bytes: &[u8]) {
    if let Some(value) = bytes.first_chunk::<16>() {
        let ulid = ulid::Ulid::from_bytes(*value);
        check_text_round_trip(&MessageId(ulid));
        check_text_round_trip(&ConnId(ulid));
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let token = (1..=MAX_ID_BYTES).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    token_id::<UserId>(text, token);
    token_id::<GroupId>(text, token);
    token_id::<ClientMsgId>(text, token);
    token_id::<GatewayId>(text, token);

    // Crockford's base32, either case, at most 128 bits (the first digit at most 7).
    let ulid = text.len() == 26
        && text.as_bytes()[0] <= b'7'
        && text
            .bytes()
            .all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b.to_ascii_uppercase()));
    for (parsed, json) in [
        (
            text.parse::<MessageId>().map(|id| id.0),
            from_json_string::<MessageId>(text).map(|id| id.0),
        ),
        (
            text.parse::<ConnId>().map(|id| id.0),
            from_json_string::<ConnId>(text).map(|id| id.0),
        ),
    ] {
        assert_eq!(parsed.is_ok(), ulid, "{text:?}");
        assert_eq!(json.ok(), parsed.clone().ok());
        if let Ok(value) = parsed {
            assert!(value.to_string().eq_ignore_ascii_case(text), "{text:?}");
            check_text_round_trip(&MessageId(value));
        }
    }

    let parsed = text.parse::<ConversationId>();
    assert_eq!(
        from_json_string::<ConversationId>(text).ok(),
        parsed.clone().ok()
    );
    if let Ok(conversation) = parsed {
        assert_eq!(conversation.as_str(), text);
        check_text_round_trip(&conversation);
        assert!(subject_safe(text));
        if let Some(group) = conversation.group_id() {
            assert_eq!(ConversationId::group(&group), conversation);
        } else {
            let (_, users) = text.split_once(':').expect("dm:<a>:<b>");
            let (a, b) = users.split_once(':').expect("dm:<a>:<b>");
            let (a, b) = (UserId::new(a).unwrap(), UserId::new(b).unwrap());
            assert!(a <= b);
            assert_eq!(ConversationId::direct(&b, &a), conversation);
            assert_eq!(conversation.peer_of(&a), Some(b.clone()));
            assert_eq!(conversation.peer_of(&b), Some(a));
        }
    }
    // Any two user ids make one conversation, whichever way round, that parses back.
    if let Some((a, b)) = text.split_once('|')
        && let (Ok(a), Ok(b)) = (UserId::new(a), UserId::new(b))
    {
        let conversation = ConversationId::direct(&a, &b);
        assert_eq!(ConversationId::direct(&b, &a), conversation);
        check_text_round_trip(&conversation);
        assert!(conversation.has_participant(&a) && conversation.has_participant(&b));
    }
}

/// A token id accepts `text` exactly when `valid` says, and then keeps it unchanged.
fn token_id<T>(text: &str, valid: bool)
where
    T: std::fmt::Display + FromStr + PartialEq + Debug + Serialize + DeserializeOwned,
    T::Err: Debug,
{
    let parsed = text.parse::<T>();
    assert_eq!(parsed.is_ok(), valid, "{text:?}");
    assert_eq!(
        from_json_string::<T>(text).ok().as_ref(),
        parsed.as_ref().ok()
    );
    if let Ok(id) = parsed {
        assert_eq!(id.to_string(), text);
        check_text_round_trip(&id);
    }
}

/// Prints `value`, parses it back, and gets the same value; the same through serde in both
/// encodings (ids and cursors travel as strings in frames and NATS payloads).
fn check_text_round_trip<T>(value: &T)
where
    T: std::fmt::Display + FromStr + PartialEq + Debug + Serialize + DeserializeOwned,
    T::Err: Debug,
{
    let text = value.to_string();
    assert_eq!(&text.parse::<T>().expect("parses back"), value);
    let json = serde_json::to_vec(value).expect("to JSON");
    assert_eq!(
        serde_json::from_slice::<T>(&json).expect("from JSON"),
        *value
    );
    let msgpack = rmp_serde::to_vec_named(value).expect("to MessagePack");
    assert_eq!(
        rmp_serde::from_slice::<T>(&msgpack).expect("from MessagePack"),
        *value
    );
}

/// `text` as a JSON string, decoded as `T` (how ids and cursors arrive inside frames).
fn from_json_string<T: DeserializeOwned>(text: &str) -> Result<T, serde_json::Error> {
    serde_json::from_str(&serde_json::to_string(text).expect("a string to JSON"))
}
