//! Who may do what on NATS: one identity per role, each allowed exactly the subjects
//! `subjects.md` gives it, and nothing else. nats-server enforces these lists; a service that
//! needs a subject it was not given fails (its tests count the server's permission
//! violations, see `crate::bus::permission_violations`).
//!
//! JetStream is reached through subjects too (`$JS.API.<operation>.<stream>…`, acks on
//! `$JS.ACK.<stream>.<consumer>…`, KV writes on `$KV.<bucket>.<key>`), so the same lists decide
//! which streams, consumers and buckets a role may touch. Only the operator may delete a
//! stream or purge one; only chat may change the messages stream's settings.

use protocol::{UserId, subjects as s};

/// A service's (or a person's) identity on NATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// WebSocket gateways: speak for any user (they authenticate users themselves).
    Gateway,
    /// The chat service: ingest, routing, presence and groups.
    Chat,
    /// The history service: the store writer and queries.
    History,
    /// The notifier: offline digests.
    Notifier,
    /// People operating natter: everything (`natter check`, the `nats` command line).
    Operator,
}

impl Role {
    /// The roles of natter's own services and its operator, in the order of generated files.
    pub const ALL: [Role; 5] = [
        Role::Gateway,
        Role::Chat,
        Role::History,
        Role::Notifier,
        Role::Operator,
    ];

    /// The role's name: its seed file is `<name>.nk`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Chat => "chat",
            Role::History => "history",
            Role::Notifier => "notifier",
            Role::Operator => "operator",
        }
    }

    /// Where the role's request replies arrive: `_INBOX.<name>.<nuid>`. Each role reads only
    /// its own inbox, so one role cannot read the answers another role was given.
    pub fn inbox_prefix(self) -> String {
        format!("_INBOX.{}", self.name())
    }

    /// The subjects this role may publish to and subscribe to.
    pub fn permissions(self) -> Permissions {
        let mut p = Permissions::service(&self.inbox_prefix());
        match self {
            Role::Gateway => {
                p.publish([
                    "natter.chat.send.*",
                    "natter.chat.group.*",
                    "natter.history.query.*",
                    s::CHAT_RECEIPT,
                    s::CHAT_TYPING,
                    s::CHAT_UNDELIVERED,
                    "natter.msg.*.session",
                ]);
                p.subscribe(["natter.gw.*.>", s::PRESENCE_ALL]);
                p.look_for_the_old_messages_stream();
                // Permissions cannot name a stream by pattern: every partition's.
                for k in 0..s::MAX_PARTITIONS {
                    let stream = s::messages_stream(k);
                    p.ensure_stream(&stream);
                    p.read_with_consumers(&stream);
                    p.read_direct(&stream);
                }
                for bucket in [
                    s::SESSIONS_BUCKET,
                    s::GATEWAYS_BUCKET,
                    s::PUSH_TOKENS_BUCKET,
                ] {
                    p.ensure_bucket(bucket);
                    p.write_bucket(bucket);
                }
                p.ensure_bucket(s::PRESENCE_BUCKET);
                p.read_bucket(s::PRESENCE_BUCKET);
                // Uploads and downloads.
                p.ensure_bucket(s::ATTACHMENT_QUOTA_BUCKET);
                p.write_bucket(s::ATTACHMENT_QUOTA_BUCKET);
                p.read_bucket(s::ATTACHMENT_QUOTA_BUCKET);
                p.ensure_object_store(s::ATTACHMENTS_BUCKET);
                p.write_objects(s::ATTACHMENTS_BUCKET);
                p.read_objects(s::ATTACHMENTS_BUCKET);
            }
            Role::Chat => {
                p.allow_responses = true;
                p.publish([
                    "natter.msg.*.dm.>",
                    "natter.msg.*.g.>",
                    "natter.gw.*.deliver",
                    "natter.gw.*.progress",
                    s::USER_OFFLINE_MESSAGE,
                    "natter.presence.*",
                    "natter.history.query.*",
                    s::SESSIONS_QUERY_ALL,
                    s::GROUPS_QUERY_ALL,
                ]);
                p.subscribe([
                    s::SESSIONS_QUERY_ALL,
                    s::GROUPS_QUERY_ALL,
                    s::CHAT_SEND,
                    s::CHAT_GROUP,
                    s::CHAT_RECEIPT,
                    s::CHAT_TYPING,
                    s::CHAT_UNDELIVERED,
                    s::CHAT_NOTIFY,
                ]);
                p.own_stream(s::OFFLINE_STREAM);
                p.look_for_the_old_messages_stream();
                // Permissions cannot name a stream or consumer by pattern: every partition's
                // stream and router.
                for k in 0..s::MAX_PARTITIONS {
                    let stream = s::messages_stream(k);
                    p.own_stream(&stream);
                    p.move_leader(&stream);
                    p.consume_durable(&stream, &s::router(k));
                    p.read_direct(&stream);
                    // A router's catch-up after a hand-over reads a dropped pull's messages
                    // through a short-lived consumer.
                    p.read_with_consumers(&stream);
                }
                for k in 0..s::MAX_PARTITIONS {
                    p.consume_durable(s::SESSIONS_STREAM, &s::presence_decider(k));
                }
                // The one presence consumer of before sessions were sharded, to delete it.
                p.consume_durable(s::SESSIONS_STREAM, s::PRESENCE_CONSUMER);
                p.publish([format!(
                    "$JS.API.CONSUMER.DELETE.{}.{}",
                    s::SESSIONS_STREAM,
                    s::PRESENCE_CONSUMER
                )]);
                p.read_direct(s::SESSIONS_STREAM);
                for bucket in [
                    s::GROUPS_BUCKET,
                    s::SESSIONS_BUCKET,
                    s::GATEWAYS_BUCKET,
                    s::PRESENCE_BUCKET,
                    s::INSTANCES_BUCKET,
                    s::ATTACHMENT_QUOTA_BUCKET,
                ] {
                    p.ensure_bucket(bucket);
                    p.write_bucket(bucket);
                    p.read_bucket(bucket);
                }
                // Checks a sent attachment, and removes a deleted message's.
                p.ensure_object_store(s::ATTACHMENTS_BUCKET);
                p.write_objects(s::ATTACHMENTS_BUCKET);
                p.read_objects(s::ATTACHMENTS_BUCKET);
            }
            Role::History => {
                p.allow_responses = true;
                p.publish([s::CHAT_NOTIFY, s::GROUPS_QUERY_ALL]);
                p.subscribe([s::HISTORY_QUERY, s::CHAT_RECEIPT]);
                p.look_for_the_old_messages_stream();
                // Permissions cannot name a stream or consumer by pattern: every partition's
                // stream and writer.
                for k in 0..s::MAX_PARTITIONS {
                    let stream = s::messages_stream(k);
                    p.ensure_stream(&stream);
                    p.consume_durable(&stream, &s::history_writer(k));
                }
                p.ensure_bucket(s::GROUPS_BUCKET);
                p.read_bucket(s::GROUPS_BUCKET);
                p.ensure_bucket(s::INSTANCES_BUCKET);
                p.write_bucket(s::INSTANCES_BUCKET);
                p.read_bucket(s::INSTANCES_BUCKET);
            }
            Role::Notifier => {
                p.subscribe([s::PRESENCE_ALL]);
                p.ensure_stream(s::OFFLINE_STREAM);
                p.consume_durable(s::OFFLINE_STREAM, s::NOTIFIER_CONSUMER);
                for bucket in [s::PRESENCE_BUCKET, s::PUSH_TOKENS_BUCKET] {
                    p.ensure_bucket(bucket);
                    p.read_bucket(bucket);
                }
            }
            Role::Operator => {
                p.allow_responses = true;
                p.publish([">"]);
                p.subscribe([">"]);
            }
        }
        p
    }
}

/// A backend that sends as some users (bots, a help desk): it may send, run group operations
/// and query history as exactly those users, and read its own replies, nothing else. NATS
/// enforces it on the subject (`natter.chat.send.<user>` …); the services refuse a payload
/// that names another user than its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integrator {
    /// The integrator's name: its seed file is `integrator-<name>.nk`, its inbox
    /// `_INBOX.<name>`.
    pub name: String,
    /// The users it may act as.
    pub users: Vec<UserId>,
}

impl Integrator {
    pub fn inbox_prefix(&self) -> String {
        format!("_INBOX.{}", self.name)
    }

    pub fn permissions(&self) -> Permissions {
        let mut p = Permissions::service(&self.inbox_prefix());
        for user in &self.users {
            p.publish([
                s::chat_send(user),
                s::chat_group(user),
                s::history_query(user),
            ]);
        }
        p
    }
}

/// Allow-lists for publishing and subscribing; everything not listed is denied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// May answer requests it received (publish once to their reply subjects).
    pub allow_responses: bool,
}

impl Permissions {
    /// What every identity needs: its own inbox, the no-responders round trip that proves a
    /// subscription is live on the server (`bus::round_trip`), and the account's limits.
    fn service(inbox_prefix: &str) -> Self {
        Self {
            // `$JS.API.INFO` (the account's JetStream limits) is read before a bucket is made.
            publish: vec!["_NATTER.sync.>".into(), "$JS.API.INFO".into()],
            subscribe: vec![format!("{inbox_prefix}.>")],
            allow_responses: false,
        }
    }

    fn publish<S: Into<String>>(&mut self, subjects: impl IntoIterator<Item = S>) {
        self.publish.extend(subjects.into_iter().map(Into::into));
    }

    fn subscribe<S: Into<String>>(&mut self, subjects: impl IntoIterator<Item = S>) {
        self.subscribe.extend(subjects.into_iter().map(Into::into));
    }

    /// Create the stream if it is missing, and read its state; never change it.
    fn ensure_stream(&mut self, stream: &str) {
        self.publish([
            format!("$JS.API.STREAM.INFO.{stream}"),
            format!("$JS.API.STREAM.CREATE.{stream}"),
        ]);
    }

    /// See whether the single messages stream of before one stream per partition is still
    /// there (services refuse to start next to it).
    fn look_for_the_old_messages_stream(&mut self) {
        self.publish([format!("$JS.API.STREAM.INFO.{}", s::MESSAGES_STREAM)]);
    }

    /// Ask the stream's leader to step down in favour of another server (to spread leaders).
    fn move_leader(&mut self, stream: &str) {
        self.publish([format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}")]);
    }

    /// Create the stream or update its settings.
    fn own_stream(&mut self, stream: &str) {
        self.ensure_stream(stream);
        self.publish([format!("$JS.API.STREAM.UPDATE.{stream}")]);
    }

    /// Create, read from, acknowledge and delete consumers on the stream (durable or not),
    /// and answer its flow control: for KV watches and the gateway replays that read with
    /// consumers, which are ephemeral. (Names are not prefixed by token, so this cannot be
    /// narrowed to one's own consumers.)
    fn read_with_consumers(&mut self, stream: &str) {
        self.publish([
            format!("$JS.API.STREAM.INFO.{stream}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
            format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>"),
            format!("$JS.API.CONSUMER.INFO.{stream}.>"),
            format!("$JS.API.CONSUMER.DELETE.{stream}.>"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.>"),
            format!("$JS.API.CONSUMER.UNPIN.{stream}.>"),
            format!("$JS.ACK.{stream}.>"),
            format!("$JS.FC.{stream}.>"),
        ]);
    }

    /// Create, read, acknowledge and release (unpin) one durable consumer of the stream, and
    /// no other: a service cannot take or delete another service's consumer.
    fn consume_durable(&mut self, stream: &str, durable: &str) {
        self.publish([
            format!("$JS.API.STREAM.INFO.{stream}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.{durable}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.{durable}.>"),
            format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}"),
            format!("$JS.API.CONSUMER.INFO.{stream}.{durable}"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"),
            format!("$JS.API.CONSUMER.UNPIN.{stream}.{durable}"),
            format!("$JS.ACK.{stream}.{durable}.>"),
        ]);
    }

    /// Read single messages (direct get, and the stream's message get).
    fn read_direct(&mut self, stream: &str) {
        self.publish([
            format!("$JS.API.DIRECT.GET.{stream}"),
            format!("$JS.API.DIRECT.GET.{stream}.>"),
            format!("$JS.API.STREAM.MSG.GET.{stream}"),
        ]);
    }

    /// Create the bucket if it is missing.
    fn ensure_bucket(&mut self, bucket: &str) {
        self.ensure_stream(&format!("KV_{bucket}"));
    }

    /// Put, create, delete and purge keys.
    fn write_bucket(&mut self, bucket: &str) {
        self.publish([format!("$KV.{bucket}.>")]);
    }

    /// Get keys, list them and watch them.
    fn read_bucket(&mut self, bucket: &str) {
        let stream = format!("KV_{bucket}");
        self.read_direct(&stream);
        self.read_with_consumers(&stream);
    }

    /// Create the object store if it is missing.
    fn ensure_object_store(&mut self, bucket: &str) {
        self.ensure_stream(&format!("OBJ_{bucket}"));
    }

    /// Put and delete objects: their chunks and metadata, and the purge of an object's
    /// chunks (a delete, or a put over an existing name).
    fn write_objects(&mut self, bucket: &str) {
        self.publish([
            format!("$O.{bucket}.C.>"),
            format!("$O.{bucket}.M.>"),
            format!("$JS.API.STREAM.PURGE.OBJ_{bucket}"),
        ]);
    }

    /// Read objects' metadata and contents (an ordered consumer per read).
    fn read_objects(&mut self, bucket: &str) {
        let stream = format!("OBJ_{bucket}");
        self.read_direct(&stream);
        self.read_with_consumers(&stream);
    }

    /// Sorted, without repeats, as they are written into the server's configuration.
    pub fn normalised(mut self) -> Self {
        for list in [&mut self.publish, &mut self.subscribe] {
            list.sort();
            list.dedup();
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn may_publish(p: &Permissions, subject: &str) -> bool {
        p.publish.iter().any(|pattern| matches(pattern, subject))
    }

    /// NATS subject matching: `*` is one token, `>` the rest.
    fn matches(pattern: &str, subject: &str) -> bool {
        let (mut p, mut s) = (pattern.split('.'), subject.split('.'));
        loop {
            match (p.next(), s.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(a), Some(b)) if a == b => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    #[test]
    fn only_the_gateway_and_chat_touch_what_users_read() {
        let gateway = Role::Gateway.permissions();
        let history = Role::History.permissions();
        let notifier = Role::Notifier.permissions();
        // Nobody but chat stores messages or delivers frames to gateways.
        for p in [&gateway, &history, &notifier] {
            assert!(!may_publish(p, "natter.msg.0.dm.alice.bob"));
            assert!(!may_publish(p, "natter.gw.gw-1.deliver"));
            for stream in ["NATTER_MESSAGES_0", "NATTER_MESSAGES_63", "NATTER_MESSAGES"] {
                assert!(!may_publish(p, &format!("$JS.API.STREAM.UPDATE.{stream}")));
                assert!(!may_publish(p, &format!("$JS.API.STREAM.DELETE.{stream}")));
                assert!(!may_publish(p, &format!("$JS.API.STREAM.PURGE.{stream}")));
            }
        }
        // Gateways append session markers, and nothing else, to the messages streams.
        assert!(may_publish(&gateway, "natter.msg.5.session"));
        // A service touches its own durable consumer only, on its partition's stream.
        assert!(!may_publish(
            &history,
            "$JS.API.CONSUMER.DELETE.NATTER_MESSAGES_0.natter-router-0"
        ));
        assert!(!may_publish(
            &history,
            "$JS.API.CONSUMER.MSG.NEXT.NATTER_MESSAGES_0.natter-router-0"
        ));
        assert!(may_publish(
            &history,
            "$JS.API.CONSUMER.MSG.NEXT.NATTER_MESSAGES_0.natter-history-writer-0"
        ));
        assert!(may_publish(
            &history,
            "$JS.API.CONSUMER.MSG.NEXT.NATTER_MESSAGES_63.natter-history-writer-63"
        ));
        assert!(!may_publish(
            &history,
            "$JS.API.CONSUMER.MSG.NEXT.NATTER_MESSAGES_1.natter-history-writer-0"
        ));
        let chat = Role::Chat.permissions();
        assert!(may_publish(&chat, "natter.msg.0.dm.alice.bob"));
        assert!(may_publish(&chat, "natter.gw.gw-1.deliver"));
        assert!(may_publish(&chat, "natter.gw.gw-1.progress"));
        assert!(may_publish(
            &chat,
            "$JS.API.STREAM.LEADER.STEPDOWN.NATTER_MESSAGES_3"
        ));
        assert!(!may_publish(
            &chat,
            "$JS.API.STREAM.DELETE.NATTER_MESSAGES_0"
        ));
        assert!(may_publish(&gateway, "natter.chat.send.alice"));
        assert!(!may_publish(&history, "natter.chat.send.alice"));
    }

    #[test]
    fn an_integrator_speaks_only_for_its_users() {
        let bot = Integrator {
            name: "helpdesk".into(),
            users: vec![UserId::new("bot").unwrap()],
        };
        let p = bot.permissions();
        assert!(may_publish(&p, "natter.chat.send.bot"));
        assert!(may_publish(&p, "natter.chat.group.bot"));
        assert!(may_publish(&p, "natter.history.query.bot"));
        assert!(!may_publish(&p, "natter.chat.send.alice"));
        assert!(!may_publish(&p, "natter.msg.0.dm.alice.bot"));
        assert!(!may_publish(&p, "natter.gw.gw-1.deliver"));
        assert_eq!(p.subscribe, ["_INBOX.helpdesk.>"]);
    }

    #[test]
    fn subject_matching_follows_nats() {
        assert!(matches("a.*.c", "a.b.c"));
        assert!(!matches("a.*.c", "a.b.d"));
        assert!(matches("a.>", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(!matches("a.b", "a.b.c"));
    }
}
