//! Values of the `natter_groups` bucket.

use async_nats::jetstream::kv;
use protocol::{GroupId, Role, UserId, subjects};
use serde::{Deserialize, Serialize};

/// Value of `<group>`: the group's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub name: String,
    pub created_by: UserId,
    /// Milliseconds since the Unix epoch.
    pub created_ts: u64,
}

/// Value of `<group>.<user>`: one membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub role: Role,
    /// When the user joined, milliseconds since the Unix epoch.
    pub since: u64,
}

/// A membership read from the bucket itself (not the view): for decisions that must see the
/// latest write, such as authorising a group operation.
pub async fn membership(
    bucket: &kv::Store,
    group: &GroupId,
    user: &UserId,
) -> anyhow::Result<Option<MemberRecord>> {
    match bucket.get(subjects::member_key(group, user)).await? {
        Some(value) => Ok(Some(serde_json::from_slice(&value)?)),
        None => Ok(None),
    }
}

/// A group's record read from the bucket, with its revision (for a compare-and-set update).
pub async fn group_record(
    bucket: &kv::Store,
    group: &GroupId,
) -> anyhow::Result<Option<(GroupRecord, u64)>> {
    match bucket.entry(subjects::group_key(group)).await? {
        Some(entry) if entry.operation == kv::Operation::Put => Ok(Some((
            serde_json::from_slice(&entry.value)?,
            entry.revision,
        ))),
        _ => Ok(None),
    }
}

/// What a bucket key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Group(GroupId),
    Member(GroupId, UserId),
}

impl Key {
    pub fn parse(key: &str) -> Option<Self> {
        let mut parts = key.split('.');
        let group = GroupId::new(parts.next()?).ok()?;
        match (parts.next(), parts.next()) {
            (None, _) => Some(Key::Group(group)),
            (Some(user), None) => Some(Key::Member(group, UserId::new(user).ok()?)),
            _ => None,
        }
    }

    pub fn render(&self) -> String {
        match self {
            Key::Group(g) => subjects::group_key(g),
            Key::Member(g, u) => subjects::member_key(g, u),
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
        for key in [Key::Group(g.clone()), Key::Member(g, u)] {
            assert_eq!(Key::parse(&key.render()), Some(key));
        }
        for bad in ["", "a.b.c", "a b", "team."] {
            assert_eq!(Key::parse(bad), None, "{bad:?}");
        }
    }
}
