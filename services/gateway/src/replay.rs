//! Replaying what a device missed: the `sync` frame.
//!
//! The messages stream is the per-user offline queue: every message of a user is already in
//! it under `natter.msg.dm.<a>.<b>`, so a device's backlog is "the user's messages after my
//! cursor", read with a short-lived consumer filtered to the user's subjects. Nothing is
//! removed when a device acknowledges, so several devices each catch up from their own
//! cursor, and a device that disconnects half-way resumes where it stopped.
//!
//! The user's two 1:1 filters (first or second participant) are read by two consumers, one
//! filter each, merged by stream sequence: JetStream recomputes a multi-filter consumer's
//! pending count against every subject of the stream, which made a reconnect storm three
//! times slower than two single-filter consumers (measured with 2,000 replays over 5,000
//! conversations). The user's groups, asked of the chat service page by page when a replay
//! starts (no one answer need hold them all), are read by a third consumer with one literal
//! filter per group.
//!
//! Large groups are left out (fan-out on read): a group of thousands would make every
//! member's replay walk its traffic, so `synced` lists them instead and the device fetches
//! their history, which the store serves from the group's day buckets.
//!
//! A replay is gap-free or it is refused: `synced` says `recovered: false` (with the reason)
//! when the cursor is missing, names another incarnation of the stream, lies in the future,
//! precedes messages the stream has trimmed (its age limit), or when more messages are
//! waiting than one replay may send (`sync_max_messages`). The device then refetches from
//! history, which keeps everything.
//!
//! The replay reads one page per turn of the session loop, and the session writes each page
//! before asking for the next, so a large backlog flows at the pace of the socket. Replays
//! running at once on one gateway are bounded, so a reconnect storm queues here instead of
//! overloading JetStream.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use protocol::frames::ServerFrame;
use protocol::payloads::{GroupRequest, StoredMessage};
use protocol::{
    ClientMsgId, ConversationId, Cursor, GroupId, GroupInfo, GroupOp, SyncGap, UserId, limits,
    subjects,
};
use tokio::sync::Semaphore;

use crate::history_floor::HistoryFloor;

/// How long an abandoned replay consumer lives on the server.
const CONSUMER_IDLE: Duration = Duration::from_secs(30);
/// The longest one replay turn may take.
const TURN_TIMEOUT: Duration = Duration::from_secs(10);

/// Replay limits and the gateway-wide bound on concurrent replays.
pub struct Replayer {
    pub js: jetstream::Context,
    /// The deployment's partition count, to name a group's subject.
    pub partitions: u32,
    /// How long the chat service may take to list the user's groups.
    pub groups_timeout: Duration,
    pub history_floor: Arc<HistoryFloor>,
    /// The most messages one replay sends; above it the device resyncs from history.
    pub max_messages: u64,
    /// Messages read per turn.
    pub page: usize,
    pub permits: Semaphore,
}

/// Where a replay stands between turns of the session loop.
pub enum Replay {
    Start {
        user: UserId,
        cursor: Option<Cursor>,
    },
    Reading(Box<Reading>),
}

/// A replay under way: one source per filter, read up to `head`.
pub struct Reading {
    stream: jetstream::stream::Stream,
    sources: Vec<Source>,
    /// What the device has: messages it covers are skipped.
    from: Cursor,
    /// The device's cursor after the last message read.
    at: Cursor,
    head: Cursor,
    /// The large groups, for `synced`.
    history: Vec<ConversationId>,
}

/// One filter's consumer and the messages read from it but not sent yet.
struct Source {
    consumer: consumer::PullConsumer,
    buffered: VecDeque<(u64, StoredMessage)>,
    /// Nothing more to read from it (up to `head`).
    exhausted: bool,
}

/// What one turn produced: frames to send, and the replay to continue with (`None`: done,
/// the last frame is `synced`).
pub struct Turn {
    pub frames: Vec<ServerFrame>,
    pub next: Option<Replay>,
    /// What the replay covers, once known.
    pub head: Option<Cursor>,
}

impl Replayer {
    /// Runs one turn of `replay`. A turn that takes longer than `TURN_TIMEOUT` fails: a
    /// consumer whose server went away answers nothing, and the session holds its live
    /// messages back until the replay ends.
    pub async fn turn(&self, replay: Replay) -> anyhow::Result<Turn> {
        let turn = {
            let _permit = self.permits.acquire().await?;
            let turn = async {
                match replay {
                    Replay::Start { user, cursor } => self.start(user, cursor).await,
                    Replay::Reading(reading) => self.read(*reading).await,
                }
            };
            tokio::time::timeout(TURN_TIMEOUT, turn)
                .await
                .map_err(|_| anyhow::anyhow!("replay turn timed out"))??
        };
        // A `synced` that sends the device to history waits (outside the permit) until the
        // history it will fetch holds everything up to its cursor.
        if let Some(ServerFrame::Synced {
            cursor,
            gap,
            history,
            ..
        }) = turn.frames.last()
            && (gap.is_some() || !history.is_empty())
        {
            self.history_floor.reach(cursor.latest()).await;
        }
        Ok(turn)
    }

    async fn start(&self, user: UserId, cursor: Option<Cursor>) -> anyhow::Result<Turn> {
        let stream = self.js.get_stream(subjects::MESSAGES_STREAM).await?;
        let info = stream.cached_info();
        let last = info.state.last_sequence;
        let head = Cursor::head(plumbing::bus::stream_epoch(info), last, self.partitions);
        let gap = match &cursor {
            None => Some(SyncGap::NoCursor),
            // Another incarnation of the stream, or another partition count (a cursor of
            // protocol revision 1 where there are several partitions).
            Some(c) if c.epoch != head.epoch || c.partitions() != self.partitions => {
                Some(SyncGap::UnknownCursor)
            }
            Some(c) if c.latest() > last => Some(SyncGap::FutureCursor),
            // Messages between the cursor and the stream's first were trimmed.
            Some(c) if c.earliest() + 1 < info.state.first_sequence => Some(SyncGap::Trimmed),
            Some(c) if c.earliest() == last => return Ok(done(head, None, Vec::new())),
            Some(_) => None,
        };
        if let Some(gap) = gap {
            return Ok(done(head, Some(gap), Vec::new()));
        }
        let cursor = cursor.expect("no gap means a cursor");
        // From the partition furthest behind; what the others have is skipped.
        let from = cursor.earliest() + 1;
        let (small, history) = self.groups_of(&user).await?;
        let [a, b] = subjects::user_messages(&user);
        let mut filters = vec![vec![a], vec![b]];
        if !small.is_empty() {
            filters.push(
                small
                    .iter()
                    .map(|c| subjects::message(c, self.partitions))
                    .collect(),
            );
        }
        let opened =
            futures::future::join_all(filters.iter().map(|f| open(&stream, f, from))).await;
        if opened.iter().any(Result::is_err) {
            for source in opened.into_iter().flatten() {
                discard(&stream, source);
            }
            anyhow::bail!("could not open the replay");
        }
        let sources: Vec<Source> = opened.into_iter().flatten().collect();
        // Pending counts matching messages from the cursor on, including any written since
        // `head`: an upper bound of what this replay sends.
        let pending: u64 = sources
            .iter()
            .map(|s| s.consumer.cached_info().num_pending)
            .sum();
        let reading = Reading {
            stream,
            sources,
            from: cursor.clone(),
            at: cursor,
            head: head.clone(),
            history,
        };
        if pending > self.max_messages {
            let history = reading.history.clone();
            reading.discard();
            return Ok(done(head, Some(SyncGap::TooMany), history));
        }
        let mut turn = self.read(reading).await?;
        turn.head = Some(head);
        Ok(turn)
    }

    /// Sends up to a page of messages in stream order, refilling each source as it runs dry.
    async fn read(&self, mut reading: Reading) -> anyhow::Result<Turn> {
        let mut frames = Vec::new();
        while frames.len() < self.page {
            for source in &mut reading.sources {
                if source.buffered.is_empty() && !source.exhausted {
                    source.fill(self.page, reading.head.latest()).await?;
                }
            }
            // The smallest sequence among the sources; each is in order, and a source with
            // nothing buffered is exhausted, so nothing smaller can come later.
            let Some(next) = reading
                .sources
                .iter_mut()
                .filter(|s| !s.buffered.is_empty())
                .min_by_key(|s| s.buffered[0].0)
            else {
                let head = reading.head.clone();
                let history = std::mem::take(&mut reading.history);
                reading.discard();
                let mut turn = done(head, None, history);
                frames.append(&mut turn.frames);
                turn.frames = frames;
                return Ok(turn);
            };
            let (seq, stored) = next.buffered.pop_front().expect("not empty");
            let mut message = stored.message;
            let k = subjects::partition(&message.conversation, self.partitions);
            if reading.from.covers(k, seq) {
                continue; // the device has it
            }
            // The replay reads the user's messages in stream order: every one before this
            // message, of any partition, is sent already.
            reading.at.receive(k, seq);
            reading.at.reach(seq);
            message.cursor = Some(reading.at.clone());
            frames.push(ServerFrame::Message(message));
        }
        Ok(Turn {
            frames,
            next: Some(Replay::Reading(Box::new(reading))),
            head: None,
        })
    }
}

impl Replayer {
    /// The user's groups as conversations: those replayed, and the large ones left to
    /// history. Read page by page from the chat service, so no single answer has to hold
    /// all of them.
    async fn groups_of(
        &self,
        user: &UserId,
    ) -> anyhow::Result<(Vec<ConversationId>, Vec<ConversationId>)> {
        let (mut small, mut large) = (Vec::new(), Vec::new());
        let mut after: Option<GroupId> = None;
        loop {
            let (groups, more) = self.groups_page(user, after.as_ref()).await?;
            let last = groups.last().map(|g| g.group.clone());
            for g in groups {
                if g.large {
                    large.push(g.conversation);
                } else {
                    small.push(g.conversation);
                }
            }
            match last {
                // Each page starts after the last one's end, so this ends.
                Some(last) if more && after.as_ref() < Some(&last) => after = Some(last),
                _ => return Ok((small, large)),
            }
        }
    }

    /// One page of the user's groups after `after`, and whether more follow.
    async fn groups_page(
        &self,
        user: &UserId,
        after: Option<&GroupId>,
    ) -> anyhow::Result<(Vec<GroupInfo>, bool)> {
        let request = GroupRequest {
            user: user.clone(),
            qid: ClientMsgId::new("sync").expect("valid id"),
            op: GroupOp::Mine {
                after: after.map(|g| g.to_string()),
                limit: Some(limits::GROUPS_PAGE_MAX),
            },
        };
        let payload = serde_json::to_vec(&request).expect("group request to JSON");
        let reply = tokio::time::timeout(
            self.groups_timeout,
            self.js
                .client()
                .request(subjects::chat_group(user), payload.into()),
        )
        .await
        .map_err(|_| anyhow::anyhow!("the chat service did not list the user's groups"))??;
        let ServerFrame::Groups { groups, more, .. } = serde_json::from_slice(&reply.payload)?
        else {
            anyhow::bail!("the chat service could not list the user's groups");
        };
        Ok((groups, more))
    }
}

impl Source {
    /// Reads up to `page` more messages, none beyond `head`.
    async fn fill(&mut self, page: usize, head: u64) -> anyhow::Result<()> {
        let mut batch = self.consumer.fetch().max_messages(page).messages().await?;
        self.exhausted = true;
        while let Some(msg) = batch.next().await {
            let msg = msg.map_err(|e| anyhow::anyhow!("replay read: {e}"))?;
            let info = msg
                .info()
                .map_err(|e| anyhow::anyhow!("replay read: {e}"))?;
            let seq = info.stream_sequence;
            if seq > head {
                // Live traffic from here on.
                break;
            }
            match serde_json::from_slice::<StoredMessage>(&msg.payload) {
                Ok(stored) => self.buffered.push_back((seq, stored)),
                Err(e) => tracing::warn!(error = %e, seq, "unreadable message skipped in replay"),
            }
            self.exhausted = seq == head || info.pending == 0;
            if self.exhausted {
                break;
            }
        }
        Ok(())
    }
}

impl Reading {
    fn discard(self) {
        for source in self.sources {
            discard(&self.stream, source);
        }
    }
}

/// A consumer of some subjects, from `from` on.
async fn open(
    stream: &jetstream::stream::Stream,
    filters: &[String],
    from: u64,
) -> anyhow::Result<Source> {
    let (filter_subject, filter_subjects) = match filters {
        [one] => (one.clone(), Vec::new()),
        many => (String::new(), many.to_vec()),
    };
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
    let exhausted = consumer.cached_info().num_pending == 0;
    Ok(Source {
        consumer,
        buffered: VecDeque::new(),
        exhausted,
    })
}

fn done(head: Cursor, gap: Option<SyncGap>, history: Vec<ConversationId>) -> Turn {
    Turn {
        frames: vec![ServerFrame::Synced {
            cursor: head.clone(),
            recovered: gap.is_none(),
            gap,
            history,
        }],
        next: None,
        head: Some(head),
    }
}

/// Deletes a finished source's consumer in the background (it would expire by itself).
fn discard(stream: &jetstream::stream::Stream, source: Source) {
    let name = source.consumer.cached_info().name.clone();
    let stream = stream.clone();
    tokio::spawn(async move {
        let _ = stream.delete_consumer(&name).await;
    });
}
