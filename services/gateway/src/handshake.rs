//! The WebSocket handshake, done by hand so each connection gets our own small buffers instead
//! of warp's default 128 KiB read buffer. Checks the upgrade headers the way warp's `ws()`
//! filter does, authenticates before upgrading (HTTP 401 otherwise), negotiates the encoding,
//! answers `101 Switching Protocols` and spawns the session once hyper hands over the socket.

use std::sync::{Arc, Mutex};

use headers::{HeaderMapExt, SecWebsocketAccept, SecWebsocketKey};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use protocol::Encoding;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use warp::reply::{Reply, Response};

use crate::auth;
use crate::refusal::HandshakeRefusal;
use crate::session::Session;
use crate::state::GatewayState;

/// hyper's upgrade handle, made cloneable so a warp filter can extract it from the request.
#[derive(Clone)]
pub struct UpgradeSlot(Arc<Mutex<Option<OnUpgrade>>>);

impl UpgradeSlot {
    pub fn new(on_upgrade: OnUpgrade) -> Self {
        Self(Arc::new(Mutex::new(Some(on_upgrade))))
    }

    fn take(&self) -> Option<OnUpgrade> {
        self.0.lock().unwrap().take()
    }
}

/// Answers a request to `/v1/ws`.
pub fn respond(
    state: &Arc<GatewayState>,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    slot: Option<UpgradeSlot>,
) -> Response {
    let refuse = |refused: HandshakeRefusal| {
        state.metrics.handshakes_refused.inc();
        warp::reply::with_status(refused.to_string(), refused.status()).into_response()
    };

    // 1. It must be a WebSocket upgrade (the same checks as warp's `ws()` filter).
    let header_is = |name: header::HeaderName, want: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(want)))
    };
    if method != Method::GET
        || !header_is(header::CONNECTION, "upgrade")
        || !header_is(header::UPGRADE, "websocket")
        || headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13"))
    {
        return refuse(HandshakeRefusal::NotAnUpgrade);
    }
    let Some(key) = headers.typed_get::<SecWebsocketKey>() else {
        return refuse(HandshakeRefusal::NoKey);
    };

    // 2. A browser page must be one allowed to talk to this gateway.
    if let Some(origin) = headers.get(header::ORIGIN)
        && !origin.to_str().is_ok_and(|o| state.origins.allows(o))
    {
        return refuse(HandshakeRefusal::Origin);
    }

    // 3. Authenticate before anything is allocated for the connection.
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = auth::token_from(authorization, query);
    let identity = match state.verifier.verify(token.as_deref()) {
        Ok(identity) => identity,
        Err(e) => {
            tracing::info!(reason = %e.for_log(), "handshake refused");
            return refuse(HandshakeRefusal::Unauthenticated);
        }
    };

    // 4. Resuming from a cursor (`?cursor=<cursor>`, empty for a new device): the replay
    //    starts with the session, before any live message can overtake it.
    let resume = match query.and_then(|q| auth::url_query_param(q, "cursor")) {
        None => None,
        Some(c) if c.is_empty() => Some(None),
        Some(c) => match c.parse::<protocol::Cursor>() {
            Ok(cursor) => Some(Some(cursor)),
            Err(_) => return refuse(HandshakeRefusal::BadCursor),
        },
    };

    // 5. Encoding, limits, shutdown.
    let offered = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok());
    let Some(encoding) = Encoding::negotiate(offered) else {
        return refuse(HandshakeRefusal::Subprotocol);
    };
    if state.shutdown.is_cancelled() {
        return refuse(HandshakeRefusal::ShuttingDown);
    }
    // A session could not register its presence, so nothing would be routed to it.
    if state.nats.connection_state() != async_nats::connection::State::Connected {
        return refuse(HandshakeRefusal::NoBus);
    }
    if state.local.registry.len() >= state.config.max_connections {
        return refuse(HandshakeRefusal::Full);
    }
    if state.local.registry.connections_of(&identity.user) >= state.config.max_connections_per_user
    {
        return refuse(HandshakeRefusal::TooManyForUser);
    }
    // A device with a cursor starts with a replay: if it would wait too long for one, it is
    // told when to come back instead (see `replay::admission`).
    if let Some(Some(_)) = &resume
        && let Some(retry_after) = state.replayer.admission.retry_after()
    {
        state.metrics.replays_deferred.inc();
        let mut res = refuse(HandshakeRefusal::CatchingUp);
        res.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after.as_secs().max(1)),
        );
        return res;
    }
    let Some(on_upgrade) = slot.and_then(|s| s.take()) else {
        return refuse(HandshakeRefusal::NotUpgradable);
    };

    // 6. Hand the socket to a session once hyper has sent the 101.
    let state_for_task = state.clone();
    state.sessions.spawn(async move {
        let state = state_for_task;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(ws_config(state.config.max_frame_bytes)),
        )
        .await;
        Session::new(state, identity, encoding, ws)
            .run(resume)
            .await;
    });

    let mut res = Response::default();
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.typed_insert(SecWebsocketAccept::from(key));
    if offered.is_some() {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(encoding.protocol()),
        );
    }
    res
}

/// Per-connection buffers sized for a chat session, not for bulk transfer: a 256-byte read
/// buffer that grows only while a large frame is being read, and a write buffer that collects
/// a batch of frames until the session flushes. Idle connections then cost a few KiB instead
/// of 134 KiB.
fn ws_config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(256)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}
