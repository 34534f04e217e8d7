//! The embedded store, on redb: one file on local disk, for the all-in-one binary.
//!
//! Why redb rather than an LSM engine such as fjall: history on one machine is read far more
//! than written, redb's B-tree serves ordered range reads (a page of a conversation) from a
//! single file with no compaction to tune, and its ACID write transactions make the
//! read-compare-write of the conversation list and read markers atomic without extra locks.
//! Every commit is durable (fsync) before `append` returns.

use std::path::Path;
use std::sync::Arc;

use protocol::frames::{ConversationSummary, Message};
use protocol::{ConversationId, GroupId, MessageId, UserId};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Page, Role, Store, StoreError, UNREAD_CAP, bucket_of, preview};

/// (conversation, message id) → message.
const MESSAGES: TableDefinition<(&str, u128), &[u8]> =
    TableDefinition::new("messages_by_conversation");
/// (group, day bucket, message id) → message.
const GROUP_MESSAGES: TableDefinition<(&str, u64, u128), &[u8]> =
    TableDefinition::new("messages_by_group");
/// (user, conversation) → newest message summary.
const USER_CONVERSATIONS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("user_conversations");
/// (user, conversation) → id read up to.
const READ_MARKERS: TableDefinition<(&str, &str), u128> = TableDefinition::new("read_markers");
/// (group, user) → role.
const GROUP_MEMBERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("group_members");

#[derive(Serialize, Deserialize)]
struct Latest {
    id: u128,
    ts: u64,
    from: String,
    preview: String,
}

/// The redb-backed store. Cloning shares the database.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl EmbeddedStore {
    /// Opens (or creates) the store at `path`, with every table.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let db = Database::create(path).map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(MESSAGES).map_err(err)?;
        txn.open_table(GROUP_MESSAGES).map_err(err)?;
        txn.open_table(USER_CONVERSATIONS).map_err(err)?;
        txn.open_table(READ_MARKERS).map_err(err)?;
        txn.open_table(GROUP_MEMBERS).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Runs blocking redb work off the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(err)?
    }
}

fn encode(m: &Message) -> Vec<u8> {
    rmp_serde::to_vec_named(m).expect("message to MessagePack")
}

fn decode(bytes: &[u8]) -> Result<Message, StoreError> {
    rmp_serde::from_slice(bytes).map_err(corrupt)
}

fn members_of(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    group: &str,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for row in table.range((group, "")..).map_err(err)? {
        let (k, _) = row.map_err(err)?;
        let (g, user) = k.value();
        if g != group {
            break;
        }
        out.push(user.to_string());
    }
    Ok(out)
}

/// Reads one page from a table whose key ends in the message id.
fn page_of<'k, K: redb::Key + 'static>(
    table: &impl ReadableTable<K, &'static [u8]>,
    lo: K::SelfType<'k>,
    hi: K::SelfType<'k>,
    newest_first: bool,
    limit: usize,
) -> Result<Vec<Message>, StoreError>
where
    K::SelfType<'k>: std::borrow::Borrow<K::SelfType<'k>>,
{
    let range = table.range(lo..=hi).map_err(err)?;
    let mut out = Vec::with_capacity(limit.min(128));
    if newest_first {
        for row in range.rev().take(limit) {
            out.push(decode(row.map_err(err)?.1.value())?);
        }
    } else {
        for row in range.take(limit) {
            out.push(decode(row.map_err(err)?.1.value())?);
        }
    }
    Ok(out)
}

impl Store for EmbeddedStore {
    async fn append(&self, messages: &[Message]) -> Result<(), StoreError> {
        let messages = messages.to_vec();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            {
                let mut rows = txn.open_table(MESSAGES).map_err(err)?;
                let mut group_rows = txn.open_table(GROUP_MESSAGES).map_err(err)?;
                let mut lists = txn.open_table(USER_CONVERSATIONS).map_err(err)?;
                let members = txn.open_table(GROUP_MEMBERS).map_err(err)?;
                for m in &messages {
                    let id = m.id.0.0;
                    let conversation = m.conversation.as_str();
                    let participants = match m.conversation.group_id() {
                        Some(group) => {
                            group_rows
                                .insert((group.as_str(), bucket_of(m.id), id), encode(m).as_slice())
                                .map_err(err)?;
                            members_of(&members, group.as_str())?
                        }
                        None => {
                            rows.insert((conversation, id), encode(m).as_slice())
                                .map_err(err)?;
                            vec![m.from.to_string(), m.to.to_string()]
                        }
                    };
                    for user in participants {
                        let newer = match lists.get((user.as_str(), conversation)).map_err(err)? {
                            Some(v) => {
                                let latest: Latest =
                                    rmp_serde::from_slice(v.value()).map_err(corrupt)?;
                                id > latest.id
                            }
                            None => true,
                        };
                        if newer {
                            let latest = Latest {
                                id,
                                ts: m.ts,
                                from: m.from.to_string(),
                                preview: preview(&m.body),
                            };
                            let bytes = rmp_serde::to_vec(&latest).expect("summary");
                            lists
                                .insert((user.as_str(), conversation), bytes.as_slice())
                                .map_err(err)?;
                        }
                    }
                }
            }
            txn.commit().map_err(err)
        })
        .await
    }

    async fn page(
        &self,
        conversation: &ConversationId,
        page: Page,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let conversation = conversation.clone();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let (lo, hi, newest_first) = match page {
                Page::Latest => (0, u128::MAX, true),
                Page::Before(id) => match id.0.0.checked_sub(1) {
                    Some(hi) => (0, hi, true),
                    None => return Ok(Vec::new()),
                },
                Page::After(id) => match id.0.0.checked_add(1) {
                    Some(lo) => (lo, u128::MAX, false),
                    None => return Ok(Vec::new()),
                },
            };
            match conversation.group_id() {
                // One range over (group, bucket, id) walks the day buckets in order.
                Some(group) => {
                    let table = txn.open_table(GROUP_MESSAGES).map_err(err)?;
                    let g = group.as_str();
                    let (blo, bhi) = (
                        bucket_of(MessageId(ulid::Ulid(lo))),
                        bucket_of(MessageId(ulid::Ulid(hi))),
                    );
                    page_of(&table, (g, blo, lo), (g, bhi, hi), newest_first, limit)
                }
                None => {
                    let table = txn.open_table(MESSAGES).map_err(err)?;
                    let c = conversation.as_str();
                    page_of(&table, (c, lo), (c, hi), newest_first, limit)
                }
            }
        })
        .await
    }

    async fn conversations(
        &self,
        user: &UserId,
        limit: usize,
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        let user = user.clone();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let lists = txn.open_table(USER_CONVERSATIONS).map_err(err)?;
            let markers = txn.open_table(READ_MARKERS).map_err(err)?;
            let rows_table = txn.open_table(MESSAGES).map_err(err)?;
            let group_table = txn.open_table(GROUP_MESSAGES).map_err(err)?;
            let mut rows = Vec::new();
            for row in lists.range((user.as_str(), "")..).map_err(err)? {
                let (k, v) = row.map_err(err)?;
                let (u, conversation) = k.value();
                if u != user.as_str() {
                    break;
                }
                let latest: Latest = rmp_serde::from_slice(v.value()).map_err(corrupt)?;
                rows.push((conversation.to_string(), latest));
            }
            rows.sort_by_key(|r| std::cmp::Reverse(r.1.id));
            rows.truncate(limit);
            let mut out = Vec::with_capacity(rows.len());
            for (conversation, latest) in rows {
                let conversation: ConversationId = conversation.parse().map_err(corrupt)?;
                let marker = markers
                    .get((user.as_str(), conversation.as_str()))
                    .map_err(err)?
                    .map(|g| g.value())
                    .unwrap_or(0);
                let after = marker.saturating_add(1);
                // Unread: messages from others after the marker, counted up to the cap.
                let newer = match conversation.group_id() {
                    Some(group) => {
                        let g = group.as_str();
                        let b = bucket_of(MessageId(ulid::Ulid(after)));
                        page_of(
                            &group_table,
                            (g, b, after),
                            (g, u64::MAX, u128::MAX),
                            false,
                            UNREAD_CAP as usize * 4,
                        )?
                    }
                    None => {
                        let c = conversation.as_str();
                        page_of(
                            &rows_table,
                            (c, after),
                            (c, u128::MAX),
                            false,
                            UNREAD_CAP as usize * 4,
                        )?
                    }
                };
                let unread = newer
                    .iter()
                    .filter(|m| m.from != user)
                    .count()
                    .min(UNREAD_CAP as usize);
                out.push(ConversationSummary {
                    conversation,
                    last_id: MessageId(ulid::Ulid(latest.id)),
                    last_ts: latest.ts,
                    last_from: UserId::new(&latest.from).map_err(corrupt)?,
                    preview: latest.preview,
                    unread: unread as u32,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn mark_read(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        up_to: MessageId,
    ) -> Result<(), StoreError> {
        let (user, conversation) = (user.clone(), conversation.clone());
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            {
                let mut markers = txn.open_table(READ_MARKERS).map_err(err)?;
                let key = (user.as_str(), conversation.as_str());
                let current = markers
                    .get(key)
                    .map_err(err)?
                    .map(|g| g.value())
                    .unwrap_or(0);
                if up_to.0.0 > current {
                    markers.insert(key, up_to.0.0).map_err(err)?;
                }
            }
            txn.commit().map_err(err)
        })
        .await
    }

    async fn put_member(
        &self,
        group: &GroupId,
        user: &UserId,
        role: Role,
    ) -> Result<(), StoreError> {
        let (group, user) = (group.clone(), user.clone());
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            {
                let mut members = txn.open_table(GROUP_MEMBERS).map_err(err)?;
                let bytes = rmp_serde::to_vec(&role).expect("role");
                members
                    .insert((group.as_str(), user.as_str()), bytes.as_slice())
                    .map_err(err)?;
            }
            txn.commit().map_err(err)
        })
        .await
    }

    async fn is_member(&self, group: &GroupId, user: &UserId) -> Result<bool, StoreError> {
        let (group, user) = (group.clone(), user.clone());
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let members = txn.open_table(GROUP_MEMBERS).map_err(err)?;
            Ok(members
                .get((group.as_str(), user.as_str()))
                .map_err(err)?
                .is_some())
        })
        .await
    }
}
