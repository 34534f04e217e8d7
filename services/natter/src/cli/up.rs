//! `natter up`: everything in one process — gateway, chat, history and notifier services,
//! and a local nats-server when no NATS URL is configured.

use std::time::Duration;

use anyhow::Context;
use plumbing::nats_auth::{NatsAuth, Role};
use plumbing::nats_server::{NatsServer, NatsServerOptions};

use crate::config::{NatterConfig, SecretSource};

pub async fn up(mut config: NatterConfig) -> anyhow::Result<()> {
    // `POST /dev/token` hands out any identity: only with the generated dev secret (never an
    // operator's) and only on a loopback address.
    config.gateway.dev_tokens = config.resolve_secret()? == SecretSource::LocalDev
        && config.gateway.listen_addr.ip().is_loopback();
    let shutdown = plumbing::shutdown::on_signal();
    // Started first and stopped last: everything else depends on it.
    let mut local_nats = None;
    if config.bus.nats_url.is_empty() {
        // Its own credentials, made once and kept in the (private) data directory: every
        // service below connects as its own role, with TLS.
        let auth = NatsAuth::ensure(&config.nats_auth_dir(), &[], &[])
            .context("making the local NATS credentials")?;
        let server = NatsServer::start(NatsServerOptions {
            store_dir: config.data_dir.join("nats"),
            port: None,
            sync_interval: config.nats_sync_interval.clone(),
            auth,
            max_file_store: None,
        })
        .context("starting the local nats-server")?;
        config.bus.nats_url = server.url();
        tracing::info!(url = %server.url(), "local nats-server started");
        local_nats = Some(server);
    }
    let connect = |role: Role| {
        let bus = config.bus_as(role);
        async move { plumbing::bus::connect(&bus?, role, role.name()).await }
    };
    let (chat_nats, history_nats) = (connect(Role::Chat).await?, connect(Role::History).await?);
    let (notifier_nats, gateway_nats) = (
        connect(Role::Notifier).await?,
        connect(Role::Gateway).await?,
    );
    let gateway_liveness = connect(Role::Gateway).await?;
    // The chat service stops only after the gateway has closed its sessions, so sends made
    // during the drain are still answered.
    let chat_shutdown = tokio_util::sync::CancellationToken::new();
    let chat = chat::Chat::start(
        config.chat.clone(),
        &config.bus,
        chat_nats.clone(),
        chat_shutdown.clone(),
    )
    .await?;
    let history_shutdown = tokio_util::sync::CancellationToken::new();
    let store = history::EmbeddedStore::open(&config.history_path())
        .with_context(|| format!("opening {}", config.history_path().display()))?;
    let history = history::History::start(
        config.history.clone(),
        &config.bus,
        history_nats.clone(),
        store,
        history::membership::held_elsewhere(&history_nats, &config.bus).await?,
        history_shutdown.clone(),
    )
    .await?;
    let notifier_shutdown = tokio_util::sync::CancellationToken::new();
    let notifier = notifier::Notifier::start(
        config.notifier.clone(),
        &config.bus,
        notifier_nats.clone(),
        notifier_shutdown.clone(),
    )
    .await?;
    let gw = gateway::Gateway::start(
        config.gateway.clone(),
        &config.bus,
        gateway_nats.clone(),
        gateway_liveness.clone(),
        shutdown.clone(),
    )
    .await?;
    gw.export_metrics(chat.metrics.clone());
    gw.export_metrics(history.metrics.clone());
    gw.export_metrics(notifier.metrics.clone());
    println!("natter is up");
    println!("  WebSocket: ws://{}/v1/ws", gw.addr);
    if config.gateway.web_client {
        println!("  Web:       http://{}/", gw.addr);
    }
    println!("  NATS:      {}", config.bus.nats_url);
    if local_nats.is_some() {
        let dir = config.nats_auth_dir();
        println!(
            "  NATS auth: {} (operator: --nkey {} --tlsca {})",
            dir.display(),
            dir.join("operator.nk").display(),
            dir.join("ca.pem").display()
        );
    }
    println!("  token:     natter token <user>");
    if config.gateway.dev_tokens {
        println!(
            "  dev token: POST http://{}/dev/token {{\"user\":\"<user>\"}}",
            gw.addr
        );
    }

    // Shutdown order: the gateway closes its sessions first, then the chat service stops,
    // then the history service, then the notifier (it hands its held events back), then NATS
    // is drained, and the local nats-server goes last.
    gw.wait().await;
    chat_shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), chat.wait()).await;
    history_shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), history.wait()).await;
    notifier_shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), notifier.wait()).await;
    for nats in [
        gateway_nats,
        gateway_liveness,
        chat_nats,
        history_nats,
        notifier_nats,
    ] {
        let _ = nats.drain().await;
    }
    if let Some(mut server) = local_nats {
        // SIGTERM lets JetStream flush and close its files cleanly.
        server.stop(Duration::from_secs(10));
    }
    Ok(())
}
