//! `natter-chat`: one chat service instance.

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Config {
    bus: plumbing::BusConfig,
    chat: chat::ChatConfig,
    /// Where `/metrics` and `/healthz` are served.
    metrics_addr: Option<std::net::SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    plumbing::telemetry::init();
    let file = std::env::args().nth(1).map(PathBuf::from);
    let config: Config =
        plumbing::config::load(file.as_deref()).context("invalid configuration")?;
    let shutdown = plumbing::shutdown::on_signal();
    let nats = plumbing::bus::connect(&config.bus.nats_url, "natter-chat").await?;
    let chat = chat::Chat::start(config.chat, &config.bus, nats.clone(), shutdown.clone()).await?;
    let addr = config.metrics_addr.unwrap_or(([127, 0, 0, 1], 9090).into());
    let probe = nats.clone();
    let healthy = move || probe.connection_state() == async_nats::connection::State::Connected;
    let bound = plumbing::metrics::serve(addr, chat.metrics.clone(), healthy, shutdown).await?;
    tracing::info!(%bound, "chat metrics listening");
    chat.wait().await?;
    let _ = nats.drain().await;
    Ok(())
}
