//! One client connection. A `Session` owns the WebSocket and runs one loop that races the next
//! client frame, queued deliveries, the answer to the send in flight, query answers, the
//! replay's next step and the heartbeat deadline. Shutdown and slow-consumer eviction arrive
//! through the outbox as a close code.
//!
//! This file holds the loop, the socket and the dispatch of a checked frame (`Request`) to its
//! handler; each kind of work has its own file beside it: `send.rs` (the send pipeline),
//! `signals.rs` (acks, reads and typing), `query.rs` (history, conversations, receipts and
//! group requests), `watch.rs` (presence watching) and `replay.rs` (driving a `sync`).

mod query;
mod receipt_gate;
mod replay;
mod send;
mod signals;
mod watch;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use protocol::frames::ServerFrame;
use protocol::payloads::{HistoryQuery, ReceiptKind, SendRequest};
use protocol::{ClientMsgId, CloseCode, ConnId, Cursor, DecodeError, Encoding, Request, UserId};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::Instrument;

use crate::auth::Identity;
use crate::outbox::{Drained, Outbox, to_ws};
use crate::push_tokens::{self, Registration};
use crate::quota::SendQuota;
use crate::refusal::Refusal;
use crate::registry::SessionHandle;
use crate::state::GatewayState;

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Work a frame hands back to be awaited before the next frame (see `on_message`).
type Work = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What the session loop does after a client message.
enum Step {
    Continue,
    Close(CloseCode),
    /// Finish this work before the next turn.
    Await(Work),
}

/// How long writing one batch to a client may take before it counts as a slow consumer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Session {
    state: Arc<GatewayState>,
    conn: ConnId,
    user: UserId,
    /// Token expiry, seconds since the Unix epoch.
    token_exp: u64,
    encoding: Encoding,
    handle: Arc<SessionHandle>,
    ws: Socket,
    /// Sends waiting for the one in flight, in client order.
    pending: VecDeque<(ClientMsgId, SendRequest)>,
    in_flight: Option<(ClientMsgId, Instant, send::InFlight)>,
    /// Queries waiting for their answer; created on the first query, so idle sessions pay
    /// nothing for it.
    queries: Option<FuturesUnordered<query::Query>>,
    /// The `sync` replay's next step, while one runs.
    replay: Option<replay::ReplayTurn>,
    /// How far the running replay has brought the device: its cursor after the last
    /// replayed message queued (or where the replay started). A failed replay is tried
    /// again from here.
    replayed_to: Option<Cursor>,
    /// When this connection last sent a typing indicator on (rate limit).
    last_typing: Option<Instant>,
    /// Which receipts go on, and when (created on the first receipt).
    receipt_gate: Option<Box<receipt_gate::ReceiptGate>>,
    /// When receipts waiting in the gate may go.
    receipt_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Frames to write at the end of this loop turn, flushed once.
    batch: Vec<Message>,
    /// The user's send limits on this gateway (taken on the first send).
    quota: Option<Arc<SendQuota>>,
    /// Set while the user is over their send limits: the socket is not read until then, so
    /// a flood waits in the client's own TCP buffers instead of being decoded and refused.
    paused: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Session {
    pub fn new(
        state: Arc<GatewayState>,
        identity: Identity,
        encoding: Encoding,
        ws: Socket,
    ) -> Self {
        let conn = state.next_conn_id();
        let handle = Arc::new(SessionHandle {
            user: identity.user.clone(),
            encoding,
            // Nothing for this session can be routed before what the gateway has received
            // now: its registration, and so its first message, comes later in the stream.
            outbox: Outbox::new(
                state.config.outbound_queue_frames,
                state.config.outbound_queue_bytes,
                encoding,
                state.local.routed.clone(),
            ),
        });
        Self {
            state,
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
            replayed_to: None,
            last_typing: None,
            receipt_gate: None,
            receipt_timer: None,
            batch: Vec::new(),
            quota: None,
            paused: None,
        }
    }

    /// Registers, serves until the connection ends, then unregisters and closes. With
    /// `resume` (the handshake's `cursor`), live messages are held back from the start and
    /// the replay of what the device missed begins right after `welcome`.
    ///
    /// Everything the session logs carries its user and connection id: the span is entered
    /// at each poll (`instrument`), not held across awaits, and is `info`, so it exists at
    /// the default log level.
    pub async fn run(self, resume: Option<Option<Cursor>>) {
        let span = tracing::info_span!("session", user = %self.user, conn = %self.conn);
        self.run_in_span(resume).instrument(span).await
    }

    async fn run_in_span(mut self, resume: Option<Option<Cursor>>) {
        let metrics = self.state.metrics.clone();
        metrics.connections.inc();
        metrics.connections_total.inc();
        if resume.is_some() {
            self.handle.outbox.hold();
        }
        let marker = match self.state.presence.register(&self.user, self.conn).await {
            Ok(marker) => marker,
            Err(e) => {
                plumbing::jetstream_error("kv");
                tracing::warn!(error = %e, "presence registration failed");
                self.close(CloseCode::ServerError).await;
                metrics.connections.dec();
                return;
            }
        };
        self.state
            .local
            .registry
            .insert(self.conn, self.handle.clone());
        if self.state.shutdown.is_cancelled() {
            self.handle.outbox.close(CloseCode::Reconnect);
        }
        self.queue(&ServerFrame::Welcome {
            user: self.user.clone(),
            conn: self.conn,
            heartbeat_timeout_ms: self.state.config.heartbeat_timeout_ms,
            max_body_bytes: self.state.config.max_body_bytes,
        });
        if let Some(cursor) = resume {
            self.state.metrics.replays.inc();
            self.start_replay_turn(crate::replay::Replay::Start {
                user: self.user.clone(),
                cursor,
                shared: None,
                marker: Some(marker),
            });
        }
        let close = self.serve().await;
        if close == Some(CloseCode::SlowConsumer) {
            // Counted here, once per session, whether the outbox filled or a write timed out.
            metrics.slow_consumers.inc();
        }
        self.state.local.registry.remove(self.conn);
        self.state.watchers.forget(self.conn);
        if let Err(e) = self.state.presence.unregister(&self.user, self.conn).await {
            plumbing::jetstream_error("kv");
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
        let timeout = Duration::from_millis(self.state.config.heartbeat_timeout_ms);
        let heartbeat = tokio::time::sleep(timeout);
        tokio::pin!(heartbeat);
        loop {
            if let Err(code) = self.flush().await {
                return Some(code);
            }
            tokio::select! {
                frame = self.ws.next(), if self.paused.is_none() => {
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
                        let _ = self.flush().await;
                        return Some(code);
                    }
                    if self.replay.is_none()
                        && let Some((after, shared)) = self.handle.outbox.take_resync()
                    {
                        self.start_replay(Some(after), shared);
                    }
                }
                Some(frames) = query::next_answer(&mut self.queries), if self.has_queries() => {
                    for frame in &frames {
                        self.queue(frame);
                    }
                }
                turn = replay::poll_replay(&mut self.replay), if self.replay.is_some() => {
                    self.on_replay_turn(turn);
                }
                result = send::poll_in_flight(&mut self.in_flight), if self.in_flight.is_some() => {
                    let (cid, started, _) = self.in_flight.take().expect("guarded by is_some");
                    self.on_send_answer(cid, started, result);
                    self.start_next_send();
                }
                _ = signals::timer_fired(&mut self.paused), if self.paused.is_some() => {
                    self.paused = None;
                }
                _ = signals::timer_fired(&mut self.receipt_timer), if self.receipt_timer.is_some() => {
                    self.receipt_timer = None;
                    if let Some(work) = self.release_receipts() {
                        work.await;
                    }
                }
                _ = &mut heartbeat => {
                    if self.token_expired() {
                        return Some(CloseCode::TokenExpired);
                    }
                    self.state.metrics.heartbeat_timeouts.inc();
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
        self.state.metrics.frames_in.inc();
        match self.encoding.decode_client(bytes, is_text) {
            Ok(frame) => match frame.validate() {
                Ok(request) => self.on_request(request),
                Err(invalid) => {
                    self.refuse(Refusal::Invalid(invalid));
                    Step::Continue
                }
            },
            Err(DecodeError::WrongFrameKind(..)) => {
                self.state.metrics.bad_frames.inc();
                Step::Close(CloseCode::ProtocolViolation)
            }
            Err(e) => {
                self.refuse(Refusal::Undecodable(e));
                Step::Continue
            }
        }
    }

    /// One method per kind of request; each lives in the file of its job.
    fn on_request(&mut self, request: Request) -> Step {
        match request {
            Request::Send(outgoing) => self.on_send(outgoing),
            Request::Change {
                conversation,
                cid,
                body,
                change,
            } => self.on_change(conversation, cid, body, change),
            Request::Ack { conversation, id } => {
                return self.on_receipt(ReceiptKind::Delivered, conversation, id);
            }
            Request::Read {
                conversation,
                up_to,
            } => return self.on_receipt(ReceiptKind::Seen, conversation, up_to),
            Request::Typing { conversation } => return self.on_typing(conversation),
            Request::History {
                qid,
                conversation,
                before,
                after,
                limit,
            } => {
                let query = HistoryQuery::Messages {
                    conversation,
                    before,
                    after,
                    limit,
                };
                self.start_query(qid, query);
            }
            Request::Conversations { qid, limit } => {
                self.start_query(qid, HistoryQuery::Conversations { limit });
            }
            Request::Receipts {
                qid,
                conversation,
                id,
            } => self.start_query(qid, HistoryQuery::Receipts { conversation, id }),
            Request::Group { qid, op } => self.on_group(qid, op),
            Request::Sync { cursor } => self.on_sync(cursor),
            Request::Presence { users } => self.on_presence(users),
            Request::Ping { ts } => self.queue(&ServerFrame::Pong { ts }),
            Request::PushToken {
                qid,
                platform,
                token,
                remove,
            } => {
                let registration = Registration {
                    qid,
                    platform,
                    token,
                    remove,
                };
                let bucket = self.state.push_tokens.clone();
                return Step::Await(push_tokens::register(
                    bucket,
                    self.handle.clone(),
                    registration,
                ));
            }
        }
        Step::Continue
    }

    /// Answers with the refusal's error frame; a client's mistake counts as a bad frame.
    fn refuse(&mut self, refusal: Refusal) {
        if refusal.is_clients_fault() {
            self.state.metrics.bad_frames.inc();
        }
        self.queue(&refusal.frame());
    }

    fn queue(&mut self, frame: &ServerFrame) {
        if let ServerFrame::Error { code, .. } = frame {
            let code = u16::from(*code).to_string();
            self.state.metrics.errors.with(&code).inc();
        }
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
                self.state.metrics.frames_out.add(n);
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
            .saturating_add(self.state.config.jwt_leeway_secs)
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
