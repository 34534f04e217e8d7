//! Steady chat traffic for failure tests. Pairs of users on different gateways: each sender
//! sends numbered messages at a fixed rate and, like a well-behaved client, sends a message
//! again with the same cid when it is refused as retryable or goes unanswered, until it is
//! SENT; each recipient collects what it receives. The report says what was SENT, what
//! arrived, and the longest pause between two SENT answers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use protocol::frames::ServerFrame;
use protocol::payloads::StoredMessage;
use protocol::{Encoding, ErrorCode, MessageId, subjects};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::client::{ClientError, Connection, Event};
use crate::{Stack, eventually};

/// How often idle connections ping, well within the gateway's heartbeat timeout.
const PING_EVERY: Duration = Duration::from_secs(10);

/// The shape of the traffic.
#[derive(Debug, Clone)]
pub struct TrafficPlan {
    /// Sender/recipient pairs. Sender `s<i>` is on gateway `i % n`, its recipient `r<i>` on
    /// the next gateway, so with two or more gateways every message crosses gateways.
    pub pairs: usize,
    /// New messages per second over all senders.
    pub messages_per_s: f64,
    /// Messages of one sender waiting for their SENT at most.
    pub window: usize,
    /// A message unanswered for this long is sent again (the gateway normally answers
    /// `unavailable` first, after its `send_timeout_ms`).
    pub resend_after: Duration,
}

/// Traffic running against a stack.
pub struct Traffic {
    stop_sending: CancellationToken,
    stop_receiving: CancellationToken,
    senders: Vec<JoinHandle<SenderLog>>,
    recipients: Vec<(String, Arc<Inbox>, JoinHandle<()>)>,
    acked: Arc<AtomicU64>,
    started: Instant,
}

/// What one sender saw.
struct SenderLog {
    from: String,
    to: String,
    /// cid → the id its SENT carried.
    sent: HashMap<String, MessageId>,
    acked_at: Vec<Instant>,
    resends: u64,
}

/// Message id → how many times it arrived.
#[derive(Default)]
struct Inbox(Mutex<Received>);

/// Message id → how many times it arrived, and the ids in the order they first arrived.
#[derive(Default)]
struct Received {
    copies: HashMap<MessageId, u32>,
    order: Vec<MessageId>,
}

impl Received {
    fn add(&mut self, id: MessageId) {
        let n = self.copies.entry(id).or_default();
        if *n == 0 {
            self.order.push(id);
        }
        *n += 1;
    }
}

/// One message answered SENT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    pub from: String,
    pub to: String,
    pub cid: String,
    pub id: MessageId,
}

/// What the traffic achieved.
#[derive(Debug)]
pub struct TrafficReport {
    pub sent: Vec<SentMessage>,
    /// SENT messages that never reached their recipient.
    pub missing: Vec<SentMessage>,
    /// Each recipient's messages in the order they first arrived.
    pub arrival_order: HashMap<String, Vec<MessageId>>,
    /// Extra copies received (dropped by a client de-duplicating by message id).
    pub duplicates_received: u64,
    /// Sends repeated with the same cid.
    pub resends: u64,
    /// The longest time between two consecutive SENT answers, over all senders.
    pub longest_ack_gap: Duration,
    /// From the start until new sends stopped.
    pub sending_for: Duration,
}

impl TrafficReport {
    /// SENT answers per second while sending.
    pub fn rate(&self) -> f64 {
        self.sent.len() as f64 / self.sending_for.as_secs_f64()
    }

    /// Asserts that every SENT message is in `stored` exactly once under its id, and that
    /// nothing else from these senders is.
    pub fn assert_stored_once(&self, stored: &[StoredMessage]) {
        let senders: HashSet<&str> = self.sent.iter().map(|m| m.from.as_str()).collect();
        let mut copies: HashMap<MessageId, usize> = HashMap::new();
        let mut by_cid: HashMap<(String, String), usize> = HashMap::new();
        for m in stored
            .iter()
            .filter(|m| senders.contains(m.message.from.as_str()))
        {
            *copies.entry(m.message.id).or_default() += 1;
            *by_cid
                .entry((m.message.from.to_string(), m.message.cid.to_string()))
                .or_default() += 1;
        }
        let lost: Vec<&SentMessage> = self
            .sent
            .iter()
            .filter(|m| !copies.contains_key(&m.id))
            .collect();
        assert!(lost.is_empty(), "SENT but not stored: {lost:?}");
        let twice: Vec<_> = by_cid.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "stored more than once: {twice:?}");
        assert_eq!(
            copies.len(),
            self.sent.len(),
            "stored messages that were never answered SENT"
        );
    }
}

impl TrafficReport {
    /// Asserts that every SENT message reached its recipient.
    pub fn assert_all_delivered(&self) {
        assert!(
            self.missing.is_empty(),
            "{} SENT messages never reached their recipient, e.g. {:?}",
            self.missing.len(),
            self.missing.first()
        );
    }

    /// Asserts that each recipient got its messages (one conversation each) in the order
    /// they are stored in, which is the conversation's order.
    pub fn assert_in_stream_order(&self, stored: &[StoredMessage]) {
        let place: HashMap<MessageId, usize> = stored
            .iter()
            .enumerate()
            .map(|(i, m)| (m.message.id, i))
            .collect();
        for (user, order) in &self.arrival_order {
            let places: Vec<usize> = order
                .iter()
                .filter_map(|id| place.get(id).copied())
                .collect();
            assert_eq!(
                places.len(),
                order.len(),
                "{user} got messages never stored"
            );
            if let Some(w) = places.windows(2).find(|w| w[0] > w[1]) {
                panic!("{user} got stored message {} before {}", w[0], w[1]);
            }
        }
    }
}

impl Traffic {
    /// Connects every pair, then starts sending.
    pub async fn start(stack: &Stack, plan: TrafficPlan) -> Self {
        let gateways = stack.gateways.len();
        let stop_sending = CancellationToken::new();
        let stop_receiving = CancellationToken::new();
        let acked = Arc::new(AtomicU64::new(0));
        let mut recipients = Vec::new();
        let mut connections = Vec::new();
        for i in 0..plan.pairs {
            let (from, to) = (format!("s{i}"), format!("r{i}"));
            let (sender, _) = stack
                .connect_welcomed(&from, i % gateways, Encoding::Json)
                .await;
            let (recipient, _) = stack
                .connect_welcomed(&to, (i + 1) % gateways, Encoding::Json)
                .await;
            let inbox = Arc::new(Inbox::default());
            let task = tokio::spawn(receive(
                recipient,
                to.clone(),
                inbox.clone(),
                stop_receiving.clone(),
            ));
            recipients.push((to.clone(), inbox, task));
            connections.push((sender, from, to));
        }
        let every = Duration::from_secs_f64(plan.pairs as f64 / plan.messages_per_s);
        let started = Instant::now();
        let senders = connections
            .into_iter()
            .map(|(conn, from, to)| {
                tokio::spawn(send(
                    conn,
                    SenderLog {
                        from,
                        to,
                        sent: HashMap::new(),
                        acked_at: Vec::new(),
                        resends: 0,
                    },
                    every,
                    plan.clone(),
                    stop_sending.clone(),
                    acked.clone(),
                ))
            })
            .collect();
        Self {
            stop_sending,
            stop_receiving,
            senders,
            recipients,
            acked,
            started,
        }
    }

    /// Messages answered SENT so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `n` messages have been answered SENT in all.
    pub async fn wait_acked(&self, n: u64, patience: Duration) {
        let what = format!("{n} messages SENT");
        eventually(&what, patience, async || self.acked() >= n).await;
    }

    /// Stops new sends, waits until every message sent so far is SENT and has reached its
    /// recipient (at most `patience` for each), and reports.
    pub async fn finish(self, patience: Duration) -> TrafficReport {
        self.stop_sending.cancel();
        let sending_for = self.started.elapsed();
        let mut logs = Vec::new();
        for sender in self.senders {
            let log = tokio::time::timeout(patience, sender)
                .await
                .expect("a sender still had unanswered messages")
                .expect("sender failed");
            logs.push(log);
        }
        let mut sent = Vec::new();
        let mut acked_at = Vec::new();
        let mut resends = 0;
        for log in logs {
            resends += log.resends;
            acked_at.extend(log.acked_at);
            sent.extend(log.sent.into_iter().map(|(cid, id)| SentMessage {
                from: log.from.clone(),
                to: log.to.clone(),
                cid,
                id,
            }));
        }
        let inboxes: HashMap<&str, &Inbox> = self
            .recipients
            .iter()
            .map(|(user, inbox, _)| (user.as_str(), &**inbox))
            .collect();
        let missing = |sent: &[SentMessage]| -> Vec<SentMessage> {
            sent.iter()
                .filter(|m| {
                    !inboxes[m.to.as_str()]
                        .0
                        .lock()
                        .unwrap()
                        .copies
                        .contains_key(&m.id)
                })
                .cloned()
                .collect()
        };
        let deadline = Instant::now() + patience;
        while !missing(&sent).is_empty() && Instant::now() < deadline {
            if let Some((user, ..)) = self.recipients.iter().find(|(_, _, t)| t.is_finished()) {
                panic!("the connection of {user} ended");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let missing = missing(&sent);
        self.stop_receiving.cancel();
        let mut duplicates_received = 0;
        let mut arrival_order = HashMap::new();
        for (user, inbox, task) in self.recipients {
            task.await.expect("recipient failed");
            let received = std::mem::take(&mut *inbox.0.lock().unwrap());
            duplicates_received += received
                .copies
                .values()
                .map(|n| u64::from(n - 1))
                .sum::<u64>();
            arrival_order.insert(user, received.order);
        }
        acked_at.sort();
        let longest_ack_gap = acked_at
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        TrafficReport {
            sent,
            missing,
            arrival_order,
            duplicates_received,
            resends,
            longest_ack_gap,
            sending_for,
        }
    }
}

/// One sender: a new message every `every` while the window has room; refused and
/// unanswered messages are sent again first, with the same cid.
async fn send(
    mut conn: Connection,
    mut log: SenderLog,
    every: Duration,
    plan: TrafficPlan,
    stop: CancellationToken,
    acked: Arc<AtomicU64>,
) -> SenderLog {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut waiting: HashMap<String, Instant> = HashMap::new();
    let mut refused: VecDeque<String> = VecDeque::new();
    let mut next = 0u64;
    let mut last_write = Instant::now();
    loop {
        if stop.is_cancelled() && waiting.is_empty() {
            return log;
        }
        tokio::select! {
            event = conn.next_event() => {
                let frame = frame_of(event, &log.from);
                match frame {
                    ServerFrame::Sent { cid, id, .. } => {
                        let cid = cid.to_string();
                        if waiting.remove(&cid).is_some() {
                            log.sent.insert(cid, id);
                            log.acked_at.push(Instant::now());
                            acked.fetch_add(1, Ordering::Relaxed);
                        } else if let Some(first) = log.sent.get(&cid) {
                            assert_eq!(*first, id, "{}: a resend of {cid} got another id", log.from);
                        }
                    }
                    ServerFrame::Error { cid: Some(cid), code, .. } if code.is_retryable() => {
                        refused.push_back(cid.to_string());
                    }
                    // A sync without a cursor failed; senders receive nothing here, so
                    // there is nothing to sync.
                    ServerFrame::Error { cid: None, qid: None, code, .. } if code.is_retryable() => {}
                    ServerFrame::Error { .. } => panic!("{}: unexpected {frame:?}", log.from),
                    _ => {}
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let again = send_again(&mut refused, &waiting, |at| now - *at > plan.resend_after);
                let cid = match again {
                    Some(cid) => {
                        log.resends += 1;
                        cid
                    }
                    None if !stop.is_cancelled() && waiting.len() < plan.window => {
                        next += 1;
                        format!("{}-{next}", log.from)
                    }
                    // A sender waiting for its window still keeps its connection alive.
                    None => {
                        if now - last_write > PING_EVERY {
                            conn.ping(None).await.expect("ping");
                            last_write = now;
                        }
                        continue;
                    }
                };
                let body = format!("message {cid}");
                conn.send(&log.to, &cid, &body).await.expect("send");
                waiting.insert(cid, now);
                last_write = now;
            }
        }
    }
}

/// The message to send again, if any: the first refused one still waiting, else a waiting
/// one that `unanswered` says has waited too long.
pub(crate) fn send_again<V>(
    refused: &mut VecDeque<String>,
    waiting: &HashMap<String, V>,
    unanswered: impl Fn(&V) -> bool,
) -> Option<String> {
    while let Some(cid) = refused.pop_front() {
        if waiting.contains_key(&cid) {
            return Some(cid);
        }
    }
    waiting
        .iter()
        .find(|(_, v)| unanswered(v))
        .map(|(cid, _)| cid.clone())
}

/// One recipient: records every message id until `stop`, pinging so the gateway keeps the
/// idle connection.
async fn receive(mut conn: Connection, user: String, inbox: Arc<Inbox>, stop: CancellationToken) {
    let mut ping = tokio::time::interval(PING_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ping.tick() => conn.ping(None).await.expect("ping"),
            event = conn.next_event() => {
                match frame_of(event, &user) {
                    ServerFrame::Message(m) => {
                        inbox.0.lock().unwrap().add(m.id);
                    }
                    // A sync without a cursor failed (replays from a cursor the gateway
                    // tries again itself): ask again, as the error says.
                    ServerFrame::Error { cid: None, qid: None, code, .. } if code.is_retryable() => {
                        let cursor = conn.cursor();
                        conn.sync(cursor).await.expect("sync");
                    }
                    // A replay is running already and covers what this one would.
                    ServerFrame::Error { cid: None, qid: None, code: ErrorCode::TooManyInFlight, .. } => {}
                    ServerFrame::Synced { recovered: false, gap, .. } => {
                        panic!("{user}: replay refused ({gap:?}); history would be needed")
                    }
                    ServerFrame::Error { .. } => panic!("{user}: unexpected error frame"),
                    _ => {}
                }
            }
        }
    }
}

/// The frame of `event`; a closed connection fails the test with its close code.
fn frame_of(event: Result<Event, ClientError>, user: &str) -> ServerFrame {
    match event {
        Ok(Event::Frame(frame)) => frame,
        Ok(Event::Closed(code)) => panic!("connection of {user} closed with code {code:?}"),
        Err(e) => panic!("connection of {user} failed: {e}"),
    }
}

impl Stack {
    /// Every conversation message in the messages streams, each partition's read back in
    /// order, partition after partition (session markers aside). A conversation is in one
    /// partition, so its messages are in its order.
    pub async fn stream_messages(&self) -> Vec<StoredMessage> {
        let mut out = Vec::new();
        for k in 0..self.bus.partitions {
            out.extend(self.partition_messages(k).await);
        }
        out
    }

    async fn partition_messages(&self, k: u32) -> Vec<StoredMessage> {
        let js = jetstream::new(self.nats.client().await);
        let mut stream = js
            .get_stream(subjects::messages_stream(k))
            .await
            .expect("stream");
        let count = stream.info().await.expect("stream info").state.messages as usize;
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
            .await
            .expect("ordered consumer");
        let mut messages = consumer.messages().await.expect("messages");
        let mut out = Vec::with_capacity(count);
        let mut read = 0;
        while read < count {
            let msg = tokio::time::timeout(Duration::from_secs(30), messages.next())
                .await
                .expect("stream read stalled")
                .expect("stream ended")
                .expect("stream read");
            if !subjects::is_session_marker(msg.subject.as_str()) {
                out.push(serde_json::from_slice(&msg.payload).expect("a stored message"));
            }
            read += 1;
        }
        out
    }
}
