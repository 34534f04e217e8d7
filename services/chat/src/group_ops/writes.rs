//! The writes to the `natter_groups` bucket that make a change: the group record, the
//! membership keys and the users' lists of groups, each returning the bucket revision the
//! system message will carry (that of a key in the group's shard, the only revisions the
//! shard's view reaches).

use async_nats::jetstream::kv;
use futures::StreamExt;
use groups::{GroupRecord, MemberRecord, delete_key, membership};
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
            .create(subjects::group_key(group, self.partitions), json(record))
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
        let key = subjects::group_key(group, self.partitions);
        self.bucket
            .update(key, json(record), revision)
            .await
            .map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => GroupError::Changed,
                _ => GroupError::unavailable(e),
            })
    }

    /// Deletes the group record (the last member left).
    pub(super) async fn delete_group(&self, group: &GroupId) -> Result<u64, GroupError> {
        let key = subjects::group_key(group, self.partitions);
        Ok(delete_key(&self.js, &key).await?)
    }

    /// Adds new members, many writes at once; a key that exists already (a member added
    /// meanwhile) is left as it is. Returns who was added and the revision of the last
    /// membership written.
    ///
    /// Each user's list of groups gets its entry first and loses it last (`delete_members`):
    /// the lists may name a group a user is no longer in after a failure between the two
    /// writes, never miss one, and readers check the membership itself.
    pub(super) async fn create_members(
        &self,
        group: &GroupId,
        users: Vec<UserId>,
        role: Role,
        now: u64,
    ) -> Result<(Vec<UserId>, u64), GroupError> {
        let value = json(&MemberRecord { role, since: now });
        let results: Vec<(UserId, Result<u64, GroupError>)> = futures::stream::iter(users)
            .map(|user| {
                let value = value.clone();
                async move {
                    let created = async {
                        self.list_in_groups_of(&user, group).await?;
                        let key = subjects::member_key(group, &user, self.partitions);
                        match self.bucket.create(key, value).await {
                            Ok(rev) => Ok(rev),
                            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(0),
                            Err(e) => Err(GroupError::unavailable(e)),
                        }
                    };
                    (user.clone(), created.await)
                }
            })
            .buffered(WRITES_AT_ONCE)
            .collect()
            .await;
        let mut added = Vec::new();
        let mut rev = 0;
        for (user, result) in results {
            match result? {
                0 => {}
                r => {
                    rev = rev.max(r);
                    added.push(user);
                }
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
        let since = match membership(&self.bucket, group, user, self.partitions).await? {
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
        self.list_in_groups_of(user, group).await?;
        let record = MemberRecord { role, since };
        self.bucket
            .put(
                subjects::member_key(group, user, self.partitions),
                json(&record),
            )
            .await
            .map_err(GroupError::unavailable)
    }

    /// Deletes the membership keys of `users`, many at once, then their entries in the users'
    /// lists of groups; returns the revision of the last membership deleted.
    pub(super) async fn delete_members(
        &self,
        group: &GroupId,
        users: &[UserId],
    ) -> Result<u64, GroupError> {
        let deleted: Vec<anyhow::Result<u64>> = futures::stream::iter(users.to_vec())
            .map(|user| async move {
                let rev = delete_key(
                    &self.js,
                    &subjects::member_key(group, &user, self.partitions),
                )
                .await?;
                let listed = subjects::user_group_key(&user, group, self.partitions);
                delete_key(&self.js, &listed).await?;
                Ok(rev)
            })
            .buffer_unordered(WRITES_AT_ONCE)
            .collect()
            .await;
        let mut rev = 0;
        for result in deleted {
            rev = rev.max(result?);
        }
        Ok(rev)
    }

    /// Puts `group` in `user`'s list of groups (the value is not read: the key says it).
    async fn list_in_groups_of(&self, user: &UserId, group: &GroupId) -> Result<(), GroupError> {
        let key = subjects::user_group_key(user, group, self.partitions);
        self.bucket
            .put(key, bytes::Bytes::new())
            .await
            .map_err(GroupError::unavailable)?;
        Ok(())
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
