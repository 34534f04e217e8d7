//! One read of the streams' recent messages, shared by the replays of many sessions.
//!
//! Replays come in crowds: after the gateway's NATS connection comes back every session
//! replays what was routed meanwhile, and when a gateway dies its devices reconnect to the
//! others at once, each from a cursor near the head. Each replaying on its own makes one
//! replay's worth of JetStream and history requests per device (the time of its cursor, the
//! conversations changed since, a read per conversation): the server walks the same recent
//! messages once per device. Instead a gateway reads every partition once, from the oldest
//! position the waiting replays need up to the heads, with one ordered consumer each, and
//! each replay takes its own messages from that read (1:1 conversations it is in, its small
//! groups), with the same ordering, cursors, limits and `synced` as its own replay would
//! have. The read is indexed by user and by group, so a replay finds its messages without
//! scanning it.
//!
//! **Which replays a read serves.** One whose cursor lies within it (same incarnation, each
//! partition at or after the read's start and at most its head), and whose session's
//! registration is in its head, so that what comes later reaches the session live:
//!
//! * after an outage, the read began after the gateway asked every session to replay (its
//!   sessions were registered again by then). That is when the gateway asked, not when each
//!   replay got its turn: replays run a few dozen at a time, and a rule of "began after this
//!   replay started" made a new read per wave (158 reads for 5,000 sessions, slower than
//!   replaying each on its own);
//! * for a device that connects with a cursor, the read's head is at or after its session's
//!   registration marker.
//!
//! A replay the newest read does not serve makes it longer (the messages from its head to the
//! streams' new head, one more segment) or, if its cursor is older than the read's start,
//! makes a new one from the oldest cursor among the waiting replays that fit.
//!
//! **When sharing pays.** A shared read walks every message of the gap, other users' too. A
//! device reconnecting alone reads its own conversations instead; a crowd shares a read of at
//! most `PER_REPLAY` messages per waiting replay it serves (a replay on its own costs several
//! requests, a message of an ordered consumer a few microseconds), and never more than
//! `max_messages` in all, held in memory until `KEEP` after its last use. After an outage the
//! whole gateway replays, so any gap up to `max_messages` is shared.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures::StreamExt;
use plumbing::Counter;
use protocol::payloads::StoredMessage;
use protocol::{ConversationId, Cursor, UserId, subjects};

use super::replica_lag;
use super::stream_head::{StreamHead, Streams};

/// One message of the gap: its partition, its sequence there, and the message as stored
/// (decoded only by the replays that take it: most of a read is other gateways' users').
type Entry = (u32, u64, Bytes);

/// Stream messages a shared read may walk per replay it serves.
const PER_REPLAY: u64 = 100;
/// Fewest waiting replays for which a read is made or made longer (a device reconnecting
/// alone reads only its own conversations).
const MIN_SHARED: usize = 8;
/// How long a read is kept after it was last made longer, for replays that have yet to get
/// their turn; then its memory is given back (a replay asking later reads again).
const KEEP: Duration = Duration::from_secs(120);

/// What a replay needs of a read besides covering its cursor: that its session's
/// registration is in the read's head.
pub enum Covering<'a> {
    /// The read's head was read after this (the gateway asked every session to replay then).
    AskedAt(Instant),
    /// The read's head is at or after the session's registration marker.
    Marker(&'a [u64]),
}

/// One read of each partition, after the previous segment's end.
#[derive(Default)]
struct Segment {
    /// The 1:1 messages, under each participant, in stream order within each partition.
    direct: HashMap<UserId, Vec<Entry>>,
    /// The group messages, under their conversation, likewise.
    groups: HashMap<ConversationId, Vec<Entry>>,
}

impl Segment {
    /// Files a message under its participants or its group, as its subject names them
    /// (`natter.msg.<k>.dm.<a>.<b>`, `natter.msg.<k>.g.<group>`).
    fn index(&mut self, entry: Entry, subject: &str) {
        let mut tokens = subject.splitn(5, '.').skip(3);
        match (tokens.next(), tokens.next()) {
            (Some("dm"), Some(pair)) => {
                let mut users = pair.splitn(2, '.').filter_map(|u| UserId::new(u).ok());
                let (Some(a), Some(b)) = (users.next(), users.next()) else {
                    return;
                };
                if a != b {
                    let copy = entry.clone();
                    self.direct.entry(b).or_default().push(copy);
                }
                self.direct.entry(a).or_default().push(entry);
            }
            (Some("g"), Some(group)) => {
                if let Ok(group) = group.parse::<protocol::GroupId>() {
                    let c = ConversationId::group(&group);
                    self.groups.entry(c).or_default().push(entry);
                }
            }
            _ => {}
        }
    }
}

/// Everything written to the messages streams after `from`, up to `head`.
pub struct GapRead {
    from: Cursor,
    pub head: Cursor,
    /// Every partition's stream, as read for `head`.
    pub streams: Streams,
    segments: Vec<Arc<Segment>>,
    /// When `head` was asked for: the read holds everything routed before then.
    read_at: Instant,
}

impl GapRead {
    /// Whether it holds everything after `cursor`, up to a head that has the session.
    pub fn serves(&self, cursor: &Cursor, covering: &Covering) -> bool {
        within(&self.from, cursor)
            && (cursor.seqs.iter().zip(&self.head.seqs)).all(|(c, h)| c <= h)
            && match covering {
                Covering::AskedAt(asked) => self.read_at >= *asked,
                Covering::Marker(marker) => {
                    marker.len() == self.head.seqs.len()
                        && (marker.iter().zip(&self.head.seqs)).all(|(m, h)| m <= h)
                }
            }
    }

    /// `user`'s messages after `after` (1:1, and of the groups `small`), per partition in
    /// stream order.
    pub fn messages_of(
        &self,
        user: &UserId,
        small: &[ConversationId],
        after: &Cursor,
    ) -> Vec<VecDeque<(u64, StoredMessage)>> {
        let mut mine: Vec<Vec<(u64, StoredMessage)>> = vec![Vec::new(); self.head.seqs.len()];
        for segment in &self.segments {
            let groups = small.iter().filter_map(|c| segment.groups.get(c));
            for entries in segment.direct.get(user).into_iter().chain(groups) {
                for (k, seq, payload) in entries {
                    if after.covers(*k, *seq) {
                        continue;
                    }
                    match serde_json::from_slice::<StoredMessage>(payload) {
                        Ok(stored) => mine[*k as usize].push((*seq, stored)),
                        Err(e) => tracing::warn!(error = %e, seq, "unreadable message skipped"),
                    }
                }
            }
        }
        mine.into_iter()
            .map(|mut v| {
                v.sort_by_key(|(seq, _)| *seq);
                v.into()
            })
            .collect()
    }

    /// Stream messages (and markers) it spans.
    fn len(&self) -> u64 {
        distance(&self.from, &self.head)
    }
}

pub struct GapReads {
    /// The most messages one read holds.
    max_messages: u64,
    /// The newest read; one read at a time.
    last: Arc<tokio::sync::Mutex<Option<Arc<GapRead>>>>,
    /// When the last read that failed began.
    failed: Mutex<Option<Instant>>,
    /// The cursors of the replays waiting for their first turn.
    waiting: Mutex<Waiting>,
    reads: Counter,
    /// Counts the consumers it creates (JetStream API requests).
    api: Counter,
}

#[derive(Default)]
struct Waiting {
    next: u64,
    cursors: HashMap<u64, Cursor>,
}

/// A replay counted among the waiting ones until it is dropped.
pub struct Wait<'a> {
    reads: &'a GapReads,
    id: u64,
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        let mut waiting = self.reads.waiting.lock().expect("waiting replays");
        waiting.cursors.remove(&self.id);
    }
}

impl GapReads {
    pub fn new(max_messages: u64, reads: Counter, api: Counter) -> Self {
        Self {
            max_messages,
            last: Arc::default(),
            failed: Mutex::default(),
            waiting: Mutex::default(),
            reads,
            api,
        }
    }

    /// Counts a replay from `cursor` among those waiting, until the guard is dropped: the
    /// next read starts early enough for the waiting replays it pays to serve.
    pub fn wait(&self, cursor: &Cursor) -> Wait<'_> {
        let mut waiting = self.waiting.lock().expect("waiting replays");
        waiting.next += 1;
        let id = waiting.next;
        waiting.cursors.insert(id, cursor.clone());
        Wait { reads: self, id }
    }

    /// A read that serves a replay from `cursor` (see [`GapRead::serves`]), made or made
    /// longer if none does; `None` when sharing does not pay or the read failed (the caller
    /// replays on its own).
    pub async fn read(
        &self,
        heads: &StreamHead,
        cursor: &Cursor,
        covering: Covering<'_>,
    ) -> Option<Arc<GapRead>> {
        let asked = Instant::now();
        let mut last = self.last.lock().await;
        if let Some(read) = last.as_ref()
            && read.serves(cursor, &covering)
        {
            return Some(read.clone());
        }
        // A read that failed while this replay waited would fail again.
        if self
            .failed
            .lock()
            .expect("failed read")
            .is_some_and(|f| f >= asked)
        {
            return None;
        }
        let (whole_gateway, near_head) = match covering {
            Covering::AskedAt(_) => (true, None),
            Covering::Marker(marker) => (
                false,
                Some(Cursor {
                    epoch: cursor.epoch,
                    seqs: marker.to_vec(),
                }),
            ),
        };
        let began = Instant::now();
        let read = self.read_now(
            heads,
            last.as_deref(),
            cursor,
            whole_gateway,
            near_head.as_ref(),
        );
        match read.await {
            Ok(Some(read)) => {
                let read = Arc::new(read);
                *last = Some(read.clone());
                self.forget_later(read.read_at);
                read.serves(cursor, &covering).then_some(read)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::info!(reason = %e, "sessions replay on their own");
                *self.failed.lock().expect("failed read") = Some(began);
                None
            }
        }
    }

    /// Drops the read made longer at `began` after `KEEP`, unless it was made longer again
    /// or replaced.
    fn forget_later(&self, began: Instant) {
        let last = Arc::downgrade(&self.last);
        tokio::spawn(async move {
            tokio::time::sleep(KEEP).await;
            if let Some(last) = last.upgrade() {
                let mut last = last.lock().await;
                if last.as_ref().is_some_and(|read| read.read_at == began) {
                    *last = None;
                }
            }
        });
    }

    /// `last` made longer up to the streams' heads, or a new read; `None` when neither pays
    /// or neither would hold what `cursor` lacks (an outlier replays on its own instead of
    /// replacing a read that serves the others). `whole_gateway`: every session replays
    /// (after an outage), so any gap up to `max_messages` pays. `near_head`: where the heads
    /// were a moment ago (a registration marker), to see whether sharing pays before the
    /// heads are read.
    async fn read_now(
        &self,
        heads: &StreamHead,
        last: Option<&GapRead>,
        cursor: &Cursor,
        whole_gateway: bool,
        near_head: Option<&Cursor>,
    ) -> anyhow::Result<Option<GapRead>> {
        if self.max_messages == 0 {
            return Ok(None); // sharing is off
        }
        let waiting: Vec<Cursor> = {
            let waiting = self.waiting.lock().expect("waiting replays");
            waiting.cursors.values().cloned().collect()
        };
        // Where the next segment starts, if it pays and holds what `cursor` lacks.
        let plan = |head: &Cursor, first: &[u64]| {
            let budget = |served: usize| match whole_gateway {
                true => self.max_messages,
                false if served < MIN_SHARED => 0,
                false => self.max_messages.min(PER_REPLAY * served as u64),
            };
            // Made longer: for the replays within it whose registration came after its head.
            if let Some(last) = last
                && last.head.epoch == head.epoch
                && last.head.seqs.len() == head.seqs.len()
            {
                let more = distance(&last.head, head);
                let served = waiting.iter().filter(|c| within(&last.from, c)).count();
                if within(&last.from, cursor)
                    && last.len() + more <= self.max_messages
                    && more <= budget(served)
                {
                    return Some(last.head.clone());
                }
            }
            start_for(&waiting, head, first, budget).filter(|from| within(from, cursor))
        };
        if let Some(near) = near_head
            && plan(near, &[]).is_none()
        {
            return Ok(None);
        }
        let read_at = Instant::now();
        let streams = heads.read().await?;
        let head = plumbing::bus::head_of(&streams);
        let first: Vec<u64> = (streams.iter())
            .map(|s| s.cached_info().state.first_sequence)
            .collect();
        let Some(from) = plan(&head, &first) else {
            return Ok(None);
        };
        let segment = Arc::new(self.read_segment(&streams, &from, &head).await?);
        let (from, segments) = match last {
            Some(last) if last.head == from => {
                let mut segments = last.segments.clone();
                segments.push(segment);
                (last.from.clone(), segments)
            }
            _ => (from, vec![segment]),
        };
        Ok(Some(GapRead {
            from,
            head,
            streams,
            segments,
            read_at,
        }))
    }

    /// Every partition's messages after `from` up to `head`, indexed.
    async fn read_segment(
        &self,
        streams: &[jetstream::stream::Stream],
        from: &Cursor,
        head: &Cursor,
    ) -> anyhow::Result<Segment> {
        self.reads.inc();
        let with_news = from.seqs.iter().zip(&head.seqs).filter(|(f, h)| f < h);
        self.api.add(with_news.count() as u64);
        let reads = streams.iter().enumerate().map(|(k, stream)| {
            read_partition(stream, k as u32, from.seqs[k], head.seqs[k], &self.api)
        });
        let partitions = futures::future::try_join_all(reads).await?;
        let mut segment = Segment::default();
        for (k, messages) in partitions.into_iter().enumerate() {
            for (seq, subject, payload) in messages {
                segment.index((k as u32, seq, payload), &subject);
            }
        }
        Ok(segment)
    }
}

/// Whether `cursor` lies after `from` in every partition (of the same incarnation).
fn within(from: &Cursor, cursor: &Cursor) -> bool {
    cursor.epoch == from.epoch
        && cursor.seqs.len() == from.seqs.len()
        && from.seqs.iter().zip(&cursor.seqs).all(|(f, c)| f <= c)
}

/// Stream messages from `from` to `head`.
fn distance(from: &Cursor, head: &Cursor) -> u64 {
    (from.seqs.iter().zip(&head.seqs))
        .map(|(f, h)| h.saturating_sub(*f))
        .sum()
}

/// Where a new read starts: the oldest position among the most waiting cursors it pays to
/// serve. Cursors nearest the head come first; the read serves the first `n` of them from
/// their oldest position in each partition, and `n` is the largest whose read fits
/// `budget(n)`. Cursors of another incarnation, beyond the head or before what the streams
/// still hold (`first`: each stream's first sequence) are left to their own replays.
fn start_for(
    waiting: &[Cursor],
    head: &Cursor,
    first: &[u64],
    budget: impl Fn(usize) -> u64,
) -> Option<Cursor> {
    let mut near: Vec<(u64, &Cursor)> = waiting
        .iter()
        .filter(|c| {
            c.epoch == head.epoch
                && c.seqs.len() == head.seqs.len()
                && (c.seqs.iter().zip(&head.seqs)).all(|(c, h)| c <= h)
                && (c.seqs.iter().zip(first)).all(|(c, f)| c + 1 >= *f)
        })
        .map(|c| (distance(c, head), c))
        .collect();
    near.sort_by_key(|(d, _)| *d);
    let mut from = head.clone();
    let mut best = None;
    for (n, (_, cursor)) in near.iter().enumerate() {
        for (f, c) in from.seqs.iter_mut().zip(&cursor.seqs) {
            *f = (*f).min(*c);
        }
        if distance(&from, head) <= budget(n + 1) {
            best = Some(from.clone());
        }
    }
    best
}

/// Partition `k`'s messages after `from` up to `head` (sequence, subject, payload), with an
/// ordered consumer. It is placed on any of the stream's peers, not on its leader: a read
/// that runs dry before `head` is complete only if the leader agrees (`replica_lag`).
async fn read_partition(
    stream: &jetstream::stream::Stream,
    k: u32,
    from: u64,
    head: u64,
    api: &Counter,
) -> anyhow::Result<Vec<(u64, async_nats::Subject, Bytes)>> {
    let mut messages = Vec::new();
    if from >= head {
        return Ok(messages);
    }
    let filter = subjects::partition_messages(k);
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter.clone(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from + 1,
            },
            ..Default::default()
        })
        .await?;
    let mut delivered = consumer.messages().await?;
    while let Some(msg) = delivered.next().await {
        let msg = msg?;
        let info = msg.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        if seq > head {
            break;
        }
        if !subjects::is_session_marker(&msg.subject) {
            messages.push((seq, msg.subject.clone(), msg.payload.clone()));
        }
        if seq == head {
            break;
        }
        if pending == 0 {
            if replica_lag::leader_has_more(stream, &[filter], seq, head, api).await? {
                return Err(replica_lag::lagging());
            }
            break;
        }
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(seqs: &[u64]) -> Cursor {
        Cursor {
            epoch: 7,
            seqs: seqs.to_vec(),
        }
    }

    fn read(from: &[u64], head: &[u64], read_at: Instant) -> GapRead {
        GapRead {
            from: cursor(from),
            head: cursor(head),
            streams: Streams::from([]),
            segments: Vec::new(),
            read_at,
        }
    }

    #[test]
    fn a_read_serves_cursors_within_it_whose_session_is_in_its_head() {
        let now = Instant::now();
        let r = read(&[10, 20], &[50, 60], now);
        let asked_before = Covering::AskedAt(now - Duration::from_millis(1));
        assert!(r.serves(&cursor(&[10, 20]), &asked_before));
        assert!(r.serves(&cursor(&[50, 30]), &asked_before));
        assert!(
            !r.serves(&cursor(&[9, 20]), &asked_before),
            "before its start"
        );
        assert!(
            !r.serves(&cursor(&[51, 20]), &asked_before),
            "beyond its head"
        );
        let other_epoch = Cursor {
            epoch: 8,
            seqs: vec![10, 20],
        };
        assert!(!r.serves(&other_epoch, &asked_before));
        assert!(!r.serves(&cursor(&[10, 20, 0]), &asked_before));
        let asked_after = Covering::AskedAt(now + Duration::from_millis(1));
        assert!(!r.serves(&cursor(&[10, 20]), &asked_after));
        assert!(r.serves(&cursor(&[10, 20]), &Covering::Marker(&[50, 60])));
        assert!(!r.serves(&cursor(&[10, 20]), &Covering::Marker(&[51, 60])));
    }

    #[test]
    fn a_new_read_starts_at_the_oldest_cursor_it_pays_to_serve() {
        let head = cursor(&[1000, 1000]);
        let first = [1, 1];
        let per_replay = |n: usize| 100 * n as u64;
        // Ten cursors 50 behind and one 5,000 behind: the outlier is left out.
        let mut waiting = vec![cursor(&[975, 975]); 10];
        waiting.push(cursor(&[0, 0]));
        let from = start_for(&waiting, &head, &first, per_replay).unwrap();
        assert_eq!(from.seqs, [975, 975]);
        // Spread cursors: the oldest position of each partition among those served.
        let waiting = [
            cursor(&[990, 900]),
            cursor(&[900, 990]),
            cursor(&[995, 995]),
        ];
        let from = start_for(&waiting, &head, &first, per_replay).unwrap();
        assert_eq!(from.seqs, [900, 900]);
        // None pays.
        assert!(start_for(&waiting, &head, &first, |_| 5).is_none());
        // Beyond the head, of another incarnation, or trimmed: left to their own replays.
        let odd = [
            cursor(&[1001, 0]),
            Cursor {
                epoch: 1,
                seqs: vec![999, 999],
            },
            cursor(&[998, 998]),
        ];
        let from = start_for(&odd, &head, &[999, 1], per_replay);
        assert_eq!(from.map(|c| c.seqs), Some(vec![998, 998]));
        let from = start_for(&odd, &head, &[1000, 1], per_replay);
        assert_eq!(from, None, "message 999 was trimmed");
    }

    #[test]
    fn a_replay_takes_its_own_messages_after_its_cursor_from_every_segment() {
        use protocol::frames::Message;
        use protocol::{ClientMsgId, MessageId};
        let user = |name: &str| UserId::new(name).unwrap();
        let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
        let dm = |from: &UserId, to: &UserId, k: u32, seq: u64| {
            let message = Message {
                attachment: None,
                reacted: Vec::new(),
                reactions: Vec::new(),
                change: None,
                deleted: false,
                edited: None,
                id: ulid::Ulid::new().to_string().parse::<MessageId>().unwrap(),
                conversation: ConversationId::direct(from, to),
                from: from.clone(),
                to: to.clone(),
                cid: ClientMsgId::new(format!("c{seq}")).unwrap(),
                body: "hi".into(),
                ts: seq,
                cursor: None,
                event: None,
                state: None,
                reply: None,
            };
            let stored = StoredMessage {
                message,
                origin: None,
                groups_revision: None,
            };
            let subject = subjects::message(&stored.message.conversation, 2);
            let payload = Bytes::from(serde_json::to_vec(&stored).unwrap());
            ((k, seq, payload), subject)
        };
        let segment = |entries: Vec<(Entry, String)>| {
            let mut segment = Segment::default();
            for (entry, subject) in entries {
                segment.index(entry, &subject);
            }
            Arc::new(segment)
        };
        let mut r = read(&[0, 0], &[10, 10], Instant::now());
        r.segments = vec![
            segment(vec![dm(&alice, &bob, 0, 2), dm(&carol, &bob, 1, 3)]),
            segment(vec![dm(&bob, &alice, 0, 7), dm(&alice, &carol, 1, 9)]),
        ];
        let mine = r.messages_of(&alice, &[], &cursor(&[2, 0]));
        let seqs: Vec<Vec<u64>> = mine
            .iter()
            .map(|p| p.iter().map(|(s, _)| *s).collect())
            .collect();
        assert_eq!(seqs, [vec![7], vec![9]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_is_kept_for_a_while_then_given_back_unless_made_longer() {
        let reads = GapReads::new(10, Counter::default(), Counter::default());
        let remember = async |began: Instant| {
            *reads.last.lock().await = Some(Arc::new(read(&[1], &[5], began)));
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

        // A read made longer is not dropped by the older timer.
        remember(first).await;
        tokio::time::sleep(KEEP / 2).await;
        let second = Instant::now() + Duration::from_millis(1);
        remember(second).await;
        tokio::time::sleep(KEEP * 3 / 4).await;
        let kept = reads.last.lock().await.as_ref().map(|r| r.read_at);
        assert_eq!(kept, Some(second));
        tokio::time::sleep(KEEP).await;
        assert!(reads.last.lock().await.is_none());
    }
}
