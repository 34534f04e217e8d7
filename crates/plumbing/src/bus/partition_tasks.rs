//! One task per partition this instance is assigned (`shares`), for the roles that pull a
//! pinned durable consumer per partition: the history writers and the routers. The tasks
//! start and stop as the assignment changes; a task that could not start or stopped by
//! itself (NATS was unreachable) is started again at the next check.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::stream::Stream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::release_pin;
use super::shares::Assigned;

/// How often tasks that could not start, or stopped by themselves, are started again.
const RESTART_CHECK: Duration = Duration::from_secs(1);

/// A partition's task: it returns how many messages it received.
pub type PartitionTask = JoinHandle<anyhow::Result<u64>>;

/// What a partitioned role does with each of its partitions.
pub trait PartitionWork: Send + Sync {
    /// For logs: "history writer", "router".
    const ROLE: &'static str;

    /// Partition `k`'s stream, which its consumer reads.
    fn stream(&self, k: u32) -> &Stream;

    /// Partition `k`'s pinned durable consumer.
    fn consumer(&self, k: u32) -> String;

    /// Starts partition `k`'s task, to run until `stop`.
    fn start(
        &self,
        k: u32,
        stop: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<PartitionTask>> + Send;

    /// Partition `k`'s task has stopped (its pin is released).
    fn stopped(&self, k: u32) -> impl Future<Output = ()> + Send;
}

struct Running {
    stop: CancellationToken,
    task: PartitionTask,
}

/// Runs `work`'s task for every partition this instance is assigned, until `stop`.
pub async fn run_partitions<W: PartitionWork>(
    work: W,
    mut assigned: Assigned,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut running: HashMap<u32, Running> = HashMap::new();
    let mut check = tokio::time::interval(RESTART_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let want = assigned.borrow_and_update().clone();
        let gone: Vec<u32> = running
            .iter()
            .filter(|(k, t)| !want.contains(k) || t.task.is_finished())
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            let task = running.remove(&k).expect("running");
            hand_over(&work, k, task).await;
        }
        for &k in &want {
            // Starting takes a round trip per partition: one given away meanwhile is not
            // started (its pulls would hold the pin the new owner needs).
            if running.contains_key(&k) || !assigned.borrow().contains(&k) {
                continue;
            }
            let token = stop.child_token();
            match work.start(k, token.clone()).await {
                Ok(task) => {
                    tracing::info!(partition = k, role = W::ROLE, "partition taken");
                    running.insert(k, Running { stop: token, task });
                }
                Err(e) => {
                    tracing::warn!(error = %e, partition = k, role = W::ROLE, "partition not started")
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = assigned.changed() => if changed.is_err() { break },
            _ = check.tick() => {}
        }
    }
    for (k, task) in running {
        hand_over(&work, k, task).await;
    }
    Ok(())
}

/// Stops partition `k`'s task after what it is doing, and releases the pin if it held it, so
/// the next owner starts at once.
async fn hand_over<W: PartitionWork>(work: &W, k: u32, running: Running) {
    running.stop.cancel();
    let received = match running.task.await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, partition = k, role = W::ROLE, "partition task failed");
            0
        }
        Err(e) => {
            tracing::warn!(error = %e, partition = k, role = W::ROLE, "partition task panicked");
            0
        }
    };
    // Released whether or not anything was received: the server pins a client at its first
    // pull, and a pin left to time out stalls the partition for the pin timeout, while the
    // messages already on their way to this task wait for the ack wait. If another instance
    // holds the pin after all (this task never got it), releasing costs that instance one
    // pull: it is pinned again at once.
    if let Err(e) = release_pin(work.stream(k), &work.consumer(k)).await {
        tracing::debug!(error = %e, partition = k, "pin not released");
    }
    work.stopped(k).await;
    tracing::info!(
        partition = k,
        role = W::ROLE,
        received,
        "partition handed over"
    );
}
