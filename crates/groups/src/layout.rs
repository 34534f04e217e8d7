//! The bucket's keys before groups were sharded (`<group>`, `<group>.<user>`) moved to the
//! sharded layout, once: the chat service does it at start-up, before it serves anything, and
//! marks the bucket [`subjects::GROUPS_SHARDED`] so later starts only read that mark.

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use protocol::subjects;

use crate::records::{Key, delete_key};

/// Moves every key of the layout of before to its sharded key (a membership also gets its
/// entry in the user's list of groups), deletes the old key, and marks the bucket sharded.
/// Returns how many keys were moved. Safe to run twice at once: each move is a put of the
/// same value.
pub async fn shard_keys(
    js: &jetstream::Context,
    bucket: &kv::Store,
    shards: u32,
) -> anyhow::Result<usize> {
    if bucket.get(subjects::GROUPS_LAYOUT_KEY).await?.as_deref()
        == Some(subjects::GROUPS_SHARDED.as_bytes())
    {
        return Ok(0);
    }
    let mut moved = 0;
    let mut keys = bucket.keys().await?;
    while let Some(key) = keys.next().await {
        let key = key?;
        let Some(old) = Key::parse_unsharded(&key) else {
            continue;
        };
        let Some(value) = bucket.get(&key).await? else {
            continue;
        };
        if let Key::Member(group, user) = &old {
            let of_user = Key::GroupOf(user.clone(), group.clone());
            bucket
                .put(of_user.render(shards), Default::default())
                .await?;
        }
        bucket.put(old.render(shards), value).await?;
        delete_key(js, &key).await?;
        moved += 1;
    }
    bucket
        .put(subjects::GROUPS_LAYOUT_KEY, subjects::GROUPS_SHARDED.into())
        .await?;
    if moved > 0 {
        tracing::info!(
            keys = moved,
            shards,
            "groups bucket moved to the sharded layout"
        );
    }
    Ok(moved)
}
