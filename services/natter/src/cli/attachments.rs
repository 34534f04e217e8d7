//! `natter download`, and the upload behind `natter send --attach`: the client crate's
//! attachment calls, with the CLI's login.

use anyhow::Context;
use clap::Args;

use super::Login;
use crate::config::NatterConfig;

#[derive(Args, Debug)]
pub struct DownloadArgs {
    #[command(flatten)]
    pub login: Login,
    /// The attachment id (from `natter history` or `natter tail --json`).
    pub id: String,
    /// Where to write it.
    #[arg(long, short)]
    pub output: std::path::PathBuf,
}

/// `natter download`: writes an attachment of one of your conversations to a file.
pub async fn download(args: DownloadArgs, config: &NatterConfig) -> anyhow::Result<()> {
    let token = args.login.token(config)?;
    client::attachments::download(&args.login.url, &token, &args.id, &args.output)
        .await
        .with_context(|| format!("cannot download {}", args.id))
}
