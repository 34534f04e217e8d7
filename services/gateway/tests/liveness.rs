//! Presence liveness with a real gateway process: a gateway killed with SIGKILL takes its
//! sessions offline within its lease TTL; one stopped with SIGTERM releases its lease and takes
//! them offline at once, and its clients get the reconnect close code.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chat::PresenceView;
use client::{Connection, Event};
use plumbing::BusConfig;
use plumbing::nats_server::{NatsServer, NatsServerOptions};
use protocol::frames::ServerFrame;
use protocol::{CloseCode, Encoding, UserId};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "liveness-secret";

struct Setup {
    _store: tempfile::TempDir,
    nats: NatsServer,
    view: PresenceView,
    _stop: CancellationToken,
}

async fn setup() -> Setup {
    let store = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(NatsServerOptions {
        store_dir: store.path().into(),
        port: None,
        sync_interval: "2m".into(),
    })
    .unwrap();
    let client = plumbing::bus::connect(&nats.url(), "view").await.unwrap();
    let js = async_nats::jetstream::new(client);
    let buckets = plumbing::bus::ensure_presence_buckets(&js, &BusConfig::default())
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let view = PresenceView::start(&js, buckets, Duration::from_millis(100), stop.clone())
        .await
        .unwrap();
    Setup {
        _store: store,
        nats,
        view,
        _stop: stop,
    }
}

fn spawn_gateway(nats_url: &str, port: u16, lease_ttl_ms: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_natter-gateway"))
        .env("NATTER_BUS__NATS_URL", nats_url)
        .env("NATTER_GATEWAY__JWT_SECRET", SECRET)
        .env("NATTER_GATEWAY__GATEWAY_ID", "gw-live")
        .env("NATTER_GATEWAY__LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("NATTER_GATEWAY__LEASE_TTL_MS", lease_ttl_ms.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start natter-gateway")
}

async fn connect(port: u16, user: &str) -> Connection {
    let url = format!("ws://127.0.0.1:{port}/v1/ws");
    let token = gateway::mint_token(SECRET, user, 3600);
    // The process needs a moment to bind; retry connecting until it answers.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Connection::connect(&url, &token, Encoding::Json).await {
            Ok(mut conn) => {
                let welcome = conn.next_frame().await.unwrap();
                assert!(matches!(welcome, ServerFrame::Welcome { .. }));
                return conn;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("gateway never accepted: {e}"),
        }
    }
}

/// Polls `cond` until it holds, failing after `patience`. Presence changes arrive
/// asynchronously through a KV watch, so polling is the honest way to observe them.
async fn eventually(patience: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < patience,
            "condition not met within {patience:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_killed_gateways_sessions_go_offline_within_the_lease_ttl() {
    let s = setup().await;
    let port = free_port();
    let lease_ttl = Duration::from_millis(2_000);
    let mut gateway = spawn_gateway(&s.nats.url(), port, lease_ttl.as_millis() as u64);
    let _bob = connect(port, "bob").await;
    let bob = UserId::new("bob").unwrap();
    eventually(Duration::from_secs(10), || {
        !s.view.routes_of(&bob).is_empty()
    })
    .await;

    gateway.kill().unwrap();
    gateway.wait().unwrap();
    let took = eventually(Duration::from_secs(10), || {
        s.view.routes_of(&bob).is_empty()
    })
    .await;
    // The lease was refreshed at most a third of the TTL before the kill.
    assert!(
        took >= lease_ttl / 3,
        "offline after {took:?}, before the lease could lapse"
    );
    assert!(
        took <= lease_ttl + Duration::from_secs(1),
        "offline only after {took:?}"
    );
}

#[tokio::test]
async fn a_stopped_gateway_hands_clients_off_and_releases_presence_at_once() {
    let s = setup().await;
    let port = free_port();
    // A long TTL: only the release can take bob offline quickly.
    let mut gateway = spawn_gateway(&s.nats.url(), port, 60_000);
    let mut bob_conn = connect(port, "bob").await;
    let bob = UserId::new("bob").unwrap();
    eventually(Duration::from_secs(10), || {
        !s.view.routes_of(&bob).is_empty()
    })
    .await;

    Command::new("kill")
        .arg("-TERM")
        .arg(gateway.id().to_string())
        .status()
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), bob_conn.next_event())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed, Event::Closed(Some(CloseCode::Reconnect as u16)));
    eventually(Duration::from_secs(5), || s.view.routes_of(&bob).is_empty()).await;
    assert!(
        gateway.wait().unwrap().success(),
        "gateway exits cleanly on SIGTERM"
    );
}
