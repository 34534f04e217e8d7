//! Presence liveness with a real gateway process: a gateway killed with SIGKILL takes its
//! sessions offline within its lease TTL; one stopped with SIGTERM releases its lease and takes
//! them offline at once, and its clients get the reconnect close code. A killed gateway's
//! clients reconnect to another one and get everything they missed, once, in order.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use chat::{ChatMetrics, Directory};
use client::{Connection, Event};
use plumbing::BusConfig;
use plumbing::nats_auth::{NatsAuth, Role};
use plumbing::nats_server::{NatsServer, NatsServerOptions};
use protocol::frames::{Message, ServerFrame};
use protocol::payloads::UserPresence;
use protocol::{CloseCode, Cursor, Encoding, MessageId, UserId};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "liveness-secret";

struct Setup {
    _store: tempfile::TempDir,
    nats: NatsServer,
    view: Directory,
    _stop: CancellationToken,
}

async fn setup() -> Setup {
    let store = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(NatsServerOptions::scratch(
        store.path().into(),
        NatsAuth::ensure(&store.path().join("auth"), &[], &[]).unwrap(),
    ))
    .unwrap();
    let client = nats.client_as(Role::Chat).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let bus = BusConfig::default();
    let buckets = plumbing::bus::ensure_presence_buckets(&js, &bus)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let sweep = Duration::from_millis(100);
    let metrics = ChatMetrics::new();
    let groups = plumbing::bus::ensure_groups_bucket(&js, &bus)
        .await
        .unwrap();
    let view = Directory::start(
        &js,
        buckets,
        groups,
        bus.partitions,
        sweep,
        metrics,
        stop.clone(),
    )
    .await
    .unwrap();
    view.hold_all().await.unwrap();
    Setup {
        _store: store,
        nats,
        view,
        _stop: stop,
    }
}

fn spawn_gateway(nats: &NatsServer, port: u16, lease_ttl_ms: u64) -> Child {
    spawn_named_gateway(nats, "gw-live", port, lease_ttl_ms)
}

fn spawn_named_gateway(nats: &NatsServer, id: &str, port: u16, lease_ttl_ms: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_natter-gateway"))
        .envs(nats.bus(Role::Gateway).env())
        .env("NATTER_GATEWAY__JWT_SECRET", SECRET)
        .env("NATTER_GATEWAY__GATEWAY_ID", id)
        .env("NATTER_GATEWAY__LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("NATTER_GATEWAY__LEASE_TTL_MS", lease_ttl_ms.to_string())
        // The clients here send as fast as they can; the send limits are tested elsewhere.
        .env("NATTER_GATEWAY__SEND_MESSAGES_PER_SEC", "1000000")
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
    let mut gateway = spawn_gateway(&s.nats, port, lease_ttl.as_millis() as u64);
    let _bob = connect(port, "bob").await;
    let bob = UserId::new("bob").unwrap();
    eventually(Duration::from_secs(10), || {
        !s.view.local_routes_of(&bob).is_empty()
    })
    .await;

    gateway.kill().unwrap();
    gateway.wait().unwrap();
    let took = eventually(Duration::from_secs(10), || {
        s.view.local_routes_of(&bob).is_empty()
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
    let mut gateway = spawn_gateway(&s.nats, port, 60_000);
    let mut bob_conn = connect(port, "bob").await;
    let bob = UserId::new("bob").unwrap();
    eventually(Duration::from_secs(10), || {
        !s.view.local_routes_of(&bob).is_empty()
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
    eventually(Duration::from_secs(5), || {
        s.view.local_routes_of(&bob).is_empty()
    })
    .await;
    assert!(
        gateway.wait().unwrap().success(),
        "gateway exits cleanly on SIGTERM"
    );
}

/// Connects with `?cursor=` and reads the replay up to `synced`; returns the connection, the
/// replayed messages, and whether the replay was complete.
async fn resume(port: u16, user: &str, cursor: Option<Cursor>) -> (Connection, Vec<Message>, bool) {
    let url = format!("ws://127.0.0.1:{port}/v1/ws");
    let token = gateway::mint_token(SECRET, user, 3600);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut conn = loop {
        match Connection::resume(&url, &token, Encoding::Json, cursor.clone()).await {
            Ok(conn) => break conn,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("gateway never accepted: {e}"),
        }
    };
    let mut replayed = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(60), conn.next_frame())
            .await
            .expect("synced in time")
            .expect("connection open")
        {
            ServerFrame::Message(m) => replayed.push(m),
            ServerFrame::Synced { recovered, .. } => return (conn, replayed, recovered),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateways_clients_reconnect_elsewhere_and_miss_nothing() {
    const CLIENTS: usize = 1_000;
    const SENDERS: usize = 10;
    const PER_PHASE: usize = 150; // per sender, before and after the kill
    let s = setup().await;
    let bus = s.nats.bus(Role::Chat);
    let chat_nats = s.nats.client_as(Role::Chat).await.unwrap();
    let chat_stop = CancellationToken::new();
    let chat_config = chat::ChatConfig {
        presence_sweep_ms: 100,
        ..Default::default()
    };
    let _chat = chat::Chat::start(chat_config, &bus, chat_nats, chat_stop.clone())
        .await
        .unwrap();
    let observer = s.nats.client_as(Role::Operator).await.unwrap();
    let mut presence_events = observer.subscribe("natter.presence.>").await.unwrap();
    plumbing::bus::round_trip(&observer).await;

    let lease_ttl = Duration::from_millis(2_000);
    let (port_a, port_b) = (free_port(), free_port());
    let mut gw_a = spawn_named_gateway(&s.nats, "gw-a", port_a, 2_000);
    let _gw_b = KillOnDrop(spawn_named_gateway(&s.nats, "gw-b", port_b, 60_000));
    let users: Vec<String> = (0..CLIENTS).map(|i| format!("u{i}")).collect();

    // 1,000 clients on gw-a, each recording what it receives until its socket dies.
    let mut clients = Vec::new();
    for user in &users {
        let (mut conn, replayed, _) = resume(port_a, user, None).await;
        assert!(replayed.is_empty());
        clients.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Ok(frame) = conn.next_frame().await {
                if let ServerFrame::Message(m) = frame {
                    got.push(m);
                }
            }
            (got, conn.cursor())
        }));
    }
    let ids: Vec<UserId> = users.iter().map(|u| UserId::new(u).unwrap()).collect();
    eventually(Duration::from_secs(20), || {
        ids.iter().all(|u| !s.view.local_routes_of(u).is_empty())
    })
    .await;

    // Senders on gw-b: message j of sender k goes to user (k * 2 * PER_PHASE + j) % CLIENTS.
    let mut senders = Vec::new();
    for k in 0..SENDERS {
        let (conn, _, _) = resume(port_b, &format!("sender{k}"), None).await;
        senders.push(conn);
    }
    let sent: Arc<tokio::sync::Mutex<HashMap<String, Vec<MessageId>>>> = Default::default();
    let send_phase = |phase: usize, senders: Vec<Connection>| {
        let sent = sent.clone();
        let users = users.clone();
        async move {
            let tasks = senders.into_iter().enumerate().map(|(k, mut conn)| {
                let (sent, users) = (sent.clone(), users.clone());
                tokio::spawn(async move {
                    let first = phase * PER_PHASE;
                    for j in first..first + PER_PHASE {
                        let to = &users[(k * 2 * PER_PHASE + j) % CLIENTS];
                        conn.send(to, &format!("m{j}"), &format!("{k}/{j}"))
                            .await
                            .unwrap();
                    }
                    let mut ids = Vec::new();
                    while ids.len() < PER_PHASE {
                        match conn.next_frame().await.unwrap() {
                            ServerFrame::Sent { id, .. } => ids.push(id),
                            ServerFrame::Error { reason, .. } => panic!("send failed: {reason}"),
                            _ => {}
                        }
                    }
                    sent.lock()
                        .await
                        .entry(format!("sender{k}"))
                        .or_default()
                        .extend(ids);
                    conn
                })
            });
            futures::future::join_all(tasks)
                .await
                .into_iter()
                .map(|r| r.unwrap())
                .collect::<Vec<_>>()
        }
    };
    let senders = send_phase(0, senders).await;
    gw_a.kill().unwrap();
    gw_a.wait().unwrap();
    let killed = Instant::now();
    // Messages keep flowing to them while their gateway is dead but not yet known dead.
    let _senders = send_phase(1, senders).await;

    // Seen offline within the TTL, and each of them announced as offline.
    eventually(Duration::from_secs(10), || {
        ids.iter().all(|u| s.view.local_routes_of(u).is_empty())
    })
    .await;
    let detected = killed.elapsed();
    let mut offline = HashSet::new();
    while offline.len() < CLIENTS {
        let msg = tokio::time::timeout(Duration::from_secs(10), presence_events.next())
            .await
            .expect("offline events in time")
            .unwrap();
        let p: UserPresence = serde_json::from_slice(&msg.payload).unwrap();
        if !p.online && p.user.as_str().starts_with('u') {
            assert!(p.last_seen.is_some());
            offline.insert(p.user);
        }
    }
    let announced = killed.elapsed();
    assert!(
        detected <= lease_ttl + Duration::from_secs(1),
        "offline only after {detected:?}"
    );
    println!(
        "dead gateway: routing stopped {detected:?} and all {CLIENTS} offline events were out \
         {announced:?} after kill -9 (lease TTL {lease_ttl:?})"
    );

    // Everyone reconnects to gw-b at once, from the cursor they had.
    let mut before: HashMap<String, Vec<Message>> = HashMap::new();
    let mut cursors = HashMap::new();
    for (user, client) in users.iter().zip(clients) {
        let (got, cursor) = client.await.unwrap();
        before.insert(user.clone(), got);
        cursors.insert(user.clone(), cursor);
    }
    let storm = Instant::now();
    let resumed = futures::future::join_all(users.iter().map(|user| {
        let cursor = cursors[user].clone();
        async move {
            let (_conn, replayed, recovered) = resume(port_b, user, cursor).await;
            assert!(recovered, "{user} recovered");
            (user.clone(), replayed)
        }
    }))
    .await;
    println!(
        "reconnect storm: {CLIENTS} clients resynced in {:?}",
        storm.elapsed()
    );

    // 0 lost, 0 duplicates, order per conversation.
    let sent = sent.lock().await;
    let mut expected: HashMap<&str, Vec<MessageId>> = HashMap::new();
    let mut owner: HashMap<MessageId, (&str, usize)> = HashMap::new();
    for (sender, ids) in sent.iter() {
        for (n, id) in ids.iter().enumerate() {
            owner.insert(*id, (sender.as_str(), n));
        }
    }
    for (user, replayed) in &resumed {
        let mut all = before[user].clone();
        let seen_before: HashSet<MessageId> = all.iter().map(|m| m.id).collect();
        assert!(
            replayed.iter().all(|m| !seen_before.contains(&m.id)),
            "{user}: the replay repeats nothing the device had"
        );
        all.extend(replayed.iter().cloned());
        let ids: HashSet<MessageId> = all.iter().map(|m| m.id).collect();
        assert_eq!(ids.len(), all.len(), "{user}: no duplicates");
        for m in &all {
            expected.entry(user.as_str()).or_default().push(m.id);
        }
        // Per conversation, in the order the sender sent.
        let mut last: HashMap<&str, usize> = HashMap::new();
        for m in &all {
            let (sender, n) = owner[&m.id];
            if let Some(prev) = last.insert(sender, n) {
                assert!(prev < n, "{user}: {sender}'s messages out of order");
            }
        }
    }
    let received: usize = expected.values().map(Vec::len).sum();
    assert_eq!(
        received,
        SENDERS * 2 * PER_PHASE,
        "every message reached its recipient"
    );
    chat_stop.cancel();
}

/// Kills a child process when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
