//! The command line beside `natter up`: one module per command, and what they share here —
//! logging in to a gateway as a user, asking a query and waiting for its answer, and turning
//! every failure into a sentence that says what went wrong and what to do.

pub mod attachments;
pub mod change;
pub mod check;
pub mod conversations;
pub mod groups;
pub mod history;
pub mod nats_auth;
pub mod probe;
pub mod receipts;
pub mod send;
pub mod tail;
pub mod token;
pub mod up;

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use client::{ConnectError, Connection, Event};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use protocol::frames::{ClientFrame, ServerFrame};
use protocol::{ConversationId, Encoding, ErrorCode, UserId};

use crate::config::NatterConfig;

/// How long a query or a send may wait for its answer before the command gives up.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// Where and as whom a command connects.
#[derive(Args, Clone, Debug)]
pub struct Login {
    /// The user to act as. Without `--token`, a token is minted for this user with the
    /// configured secret (`gateway.jwt_secret`) or the local dev secret of `natter up`.
    #[arg(long = "as", value_name = "USER")]
    pub user: Option<String>,
    /// The gateway's WebSocket URL.
    #[arg(long, env = "NATTER_URL", default_value = "ws://127.0.0.1:8080/v1/ws")]
    pub url: String,
    /// A token to present instead of minting one.
    #[arg(long, env = "NATTER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// A logged-in connection: the welcome has been read.
pub struct Session {
    pub conn: Connection,
    pub user: UserId,
    pub url: String,
}

impl Login {
    /// The token to present: `--token`, or one minted for `--as`.
    pub fn token(&self, config: &NatterConfig) -> anyhow::Result<String> {
        if let Some(token) = &self.token {
            return Ok(token.clone());
        }
        let Some(user) = &self.user else {
            bail!("who are you? pass --as USER (with the secret configured) or --token TOKEN");
        };
        UserId::new(user).map_err(|e| anyhow!("--as {user:?}: {e}"))?;
        let Some(secret) = config.existing_secret() else {
            bail!(
                "no secret to mint a token for {user}: set gateway.jwt_secret \
                 (NATTER_GATEWAY__JWT_SECRET) to the gateway's secret, run from the directory \
                 where `natter up` keeps .data/dev-secret, or pass --token (NATTER_TOKEN)"
            );
        };
        Ok(gateway::mint_token(&secret, user, 3600))
    }

    /// Connects and reads the welcome.
    pub async fn connect(&self, config: &NatterConfig) -> anyhow::Result<Session> {
        let token = self.token(config)?;
        let conn = Connection::connect(&self.url, &token, Encoding::Json)
            .await
            .map_err(|e| connect_advice(&self.url, self.user.as_deref(), &e))?;
        self.welcome(conn).await
    }

    /// Connects resuming from `cursor` (an empty cursor for a new device) and reads the
    /// welcome; used by `tail`.
    pub async fn resume(
        &self,
        token: &str,
        cursor: Option<protocol::Cursor>,
    ) -> Result<Connection, ConnectError> {
        Connection::resume(&self.url, token, Encoding::Json, cursor).await
    }

    pub async fn welcome(&self, mut conn: Connection) -> anyhow::Result<Session> {
        let frame = tokio::time::timeout(ANSWER_TIMEOUT, conn.next_event())
            .await
            .map_err(|_| anyhow!("{} accepted the connection but sent no welcome", self.url))??;
        let user = match frame {
            Event::Frame(ServerFrame::Welcome { user, .. }) => user,
            Event::Closed(code) => bail!("{}", closed_advice(&self.url, code)),
            Event::Frame(other) => bail!("expected a welcome from {}, got {other:?}", self.url),
        };
        if let Some(wanted) = &self.user
            && wanted != user.as_str()
        {
            eprintln!("note: the token is for {user}, not {wanted}; acting as {user}");
        }
        Ok(Session {
            conn,
            user,
            url: self.url.clone(),
        })
    }
}

impl Session {
    /// Sends a query frame and waits for the answer carrying `qid`, skipping live traffic.
    pub async fn query(&mut self, qid: &str, frame: ClientFrame) -> anyhow::Result<ServerFrame> {
        self.conn.send_frame(&frame).await?;
        loop {
            let event = tokio::time::timeout(ANSWER_TIMEOUT, self.conn.next_event())
                .await
                .map_err(|_| {
                    anyhow!(
                        "no answer from {} within {} s — is the backend behind the gateway \
                         running? `natter check` shows what is missing",
                        self.url,
                        ANSWER_TIMEOUT.as_secs()
                    )
                })??;
            let frame = match event {
                Event::Frame(frame) => frame,
                Event::Closed(code) => bail!("{}", closed_advice(&self.url, code)),
            };
            let answers = match &frame {
                ServerFrame::History { qid: q, .. }
                | ServerFrame::Conversations { qid: q, .. }
                | ServerFrame::Group { qid: q, .. }
                | ServerFrame::Groups { qid: q, .. }
                | ServerFrame::GroupMembers { qid: q, .. }
                | ServerFrame::Receipts { qid: q, .. }
                | ServerFrame::PushToken { qid: q, .. } => q.as_str() == qid,
                ServerFrame::Error { qid: Some(q), .. } => q.as_str() == qid,
                // An error about neither a query nor a send answers a frame we could not word.
                ServerFrame::Error {
                    qid: None,
                    cid: None,
                    ..
                } => true,
                _ => false,
            };
            if !answers {
                continue;
            }
            if let ServerFrame::Error { code, reason, .. } = &frame {
                bail!("{}", error_advice(*code, reason));
            }
            return Ok(frame);
        }
    }

    pub async fn close(self) {
        self.conn.close().await;
    }
}

/// A fresh id for a query or a send.
pub fn new_id() -> String {
    ulid::Ulid::new().to_string()
}

/// A conversation argument: `dm:a:b`, `g:<group>`, or a bare user id meaning the direct
/// conversation between `me` and that user.
pub fn conversation_arg(arg: &str, me: &UserId) -> anyhow::Result<ConversationId> {
    if arg.contains(':') {
        return arg.parse().map_err(|e| {
            anyhow!("conversation {arg:?}: {e} (use dm:<a>:<b> sorted, g:<group>, or a user id)")
        });
    }
    let peer = UserId::new(arg)
        .map_err(|e| anyhow!("{arg:?} is neither a conversation nor a user id: {e}"))?;
    Ok(ConversationId::direct(me, &peer))
}

/// What a failed handshake means and what to do about it.
pub fn connect_advice(url: &str, user: Option<&str>, e: &ConnectError) -> anyhow::Error {
    let user = user.unwrap_or("<user>");
    match e {
        ConnectError::Refused(401) => anyhow!(
            "token rejected (401) by {url} — mint one with `natter token {user}` using the same \
             secret as the gateway (gateway.jwt_secret), and check it has not expired"
        ),
        ConnectError::Refused(503) => anyhow!(
            "{url} refused the connection (503): the gateway is shutting down or full \
             (max_connections) — retry shortly, or use another gateway"
        ),
        ConnectError::Busy(retry_after) => anyhow!(
            "{url} is busy catching other devices up after a reconnect storm — retry in \
             {retry_after:?}"
        ),
        ConnectError::Refused(404) => {
            anyhow!("nothing at {url} (404) — natter's WebSocket path is /v1/ws")
        }
        ConnectError::Refused(status) => anyhow!(
            "{url} refused the handshake (HTTP {status}) — is this a natter gateway's /v1/ws URL?"
        ),
        ConnectError::Transport(t) => {
            let text = t.to_string();
            if text.contains("Connection refused") || text.contains("connection refused") {
                anyhow!(
                    "cannot connect to {url}: connection refused — is natter running? start it \
                     with `natter up`, or point --url (NATTER_URL) at a gateway"
                )
            } else if text.starts_with("URL error") {
                anyhow!("{url} is not a usable WebSocket URL ({t}) — expected ws://host:port/v1/ws")
            } else {
                anyhow!("cannot connect to {url}: {t}")
            }
        }
    }
}

/// What a close frame means and what to do about it.
pub fn closed_advice(url: &str, code: Option<u16>) -> String {
    use protocol::CloseCode::*;
    let Some(code) = code else {
        return format!(
            "{url} closed the connection without a close frame — retry; if it keeps happening, check the gateway's logs"
        );
    };
    let advice = match protocol::CloseCode::from_u16(code) {
        Some(Reconnect) => "the gateway is draining: reconnect (any gateway)",
        Some(HeartbeatTimeout) => {
            "no frame for heartbeat_timeout_ms: reconnect and ping every 30 s"
        }
        Some(SlowConsumer) => "this client read too slowly: reconnect",
        Some(TokenExpired) => "the token expired: mint a fresh one with `natter token USER`",
        Some(ServerError) => "the gateway failed internally: reconnect, and check its logs",
        Some(ProtocolViolation) => "the client broke the protocol: this is a bug in the client",
        Some(FrameTooLarge) => "a frame exceeded max_frame_bytes: send less at once",
        None => "unknown close code",
    };
    let name = protocol::CloseCode::from_u16(code).map_or("unknown", |c| c.reason());
    format!("{url} closed the connection with {code} ({name}) — {advice}")
}

/// An `error` frame as a sentence: code, name, the server's reason and the protocol's advice.
pub fn error_advice(code: ErrorCode, reason: &str) -> String {
    let (name, advice) = match code {
        ErrorCode::MalformedFrame => (
            "malformed_frame",
            "the frame is wrong; do not resend it unchanged",
        ),
        ErrorCode::UnknownFrameType => (
            "unknown_frame_type",
            "the server does not know this frame; is it an older version?",
        ),
        ErrorCode::InvalidId => (
            "invalid_id",
            "ids match [A-Za-z0-9_-]{1,64}; conversations are dm:<a>:<b> (sorted) or g:<group>",
        ),
        ErrorCode::BodyTooLarge => (
            "body_too_large",
            "shorten the body (max_body_bytes, shown in welcome)",
        ),
        ErrorCode::Forbidden => (
            "forbidden",
            "you are not part of this conversation or group, or lack the role",
        ),
        ErrorCode::TooManyInFlight => (
            "too_many_in_flight",
            "wait for `sent` answers before sending more",
        ),
        ErrorCode::NotFound => (
            "not_found",
            "check the id; `natter groups --as USER` lists your groups",
        ),
        ErrorCode::GroupFull => ("group_full", "the group is at max_group_members"),
        ErrorCode::TooManyGroups => (
            "too_many_groups",
            "someone named is in max_groups_per_user groups; they must leave one first",
        ),
        ErrorCode::AnswerTooLarge => (
            "answer_too_large",
            "the answer would exceed the server's message limit; ask for a smaller page (--limit)",
        ),
        ErrorCode::NotAContact => (
            "not_a_contact",
            "users named can be added only by people they have exchanged a message with; \
             message them first, or ask them to join",
        ),
        ErrorCode::TooLate => (
            "too_late",
            "the message is older than the server's edit_window_secs (or delete_window_secs)",
        ),
        ErrorCode::TooManyReactions => (
            "too_many_reactions",
            "the message has the most different reactions it may; react with one it has",
        ),
        ErrorCode::RateLimited => (
            "rate_limited",
            "you are over the gateway's per-user send limits; retry (same --cid) after retry_after_ms",
        ),
        ErrorCode::Unavailable => (
            "unavailable",
            "a backend did not answer; retry (same --cid); `natter check` shows what is missing",
        ),
    };
    format!("error {} {name}: {reason} — {advice}", u16::from(code))
}

/// A progress bar on stderr, hidden when stdout is not a terminal or output is JSON.
pub fn progress(len: Option<u64>, json: bool, template: &str) -> ProgressBar {
    let bar = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    if json || !std::io::stdout().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    } else if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// Prints one JSON value on a line.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value).context("encoding JSON")?);
    Ok(())
}
