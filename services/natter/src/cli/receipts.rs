//! `natter receipts`: who of a group received and read one of your messages.

use anyhow::bail;
use clap::Args;
use protocol::frames::{ClientFrame, ServerFrame};

use super::{Login, conversation_arg, new_id, print_json};
use crate::config::NatterConfig;

#[derive(Args, Debug)]
pub struct ReceiptsArgs {
    #[command(flatten)]
    pub login: Login,
    /// The group conversation (`g:<group>`).
    pub conversation: String,
    /// The message id.
    pub id: String,
}

pub async fn run(args: ReceiptsArgs, config: &NatterConfig, json: bool) -> anyhow::Result<()> {
    let mut session = args.login.connect(config).await?;
    let conversation = conversation_arg(&args.conversation, &session.user)?;
    let qid = new_id();
    let frame = ClientFrame::Receipts {
        qid: qid.clone(),
        conversation: conversation.to_string(),
        id: args.id.clone(),
    };
    let answer = session.query(&qid, frame).await?;
    session.close().await;
    let ServerFrame::Receipts {
        recipients,
        delivered,
        seen,
        delivered_by,
        seen_by,
        ..
    } = &answer
    else {
        bail!("unexpected answer to receipts");
    };
    if json {
        return print_json(&answer);
    }
    println!("delivered {delivered}/{recipients}, seen {seen}/{recipients}");
    let names =
        |v: &[protocol::UserId]| v.iter().map(|u| u.as_str()).collect::<Vec<_>>().join(", ");
    if let Some(by) = delivered_by {
        println!("delivered to: {}", names(by));
    }
    if let Some(by) = seen_by {
        println!("seen by: {}", names(by));
    }
    Ok(())
}
