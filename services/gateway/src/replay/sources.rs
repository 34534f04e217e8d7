//! Where a replay reads from: one conversation's literal subject with batched direct gets
//! (the usual way), or a short-lived consumer over the user's subjects (when the index of
//! changed conversations cannot be trusted). Each yields its messages in stream order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use plumbing::Counter;
use protocol::payloads::StoredMessage;
use protocol::{ConversationId, Cursor, UserId, subjects};

use super::direct_get::{self, DirectGets};
use super::replica_lag;

/// Messages left on one subject past which it is read with a consumer.
const LONG_BACKLOG: u64 = 1024;
/// How long an abandoned replay consumer lives on the server.
const CONSUMER_IDLE: Duration = Duration::from_secs(30);

/// One source of a replay, within one partition's stream, and what was read from it but not
/// sent yet.
pub struct Source {
    partition: u32,
    reader: Reader,
    buffered: VecDeque<(u64, StoredMessage)>,
    /// Matching messages after the buffered ones, as the last read counted them (including
    /// any written after the replay's head).
    pending: u64,
    /// Nothing more to read from it (up to the replay's head).
    exhausted: bool,
    /// Counts the JetStream API requests it makes (consumer creation and deletion).
    api: Counter,
}

enum Reader {
    /// One subject, read from `next` on.
    Subject {
        reads: Arc<DirectGets>,
        subject: String,
        next: u64,
    },
    Consumer {
        consumer: Box<consumer::PullConsumer>,
        /// Its filters, to ask the stream's leader when it runs dry (`replica_lag`).
        filters: Vec<String>,
        /// The last sequence it delivered (before the first: the one before its start).
        last: u64,
    },
    /// Everything was read before (a shared gap read).
    Done,
}

impl Source {
    /// A conversation's subject, from `from` on. Until its first read it is assumed to hold
    /// something.
    pub fn subject(
        reads: Arc<DirectGets>,
        partition: u32,
        subject: String,
        from: u64,
        api: Counter,
    ) -> Self {
        Self {
            partition,
            reader: Reader::Subject {
                reads,
                subject,
                next: from,
            },
            buffered: VecDeque::new(),
            pending: 1,
            exhausted: false,
            api,
        }
    }

    /// Messages read already, in stream order: nothing more to read.
    pub fn preloaded(partition: u32, messages: VecDeque<(u64, StoredMessage)>) -> Self {
        Self {
            partition,
            reader: Reader::Done,
            buffered: messages,
            pending: 0,
            exhausted: true,
            // It makes no requests.
            api: Counter::default(),
        }
    }

    /// The partition whose stream it reads.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Whether it should be read before the next message is picked.
    pub fn needs_reading(&self) -> bool {
        self.buffered.is_empty() && !self.exhausted
    }

    pub fn has_buffered(&self) -> bool {
        !self.buffered.is_empty()
    }

    /// The sequence of the next buffered message.
    pub fn next_seq(&self) -> u64 {
        self.buffered.front().map_or(u64::MAX, |(seq, _)| *seq)
    }

    /// The time of the next buffered message.
    pub fn next_ts(&self) -> u64 {
        self.buffered
            .front()
            .map_or(u64::MAX, |(_, m)| m.message.ts)
    }

    pub fn pop(&mut self) -> (u64, StoredMessage) {
        self.buffered.pop_front().expect("a buffered message")
    }

    /// Messages read and still to read.
    pub fn waiting(&self) -> u64 {
        if self.exhausted {
            self.buffered.len() as u64
        } else {
            self.buffered.len() as u64 + self.pending
        }
    }

    /// Reads up to `batch` more messages, none beyond `head`. A subject with a long backlog
    /// left moves to a consumer of its own: a consumer streams a long run of messages at
    /// about twice the rate of direct gets, and its creation is paid once for thousands.
    pub async fn fill(
        &mut self,
        stream: &jetstream::stream::Stream,
        batch: usize,
        head: u64,
    ) -> anyhow::Result<()> {
        if let Reader::Subject { subject, next, .. } = &self.reader
            && self.pending > LONG_BACKLOG
        {
            let filters = std::slice::from_ref(subject);
            let mut source = open(stream, self.partition, filters, *next, self.api.clone()).await?;
            source.buffered = std::mem::take(&mut self.buffered);
            *self = source;
        }
        match &mut self.reader {
            Reader::Subject {
                reads,
                subject,
                next,
            } => {
                let request = direct_get::Request {
                    seq: *next,
                    next_by_subj: Some(subject),
                    batch: batch as u64,
                    min_last_seq: head,
                    ..Default::default()
                };
                let name = &stream.cached_info().config.name;
                let entries = reads.batch(name, &request).await?;
                self.exhausted = true;
                for entry in entries {
                    if entry.seq > head {
                        break; // live traffic from here on
                    }
                    *next = entry.seq + 1;
                    self.pending = entry.pending;
                    self.exhausted = entry.seq == head || entry.pending == 0;
                    buffer(&mut self.buffered, entry.seq, &entry.payload);
                }
            }
            Reader::Consumer {
                consumer,
                filters,
                last,
            } => {
                let mut batch = consumer.fetch().max_messages(batch).messages().await?;
                self.exhausted = true;
                let mut reached_head = false;
                while let Some(msg) = batch.next().await {
                    let msg = msg.map_err(|e| anyhow::anyhow!("replay read: {e}"))?;
                    let info = msg
                        .info()
                        .map_err(|e| anyhow::anyhow!("replay read: {e}"))?;
                    let seq = info.stream_sequence;
                    if seq > head {
                        reached_head = true;
                        break; // live traffic from here on
                    }
                    *last = seq;
                    self.pending = info.pending;
                    buffer(&mut self.buffered, seq, &msg.payload);
                    reached_head = seq == head;
                    self.exhausted = reached_head || info.pending == 0;
                    if self.exhausted {
                        break;
                    }
                }
                if self.exhausted
                    && !reached_head
                    && replica_lag::leader_has_more(stream, filters, *last, head, &self.api).await?
                {
                    return Err(replica_lag::lagging());
                }
            }
            Reader::Done => self.exhausted = true,
        }
        Ok(())
    }

    /// Deletes a consumer in the background (it would expire by itself).
    pub fn discard(self, stream: &jetstream::stream::Stream) {
        if let Reader::Consumer { consumer, .. } = self.reader {
            let name = consumer.cached_info().name.clone();
            let stream = stream.clone();
            self.api.inc();
            tokio::spawn(async move {
                let _ = stream.delete_consumer(&name).await;
            });
        }
    }
}

fn buffer(buffered: &mut VecDeque<(u64, StoredMessage)>, seq: u64, payload: &[u8]) {
    match serde_json::from_slice::<StoredMessage>(payload) {
        Ok(stored) => buffered.push_back((seq, stored)),
        Err(e) => tracing::warn!(error = %e, seq, "unreadable message skipped in replay"),
    }
}

/// Consumers over all of `user`'s subjects after `cursor`: one per partition with anything
/// after the cursor, filtered to the user's 1:1 subjects of that partition (as first or
/// second participant) and its small groups there. (This is the way replays go on
/// replicated streams and while history is behind: at most one consumer per partition.)
pub async fn consumers(
    streams: &[jetstream::stream::Stream],
    user: &UserId,
    small: &[ConversationId],
    cursor: &Cursor,
    head: &Cursor,
    api: &Counter,
) -> anyhow::Result<Vec<Source>> {
    let partitions = streams.len() as u32;
    let mut wanted = Vec::new();
    for k in 0..partitions {
        let from = cursor.seqs[k as usize] + 1;
        if from > head.seqs[k as usize] {
            continue; // nothing written there since
        }
        let mut filters = subjects::user_messages_in(user, k).to_vec();
        filters.extend(
            small
                .iter()
                .filter(|c| subjects::partition(c, partitions) == k)
                .map(|c| subjects::message(c, partitions)),
        );
        wanted.push((k, filters, from));
    }
    let opened = futures::future::join_all(
        wanted
            .iter()
            .map(|(k, f, from)| open(&streams[*k as usize], *k, f, *from, api.clone())),
    )
    .await;
    if opened.iter().any(Result::is_err) {
        for source in opened.into_iter().flatten() {
            let k = source.partition as usize;
            source.discard(&streams[k]);
        }
        anyhow::bail!("could not open the replay");
    }
    Ok(opened.into_iter().flatten().collect())
}

/// A consumer of some subjects, from `from` on.
async fn open(
    stream: &jetstream::stream::Stream,
    partition: u32,
    filters: &[String],
    from: u64,
    api: Counter,
) -> anyhow::Result<Source> {
    let (filter_subject, filter_subjects) = match filters {
        [one] => (one.clone(), Vec::new()),
        many => (String::new(), many.to_vec()),
    };
    api.inc();
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            filter_subject,
            filter_subjects,
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: CONSUMER_IDLE,
            memory_storage: true,
            num_replicas: 1,
            ..Default::default()
        })
        .await?;
    let pending = consumer.cached_info().num_pending;
    // Nothing pending on a replica may still be something at the leader: the first read
    // asks it (`replica_lag`).
    let replicated = stream.cached_info().config.num_replicas > 1;
    Ok(Source {
        partition,
        reader: Reader::Consumer {
            consumer: Box::new(consumer),
            filters: filters.to_vec(),
            last: from.saturating_sub(1),
        },
        buffered: VecDeque::new(),
        pending,
        exhausted: pending == 0 && !replicated,
        api,
    })
}
