//! One read of what a gateway may have missed, shared by all its sessions.
//!
//! After the gateway's NATS connection comes back, every session must replay what was routed
//! to the gateway meanwhile, all from the same position (the last delivery before the cut).
//! Each replaying on its own would make one replay's worth of JetStream and history requests
//! per session: a NATS blip would become a storm of the gateway's whole population. Instead
//! the first of them reads every partition once, from that position up to the heads, and the
//! others that asked meanwhile take their own messages from the same read (1:1 conversations
//! they are in, their small groups), in the replay they would have made, with the same
//! ordering, cursors, limits and `synced`.
//!
//! A read serves replays that asked before it began (the same rule as `StreamHead`: a
//! session's registration must be in the head) from the same position. A gap of more than
//! `max_messages` messages in all is not read: each session then replays on its own, which
//! refuses a backlog over its own limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use plumbing::Counter;
use protocol::payloads::StoredMessage;
use protocol::{Cursor, subjects};

use super::stream_head::StreamHead;

/// Everything written to the messages streams after `from`, up to `head`.
pub struct GapRead {
    pub head: Cursor,
    /// Every partition's stream, as read for `head`.
    pub streams: Vec<jetstream::stream::Stream>,
    /// Per partition, in stream order: (sequence, message). Session markers are left out.
    pub messages: Vec<Vec<(u64, Arc<StoredMessage>)>>,
}

type Shared = Result<Arc<GapRead>, String>;

pub struct GapReads {
    /// The most messages one read holds.
    max_messages: u64,
    started: AtomicU64,
    reading: tokio::sync::Mutex<()>,
    /// The newest read: the number it started as, where from, and what it returned.
    last: std::sync::Mutex<Option<(u64, Cursor, Shared)>>,
    reads: Counter,
}

impl GapReads {
    pub fn new(max_messages: u64, reads: Counter) -> Self {
        Self {
            max_messages,
            started: AtomicU64::new(0),
            reading: tokio::sync::Mutex::new(()),
            last: std::sync::Mutex::new(None),
            reads,
        }
    }

    /// What was written after `from`, read after this call began; `None` when the gap is too
    /// large or could not be read (the caller replays on its own).
    pub async fn read(&self, heads: &StreamHead, from: &Cursor) -> Option<Arc<GapRead>> {
        let asked = self.started.load(Ordering::SeqCst);
        let _one = self.reading.lock().await;
        if let Some((n, last_from, read)) = self.last.lock().expect("gap read").as_ref()
            && *n > asked
            && last_from == from
        {
            return read.as_ref().ok().cloned();
        }
        let n = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let read = self.read_now(heads, from).await;
        if let Err(e) = &read {
            tracing::info!(reason = %e, "sessions replay on their own");
        }
        *self.last.lock().expect("gap read") = Some((n, from.clone(), read.clone()));
        read.ok()
    }

    async fn read_now(&self, heads: &StreamHead, from: &Cursor) -> Shared {
        let streams = heads.read().await.map_err(|e| e.to_string())?;
        let head = plumbing::bus::head_of(&streams);
        if head.epoch != from.epoch || head.partitions() != from.partitions() {
            return Err("the position is of another incarnation of the streams".into());
        }
        let behind: u64 = from
            .seqs
            .iter()
            .zip(&head.seqs)
            .map(|(f, h)| h.saturating_sub(*f))
            .sum();
        if behind > self.max_messages {
            return Err(format!("{behind} messages written since"));
        }
        // Trimmed since: each replay answers that itself (`recovered: false`).
        if from
            .seqs
            .iter()
            .zip(&streams)
            .any(|(f, s)| f + 1 < s.cached_info().state.first_sequence)
        {
            return Err("messages after the position were trimmed".into());
        }
        self.reads.inc();
        let reads = streams
            .iter()
            .enumerate()
            .map(|(k, stream)| read_partition(stream, k as u32, from.seqs[k], head.seqs[k]));
        let messages = futures::future::try_join_all(reads)
            .await
            .map_err(|e| format!("gap unreadable: {e}"))?;
        Ok(Arc::new(GapRead {
            head,
            streams,
            messages,
        }))
    }
}

/// Partition `k`'s messages after `from` up to `head`, with an ordered consumer (served by
/// the stream's leader, so complete on a replicated stream too).
async fn read_partition(
    stream: &jetstream::stream::Stream,
    k: u32,
    from: u64,
    head: u64,
) -> anyhow::Result<Vec<(u64, Arc<StoredMessage>)>> {
    let mut messages = Vec::new();
    if from >= head {
        return Ok(messages);
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subjects::partition_messages(k),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from + 1,
            },
            ..Default::default()
        })
        .await?;
    let mut stream = consumer.messages().await?;
    while let Some(msg) = stream.next().await {
        let msg = msg?;
        let info = msg.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        if seq > head {
            break;
        }
        if !subjects::is_session_marker(&msg.subject) {
            match serde_json::from_slice::<StoredMessage>(&msg.payload) {
                Ok(stored) => messages.push((seq, Arc::new(stored))),
                Err(e) => tracing::warn!(error = %e, seq, "unreadable message skipped"),
            }
        }
        if seq == head || pending == 0 {
            break;
        }
    }
    Ok(messages)
}
