//! `natter-gateway`: one WebSocket gateway process.

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Config {
    bus: plumbing::BusConfig,
    gateway: gateway::GatewayConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    plumbing::telemetry::init();
    let file = std::env::args().nth(1).map(PathBuf::from);
    let config: Config =
        plumbing::config::load(file.as_deref()).context("invalid configuration")?;
    let shutdown = plumbing::shutdown::on_signal();
    let nats = plumbing::bus::connect(&config.bus.nats_url, "natter-gateway").await?;
    gateway::run(config.gateway, &config.bus, nats.clone(), shutdown).await?;
    let _ = nats.drain().await;
    Ok(())
}
