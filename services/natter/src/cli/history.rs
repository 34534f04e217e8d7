//! `natter history`: one page of a conversation, oldest first.

use anyhow::bail;
use clap::Args;
use protocol::frames::{ClientFrame, MessageState, ServerFrame};

use super::{Login, conversation_arg, new_id, print_json};
use crate::config::NatterConfig;

#[derive(Args, Debug)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub login: Login,
    /// `dm:<a>:<b>`, `g:<group>`, or a user id for your direct conversation with them.
    pub conversation: String,
    /// Messages per page (the server allows at most 100).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Only messages older than this message id (scrolling back).
    #[arg(long, conflicts_with = "after")]
    pub before: Option<String>,
    /// Only messages newer than this message id (catching up).
    #[arg(long)]
    pub after: Option<String>,
}

pub async fn run(args: HistoryArgs, config: &NatterConfig, json: bool) -> anyhow::Result<()> {
    let mut session = args.login.connect(config).await?;
    let conversation = conversation_arg(&args.conversation, &session.user)?;
    let qid = new_id();
    let frame = ClientFrame::History {
        qid: qid.clone(),
        conversation: conversation.to_string(),
        before: args.before.clone(),
        after: args.after.clone(),
        limit: args.limit,
    };
    let ServerFrame::History { messages, more, .. } = session.query(&qid, frame).await? else {
        bail!("unexpected answer to history");
    };
    session.close().await;
    if json {
        return print_json(&serde_json::json!({
            "conversation": conversation, "messages": messages, "more": more,
        }));
    }
    for m in &messages {
        // Your own messages say how far they got: sent, delivered or seen.
        let state = m
            .state
            .map(|s| format!(" [{}]", state_name(s)))
            .unwrap_or_default();
        // A reply names what it answers.
        let quote = (m.reply.as_ref())
            .map(|q| format!("(re {} {}: {}) ", q.id, q.from, q.preview))
            .unwrap_or_default();
        // Edits and deletes show their effect.
        let (body, edited) = match (m.deleted, m.edited) {
            (true, _) => ("(deleted)", ""),
            (false, Some(_)) => (m.body.as_str(), " (edited)"),
            (false, None) => (m.body.as_str(), ""),
        };
        // Reactions, most given first: " 👍2 ❤1".
        let reactions: String = m
            .reactions
            .iter()
            .map(|r| format!(" {}{}", r.emoji, r.count))
            .collect();
        // A file: its name, size and the id `natter download` takes.
        let file = (m.attachment.as_ref())
            .map(|a| format!(" [file {} {} bytes {}]", a.name, a.size, a.id))
            .unwrap_or_default();
        println!(
            "{} {}: {quote}{body}{file}{edited}{state}{reactions}",
            m.id, m.from
        );
    }
    if more {
        let (flag, edge) = match &args.after {
            Some(_) => ("--after", messages.last()),
            None => ("--before", messages.first()),
        };
        if let Some(edge) = edge {
            eprintln!("(more: {flag} {})", edge.id);
        }
    }
    Ok(())
}

fn state_name(state: MessageState) -> &'static str {
    match state {
        MessageState::Sent => "sent",
        MessageState::Delivered => "delivered",
        MessageState::Seen => "seen",
    }
}
