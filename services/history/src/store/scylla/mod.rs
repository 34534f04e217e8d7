//! The ScyllaDB store, through the `scylla` driver: prepared statements (so requests are
//! routed token-aware to a replica of their partition), paged reads of whole partitions,
//! configurable consistency, and the versioned migrations in `schema/`.
//! Runs unchanged against Apache Cassandra 5, which the tests use.

mod groups;
mod migrate;
mod rows;
mod statements;

use std::sync::Arc;

use futures::{FutureExt, StreamExt, TryStreamExt};
use protocol::frames::{Change, ConversationSummary, Message};
use protocol::{ConversationId, GroupId, MessageId, UserId};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;
use serde::{Deserialize, Serialize};

pub use self::migrate::{MIGRATIONS, migrate};
use self::rows::{GroupRow, MessageRow, parse_id, to_group_message, to_message, to_summary};
use self::statements::Statements;
use super::{Page, ReceiptMarkers, Store, StoreError, bucket_of, newest_first, preview};

/// Unread counts computed at once when listing a user's conversations.
const UNREAD_COUNTS_IN_FLIGHT: usize = 8;

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

/// The ScyllaDB (or Cassandra) store. Cloning shares the session.
#[derive(Clone)]
pub struct ScyllaStore {
    session: Arc<Session>,
    st: Arc<Statements>,
}

/// The CQL write timestamp (µs) of a message: its millisecond time, then its order within the
/// millisecond, so "newest wins" in conversation lists and markers.
fn write_ts(id: MessageId) -> i64 {
    let within_ms = (id.0.random() % 1000) as i64;
    id.timestamp_ms() as i64 * 1000 + within_ms
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
        let st = Statements::prepare(&session, &config.keyspace).await?;
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
        T: for<'f, 'm> scylla::deserialize::value::DeserializeValue<'f, 'm> + 'static,
    {
        let rows: Vec<(T,)> = self.all_rows(st, values).await?;
        Ok(rows.into_iter().map(|(t,)| t).collect())
    }

    /// Every row of a query, all pages (a whole partition).
    async fn all_rows<R>(
        &self,
        st: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm> + 'static,
    {
        let pager = self
            .session
            .execute_iter(st.clone(), values)
            .await
            .map_err(err)?;
        pager
            .rows_stream::<R>()
            .map_err(err)?
            .try_collect()
            .await
            .map_err(err)
    }

    /// Every row of one unpaged query (a bounded page), decoded as `R`.
    async fn rows<R>(
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
}

impl Store for ScyllaStore {
    async fn append(&self, messages: &[Message]) -> Result<(), StoreError> {
        let mut writes = Vec::new();
        for m in messages.iter().filter(|m| m.change.is_none()) {
            let id = m.id.to_string();
            let ts = m.ts as i64;
            let Some(group) = m.conversation.group_id() else {
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
                                quote_json(m),
                                attachment_json(m),
                                write_ts(m.id),
                            ),
                        )
                        .boxed(),
                );
                for user in [&m.from, &m.to] {
                    writes.push(
                        self.session
                            .execute_unpaged(
                                &self.st.upsert_conversation,
                                (
                                    user.to_string(),
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
                continue;
            };
            let bucket = bucket_of(m.id) as i64;
            let event = m
                .event
                .as_ref()
                .map(|e| serde_json::to_string(e).expect("event to JSON"));
            writes.push(
                self.session
                    .execute_unpaged(
                        &self.st.insert_group_message,
                        (
                            group.to_string(),
                            bucket,
                            id.clone(),
                            ts,
                            m.from.to_string(),
                            m.cid.to_string(),
                            m.body.clone(),
                            event,
                            quote_json(m),
                            attachment_json(m),
                            write_ts(m.id),
                        ),
                    )
                    .boxed(),
            );
            writes.push(
                self.session
                    .execute_unpaged(&self.st.insert_bucket, (group.to_string(), bucket))
                    .boxed(),
            );
            // One row for the whole group, however many members it has.
            writes.push(
                self.session
                    .execute_unpaged(
                        &self.st.upsert_group_latest,
                        (
                            group.to_string(),
                            id,
                            ts,
                            m.from.to_string(),
                            preview(&m.body),
                            write_ts(m.id),
                        ),
                    )
                    .boxed(),
            );
        }
        // Concurrently, but bounded: each write goes to its own partition's replicas.
        futures::stream::iter(writes)
            .buffer_unordered(64)
            .try_collect::<Vec<_>>()
            .await
            .map_err(err)?;
        // Then the edits and deletes, in order: each reads what it changes, which the
        // messages above (or an earlier batch) wrote.
        for event in messages.iter().filter(|m| m.change.is_some()) {
            self.apply_change(event).await?;
        }
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
        let rows: Vec<MessageRow> = match page {
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
            .map(|r| to_message(conversation, r))
            .collect()
    }

    async fn conversations(
        &self,
        user: &UserId,
        groups: &[GroupId],
        limit: usize,
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        let mut out = self.direct_rows(user, false).await?;
        out.extend(self.group_summaries(groups).await?);
        newest_first(&mut out, limit);
        let conversations: Vec<ConversationId> =
            out.iter().map(|e| e.conversation.clone()).collect();
        let counts: Vec<u32> = futures::stream::iter(conversations)
            .map(|conversation| async move { self.unread(user, &conversation).await })
            .buffered(UNREAD_COUNTS_IN_FLIGHT)
            .try_collect()
            .await?;
        for (entry, unread) in out.iter_mut().zip(counts) {
            entry.unread = unread;
        }
        Ok(out)
    }

    async fn direct_conversations(
        &self,
        user: &UserId,
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        self.direct_rows(user, true).await
    }

    async fn mark_read(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        up_to: MessageId,
    ) -> Result<(), StoreError> {
        if let Some(group) = conversation.group_id() {
            return self
                .set_group_marker(&self.st.set_group_read, &group, user, up_to)
                .await;
        }
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

    async fn mark_delivered(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        up_to: MessageId,
    ) -> Result<(), StoreError> {
        if let Some(group) = conversation.group_id() {
            return self
                .set_group_marker(&self.st.set_group_delivered, &group, user, up_to)
                .await;
        }
        // Written at the message's timestamp, like the read marker: it never moves back.
        self.session
            .execute_unpaged(
                &self.st.set_direct_delivered,
                (
                    write_ts(up_to),
                    up_to.to_string(),
                    user.as_str(),
                    conversation.as_str(),
                ),
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn receipt_markers(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> Result<ReceiptMarkers, StoreError> {
        let (delivered, read) = match conversation.group_id() {
            Some(group) => self.group_marker(&group, user).await?,
            None => {
                let row: Option<(Option<String>, Option<String>)> = self
                    .rows(
                        &self.st.direct_markers,
                        (user.as_str(), conversation.as_str()),
                    )
                    .await?
                    .into_iter()
                    .next();
                let (delivered, read) = row.unwrap_or_default();
                (parse_id(delivered)?, parse_id(read)?)
            }
        };
        Ok(ReceiptMarkers::new(user.clone(), delivered, read))
    }

    async fn read_marker(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> Result<Option<MessageId>, StoreError> {
        if let Some(group) = conversation.group_id() {
            return Ok(self.group_marker(&group, user).await?.1);
        }
        let marker: Option<String> = self
            .column(&self.st.marker, (user.as_str(), conversation.as_str()))
            .await?
            .into_iter()
            .next();
        parse_id(marker)
    }

    async fn group_markers(&self, group: &GroupId) -> Result<Vec<ReceiptMarkers>, StoreError> {
        let rows: Vec<(String, Option<String>, Option<String>)> = self
            .all_rows(&self.st.group_markers, (group.as_str(),))
            .await?;
        rows.into_iter()
            .map(|(user, delivered, read)| {
                Ok(ReceiptMarkers::new(
                    UserId::new(&user).map_err(corrupt)?,
                    parse_id(delivered)?,
                    parse_id(read)?,
                ))
            })
            .collect()
    }

    async fn message(
        &self,
        conversation: &ConversationId,
        id: MessageId,
    ) -> Result<Option<Message>, StoreError> {
        match conversation.group_id() {
            Some(group) => {
                let bucket = bucket_of(id) as i64;
                let row: Option<GroupRow> = self
                    .rows(
                        &self.st.group_message,
                        (group.as_str(), bucket, id.to_string()),
                    )
                    .await?
                    .into_iter()
                    .next();
                row.map(|r| to_group_message(conversation, &group, r))
                    .transpose()
            }
            None => {
                let row: Option<MessageRow> = self
                    .rows(&self.st.message, (conversation.as_str(), id.to_string()))
                    .await?
                    .into_iter()
                    .next();
                row.map(|r| to_message(conversation, r)).transpose()
            }
        }
    }
}

impl ScyllaStore {
    /// `user`'s 1:1 conversation list entries, unread not counted. With `activity`, `last_ts`
    /// is the time of the newest message or change, whichever is later (see
    /// [`Store::direct_conversations`]).
    async fn direct_rows(
        &self,
        user: &UserId,
        activity: bool,
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        type Row = (
            String,
            String,
            i64,
            String,
            String,
            Option<bool>,
            Option<i64>,
        );
        let rows: Vec<Row> = self
            .all_rows(&self.st.conversations, (user.as_str(),))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (conversation, last_id, last_ts, last_from, preview, deleted, changed_ts) in rows {
            let conversation: ConversationId = conversation.parse().map_err(corrupt)?;
            // Group rows written here before groups moved to group_latest are ignored.
            if !conversation.is_direct() {
                continue;
            }
            let mut entry = to_summary(
                conversation,
                (last_id, last_ts, last_from, preview, deleted),
            )?;
            if activity {
                entry.last_ts = entry.last_ts.max(changed_ts.unwrap_or(0) as u64);
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// Applies an edit or delete event to the message it names and, when that message is the
    /// newest, to the conversation list; in 1:1 it notes the change's time in both
    /// participants' entries. Every write is at the event's timestamp: a replay of it changes
    /// nothing, and the message written again (at its own, earlier, timestamp) undoes nothing.
    async fn apply_change(&self, event: &Message) -> Result<(), StoreError> {
        let Some(change) = &event.change else {
            return Ok(());
        };
        let target = change.target();
        let Some(mut message) = self.message(&event.conversation, target).await? else {
            // Chat checked that history held it: only a store that lost it gets here.
            tracing::warn!(id = %target, "an edit or delete names a message the store lacks");
            return Ok(());
        };
        let at = write_ts(event.id);
        if message.apply(event) {
            self.write_change(event, change, &message, at).await?;
        }
        // A reaction changes no preview; it is still activity a replay must read.
        let shows = !matches!(change, Change::React { .. });
        let shown = (preview(&message.body), message.deleted);
        if let Some(group) = event.conversation.group_id() {
            let last: Option<(String,)> = self
                .rows(&self.st.group_summary_last, (group.as_str(),))
                .await?
                .into_iter()
                .next();
            if shows && last.is_some_and(|(id,)| id == target.to_string()) {
                let values = (at, shown.0, shown.1, group.to_string());
                self.session
                    .execute_unpaged(&self.st.show_in_group_latest, values)
                    .await
                    .map_err(err)?;
            }
            return Ok(());
        }
        for user in [&event.from, &event.to] {
            let key = (user.as_str(), event.conversation.as_str());
            let Some((last,)) = self
                .rows::<(String,)>(&self.st.conversation_last, key)
                .await?
                .into_iter()
                .next()
            else {
                continue;
            };
            if shows && last == target.to_string() {
                let values = (at, shown.0.clone(), shown.1, key.0, key.1);
                self.session
                    .execute_unpaged(&self.st.show_in_conversation, values)
                    .await
                    .map_err(err)?;
            }
            self.session
                .execute_unpaged(
                    &self.st.touch_conversation,
                    (at, event.ts as i64, key.0, key.1),
                )
                .await
                .map_err(err)?;
        }
        Ok(())
    }

    /// Writes what `event` changed of `message` (already applied): its text and state for an
    /// edit or delete, the sender's cell of its reactions for a reaction.
    async fn write_change(
        &self,
        event: &Message,
        change: &Change,
        message: &Message,
        at: i64,
    ) -> Result<(), StoreError> {
        let target = message.id.to_string();
        let group = event.conversation.group_id();
        let partition = match &group {
            Some(g) => (g.to_string(), Some(bucket_of(message.id) as i64)),
            None => (event.conversation.to_string(), None),
        };
        let write = match (change, partition) {
            (Change::React { emoji, .. }, (key, bucket)) => {
                // "<time>:<emoji>" (empty once removed): the time orders a user's changes
                // wherever the row is read (see `Reacted`).
                let (user, value) = (event.from.to_string(), format!("{}:{emoji}", event.ts));
                match bucket {
                    Some(b) => {
                        let values = (at, user, value, key, b, target);
                        self.session
                            .execute_unpaged(&self.st.react_group_message, values)
                            .await
                    }
                    None => {
                        let values = (at, user, value, key, target);
                        self.session
                            .execute_unpaged(&self.st.react_message, values)
                            .await
                    }
                }
            }
            (_, (key, bucket)) => {
                let edited = message.edited.map(|ms| ms as i64);
                let (body, reply, deleted) =
                    (message.body.clone(), quote_json(message), message.deleted);
                let attachment = attachment_json(message);
                match bucket {
                    Some(b) => {
                        let values = (at, body, reply, attachment, edited, deleted, key, b, target);
                        self.session
                            .execute_unpaged(&self.st.change_group_message, values)
                            .await
                    }
                    None => {
                        let values = (at, body, reply, attachment, edited, deleted, key, target);
                        self.session
                            .execute_unpaged(&self.st.change_message, values)
                            .await
                    }
                }
            }
        };
        write.map(|_| ()).map_err(err)
    }
}

/// A message's attachment as stored in the `attachment` column (JSON), if it has one.
fn attachment_json(m: &Message) -> Option<String> {
    m.attachment
        .as_ref()
        .map(|a| serde_json::to_string(a).expect("attachment to JSON"))
}

/// A reply's quote as stored in the `reply` column (JSON), if the message is a reply.
fn quote_json(m: &Message) -> Option<String> {
    m.reply
        .as_ref()
        .map(|q| serde_json::to_string(q).expect("quote to JSON"))
}
