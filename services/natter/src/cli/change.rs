//! `natter edit`, `natter delete` and `natter react`: change one of your messages (a group
//! manager may delete any member's), or react to any, and wait for the change's `sent`, so a
//! zero exit means it is durable.

use anyhow::{anyhow, bail};
use clap::Args;
use client::Event;
use protocol::frames::{ClientFrame, ServerFrame};

use super::{
    ANSWER_TIMEOUT, Login, closed_advice, conversation_arg, error_advice, new_id, print_json,
};
use crate::config::NatterConfig;

#[derive(Args, Debug)]
pub struct EditArgs {
    #[command(flatten)]
    pub login: Login,
    /// The conversation (`dm:<a>:<b>`, `g:<group>`, or the other user's id).
    pub conversation: String,
    /// The message id (from `natter history` or `natter send`).
    pub id: String,
    /// The new text.
    pub body: String,
    /// The client message id; resending with the same one is safe.
    #[arg(long)]
    pub cid: Option<String>,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub login: Login,
    /// The conversation (`dm:<a>:<b>`, `g:<group>`, or the other user's id).
    pub conversation: String,
    /// The message id (from `natter history` or `natter send`).
    pub id: String,
    /// The client message id; resending with the same one is safe.
    #[arg(long)]
    pub cid: Option<String>,
}

#[derive(Args, Debug)]
pub struct ReactArgs {
    #[command(flatten)]
    pub login: Login,
    /// The conversation (`dm:<a>:<b>`, `g:<group>`, or the other user's id).
    pub conversation: String,
    /// The message id (from `natter history`).
    pub id: String,
    /// The reaction (one emoji); it replaces yours. Empty (`""`) removes it.
    pub emoji: String,
    /// The client message id; resending with the same one is safe.
    #[arg(long)]
    pub cid: Option<String>,
}

pub async fn react(args: ReactArgs, config: &NatterConfig, json: bool) -> anyhow::Result<()> {
    let cid = args.cid.unwrap_or_else(new_id);
    let (login, conversation, id, emoji) = (args.login, args.conversation, args.id, args.emoji);
    change(
        login,
        config,
        json,
        &cid,
        |conversation| ClientFrame::React {
            conversation,
            cid: cid.clone(),
            id,
            emoji,
        },
        &conversation,
    )
    .await
}

pub async fn edit(args: EditArgs, config: &NatterConfig, json: bool) -> anyhow::Result<()> {
    let cid = args.cid.unwrap_or_else(new_id);
    let (login, conversation, id, body) = (args.login, args.conversation, args.id, args.body);
    change(
        login,
        config,
        json,
        &cid,
        |conversation| ClientFrame::Edit {
            conversation,
            cid: cid.clone(),
            id,
            body,
        },
        &conversation,
    )
    .await
}

pub async fn delete(args: DeleteArgs, config: &NatterConfig, json: bool) -> anyhow::Result<()> {
    let cid = args.cid.unwrap_or_else(new_id);
    let (login, conversation, id) = (args.login, args.conversation, args.id);
    change(
        login,
        config,
        json,
        &cid,
        |conversation| ClientFrame::Delete {
            conversation,
            cid: cid.clone(),
            id,
        },
        &conversation,
    )
    .await
}

/// Sends the frame `make` builds for the conversation and prints the change's id once `sent`.
async fn change(
    login: Login,
    config: &NatterConfig,
    json: bool,
    cid: &str,
    make: impl FnOnce(String) -> ClientFrame,
    conversation: &str,
) -> anyhow::Result<()> {
    let mut session = login.connect(config).await?;
    let conversation = conversation_arg(conversation, &session.user)?;
    session
        .conn
        .send_frame(&make(conversation.to_string()))
        .await?;
    loop {
        let event = tokio::time::timeout(ANSWER_TIMEOUT, session.conn.next_event())
            .await
            .map_err(|_| {
                anyhow!(
                    "no `sent` from {} within {} s — is the chat service running? resend with \
                     --cid {cid}",
                    session.url,
                    ANSWER_TIMEOUT.as_secs()
                )
            })??;
        match event {
            Event::Closed(code) => bail!("{}", closed_advice(&session.url, code)),
            Event::Frame(ServerFrame::Sent { cid: c, id, .. }) if c.as_str() == cid => {
                if json {
                    print_json(&serde_json::json!({"cid": cid, "id": id}))?;
                } else {
                    println!("{id}");
                }
                session.close().await;
                return Ok(());
            }
            Event::Frame(ServerFrame::Error {
                code,
                reason,
                cid: Some(c),
                ..
            }) if c.as_str() == cid => bail!("{}", error_advice(code, &reason)),
            Event::Frame(_) => {}
        }
    }
}
