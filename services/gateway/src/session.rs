//! One client connection. A `Session` owns the WebSocket and runs one loop that races the next
//! client frame, queued deliveries, the answer to the send in flight, and the heartbeat
//! deadline. Shutdown and slow-consumer eviction arrive through the outbox as a close code.
//!
//! Sends are forwarded to the chat service one at a time, in the order the client sent them,
//! so a conversation's order is the order of the sender's frames.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use protocol::frames::{ClientFrame, ServerFrame};
use protocol::payloads::{
    GroupRequest, HistoryQuery, HistoryRequest, Receipt, ReceiptKind, SendRequest, Typing,
};
use protocol::{
    ClientMsgId, CloseCode, ConnId, ConversationId, DecodeError, Encoding, ErrorCode, GroupId,
    MessageId, UserId, subjects,
};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::auth::Identity;
use crate::inbox::to_ws;
use crate::outbox::{Drained, Outbox};
use crate::registry::SessionHandle;
use crate::replay::{Replay, Turn};
use crate::server::Shared;
use crate::watchers::{MAX_WATCHED, Watchers};

type Socket = WebSocketStream<TokioIo<Upgraded>>;
type SendResult = Result<async_nats::Message, SendFailure>;
type InFlight = Pin<Box<dyn Future<Output = SendResult> + Send>>;
type Query = Pin<Box<dyn Future<Output = Vec<ServerFrame>> + Send>>;
type ReplayTurn = Pin<Box<dyn Future<Output = anyhow::Result<Turn>> + Send>>;

/// Messages per history page unless the client asks otherwise, and the most it may ask.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 100;
/// At most one typing indicator per connection in this interval; more are dropped.
const TYPING_INTERVAL: Duration = Duration::from_secs(1);
/// History queries one session may have waiting at once.
const MAX_QUERIES: usize = 8;

/// Why a send got no answer from the chat service.
#[derive(Debug)]
enum SendFailure {
    TimedOut,
    NoChatService,
}

/// What the session loop does after a client message.
enum Step {
    Continue,
    Close(CloseCode),
    /// Finish this work (boxed, see `on_message`) before the next turn.
    Await(Pin<Box<dyn Future<Output = ()> + Send>>),
}

/// How long writing one batch to a client may take before it counts as a slow consumer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Session {
    shared: Arc<Shared>,
    conn: ConnId,
    user: UserId,
    /// Token expiry, seconds since the Unix epoch.
    token_exp: u64,
    encoding: Encoding,
    handle: Arc<SessionHandle>,
    ws: Socket,
    /// Sends waiting for the one in flight, in client order.
    pending: VecDeque<(ClientMsgId, SendRequest)>,
    in_flight: Option<(ClientMsgId, Instant, InFlight)>,
    /// History queries waiting for their answer; created on the first query, so idle
    /// sessions pay nothing for it.
    queries: Option<FuturesUnordered<Query>>,
    /// The `sync` replay's next step, while one runs.
    replay: Option<ReplayTurn>,
    /// When this connection last sent a typing indicator on (rate limit).
    last_typing: Option<Instant>,
    /// Frames to write at the end of this loop turn, flushed once.
    batch: Vec<Message>,
}

impl Session {
    pub fn new(shared: Arc<Shared>, identity: Identity, encoding: Encoding, ws: Socket) -> Self {
        let conn = shared.next_conn_id();
        let handle = Arc::new(SessionHandle {
            user: identity.user.clone(),
            encoding,
            outbox: Outbox::new(shared.config.outbound_queue_frames),
        });
        Self {
            shared,
            conn,
            user: identity.user,
            token_exp: identity.exp,
            encoding,
            handle,
            ws,
            pending: VecDeque::new(),
            in_flight: None,
            queries: None,
            replay: None,
            last_typing: None,
            batch: Vec::new(),
        }
    }

    /// Registers, serves until the connection ends, then unregisters and closes. With
    /// `resume` (the handshake's `cursor`), live messages are held back from the start and
    /// the replay of what the device missed begins right after `welcome`.
    pub async fn run(mut self, resume: Option<Option<protocol::Cursor>>) {
        let span = tracing::debug_span!("session", user = %self.user, conn = %self.conn);
        let _guard = span.enter();
        let metrics = self.shared.metrics.clone();
        metrics.connections.inc();
        metrics.connections_total.inc();
        if resume.is_some() {
            self.handle.outbox.hold();
        }
        if let Err(e) = self.shared.presence.register(&self.user, self.conn).await {
            tracing::warn!(error = %e, "presence registration failed");
            self.close(CloseCode::ServerError).await;
            metrics.connections.dec();
            return;
        }
        self.shared.registry.insert(self.conn, self.handle.clone());
        if self.shared.shutdown.is_cancelled() {
            self.handle.outbox.close(CloseCode::Reconnect);
        }
        self.queue(&ServerFrame::Welcome {
            user: self.user.clone(),
            conn: self.conn,
            heartbeat_timeout_ms: self.shared.config.heartbeat_timeout_ms,
            max_body_bytes: self.shared.config.max_body_bytes,
        });
        if let Some(cursor) = resume {
            self.shared.metrics.replays.inc();
            self.start_replay_turn(Replay::Start {
                user: self.user.clone(),
                cursor,
            });
        }
        let close = self.serve().await;
        self.shared.registry.remove(self.conn);
        self.shared.watchers.forget(self.conn);
        if let Err(e) = self.shared.presence.unregister(&self.user, self.conn).await {
            tracing::warn!(error = %e, "presence removal failed; the lease TTL will cover it");
        }
        if let Some(code) = close {
            tracing::debug!(?code, "closing session");
            self.close(code).await;
        }
        metrics.connections.dec();
    }

    /// The session loop. Returns the close code to send, or `None` if the client went away.
    async fn serve(&mut self) -> Option<CloseCode> {
        let timeout = Duration::from_millis(self.shared.config.heartbeat_timeout_ms);
        let heartbeat = tokio::time::sleep(timeout);
        tokio::pin!(heartbeat);
        loop {
            if let Err(code) = self.flush().await {
                return Some(code);
            }
            tokio::select! {
                frame = self.ws.next() => {
                    let msg = match frame {
                        None => return None,
                        Some(Ok(msg)) => msg,
                        Some(Err(e)) => return close_code_for(e),
                    };
                    heartbeat.as_mut().reset(tokio::time::Instant::now() + timeout);
                    match self.on_message(msg) {
                        Step::Continue => {}
                        Step::Close(code) => return Some(code),
                        Step::Await(work) => work.await,
                    }
                }
                _ = self.handle.outbox.ready() => {
                    if let Drained::Close(code) = self.handle.outbox.drain(&mut self.batch) {
                        if code == CloseCode::SlowConsumer {
                            self.shared.metrics.slow_consumers.inc();
                        }
                        let _ = self.flush().await;
                        return Some(code);
                    }
                    if self.replay.is_none()
                        && let Some(after) = self.handle.outbox.take_resync()
                    {
                        self.start_replay(Some(after));
                    }
                }
                Some(frames) = next_answer(&mut self.queries), if self.has_queries() => {
                    for frame in &frames {
                        self.queue(frame);
                    }
                }
                turn = poll_replay(&mut self.replay), if self.replay.is_some() => {
                    self.on_replay_turn(turn);
                }
                result = poll_in_flight(&mut self.in_flight), if self.in_flight.is_some() => {
                    let (cid, started, _) = self.in_flight.take().expect("guarded by is_some");
                    self.on_send_answer(cid, started, result);
                    self.start_next_send();
                }
                _ = &mut heartbeat => {
                    if self.token_expired() {
                        return Some(CloseCode::TokenExpired);
                    }
                    self.shared.metrics.heartbeat_timeouts.inc();
                    return Some(CloseCode::HeartbeatTimeout);
                }
            }
            if self.token_expired() {
                return Some(CloseCode::TokenExpired);
            }
        }
    }

    /// Handles one client message. Synchronous on purpose: work that must await (publishing
    /// a receipt) comes back boxed, so the rarely used large futures do not sit in every idle
    /// session's task (this keeps an idle connection within a few KiB).
    fn on_message(&mut self, msg: Message) -> Step {
        let (bytes, is_text) = match &msg {
            Message::Text(t) => (t.as_bytes(), true),
            Message::Binary(b) => (&b[..], false),
            // tungstenite answers a close; pings are answered by it too; pongs need nothing.
            _ => return Step::Continue,
        };
        self.shared.metrics.frames_in.inc();
        match self.encoding.decode_client(bytes, is_text) {
            Ok(frame) => self.on_frame(frame),
            Err(DecodeError::WrongFrameKind(..)) => {
                self.shared.metrics.bad_frames.inc();
                Step::Close(CloseCode::ProtocolViolation)
            }
            Err(e) => {
                self.shared.metrics.bad_frames.inc();
                let code = match e {
                    DecodeError::UnknownType(_) => ErrorCode::UnknownFrameType,
                    _ => ErrorCode::MalformedFrame,
                };
                self.queue(&ServerFrame::error(code, e.to_string(), None));
                Step::Continue
            }
        }
    }

    fn on_frame(&mut self, frame: ClientFrame) -> Step {
        match frame {
            ClientFrame::Send {
                to,
                group,
                cid,
                body,
            } => self.on_send(to, group, cid, body),
            ClientFrame::Group { qid, op } => self.on_group(qid, op),
            ClientFrame::Receipts {
                qid,
                conversation,
                id,
            } => self.on_receipts(qid, conversation, id),
            ClientFrame::Ack { conversation, id } => {
                return self.on_receipt(ReceiptKind::Delivered, conversation, id);
            }
            ClientFrame::Read {
                conversation,
                up_to,
            } => return self.on_receipt(ReceiptKind::Seen, conversation, up_to),
            ClientFrame::Ping { ts } => self.queue(&ServerFrame::Pong { ts }),
            ClientFrame::Sync { cursor } => self.on_sync(cursor),
            ClientFrame::Presence { users } => self.on_presence(users),
            ClientFrame::Typing { conversation } => return self.on_typing(conversation),
            ClientFrame::History {
                qid,
                conversation,
                before,
                after,
                limit,
            } => self.on_history(qid, conversation, before, after, limit),
            ClientFrame::Conversations { qid, limit } => {
                let Ok(qid) = ClientMsgId::new(&qid) else {
                    self.reject(ErrorCode::InvalidId, "qid is not a valid id", None);
                    return Step::Continue;
                };
                let limit = limit.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE);
                self.start_query(qid, HistoryQuery::Conversations { limit });
            }
            ClientFrame::PushToken {
                qid,
                platform,
                token,
                remove,
            } => {
                let (shared, handle) = (self.shared.clone(), self.handle.clone());
                let work =
                    crate::push_tokens::register(shared, handle, qid, platform, token, remove);
                return Step::Await(work);
            }
        }
        Step::Continue
    }

    fn on_sync(&mut self, cursor: Option<String>) {
        if self.replay.is_some() {
            return self.reject(
                ErrorCode::TooManyInFlight,
                "a sync is already running; wait for synced",
                None,
            );
        }
        let cursor = match cursor.map(|c| c.parse::<protocol::Cursor>()).transpose() {
            Ok(cursor) => cursor,
            Err(e) => return self.reject(ErrorCode::InvalidId, e.to_string(), None),
        };
        self.start_replay(cursor);
    }

    /// Replays the user's messages after `cursor`, holding live ones back meanwhile: for a
    /// `sync`, and unasked after the gateway was cut off from NATS (`reregister`).
    fn start_replay(&mut self, cursor: Option<protocol::Cursor>) {
        self.shared.metrics.replays.inc();
        self.handle.outbox.hold();
        self.start_replay_turn(Replay::Start {
            user: self.user.clone(),
            cursor,
        });
    }

    fn start_replay_turn(&mut self, replay: Replay) {
        let shared = self.shared.clone();
        self.replay = Some(Box::pin(async move { shared.replayer.turn(replay).await }));
    }

    /// Sends what a replay step read; the next step starts after this turn's write, so a
    /// large backlog goes at the pace of the socket.
    fn on_replay_turn(&mut self, turn: anyhow::Result<Turn>) {
        self.replay = None;
        let turn = match turn {
            Ok(turn) => turn,
            Err(e) => {
                tracing::warn!(error = %e, "sync failed");
                let resync = self.handle.outbox.resync_failed();
                self.handle.outbox.release();
                if let Some(after) = resync {
                    // The gateway asked for it, not the client, whose cursor may already be
                    // past what was lost: the gateway tries again itself.
                    return crate::reregister::resync_later(self.handle.clone(), after);
                }
                return self.queue(&ServerFrame::error(
                    ErrorCode::Unavailable,
                    "sync failed; send sync again with the same cursor",
                    None,
                ));
            }
        };
        if let Some(head) = turn.head {
            self.handle.outbox.covered_upto(head);
        }
        for frame in &turn.frames {
            match frame {
                ServerFrame::Message(_) => self.shared.metrics.replayed.inc(),
                ServerFrame::Synced {
                    recovered: false, ..
                } => self.shared.metrics.replay_gaps.inc(),
                _ => {}
            }
            self.queue(frame);
        }
        match turn.next {
            Some(next) => self.start_replay_turn(next),
            None => self.handle.outbox.release(),
        }
    }

    /// Starts watching the presence of `users`: each must share a conversation with this
    /// user (they have exchanged a message). Answered with each one's presence now; changes
    /// follow as they happen.
    fn on_presence(&mut self, users: Vec<String>) {
        let Ok(users) = users.iter().map(UserId::new).collect::<Result<Vec<_>, _>>() else {
            return self.reject(ErrorCode::InvalidId, "invalid user id", None);
        };
        if users.is_empty() || self.shared.watchers.count(self.conn) + users.len() > MAX_WATCHED {
            let reason = format!("watch between 1 and {MAX_WATCHED} users per connection");
            return self.reject(ErrorCode::MalformedFrame, reason, None);
        }
        if self
            .queries
            .as_ref()
            .is_some_and(|q| q.len() >= MAX_QUERIES)
        {
            return self.reject(
                ErrorCode::TooManyInFlight,
                "too many queries waiting; wait for their answers",
                None,
            );
        }
        let (shared, me, conn) = (self.shared.clone(), self.user.clone(), self.conn);
        let fut: Query = Box::pin(async move {
            let checks = users.into_iter().map(|user| {
                let (shared, me) = (shared.clone(), me.clone());
                async move {
                    let shares = shares_conversation(&shared, &me, &user).await;
                    (user, shares)
                }
            });
            let mut frames = Vec::new();
            let mut refused = Vec::new();
            for (user, shares) in futures::future::join_all(checks).await {
                match shares {
                    Ok(true) => {}
                    Ok(false) => {
                        refused.push(user.to_string());
                        continue;
                    }
                    Err(()) => {
                        frames.push(ServerFrame::error(
                            ErrorCode::Unavailable,
                            format!("presence of {user} unavailable; retry"),
                            None,
                        ));
                        continue;
                    }
                }
                // Subscribe first, then read: a change in between is sent twice, never lost.
                let watched = Watchers::watch(&shared, conn, user.clone()).await;
                match (watched, shared.presence.of_user(&user).await) {
                    (Ok(()), Ok(p)) => frames.push(ServerFrame::Presence {
                        user: p.user,
                        online: p.online,
                        last_seen: p.last_seen,
                    }),
                    _ => frames.push(ServerFrame::error(
                        ErrorCode::Unavailable,
                        format!("presence of {user} unavailable; retry"),
                        None,
                    )),
                }
            }
            if !refused.is_empty() {
                frames.push(ServerFrame::error(
                    ErrorCode::Forbidden,
                    format!("no conversation shared with {}", refused.join(", ")),
                    None,
                ));
            }
            frames
        });
        self.queries
            .get_or_insert_with(FuturesUnordered::new)
            .push(fut);
    }

    fn on_typing(&mut self, conversation: String) -> Step {
        let Ok(conversation) = conversation.parse::<ConversationId>() else {
            self.reject(ErrorCode::InvalidId, "invalid conversation id", None);
            return Step::Continue;
        };
        if !self.is_participant(&conversation) {
            return Step::Continue;
        }
        let now = Instant::now();
        if self
            .last_typing
            .is_some_and(|t| now.duration_since(t) < TYPING_INTERVAL)
        {
            self.shared.metrics.typing_dropped.inc();
            return Step::Continue;
        }
        self.last_typing = Some(now);
        let typing = Typing {
            by: self.user.clone(),
            conversation,
        };
        let payload = serde_json::to_vec(&typing).expect("typing to JSON");
        let nats = self.shared.nats.clone();
        Step::Await(Box::pin(async move {
            if let Err(e) = nats.publish(subjects::CHAT_TYPING, payload.into()).await {
                tracing::debug!(error = %e, "typing not published");
            }
        }))
    }

    fn on_history(
        &mut self,
        qid: String,
        conversation: String,
        before: Option<String>,
        after: Option<String>,
        limit: Option<u32>,
    ) {
        let Ok(qid) = ClientMsgId::new(&qid) else {
            return self.reject(ErrorCode::InvalidId, "qid is not a valid id", None);
        };
        let cursor = |c: Option<String>| c.map(|c| c.parse::<MessageId>()).transpose();
        let (Ok(conversation), Ok(before), Ok(after)) = (
            conversation.parse::<ConversationId>(),
            cursor(before),
            cursor(after),
        ) else {
            let frame = ServerFrame::query_error(
                ErrorCode::InvalidId,
                "invalid conversation or cursor",
                qid,
            );
            self.shared.metrics.bad_frames.inc();
            return self.queue(&frame);
        };
        if before.is_some() && after.is_some() {
            let frame = ServerFrame::query_error(
                ErrorCode::MalformedFrame,
                "give before or after, not both",
                qid,
            );
            self.shared.metrics.bad_frames.inc();
            return self.queue(&frame);
        }
        let limit = limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
        let query = HistoryQuery::Messages {
            conversation,
            before,
            after,
            limit,
        };
        self.start_query(qid, query);
    }

    /// Group operations are the chat service's; it authorises them.
    fn on_group(&mut self, qid: String, op: protocol::GroupOp) {
        let Ok(qid) = ClientMsgId::new(&qid) else {
            return self.reject(ErrorCode::InvalidId, "qid is not a valid id", None);
        };
        let request = GroupRequest {
            user: self.user.clone(),
            qid: qid.clone(),
            op,
        };
        let payload = serde_json::to_vec(&request).expect("group request to JSON");
        self.start_request(qid, subjects::CHAT_GROUP, payload);
    }

    fn on_receipts(&mut self, qid: String, conversation: String, id: String) {
        let Ok(qid) = ClientMsgId::new(&qid) else {
            return self.reject(ErrorCode::InvalidId, "qid is not a valid id", None);
        };
        let (Ok(conversation), Ok(id)) = (
            conversation.parse::<ConversationId>(),
            id.parse::<MessageId>(),
        ) else {
            self.shared.metrics.bad_frames.inc();
            let frame =
                ServerFrame::query_error(ErrorCode::InvalidId, "invalid conversation or id", qid);
            return self.queue(&frame);
        };
        self.start_query(qid, HistoryQuery::Receipts { conversation, id });
    }

    /// Asks the history service; the answer (or an error with the same qid) is queued when it
    /// arrives. Authorisation is the history service's: it knows group membership.
    fn start_query(&mut self, qid: ClientMsgId, query: HistoryQuery) {
        let request = HistoryRequest {
            user: self.user.clone(),
            qid: qid.clone(),
            query,
        };
        let payload = serde_json::to_vec(&request).expect("history request to JSON");
        self.start_request(qid, subjects::HISTORY_QUERY, payload);
    }

    /// Sends a request whose answer is a frame for the client, queued when it arrives (an
    /// error carrying `qid` if the service does not answer in time).
    fn start_request(&mut self, qid: ClientMsgId, subject: &'static str, payload: Vec<u8>) {
        if self
            .queries
            .as_ref()
            .is_some_and(|q| q.len() >= MAX_QUERIES)
        {
            let frame = ServerFrame::query_error(
                ErrorCode::TooManyInFlight,
                "too many queries waiting; wait for their answers",
                qid,
            );
            return self.queue(&frame);
        }
        let nats = self.shared.nats.clone();
        let timeout = Duration::from_millis(self.shared.config.send_timeout_ms);
        let fut: Query =
            Box::pin(async move { vec![ask(nats, subject, payload, timeout, qid).await] });
        self.queries
            .get_or_insert_with(FuturesUnordered::new)
            .push(fut);
    }

    fn has_queries(&self) -> bool {
        self.queries.as_ref().is_some_and(|q| !q.is_empty())
    }

    fn on_send(&mut self, to: String, group: Option<String>, cid: String, body: String) {
        let Ok(cid) = ClientMsgId::new(&cid) else {
            return self.reject(
                ErrorCode::InvalidId,
                "cid is not a valid client message id",
                None,
            );
        };
        match &group {
            None if UserId::new(&to).is_err() => {
                return self.reject(ErrorCode::InvalidId, "to is not a valid user id", Some(cid));
            }
            Some(g) if !to.is_empty() || GroupId::new(g).is_err() => {
                let reason = "give a valid group id, or to, not both";
                return self.reject(ErrorCode::InvalidId, reason, Some(cid));
            }
            _ => {}
        }
        if body.len() > self.shared.config.max_body_bytes {
            let reason = format!("body exceeds {} bytes", self.shared.config.max_body_bytes);
            return self.reject(ErrorCode::BodyTooLarge, reason, Some(cid));
        }
        if self.pending.len() >= self.shared.config.max_in_flight_sends {
            return self.reject(
                ErrorCode::TooManyInFlight,
                "too many sends waiting; wait for sent",
                Some(cid),
            );
        }
        self.queue(&ServerFrame::Accepted { cid: cid.clone() });
        let request = SendRequest {
            from: self.user.clone(),
            to,
            group,
            cid: cid.to_string(),
            body,
            origin: Some(self.conn),
        };
        self.pending.push_back((cid, request));
        if self.in_flight.is_none() {
            self.start_next_send();
        }
    }

    fn start_next_send(&mut self) {
        let Some((cid, request)) = self.pending.pop_front() else {
            return;
        };
        let nats = self.shared.nats.clone();
        let payload = serde_json::to_vec(&request).expect("send request to JSON");
        let timeout = Duration::from_millis(self.shared.config.send_timeout_ms);
        let fut: InFlight = Box::pin(async move {
            match tokio::time::timeout(timeout, nats.request(subjects::CHAT_SEND, payload.into()))
                .await
            {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                    Err(SendFailure::NoChatService)
                }
                _ => Err(SendFailure::TimedOut),
            }
        });
        self.in_flight = Some((cid, Instant::now(), fut));
    }

    fn on_send_answer(&mut self, cid: ClientMsgId, started: Instant, result: SendResult) {
        let frame = match result {
            Ok(reply) => match serde_json::from_slice::<ServerFrame>(&reply.payload) {
                Ok(frame @ ServerFrame::Sent { .. }) => {
                    self.shared.metrics.send_latency.observe(started.elapsed());
                    frame
                }
                Ok(frame @ ServerFrame::Error { .. }) => frame,
                _ => {
                    tracing::warn!("unexpected answer from chat service");
                    ServerFrame::error(ErrorCode::Unavailable, "chat service failed", Some(cid))
                }
            },
            Err(failure) => {
                tracing::warn!(?failure, "send not answered");
                ServerFrame::error(
                    ErrorCode::Unavailable,
                    "chat service unavailable; retry with the same cid",
                    Some(cid),
                )
            }
        };
        self.queue(&frame);
    }

    fn on_receipt(&mut self, kind: ReceiptKind, conversation: String, id: String) -> Step {
        let (Ok(conversation), Ok(id)) = (
            conversation.parse::<ConversationId>(),
            id.parse::<MessageId>(),
        ) else {
            self.reject(
                ErrorCode::InvalidId,
                "invalid conversation or message id",
                None,
            );
            return Step::Continue;
        };
        if !self.is_participant(&conversation) {
            return Step::Continue;
        }
        let receipt = Receipt {
            kind,
            by: self.user.clone(),
            conversation,
            id,
        };
        let payload = serde_json::to_vec(&receipt).expect("receipt to JSON");
        let nats = self.shared.nats.clone();
        Step::Await(Box::pin(async move {
            if let Err(e) = nats.publish(subjects::CHAT_RECEIPT, payload.into()).await {
                tracing::warn!(error = %e, "receipt not published");
            }
        }))
    }

    /// Whether this user takes part in the 1:1 `conversation`; refuses the frame if not.
    /// Group membership is checked by the services that act on the frame, which know it.
    fn is_participant(&mut self, conversation: &ConversationId) -> bool {
        let member = conversation.group_id().is_some() || conversation.has_participant(&self.user);
        if !member {
            self.reject(
                ErrorCode::Forbidden,
                "not a participant of that conversation",
                None,
            );
        }
        member
    }

    fn reject(&mut self, code: ErrorCode, reason: impl Into<String>, cid: Option<ClientMsgId>) {
        self.shared.metrics.bad_frames.inc();
        self.queue(&ServerFrame::error(code, reason, cid));
    }

    fn queue(&mut self, frame: &ServerFrame) {
        self.batch.push(to_ws(self.encoding.encode_server(frame)));
    }

    /// Writes the batch and flushes once. A client that cannot take it within the write
    /// timeout is a slow consumer.
    async fn flush(&mut self) -> Result<(), CloseCode> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let n = self.batch.len() as u64;
        let ws = &mut self.ws;
        let batch = &mut self.batch;
        let write = async move {
            for msg in batch.drain(..) {
                ws.feed(msg).await?;
            }
            ws.flush().await
        };
        match Box::pin(tokio::time::timeout(WRITE_TIMEOUT, write)).await {
            Ok(Ok(())) => {
                self.shared.metrics.frames_out.add(n);
                if self.batch.capacity() > 64 {
                    self.batch = Vec::new();
                }
                Ok(())
            }
            Ok(Err(_)) => Err(CloseCode::ServerError),
            Err(_) => Err(CloseCode::SlowConsumer),
        }
    }

    async fn close(&mut self, code: CloseCode) {
        let frame = CloseFrame {
            code: WsCloseCode::from(code as u16),
            reason: code.reason().into(),
        };
        let _ = Box::pin(tokio::time::timeout(
            Duration::from_secs(2),
            self.ws.close(Some(frame)),
        ))
        .await;
    }

    fn token_expired(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        now > self
            .token_exp
            .saturating_add(self.shared.config.jwt_leeway_secs)
    }
}

async fn next_answer(queries: &mut Option<FuturesUnordered<Query>>) -> Option<Vec<ServerFrame>> {
    match queries {
        Some(q) => q.next().await,
        None => std::future::pending().await,
    }
}

/// Asks the history service; an error with the same qid if it does not answer.
/// One request to a service whose answer is a frame for the client.
async fn ask(
    nats: async_nats::Client,
    subject: &'static str,
    payload: Vec<u8>,
    timeout: Duration,
    qid: ClientMsgId,
) -> ServerFrame {
    let answer = tokio::time::timeout(timeout, nats.request(subject, payload.into())).await;
    match answer {
        Ok(Ok(reply)) => match serde_json::from_slice::<ServerFrame>(&reply.payload) {
            Ok(frame) => frame,
            Err(_) => ServerFrame::query_error(ErrorCode::Unavailable, "service failed", qid),
        },
        _ => ServerFrame::query_error(ErrorCode::Unavailable, "service unavailable; retry", qid),
    }
}

/// Whether `me` and `other` share a conversation: they have exchanged a message (asked of
/// the history service, whose cache makes it cheap). `Err` if history did not answer.
async fn shares_conversation(shared: &Shared, me: &UserId, other: &UserId) -> Result<bool, ()> {
    if me == other {
        return Ok(true);
    }
    let qid = ClientMsgId::new("presence").expect("valid id");
    let request = HistoryRequest {
        user: me.clone(),
        qid: qid.clone(),
        query: HistoryQuery::Messages {
            conversation: ConversationId::direct(me, other),
            before: None,
            after: None,
            limit: 1,
        },
    };
    let payload = serde_json::to_vec(&request).expect("history request to JSON");
    let timeout = Duration::from_millis(shared.config.send_timeout_ms);
    match ask(
        shared.nats.clone(),
        subjects::HISTORY_QUERY,
        payload,
        timeout,
        qid,
    )
    .await
    {
        ServerFrame::History { messages, .. } => Ok(!messages.is_empty()),
        _ => Err(()),
    }
}

async fn poll_replay(replay: &mut Option<ReplayTurn>) -> anyhow::Result<Turn> {
    match replay {
        Some(fut) => fut.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn poll_in_flight(in_flight: &mut Option<(ClientMsgId, Instant, InFlight)>) -> SendResult {
    match in_flight {
        Some((_, _, fut)) => fut.as_mut().await,
        None => std::future::pending().await,
    }
}

fn close_code_for(e: WsError) -> Option<CloseCode> {
    match e {
        WsError::Capacity(_) => Some(CloseCode::FrameTooLarge),
        WsError::Protocol(_) | WsError::Utf8(_) => Some(CloseCode::ProtocolViolation),
        // The connection is gone; there is nobody to tell.
        _ => None,
    }
}
