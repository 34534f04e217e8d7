//! A rolling restart under load: users chatting 1:1 and in groups, each on one connection
//! that, like a real client, reconnects to another gateway with its cursor when its gateway
//! drains, and sends again (same cid) what was refused or left unanswered; while every
//! component of the stack is restarted in turn ([`restart_everything`]). The report says what
//! was lost, what was stored twice, and the pause each restart caused each user: the longest
//! time without a `sent` answer, or without an arriving message, around it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::frames::ServerFrame;
use protocol::{Encoding, GroupOp, MessageId};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::client::{ClientError, Connection, Event};
use crate::traffic::send_again;
use crate::{Stack, eventually, expect_answer, expect_synced};

/// The traffic.
#[derive(Debug, Clone)]
pub struct RollingPlan {
    /// Users, spread over the gateways; user `i` writes 1:1 to user `i + 1`.
    pub users: usize,
    /// Members per group; every user is in one group and writes to it every other message.
    pub group_size: usize,
    /// Messages each user sends per second.
    pub messages_per_s: f64,
}

/// One restart: what was restarted, when it began and when it was back.
#[derive(Debug, Clone)]
pub struct Restart {
    pub what: String,
    pub began: Instant,
    pub back: Instant,
}

/// What the users saw.
#[derive(Debug)]
pub struct RollingReport {
    /// Messages answered `sent`.
    pub sent: usize,
    /// Deliveries that were due (a 1:1 message to its recipient, a group message to each
    /// other member).
    pub deliveries: usize,
    /// Deliveries that never arrived: "message id → user".
    pub lost: Vec<String>,
    /// Extra copies that arrived (a client drops them by message id).
    pub duplicates_dropped: u64,
    /// Sends repeated with the same cid.
    pub resends: u64,
    /// Times a client reconnected.
    pub reconnects: u64,
    /// Per restart, each user's pause around it.
    pub pauses: Vec<(Restart, Vec<Pause>)>,
}

/// What one user waited for around one restart.
#[derive(Debug, Clone, Copy)]
pub struct Pause {
    /// The longest time between two `sent` answers.
    pub sending: Duration,
    /// The longest time between two arriving messages.
    pub arriving: Duration,
}

impl Pause {
    /// The longer of the two: what the user noticed.
    pub fn noticed(&self) -> Duration {
        self.sending.max(self.arriving)
    }
}

/// The `q` quantile of `values` (sorted here).
pub fn quantile(values: impl Iterator<Item = Duration>, q: f64) -> Duration {
    let mut v: Vec<Duration> = values.collect();
    v.sort();
    v.get(((v.len().max(1) - 1) as f64 * q).round() as usize)
        .copied()
        .unwrap_or_default()
}

impl RollingReport {
    /// The longest pause any user saw in any restart.
    pub fn longest_pause(&self) -> Duration {
        self.pauses
            .iter()
            .flat_map(|(_, p)| p.iter().map(Pause::noticed))
            .max()
            .unwrap_or_default()
    }

    /// Per restart: how long it took, the noticed pause's median, 90th percentile and maximum
    /// over users, and the longest wait for a `sent` and for a message apart.
    pub fn rows(&self) -> Vec<PauseRow> {
        self.pauses
            .iter()
            .map(|(restart, pauses)| {
                let noticed = |q| quantile(pauses.iter().map(Pause::noticed), q);
                PauseRow {
                    what: restart.what.clone(),
                    took: restart.back - restart.began,
                    p50: noticed(0.5),
                    p90: noticed(0.9),
                    max: noticed(1.0),
                    sending_max: quantile(pauses.iter().map(|p| p.sending), 1.0),
                    arriving_max: quantile(pauses.iter().map(|p| p.arriving), 1.0),
                }
            })
            .collect()
    }

    /// [`RollingReport::rows`] as a Markdown table.
    pub fn pause_table(&self) -> String {
        let mut out = String::from(
            "| restart | took | pause p50 | p90 | max | longest without `sent` | longest without a message |\n\
             |---|---|---|---|---|---|---|\n",
        );
        for row in self.rows() {
            let s = |d: Duration| format!("{:.2} s", d.as_secs_f64());
            out.push_str(&format!(
                "| {} | {:.1} s | {} | {} | {} | {} | {} |\n",
                row.what,
                row.took.as_secs_f64(),
                s(row.p50),
                s(row.p90),
                s(row.max),
                s(row.sending_max),
                s(row.arriving_max),
            ));
        }
        out
    }
}

/// One restart's pauses over users (see [`RollingReport::rows`]).
#[derive(Debug, Clone)]
pub struct PauseRow {
    pub what: String,
    pub took: Duration,
    pub p50: Duration,
    pub p90: Duration,
    pub max: Duration,
    pub sending_max: Duration,
    pub arriving_max: Duration,
}

/// Where a message goes.
#[derive(Debug, Clone)]
enum Target {
    User(String),
    /// A group and its members (the sender among them).
    Group(String, Vec<String>),
}

/// What one user saw.
#[derive(Default)]
struct UserLog {
    /// Messages answered `sent`, with where they went and when.
    sent: Vec<(MessageId, Target, Instant)>,
    /// Message id → copies received.
    received: HashMap<MessageId, u32>,
    /// When each `sent` answer came.
    answered_at: Vec<Instant>,
    /// When each message arrived.
    arrived_at: Vec<Instant>,
    resends: u64,
    reconnects: u64,
    /// Messages waiting for their `sent` now.
    waiting: usize,
}

/// Users chatting through a stack's gateways.
pub struct Chatters {
    stop_sending: CancellationToken,
    stop: CancellationToken,
    users: Vec<(String, Arc<Mutex<UserLog>>)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Chatters {
    /// Creates the groups, connects every user (each to gateway `i % n`, synced so that its
    /// cursor covers everything sent from now on), then starts sending.
    pub async fn start(stack: &Stack, plan: &RollingPlan) -> Self {
        let urls: Vec<String> = stack.gateways.iter().map(|g| g.ws_url()).collect();
        let names: Vec<String> = (0..plan.users).map(|i| format!("u{i}")).collect();
        let mut groups: HashMap<String, Target> = HashMap::new();
        for (g, members) in names.chunks(plan.group_size).enumerate() {
            let mut owner = stack.connect(&members[0], 0).await;
            let qid = format!("create{g}");
            owner
                .group(
                    &qid,
                    GroupOp::Create {
                        name: format!("group {g}"),
                        members: members[1..].to_vec(),
                    },
                )
                .await
                .expect("create group");
            let id = match expect_answer(&mut owner, &qid).await {
                ServerFrame::Group { group, .. } => group.group.to_string(),
                other => panic!("group {g} not created: {other:?}"),
            };
            owner.close().await;
            for member in members {
                groups.insert(member.clone(), Target::Group(id.clone(), members.to_vec()));
            }
        }
        let stop_sending = CancellationToken::new();
        let stop = CancellationToken::new();
        let every = Duration::from_secs_f64(1.0 / plan.messages_per_s);
        // Everyone is connected and synced before anyone sends: a message sent before its
        // recipient's first connection is not due to it.
        let mut users = Vec::new();
        let mut ready = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let peer = Target::User(names[(i + 1) % names.len()].clone());
            let targets = [peer, groups[name].clone()];
            let mut conn = stack.connect(name, i % urls.len()).await;
            conn.sync(None).await.expect("sync");
            expect_synced(&mut conn).await;
            let log = Arc::new(Mutex::new(UserLog::default()));
            let user = User {
                name: name.clone(),
                token: stack.token(name),
                urls: urls.clone(),
                gateway: i % urls.len(),
                targets,
                log: log.clone(),
            };
            ready.push((user, conn));
            users.push((name.clone(), log));
        }
        let tasks = ready
            .into_iter()
            .map(|(user, conn)| {
                let (stop_sending, stop) = (stop_sending.clone(), stop.clone());
                tokio::spawn(user.run(conn, every, stop_sending, stop))
            })
            .collect();
        Self {
            stop_sending,
            stop,
            users,
            tasks,
        }
    }

    /// Waits until every user has had a `sent` answer and a message after `since`: all are
    /// connected and chatting again.
    pub async fn wait_all_active_since(&self, since: Instant) {
        eventually("every user chatting again", crate::PATIENCE, async || {
            self.users.iter().all(|(_, log)| {
                let log = log.lock().unwrap();
                let after = |times: &[Instant]| times.last().is_some_and(|at| *at > since);
                after(&log.answered_at) && after(&log.arrived_at)
            })
        })
        .await;
    }

    /// Messages answered `sent` so far.
    pub fn sent(&self) -> usize {
        self.users
            .iter()
            .map(|(_, log)| log.lock().unwrap().sent.len())
            .sum()
    }

    /// Stops new sends, waits (at most `patience`) until every message is `sent` and every
    /// delivery has arrived, and reports the pauses around `restarts`.
    pub async fn finish(self, restarts: Vec<Restart>, patience: Duration) -> RollingReport {
        self.stop_sending.cancel();
        let deadline = Instant::now() + patience;
        let due = |users: &[(String, Arc<Mutex<UserLog>>)]| -> (usize, Vec<(Instant, String)>) {
            let received: HashMap<&str, HashSet<MessageId>> = users
                .iter()
                .map(|(name, log)| {
                    let ids = log.lock().unwrap().received.keys().copied().collect();
                    (name.as_str(), ids)
                })
                .collect();
            let mut deliveries = 0;
            let mut lost = Vec::new();
            for (from, log) in users {
                for (id, target, at) in &log.lock().unwrap().sent {
                    let to: Vec<&str> = match target {
                        Target::User(to) => vec![to.as_str()],
                        Target::Group(_, members) => members
                            .iter()
                            .map(String::as_str)
                            .filter(|m| m != from)
                            .collect(),
                    };
                    for user in to {
                        deliveries += 1;
                        if !received[user].contains(id) {
                            let kind = match target {
                                Target::User(_) => "1:1",
                                Target::Group(..) => "group",
                            };
                            lost.push((*at, format!("{kind} {id} from {from} → {user}")));
                        }
                    }
                }
            }
            (deliveries, lost)
        };
        loop {
            assert!(
                !self.tasks.iter().any(|t| t.is_finished()),
                "a user's task ended early"
            );
            let answered = self
                .users
                .iter()
                .all(|(_, log)| log.lock().unwrap().waiting == 0);
            if answered && due(&self.users).1.is_empty() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stop.cancel();
        for task in self.tasks {
            task.await.expect("user task");
        }
        let (deliveries, lost) = due(&self.users);
        // Each lost delivery with the restart it was sent during (or after).
        let lost = lost
            .into_iter()
            .map(|(at, what)| {
                let during = restarts
                    .iter()
                    .rev()
                    .find(|r| r.began <= at)
                    .map_or("before the restarts", |r| r.what.as_str());
                format!("{what}, sent during or after {during}")
            })
            .collect();
        let logs: Vec<_> = self.users.iter().map(|(_, l)| l.lock().unwrap()).collect();
        let pauses = restarts
            .into_iter()
            .map(|r| {
                let each = logs
                    .iter()
                    .map(|l| Pause {
                        sending: pause_around(&l.answered_at, &r),
                        arriving: pause_around(&l.arrived_at, &r),
                    })
                    .collect();
                (r, each)
            })
            .collect();
        RollingReport {
            sent: logs.iter().map(|l| l.sent.len()).sum(),
            deliveries,
            lost,
            duplicates_dropped: logs
                .iter()
                .flat_map(|l| l.received.values())
                .map(|n| u64::from(n - 1))
                .sum(),
            resends: logs.iter().map(|l| l.resends).sum(),
            reconnects: logs.iter().map(|l| l.reconnects).sum(),
            pauses,
        }
    }
}

/// The longest gap between two of a user's `sent` answers, or two arrivals, that overlaps
/// the restart (from its start until it was back).
fn pause_around(times: &[Instant], restart: &Restart) -> Duration {
    times
        .windows(2)
        .filter(|w| w[1] >= restart.began && w[0] <= restart.back)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

/// One user's connection and what it knows to reconnect.
struct User {
    name: String,
    token: String,
    urls: Vec<String>,
    gateway: usize,
    /// Its peer and its group; messages alternate between them.
    targets: [Target; 2],
    log: Arc<Mutex<UserLog>>,
}

/// A message waiting for its `sent`.
struct Waiting {
    at: Instant,
    target: Target,
}

/// A message unanswered for this long is sent again (the gateway answers `unavailable`
/// first, after its `send_timeout_ms`).
const RESEND_AFTER: Duration = Duration::from_secs(5);

impl User {
    async fn run(
        mut self,
        mut conn: Connection,
        every: Duration,
        stop_sending: CancellationToken,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut waiting: HashMap<String, Waiting> = HashMap::new();
        let mut refused: VecDeque<String> = VecDeque::new();
        let mut next = 0u64;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                event = conn.next_event() => match self.on_event(event, &mut waiting, &mut refused) {
                    Some(()) => {}
                    None => {
                        conn = self.reconnect(conn.cursor()).await;
                        refused.extend(waiting.keys().cloned());
                    }
                },
                _ = tick.tick() => {
                    let again = send_again(&mut refused, &waiting, |w| w.at.elapsed() > RESEND_AFTER);
                    let cid = match again {
                        Some(cid) => {
                            self.log.lock().unwrap().resends += 1;
                            cid
                        }
                        None if !stop_sending.is_cancelled() => {
                            next += 1;
                            let cid = format!("{}-{next}", self.name);
                            let target = self.targets[next as usize % 2].clone();
                            waiting.insert(cid.clone(), Waiting { at: Instant::now(), target });
                            cid
                        }
                        None => continue,
                    };
                    let w = waiting.get_mut(&cid).expect("waiting");
                    w.at = Instant::now();
                    let body = format!("message {cid}");
                    // A send on a connection that just closed is sent again after the
                    // reconnect (the close arrives as the next event).
                    let _ = match &w.target {
                        Target::User(to) => conn.send(to, &cid, &body).await,
                        Target::Group(group, _) => conn.send_group(group, &cid, &body).await,
                    };
                }
            }
            self.log.lock().unwrap().waiting = waiting.len();
        }
    }

    /// Records one event; `None` when the connection is gone.
    fn on_event(
        &self,
        event: Result<Event, ClientError>,
        waiting: &mut HashMap<String, Waiting>,
        refused: &mut VecDeque<String>,
    ) -> Option<()> {
        let frame = match event {
            Ok(Event::Frame(frame)) => frame,
            Ok(Event::Closed(_)) | Err(_) => return None,
        };
        let mut log = self.log.lock().unwrap();
        match frame {
            ServerFrame::Sent { cid, id, .. } => {
                if let Some(w) = waiting.remove(cid.as_str()) {
                    log.sent.push((id, w.target, Instant::now()));
                    log.answered_at.push(Instant::now());
                }
            }
            ServerFrame::Message(m) => {
                *log.received.entry(m.id).or_default() += 1;
                log.arrived_at.push(Instant::now());
            }
            ServerFrame::Error {
                cid: Some(cid),
                code,
                ..
            } if code.is_retryable() => refused.push_back(cid.to_string()),
            ServerFrame::Synced {
                recovered: false,
                gap,
                ..
            } => panic!("{}: a reconnect could not replay ({gap:?})", self.name),
            ServerFrame::Error { .. } => panic!("{}: unexpected {frame:?}", self.name),
            _ => {}
        }
        Some(())
    }

    /// Reconnects to the next gateway that takes the connection, resuming from `cursor`.
    async fn reconnect(&mut self, cursor: Option<protocol::Cursor>) -> Connection {
        let deadline = Instant::now() + crate::PATIENCE;
        loop {
            self.gateway = (self.gateway + 1) % self.urls.len();
            let url = &self.urls[self.gateway];
            match Connection::resume(url, &self.token, Encoding::Json, cursor.clone()).await {
                Ok(conn) => {
                    self.log.lock().unwrap().reconnects += 1;
                    return conn;
                }
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "{}: no gateway took the connection: {e:?}",
                        self.name
                    );
                    // A client's backoff between attempts.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// The deployment a rolling restart runs on: a three-node cluster (`bus.replicas = 3`, three
/// partitions), three gateways, two chat and two history instances and a notifier; groups
/// may take anyone.
pub async fn stack() -> Stack {
    let mut stack = Stack::new()
        .cluster(3)
        .gateways(3)
        .bus_config(|b| {
            b.replicas = 3;
            b.partitions = 3;
        })
        .chat_config(|c| c.group_adds = chat::GroupAdds::Anyone)
        .start()
        .await;
    stack.start_chat(stack.chat_config.clone()).await;
    stack.start_history().await;
    stack.start_notifier(1_000, "").await;
    stack
}

/// The users' messages in the streams: how many distinct (user, cid), and how many of them
/// stored more than once.
pub async fn stored(stack: &Stack) -> (usize, usize) {
    let mut once = HashSet::new();
    let mut twice = 0;
    for m in stack.stream_messages().await {
        let from_a_user = m.message.event.is_none() && m.message.from.as_str().starts_with('u');
        if from_a_user && !once.insert((m.message.from.to_string(), m.message.cid.to_string())) {
            twice += 1;
        }
    }
    (once.len(), twice)
}

/// Restarts every component of `stack` in turn, waiting after each until every user is
/// chatting again: each gateway (drained: its clients move to the others; started again on
/// its address), each chat and history instance and each notifier (stopped gracefully,
/// started again), and on a cluster each NATS node (lame-duck mode, started again on its
/// store and current again).
pub async fn restart_everything(stack: &mut Stack, chatters: &Chatters) -> Vec<Restart> {
    let mut restarts = Vec::new();
    for i in 0..stack.gateways.len() {
        let began = Instant::now();
        stack.restart_gateway(i).await;
        restarts.push(settle(chatters, format!("gateway {i}"), began).await);
    }
    for i in 0..stack.chats.len() {
        let began = Instant::now();
        stack.chats[i].stop().await;
        stack.start_chat(stack.chat_config.clone()).await;
        restarts.push(settle(chatters, format!("chat {i}"), began).await);
    }
    for i in 0..stack.histories.len() {
        let began = Instant::now();
        stack.histories[i].stop().await;
        stack.start_history().await;
        restarts.push(settle(chatters, format!("history {i}"), began).await);
    }
    for i in 0..stack.notifiers.len() {
        let began = Instant::now();
        let config = stack.notifiers[i].config.clone();
        stack.notifiers[i].stop().await;
        stack.start_notifier_with(config).await;
        restarts.push(settle(chatters, format!("notifier {i}"), began).await);
    }
    if let crate::StackNats::Cluster(cluster) = &mut stack.nats {
        for i in 0..cluster.nodes.len() {
            let began = Instant::now();
            cluster.lame_duck(i).await;
            cluster.restart(i).await;
            restarts.push(settle(chatters, format!("NATS node n{}", i + 1), began).await);
        }
    }
    restarts
}

/// The restart of `what`, begun at `began`, once every user is chatting again after it.
async fn settle(chatters: &Chatters, what: String, began: Instant) -> Restart {
    let back = Instant::now();
    tracing::info!(restarted = %what, took = ?(back - began), "rolling restart step");
    chatters.wait_all_active_since(back).await;
    Restart { what, began, back }
}
