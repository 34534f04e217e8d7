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
//! A read serves the replays the gateway asked for before it began (after its sessions were
//! registered again, so everything lost is in its head), from the same position. That is
//! when the gateway asked, not when each replay got its turn: replays run a few dozen at a
//! time, and a rule of "began after this replay started" made a new read per wave (158 reads
//! for 5,000 sessions, slower than replaying each on its own). The read is indexed by user
//! and by group, so each session finds its own messages without scanning the gap. A gap of
//! more than `max_messages` messages in all is not read: each session then replays on its
//! own, which refuses a backlog over its own limit.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use plumbing::Counter;
use protocol::payloads::StoredMessage;
use protocol::{ConversationId, Cursor, UserId, subjects};

use super::stream_head::StreamHead;

/// One message of the gap: its partition, its sequence there, the message.
type Entry = (u32, u64, Arc<StoredMessage>);

/// Everything written to the messages streams after `from`, up to `head`.
pub struct GapRead {
    pub head: Cursor,
    /// Every partition's stream, as read for `head`.
    pub streams: Vec<jetstream::stream::Stream>,
    /// The 1:1 messages, under each participant, in stream order within each partition.
    direct: HashMap<UserId, Vec<Entry>>,
    /// The group messages, under their conversation, likewise.
    groups: HashMap<ConversationId, Vec<Entry>>,
}

impl GapRead {
    /// `user`'s messages (1:1, and of the groups `small`), per partition in stream order.
    pub fn messages_of(
        &self,
        user: &UserId,
        small: &[ConversationId],
    ) -> Vec<VecDeque<(u64, StoredMessage)>> {
        let mut mine: Vec<Vec<(u64, StoredMessage)>> = vec![Vec::new(); self.streams.len()];
        let groups = small.iter().filter_map(|c| self.groups.get(c));
        for entries in self.direct.get(user).into_iter().chain(groups) {
            for (k, seq, m) in entries {
                mine[*k as usize].push((*seq, StoredMessage::clone(m)));
            }
        }
        mine.into_iter()
            .map(|mut v| {
                v.sort_by_key(|(seq, _)| *seq);
                v.into()
            })
            .collect()
    }
}

type Shared = Result<Arc<GapRead>, String>;

/// The newest read: when it began, where from, and what it returned.
type Last = Option<(Instant, Cursor, Shared)>;

/// How long a read is kept for replays that have yet to get their turn; then its memory is
/// given back (a replay asking later reads again).
const KEEP: Duration = Duration::from_secs(120);

pub struct GapReads {
    /// The most messages one read holds.
    max_messages: u64,
    /// One read at a time.
    last: Arc<tokio::sync::Mutex<Last>>,
    reads: Counter,
    /// Counts the consumers it creates (JetStream API requests).
    api: Counter,
}

impl GapReads {
    pub fn new(max_messages: u64, reads: Counter, api: Counter) -> Self {
        Self {
            max_messages,
            last: Arc::default(),
            reads,
            api,
        }
    }

    /// What was written after `from`, read after `asked`; `None` when the gap is too large or
    /// could not be read (the caller replays on its own).
    pub async fn read(
        &self,
        heads: &StreamHead,
        from: &Cursor,
        asked: Instant,
    ) -> Option<Arc<GapRead>> {
        let mut last = self.last.lock().await;
        if let Some((began, last_from, read)) = last.as_ref()
            && *began >= asked
            && last_from == from
        {
            return read.as_ref().ok().cloned();
        }
        let began = Instant::now();
        let read = self.read_now(heads, from).await;
        if let Err(e) = &read {
            tracing::info!(reason = %e, "sessions replay on their own");
        }
        *last = Some((began, from.clone(), read.clone()));
        self.forget_later(began);
        read.ok()
    }

    /// Drops the read that began at `began` after `KEEP`, unless a newer one replaced it.
    fn forget_later(&self, began: Instant) {
        let last = Arc::downgrade(&self.last);
        tokio::spawn(async move {
            tokio::time::sleep(KEEP).await;
            if let Some(last) = last.upgrade() {
                let mut last = last.lock().await;
                if last.as_ref().is_some_and(|(b, ..)| *b == began) {
                    *last = None;
                }
            }
        });
    }

    async fn read_now(&self, heads: &StreamHead, from: &Cursor) -> Shared {
        if self.max_messages == 0 {
            return Err("shared reads are off (sync_gap_read_max_messages = 0)".into());
        }
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
        let with_news = from.seqs.iter().zip(&head.seqs).filter(|(f, h)| f < h);
        self.api.add(with_news.count() as u64);
        let reads = streams
            .iter()
            .enumerate()
            .map(|(k, stream)| read_partition(stream, k as u32, from.seqs[k], head.seqs[k]));
        let partitions = futures::future::try_join_all(reads)
            .await
            .map_err(|e| format!("gap unreadable: {e}"))?;
        let (mut direct, mut groups) = (HashMap::new(), HashMap::new());
        for (k, messages) in partitions.into_iter().enumerate() {
            for (seq, m) in messages {
                let c = &m.message.conversation;
                let entry = (k as u32, seq, m.clone());
                if c.is_direct() {
                    let (from, to) = (&m.message.from, &m.message.to);
                    direct
                        .entry(from.clone())
                        .or_insert_with(Vec::new)
                        .push(entry.clone());
                    if to != from {
                        direct
                            .entry(to.clone())
                            .or_insert_with(Vec::new)
                            .push(entry);
                    }
                } else {
                    groups.entry(c.clone()).or_insert_with(Vec::new).push(entry);
                }
            }
        }
        Ok(Arc::new(GapRead {
            head,
            streams,
            direct,
            groups,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_read_is_kept_for_a_while_then_given_back_unless_replaced() {
        let reads = GapReads::new(10, Counter::default(), Counter::default());
        let remember = async |began: Instant| {
            let read = GapRead {
                head: Cursor::head(1, 5, 1),
                streams: Vec::new(),
                direct: HashMap::new(),
                groups: HashMap::new(),
            };
            *reads.last.lock().await = Some((began, Cursor::head(1, 1, 1), Ok(Arc::new(read))));
            reads.forget_later(began);
        };
        let first = Instant::now();
        remember(first).await;
        tokio::time::sleep(KEEP / 2).await;
        assert!(
            reads.last.lock().await.is_some(),
            "kept for replays still to come"
        );
        tokio::time::sleep(KEEP).await;
        assert!(reads.last.lock().await.is_none(), "given back");

        // A newer read is not dropped by the older one's timer.
        remember(first).await;
        tokio::time::sleep(KEEP / 2).await;
        let second = Instant::now() + Duration::from_millis(1);
        remember(second).await;
        tokio::time::sleep(KEEP * 3 / 4).await;
        let kept = reads.last.lock().await.as_ref().map(|(b, ..)| *b);
        assert_eq!(kept, Some(second));
        tokio::time::sleep(KEEP).await;
        assert!(reads.last.lock().await.is_none());
    }
}
