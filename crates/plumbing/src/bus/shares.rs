//! Sharing a role's partitions among its running instances.
//!
//! Every instance of a partitioned role (the history writers) keeps a key
//! `<role>.<instance>` in the `natter_instances` bucket, written again every
//! [`HEARTBEAT`]. Each instance watches its role's keys and takes the partitions a fixed rule
//! gives it among the live ones: the live instances sorted by id, partition `k` to the
//! `k mod n`-th. Every instance computes the same answer from the same keys, with no leader
//! and no election, and the partitions are balanced to one of each other whatever `n`.
//!
//! The rule only decides who *pulls* a partition; it is not what keeps two instances from
//! processing one at once. That is JetStream's: each partition's durable consumer is pinned
//! (one client at a time, see `durable.rs`), so while views disagree for a moment after an
//! instance joins or leaves, the newcomer's pulls wait until the old owner stops pulling.
//!
//! An instance is live while its key is younger than [`TTL`] by the server's timestamp; a
//! stopping instance deletes its key, so its partitions move at once, and a crashed one's
//! move after [`TTL`] (plus the pin timeout). The bucket's age limit removes keys of crashed
//! instances for good.
//!
//! While this instance cannot write its own key (the bucket has no leader for a moment, as
//! when a NATS node restarts), or its watch does not bring back its own writes (the watch's
//! consumer sat on a node that left, and is noticed dead only after its idle heartbeat), the
//! others' keys lapse for the same reason, not because they died: it keeps its partitions,
//! and once it writes and sees its writes again the time it was blind does not count against
//! the others ([`Blindness`]). A death during that time is noticed up to one
//! TTL late, never early; before, every instance took every partition and gave them back a
//! few seconds later, and routing stopped for about 3 s meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use protocol::subjects;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{BucketSpec, BusConfig, ensure_bucket};

/// How often an instance writes its key again.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long an instance counts as live after its last write.
pub const TTL: Duration = Duration::from_secs(6);
/// How long a write of our own key may take to come back through the watch before the watch
/// counts as behind (it takes milliseconds).
const WATCH_BEHIND: Duration = Duration::from_secs(2);

/// The instances of partitioned roles, one key each.
pub const INSTANCES: BucketSpec = BucketSpec {
    name: subjects::INSTANCES_BUCKET,
    description: "running instances of partitioned roles: <role>.<instance>",
    max_age: Some(Duration::from_secs(60)),
    marker_ttl: Some(Duration::from_secs(60)),
};

/// The partitions this instance should pull, as they change.
pub type Assigned = watch::Receiver<BTreeSet<u32>>;

/// The partitions of `partitions` that `me` takes among `live` (which includes `me`).
pub fn assign(live: &BTreeSet<String>, me: &str, partitions: u32) -> BTreeSet<u32> {
    let Some(rank) = live.iter().position(|i| i == me) else {
        return BTreeSet::new();
    };
    (0..partitions)
        .filter(|k| *k as usize % live.len() == rank)
        .collect()
}

/// Joins `role`'s instances as `instance`: the partitions of the `cfg.partitions` it should
/// pull, and the task that keeps them current until `stop` (then it leaves, so the others
/// take over at once). The caller runs the task with its other roles, so that a service
/// killed as a whole stops holding its key.
pub async fn join(
    js: &jetstream::Context,
    cfg: &BusConfig,
    role: &'static str,
    instance: String,
    stop: CancellationToken,
) -> anyhow::Result<(
    Assigned,
    impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
)> {
    let bucket = ensure_bucket(js, &INSTANCES, cfg).await?;
    let key = subjects::instance_key(role, &instance);
    bucket.put(&key, bytes::Bytes::new()).await?;
    let watch = bucket
        .watch_with_history(format!("{role}.*"))
        .await
        .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", INSTANCES.name))?;
    // The instances already running, so that a newcomer does not start with everything.
    let mut seen = BTreeMap::new();
    let prefix = format!("{role}.");
    let mut keys = bucket.keys().await?;
    while let Some(k) = keys.next().await {
        let k = k?;
        if let Some(name) = k.strip_prefix(&prefix)
            && let Some(entry) = bucket.entry(&k).await?
        {
            seen.insert(name.to_string(), entry.created);
        }
    }
    let (tx, rx) = watch::channel(assign(&live(&seen, &instance), &instance, cfg.partitions));
    let member = Member {
        bucket,
        key,
        me: instance,
        partitions: cfg.partitions,
    };
    Ok((rx, member.follow(seen, watch, tx, stop)))
}

/// The instances whose last write is younger than [`TTL`], and `me`.
fn live(seen: &BTreeMap<String, time::OffsetDateTime>, me: &str) -> BTreeSet<String> {
    let now = time::OffsetDateTime::now_utc();
    let mut live: BTreeSet<String> = seen
        .iter()
        .filter(|(_, at)| now - **at < TTL)
        .map(|(i, _)| i.clone())
        .collect();
    live.insert(me.to_string());
    live
}

/// This instance's membership.
struct Member {
    bucket: kv::Store,
    key: String,
    me: String,
    partitions: u32,
}

impl Member {
    /// Keeps this instance's key fresh, and recomputes its partitions on every change of the
    /// role's keys and at every heartbeat (an instance that stopped writing lapses). `seen`:
    /// each instance and the server time of its last write.
    async fn follow(
        self,
        mut seen: BTreeMap<String, time::OffsetDateTime>,
        mut watch: kv::Watch,
        tx: watch::Sender<BTreeSet<u32>>,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut ended = Ok(());
        let Self {
            bucket,
            key,
            me,
            partitions,
        } = self;
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut blindness = Blindness::default();
        let mut writing = true;
        // The oldest write of our key acknowledged and not yet seen in the watch, and when.
        let mut unseen: Option<(u64, std::time::Instant)> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = beat.tick() => {
                    match bucket.put(&key, bytes::Bytes::new()).await {
                        Ok(revision) => {
                            writing = true;
                            unseen.get_or_insert((revision, std::time::Instant::now()));
                        }
                        Err(e) => {
                            writing = false;
                            crate::jetstream_error("kv");
                            tracing::warn!(error = %e, "instance heartbeat not written");
                        }
                    }
                }
                entry = watch.next() => match entry {
                    Some(Ok(entry)) => {
                        let instance = entry.key.rsplit('.').next().unwrap_or_default().to_string();
                        if instance == me && unseen.is_some_and(|(rev, _)| entry.revision >= rev) {
                            unseen = None;
                        }
                        match entry.operation {
                            kv::Operation::Put => seen.insert(instance, entry.created),
                            kv::Operation::Delete | kv::Operation::Purge => seen.remove(&instance),
                        };
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "instances watch error"),
                    None => {
                        ended = Err(anyhow::anyhow!("the watch of {} ended", INSTANCES.name));
                        break;
                    }
                },
            }
            let now = time::OffsetDateTime::now_utc();
            let watch_behind = unseen.is_some_and(|(_, at)| at.elapsed() > WATCH_BEHIND);
            if !writing || watch_behind {
                blindness.began(now);
                continue;
            }
            blindness.ended(now, &mut seen);
            let live = live(&seen, &me);
            let mine = assign(&live, &me, partitions);
            tx.send_if_modified(|current| {
                let changed = *current != mine;
                if changed {
                    tracing::info!(instances = live.len(), partitions = ?mine, "partitions shared anew");
                    *current = mine;
                }
                changed
            });
        }
        // Leaving: the others take these partitions over now rather than after the TTL.
        tx.send_replace(BTreeSet::new());
        if let Err(e) = bucket.delete(&key).await {
            tracing::debug!(error = %e, "instance key not deleted");
        }
        ended
    }
}

/// Since when this instance has failed to write its own key, if it has.
#[derive(Default)]
struct Blindness {
    since: Option<time::OffsetDateTime>,
}

impl Blindness {
    fn began(&mut self, now: time::OffsetDateTime) {
        self.since.get_or_insert(now);
    }

    /// The write succeeded again: the others' last writes count as that much later, so that
    /// the time nobody could write does not make them look dead.
    fn ended(
        &mut self,
        now: time::OffsetDateTime,
        seen: &mut BTreeMap<String, time::OffsetDateTime>,
    ) {
        if let Some(since) = self.since.take() {
            let blind = now - since;
            for at in seen.values_mut() {
                *at += blind;
            }
        }
    }

    #[cfg(test)]
    fn is_blind(&self) -> bool {
        self.since.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instances(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_partition_has_exactly_one_owner_and_shares_are_even() {
        for n in 1..=5 {
            let names: Vec<String> = (0..n).map(|i| format!("i{i}")).collect();
            let live: BTreeSet<String> = names.iter().cloned().collect();
            let mut owners = vec![0; 12];
            for name in &names {
                let mine = assign(&live, name, 12);
                assert!(mine.len() >= 12 / n && mine.len() <= 12_usize.div_ceil(n));
                for k in mine {
                    owners[k as usize] += 1;
                }
            }
            assert!(owners.iter().all(|&o| o == 1), "{n} instances: {owners:?}");
        }
    }

    #[test]
    fn time_without_our_own_writes_does_not_count_against_the_others() {
        let start = time::OffsetDateTime::now_utc() - time::Duration::seconds(20);
        let mut seen = BTreeMap::from([("b".to_string(), start)]);
        let mut blindness = Blindness::default();
        blindness.began(start + time::Duration::seconds(1));
        assert!(blindness.is_blind());
        // Blind for 18 s: b's write, 1 s old when we went blind, counts as 1 s old now.
        blindness.ended(start + time::Duration::seconds(19), &mut seen);
        assert!(!blindness.is_blind());
        assert_eq!(seen["b"], start + time::Duration::seconds(18));
        assert!(live(&seen, "a").contains("b"));
        // Not blind: nothing moves.
        blindness.ended(start + time::Duration::seconds(30), &mut seen);
        assert_eq!(seen["b"], start + time::Duration::seconds(18));
    }

    #[test]
    fn an_instance_not_in_the_live_set_takes_nothing() {
        assert!(assign(&instances(&["a", "b"]), "c", 4).is_empty());
        assert_eq!(
            assign(&instances(&["a"]), "a", 3),
            BTreeSet::from([0, 1, 2])
        );
    }
}
