//! `natter`: the all-in-one binary (gateway, chat, history and notifier services, and a local
//! nats-server when no NATS URL is configured) and the command line for people testing a
//! deployment. Each command lives in its own module under `cli/`.

mod cli;
mod config;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::NatterConfig;

#[derive(Parser)]
#[command(name = "natter", version, about = "natter chat backend")]
struct Cli {
    /// Configuration file (TOML); `NATTER_*` environment variables override it.
    #[arg(long, short, global = true, env = "NATTER_CONFIG")]
    config: Option<PathBuf>,
    /// Machine-readable output: one JSON value per line, no progress bars.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything in one process: gateway, chat service and, unless `bus.nats_url` is
    /// set, a local nats-server with its data under `data_dir`.
    Up,
    /// Print a token for USER, signed with the configured (or local dev) secret.
    Token {
        user: String,
        /// Validity in seconds.
        #[arg(long, default_value_t = 24 * 3600)]
        ttl_secs: u64,
    },
    /// Send a message (to a user or a group) and print its id once it is durable.
    Send(cli::send::SendArgs),
    /// Edit one of your messages (within the server's edit window) and print the edit's id.
    Edit(cli::change::EditArgs),
    /// Delete a message for everyone: yours (within the server's delete window), or any
    /// member's in a group you manage.
    Delete(cli::change::DeleteArgs),
    /// React to a message with an emoji (it replaces yours; "" removes it).
    React(cli::change::ReactArgs),
    /// Write an attachment of one of your conversations to a file.
    Download(cli::attachments::DownloadArgs),
    /// Follow messages live, acknowledging them, resuming after disconnects.
    Tail(cli::tail::TailArgs),
    /// A page of a conversation's history.
    History(cli::history::HistoryArgs),
    /// Your conversations, most recent first, with unread counts.
    Conversations(cli::conversations::ConversationsArgs),
    /// Your groups.
    Groups(cli::groups::GroupsArgs),
    /// Group operations: create, add, remove, rename, set-role, members, info, leave.
    #[command(subcommand)]
    Group(cli::groups::GroupCmd),
    /// Who of a group received and read a message.
    Receipts(cli::receipts::ReceiptsArgs),
    /// Check a deployment: streams, consumers and their lag, buckets, live gateways, and a
    /// WebSocket round trip with `--url`. Exits non-zero when something is missing.
    Check(cli::check::CheckArgs),
    /// Make the NATS credentials of a deployment: TLS certificates, one nkey per role and
    /// integrator, and the nats-server configuration with their permissions.
    NatsAuth(cli::nats_auth::NatsAuthArgs),
    /// Exit 0 when `GET URL` answers 200 (a container health check: the image has no curl).
    Probe(cli::probe::ProbeArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command; `Ok(false)` is a check that found problems (already reported).
async fn run(cli: Cli) -> anyhow::Result<bool> {
    // A health check needs no configuration; a broken file must not fail it.
    if let Command::Probe(args) = cli.command {
        cli::probe::run(args).await?;
        return Ok(true);
    }
    let config: NatterConfig =
        plumbing::config::load(cli.config.as_deref()).context("invalid configuration")?;
    let json = cli.json;
    match cli.command {
        Command::Up => {
            plumbing::telemetry::init();
            cli::up::up(config).await?;
        }
        Command::Token { user, ttl_secs } => cli::token::run(&user, ttl_secs, config, json)?,
        Command::Send(args) => cli::send::run(args, &config, json).await?,
        Command::Edit(args) => cli::change::edit(args, &config, json).await?,
        Command::Delete(args) => cli::change::delete(args, &config, json).await?,
        Command::React(args) => cli::change::react(args, &config, json).await?,
        Command::Download(args) => cli::attachments::download(args, &config).await?,
        Command::Tail(args) => cli::tail::run(args, &config, json).await?,
        Command::History(args) => cli::history::run(args, &config, json).await?,
        Command::Conversations(args) => cli::conversations::run(args, &config, json).await?,
        Command::Groups(args) => cli::groups::mine(args, &config, json).await?,
        Command::Group(cmd) => cli::groups::run(cmd, &config, json).await?,
        Command::Receipts(args) => cli::receipts::run(args, &config, json).await?,
        Command::Check(args) => return cli::check::run(args, &config, json).await,
        Command::NatsAuth(args) => cli::nats_auth::run(args, &config)?,
        Command::Probe(_) => unreachable!("answered before the configuration is read"),
    }
    Ok(true)
}
