//! `natter-history [config.toml]`: one history service instance.
//! `natter-history migrate [config.toml]`: apply the CQL migrations in `schema/` and exit.

use std::path::PathBuf;

use anyhow::Context;
use history::{EmbeddedStore, History, HistoryConfig, ScyllaStore, Store, StoreKind};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Config {
    bus: plumbing::BusConfig,
    history: HistoryConfig,
    /// Where `/metrics` and `/healthz` are served.
    metrics_addr: Option<std::net::SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    plumbing::telemetry::init();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let migrate_only = args.first().is_some_and(|a| a == "migrate");
    if migrate_only {
        args.remove(0);
    }
    let file = args.first().map(PathBuf::from);
    let config: Config =
        plumbing::config::load(file.as_deref()).context("invalid configuration")?;
    if migrate_only {
        ScyllaStore::connect(&config.history.scylla).await?;
        println!(
            "schema applied to keyspace {}",
            config.history.scylla.keyspace
        );
        return Ok(());
    }
    match config.history.store {
        StoreKind::Embedded => {
            let path = &config.history.embedded_path;
            let store =
                EmbeddedStore::open(path).with_context(|| format!("opening {}", path.display()))?;
            serve(config, store).await
        }
        StoreKind::Scylla => {
            let store = ScyllaStore::connect(&config.history.scylla).await?;
            serve(config, store).await
        }
    }
}

async fn serve<S: Store>(config: Config, store: S) -> anyhow::Result<()> {
    let shutdown = plumbing::shutdown::on_signal();
    let nats = plumbing::bus::connect(&config.bus.nats_url, "natter-history").await?;
    let membership = history::membership::groups_view(&nats, &config.bus, shutdown.clone()).await?;
    let service = History::start(
        config.history,
        &config.bus,
        nats.clone(),
        store,
        membership,
        shutdown.clone(),
    )
    .await?;
    let addr = config.metrics_addr.unwrap_or(([127, 0, 0, 1], 9091).into());
    let probe = nats.clone();
    let healthy = move || probe.connection_state() == async_nats::connection::State::Connected;
    plumbing::metrics::serve(addr, service.metrics.clone(), healthy, shutdown).await?;
    service.wait().await?;
    let _ = nats.drain().await;
    Ok(())
}
