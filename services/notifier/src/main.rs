//! `natter-notifier [config.toml]`: one notifier instance.

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Config {
    bus: plumbing::BusConfig,
    notifier: notifier::NotifierConfig,
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
    let nats = plumbing::bus::connect(&config.bus.nats_url, "natter-notifier").await?;
    let service =
        notifier::Notifier::start(config.notifier, &config.bus, nats.clone(), shutdown.clone())
            .await?;
    let addr = config.metrics_addr.unwrap_or(([127, 0, 0, 1], 9092).into());
    let probe = nats.clone();
    let healthy = move || probe.connection_state() == async_nats::connection::State::Connected;
    let bound = plumbing::metrics::serve(addr, service.metrics.clone(), healthy, shutdown).await?;
    tracing::info!(%bound, "notifier metrics listening");
    service.wait().await?;
    let _ = nats.drain().await;
    Ok(())
}
