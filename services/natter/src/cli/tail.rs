//! `natter tail`: follows a user's messages live as a device would — acking each one, pinging
//! every 30 s, and after a lost connection resuming from its cursor with backoff, so nothing
//! is missed and nothing is printed twice.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use client::{Backoff, ConnectError, Event};
use protocol::frames::{Change, Message, ServerFrame};
use protocol::{CloseCode, ConversationId, Cursor, MessageId};

use super::{Login, closed_advice, connect_advice, conversation_arg, error_advice, print_json};
use crate::config::NatterConfig;

/// The protocol's ping interval (`docs/protocol.md`, "Heartbeat").
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// How many recent message ids are remembered to drop redeliveries.
const SEEN_IDS: usize = 10_000;

#[derive(Args, Debug)]
pub struct TailArgs {
    #[command(flatten)]
    pub login: Login,
    /// Only this conversation: `dm:<a>:<b>`, `g:<group>`, or a user id for your direct
    /// conversation with them.
    pub conversation: Option<String>,
    /// Do not acknowledge messages (the senders will not see `delivered`).
    #[arg(long)]
    pub no_ack: bool,
    /// Exit after printing this many messages.
    #[arg(long)]
    pub count: Option<u64>,
}

pub async fn run(args: TailArgs, config: &NatterConfig, json: bool) -> anyhow::Result<()> {
    let mut token = args.login.token(config)?;
    let url = args.login.url.clone();
    let mut cursor: Option<Cursor> = None;
    let mut backoff = Backoff::default();
    let mut shown = RecentIds::default();
    let mut printed = 0u64;
    let mut filter: Option<ConversationId> = None;
    let mut connected_once = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let conn = match args.login.resume(&token, cursor.clone()).await {
            Ok(conn) => conn,
            // The first attempt fails fast (the URL or the token is probably wrong), and so
            // does a refusal that retrying cannot fix.
            Err(e) if !connected_once || matches!(e, ConnectError::Refused(400..=499)) => {
                return Err(connect_advice(&url, args.login.user.as_deref(), &e));
            }
            Err(e) => {
                let delay = backoff.next_delay(&mut rand::rng());
                eprintln!(
                    "reconnecting to {url} in {:.1} s ({e})",
                    delay.as_secs_f64()
                );
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        let mut session = args.login.welcome(conn).await?;
        backoff.reset();
        if filter.is_none()
            && let Some(arg) = &args.conversation
        {
            filter = Some(conversation_arg(arg, &session.user)?);
        }
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        let closed = loop {
            let event = tokio::select! {
                event = session.conn.next_event() => event?,
                _ = ping.tick() => {
                    session.conn.ping(None).await?;
                    continue;
                }
                _ = &mut ctrl_c => {
                    session.close().await;
                    return Ok(());
                }
            };
            cursor = session.conn.cursor().or(cursor);
            match event {
                Event::Closed(code) => break code,
                Event::Frame(ServerFrame::Synced { .. }) => {
                    let what = filter
                        .as_ref()
                        .map_or("all conversations".into(), |c| c.to_string());
                    if connected_once {
                        eprintln!("reconnected to {url}; caught up");
                    } else {
                        eprintln!(
                            "following {what} as {} on {url} (Ctrl-C to stop)",
                            session.user
                        );
                    }
                    connected_once = true;
                }
                Event::Frame(ServerFrame::Message(m)) => {
                    if !args.no_ack && m.from != session.user {
                        session.conn.ack(&m.conversation, m.id).await?;
                    }
                    if filter.as_ref().is_some_and(|c| *c != m.conversation) || !shown.insert(m.id)
                    {
                        continue;
                    }
                    print_message(&m, json)?;
                    printed += 1;
                    if args.count.is_some_and(|n| printed >= n) {
                        session.close().await;
                        return Ok(());
                    }
                }
                Event::Frame(ServerFrame::Error { code, reason, .. }) => {
                    eprintln!("{}", error_advice(code, &reason));
                }
                Event::Frame(_) => {}
            }
        };
        let reason = closed_advice(&url, closed);
        match closed.and_then(CloseCode::from_u16) {
            Some(CloseCode::TokenExpired) if args.login.token.is_none() => {
                token = args.login.token(config)?;
            }
            Some(code) if !code.should_reconnect() => bail!("{reason}"),
            _ => {}
        }
        eprintln!("{reason}; reconnecting");
    }
}

fn print_message(m: &Message, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(m)
    } else {
        match &m.change {
            Some(Change::Edit { id }) => {
                println!("{} {}: (edited {id}) {}", m.conversation, m.from, m.body)
            }
            Some(Change::Delete { id }) => {
                println!("{} {}: (deleted {id})", m.conversation, m.from)
            }
            Some(Change::React { id, emoji, .. }) => {
                println!("{} {}: (reacted {emoji:?} to {id})", m.conversation, m.from)
            }
            None => println!("{} {}: {}", m.conversation, m.from, m.body),
        }
        Ok(())
    }
}

/// The ids of the last [`SEEN_IDS`] messages printed (delivery is at least once).
#[derive(Default)]
struct RecentIds {
    set: HashSet<MessageId>,
    order: VecDeque<MessageId>,
}

impl RecentIds {
    /// False when `id` was already seen.
    fn insert(&mut self, id: MessageId) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > SEEN_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}
