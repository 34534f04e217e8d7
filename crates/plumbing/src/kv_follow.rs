//! Following a KV bucket into an in-memory view: replay the bucket's history, then apply its
//! changes as they come, and publish how far the view has got, so a reader that knows the
//! revision of a write can wait until the view has applied it.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How far a view has applied one bucket: the highest revision applied.
#[derive(Clone)]
pub struct Progress {
    applied: watch::Receiver<u64>,
    /// The bucket's last revision when following began.
    initial: u64,
}

impl Progress {
    /// Starts following `bucket` (named `name`): replays its history through `apply`, then
    /// applies changes until `stop`.
    pub async fn follow(
        js: &jetstream::Context,
        bucket: &kv::Store,
        name: &str,
        apply: impl FnMut(&kv::Entry) + Send + 'static,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        Self::follow_keys(js, bucket, name, ">", apply, stop).await
    }

    /// Like [`Progress::follow`], for the keys matching `keys` only (`<shard>.>`). Revisions
    /// are the bucket's: the view has applied revision `r` once it has applied every change
    /// of its keys up to `r`.
    pub async fn follow_keys(
        js: &jetstream::Context,
        bucket: &kv::Store,
        name: &str,
        keys: &str,
        apply: impl FnMut(&kv::Entry) + Send + 'static,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let mut stream = js.get_stream(format!("KV_{name}")).await?;
        let info = stream.info().await?.state.clone();
        let last = info.last_sequence;
        let empty = if keys == ">" {
            info.messages == 0
        } else {
            // The newest message of those keys, read from the stream's leader; none means
            // nothing to replay.
            let filter = format!("$KV.{name}.{keys}");
            match stream.get_last_raw_message_by_subject(&filter).await {
                Ok(_) => false,
                Err(e)
                    if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
                {
                    true
                }
                Err(e) => return Err(e.into()),
            }
        };
        // With nothing to replay, the view is as fresh as the bucket's last revision;
        // otherwise it is once the replay is done (see `apply_changes`).
        let (applied_tx, applied) = watch::channel(if empty { last } else { 0 });
        let watch = bucket.watch_with_history(keys).await?;
        tokio::spawn(apply_changes(
            name.to_string(),
            watch,
            apply,
            applied_tx,
            last,
            stop,
        ));
        Ok(Self {
            applied,
            initial: last,
        })
    }

    /// Waits until the view holds everything written before following began (at most
    /// `patience`); `false` if it did not by then.
    pub async fn loaded(&self, patience: Duration) -> bool {
        self.reach(self.initial, patience).await
    }

    /// Waits until the change with revision `rev` is applied (at most `patience`); `false`
    /// if it was not by then.
    pub async fn reach(&self, rev: u64, patience: Duration) -> bool {
        let mut applied = self.applied.clone();
        tokio::time::timeout(patience, applied.wait_for(|r| *r >= rev))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The highest revision applied so far.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }
}

/// Applies a bucket's changes until `stop`, publishing the revision applied.
async fn apply_changes(
    name: String,
    mut watch: kv::Watch,
    mut apply: impl FnMut(&kv::Entry),
    applied: watch::Sender<u64>,
    initial_last: u64,
    stop: CancellationToken,
) {
    loop {
        let entry = tokio::select! {
            _ = stop.cancelled() => return,
            next = watch.next() => match next {
                Some(Ok(entry)) => entry,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, bucket = %name, "KV watch error");
                    continue;
                }
                None => return,
            },
        };
        apply(&entry);
        // Once the replay is done, everything up to the bucket's last revision at start is in.
        let rev = if entry.delta == 0 {
            entry.revision.max(initial_last)
        } else {
            entry.revision
        };
        applied.send_if_modified(|cur| {
            let newer = rev > *cur;
            if newer {
                *cur = rev;
            }
            newer
        });
    }
}
