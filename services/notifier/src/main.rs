//! `natter-notifier [config.toml]`: one notifier instance. Reads `[bus]`, `[notifier]` and
//! `metrics_addr` (where `/metrics` and `/healthz` are served, 127.0.0.1:9092 by default).

use plumbing::nats_auth::Role;
use plumbing::service::{Service, Started};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Service::new("natter-notifier", Role::Notifier, "notifier")
        .metrics_addr(([127, 0, 0, 1], 9092))
        .start(
            |config: notifier::NotifierConfig, bus, nats, shutdown| async move {
                let notifier = notifier::Notifier::start(config, &bus, nats, shutdown).await?;
                Ok(Started::new(notifier.metrics.clone(), notifier.wait()))
            },
        )
        .await
}
