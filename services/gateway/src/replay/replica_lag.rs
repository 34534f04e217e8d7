//! Whether a consumer's "nothing more" can be believed on a replicated stream.
//!
//! A replay's consumers are R1: the server places each on any active peer of the stream
//! (`createGroupForConsumer` shuffles them), not on the leader, and a consumer delivers
//! from its own server's copy. A follower a few writes behind (a node that has just come
//! back, or one slowed down) then reports nothing pending while the leader has messages up
//! to the replay's head: the replay would end there, claim the head, and the messages live
//! routing held for the device meanwhile would be dropped as covered. So when a consumer
//! runs dry before the head, the stream's leader is asked (`STREAM.MSG.GET`, which only
//! the leader answers) for the next message of each filter.
//!
//! One request per filter, only on replicated streams, only when a read ends before the
//! head: a single-node deployment pays nothing.

use async_nats::jetstream::stream::Stream;
use plumbing::Counter;

/// Whether `stream` has a message of one of `filters` after `after` and up to `head`, by
/// its leader; `Ok(false)` at once for a stream of one replica (its consumers read the only
/// copy).
pub async fn leader_has_more(
    stream: &Stream,
    filters: &[String],
    after: u64,
    head: u64,
    api: &Counter,
) -> anyhow::Result<bool> {
    if after >= head || stream.cached_info().config.num_replicas <= 1 {
        return Ok(false);
    }
    for filter in filters {
        api.inc();
        if plumbing::bus::first_from(stream, filter, after + 1)
            .await?
            .is_some_and(|m| m.sequence <= head)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The error of a read that ran dry on a replica behind its leader: the replay is tried
/// again (on a new consumer, placed anew).
pub fn lagging() -> anyhow::Error {
    anyhow::anyhow!("the replica serving the replay is behind the stream's leader")
}
