//! `natter conversations`: the user's conversations, most recently active first.

use anyhow::bail;
use clap::Args;
use protocol::frames::{ClientFrame, ServerFrame};

use super::{Login, new_id, print_json};
use crate::config::NatterConfig;

#[derive(Args, Debug)]
pub struct ConversationsArgs {
    #[command(flatten)]
    pub login: Login,
    /// How many (the server allows at most 100).
    #[arg(long)]
    pub limit: Option<u32>,
}

pub async fn run(args: ConversationsArgs, config: &NatterConfig, json: bool) -> anyhow::Result<()> {
    let mut session = args.login.connect(config).await?;
    let qid = new_id();
    let frame = ClientFrame::Conversations {
        qid: qid.clone(),
        limit: args.limit,
    };
    let ServerFrame::Conversations { conversations, .. } = session.query(&qid, frame).await? else {
        bail!("unexpected answer to conversations");
    };
    session.close().await;
    if json {
        return print_json(&conversations);
    }
    for c in &conversations {
        let preview = if c.deleted {
            "(deleted)"
        } else {
            c.preview.as_str()
        };
        println!(
            "{}  unread {}  {}: {preview}",
            c.conversation, c.unread, c.last_from
        );
    }
    Ok(())
}
