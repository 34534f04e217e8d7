//! `natter send`: sends one message (or `--count` of them, pipelined) and waits for each
//! `sent`, so a zero exit means the messages are durable.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use client::Event;
use protocol::ErrorCode;
use protocol::frames::{Attachment, ClientFrame, ServerFrame};

use super::{ANSWER_TIMEOUT, Login, closed_advice, error_advice, new_id, print_json, progress};
use crate::config::NatterConfig;

/// Sends waiting for their `sent` at once; below the gateway's `max_in_flight_sends` (256).
const WINDOW: usize = 128;

#[derive(Args, Debug)]
pub struct SendArgs {
    #[command(flatten)]
    pub login: Login,
    /// The recipient user.
    #[arg(long, required_unless_present = "group", conflicts_with = "group")]
    pub to: Option<String>,
    /// The group id (from `natter groups` or `natter group create`).
    #[arg(long)]
    pub group: Option<String>,
    pub body: String,
    /// The client message id; resending with the same one within the dedup window (60 s)
    /// returns the original message instead of a new one. With --count, suffixed `-<n>`.
    #[arg(long)]
    pub cid: Option<String>,
    /// Send this many messages, with a progress bar, and print the throughput.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// Answer this message (its id, from `natter history`) of the same conversation: the
    /// message carries its quote.
    #[arg(long)]
    pub reply_to: Option<String>,
    /// Send this file with the message (uploaded first, streamed from disk).
    #[arg(long, conflicts_with = "count")]
    pub attach: Option<std::path::PathBuf>,
}

pub async fn run(args: SendArgs, config: &NatterConfig, json: bool) -> anyhow::Result<()> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    let mut session = args.login.connect(config).await?;
    let attachment = match &args.attach {
        Some(path) => {
            let conversation = match (&args.to, &args.group) {
                (_, Some(group)) => protocol::ConversationId::group(&group.parse()?),
                (Some(to), None) => protocol::ConversationId::direct(&session.user, &to.parse()?),
                (None, None) => unreachable!("clap requires --to or --group"),
            };
            let token = args.login.token(config)?;
            let url = &args.login.url;
            let uploaded = client::attachments::upload(url, &token, &conversation, path).await;
            Some(uploaded.with_context(|| format!("cannot send {}", path.display()))?)
        }
        None => None,
    };
    let base_cid = args.cid.clone().unwrap_or_else(new_id);
    let cid_of = |i: u64| {
        if args.count == 1 {
            base_cid.clone()
        } else {
            format!("{base_cid}-{i}")
        }
    };
    let bar = progress(
        Some(args.count),
        json,
        "{bar:40} {pos}/{len} sent  {per_sec}  eta {eta}",
    );
    let started = Instant::now();
    // cid -> index of the send, for the ones still waiting for `sent`.
    let mut waiting: HashMap<String, u64> = HashMap::new();
    let mut next = 0u64;
    let mut done = 0u64;
    while done < args.count {
        while next < args.count && waiting.len() < WINDOW {
            let cid = cid_of(next);
            session
                .conn
                .send_frame(&send_frame(&args, &cid, attachment.as_ref()))
                .await?;
            waiting.insert(cid, next);
            next += 1;
        }
        let event = tokio::time::timeout(ANSWER_TIMEOUT, session.conn.next_event())
            .await
            .map_err(|_| {
                anyhow!(
                    "no `sent` from {} within {} s — is the chat service running? \
                     `natter check` shows what is missing; resend with --cid {base_cid}",
                    session.url,
                    ANSWER_TIMEOUT.as_secs()
                )
            })??;
        match event {
            Event::Closed(code) => bail!("{}", closed_advice(&session.url, code)),
            Event::Frame(ServerFrame::Sent {
                cid,
                id,
                conversation,
                ts,
            }) => {
                if waiting.remove(cid.as_str()).is_none() {
                    continue;
                }
                done += 1;
                bar.inc(1);
                if args.count == 1 {
                    if json {
                        print_json(&serde_json::json!({
                            "cid": cid, "id": id, "conversation": conversation, "ts": ts,
                        }))?;
                    } else {
                        println!("{id}");
                    }
                }
            }
            // Over the per-user limits: wait as told, then send the same message again.
            Event::Frame(ServerFrame::Error {
                code: ErrorCode::RateLimited,
                cid: Some(cid),
                retry_after_ms,
                ..
            }) if waiting.contains_key(cid.as_str()) => {
                let wait = Duration::from_millis(retry_after_ms.unwrap_or(1_000));
                tokio::time::sleep(wait).await;
                let again = send_frame(&args, cid.as_str(), attachment.as_ref());
                session.conn.send_frame(&again).await?;
            }
            Event::Frame(ServerFrame::Error {
                code, reason, cid, ..
            }) => {
                bar.abandon();
                let which = cid.map(|c| format!(" (cid {c})")).unwrap_or_default();
                bail!("send failed{which}: {}", error_advice(code, &reason));
            }
            Event::Frame(_) => {}
        }
    }
    bar.finish_and_clear();
    if args.count > 1 {
        let secs = started.elapsed().as_secs_f64();
        let rate = args.count as f64 / secs.max(1e-9);
        if json {
            print_json(&serde_json::json!({
                "sent": args.count, "elapsed_ms": (secs * 1000.0).round() as u64,
                "per_sec": rate.round() as u64,
            }))?;
        } else {
            println!(
                "sent {} messages in {secs:.2} s ({rate:.0} msg/s)",
                args.count
            );
        }
    }
    session.close().await;
    Ok(())
}

/// The `send` frame of one message: to `--to` or `--group`, answering `--reply-to`, with the
/// uploaded attachment.
fn send_frame(args: &SendArgs, cid: &str, attachment: Option<&Attachment>) -> ClientFrame {
    ClientFrame::Send {
        to: args.to.clone().unwrap_or_default(),
        group: args.group.clone(),
        cid: cid.into(),
        body: args.body.clone(),
        reply_to: args.reply_to.clone(),
        attachment: attachment.map(|a| a.id.to_string()),
    }
}
