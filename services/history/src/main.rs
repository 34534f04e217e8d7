//! `natter-history [config.toml]`: one history service instance. Reads `[bus]`, `[history]`
//! and `metrics_addr` (where `/metrics` and `/healthz` are served, 127.0.0.1:9091 by default).
//! `natter-history migrate [config.toml]`: apply the CQL migrations in `schema/` and exit.

use plumbing::nats_auth::Role;
use plumbing::service::Service;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    let migrate = args.next_if(|a| a == "migrate").is_some();
    let service = Service::new("natter-history", Role::History, "history")
        .config_file(args.next().map(Into::into))
        .metrics_addr(([127, 0, 0, 1], 9091));
    if migrate {
        let config: history::HistoryConfig = service.load()?.config;
        history::ScyllaStore::connect(&config.scylla).await?;
        println!("schema applied to keyspace {}", config.scylla.keyspace);
        return Ok(());
    }
    service
        .start(|config, bus, nats, shutdown| async move {
            history::start(config, &bus, nats, shutdown).await
        })
        .await
}
