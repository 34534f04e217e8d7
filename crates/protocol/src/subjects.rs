//! Every NATS subject, stream, consumer and KV bucket natter uses. This is the only place that
//! formats a subject; `subjects.md` documents the same names, and a test keeps them in step.

use crate::ids::{ClientMsgId, ConnId, ConversationId, GatewayId, GroupId, UserId};

/// Request/reply: send a message (gateways and integrators → chat), one subject per sender:
/// `natter.chat.send.<user>` (see [`chat_send`]). The user is in the subject so that NATS
/// permissions, not a payload field, decide who may speak as whom.
pub const CHAT_SEND: &str = "natter.chat.send.*";
/// Publish: a delivered/seen receipt (gateways → chat).
pub const CHAT_RECEIPT: &str = "natter.chat.receipt";
/// Publish: a typing indicator (gateways → chat); never stored.
pub const CHAT_TYPING: &str = "natter.chat.typing";
/// Publish: a gateway could not deliver a message to a connection that is gone
/// (gateways → chat), which then corrects presence and treats the recipient as offline.
pub const CHAT_UNDELIVERED: &str = "natter.chat.undelivered";
/// Publish: a message reached a user none of whose devices is online (chat → the notifier
/// and any integrator sending pushes).
pub const USER_OFFLINE_MESSAGE: &str = "natter.user.offline_message";
/// Request/reply: group operations (gateways and integrators → chat), one subject per asking
/// user: `natter.chat.group.<user>` (see [`chat_group`]).
pub const CHAT_GROUP: &str = "natter.chat.group.*";
/// Publish: route a frame to every device of some users (history → chat), at most once.
pub const CHAT_NOTIFY: &str = "natter.chat.notify";
/// Queue group shared by all chat service instances.
pub const CHAT_QUEUE: &str = "natter-chat";

/// Request/reply: history queries (gateways and integrators → history service), one subject
/// per asking user: `natter.history.query.<user>` (see [`history_query`]).
pub const HISTORY_QUERY: &str = "natter.history.query.*";
/// Queue group shared by all history service instances.
pub const HISTORY_QUEUE: &str = "natter-history";
/// Durable consumers on the messages streams that write messages to the history store: one
/// per partition, `natter-history-writer-<k>` (see [`history_writer`]).
pub const HISTORY_CONSUMER: &str = "natter-history-writer";

/// The one stream of every accepted message in deployments before one stream per partition:
/// its presence means an upgrade is due (docs/operations.md, "Partitions"). Partition `k`'s
/// stream is [`messages_stream`]`(k)`.
pub const MESSAGES_STREAM: &str = "NATTER_MESSAGES";
/// Subjects captured by the messages streams together (each takes its partition's).
pub const MESSAGES_SUBJECTS: &str = "natter.msg.>";
/// The most partitions a deployment may have: `natter nats-auth` grants each service the
/// streams and durable consumers of this many, since NATS permissions cannot name a stream
/// or consumer by pattern.
pub const MAX_PARTITIONS: u32 = 64;
/// Stream metadata key recording the deployment's partition count on each messages stream:
/// every service checks it against its own `bus.partitions` before it starts.
pub const PARTITIONS_METADATA: &str = "natter.partitions";
/// KV bucket: one key per running instance of a partitioned role, `<role>.<instance>`,
/// refreshed while it runs; the instances of a role share the partitions among the live ones.
pub const INSTANCES_BUCKET: &str = "natter_instances";

/// `NATTER_MESSAGES_<k>`: the JetStream stream holding partition `k`'s messages (subjects
/// `natter.msg.<k>.>`), with its own leader, sequence and limits.
pub fn messages_stream(k: u32) -> String {
    format!("{MESSAGES_STREAM}_{k}")
}

/// `natter.msg.<k>.session`: session markers in partition `k`'s stream. A gateway that
/// registers a session appends one to every partition; they put the registration in order
/// with each partition's messages, so a router never routes a message written after a
/// registration without knowing the session.
pub fn session_markers(k: u32) -> String {
    format!("natter.msg.{k}.session")
}

/// Whether a messages stream subject is a session marker ([`session_markers`]).
pub fn is_session_marker(subject: &str) -> bool {
    subject.starts_with("natter.msg.") && subject.ends_with(".session") && {
        let tokens: Vec<&str> = subject.split('.').collect();
        tokens.len() == 4 && tokens[2].parse::<u32>().is_ok()
    }
}

/// Durable consumers on the messages streams that route messages to gateways: one per
/// partition, `natter-router-<k>` (see [`router`]).
pub const ROUTER_CONSUMER: &str = "natter-router";

/// Partition `k`'s router consumer (`natter-router-<k>`). `ROUTER_CONSUMER` alone is the one
/// consumer of deployments before routers were partitioned.
pub fn router(k: u32) -> String {
    format!("{ROUTER_CONSUMER}-{k}")
}

/// KV bucket: one key per connected session.
pub const SESSIONS_BUCKET: &str = "natter_sessions";
/// The JetStream stream behind [`SESSIONS_BUCKET`] (watched for its last revision).
pub const SESSIONS_STREAM: &str = "KV_natter_sessions";
/// KV bucket: one lease per live gateway.
pub const GATEWAYS_BUCKET: &str = "natter_gateways";
/// KV bucket: per user, online or not and when last seen (written by the presence role).
pub const PRESENCE_BUCKET: &str = "natter_presence";
/// KV bucket: groups, sharded like sessions: a group's record (`<k>.g.<group>`) and
/// memberships (`<k>.m.<group>.<user>`) under the group's partition `k`, and each user's list
/// of groups (`<j>.u.<user>.<group>`) under the user's shard `j`. Written by the chat
/// service's group operations; shard `k` is followed by the chat instance holding it.
pub const GROUPS_BUCKET: &str = "natter_groups";
/// The key in [`GROUPS_BUCKET`] saying the keys are sharded (value [`GROUPS_SHARDED`]):
/// written once the keys of before (`<group>`, `<group>.<user>`) are moved.
pub const GROUPS_LAYOUT_KEY: &str = "layout";
/// The value of [`GROUPS_LAYOUT_KEY`] once the bucket's keys are sharded.
pub const GROUPS_SHARDED: &str = "sharded";
/// The JetStream stream behind [`GROUPS_BUCKET`].
pub const GROUPS_STREAM: &str = "KV_natter_groups";
/// Durable consumer on [`SESSIONS_STREAM`] that turned every session change into user
/// presence, before sessions were sharded: chat deletes it (see [`presence_decider`]).
pub const PRESENCE_CONSUMER: &str = "natter-presence";

/// Shard `k`'s durable consumer on [`SESSIONS_STREAM`] (`natter-presence-<k>`): turns that
/// shard's session changes into user presence, on the chat instance that holds the shard.
pub fn presence_decider(k: u32) -> String {
    format!("{PRESENCE_CONSUMER}-{k}")
}

/// `natter.chat.sessions.<k>`: asks the chat instance holding session shard `k` for users'
/// live sessions (`payloads::SessionsQuery`, answered with `payloads::SessionsFound`).
pub fn sessions_query(k: u32) -> String {
    format!("natter.chat.sessions.{k}")
}

/// Every shard's [`sessions_query`] subject (for permissions).
pub const SESSIONS_QUERY_ALL: &str = "natter.chat.sessions.*";

/// `natter.chat.groups.<k>`: asks the chat instance holding shard `k` about the groups of
/// partition `k` and the group lists of shard `k`'s users (`payloads::GroupsQuery`,
/// answered with `payloads::GroupsAnswer`).
pub fn groups_query(k: u32) -> String {
    format!("natter.chat.groups.{k}")
}

/// Every shard's [`groups_query`] subject (for permissions).
pub const GROUPS_QUERY_ALL: &str = "natter.chat.groups.*";

/// JetStream stream making [`USER_OFFLINE_MESSAGE`] durable for the notifier.
pub const OFFLINE_STREAM: &str = "NATTER_OFFLINE";
/// Durable consumer on [`OFFLINE_STREAM`] that batches offline messages into digests.
pub const NOTIFIER_CONSUMER: &str = "natter-notifier";
/// KV bucket: devices' push tokens, `<user>.<token hash>` (written by gateways, read by the
/// notifier).
pub const PUSH_TOKENS_BUCKET: &str = "natter_push_tokens";
/// JetStream object store: attachments, one object per upload, named by its id (written by
/// gateways, read by gateways and the chat service, removed by the chat service).
pub const ATTACHMENTS_BUCKET: &str = "natter_attachments";
/// The stream behind [`ATTACHMENTS_BUCKET`].
pub const ATTACHMENTS_STREAM: &str = "OBJ_natter_attachments";

/// `$O.natter_attachments.C.<nuid>`: the chunks of one object (its `nuid`), in order.
pub fn attachment_chunks(nuid: &str) -> String {
    format!("$O.{ATTACHMENTS_BUCKET}.C.{nuid}")
}

/// Metadata keys of an attachment object: who uploaded it, for which conversation, and the
/// file name and media type they gave.
pub const ATTACHMENT_OWNER: &str = "natter-owner";
pub const ATTACHMENT_CONVERSATION: &str = "natter-conversation";
pub const ATTACHMENT_NAME: &str = "natter-name";
pub const ATTACHMENT_CONTENT_TYPE: &str = "natter-content-type";
/// The start of an attachment object's description once a message carries it (followed by
/// that message's id). An upload without it is swept away after
/// `chat.unsent_attachment_ttl_secs`. (The description, not a metadata key: the object store
/// client updates only an object's name and description.)
pub const ATTACHMENT_SENT_IN: &str = "sent in ";
/// KV bucket: how many bytes of attachments each user has stored, `<user>` (gateways add,
/// the chat service subtracts when a message's attachment is deleted).
pub const ATTACHMENT_QUOTA_BUCKET: &str = "natter_attachment_quota";
/// Wildcard selecting every user's presence events (the notifier's subscription).
pub const PRESENCE_ALL: &str = "natter.presence.*";

/// Header carrying the de-duplication key on publishes to the messages streams.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// The partition of a conversation among `partitions`: FNV-1a (32 bits) of the
/// conversation's tokens after its kind (`<a><b>` for `dm:<a>:<b>`, `<group>` for
/// `g:<group>`), modulo `partitions`. It is the hash of NATS's own `partition(P, …)` subject
/// mapping function, so an operator's mapping of `natter.msg.dm.*.*` by its two wildcards
/// agrees with it. Every message of a conversation, and every retry of one, lands in the
/// same partition, so order within a conversation and de-duplication hold.
pub fn partition(conversation: &ConversationId, partitions: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    let tokens = conversation.as_str().split(':').skip(1);
    for byte in tokens.flat_map(str::bytes) {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % partitions.max(1)
}

/// `natter.msg.<k>.dm.<a>.<b>` or `natter.msg.<k>.g.<group>`: a message of one conversation,
/// in the messages stream, under its [`partition`] `k`. The conversation id's `:` become
/// subject tokens, so one user's 1:1 messages can be selected with two wildcard filters (see
/// [`user_messages`]) and one partition's messages with one ([`partition_messages`]).
pub fn message(conversation: &ConversationId, partitions: u32) -> String {
    format!(
        "natter.msg.{}.{}",
        partition(conversation, partitions),
        conversation.as_str().replace(':', ".")
    )
}

/// `natter.msg.<k>.>`: every message (and session marker) of partition `k`: its stream's
/// subjects.
pub fn partition_messages(k: u32) -> String {
    format!("natter.msg.{k}.>")
}

/// The partition of a messages stream subject (`natter.msg.<k>.…`, a session marker
/// included); `None` for anything else.
pub fn partition_of_subject(subject: &str) -> Option<u32> {
    subject
        .strip_prefix("natter.msg.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// `natter-history-writer-<k>`: the history writer's durable consumer of partition `k`.
pub fn history_writer(k: u32) -> String {
    format!("{HISTORY_CONSUMER}-{k}")
}

/// The filters selecting every 1:1 message of `user` in the messages stream (as first or
/// second participant, in any partition): used to replay what a device missed.
pub fn user_messages(user: &UserId) -> [String; 2] {
    [
        format!("natter.msg.*.dm.{user}.*"),
        format!("natter.msg.*.dm.*.{user}"),
    ]
}

/// The filters selecting every 1:1 message of `user` in partition `k`'s stream (as first or
/// second participant): a replay's consumer of that partition.
pub fn user_messages_in(user: &UserId, k: u32) -> [String; 2] {
    [
        format!("natter.msg.{k}.dm.{user}.*"),
        format!("natter.msg.{k}.dm.*.{user}"),
    ]
}

/// `<role>.<instance>`: a running instance's key in [`INSTANCES_BUCKET`].
pub fn instance_key(role: &str, instance: &str) -> String {
    format!("{role}.{instance}")
}

/// `natter.chat.send.<user>`: `user` sends a message.
pub fn chat_send(user: &UserId) -> String {
    format!("natter.chat.send.{user}")
}

/// `natter.chat.group.<user>`: `user` asks for a group operation.
pub fn chat_group(user: &UserId) -> String {
    format!("natter.chat.group.{user}")
}

/// `natter.history.query.<user>`: `user` asks the history service.
pub fn history_query(user: &UserId) -> String {
    format!("natter.history.query.{user}")
}

/// The user a request subject speaks for: its last token (`natter.chat.send.<user>`,
/// `natter.chat.group.<user>`, `natter.history.query.<user>`). Services take the asking user
/// from here and refuse a payload that names someone else, because only the subject is
/// guarded by NATS permissions.
pub fn requesting_user(subject: &str) -> Option<UserId> {
    UserId::new(subject.rsplit('.').next()?).ok()
}

/// `natter.presence.<user>`: a user went online or offline (presence role → gateways and
/// integrators).
pub fn presence(user: &UserId) -> String {
    format!("natter.presence.{user}")
}

/// `natter.gw.<gateway>.>`: everything addressed to one gateway.
pub fn gateway_inbox(gateway: &GatewayId) -> String {
    format!("natter.gw.{gateway}.>")
}

/// `natter.gw.<gateway>.deliver`: frames for a list of that gateway's connections.
pub fn gateway_deliver(gateway: &GatewayId) -> String {
    format!("natter.gw.{gateway}.deliver")
}

/// `natter.gw.<gateway>.progress`: a partition router's progress note to that gateway
/// (`payloads::Progress`).
pub fn gateway_progress(gateway: &GatewayId) -> String {
    format!("natter.gw.{gateway}.progress")
}

/// The session shard of a user among `shards` (the deployment's partition count): FNV-1a of
/// the user id, like [`partition`]. A user's sessions are kept, and looked up, by the chat
/// instance holding that shard, so no instance holds every session.
pub fn user_shard(user: &UserId, shards: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in user.as_str().bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % shards.max(1)
}

/// `<shard>.<user>.<gateway>.<conn>`: a session's key in [`SESSIONS_BUCKET`], under its
/// user's [`user_shard`], so a shard's keys are one filter (`<shard>.>`).
pub fn session_key(user: &UserId, gateway: &GatewayId, conn: ConnId, shards: u32) -> String {
    let k = user_shard(user, shards);
    format!("{k}.{user}.{gateway}.{conn}")
}

/// The subject filter of session shard `k`'s keys on [`SESSIONS_STREAM`].
pub fn session_shard_filter(k: u32) -> String {
    format!("$KV.{SESSIONS_BUCKET}.{k}.>")
}

/// The shard of a group among `shards`: its conversation's partition, so the router of a
/// partition holds the groups it routes.
pub fn group_shard(group: &GroupId, shards: u32) -> u32 {
    partition(&ConversationId::group(group), shards)
}

/// `<k>.g.<group>`: a group's record key in [`GROUPS_BUCKET`], under its [`group_shard`].
pub fn group_key(group: &GroupId, shards: u32) -> String {
    format!("{}.g.{group}", group_shard(group, shards))
}

/// `<k>.m.<group>.<user>`: a membership key in [`GROUPS_BUCKET`], under the group's shard.
pub fn member_key(group: &GroupId, user: &UserId, shards: u32) -> String {
    format!("{}.m.{group}.{user}", group_shard(group, shards))
}

/// `<j>.u.<user>.<group>`: an entry of `user`'s list of groups in [`GROUPS_BUCKET`], under
/// the user's [`user_shard`].
pub fn user_group_key(user: &UserId, group: &GroupId, shards: u32) -> String {
    format!("{}.u.{user}.{group}", user_shard(user, shards))
}

/// `<gateway>`: a gateway's lease key in [`GATEWAYS_BUCKET`].
pub fn lease_key(gateway: &GatewayId) -> String {
    gateway.to_string()
}

/// `<user>.<hash>`: a push token's key in [`PUSH_TOKENS_BUCKET`]; the hash is the first 128
/// bits of the token's SHA-256 in hex, so the same token registered twice is one key and
/// the token itself never appears in a key or subject.
pub fn push_token_key(user: &UserId, token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{user}.{hex}")
}

/// `<user>.*`: the keys of every push token of `user` in [`PUSH_TOKENS_BUCKET`].
pub fn push_tokens_of(user: &UserId) -> String {
    format!("{user}.*")
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
        "natter.chat.send.<user>".into(),
        CHAT_RECEIPT.into(),
        CHAT_TYPING.into(),
        CHAT_QUEUE.into(),
        "natter.history.query.<user>".into(),
        HISTORY_QUEUE.into(),
        MESSAGES_STREAM.into(),
        "NATTER_MESSAGES_<k>".into(),
        MESSAGES_SUBJECTS.into(),
        "natter.msg.<k>.session".into(),
        "natter-router-<k>".into(),
        SESSIONS_BUCKET.into(),
        SESSIONS_STREAM.into(),
        GATEWAYS_BUCKET.into(),
        MSG_ID_HEADER.into(),
        "natter.msg.<k>.dm.<a>.<b>".into(),
        "natter.msg.<k>.g.<group>".into(),
        "natter.msg.*.dm.<user>.*".into(),
        "natter.msg.*.dm.*.<user>".into(),
        "natter.msg.<k>.dm.<user>.*".into(),
        "natter.msg.<k>.dm.*.<user>".into(),
        "natter.msg.<k>.>".into(),
        "natter-history-writer-<k>".into(),
        PARTITIONS_METADATA.into(),
        INSTANCES_BUCKET.into(),
        "<role>.<instance>".into(),
        CHAT_UNDELIVERED.into(),
        "natter.chat.group.<user>".into(),
        CHAT_NOTIFY.into(),
        GROUPS_BUCKET.into(),
        GROUPS_STREAM.into(),
        "<k>.m.<group>.<user>".into(),
        "<j>.u.<user>.<group>".into(),
        "natter.chat.groups.<k>".into(),
        USER_OFFLINE_MESSAGE.into(),
        PRESENCE_BUCKET.into(),
        PRESENCE_CONSUMER.into(),
        "natter.presence.<user>".into(),
        gateway_inbox(&gw).replace("GW", "<gateway>"),
        gateway_deliver(&gw).replace("GW", "<gateway>"),
        gateway_progress(&gw).replace("GW", "<gateway>"),
        "<shard>.<user>.<gateway>.<conn>".into(),
        "natter-presence-<k>".into(),
        "natter.chat.sessions.<k>".into(),
        "<from>:<cid>".into(),
        OFFLINE_STREAM.into(),
        NOTIFIER_CONSUMER.into(),
        PUSH_TOKENS_BUCKET.into(),
        ATTACHMENTS_BUCKET.into(),
        ATTACHMENT_QUOTA_BUCKET.into(),
        PRESENCE_ALL.into(),
        "<user>.<hash>".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_match_the_catalogue_forms() {
        let (a, b) = (UserId::new("alice").unwrap(), UserId::new("bob").unwrap());
        let gw = GatewayId::new("gw-1").unwrap();
        let dm = ConversationId::direct(&a, &b);
        assert_eq!(message(&dm, 1), "natter.msg.0.dm.alice.bob");
        let k = partition(&dm, 16);
        assert_eq!(message(&dm, 16), format!("natter.msg.{k}.dm.alice.bob"));
        assert_eq!(partition_of_subject(&message(&dm, 16)), Some(k));
        assert_eq!(partition_of_subject(&session_markers(5)), Some(5));
        assert_eq!(partition_of_subject("natter.chat.send.alice"), None);
        assert_eq!(messages_stream(7), "NATTER_MESSAGES_7");
        assert_eq!(session_markers(7), "natter.msg.7.session");
        assert!(is_session_marker(&session_markers(0)));
        assert!(!is_session_marker(&message(&dm, 16)));
        let session_group = ConversationId::group(&GroupId::new("session").unwrap());
        assert!(!is_session_marker(&message(&session_group, 4)));
        assert_eq!(partition_messages(3), "natter.msg.3.>");
        assert_eq!(history_writer(3), "natter-history-writer-3");
        assert_eq!(
            user_messages(&b),
            ["natter.msg.*.dm.bob.*", "natter.msg.*.dm.*.bob"]
        );
        assert_eq!(presence(&a), "natter.presence.alice");
        assert_eq!(chat_send(&a), "natter.chat.send.alice");
        assert_eq!(chat_group(&a), "natter.chat.group.alice");
        assert_eq!(history_query(&a), "natter.history.query.alice");
        for subject in [chat_send(&a), chat_group(&a), history_query(&a)] {
            assert_eq!(requesting_user(&subject), Some(a.clone()));
        }
        assert_eq!(requesting_user("natter.chat.send.*"), None);
        assert_eq!(requesting_user("natter.chat.send.a b"), None);
        assert_eq!(gateway_deliver(&gw), "natter.gw.gw-1.deliver");
        assert_eq!(gateway_progress(&gw), "natter.gw.gw-1.progress");
        assert_eq!(gateway_inbox(&gw), "natter.gw.gw-1.>");
        assert_eq!(dedup_id(&a, &ClientMsgId::new("c1").unwrap()), "alice:c1");
        let key = push_token_key(&b, "token-1");
        assert_eq!(key.len(), "bob.".len() + 32);
        assert!(key.starts_with("bob."));
        assert_eq!(key, push_token_key(&b, "token-1"));
        assert_ne!(key, push_token_key(&b, "token-2"));
        assert_eq!(push_tokens_of(&b), "bob.*");
    }

    #[test]
    fn partitions_follow_nats_fnv1a_and_spread_conversations() {
        // FNV-1a 32 of "alicebob", as NATS's partition() computes it over the two tokens.
        let dm =
            ConversationId::direct(&UserId::new("alice").unwrap(), &UserId::new("bob").unwrap());
        let mut h: u32 = 0x811c9dc5;
        for b in b"alicebob" {
            h = (h ^ u32::from(*b)).wrapping_mul(16777619);
        }
        assert_eq!(partition(&dm, 7), h % 7);
        assert_eq!(partition(&dm, 1), 0);
        assert_eq!(partition(&dm, 0), 0, "no partitions means one");
        // Independent ids (FNV-1a's lowest bit is the parity of the bytes' lowest bits, so
        // pairs made of the same digits twice would all share one parity).
        let mut counts = [0u32; 8];
        for i in 0..8000u64 {
            let c = ConversationId::direct(
                &UserId::new(format!("u{i}")).unwrap(),
                &UserId::new(format!("v{}", i.wrapping_mul(2_654_435_761) % 1_000_003)).unwrap(),
            );
            counts[partition(&c, 8) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&n| (800..1200).contains(&n)),
            "{counts:?}"
        );
    }
}
