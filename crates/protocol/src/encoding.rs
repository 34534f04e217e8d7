//! The two wire encodings: JSON in text frames and MessagePack in binary frames, chosen per
//! connection through `Sec-WebSocket-Protocol`.

use serde::Deserialize;

use crate::cursor::Cursor;
use crate::frames::{ClientFrame, ServerFrame};

/// A connection's encoding, negotiated at the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Json,
    MsgPack,
}

/// An encoded frame, ready to become a WebSocket text or binary message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    Text(String),
    Binary(Vec<u8>),
}

/// Why a client frame could not be decoded. Each maps to one error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame is not valid {0}")]
    Malformed(&'static str),
    #[error("unknown frame type {0:?}")]
    UnknownType(String),
    #[error("a {0} frame on a {1} session")]
    WrongFrameKind(&'static str, &'static str),
}

impl Encoding {
    /// Subprotocol names, in order of preference when a client offers both.
    pub const JSON_PROTOCOL: &'static str = "natter.v1.json";
    pub const MSGPACK_PROTOCOL: &'static str = "natter.v1.msgpack";

    /// Picks the encoding from a `Sec-WebSocket-Protocol` header value. No header means JSON;
    /// a header naming none of ours is refused (`None`).
    pub fn negotiate(offered: Option<&str>) -> Option<Self> {
        let Some(offered) = offered else {
            return Some(Encoding::Json);
        };
        let names: Vec<&str> = offered.split(',').map(str::trim).collect();
        if names.contains(&Self::MSGPACK_PROTOCOL) && !names.contains(&Self::JSON_PROTOCOL) {
            Some(Encoding::MsgPack)
        } else if names.contains(&Self::JSON_PROTOCOL) {
            Some(Encoding::Json)
        } else {
            None
        }
    }

    pub fn protocol(self) -> &'static str {
        match self {
            Encoding::Json => Self::JSON_PROTOCOL,
            Encoding::MsgPack => Self::MSGPACK_PROTOCOL,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Encoding::Json => "JSON",
            Encoding::MsgPack => "MessagePack",
        }
    }

    pub fn encode_server(self, frame: &ServerFrame) -> Encoded {
        self.encode(frame)
    }

    pub fn encode_client(self, frame: &ClientFrame) -> Encoded {
        self.encode(frame)
    }

    /// Adds `cursor` to a `message` frame encoded without one. A message is encoded once for
    /// every device it goes to, but each device's cursor is its own (see `Cursor`): adding
    /// the one differing field to the shared encoding costs a copy, not an encoding. The
    /// frame must be a map without a `cursor` key, as `encode_server` makes a message whose
    /// cursor is `None`.
    pub fn add_cursor(self, encoded: &[u8], cursor: &Cursor) -> Encoded {
        let value = cursor.to_string();
        match self {
            Encoding::Json => {
                let text = std::str::from_utf8(encoded).expect("a JSON frame is UTF-8");
                let open = text.strip_suffix('}').expect("a JSON frame is an object");
                Encoded::Text(format!("{open},\"cursor\":\"{value}\"}}"))
            }
            Encoding::MsgPack => {
                let mut out = Vec::with_capacity(encoded.len() + value.len() + 12);
                match encoded.first().copied() {
                    // fixmap with room for one more entry
                    Some(b @ 0x80..=0x8e) => {
                        out.push(b + 1);
                        out.extend_from_slice(&encoded[1..]);
                    }
                    // a full fixmap becomes a map16
                    Some(0x8f) => {
                        out.extend_from_slice(&[0xde, 0, 16]);
                        out.extend_from_slice(&encoded[1..]);
                    }
                    Some(0xde) => {
                        let n = u16::from_be_bytes([encoded[1], encoded[2]]) + 1;
                        out.push(0xde);
                        out.extend_from_slice(&n.to_be_bytes());
                        out.extend_from_slice(&encoded[3..]);
                    }
                    _ => panic!("a MessagePack frame is a map"),
                }
                write_msgpack_str(&mut out, "cursor");
                write_msgpack_str(&mut out, &value);
                Encoded::Binary(out)
            }
        }
    }

    fn encode<T: serde::Serialize>(self, frame: &T) -> Encoded {
        // Serialising our own frame types cannot fail: all keys are strings, no maps of
        // non-string keys, no I/O.
        match self {
            Encoding::Json => Encoded::Text(serde_json::to_string(frame).expect("frame to JSON")),
            Encoding::MsgPack => {
                Encoded::Binary(rmp_serde::to_vec_named(frame).expect("frame to MessagePack"))
            }
        }
    }

    /// Decodes a client frame that arrived as a text (`is_text`) or binary message.
    pub fn decode_client(self, bytes: &[u8], is_text: bool) -> Result<ClientFrame, DecodeError> {
        self.decode(bytes, is_text, ClientFrame::TYPES)
    }

    /// Decodes a server frame (used by clients).
    pub fn decode_server(self, bytes: &[u8], is_text: bool) -> Result<ServerFrame, DecodeError> {
        self.decode(bytes, is_text, &[])
    }

    fn decode<T: serde::de::DeserializeOwned>(
        self,
        bytes: &[u8],
        is_text: bool,
        known_types: &[&str],
    ) -> Result<T, DecodeError> {
        let kind = |text| if text { "text" } else { "binary" };
        if is_text != (self == Encoding::Json) {
            return Err(DecodeError::WrongFrameKind(kind(is_text), self.name()));
        }
        let parsed = match self {
            Encoding::Json => serde_json::from_slice::<T>(bytes).map_err(|_| ()),
            Encoding::MsgPack => rmp_serde::from_slice::<T>(bytes).map_err(|_| ()),
        };
        parsed.map_err(|()| {
            // Only on the error path: tell an unknown `type` from a broken frame.
            #[derive(Deserialize)]
            struct Probe {
                #[serde(rename = "type")]
                kind: String,
            }
            let probe = match self {
                Encoding::Json => serde_json::from_slice::<Probe>(bytes).ok(),
                Encoding::MsgPack => rmp_serde::from_slice::<Probe>(bytes).ok(),
            };
            match probe {
                Some(p) if !known_types.is_empty() && !known_types.contains(&p.kind.as_str()) => {
                    DecodeError::UnknownType(p.kind)
                }
                _ => DecodeError::Malformed(self.name()),
            }
        })
    }
}

/// A MessagePack string (a cursor is at most a few hundred bytes).
fn write_msgpack_str(out: &mut Vec<u8>, s: &str) {
    let len = s.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if len < 256 {
        out.extend_from_slice(&[0xd9, len as u8]);
    } else {
        out.push(0xda);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;
    use crate::ids::*;

    #[test]
    fn a_cursor_added_to_an_encoded_message_decodes_as_if_encoded_with_it() {
        let message = |cursor: Option<Cursor>| {
            ServerFrame::Message(crate::frames::Message {
                attachment: None,
                reacted: Vec::new(),
                reactions: Vec::new(),
                change: None,
                deleted: false,
                edited: None,
                id: "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap(),
                conversation: "dm:alice:bob".parse().unwrap(),
                from: UserId::new("alice").unwrap(),
                to: UserId::new("bob").unwrap(),
                cid: ClientMsgId::new("c1").unwrap(),
                body: "hi \"there\" }".into(),
                ts: 1,
                cursor,
                event: None,
                state: None,
                reply: None,
            })
        };
        // Short and long cursors (MessagePack strings of each size class).
        for partitions in [1, 3, 64] {
            let cursor = Cursor::head(1_764_300_000_000, 123_456_789, partitions);
            for encoding in [Encoding::Json, Encoding::MsgPack] {
                let bare = match encoding.encode_server(&message(None)) {
                    Encoded::Text(t) => t.into_bytes(),
                    Encoded::Binary(b) => b,
                };
                let (bytes, text) = match encoding.add_cursor(&bare, &cursor) {
                    Encoded::Text(t) => (t.into_bytes(), true),
                    Encoded::Binary(b) => (b, false),
                };
                assert_eq!(
                    encoding.decode_server(&bytes, text).unwrap(),
                    message(Some(cursor.clone())),
                    "{encoding:?} with {partitions} partitions"
                );
            }
        }
        // A full fixmap grows into a map16, and a map16 counts one more.
        for entries in [15usize, 20] {
            let map: std::collections::BTreeMap<String, u8> = (0..entries)
                .map(|i| (format!("k{i:02}"), i as u8))
                .collect();
            let bare = rmp_serde::to_vec_named(&map).unwrap();
            let Encoded::Binary(with) = Encoding::MsgPack.add_cursor(&bare, &Cursor::head(1, 2, 1))
            else {
                panic!("binary")
            };
            let back: std::collections::BTreeMap<String, serde_json::Value> =
                rmp_serde::from_slice(&with).unwrap();
            assert_eq!(back.len(), entries + 1);
            assert_eq!(back["cursor"], serde_json::Value::from("1-2"));
        }
    }

    #[test]
    fn negotiation_prefers_json_and_refuses_strangers() {
        assert_eq!(Encoding::negotiate(None), Some(Encoding::Json));
        assert_eq!(
            Encoding::negotiate(Some("natter.v1.msgpack")),
            Some(Encoding::MsgPack)
        );
        assert_eq!(
            Encoding::negotiate(Some("natter.v1.msgpack, natter.v1.json")),
            Some(Encoding::Json)
        );
        assert_eq!(Encoding::negotiate(Some("mqtt")), None);
    }

    #[test]
    fn json_wire_format_is_pinned() {
        let f = Encoding::Json
            .decode_client(
                br#"{"type":"send","to":"bob","cid":"c1","body":"hi"}"#,
                true,
            )
            .unwrap();
        assert_eq!(
            f,
            ClientFrame::Send {
                attachment: None,
                to: "bob".into(),
                group: None,
                cid: "c1".into(),
                body: "hi".into(),
                reply_to: None,
            }
        );
        let sent = ServerFrame::Sent {
            cid: ClientMsgId::new("c1").unwrap(),
            id: "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap(),
            conversation: "dm:alice:bob".parse().unwrap(),
            ts: 7,
        };
        let Encoded::Text(t) = Encoding::Json.encode_server(&sent) else {
            panic!()
        };
        assert_eq!(
            t,
            r#"{"type":"sent","cid":"c1","id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","conversation":"dm:alice:bob","ts":7}"#
        );
        let err = ServerFrame::error(ErrorCode::InvalidId, "bad", None);
        let Encoded::Text(t) = Encoding::Json.encode_server(&err) else {
            panic!()
        };
        assert_eq!(t, r#"{"type":"error","code":1002,"reason":"bad"}"#);
    }

    #[test]
    fn group_frames_are_flat_in_both_encodings() {
        let create = Encoding::Json
            .decode_client(
                br#"{"type":"group","qid":"q1","op":"create","name":"Team","members":["bob"]}"#,
                true,
            )
            .unwrap();
        assert_eq!(
            create,
            ClientFrame::Group {
                qid: "q1".into(),
                op: crate::GroupOp::Create {
                    name: "Team".into(),
                    members: vec!["bob".into()],
                },
            }
        );
        let mine = Encoding::Json
            .decode_client(br#"{"type":"group","qid":"q2","op":"mine"}"#, true)
            .unwrap();
        assert_eq!(
            mine,
            ClientFrame::Group {
                qid: "q2".into(),
                op: crate::GroupOp::Mine {
                    after: None,
                    limit: None
                },
            }
        );
        let next = Encoding::Json
            .decode_client(
                br#"{"type":"group","qid":"q3","op":"mine","after":"G1","limit":2}"#,
                true,
            )
            .unwrap();
        assert_eq!(
            next,
            ClientFrame::Group {
                qid: "q3".into(),
                op: crate::GroupOp::Mine {
                    after: Some("G1".into()),
                    limit: Some(2)
                },
            }
        );
        let send = Encoding::Json
            .decode_client(
                br#"{"type":"send","group":"team","cid":"c1","body":"hi"}"#,
                true,
            )
            .unwrap();
        assert!(matches!(send, ClientFrame::Send { ref to, group: Some(_), .. } if to.is_empty()));
        for f in [create, mine, next, send] {
            let Encoded::Binary(b) = Encoding::MsgPack.encode_client(&f) else {
                panic!()
            };
            assert_eq!(Encoding::MsgPack.decode_client(&b, false).unwrap(), f);
        }
    }

    #[test]
    fn decode_errors_are_classified() {
        let j = Encoding::Json;
        assert_eq!(
            j.decode_client(b"{not json", true),
            Err(DecodeError::Malformed("JSON"))
        );
        assert_eq!(
            j.decode_client(br#"{"type":"teleport"}"#, true),
            Err(DecodeError::UnknownType("teleport".into()))
        );
        assert_eq!(
            j.decode_client(br#"{"type":"send","to":"bob"}"#, true),
            Err(DecodeError::Malformed("JSON"))
        );
        assert!(matches!(
            j.decode_client(b"\x80", false),
            Err(DecodeError::WrongFrameKind(..))
        ));
    }

    #[test]
    fn msgpack_round_trips_every_server_frame_shape() {
        let m = ServerFrame::Message(crate::frames::Message {
            attachment: None,
            reacted: Vec::new(),
            reactions: Vec::new(),
            change: None,
            deleted: false,
            edited: None,
            id: "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap(),
            conversation: "dm:alice:bob".parse().unwrap(),
            from: UserId::new("alice").unwrap(),
            to: UserId::new("bob").unwrap(),
            cid: ClientMsgId::new("c1").unwrap(),
            body: "hé".into(),
            ts: 1,
            cursor: Some("17-5".parse().unwrap()),
            event: None,
            state: None,
            reply: None,
        });
        for f in [
            m,
            ServerFrame::Synced {
                cursor: "17-9".parse().unwrap(),
                recovered: false,
                gap: Some(crate::SyncGap::Trimmed),
                history: vec!["g:big".parse().unwrap()],
            },
            ServerFrame::Presence {
                user: UserId::new("bob").unwrap(),
                online: false,
                last_seen: Some(12),
            },
            ServerFrame::Pong { ts: Some(3) },
            ServerFrame::Pong { ts: None },
        ] {
            let Encoded::Binary(b) = Encoding::MsgPack.encode_server(&f) else {
                panic!()
            };
            assert_eq!(Encoding::MsgPack.decode_server(&b, false).unwrap(), f);
        }
        let ping = ClientFrame::Ping { ts: Some(9) };
        let Encoded::Binary(b) = Encoding::MsgPack.encode_client(&ping) else {
            panic!()
        };
        assert_eq!(Encoding::MsgPack.decode_client(&b, false).unwrap(), ping);
    }
}
