//! The ScyllaDB store, through the `scylla` driver: prepared statements (so requests are
//! routed token-aware to a replica of their partition), paged reads of whole partitions,
//! configurable consistency, and the versioned migrations in `schema/`.
//! Runs unchanged against Apache Cassandra 5, which the tests use.

use std::sync::Arc;

use futures::{FutureExt, StreamExt, TryStreamExt};
use protocol::frames::{ConversationSummary, Message};
use protocol::{ClientMsgId, ConversationId, GroupId, MessageId, UserId};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;
use serde::{Deserialize, Serialize};

use super::{Page, Role, Store, StoreError, UNREAD_CAP, bucket_of, preview};

/// The migrations, in order: (version, name, CQL with `{keyspace}` and `{replication}`).
pub const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "001_init",
    include_str!("../../../../schema/001_init.cql"),
)];

/// Where and how to reach the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ScyllaConfig {
    /// Contact points, comma separated (`host:port`).
    pub uri: String,
    pub keyspace: String,
    /// The keyspace's replication, as CQL. Use NetworkTopologyStrategy in production.
    pub replication: String,
    /// `local_quorum` (default, for clusters), `quorum`, or `one` (a single node).
    pub consistency: String,
    /// Prefer replicas in this datacenter.
    pub local_dc: Option<String>,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        Self {
            uri: "127.0.0.1:9042".into(),
            keyspace: "natter".into(),
            replication: "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}".into(),
            consistency: "local_quorum".into(),
            local_dc: None,
        }
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

struct Statements {
    insert_message: PreparedStatement,
    insert_group_message: PreparedStatement,
    insert_bucket: PreparedStatement,
    upsert_conversation: PreparedStatement,
    latest: PreparedStatement,
    before: PreparedStatement,
    after: PreparedStatement,
    group_latest: PreparedStatement,
    group_before: PreparedStatement,
    group_after: PreparedStatement,
    buckets_desc: PreparedStatement,
    buckets_from: PreparedStatement,
    conversations: PreparedStatement,
    marker: PreparedStatement,
    set_marker: PreparedStatement,
    senders_after: PreparedStatement,
    group_senders_after: PreparedStatement,
    members: PreparedStatement,
    member: PreparedStatement,
    put_member: PreparedStatement,
}

/// The ScyllaDB (or Cassandra) store. Cloning shares the session.
#[derive(Clone)]
pub struct ScyllaStore {
    session: Arc<Session>,
    st: Arc<Statements>,
}

/// The CQL write timestamp (µs) of a message: its millisecond time, then its order within the
/// millisecond, so "newest wins" in `user_conversations` and `read_markers`.
fn write_ts(id: MessageId) -> i64 {
    let within_ms = (id.0.random() % 1000) as i64;
    id.timestamp_ms() as i64 * 1000 + within_ms
}

type MessageRow = (String, i64, String, Option<String>, String, String);

fn to_message(
    conversation: &ConversationId,
    group: Option<&GroupId>,
    row: MessageRow,
) -> Result<Message, StoreError> {
    let (id, ts, from, to, cid, body) = row;
    let to = match (to, group) {
        (Some(to), _) => to,
        (None, Some(g)) => g.to_string(),
        (None, None) => return Err(corrupt("message without recipient")),
    };
    Ok(Message {
        id: id.parse().map_err(corrupt)?,
        conversation: conversation.clone(),
        from: UserId::new(&from).map_err(corrupt)?,
        to: UserId::new(&to).map_err(corrupt)?,
        cid: ClientMsgId::new(&cid).map_err(corrupt)?,
        body,
        ts: ts as u64,
        cursor: None,
        event: None,
    })
}

impl ScyllaStore {
    /// Connects, applies the migrations and prepares every statement.
    pub async fn connect(config: &ScyllaConfig) -> Result<Self, StoreError> {
        let consistency = match config.consistency.to_ascii_lowercase().as_str() {
            "one" => Consistency::One,
            "quorum" => Consistency::Quorum,
            "local_quorum" => Consistency::LocalQuorum,
            other => return Err(err(format!("unknown consistency {other:?}"))),
        };
        let mut policy = DefaultPolicy::builder().token_aware(true);
        if let Some(dc) = &config.local_dc {
            policy = policy.prefer_datacenter(dc.clone());
        }
        let profile = ExecutionProfile::builder()
            .consistency(consistency)
            .load_balancing_policy(policy.build())
            .build();
        let session = SessionBuilder::new()
            .known_nodes(config.uri.split(',').map(str::trim))
            .default_execution_profile_handle(profile.into_handle())
            .build()
            .await
            .map_err(|e| err(format!("cannot connect to {}: {e}", config.uri)))?;
        migrate(&session, &config.keyspace, &config.replication).await?;
        let ks = &config.keyspace;
        let cols = "message_id, ts, from_user, to_user, cid, body";
        let gcols = "message_id, ts, from_user, cid, body";
        let prepare = |q: String| {
            let session = &session;
            async move { session.prepare(q).await.map_err(err) }
        };
        let st = Statements {
            insert_message: prepare(format!("INSERT INTO {ks}.messages_by_conversation (conversation_id, message_id, ts, from_user, to_user, cid, body) VALUES (?, ?, ?, ?, ?, ?, ?)")).await?,
            insert_group_message: prepare(format!("INSERT INTO {ks}.messages_by_group (group_id, bucket, message_id, ts, from_user, cid, body) VALUES (?, ?, ?, ?, ?, ?, ?)")).await?,
            insert_bucket: prepare(format!("INSERT INTO {ks}.group_buckets (group_id, bucket) VALUES (?, ?)")).await?,
            upsert_conversation: prepare(format!("INSERT INTO {ks}.user_conversations (user_id, conversation_id, last_id, last_ts, last_from, preview) VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?")).await?,
            latest: prepare(format!("SELECT {cols} FROM {ks}.messages_by_conversation WHERE conversation_id = ? LIMIT ?")).await?,
            before: prepare(format!("SELECT {cols} FROM {ks}.messages_by_conversation WHERE conversation_id = ? AND message_id < ? LIMIT ?")).await?,
            after: prepare(format!("SELECT {cols} FROM {ks}.messages_by_conversation WHERE conversation_id = ? AND message_id > ? ORDER BY message_id ASC LIMIT ?")).await?,
            group_latest: prepare(format!("SELECT {gcols} FROM {ks}.messages_by_group WHERE group_id = ? AND bucket = ? LIMIT ?")).await?,
            group_before: prepare(format!("SELECT {gcols} FROM {ks}.messages_by_group WHERE group_id = ? AND bucket = ? AND message_id < ? LIMIT ?")).await?,
            group_after: prepare(format!("SELECT {gcols} FROM {ks}.messages_by_group WHERE group_id = ? AND bucket = ? AND message_id > ? ORDER BY message_id ASC LIMIT ?")).await?,
            buckets_desc: prepare(format!("SELECT bucket FROM {ks}.group_buckets WHERE group_id = ? AND bucket <= ?")).await?,
            buckets_from: prepare(format!("SELECT bucket FROM {ks}.group_buckets WHERE group_id = ? AND bucket >= ? ORDER BY bucket ASC")).await?,
            conversations: prepare(format!("SELECT conversation_id, last_id, last_ts, last_from, preview FROM {ks}.user_conversations WHERE user_id = ?")).await?,
            marker: prepare(format!("SELECT up_to FROM {ks}.read_markers WHERE user_id = ? AND conversation_id = ?")).await?,
            set_marker: prepare(format!("INSERT INTO {ks}.read_markers (user_id, conversation_id, up_to) VALUES (?, ?, ?) USING TIMESTAMP ?")).await?,
            senders_after: prepare(format!("SELECT from_user FROM {ks}.messages_by_conversation WHERE conversation_id = ? AND message_id > ? LIMIT ?")).await?,
            group_senders_after: prepare(format!("SELECT from_user FROM {ks}.messages_by_group WHERE group_id = ? AND bucket = ? AND message_id > ? LIMIT ?")).await?,
            members: prepare(format!("SELECT user_id FROM {ks}.group_members WHERE group_id = ?")).await?,
            member: prepare(format!("SELECT role FROM {ks}.group_members WHERE group_id = ? AND user_id = ?")).await?,
            put_member: prepare(format!("INSERT INTO {ks}.group_members (group_id, user_id, role) VALUES (?, ?, ?)")).await?,
        };
        Ok(Self {
            session: Arc::new(session),
            st: Arc::new(st),
        })
    }

    /// Rows of a single-column query, all pages.
    async fn column<T>(
        &self,
        st: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Vec<T>, StoreError>
    where
        T: for<'f, 'm> scylla::deserialize::value::DeserializeValue<'f, 'm>,
    {
        let pager = self
            .session
            .execute_iter(st.clone(), values)
            .await
            .map_err(err)?;
        let rows: Vec<(T,)> = pager
            .rows_stream::<(T,)>()
            .map_err(err)?
            .try_collect()
            .await
            .map_err(err)?;
        Ok(rows.into_iter().map(|(t,)| t).collect())
    }

    /// Every row of one unpaged query (a bounded page), decoded as `R`.
    async fn typed_rows<R>(
        &self,
        st: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let result = self
            .session
            .execute_unpaged(st, values)
            .await
            .map_err(err)?;
        let rows = result.into_rows_result().map_err(err)?;
        rows.rows::<R>()
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(corrupt)
    }

    async fn rows(
        &self,
        st: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Vec<MessageRow>, StoreError> {
        self.typed_rows(st, values).await
    }

    /// Group rows have no recipient column: the group is the recipient.
    async fn group_rows(
        &self,
        st: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Vec<MessageRow>, StoreError> {
        let rows: Vec<(String, i64, String, String, String)> = self.typed_rows(st, values).await?;
        Ok(rows
            .into_iter()
            .map(|(id, ts, from, cid, body)| (id, ts, from, None, cid, body))
            .collect())
    }

    async fn members(&self, group: &GroupId) -> Result<Vec<String>, StoreError> {
        self.column::<String>(&self.st.members, (group.as_str(),))
            .await
    }

    async fn group_page(
        &self,
        conversation: &ConversationId,
        group: &GroupId,
        page: Page,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let g = group.as_str();
        let mut out = Vec::with_capacity(limit);
        let buckets: Vec<i64> = match page {
            Page::Latest => self.column(&self.st.buckets_desc, (g, i64::MAX)).await?,
            Page::Before(id) => {
                self.column(&self.st.buckets_desc, (g, bucket_of(id) as i64))
                    .await?
            }
            Page::After(id) => {
                self.column(&self.st.buckets_from, (g, bucket_of(id) as i64))
                    .await?
            }
        };
        for bucket in buckets {
            let left = (limit - out.len()) as i32;
            let rows = match page {
                Page::Latest => {
                    self.group_rows(&self.st.group_latest, (g, bucket, left))
                        .await?
                }
                Page::Before(id) => {
                    self.group_rows(&self.st.group_before, (g, bucket, id.to_string(), left))
                        .await?
                }
                Page::After(id) => {
                    self.group_rows(&self.st.group_after, (g, bucket, id.to_string(), left))
                        .await?
                }
            };
            for row in rows {
                out.push(to_message(conversation, Some(group), row)?);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    async fn unread(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> Result<u32, StoreError> {
        let marker: Option<String> = self
            .column::<String>(&self.st.marker, (user.as_str(), conversation.as_str()))
            .await?
            .into_iter()
            .next();
        let marker = marker.unwrap_or_default();
        let scan = (UNREAD_CAP * 4) as i32;
        let senders: Vec<String> = match conversation.group_id() {
            None => {
                self.column(
                    &self.st.senders_after,
                    (conversation.as_str(), marker.as_str(), scan),
                )
                .await?
            }
            Some(group) => {
                let from = marker.parse::<MessageId>().map(bucket_of).unwrap_or(0) as i64;
                let mut all = Vec::new();
                for bucket in self
                    .column::<i64>(&self.st.buckets_from, (group.as_str(), from))
                    .await?
                {
                    all.extend(
                        self.column::<String>(
                            &self.st.group_senders_after,
                            (group.as_str(), bucket, marker.as_str(), scan),
                        )
                        .await?,
                    );
                }
                all
            }
        };
        Ok(senders
            .iter()
            .filter(|f| f.as_str() != user.as_str())
            .count()
            .min(UNREAD_CAP as usize) as u32)
    }
}

/// Applies every migration, idempotently, and records it in `schema_migrations`.
pub async fn migrate(
    session: &Session,
    keyspace: &str,
    replication: &str,
) -> Result<(), StoreError> {
    for (version, name, text) in MIGRATIONS {
        let text = text
            .replace("{keyspace}", keyspace)
            .replace("{replication}", replication);
        let without_comments: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        for statement in without_comments
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            session
                .query_unpaged(statement, &[])
                .await
                .map_err(|e| err(format!("migration {name}: {e}")))?;
        }
        session.await_schema_agreement().await.map_err(err)?;
        session
            .query_unpaged(
                format!("INSERT INTO {keyspace}.schema_migrations (version, name, applied_at) VALUES (?, ?, toTimestamp(now()))"),
                (*version, *name),
            )
            .await
            .map_err(err)?;
    }
    Ok(())
}

impl Store for ScyllaStore {
    async fn append(&self, messages: &[Message]) -> Result<(), StoreError> {
        let mut writes = Vec::new();
        for m in messages {
            let id = m.id.to_string();
            let ts = m.ts as i64;
            let participants = match m.conversation.group_id() {
                Some(group) => {
                    let bucket = bucket_of(m.id) as i64;
                    writes.push(
                        self.session
                            .execute_unpaged(
                                &self.st.insert_group_message,
                                (
                                    group.as_str().to_string(),
                                    bucket,
                                    id.clone(),
                                    ts,
                                    m.from.to_string(),
                                    m.cid.to_string(),
                                    m.body.clone(),
                                ),
                            )
                            .boxed(),
                    );
                    writes.push(
                        self.session
                            .execute_unpaged(
                                &self.st.insert_bucket,
                                (group.as_str().to_string(), bucket),
                            )
                            .boxed(),
                    );
                    self.members(&group).await?
                }
                None => {
                    writes.push(
                        self.session
                            .execute_unpaged(
                                &self.st.insert_message,
                                (
                                    m.conversation.to_string(),
                                    id.clone(),
                                    ts,
                                    m.from.to_string(),
                                    m.to.to_string(),
                                    m.cid.to_string(),
                                    m.body.clone(),
                                ),
                            )
                            .boxed(),
                    );
                    vec![m.from.to_string(), m.to.to_string()]
                }
            };
            for user in participants {
                writes.push(
                    self.session
                        .execute_unpaged(
                            &self.st.upsert_conversation,
                            (
                                user,
                                m.conversation.to_string(),
                                id.clone(),
                                ts,
                                m.from.to_string(),
                                preview(&m.body),
                                write_ts(m.id),
                            ),
                        )
                        .boxed(),
                );
            }
        }
        // Concurrently, but bounded: each write goes to its own partition's replicas.
        futures::stream::iter(writes)
            .buffer_unordered(64)
            .try_collect::<Vec<_>>()
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn page(
        &self,
        conversation: &ConversationId,
        page: Page,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        if let Some(group) = conversation.group_id() {
            return self.group_page(conversation, &group, page, limit).await;
        }
        let c = conversation.as_str();
        let limit = limit as i32;
        let rows = match page {
            Page::Latest => self.rows(&self.st.latest, (c, limit)).await?,
            Page::Before(id) => {
                self.rows(&self.st.before, (c, id.to_string(), limit))
                    .await?
            }
            Page::After(id) => {
                self.rows(&self.st.after, (c, id.to_string(), limit))
                    .await?
            }
        };
        rows.into_iter()
            .map(|r| to_message(conversation, None, r))
            .collect()
    }

    async fn conversations(
        &self,
        user: &UserId,
        limit: usize,
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        let pager = self
            .session
            .execute_iter(self.st.conversations.clone(), (user.as_str(),))
            .await
            .map_err(err)?;
        let mut rows: Vec<(String, String, i64, String, String)> = pager
            .rows_stream()
            .map_err(err)?
            .try_collect()
            .await
            .map_err(err)?;
        rows.sort_by(|a, b| b.1.cmp(&a.1));
        rows.truncate(limit);
        let mut out = Vec::with_capacity(rows.len());
        for (conversation, last_id, last_ts, last_from, preview) in rows {
            let conversation: ConversationId = conversation.parse().map_err(corrupt)?;
            let unread = self.unread(user, &conversation).await?;
            out.push(ConversationSummary {
                conversation,
                last_id: last_id.parse().map_err(corrupt)?,
                last_ts: last_ts as u64,
                last_from: UserId::new(&last_from).map_err(corrupt)?,
                preview,
                unread,
            });
        }
        Ok(out)
    }

    async fn mark_read(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        up_to: MessageId,
    ) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(
                &self.st.set_marker,
                (
                    user.as_str(),
                    conversation.as_str(),
                    up_to.to_string(),
                    write_ts(up_to),
                ),
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn put_member(
        &self,
        group: &GroupId,
        user: &UserId,
        role: Role,
    ) -> Result<(), StoreError> {
        let role = match role {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        };
        self.session
            .execute_unpaged(&self.st.put_member, (group.as_str(), user.as_str(), role))
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn is_member(&self, group: &GroupId, user: &UserId) -> Result<bool, StoreError> {
        Ok(!self
            .column::<String>(&self.st.member, (group.as_str(), user.as_str()))
            .await?
            .is_empty())
    }
}
