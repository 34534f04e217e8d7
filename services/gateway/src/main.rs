//! `natter-gateway [config.toml]`: one WebSocket gateway process. Reads `[bus]` and
//! `[gateway]`; serves `/metrics` and `/healthz` on its own listener.

use plumbing::nats_auth::Role;
use plumbing::service::Service;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Service::new("natter-gateway", Role::Gateway, "gateway")
        .run(
            |config: gateway::GatewayConfig, bus, nats, shutdown| async move {
                gateway::run(config, &bus, nats, shutdown).await
            },
        )
        .await
}
