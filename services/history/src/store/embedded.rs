//! The embedded store, on redb: one file on local disk, for the all-in-one binary.
//!
//! Why redb rather than an LSM engine such as fjall: history on one machine is read far more
//! than written, redb's B-tree serves ordered range reads (a page of a conversation) from a
//! single file with no compaction to tune, and its ACID write transactions make the
//! read-compare-write of the conversation list and read markers atomic without extra locks.
//! Every commit is durable (fsync) before `append` returns.
//!
//! Appends commit in groups: an append waits for the next commit, which starts up to
//! `COMMIT_LINGER` later and takes every append waiting by then (one transaction, one fsync).
//! The partitions' writers append small batches at once, and a commit per append cost an
//! fsync and a blocking-thread hand-off each (`natter-bench cost`: the history process was
//! the costliest of natter's at 168-179 µs of CPU per message, most of it in the kernel).

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use protocol::frames::{ConversationSummary, Message};
use protocol::{ConversationId, GroupId, MessageId, UserId};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{
    Page, ReceiptMarkers, Store, StoreError, UNREAD_CAP, bucket_of, newest_first, preview,
};

/// (conversation, message id) → message.
const MESSAGES: TableDefinition<(&str, u128), &[u8]> =
    TableDefinition::new("messages_by_conversation");
/// (group, day bucket, message id) → message.
const GROUP_MESSAGES: TableDefinition<(&str, u64, u128), &[u8]> =
    TableDefinition::new("messages_by_group");
/// (user, 1:1 conversation) → newest message summary. Files written before groups moved
/// out may still hold group rows here; listings skip them.
const USER_CONVERSATIONS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("user_conversations");
/// group → newest message summary.
const GROUP_LATEST: TableDefinition<&str, &[u8]> = TableDefinition::new("group_latest");
/// (user, 1:1 conversation) → id read up to.
const READ_MARKERS: TableDefinition<(&str, &str), u128> = TableDefinition::new("read_markers");
/// (user, 1:1 conversation) → how far the user's devices have received it (the `ack`ed id).
const DELIVERED_MARKERS: TableDefinition<(&str, &str), u128> =
    TableDefinition::new("delivered_markers");
/// (group, user) → (delivered up to, read up to); 0 is "nothing yet". Older files also hold
/// a `group_members` table, which nothing reads any more.
const GROUP_MARKERS: TableDefinition<(&str, &str), (u128, u128)> =
    TableDefinition::new("group_markers");

/// A conversation's newest message, as its list entry shows it. Encoded as an array: fields
/// are only ever added at the end, with defaults for entries written before them.
#[derive(Serialize, Deserialize)]
struct Latest {
    id: u128,
    ts: u64,
    from: String,
    preview: String,
    /// The newest message was deleted for everyone.
    #[serde(default)]
    deleted: bool,
    /// In a 1:1 list entry: when the newest edit or delete of the conversation was made (ms),
    /// which a replay must read like a message.
    #[serde(default)]
    changed_ts: u64,
}

/// The redb-backed store. Cloning shares the database.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    appends: Arc<Mutex<Appends>>,
}

/// How long a commit waits for more appends to join it, unless `GROUP_ENOUGH` messages
/// already wait: messages reach history up to this much later, and each commit (an fsync)
/// carries more of them. `natter-bench cost` at 2,000 msg/s: the history process's CPU per
/// message fell from 154-165 µs (commits grouped without waiting) to 97-116 µs.
const COMMIT_LINGER: std::time::Duration = std::time::Duration::from_millis(2);
/// Messages waiting that make a commit start at once.
const GROUP_ENOUGH: usize = 256;

/// Resets the committer's state if it unwinds: the waiting appends hear an error and the
/// next append starts a committer.
struct UnwindGuard<'a>(&'a Mutex<Appends>);

impl Drop for UnwindGuard<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut appends = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        appends.committing = false;
        for (_, done) in appends.waiting.drain(..) {
            let _ = done.send(Err(StoreError::Unavailable("the committer failed".into())));
        }
    }
}

/// Where an append hears its commit's result.
type Committed = oneshot::Sender<Result<(), StoreError>>;

/// Appends waiting for the next commit, and whether a committer is at work.
#[derive(Default)]
struct Appends {
    waiting: Vec<(Vec<Message>, Committed)>,
    committing: bool,
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
        txn.open_table(GROUP_LATEST).map_err(err)?;
        txn.open_table(READ_MARKERS).map_err(err)?;
        txn.open_table(DELIVERED_MARKERS).map_err(err)?;
        txn.open_table(GROUP_MARKERS).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(Self {
            db: Arc::new(db),
            appends: Arc::default(),
        })
    }

    /// Commits every waiting append, a group at a time, until none waits (on a blocking
    /// thread: see the module's comment). Each append is told its group's result. The
    /// database is held only while a group is written, so once the last append has returned
    /// and the store is dropped, the file can be opened again at once.
    fn commit_waiting(db: &std::sync::Weak<Database>, appends: &Mutex<Appends>) {
        // Should the committer unwind, the appends waiting are told and the next append
        // starts another committer, instead of waiting for ever.
        let _unwinding = UnwindGuard(appends);
        loop {
            let waiting: usize = {
                let mut appends = appends.lock().unwrap();
                if appends.waiting.is_empty() {
                    appends.committing = false;
                    return;
                }
                appends.waiting.iter().map(|(m, _)| m.len()).sum()
            };
            if waiting < GROUP_ENOUGH {
                std::thread::sleep(COMMIT_LINGER);
            }
            let group = std::mem::take(&mut appends.lock().unwrap().waiting);
            // The database is dropped at the end of this statement, before anyone is told.
            let results: Vec<Result<(), StoreError>> = match db.upgrade() {
                None => {
                    vec![Err(StoreError::Unavailable("the store is closed".into())); group.len()]
                }
                Some(db) => match write_messages(&db, group.iter().flat_map(|(m, _)| m)) {
                    Ok(()) => vec![Ok(()); group.len()],
                    Err(e) if group.len() == 1 => vec![Err(e)],
                    // One append's failure must not fail the others (nor keep failing them
                    // when all retry together): each is committed on its own.
                    Err(_) => group
                        .iter()
                        .map(|(messages, _)| write_messages(&db, messages.iter()))
                        .collect(),
                },
            };
            for ((_, done), result) in group.into_iter().zip(results) {
                let _ = done.send(result);
            }
        }
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

/// Writes `messages` in one transaction and commits it (durably).
fn write_messages<'m>(
    db: &Database,
    messages: impl Iterator<Item = &'m Message>,
) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(err)?;
    {
        let mut rows = txn.open_table(MESSAGES).map_err(err)?;
        let mut group_rows = txn.open_table(GROUP_MESSAGES).map_err(err)?;
        let mut lists = txn.open_table(USER_CONVERSATIONS).map_err(err)?;
        let mut group_latest = txn.open_table(GROUP_LATEST).map_err(err)?;
        for m in messages {
            if m.change.is_some() {
                let mut tables = Tables {
                    rows: &mut rows,
                    group_rows: &mut group_rows,
                    lists: &mut lists,
                    group_latest: &mut group_latest,
                };
                tables.apply(m)?;
                continue;
            }
            let id = m.id.0.0;
            let conversation = m.conversation.as_str();
            if let Some(group) = m.conversation.group_id() {
                // A message is written once: written again (a replay), it would undo the edits
                // and deletes applied to it since.
                let key = (group.as_str(), bucket_of(m.id), id);
                if group_rows.get(key).map_err(err)?.is_some() {
                    continue;
                }
                // One summary per group, whatever its size: members' lists merge it in when
                // they are read.
                group_rows.insert(key, encode(m).as_slice()).map_err(err)?;
                let stored = group_latest.get(group.as_str()).map_err(err)?;
                if newer_than(stored.as_ref().map(|v| v.value()), id)? {
                    drop(stored);
                    group_latest
                        .insert(group.as_str(), summary_bytes(m).as_slice())
                        .map_err(err)?;
                }
                continue;
            }
            if rows.get((conversation, id)).map_err(err)?.is_some() {
                continue;
            }
            rows.insert((conversation, id), encode(m).as_slice())
                .map_err(err)?;
            for user in [m.from.as_str(), m.to.as_str()] {
                let stored = lists.get((user, conversation)).map_err(err)?;
                if newer_than(stored.as_ref().map(|v| v.value()), id)? {
                    drop(stored);
                    lists
                        .insert((user, conversation), summary_bytes(m).as_slice())
                        .map_err(err)?;
                }
            }
        }
    }
    txn.commit().map_err(err)
}

/// The tables an edit or delete touches, open in one write transaction.
struct Tables<'a, 't> {
    rows: &'a mut redb::Table<'t, (&'static str, u128), &'static [u8]>,
    group_rows: &'a mut redb::Table<'t, (&'static str, u64, u128), &'static [u8]>,
    lists: &'a mut redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    group_latest: &'a mut redb::Table<'t, &'static str, &'static [u8]>,
}

impl Tables<'_, '_> {
    /// Applies an edit or delete event to the message it names, and to the conversation
    /// list's entry when that message is the newest; in 1:1 it also notes the change's time
    /// in both participants' entries (`Latest::changed_ts`).
    fn apply(&mut self, event: &Message) -> Result<(), StoreError> {
        let Some(change) = &event.change else {
            return Ok(());
        };
        let target = change.target();
        let conversation = event.conversation.as_str();
        let group = event.conversation.group_id();
        let stored = match &group {
            Some(g) => self
                .group_rows
                .get((g.as_str(), bucket_of(target), target.0.0))
                .map_err(err)?
                .map(|v| decode(v.value())),
            None => self
                .rows
                .get((conversation, target.0.0))
                .map_err(err)?
                .map(|v| decode(v.value())),
        };
        let Some(mut message) = stored.transpose()? else {
            // Chat checked that history held it: only a store that lost it gets here.
            tracing::warn!(id = %target, "an edit or delete names a message the store lacks");
            return Ok(());
        };
        if message.apply(event) {
            let bytes = encode(&message);
            match &group {
                Some(g) => self.group_rows.insert(
                    (g.as_str(), bucket_of(target), target.0.0),
                    bytes.as_slice(),
                ),
                None => self
                    .rows
                    .insert((conversation, target.0.0), bytes.as_slice()),
            }
            .map_err(err)?;
        }
        let show = |latest: &mut Latest| {
            if latest.id == target.0.0 {
                latest.preview = preview(&message.body);
                latest.deleted = message.deleted;
            }
        };
        if let Some(g) = &group {
            let stored = self.group_latest.get(g.as_str()).map_err(err)?;
            if let Some(bytes) = stored.map(|v| v.value().to_vec()) {
                let mut latest: Latest = rmp_serde::from_slice(&bytes).map_err(corrupt)?;
                show(&mut latest);
                let bytes = rmp_serde::to_vec(&latest).expect("summary");
                self.group_latest
                    .insert(g.as_str(), bytes.as_slice())
                    .map_err(err)?;
            }
            return Ok(());
        }
        for user in [event.from.as_str(), event.to.as_str()] {
            let stored = self.lists.get((user, conversation)).map_err(err)?;
            if let Some(bytes) = stored.map(|v| v.value().to_vec()) {
                let mut latest: Latest = rmp_serde::from_slice(&bytes).map_err(corrupt)?;
                show(&mut latest);
                latest.changed_ts = latest.changed_ts.max(event.ts);
                let bytes = rmp_serde::to_vec(&latest).expect("summary");
                self.lists
                    .insert((user, conversation), bytes.as_slice())
                    .map_err(err)?;
            }
        }
        Ok(())
    }
}

fn encode(m: &Message) -> Vec<u8> {
    rmp_serde::to_vec_named(m).expect("message to MessagePack")
}

fn decode(bytes: &[u8]) -> Result<Message, StoreError> {
    rmp_serde::from_slice(bytes).map_err(corrupt)
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

/// Whether message `id` is newer than the stored summary (or there is none).
fn newer_than(stored: Option<&[u8]>, id: u128) -> Result<bool, StoreError> {
    match stored {
        Some(bytes) => {
            let latest: Latest = rmp_serde::from_slice(bytes).map_err(corrupt)?;
            Ok(id > latest.id)
        }
        None => Ok(true),
    }
}

fn summary_bytes(m: &Message) -> Vec<u8> {
    let latest = Latest {
        id: m.id.0.0,
        ts: m.ts,
        from: m.from.to_string(),
        preview: preview(&m.body),
        deleted: false,
        changed_ts: 0,
    };
    rmp_serde::to_vec(&latest).expect("summary")
}

/// A conversation list entry from a stored summary, unread not yet counted.
fn summary(conversation: ConversationId, bytes: &[u8]) -> Result<ConversationSummary, StoreError> {
    Ok(summary_and_change(conversation, bytes)?.0)
}

/// [`summary`], and when the conversation's newest edit or delete was made (0: none).
fn summary_and_change(
    conversation: ConversationId,
    bytes: &[u8],
) -> Result<(ConversationSummary, u64), StoreError> {
    let latest: Latest = rmp_serde::from_slice(bytes).map_err(corrupt)?;
    let entry = ConversationSummary {
        conversation,
        last_id: MessageId(ulid::Ulid(latest.id)),
        last_ts: latest.ts,
        last_from: UserId::new(&latest.from).map_err(corrupt)?,
        preview: latest.preview,
        unread: 0,
        deleted: latest.deleted,
    };
    Ok((entry, latest.changed_ts))
}

/// `user`'s 1:1 conversation list entries, unread not counted. With `activity`, `last_ts` is
/// the time of the newest message or change, whichever is later (see
/// [`Store::direct_conversations`]).
fn direct_rows(
    txn: &redb::ReadTransaction,
    user: &UserId,
    activity: bool,
) -> Result<Vec<ConversationSummary>, StoreError> {
    let lists = txn.open_table(USER_CONVERSATIONS).map_err(err)?;
    let mut out = Vec::new();
    for row in lists.range((user.as_str(), "")..).map_err(err)? {
        let (k, v) = row.map_err(err)?;
        let (u, conversation) = k.value();
        if u != user.as_str() {
            break;
        }
        let conversation: ConversationId = conversation.parse().map_err(corrupt)?;
        if conversation.is_direct() {
            let (mut entry, changed_ts) = summary_and_change(conversation, v.value())?;
            if activity {
                entry.last_ts = entry.last_ts.max(changed_ts);
            }
            out.push(entry);
        }
    }
    Ok(out)
}

/// Messages not from `user` in a key range, counted up to the cap.
fn unread_in<'k, K: redb::Key + 'static>(
    table: &impl ReadableTable<K, &'static [u8]>,
    lo: K::SelfType<'k>,
    hi: K::SelfType<'k>,
    user: &UserId,
) -> Result<u32, StoreError>
where
    K::SelfType<'k>: std::borrow::Borrow<K::SelfType<'k>>,
{
    let mut unread = 0;
    for row in table.range(lo..=hi).map_err(err)? {
        if decode(row.map_err(err)?.1.value())?.from != *user {
            unread += 1;
            if unread >= UNREAD_CAP {
                break;
            }
        }
    }
    Ok(unread)
}

fn id_of(raw: u128) -> Option<MessageId> {
    (raw != 0).then_some(MessageId(ulid::Ulid(raw)))
}

/// Which of a group member's two markers to move.
#[derive(Clone, Copy)]
enum Marker {
    Delivered,
    Read,
}

impl EmbeddedStore {
    /// Moves one of `user`'s markers in `group` forward, in one transaction.
    /// Moves a 1:1 marker of `table` (read or delivered) forward to `up_to`, never back.
    async fn advance_direct_marker(
        &self,
        table: TableDefinition<'static, (&'static str, &'static str), u128>,
        user: &UserId,
        conversation: &ConversationId,
        up_to: MessageId,
    ) -> Result<(), StoreError> {
        let (user, conversation) = (user.clone(), conversation.clone());
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            {
                let mut markers = txn.open_table(table).map_err(err)?;
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

    async fn advance_group_marker(
        &self,
        group: GroupId,
        user: &UserId,
        marker: Marker,
        up_to: MessageId,
    ) -> Result<(), StoreError> {
        let user = user.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            {
                let mut markers = txn.open_table(GROUP_MARKERS).map_err(err)?;
                let key = (group.as_str(), user.as_str());
                let (delivered, read) = markers
                    .get(key)
                    .map_err(err)?
                    .map(|g| g.value())
                    .unwrap_or((0, 0));
                let up_to = up_to.0.0;
                let moved = match marker {
                    Marker::Delivered => (delivered.max(up_to), read),
                    Marker::Read => (delivered, read.max(up_to)),
                };
                if moved != (delivered, read) {
                    markers.insert(key, moved).map_err(err)?;
                }
            }
            txn.commit().map_err(err)
        })
        .await
    }
}

impl Store for EmbeddedStore {
    async fn append(&self, messages: &[Message]) -> Result<(), StoreError> {
        let (done, committed) = oneshot::channel();
        let start_committer = {
            let mut appends = self.appends.lock().unwrap();
            appends.waiting.push((messages.to_vec(), done));
            !std::mem::replace(&mut appends.committing, true)
        };
        if start_committer {
            let (db, appends) = (Arc::downgrade(&self.db), self.appends.clone());
            tokio::task::spawn_blocking(move || Self::commit_waiting(&db, &appends));
        }
        committed.await.map_err(err)?
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
        groups: &[GroupId],
        limit: usize,
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        let (user, groups) = (user.clone(), groups.to_vec());
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let group_latest = txn.open_table(GROUP_LATEST).map_err(err)?;
            let mut out = direct_rows(&txn, &user, false)?;
            for group in &groups {
                if let Some(v) = group_latest.get(group.as_str()).map_err(err)? {
                    out.push(summary(ConversationId::group(group), v.value())?);
                }
            }
            newest_first(&mut out, limit);

            let read_markers = txn.open_table(READ_MARKERS).map_err(err)?;
            let group_markers = txn.open_table(GROUP_MARKERS).map_err(err)?;
            let rows_table = txn.open_table(MESSAGES).map_err(err)?;
            let group_table = txn.open_table(GROUP_MESSAGES).map_err(err)?;
            for entry in &mut out {
                let c = entry.conversation.as_str();
                entry.unread = match entry.conversation.group_id() {
                    Some(group) => {
                        let g = group.as_str();
                        let marker = group_markers
                            .get((g, user.as_str()))
                            .map_err(err)?
                            .map_or(0, |v| v.value().1);
                        let after = marker.saturating_add(1);
                        let b = bucket_of(MessageId(ulid::Ulid(after)));
                        unread_in(&group_table, (g, b, after), (g, u64::MAX, u128::MAX), &user)?
                    }
                    None => {
                        let marker = read_markers
                            .get((user.as_str(), c))
                            .map_err(err)?
                            .map_or(0, |v| v.value());
                        let after = marker.saturating_add(1);
                        unread_in(&rows_table, (c, after), (c, u128::MAX), &user)?
                    }
                };
            }
            Ok(out)
        })
        .await
    }

    async fn direct_conversations(
        &self,
        user: &UserId,
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        let user = user.clone();
        self.blocking(move |db| direct_rows(&db.begin_read().map_err(err)?, &user, true))
            .await
    }

    async fn mark_read(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        up_to: MessageId,
    ) -> Result<(), StoreError> {
        if let Some(group) = conversation.group_id() {
            return self
                .advance_group_marker(group, user, Marker::Read, up_to)
                .await;
        }
        self.advance_direct_marker(READ_MARKERS, user, conversation, up_to)
            .await
    }

    async fn mark_delivered(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        up_to: MessageId,
    ) -> Result<(), StoreError> {
        match conversation.group_id() {
            Some(group) => {
                self.advance_group_marker(group, user, Marker::Delivered, up_to)
                    .await
            }
            None => {
                self.advance_direct_marker(DELIVERED_MARKERS, user, conversation, up_to)
                    .await
            }
        }
    }

    async fn receipt_markers(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> Result<ReceiptMarkers, StoreError> {
        let (who, conversation) = (user.clone(), conversation.clone());
        let (delivered, read) = self
            .blocking(move |db| {
                let txn = db.begin_read().map_err(err)?;
                if let Some(group) = conversation.group_id() {
                    return Ok(txn
                        .open_table(GROUP_MARKERS)
                        .map_err(err)?
                        .get((group.as_str(), who.as_str()))
                        .map_err(err)?
                        .map_or((0, 0), |v| v.value()));
                }
                let key = (who.as_str(), conversation.as_str());
                let marker = |table| -> Result<u128, StoreError> {
                    Ok(txn
                        .open_table(table)
                        .map_err(err)?
                        .get(key)
                        .map_err(err)?
                        .map_or(0, |v| v.value()))
                };
                Ok((marker(DELIVERED_MARKERS)?, marker(READ_MARKERS)?))
            })
            .await?;
        Ok(ReceiptMarkers::new(
            user.clone(),
            id_of(delivered),
            id_of(read),
        ))
    }

    async fn read_marker(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> Result<Option<MessageId>, StoreError> {
        let (user, conversation) = (user.clone(), conversation.clone());
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let raw = match conversation.group_id() {
                Some(group) => txn
                    .open_table(GROUP_MARKERS)
                    .map_err(err)?
                    .get((group.as_str(), user.as_str()))
                    .map_err(err)?
                    .map_or(0, |v| v.value().1),
                None => txn
                    .open_table(READ_MARKERS)
                    .map_err(err)?
                    .get((user.as_str(), conversation.as_str()))
                    .map_err(err)?
                    .map_or(0, |v| v.value()),
            };
            Ok(id_of(raw))
        })
        .await
    }

    async fn group_markers(&self, group: &GroupId) -> Result<Vec<ReceiptMarkers>, StoreError> {
        let group = group.clone();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let markers = txn.open_table(GROUP_MARKERS).map_err(err)?;
            let mut out = Vec::new();
            for row in markers.range((group.as_str(), "")..).map_err(err)? {
                let (k, v) = row.map_err(err)?;
                let (g, user) = k.value();
                if g != group.as_str() {
                    break;
                }
                let (delivered, read) = v.value();
                out.push(ReceiptMarkers::new(
                    UserId::new(user).map_err(corrupt)?,
                    id_of(delivered),
                    id_of(read),
                ));
            }
            Ok(out)
        })
        .await
    }

    async fn message(
        &self,
        conversation: &ConversationId,
        id: MessageId,
    ) -> Result<Option<Message>, StoreError> {
        let conversation = conversation.clone();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let found = match conversation.group_id() {
                Some(group) => txn
                    .open_table(GROUP_MESSAGES)
                    .map_err(err)?
                    .get((group.as_str(), bucket_of(id), id.0.0))
                    .map_err(err)?
                    .map(|v| decode(v.value())),
                None => txn
                    .open_table(MESSAGES)
                    .map_err(err)?
                    .get((conversation.as_str(), id.0.0))
                    .map_err(err)?
                    .map(|v| decode(v.value())),
            };
            found.transpose()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_entries_written_before_edits_existed_still_read() {
        // The four fields entries had before `deleted` and `changed_ts`, as an array.
        let old = rmp_serde::to_vec(&(7u128, 42u64, "alice", "hi")).unwrap();
        let latest: Latest = rmp_serde::from_slice(&old).unwrap();
        assert_eq!(
            (latest.id, latest.ts, latest.preview.as_str()),
            (7, 42, "hi")
        );
        assert!(!latest.deleted);
        assert_eq!(latest.changed_ts, 0);
    }
}
