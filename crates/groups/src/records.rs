//! Values and keys of the `natter_groups` bucket.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv};
use protocol::{GroupId, Role, UserId, subjects};
use serde::{Deserialize, Serialize};

/// Value of `<k>.g.<group>`: the group's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub name: String,
    pub created_by: UserId,
    /// Milliseconds since the Unix epoch.
    pub created_ts: u64,
}

/// Value of `<k>.m.<group>.<user>`: one membership. (`<j>.u.<user>.<group>`, the entry of
/// the user's list of groups, has the same value.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub role: Role,
    /// When the user joined, milliseconds since the Unix epoch.
    pub since: u64,
}

/// A membership read from the bucket itself (not a view): for decisions that must see the
/// latest write, such as authorising a group operation or a send.
pub async fn membership(
    bucket: &kv::Store,
    group: &GroupId,
    user: &UserId,
    shards: u32,
) -> anyhow::Result<Option<MemberRecord>> {
    match bucket
        .get(subjects::member_key(group, user, shards))
        .await?
    {
        Some(value) => Ok(Some(serde_json::from_slice(&value)?)),
        None => Ok(None),
    }
}

/// A group's record read from the bucket, with its revision (for a compare-and-set update).
pub async fn group_record(
    bucket: &kv::Store,
    group: &GroupId,
    shards: u32,
) -> anyhow::Result<Option<(GroupRecord, u64)>> {
    match bucket.entry(subjects::group_key(group, shards)).await? {
        Some(entry) if entry.operation == kv::Operation::Put => Ok(Some((
            serde_json::from_slice(&entry.value)?,
            entry.revision,
        ))),
        _ => Ok(None),
    }
}

/// Deletes `key` of the groups bucket and returns the revision of the deletion (the KV API's
/// delete does not say it, and a shard's view can only wait for revisions of its own keys).
pub async fn delete_key(js: &jetstream::Context, key: &str) -> anyhow::Result<u64> {
    let mut headers = HeaderMap::new();
    headers.insert("KV-Operation", "DEL");
    let subject = format!("$KV.{}.{key}", subjects::GROUPS_BUCKET);
    let ack = js
        .publish_with_headers(subject, headers, Default::default())
        .await?
        .await?;
    Ok(ack.sequence)
}

/// What a bucket key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Group(GroupId),
    Member(GroupId, UserId),
    /// An entry of a user's list of groups.
    GroupOf(UserId, GroupId),
}

impl Key {
    /// A key of the sharded layout (`<k>.g.…`, `<k>.m.…`, `<k>.u.…`).
    pub fn parse(key: &str) -> Option<Self> {
        let mut parts = key.split('.');
        parts.next()?.parse::<u32>().ok()?;
        let key = match (parts.next()?, parts.next()?, parts.next()) {
            ("g", group, None) => Key::Group(GroupId::new(group).ok()?),
            ("m", group, Some(user)) => {
                Key::Member(GroupId::new(group).ok()?, UserId::new(user).ok()?)
            }
            ("u", user, Some(group)) => {
                Key::GroupOf(UserId::new(user).ok()?, GroupId::new(group).ok()?)
            }
            _ => return None,
        };
        parts.next().is_none().then_some(key)
    }

    /// A key of the layout before groups were sharded: `<group>` or `<group>.<user>`.
    pub fn parse_unsharded(key: &str) -> Option<Self> {
        let mut parts = key.split('.');
        let first = parts.next()?;
        if first.parse::<u32>().is_ok() || first == subjects::GROUPS_LAYOUT_KEY {
            return None;
        }
        let group = GroupId::new(first).ok()?;
        match (parts.next(), parts.next()) {
            (None, _) => Some(Key::Group(group)),
            (Some(user), None) => Some(Key::Member(group, UserId::new(user).ok()?)),
            _ => None,
        }
    }

    pub fn render(&self, shards: u32) -> String {
        match self {
            Key::Group(g) => subjects::group_key(g, shards),
            Key::Member(g, u) => subjects::member_key(g, u, shards),
            Key::GroupOf(u, g) => subjects::user_group_key(u, g, shards),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back() {
        let g = GroupId::new("team").unwrap();
        let u = UserId::new("bob").unwrap();
        for key in [
            Key::Group(g.clone()),
            Key::Member(g.clone(), u.clone()),
            Key::GroupOf(u, g),
        ] {
            for shards in [1, 7] {
                assert_eq!(Key::parse(&key.render(shards)), Some(key.clone()));
            }
        }
        for bad in [
            "", "team", "team.bob", "1.g", "1.x.team", "1.m.team", "1.g.a.b", "a b",
        ] {
            assert_eq!(Key::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn keys_of_before_sharding_are_told_apart() {
        let g = GroupId::new("01HGROUP").unwrap();
        let u = UserId::new("bob").unwrap();
        assert_eq!(
            Key::parse_unsharded("01HGROUP"),
            Some(Key::Group(g.clone()))
        );
        assert_eq!(
            Key::parse_unsharded("01HGROUP.bob"),
            Some(Key::Member(g.clone(), u.clone()))
        );
        for sharded in [Key::Group(g.clone()), Key::Member(g, u)] {
            assert_eq!(Key::parse_unsharded(&sharded.render(3)), None);
        }
        assert_eq!(Key::parse_unsharded(subjects::GROUPS_LAYOUT_KEY), None);
    }

    #[test]
    fn a_groups_records_share_its_partition_and_a_users_list_its_shard() {
        let g = GroupId::new("01HGROUP").unwrap();
        let u = UserId::new("bob").unwrap();
        let k = subjects::group_shard(&g, 8);
        assert_eq!(
            k,
            subjects::partition(&protocol::ConversationId::group(&g), 8)
        );
        assert!(subjects::group_key(&g, 8).starts_with(&format!("{k}.g.")));
        assert!(subjects::member_key(&g, &u, 8).starts_with(&format!("{k}.m.")));
        let j = subjects::user_shard(&u, 8);
        assert!(subjects::user_group_key(&u, &g, 8).starts_with(&format!("{j}.u.")));
    }
}
