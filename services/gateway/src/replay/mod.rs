//! Replaying what a device missed: the `sync` frame.
//!
//! The messages stream is the per-user offline queue: every message of a user is already in
//! it under its conversation's subject, so a device's backlog is "the user's messages after
//! my cursor". Nothing is removed when a device acknowledges, so several devices each catch
//! up from their own cursor, and a device that disconnects half-way resumes where it stopped.
//!
//! **Which conversations to read.** A replay reads only the conversations that changed since
//! the cursor, each on its literal subject with JetStream's batched direct get
//! ([`direct_get`]): no consumer is made, and no JetStream API request beyond the stream's
//! info. The list comes from indexes natter keeps anyway:
//!
//! * 1:1 conversations from the history store's conversation list (the `changed` history
//!   query: conversations whose newest message is from the cursor's time on, less
//!   [`CLOCK_MARGIN`]), once the history writers have stored everything up to the replay's
//!   head, so the list misses nothing the replay covers;
//! * groups from the chat service's membership (page by page), each probed with one batched
//!   "last message of each subject" read.
//!
//! When the index cannot be trusted (history behind or unreachable, or more changed
//! conversations than one answer holds), the replay reads the user's subjects with
//! short-lived consumers instead ([`sources`]): slower, and correct without history. A
//! wildcard filter in the middle of a subject (`natter.msg.*.dm.*.<user>`) makes the server
//! walk every conversation of the stream; a literal subject is one lookup (measured 18-43x
//! more replays per second).
//!
//! Large groups are left out (fan-out on read): a group of thousands would make every
//! member's replay walk its traffic, so `synced` lists them instead and the device fetches
//! their history, which the store serves from the group's day buckets.
//!
//! A replay is gap-free or it is refused: `synced` says `recovered: false` (with the reason)
//! when the cursor is missing, names another incarnation of the stream, lies in the future,
//! precedes messages the stream has trimmed (its age limit), or when more messages are
//! waiting than one replay may send (`sync_max_messages`, known from the first read of each
//! source, before the backlog is read). The device then refetches from history, which keeps
//! everything.
//!
//! The replay reads one page per turn of the session loop, and the session writes each page
//! before asking for the next, so a large backlog flows at the pace of the socket. Replays
//! running at once on one gateway are bounded, so a reconnect storm queues here instead of
//! overloading JetStream.
//!
//! **Replays in crowds** (a reconnect storm, every session after an outage or a lost
//! delivery) take their messages from one read of the streams shared by the gateway
//! ([`gap_read`]) instead of each reading the way above.

mod admission;
mod direct_get;
mod gap_read;
mod replica_lag;
mod sources;
mod stream_head;

pub use admission::Admission;
pub use direct_get::DirectGets;
pub use gap_read::GapReads;
pub use stream_head::StreamHead;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream::DirectGetErrorKind};
use futures::{StreamExt, TryStreamExt};
use protocol::frames::ServerFrame;
use protocol::payloads::{GroupRequest, HistoryQuery, HistoryRequest};
use protocol::{
    ClientMsgId, ConversationId, Cursor, GroupId, GroupInfo, GroupOp, SyncGap, UserId, limits,
    subjects,
};
use tokio::sync::Semaphore;

use crate::metrics::GatewayMetrics;
use plumbing::bus::HistoryFloor;
use sources::Source;
use stream_head::Streams;

/// The longest one replay turn may take.
const TURN_TIMEOUT: Duration = Duration::from_secs(10);
/// How much earlier than the stream's time of the cursor a conversation's newest message id
/// may be and still hold a message after the cursor. An id is the chat service's clock when
/// it accepted the message, before the stream stored it; the margin covers a publish that
/// took until its timeout and clocks that disagree by up to a minute. A larger margin only
/// costs a read that finds nothing.
const CLOCK_MARGIN: Duration = Duration::from_secs(120);
/// Messages each source reads at least on its first read.
const FIRST_READ_MIN: usize = 8;
/// Pages read per request once a replay is known to fit (fewer round trips for a backlog).
const READ_PAGES: usize = 4;
/// Sources read at once in one replay.
const READS_IN_FLIGHT: usize = 32;
/// Subjects per "last message of each" probe of the user's groups.
const GROUPS_PER_PROBE: usize = limits::GROUPS_PAGE_MAX as usize;

/// Replay limits and the gateway-wide bound on concurrent replays.
pub struct Replayer {
    pub js: jetstream::Context,
    /// The deployment's partition count, to name a group's subject.
    pub partitions: u32,
    /// How long the chat service may take to list the user's groups, and history the
    /// changed conversations.
    pub groups_timeout: Duration,
    pub history_floor: Arc<HistoryFloor>,
    /// The most messages one replay sends; above it the device resyncs from history.
    pub max_messages: u64,
    /// Messages read per turn.
    pub page: usize,
    pub permits: Semaphore,
    pub admission: Admission,
    pub metrics: GatewayMetrics,
    pub direct_gets: Arc<DirectGets>,
    pub stream_head: StreamHead,
    pub gap_reads: GapReads,
}

/// Where a replay stands between turns of the session loop.
pub enum Replay {
    Start {
        user: UserId,
        cursor: Option<Cursor>,
        /// Since when every session of the gateway was asked for a replay (after a NATS
        /// outage or a lost delivery): it may come from one shared read begun after then
        /// ([`gap_read`]).
        shared: Option<Instant>,
        /// For the replay a handshake asked for: where its session's registration marker
        /// landed in each partition's stream. Every message after it is routed to the
        /// session, so a shared read whose head is past it serves the replay ([`gap_read`]).
        marker: Option<Vec<u64>>,
    },
    Reading(Box<Reading>),
}

impl Replay {
    /// The cursor of a first turn that may come from a shared read (see `start_shared`).
    fn shareable(&self) -> Option<&Cursor> {
        match self {
            Replay::Start {
                cursor: Some(cursor),
                shared,
                marker,
                ..
            } if shared.is_some() || marker.is_some() => Some(cursor),
            _ => None,
        }
    }
}

/// A replay under way: one source per conversation (or per filter), each of one partition's
/// stream, read up to that partition's position in `head`.
pub struct Reading {
    /// Every partition's stream, in partition order.
    streams: Streams,
    sources: Vec<Source>,
    /// What the device has: messages it covers are skipped.
    from: Cursor,
    /// The device's cursor after the last message read.
    at: Cursor,
    head: Cursor,
    /// The large groups, for `synced`.
    history: Vec<ConversationId>,
    /// When the replay's first turn began (`natter_gateway_replay_seconds`).
    started: Instant,
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
        let started = match &replay {
            Replay::Reading(reading) => reading.started,
            Replay::Start { .. } => Instant::now(),
        };
        let mut turn = {
            // A replay from a cursor that may share a read waits counted (see `gap_read`).
            let _waiting = replay.shareable().map(|cursor| self.gap_reads.wait(cursor));
            let queued = self.admission.queued();
            let _permit = self.permits.acquire().await?;
            drop(queued);
            let turn = async {
                match replay {
                    Replay::Start {
                        user,
                        cursor: Some(cursor),
                        shared,
                        marker,
                    } => self.start_shared(user, cursor, shared, marker).await,
                    Replay::Start { user, cursor, .. } => self.start(user, cursor).await,
                    Replay::Reading(reading) => self.read(*reading).await,
                }
            };
            let turn = tokio::time::timeout(TURN_TIMEOUT, turn).await;
            self.admission.finished_step();
            turn.map_err(|_| anyhow::anyhow!("replay turn timed out"))??
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
            self.history_floor.reach(cursor).await;
        }
        match &mut turn.next {
            Some(Replay::Reading(reading)) => reading.started = started,
            Some(Replay::Start { .. }) => {}
            None => self.metrics.replay_time.observe(started.elapsed()),
        }
        Ok(turn)
    }

    async fn start(&self, user: UserId, cursor: Option<Cursor>) -> anyhow::Result<Turn> {
        let streams = self.stream_head.read().await?;
        let head = plumbing::bus::head_of(&streams);
        let gap = match &cursor {
            None => Some(SyncGap::NoCursor),
            // Another incarnation of the streams, or another partition count (a cursor of
            // protocol revision 1 where there are several partitions).
            Some(c) if c.epoch != head.epoch || c.partitions() != self.partitions => {
                Some(SyncGap::UnknownCursor)
            }
            Some(c) if c.seqs.iter().zip(&head.seqs).any(|(s, h)| s > h) => {
                Some(SyncGap::FutureCursor)
            }
            // Messages between the cursor and a stream's first were trimmed.
            Some(c)
                if c.seqs
                    .iter()
                    .zip(streams.iter())
                    .any(|(s, stream)| s + 1 < stream.cached_info().state.first_sequence) =>
            {
                Some(SyncGap::Trimmed)
            }
            Some(c) if c.seqs == head.seqs => return Ok(done(head, None, Vec::new())),
            Some(_) => None,
        };
        if let Some(gap) = gap {
            return Ok(done(head, Some(gap), Vec::new()));
        }
        let cursor = cursor.expect("no gap means a cursor");
        let (small, history) = self.groups_of(&user).await?;
        let sources = match self.changed(&streams, &user, &cursor, &head, &small).await {
            Some(sources) => {
                self.metrics.replays_direct.inc();
                sources
            }
            None => {
                self.metrics.replays_with_consumers.inc();
                let api = &self.metrics.jetstream_api_requests;
                sources::consumers(&streams, &user, &small, &cursor, &head, api).await?
            }
        };
        self.begin(Reading {
            streams,
            sources,
            from: cursor.clone(),
            at: cursor,
            head,
            history,
            started: Instant::now(),
        })
        .await
    }

    /// The first turn of a replay whose sources are chosen. The first read of every source
    /// says how much is waiting (including messages written since the head: an upper bound
    /// of what this replay sends). It reads a page shared among the sources (at least a few
    /// each), so a backlog too large to replay is refused before much of it is read.
    async fn begin(&self, mut reading: Reading) -> anyhow::Result<Turn> {
        let first = (self.page / reading.sources.len().max(1)).clamp(FIRST_READ_MIN, self.page);
        reading.fill(first).await?;
        let head = reading.head.clone();
        let pending: u64 = reading.sources.iter().map(Source::waiting).sum();
        if pending > self.max_messages {
            let history = std::mem::take(&mut reading.history);
            reading.discard();
            return Ok(done(head, Some(SyncGap::TooMany), history));
        }
        let mut turn = self.read(reading).await?;
        turn.head = Some(head);
        Ok(turn)
    }

    /// A replay from `cursor`, from a read shared with other sessions' replays
    /// ([`gap_read`]) when it may come from one: one every session of the gateway was asked
    /// for at `shared`, or the one a device asked for when it connected (`marker`). Read on
    /// its own otherwise (a device's `sync`, a resync of its own), or if no shared read
    /// serves it.
    async fn start_shared(
        &self,
        user: UserId,
        cursor: Cursor,
        shared: Option<Instant>,
        marker: Option<Vec<u64>>,
    ) -> anyhow::Result<Turn> {
        let covering = match (&marker, shared) {
            (Some(marker), _) => gap_read::Covering::Marker(marker),
            (None, Some(asked)) => gap_read::Covering::AskedAt(asked),
            (None, None) => return self.start(user, Some(cursor)).await,
        };
        let read = self.gap_reads.read(&self.stream_head, &cursor, covering);
        let Some(gap) = read.await else {
            return self.start(user, Some(cursor)).await;
        };
        self.metrics.replays_shared.inc();
        let head = gap.head.clone();
        if cursor.seqs == head.seqs {
            return Ok(done(head, None, Vec::new()));
        }
        let (small, history) = self.groups_of(&user).await?;
        let sources = gap
            .messages_of(&user, &small, &cursor)
            .into_iter()
            .enumerate()
            .filter(|(_, mine)| !mine.is_empty())
            .map(|(k, mine)| Source::preloaded(k as u32, mine))
            .collect();
        self.begin(Reading {
            streams: gap.streams.clone(),
            sources,
            from: cursor.clone(),
            at: cursor,
            head,
            history,
            started: Instant::now(),
        })
        .await
    }

    /// The sources of a replay read without consumers: one per conversation that has
    /// messages after `cursor`. `None` when the index cannot be trusted, and the caller reads
    /// with consumers.
    async fn changed(
        &self,
        streams: &[jetstream::stream::Stream],
        user: &UserId,
        cursor: &Cursor,
        head: &Cursor,
        small: &[ConversationId],
    ) -> Option<Vec<Source>> {
        // A follower a few writes behind answers a direct get with what it has: a replay
        // would take "nothing more" for an answer and skip what it lacks. The server's
        // read-after-write field (`min_last_seq`, ADR-49) is refused as unknown by the
        // nats-server natter runs (2.15.1), so replicated streams are read with consumers.
        if streams
            .iter()
            .any(|s| s.cached_info().config.num_replicas > 1)
        {
            return None;
        }
        if !self.history_floor.reach(head).await {
            return None;
        }
        let since = cursor_time(streams, cursor, head)
            .await?
            .saturating_sub(CLOCK_MARGIN.as_millis() as u64);
        let (direct, groups) = tokio::join!(
            self.changed_direct(user, since),
            self.changed_groups(small, cursor, head)
        );
        let (direct, groups) = (direct.ok()?, groups.ok()?);
        let sources = direct
            .iter()
            .chain(&groups)
            .map(|c| {
                let k = subjects::partition(c, self.partitions);
                Source::subject(
                    self.direct_gets.clone(),
                    k,
                    subjects::message(c, self.partitions),
                    cursor.seqs[k as usize] + 1,
                    self.metrics.jetstream_api_requests.clone(),
                )
            })
            .collect();
        Some(sources)
    }

    /// The user's 1:1 conversations whose newest message is from `since` on, from history.
    async fn changed_direct(
        &self,
        user: &UserId,
        since: u64,
    ) -> anyhow::Result<Vec<ConversationId>> {
        let request = HistoryRequest {
            user: user.clone(),
            qid: ClientMsgId::new("sync").expect("valid id"),
            query: HistoryQuery::Changed {
                since,
                limit: limits::CHANGED_CONVERSATIONS_MAX,
            },
        };
        let answer = self
            .ask(subjects::history_query(user), &request, "history")
            .await?;
        let ServerFrame::Conversations { conversations, .. } = answer else {
            anyhow::bail!("history could not list the changed conversations");
        };
        if conversations.len() >= limits::CHANGED_CONVERSATIONS_MAX as usize {
            anyhow::bail!("more changed conversations than one answer holds");
        }
        Ok(conversations.into_iter().map(|c| c.conversation).collect())
    }

    /// The groups among `small` whose last message up to `head` is one `cursor` lacks: one
    /// "last message of each subject" read per partition's stream and 200 groups.
    async fn changed_groups(
        &self,
        small: &[ConversationId],
        cursor: &Cursor,
        head: &Cursor,
    ) -> anyhow::Result<Vec<ConversationId>> {
        let mut by_partition: HashMap<u32, Vec<String>> = HashMap::new();
        let mut by_subject: HashMap<String, &ConversationId> = HashMap::new();
        for c in small {
            let subject = subjects::message(c, self.partitions);
            let k = subjects::partition(c, self.partitions);
            by_partition.entry(k).or_default().push(subject.clone());
            by_subject.insert(subject, c);
        }
        let mut probes = Vec::new();
        for (k, names) in &by_partition {
            for chunk in names.chunks(GROUPS_PER_PROBE) {
                let upto = head.seqs[*k as usize];
                probes.push(last_of_each(&self.direct_gets, *k, chunk, upto));
            }
        }
        let lasts: Vec<Vec<direct_get::Entry>> = futures::stream::iter(probes)
            .buffer_unordered(READS_IN_FLIGHT)
            .try_collect()
            .await?;
        let mut changed = Vec::new();
        for last in lasts.into_iter().flatten() {
            let (Some(k), Some(c)) = (
                subjects::partition_of_subject(&last.subject),
                by_subject.get(&last.subject),
            ) else {
                continue;
            };
            if !cursor.covers(k, last.seq) {
                changed.push((*c).clone());
            }
        }
        Ok(changed)
    }

    /// Sends up to a page of messages, each partition in its stream's order, refilling each
    /// source as it runs dry.
    async fn read(&self, mut reading: Reading) -> anyhow::Result<Turn> {
        let mut frames = Vec::new();
        while frames.len() < self.page {
            // Past the first read, what is waiting is known to fit in a replay.
            reading.fill(self.page * READ_PAGES).await?;
            let Some(next) = reading.next_source() else {
                let head = reading.head.clone();
                let history = std::mem::take(&mut reading.history);
                reading.discard();
                let mut turn = done(head, None, history);
                frames.append(&mut turn.frames);
                turn.frames = frames;
                return Ok(turn);
            };
            let k = reading.sources[next].partition();
            let (seq, stored) = reading.sources[next].pop();
            let mut message = stored.message;
            if reading.from.covers(k, seq) {
                continue; // the device has it
            }
            // Every message of partition `k` before this one is sent already.
            reading.at.receive(k, seq);
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

/// The earliest stream time of what `cursor` has (0 if some partition it has nothing of has
/// news): a conversation with a message after the cursor has a newest message id from about
/// then on. `None` if a time cannot be read.
async fn cursor_time(
    streams: &[jetstream::stream::Stream],
    cursor: &Cursor,
    head: &Cursor,
) -> Option<u64> {
    let reads = cursor
        .seqs
        .iter()
        .zip(&head.seqs)
        .zip(streams)
        .filter(|((seq, head), _)| seq < head)
        .map(|((seq, _), stream)| async move {
            if *seq == 0 {
                return Ok(0);
            }
            match stream.direct_get(*seq).await {
                Ok(m) => Ok((m.time.unix_timestamp_nanos() / 1_000_000).max(0) as u64),
                // Gone (trimmed since): from the start of time.
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(0),
                Err(e) => Err(e),
            }
        });
    match futures::future::try_join_all(reads).await {
        Ok(times) => Some(times.into_iter().min().unwrap_or(0)),
        Err(e) => {
            tracing::debug!(error = %e, "time of a cursor unreadable");
            None
        }
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
        let answer = self
            .ask(subjects::chat_group(user), &request, "the chat service")
            .await?;
        let ServerFrame::Groups { groups, more, .. } = answer else {
            anyhow::bail!("the chat service could not list the user's groups");
        };
        Ok((groups, more))
    }

    /// Asks `who` a question on `subject` and reads its answer, within `groups_timeout`.
    async fn ask(
        &self,
        subject: String,
        request: &impl serde::Serialize,
        who: &str,
    ) -> anyhow::Result<ServerFrame> {
        let payload = serde_json::to_vec(request).expect("request to JSON");
        let reply = tokio::time::timeout(
            self.groups_timeout,
            self.js.client().request(subject, payload.into()),
        )
        .await
        .map_err(|_| anyhow::anyhow!("{who} did not answer a replay's question"))??;
        Ok(serde_json::from_slice(&reply.payload)?)
    }
}

impl Reading {
    /// Reads up to `batch` more from every source that has nothing buffered and may have more.
    async fn fill(&mut self, batch: usize) -> anyhow::Result<()> {
        // Called before every message a replay sends: usually nothing is to be read.
        if !self.sources.iter().any(Source::needs_reading) {
            return Ok(());
        }
        let mut reads = Vec::new();
        for source in &mut self.sources {
            if source.needs_reading() {
                let k = source.partition() as usize;
                reads.push(source.fill(&self.streams[k], batch, self.head.seqs[k]));
            }
        }
        futures::stream::iter(reads)
            .buffer_unordered(READS_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// The source whose message goes next: in each partition the one with the smallest
    /// sequence (each source is in order, and a source with nothing buffered is exhausted, so
    /// nothing smaller can come later), and among partitions the oldest message, so
    /// conversations interleave as they were written. `None` when every source is done.
    fn next_source(&self) -> Option<usize> {
        let mut first_of: HashMap<u32, usize> = HashMap::new();
        for (i, source) in self.sources.iter().enumerate() {
            if !source.has_buffered() {
                continue;
            }
            first_of
                .entry(source.partition())
                .and_modify(|best| {
                    if source.next_seq() < self.sources[*best].next_seq() {
                        *best = i;
                    }
                })
                .or_insert(i);
        }
        first_of
            .into_values()
            .min_by_key(|&i| (self.sources[i].next_ts(), self.sources[i].partition()))
    }

    fn discard(self) {
        for source in self.sources {
            let k = source.partition() as usize;
            source.discard(&self.streams[k]);
        }
    }
}

/// The last message up to `head` of each subject of `names` in partition `k`'s stream that
/// has one.
async fn last_of_each(
    reads: &DirectGets,
    k: u32,
    names: &[String],
    head: u64,
) -> anyhow::Result<Vec<direct_get::Entry>> {
    let request = direct_get::Request {
        multi_last: names,
        up_to_seq: head,
        min_last_seq: head,
        ..Default::default()
    };
    reads.batch(&subjects::messages_stream(k), &request).await
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
