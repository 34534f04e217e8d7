//! Reads and writes of the ScyllaDB store that only groups need: pages walking the day
//! buckets, the newest message of each group, per-member markers; and unread counts (for
//! 1:1 conversations too).

use futures::{StreamExt, TryStreamExt};
use protocol::frames::{ConversationSummary, Message};
use protocol::{ConversationId, GroupId, MessageId, UserId};
use scylla::statement::prepared::PreparedStatement;

use super::rows::{GroupRow, SummaryRow, parse_id, to_group_message, to_summary};
use super::{ScyllaStore, err, write_ts};
use crate::store::{Page, Store, StoreError, UNREAD_CAP, bucket_of};

/// Group summaries read at once when listing a user's conversations.
const GROUP_READS_IN_FLIGHT: usize = 32;

impl ScyllaStore {
    pub(super) async fn group_page(
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
            let rows: Vec<GroupRow> = match page {
                Page::Latest => self.rows(&self.st.group_latest, (g, bucket, left)).await?,
                Page::Before(id) => {
                    self.rows(&self.st.group_before, (g, bucket, id.to_string(), left))
                        .await?
                }
                Page::After(id) => {
                    self.rows(&self.st.group_after, (g, bucket, id.to_string(), left))
                        .await?
                }
            };
            for row in rows {
                out.push(to_group_message(conversation, group, row)?);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The newest message of each group that has one.
    pub(super) async fn group_summaries(
        &self,
        groups: &[GroupId],
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        // Owned ids: a closure over borrowed ones does not prove its future `Send`.
        let reads = groups.iter().cloned().map(|group| async move {
            let row: Option<SummaryRow> = self
                .rows(&self.st.group_summary, (group.as_str(),))
                .await?
                .into_iter()
                .next();
            row.map(|r| to_summary(ConversationId::group(&group), r))
                .transpose()
        });
        let found: Vec<Option<ConversationSummary>> = futures::stream::iter(reads)
            .buffer_unordered(GROUP_READS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// `user`'s (delivered, read) markers in `group`.
    pub(super) async fn group_marker(
        &self,
        group: &GroupId,
        user: &UserId,
    ) -> Result<(Option<MessageId>, Option<MessageId>), StoreError> {
        let row: Option<(Option<String>, Option<String>)> = self
            .rows(&self.st.group_marker, (group.as_str(), user.as_str()))
            .await?
            .into_iter()
            .next();
        let (delivered, read) = row.unwrap_or_default();
        Ok((parse_id(delivered)?, parse_id(read)?))
    }

    /// Messages from others after the user's read marker, up to the cap.
    pub(super) async fn unread(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> Result<u32, StoreError> {
        let marker = self
            .read_marker(user, conversation)
            .await?
            .map(|id| id.to_string())
            .unwrap_or_default();
        let scan = (UNREAD_CAP * 4) as i32;
        let from_others = |senders: Vec<String>| {
            senders
                .iter()
                .filter(|f| f.as_str() != user.as_str())
                .count() as u32
        };
        let Some(group) = conversation.group_id() else {
            let senders = self
                .column(
                    &self.st.senders_after,
                    (conversation.as_str(), marker.as_str(), scan),
                )
                .await?;
            return Ok(from_others(senders).min(UNREAD_CAP));
        };
        // Walk the day buckets from the marker's, stopping once the cap is reached.
        let from = marker.parse::<MessageId>().map(bucket_of).unwrap_or(0) as i64;
        let mut unread = 0;
        for bucket in self
            .column::<i64>(&self.st.buckets_from, (group.as_str(), from))
            .await?
        {
            let senders = self
                .column(
                    &self.st.group_senders_after,
                    (group.as_str(), bucket, marker.as_str(), scan),
                )
                .await?;
            unread += from_others(senders);
            if unread >= UNREAD_CAP {
                break;
            }
        }
        Ok(unread.min(UNREAD_CAP))
    }

    pub(super) async fn set_group_marker(
        &self,
        st: &PreparedStatement,
        group: &GroupId,
        user: &UserId,
        up_to: MessageId,
    ) -> Result<(), StoreError> {
        // Written at the message's timestamp: an older id loses to a newer one, and a replay
        // of the same id rewrites the same value.
        self.session
            .execute_unpaged(
                st,
                (
                    write_ts(up_to),
                    up_to.to_string(),
                    group.as_str(),
                    user.as_str(),
                ),
            )
            .await
            .map_err(err)?;
        Ok(())
    }
}
