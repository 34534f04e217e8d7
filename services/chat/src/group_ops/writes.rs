//! The writes to the `natter_groups` bucket that make a change: the group record and the
//! membership keys, each returning the bucket revision the system message will carry.

use async_nats::jetstream::kv;
use futures::StreamExt;
use groups::{GroupRecord, MemberRecord, membership};
use protocol::{GroupId, Role, UserId, subjects};

use super::GroupOps;
use crate::refusal::GroupError;

/// Bucket requests one operation keeps in flight.
pub(super) const WRITES_AT_ONCE: usize = 64;

impl GroupOps {
    /// Creates the record of a new group.
    pub(super) async fn create_group(
        &self,
        group: &GroupId,
        record: &GroupRecord,
    ) -> Result<u64, GroupError> {
        self.bucket
            .create(subjects::group_key(group), json(record))
            .await
            .map_err(GroupError::unavailable)
    }

    /// Replaces the group record read at `revision`; refused if it changed since.
    pub(super) async fn update_group(
        &self,
        group: &GroupId,
        record: &GroupRecord,
        revision: u64,
    ) -> Result<u64, GroupError> {
        self.bucket
            .update(subjects::group_key(group), json(record), revision)
            .await
            .map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => GroupError::Changed,
                _ => GroupError::unavailable(e),
            })
    }

    /// Deletes the group record (the last member left).
    pub(super) async fn delete_group(&self, group: &GroupId) -> Result<(), GroupError> {
        self.bucket
            .delete(subjects::group_key(group))
            .await
            .map_err(GroupError::unavailable)
    }

    /// Adds new members, many writes at once; a key that exists already (a member the view
    /// had not seen yet) is left as it is. Returns who was added and the last revision.
    pub(super) async fn create_members(
        &self,
        group: &GroupId,
        users: Vec<UserId>,
        role: Role,
        now: u64,
    ) -> Result<(Vec<UserId>, u64), GroupError> {
        let value = json(&MemberRecord { role, since: now });
        let results: Vec<(UserId, Result<u64, kv::CreateError>)> = futures::stream::iter(users)
            .map(|user| {
                let (bucket, value) = (self.bucket.clone(), value.clone());
                let key = subjects::member_key(group, &user);
                async move { (user, bucket.create(key, value).await) }
            })
            .buffered(WRITES_AT_ONCE)
            .collect()
            .await;
        let mut added = Vec::new();
        let mut rev = 0;
        for (user, result) in results {
            match result {
                Ok(r) => {
                    rev = rev.max(r);
                    added.push(user);
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(GroupError::unavailable(e)),
            }
        }
        Ok((added, rev))
    }

    /// Gives `user` the `role`, keeping their `since` if they are a member already.
    pub(super) async fn put_member(
        &self,
        group: &GroupId,
        user: &UserId,
        role: Role,
        now: u64,
    ) -> Result<u64, GroupError> {
        let since = match membership(&self.bucket, group, user).await? {
            Some(m) => m.since,
            None => now,
        };
        self.put_member_since(group, user, role, since).await
    }

    pub(super) async fn put_member_since(
        &self,
        group: &GroupId,
        user: &UserId,
        role: Role,
        since: u64,
    ) -> Result<u64, GroupError> {
        let record = MemberRecord { role, since };
        self.bucket
            .put(subjects::member_key(group, user), json(&record))
            .await
            .map_err(GroupError::unavailable)
    }

    /// Deletes the membership keys of `users`, many at once, and returns the revision after.
    pub(super) async fn delete_members(
        &self,
        group: &GroupId,
        users: &[UserId],
    ) -> Result<u64, GroupError> {
        let keys: Vec<String> = users
            .iter()
            .map(|user| subjects::member_key(group, user))
            .collect();
        let deleted: Vec<_> = futures::stream::iter(keys)
            .map(|key| {
                let bucket = self.bucket.clone();
                async move { bucket.delete(key).await }
            })
            .buffer_unordered(WRITES_AT_ONCE)
            .collect()
            .await;
        if let Some(Err(e)) = deleted.into_iter().find(Result::is_err) {
            return Err(GroupError::unavailable(e));
        }
        self.revision_after_write().await
    }

    /// The bucket's last revision: a delete does not return the revision it wrote.
    pub(super) async fn revision_after_write(&self) -> Result<u64, GroupError> {
        let mut stream = self
            .js
            .get_stream(subjects::GROUPS_STREAM)
            .await
            .map_err(GroupError::unavailable)?;
        let info = stream.info().await.map_err(GroupError::unavailable)?;
        Ok(info.state.last_sequence)
    }
}

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

pub(super) fn json(value: &impl serde::Serialize) -> bytes::Bytes {
    serde_json::to_vec(value).expect("value to JSON").into()
}
