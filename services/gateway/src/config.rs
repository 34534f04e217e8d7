//! The gateway's configuration.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Configuration of one gateway process. Durations are in milliseconds, as their names say.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewayConfig {
    /// Address for WebSocket, `/healthz` and `/metrics`. Port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// This gateway's id: names its NATS subjects and presence lease. Must be unique among
    /// live gateways. Empty picks `gw-<random>`.
    pub gateway_id: String,
    /// HS256 secret that signs client tokens. Required; there is no default.
    pub jwt_secret: String,
    /// Leeway for token time checks (`exp`, `nbf`, `iat`), to absorb clock skew between
    /// issuer and gateway.
    pub jwt_leeway_secs: u64,
    /// A token whose expiry lies further ahead than this is refused (no token that never
    /// expires). 7 days by default.
    pub jwt_max_lifetime_secs: u64,
    /// When not empty, a token's `aud` must be this.
    pub jwt_audience: String,
    /// When not empty, a token's `iss` must be this.
    pub jwt_issuer: String,
    /// A connection from which nothing arrives for this long is closed (two missed 30 s pings).
    pub heartbeat_timeout_ms: u64,
    /// How long a gateway's presence lease lives without refresh. Its sessions count as
    /// offline this long after the gateway dies. Refreshed every third of it.
    pub lease_ttl_ms: u64,
    /// Frames queued for one session before it is closed as a slow consumer.
    pub outbound_queue_frames: usize,
    /// Bytes queued for one session before it is closed as a slow consumer (beside the
    /// WebSocket write buffer, at most 4 MiB, and the kernel's socket buffer).
    pub outbound_queue_bytes: usize,
    /// `ack` and `read` receipts one connection forwards per second (and in a burst); above
    /// it the latest per conversation waits for the next slot. Receipts that move no marker
    /// are never forwarded.
    pub receipts_per_sec: u32,
    /// Messages one user may send per second through this gateway, all their connections
    /// together (bursts of two seconds' worth pass); above it sends are refused with `1501`
    /// and a `retry_after_ms`.
    pub send_messages_per_sec: u32,
    /// Message body bytes one user may send per second through this gateway, likewise.
    pub send_bytes_per_sec: u64,
    /// Sends of one session waiting for `sent` before further sends are refused.
    pub max_in_flight_sends: usize,
    /// Largest WebSocket frame or message accepted from a client.
    pub max_frame_bytes: usize,
    /// Largest message body; advertised in `welcome`, enforced by the chat service.
    pub max_body_bytes: usize,
    /// Largest attachment one upload may store (`POST /v1/attachments`), in bytes.
    pub max_attachment_bytes: u64,
    /// The most bytes of attachments one user may have stored at once; uploads beyond it
    /// are refused with 507 until some of the user's messages with attachments are deleted.
    pub attachment_quota_bytes: u64,
    /// Connections above this number are refused with HTTP 503.
    pub max_connections: usize,
    /// Connections of one user on this gateway above this number are refused with HTTP 429
    /// (devices and tabs; checked at the handshake, so a burst of simultaneous handshakes
    /// can pass it by the handshakes in flight).
    pub max_connections_per_user: usize,
    /// Time given to sessions to close and NATS to drain on shutdown.
    pub shutdown_grace_ms: u64,
    /// How long a `send` waits for the chat service before the client gets `unavailable`.
    pub send_timeout_ms: u64,
    /// A `send` unanswered this long is asked of the chat service again (then after twice
    /// as long, and so on, until `send_timeout_ms`); 0 asks once. An answer lost in flight
    /// (a chat instance's NATS connection moving to another node) then costs this, not the
    /// whole timeout. Safe: the stream de-duplicates a repeated cid.
    pub send_reask_ms: u64,
    /// The most messages one `sync` replays. A device further behind is answered
    /// `recovered: false` and refetches from history (the per-user offline queue limit; the
    /// age limit is the messages stream's `bus.messages_max_age_ms`).
    pub sync_max_messages: u64,
    /// Messages read from the stream per replay step.
    pub sync_page: usize,
    /// Replays running at once on this gateway; more wait their turn (reconnect storms).
    pub sync_concurrency: usize,
    /// A device resuming with a cursor that would wait longer than this for its replay to
    /// start (the queue times the measured pace) is refused with 503 and `Retry-After`
    /// instead. 0 admits everyone.
    pub sync_wait_max_ms: u64,
    /// Replays in crowds (a reconnect storm, every session after a NATS outage) take their
    /// messages from one shared read of the streams' recent messages, of at most this many
    /// stream messages (held in memory, as stored, until 2 minutes after the read was last
    /// used: about 0.5 KiB each with a short body); a longer gap, or 0, makes each session
    /// replay on its own.
    pub sync_gap_read_max_messages: u64,
    /// Browser origins (`https://chat.example.com`) whose pages may open a WebSocket. A
    /// handshake carrying any other `Origin` is refused with 403; clients that are not
    /// browsers send none and are not affected. Empty (the default) allows no browser page,
    /// except the gateway's own web client when `web_client` is on and the gateway listens on
    /// a specific address (on all interfaces, list the origins it is reached by).
    pub allowed_origins: Vec<String>,
    /// Serve the web client (`web/`, embedded in the binary) at `/`. Off by default: a
    /// gateway behind a load balancer usually serves only `/v1/ws`.
    pub web_client: bool,
    /// Answer `POST /dev/token` with a token for any user. Never read from a config file or
    /// the environment: only the all-in-one sets it, when it runs with its generated local
    /// dev secret on a loopback address (anyone who can reach it can be anyone).
    #[serde(skip)]
    pub dev_tokens: bool,
}

impl GatewayConfig {
    /// What a client token must satisfy.
    pub fn token_rules(&self) -> crate::auth::TokenRules {
        let set = |s: &str| (!s.is_empty()).then(|| s.to_string());
        crate::auth::TokenRules {
            leeway_secs: self.jwt_leeway_secs,
            max_lifetime_secs: self.jwt_max_lifetime_secs,
            audience: set(&self.jwt_audience),
            issuer: set(&self.jwt_issuer),
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen_addr: ([127, 0, 0, 1], 8080).into(),
            gateway_id: String::new(),
            jwt_secret: String::new(),
            jwt_leeway_secs: 30,
            jwt_max_lifetime_secs: 7 * 24 * 3600,
            jwt_audience: String::new(),
            jwt_issuer: String::new(),
            heartbeat_timeout_ms: 60_000,
            lease_ttl_ms: 60_000,
            outbound_queue_frames: 1024,
            outbound_queue_bytes: 2 * 1024 * 1024,
            max_in_flight_sends: 256,
            send_messages_per_sec: 50,
            send_bytes_per_sec: 1024 * 1024,
            receipts_per_sec: 20,
            max_frame_bytes: 128 * 1024,
            max_body_bytes: 64 * 1024,
            max_attachment_bytes: 16 * 1024 * 1024,
            attachment_quota_bytes: 1024 * 1024 * 1024,
            max_connections: 100_000,
            max_connections_per_user: 32,
            shutdown_grace_ms: 10_000,
            send_timeout_ms: 10_000,
            send_reask_ms: 1_000,
            sync_max_messages: 10_000,
            sync_page: 256,
            sync_concurrency: 64,
            sync_wait_max_ms: 30_000,
            sync_gap_read_max_messages: 250_000,
            allowed_origins: Vec::new(),
            web_client: false,
            dev_tokens: false,
        }
    }
}
