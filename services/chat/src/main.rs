//! `natter-chat [config.toml]`: one chat service instance. Reads `[bus]`, `[chat]` and
//! `metrics_addr` (where `/metrics` and `/healthz` are served, 127.0.0.1:9090 by default).

use plumbing::nats_auth::Role;
use plumbing::service::{Service, Started};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Service::new("natter-chat", Role::Chat, "chat")
        .metrics_addr(([127, 0, 0, 1], 9090))
        .start(|config: chat::ChatConfig, bus, nats, shutdown| async move {
            let chat = chat::Chat::start(config, &bus, nats, shutdown).await?;
            Ok(Started::new(chat.metrics.clone(), chat.wait()))
        })
        .await
}
