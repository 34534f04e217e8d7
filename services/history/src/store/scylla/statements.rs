//! Every CQL statement of the ScyllaDB store, prepared once at startup.

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::err;
use crate::store::StoreError;

/// Columns of a 1:1 message row, in the order `MessageRow` decodes them.
const COLS: &str =
    "message_id, ts, from_user, to_user, cid, body, reply, edited, deleted, reactions, attachment";
/// Columns of a group message row: no recipient (the group is), and the system event.
const GCOLS: &str =
    "message_id, ts, from_user, cid, body, event, reply, edited, deleted, reactions, attachment";

pub(super) struct Statements {
    pub insert_message: PreparedStatement,
    pub insert_group_message: PreparedStatement,
    pub insert_bucket: PreparedStatement,
    pub upsert_conversation: PreparedStatement,
    pub change_message: PreparedStatement,
    pub change_group_message: PreparedStatement,
    pub react_message: PreparedStatement,
    pub react_group_message: PreparedStatement,
    pub conversation_last: PreparedStatement,
    pub show_in_conversation: PreparedStatement,
    pub touch_conversation: PreparedStatement,
    pub show_in_group_latest: PreparedStatement,
    pub group_summary_last: PreparedStatement,
    pub upsert_group_latest: PreparedStatement,
    pub latest: PreparedStatement,
    pub before: PreparedStatement,
    pub after: PreparedStatement,
    pub message: PreparedStatement,
    pub group_latest: PreparedStatement,
    pub group_before: PreparedStatement,
    pub group_after: PreparedStatement,
    pub group_message: PreparedStatement,
    pub buckets_desc: PreparedStatement,
    pub buckets_from: PreparedStatement,
    pub conversations: PreparedStatement,
    pub group_summary: PreparedStatement,
    pub marker: PreparedStatement,
    pub set_marker: PreparedStatement,
    pub direct_markers: PreparedStatement,
    pub set_direct_delivered: PreparedStatement,
    pub senders_after: PreparedStatement,
    pub group_senders_after: PreparedStatement,
    pub group_marker: PreparedStatement,
    pub group_markers: PreparedStatement,
    pub set_group_delivered: PreparedStatement,
    pub set_group_read: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(session: &Session, ks: &str) -> Result<Self, StoreError> {
        let prepare = |q: String| async move { session.prepare(q).await.map_err(err) };
        Ok(Self {
            // Written at the message's own time, so that writing it again (a replay) does not
            // undo the edits and deletes applied since, which are written at theirs.
            insert_message: prepare(format!("INSERT INTO {ks}.messages_by_conversation (conversation_id, message_id, ts, from_user, to_user, cid, body, reply, attachment) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?")).await?,
            insert_group_message: prepare(format!("INSERT INTO {ks}.messages_by_group (group_id, bucket, message_id, ts, from_user, cid, body, event, reply, attachment) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?")).await?,
            change_message: prepare(format!("UPDATE {ks}.messages_by_conversation USING TIMESTAMP ? SET body = ?, reply = ?, attachment = ?, edited = ?, deleted = ? WHERE conversation_id = ? AND message_id = ?")).await?,
            change_group_message: prepare(format!("UPDATE {ks}.messages_by_group USING TIMESTAMP ? SET body = ?, reply = ?, attachment = ?, edited = ?, deleted = ? WHERE group_id = ? AND bucket = ? AND message_id = ?")).await?,
            react_message: prepare(format!("UPDATE {ks}.messages_by_conversation USING TIMESTAMP ? SET reactions[?] = ? WHERE conversation_id = ? AND message_id = ?")).await?,
            react_group_message: prepare(format!("UPDATE {ks}.messages_by_group USING TIMESTAMP ? SET reactions[?] = ? WHERE group_id = ? AND bucket = ? AND message_id = ?")).await?,
            conversation_last: prepare(format!("SELECT last_id FROM {ks}.user_conversations WHERE user_id = ? AND conversation_id = ?")).await?,
            show_in_conversation: prepare(format!("UPDATE {ks}.user_conversations USING TIMESTAMP ? SET preview = ?, last_deleted = ? WHERE user_id = ? AND conversation_id = ?")).await?,
            touch_conversation: prepare(format!("UPDATE {ks}.user_conversations USING TIMESTAMP ? SET changed_ts = ? WHERE user_id = ? AND conversation_id = ?")).await?,
            group_summary_last: prepare(format!("SELECT last_id FROM {ks}.group_latest WHERE group_id = ?")).await?,
            show_in_group_latest: prepare(format!("UPDATE {ks}.group_latest USING TIMESTAMP ? SET preview = ?, last_deleted = ? WHERE group_id = ?")).await?,
            insert_bucket: prepare(format!("INSERT INTO {ks}.group_buckets (group_id, bucket) VALUES (?, ?)")).await?,
            upsert_conversation: prepare(format!("INSERT INTO {ks}.user_conversations (user_id, conversation_id, last_id, last_ts, last_from, preview) VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?")).await?,
            upsert_group_latest: prepare(format!("INSERT INTO {ks}.group_latest (group_id, last_id, last_ts, last_from, preview) VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?")).await?,
            latest: prepare(format!("SELECT {COLS} FROM {ks}.messages_by_conversation WHERE conversation_id = ? LIMIT ?")).await?,
            before: prepare(format!("SELECT {COLS} FROM {ks}.messages_by_conversation WHERE conversation_id = ? AND message_id < ? LIMIT ?")).await?,
            after: prepare(format!("SELECT {COLS} FROM {ks}.messages_by_conversation WHERE conversation_id = ? AND message_id > ? ORDER BY message_id ASC LIMIT ?")).await?,
            message: prepare(format!("SELECT {COLS} FROM {ks}.messages_by_conversation WHERE conversation_id = ? AND message_id = ?")).await?,
            group_latest: prepare(format!("SELECT {GCOLS} FROM {ks}.messages_by_group WHERE group_id = ? AND bucket = ? LIMIT ?")).await?,
            group_before: prepare(format!("SELECT {GCOLS} FROM {ks}.messages_by_group WHERE group_id = ? AND bucket = ? AND message_id < ? LIMIT ?")).await?,
            group_after: prepare(format!("SELECT {GCOLS} FROM {ks}.messages_by_group WHERE group_id = ? AND bucket = ? AND message_id > ? ORDER BY message_id ASC LIMIT ?")).await?,
            group_message: prepare(format!("SELECT {GCOLS} FROM {ks}.messages_by_group WHERE group_id = ? AND bucket = ? AND message_id = ?")).await?,
            buckets_desc: prepare(format!("SELECT bucket FROM {ks}.group_buckets WHERE group_id = ? AND bucket <= ?")).await?,
            buckets_from: prepare(format!("SELECT bucket FROM {ks}.group_buckets WHERE group_id = ? AND bucket >= ? ORDER BY bucket ASC")).await?,
            conversations: prepare(format!("SELECT conversation_id, last_id, last_ts, last_from, preview, last_deleted, changed_ts FROM {ks}.user_conversations WHERE user_id = ?")).await?,
            group_summary: prepare(format!("SELECT last_id, last_ts, last_from, preview, last_deleted FROM {ks}.group_latest WHERE group_id = ?")).await?,
            marker: prepare(format!("SELECT up_to FROM {ks}.read_markers WHERE user_id = ? AND conversation_id = ?")).await?,
            set_marker: prepare(format!("INSERT INTO {ks}.read_markers (user_id, conversation_id, up_to) VALUES (?, ?, ?) USING TIMESTAMP ?")).await?,
            direct_markers: prepare(format!("SELECT delivered_upto, up_to FROM {ks}.read_markers WHERE user_id = ? AND conversation_id = ?")).await?,
            set_direct_delivered: prepare(format!("UPDATE {ks}.read_markers USING TIMESTAMP ? SET delivered_upto = ? WHERE user_id = ? AND conversation_id = ?")).await?,
            senders_after: prepare(format!("SELECT from_user FROM {ks}.messages_by_conversation WHERE conversation_id = ? AND message_id > ? LIMIT ?")).await?,
            group_senders_after: prepare(format!("SELECT from_user FROM {ks}.messages_by_group WHERE group_id = ? AND bucket = ? AND message_id > ? LIMIT ?")).await?,
            group_marker: prepare(format!("SELECT delivered_upto, read_upto FROM {ks}.group_markers WHERE group_id = ? AND user_id = ?")).await?,
            group_markers: prepare(format!("SELECT user_id, delivered_upto, read_upto FROM {ks}.group_markers WHERE group_id = ?")).await?,
            set_group_delivered: prepare(format!("UPDATE {ks}.group_markers USING TIMESTAMP ? SET delivered_upto = ? WHERE group_id = ? AND user_id = ?")).await?,
            set_group_read: prepare(format!("UPDATE {ks}.group_markers USING TIMESTAMP ? SET read_upto = ? WHERE group_id = ? AND user_id = ?")).await?,
        })
    }
}
