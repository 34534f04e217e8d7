#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into fuzz/seeds/<target>/.

The seeds are the frames of docs/protocol.md and their near misses (bad ids, missing and
mistyped fields, odd encodings), so that each run starts from every frame shape instead of
finding them anew. MessagePack seeds are the same values encoded as rmp-serde's
`to_vec_named` does (maps with named fields), by the small encoder below. Files this script
does not name (crash inputs kept as regressions) are left alone. Run it again after
changing the lists; it needs nothing beyond Python.
"""

import hashlib
import json
import pathlib
import re
import struct

SEEDS = pathlib.Path(__file__).resolve().parent / "seeds"

GROUP = "01JGGVS2Q4M3TEAMS0000000AB"
MSG = "01JGGVSAKV7Y2XW9P4CQ8R6T3M"
DM = "dm:alice:bob"

# Client frames: name -> value (a JSON value, or raw text when a str).
CLIENT = {
    "send-to-user": {"type": "send", "to": "bob", "cid": "c-42", "body": "hi bob"},
    "send-to-group": {"type": "send", "group": GROUP, "cid": "c-43", "body": "hi team"},
    "send-unicode": {"type": "send", "to": "bob", "cid": "c1", "body": "h\u00e9 \U0001f600 \u0000\n"},
    "ack": {"type": "ack", "conversation": DM, "id": MSG},
    "read": {"type": "read", "conversation": DM, "up_to": MSG},
    "typing": {"type": "typing", "conversation": DM},
    "typing-group": {"type": "typing", "conversation": "g:" + GROUP},
    "history": {"type": "history", "qid": "q1", "conversation": DM, "limit": 50},
    "history-before": {"type": "history", "qid": "q2", "conversation": DM, "before": MSG},
    "history-after": {"type": "history", "qid": "q2", "conversation": DM, "after": MSG, "limit": 0},
    "conversations": {"type": "conversations", "qid": "q3"},
    "conversations-limit": {"type": "conversations", "qid": "q3", "limit": 4294967295},
    "sync": {"type": "sync", "cursor": "1735732000000-42"},
    "sync-new-device": {"type": "sync"},
    "presence": {"type": "presence", "users": ["bob", "carol"]},
    "group-create": {"type": "group", "qid": "q1", "op": "create", "name": "Team", "members": ["bob", "carol"]},
    "group-create-alone": {"type": "group", "qid": "q1", "op": "create", "name": "Team"},
    "group-rename": {"type": "group", "qid": "q1", "op": "rename", "group": GROUP, "name": "T"},
    "group-add": {"type": "group", "qid": "q2", "op": "add", "group": GROUP, "users": ["dave"], "role": "admin"},
    "group-remove": {"type": "group", "qid": "q2", "op": "remove", "group": GROUP, "users": ["dave"]},
    "group-leave": {"type": "group", "qid": "q2", "op": "leave", "group": GROUP},
    "group-set-role": {"type": "group", "qid": "q2", "op": "set_role", "group": GROUP, "member": "bob", "role": "member"},
    "group-info": {"type": "group", "qid": "q2", "op": "info", "group": GROUP},
    "group-mine": {"type": "group", "qid": "q2", "op": "mine"},
    "group-members": {"type": "group", "qid": "q3", "op": "members", "group": GROUP, "after": "bob", "limit": 100},
    "receipts": {"type": "receipts", "qid": "q9", "conversation": "g:" + GROUP, "id": MSG},
    "ping": {"type": "ping", "ts": 1735732830000},
    "ping-bare": {"type": "ping"},
    "push-token": {"type": "push_token", "qid": "p1", "platform": "fcm", "token": "dXNlci10b2tlbi0x"},
    "push-token-remove": {"type": "push_token", "qid": "p2", "platform": "fcm", "token": "t", "remove": True},
    # Near misses: each should be refused with a code, never a crash.
    "bad-unknown-type": {"type": "teleport", "to": "bob"},
    "bad-type-not-string": {"type": 7},
    "bad-no-type": {"to": "bob", "cid": "c1", "body": "hi"},
    "bad-missing-field": {"type": "send", "to": "bob"},
    "bad-mistyped-field": {"type": "ping", "ts": "soon"},
    "bad-negative": {"type": "history", "qid": "q1", "conversation": DM, "limit": -1},
    "bad-float": {"type": "conversations", "qid": "q1", "limit": 1.5},
    "bad-too-big": {"type": "ping", "ts": 18446744073709551616},
    "bad-null": {"type": "send", "to": None, "group": None, "cid": "c1", "body": "hi"},
    "bad-cid": {"type": "send", "to": "bob", "cid": "no spaces", "body": "hi"},
    "bad-to": {"type": "send", "to": "bob.*", "cid": "c1", "body": "hi"},
    "bad-to-and-group": {"type": "send", "to": "bob", "group": GROUP, "cid": "c1", "body": "hi"},
    "bad-conversation-unsorted": {"type": "ack", "conversation": "dm:bob:alice", "id": MSG},
    "bad-ulid-overflow": {"type": "read", "conversation": DM, "up_to": "8ZZZZZZZZZZZZZZZZZZZZZZZZZ"},
    "bad-before-and-after": {"type": "history", "qid": "q1", "conversation": DM, "before": MSG, "after": MSG},
    "bad-cursor": {"type": "sync", "cursor": "12"},
    "bad-presence-empty": {"type": "presence", "users": []},
    "bad-group-op": {"type": "group", "qid": "q1", "op": "explode", "group": GROUP},
    "bad-group-no-op": {"type": "group", "qid": "q1"},
    "bad-role": {"type": "group", "qid": "q2", "op": "set_role", "group": GROUP, "member": "bob", "role": "god"},
    "bad-platform": {"type": "push_token", "qid": "p3", "platform": "FCM", "token": "t"},
    "bad-token-control": {"type": "push_token", "qid": "p3", "platform": "fcm", "token": "a\u0001b"},
    "extra-fields": {"type": "typing", "conversation": DM, "x": {"y": [1, None, True, "z"]}},
    "nested-extra": {"type": "group", "qid": "q", "op": "mine", "x": [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]},
    "bad-not-object": ["send", "bob"],
    "bad-string": "\"send\"",
    "bad-empty": "",
    "bad-truncated": '{"type":"send","to":"bo',
    "bad-lone-surrogate": '{"type":"send","to":"bob","cid":"c1","body":"\\ud800"}',
    "dup-keys": '{"type":"ping","ts":1,"ts":2}',
    "dup-type": '{"type":"ping","type":"typing","conversation":"dm:alice:bob"}',
    "escaped-keys": '{"\\u0074ype":"typing","conv\\u0065rsation":"dm:alice:bob"}',
    "deep-json": '{"type":"ping","x":' + "[" * 130 + "]" * 130 + "}",
}

# Server frames, as a client library decodes them.
SERVER = {
    "welcome": {"type": "welcome", "user": "alice", "conn": "01JGGVSAG0A1B2C3D4E5F6G7H8", "heartbeat_timeout_ms": 60000, "max_body_bytes": 65536},
    "accepted": {"type": "accepted", "cid": "c-42"},
    "sent": {"type": "sent", "cid": "c-42", "id": MSG, "conversation": DM, "ts": 1735732800123},
    "message": {"type": "message", "id": MSG, "conversation": DM, "from": "alice", "to": "bob", "cid": "c-42", "body": "hi bob", "ts": 1735732800123, "cursor": "1735732000000-42"},
    "message-event": {"type": "message", "id": "01JGGVSB0000000000000000AA", "conversation": "g:" + GROUP, "from": "alice", "to": GROUP, "cid": "01JGGVSB0000000000000000AA", "body": "alice removed carol", "ts": 1735732800500, "cursor": "1735732000000-60", "event": {"action": "removed", "users": ["carol"]}},
    "message-event-created": {"type": "message", "id": MSG, "conversation": "g:" + GROUP, "from": "alice", "to": GROUP, "cid": "c1", "body": "", "ts": 1, "event": {"action": "created", "name": "Team", "members": ["bob"]}},
    "delivered": {"type": "delivered", "conversation": DM, "id": MSG, "by": "bob"},
    "seen": {"type": "seen", "conversation": DM, "up_to": MSG, "by": "bob"},
    "pong": {"type": "pong", "ts": 1735732830000},
    "pong-bare": {"type": "pong"},
    "typing": {"type": "typing", "conversation": DM, "by": "bob"},
    "history": {"type": "history", "qid": "q1", "conversation": DM, "messages": [{"id": MSG, "conversation": DM, "from": "alice", "to": "bob", "cid": "c-42", "body": "hi bob", "ts": 1735732800123}], "more": False},
    "synced": {"type": "synced", "cursor": "1735732000000-57", "recovered": True},
    "synced-gap": {"type": "synced", "cursor": "1735732000000-57", "recovered": False, "gap": "trimmed"},
    "synced-history": {"type": "synced", "cursor": "1735732000000-57", "recovered": True, "history": ["g:" + GROUP]},
    "presence": {"type": "presence", "user": "bob", "online": False, "last_seen": 1735732900000},
    "group": {"type": "group", "qid": "q1", "group": {"group": GROUP, "conversation": "g:" + GROUP, "name": "Team", "members": 3, "role": "owner", "large": False, "created_by": "alice", "created_ts": 1735732800000}},
    "groups": {"type": "groups", "qid": "q2", "groups": []},
    "group-members": {"type": "group_members", "qid": "q3", "group": GROUP, "members": [{"user": "alice", "role": "owner"}, {"user": "bob", "role": "member"}], "more": False},
    "receipts": {"type": "receipts", "qid": "q9", "conversation": "g:" + GROUP, "id": MSG, "recipients": 499, "delivered": 212, "seen": 40, "delivered_by": ["bob"], "seen_by": ["bob"]},
    "conversations": {"type": "conversations", "qid": "q3", "conversations": [{"conversation": DM, "last_id": MSG, "last_ts": 1735732800123, "last_from": "alice", "preview": "hi bob", "unread": 1}]},
    "error": {"type": "error", "code": 1003, "reason": "body exceeds 65536 bytes", "cid": "c-42"},
    "error-rate-limited": {"type": "error", "code": 1501, "reason": "slow down", "cid": "c-42", "retry_after_ms": 250},
    "push-token": {"type": "push_token", "qid": "p1", "registered": True},
    "bad-error-code": {"type": "error", "code": 999, "reason": "?"},
    "bad-conversation": {"type": "typing", "conversation": "dm:bob:alice", "by": "bob"},
    "bad-unknown-type": {"type": "hello"},
}

CURSORS = [
    "1735732000000-42", "0-0", "18446744073709551615-18446744073709551615",
    "18446744073709551616-1", "007-1", "00000000000000000001-1", "000000000000000000001-1",
    "1-2-3", "-", "1-", "-1", "+1-2", " 1-2", "1-2\n", "\uff11-2", "a-1", "",
]

IDS = [
    "alice", "Alice_2", "a-b", "x" * 64, "x" * 65, "bob.*", "bob.", "*", ">", "a b", "a\tb",
    "\u00e9", "a:b", "", "dm:alice:bob", "dm:bob:alice", "dm:alice:alice", "dm:alice",
    "dm:a:b:c", "dm:a.b:c", "g:team-1", "g:" + GROUP, "g:", "g:x.y", "x:y",
    "01ARZ3NDEKTSV4RRFFQ69G5FAV", "01arz3ndektsv4rrffq69g5fav", "7ZZZZZZZZZZZZZZZZZZZZZZZZZ",
    "8ZZZZZZZZZZZZZZZZZZZZZZZZZ", "01ARZ3NDEKTSV4RRFFQ69G5FAI", "01ARZ3NDEKTSV4RRFFQ69G5FA",
    "alice|bob", "bob|alice", "alice|bob.*",
]


def msgpack(v):
    """Encodes a JSON value as MessagePack, in the smallest forms (as rmp does)."""
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 0x80:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack(">b", v)
        for lo, hi, tag, fmt in [
            (0, 0xFF, 0xCC, ">B"), (0, 0xFFFF, 0xCD, ">H"), (0, 0xFFFFFFFF, 0xCE, ">I"),
            (0, 2**64 - 1, 0xCF, ">Q"), (-(2**7), -1, 0xD0, ">b"), (-(2**15), -1, 0xD1, ">h"),
            (-(2**31), -1, 0xD2, ">i"), (-(2**63), -1, 0xD3, ">q"),
        ]:
            if lo <= v <= hi:
                return bytes([tag]) + struct.pack(fmt, v)
        return msgpack(float(v))  # beyond 64 bits: as a float, like JSON's reading
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode("utf-8", "surrogatepass")
        n = len(b)
        head = bytes([0xA0 | n]) if n < 32 else b"\xd9" + bytes([n]) if n < 256 else b"\xda" + struct.pack(">H", n)
        return head + b
    if isinstance(v, list):
        n = len(v)
        head = bytes([0x90 | n]) if n < 16 else b"\xdc" + struct.pack(">H", n)
        return head + b"".join(msgpack(x) for x in v)
    if isinstance(v, dict):
        n = len(v)
        head = bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)
        return head + b"".join(msgpack(k) + msgpack(x) for k, x in v.items())
    raise TypeError(v)


def text(v):
    return v.encode() if isinstance(v, str) else json.dumps(v, separators=(",", ":")).encode()


def text_name(t):
    """A file name that shows the text, kept unique by a hash of it."""
    slug = re.sub(r"[^A-Za-z0-9_-]", "_", t)[:40]
    return "text-" + slug + "-" + hashlib.sha1(t.encode()).hexdigest()[:6]


def write(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def ping_map(extra_key, extra):
    return b"\x82" + msgpack("type") + msgpack("ping") + msgpack(extra_key) + extra


def main():
    for name, v in CLIENT.items():
        write("client_frame_json", name + ".json", text(v))
        if not isinstance(v, str):
            write("client_frame_msgpack", name + ".mp", msgpack(v))
    # MessagePack's own odd corners: strings as bin or ext, a map key that is not a string,
    # a length larger than the frame, nesting past rmp-serde's depth limit, an array frame.
    raw = {
        "bin-string": b"\x84" + msgpack("type") + b"\xc4\x04send" + msgpack("to") + msgpack("bob")
        + msgpack("cid") + msgpack("c1") + msgpack("body") + b"\xc4\x02hi",
        "ext-value": ping_map("ts", b"\xd4\x01\x07"),
        "int-key": b"\x82" + msgpack("type") + msgpack("ping") + b"\x01\x02",
        "long-length": b"\x81" + msgpack("type") + b"\xdb\xff\xff\xff\xffping",
        "huge-array": ping_map("x", b"\xdd\xff\xff\xff\xff"),
        "deep-nesting": ping_map("x", b"\x91" * 1100 + b"\x90"),
        "as-array": msgpack(["ping", 1]),
        "float-ts": ping_map("ts", b"\xcb" + struct.pack(">d", 1.0)),
        "negative-ts": ping_map("ts", b"\xff"),
        "u64-ts": ping_map("ts", b"\xcf" + b"\xff" * 8),
        "empty": b"",
        "nil": b"\xc0",
    }
    for name, data in raw.items():
        write("client_frame_msgpack", name + ".mp", data)
    for name, v in SERVER.items():
        write("server_frame", name + ".json", text(v))
        write("server_frame", name + ".mp", msgpack(v))
    for t in CURSORS:
        write("cursor", text_name(t), t.encode())
    write("cursor", "numbers-max", b"\xff" * 16)
    write("cursor", "numbers-small", struct.pack("<QQ", 1735732000000, 42))
    for t in IDS:
        write("ids", text_name(t), t.encode())
    write("ids", "ulid-max", b"\xff" * 16)
    write("ids", "ulid-zero", b"\x00" * 16)


if __name__ == "__main__":
    main()
