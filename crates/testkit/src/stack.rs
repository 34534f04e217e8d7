//! The `Stack` builder: a nats-server (or cluster) with natter's own services on
//! `127.0.0.1:0`, started as a scenario says, and handles on each running service
//! (`RunningGateway`, `RunningChat`, `RunningHistory`, `RunningNotifier`) to query, stop or
//! kill it.

use std::net::SocketAddr;

use client::Connection;
use plumbing::BusConfig;
use plumbing::nats_auth::Role;
use protocol::Encoding;
use tokio_util::sync::CancellationToken;

use crate::expect::{PATIENCE, eventually, expect_history, expect_sent, expect_welcome, within};
use crate::{StackNats, TestCluster, TestNats};

/// The secret every test token is signed with.
pub const SECRET: &str = "test-secret-not-for-production";

/// Builder for a natter stack.
pub struct StackBuilder {
    gateways: usize,
    gateway: gateway::GatewayConfig,
    chat: chat::ChatConfig,
    history: history::HistoryConfig,
    bus: BusConfig,
    sync_interval: String,
    cluster_nodes: Option<usize>,
    lease_on_main_connection: bool,
}

impl StackBuilder {
    /// Gateways write their lease over their main NATS connection instead of one of its own:
    /// how gateways did before, as a benchmark's baseline.
    pub fn lease_on_main_connection(mut self) -> Self {
        self.lease_on_main_connection = true;
        self
    }

    /// JetStream `sync_interval` of the test nats-server (`always` or a duration).
    pub fn sync_interval(mut self, v: &str) -> Self {
        self.sync_interval = v.into();
        self
    }

    pub fn gateways(mut self, n: usize) -> Self {
        self.gateways = n;
        self
    }

    /// Runs on a cluster of `nodes` nats-servers, with streams and buckets replicated on all.
    pub fn cluster(mut self, nodes: usize) -> Self {
        self.cluster_nodes = Some(nodes);
        self.bus.replicas = nodes;
        self
    }

    /// Changes every gateway's configuration.
    pub fn gateway_config(mut self, f: impl FnOnce(&mut gateway::GatewayConfig)) -> Self {
        f(&mut self.gateway);
        self
    }

    pub fn chat_config(mut self, f: impl FnOnce(&mut chat::ChatConfig)) -> Self {
        f(&mut self.chat);
        self
    }

    /// Changes the NATS resources every service of the stack ensures (stream limits...).
    pub fn history_config(mut self, f: impl FnOnce(&mut history::HistoryConfig)) -> Self {
        f(&mut self.history);
        self
    }

    pub fn bus_config(mut self, f: impl FnOnce(&mut BusConfig)) -> Self {
        f(&mut self.bus);
        self
    }

    pub async fn start(self) -> Stack {
        plumbing::telemetry::init();
        let nats = match self.cluster_nodes {
            Some(nodes) => StackNats::Cluster(TestCluster::start(nodes, &self.sync_interval).await),
            None => StackNats::One(Box::new(TestNats::start_with_sync(&self.sync_interval))),
        };
        let mut bus = self.bus;
        bus.nats_url = nats.url();
        let mut stack = Stack {
            nats,
            bus,
            gateway_config: self.gateway,
            chat_config: self.chat,
            history_config: self.history,
            gateways: Vec::new(),
            chats: Vec::new(),
            histories: Vec::new(),
            notifiers: Vec::new(),
            history_dir: tempfile::tempdir().expect("temp dir"),
            history_store: None,
            lease_on_main_connection: self.lease_on_main_connection,
        };
        stack.start_services(self.gateways).await;
        stack
    }
}

/// A running gateway of a stack.
pub struct RunningGateway {
    pub addr: SocketAddr,
    pub id: String,
    pub shutdown: CancellationToken,
    handle: Option<gateway::Gateway>,
}

impl RunningGateway {
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// GETs `path` from the gateway's HTTP listener; returns the whole response.
    pub async fn http_get(&self, path: &str) -> String {
        http_get(self.addr, path).await
    }

    /// The value of a counter or gauge at this gateway's `/metrics`.
    pub async fn metric(&self, name: &str) -> i64 {
        let text = self.http_get("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    /// Also serves `metrics` at this gateway's `/metrics` (as the all-in-one does).
    pub fn export_metrics(&self, metrics: plumbing::Metrics) {
        if let Some(handle) = &self.handle {
            handle.export_metrics(metrics);
        }
    }

    /// Shuts the gateway down gracefully and waits for it.
    pub async fn shutdown(&mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle.wait().await;
        }
    }
}

// A stack dropped without `stop` (the end of most tests) still asks its services to stop, so
// none of them goes on writing leases and heartbeats into a NATS that is going away.
impl Drop for RunningGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Drop for RunningChat {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Drop for RunningHistory {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Drop for RunningNotifier {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A running chat service of a stack.
pub struct RunningChat {
    pub shutdown: CancellationToken,
    pub metrics: plumbing::Metrics,
    handle: Option<chat::Chat>,
}

impl RunningChat {
    /// Shuts it down gracefully and waits for it.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            within(handle.wait()).await.expect("chat stopped cleanly");
        }
    }

    /// The value of one of its counters.
    pub fn metric(&self, name: &str) -> u64 {
        self.metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    /// Kills it at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// nats-server, chat service(s) and gateways.
pub struct Stack {
    pub nats: StackNats,
    pub bus: BusConfig,
    pub gateway_config: gateway::GatewayConfig,
    pub chat_config: chat::ChatConfig,
    pub history_config: history::HistoryConfig,
    pub gateways: Vec<RunningGateway>,
    pub chats: Vec<RunningChat>,
    pub histories: Vec<RunningHistory>,
    pub notifiers: Vec<RunningNotifier>,
    /// Where the history service's embedded store lives.
    pub history_dir: tempfile::TempDir,
    /// The store every history instance of the stack shares, once the first has opened it.
    history_store: Option<history::EmbeddedStore>,
    /// See [`StackBuilder::lease_on_main_connection`].
    lease_on_main_connection: bool,
}

/// A running history service of a stack.
pub struct RunningHistory {
    pub shutdown: CancellationToken,
    pub metrics: plumbing::Metrics,
    pub cache: std::sync::Arc<history::HistoryCache<history::EmbeddedStore>>,
    /// The partitions it writes, as they change.
    pub assigned: plumbing::bus::shares::Assigned,
    handle: Option<history::History<history::EmbeddedStore>>,
}

impl RunningHistory {
    /// Shuts it down gracefully and waits for it.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            within(handle.wait())
                .await
                .expect("history stopped cleanly");
        }
    }

    /// Kills it at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// A running notifier of a stack.
pub struct RunningNotifier {
    pub shutdown: CancellationToken,
    /// What it was started with (a restart starts it the same way).
    pub config: notifier::NotifierConfig,
    pub metrics: plumbing::Metrics,
    handle: Option<notifier::Notifier>,
}

impl RunningNotifier {
    /// Shuts it down gracefully (it hands its held events back) and waits for it.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            within(handle.wait())
                .await
                .expect("notifier stopped cleanly");
        }
    }

    /// Kills it at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }

    /// The value of a counter or gauge of this notifier.
    pub fn metric(&self, name: &str) -> i64 {
        metric_value(&self.metrics, name)
    }
}

/// The value of a counter or gauge in `metrics`.
pub fn metric_value(metrics: &plumbing::Metrics, name: &str) -> i64 {
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

impl Stack {
    /// Stops every service gracefully and waits for each: gateways first (their sessions end
    /// and unregister while NATS is up), then notifiers, chat and history. What goes on in
    /// the same process afterwards (a benchmark's next system) then shares the machine with
    /// nothing of this stack. Dropping a stack only asks its services to stop.
    pub async fn stop(mut self) {
        self.stop_services().await;
    }

    /// Stops every service as [`Stack::stop`] does, forgets them, and closes the embedded
    /// history store ([`Stack::history_file`] may then be copied or replaced); NATS stays.
    /// [`Stack::start_services`] starts them again.
    pub async fn stop_services(&mut self) {
        for gateway in &mut self.gateways {
            within(gateway.shutdown()).await;
        }
        for notifier in &mut self.notifiers {
            notifier.stop().await;
        }
        for chat in &mut self.chats {
            chat.stop().await;
        }
        for history in &mut self.histories {
            history.stop().await;
        }
        self.gateways.clear();
        self.notifiers.clear();
        self.chats.clear();
        self.histories.clear();
        self.history_store = None;
    }

    /// Starts what [`StackBuilder::start`] starts: a chat and a history service, and
    /// `gateways` gateways (`gw-0`, `gw-1`, ...).
    pub async fn start_services(&mut self, gateways: usize) {
        let chat_config = self.chat_config.clone();
        self.start_chat(chat_config).await;
        self.start_history().await;
        for i in 0..gateways {
            self.start_gateway(&format!("gw-{i}")).await;
        }
    }

    /// The embedded history store's file (open while a history service runs).
    pub fn history_file(&self) -> std::path::PathBuf {
        self.history_dir.path().join("history.redb")
    }

    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> StackBuilder {
        let gateway = gateway::GatewayConfig {
            listen_addr: ([127, 0, 0, 1], 0).into(),
            jwt_secret: SECRET.into(),
            shutdown_grace_ms: 5_000,
            // Tests and benchmarks send as fast as they can from few users; the send limits
            // are tested where they are set (`tests/limits.rs`).
            send_messages_per_sec: 1_000_000,
            send_bytes_per_sec: 1 << 40,
            ..Default::default()
        };
        StackBuilder {
            gateways: 1,
            gateway,
            chat: chat::ChatConfig::default(),
            history: history::HistoryConfig {
                // A partition's new writer serves it from its cache after this long.
                writer_ack_wait_ms: 2_000,
                ..Default::default()
            },
            // Stacks run partitioned, as a production deployment does.
            bus: BusConfig {
                partitions: 3,
                ..Default::default()
            },
            sync_interval: "2m".into(),
            cluster_nodes: None,
            lease_on_main_connection: false,
        }
    }

    pub async fn start_gateway(&mut self, id: &str) -> usize {
        let url = self.bus.nats_url.clone();
        self.start_gateway_via(id, &url).await
    }

    /// Starts a gateway that reaches NATS at `nats_url` (a [`Link`], to cut it off).
    pub async fn start_gateway_via(&mut self, id: &str, nats_url: &str) -> usize {
        self.start_gateway_links(id, nats_url, nats_url).await
    }

    /// Starts a gateway whose main connection reaches NATS at `nats_url` and whose lease
    /// connection at `liveness_url` (a [`Link`] for one of them cuts only that one).
    pub async fn start_gateway_links(
        &mut self,
        id: &str,
        nats_url: &str,
        liveness_url: &str,
    ) -> usize {
        let listen = self.gateway_config.listen_addr;
        let gateway = self
            .launch_gateway(id, nats_url, liveness_url, listen)
            .await;
        self.gateways.push(gateway);
        self.gateways.len() - 1
    }

    /// Drains gateway `i` (its clients are told to reconnect elsewhere) and starts it again
    /// on the same address, as one step of a rolling restart.
    pub async fn restart_gateway(&mut self, i: usize) {
        let (id, addr) = (self.gateways[i].id.clone(), self.gateways[i].addr);
        within(self.gateways[i].shutdown()).await;
        let url = self.bus.nats_url.clone();
        self.gateways[i] = self.launch_gateway(&id, &url, &url, addr).await;
    }

    async fn launch_gateway(
        &self,
        id: &str,
        nats_url: &str,
        liveness_url: &str,
        listen_addr: SocketAddr,
    ) -> RunningGateway {
        let mut config = self.gateway_config.clone();
        config.gateway_id = id.into();
        config.listen_addr = listen_addr;
        let bus = BusConfig {
            nats_url: nats_url.into(),
            ..self.bus_for(Role::Gateway)
        };
        let nats = plumbing::bus::connect(&bus, Role::Gateway, id)
            .await
            .expect("connect");
        let liveness_bus = BusConfig {
            nats_url: liveness_url.into(),
            ..bus.clone()
        };
        let liveness = if self.lease_on_main_connection {
            nats.clone()
        } else {
            plumbing::bus::connect(&liveness_bus, Role::Gateway, &format!("{id}-liveness"))
                .await
                .expect("connect")
        };
        let shutdown = CancellationToken::new();
        let handle = gateway::Gateway::start(config, &self.bus, nats, liveness, shutdown.clone())
            .await
            .expect("start gateway");
        RunningGateway {
            addr: handle.addr,
            id: id.into(),
            shutdown,
            handle: Some(handle),
        }
    }

    pub async fn start_chat(&mut self, config: chat::ChatConfig) -> usize {
        let nats = plumbing::bus::connect(&self.bus_for(Role::Chat), Role::Chat, "chat")
            .await
            .expect("connect");
        let shutdown = CancellationToken::new();
        let handle = chat::Chat::start(config, &self.bus, nats, shutdown.clone())
            .await
            .expect("start chat");
        self.chats.push(RunningChat {
            shutdown,
            metrics: handle.metrics.clone(),
            handle: Some(handle),
        });
        self.chats.len() - 1
    }

    /// Holds every shard (sessions and groups) as a routing chat instance does, without
    /// routing: for tests that play the router themselves (`route = false`) while gateways
    /// and group operations still need a shard's holder to answer. Held until the token is
    /// cancelled (or dropped with the stack's process).
    pub async fn hold_shards(&self) -> CancellationToken {
        let nats = plumbing::bus::connect(&self.bus_for(Role::Chat), Role::Chat, "holder")
            .await
            .expect("connect");
        let js = async_nats::jetstream::new(nats);
        let buckets = plumbing::bus::ensure_presence_buckets(&js, &self.bus)
            .await
            .expect("presence buckets");
        let groups = plumbing::bus::ensure_groups_bucket(&js, &self.bus)
            .await
            .expect("groups bucket");
        let stop = CancellationToken::new();
        let directory = chat::Directory::start(
            &js,
            buckets,
            groups,
            self.bus.partitions,
            std::time::Duration::from_secs(1),
            chat::ChatMetrics::new(),
            stop.clone(),
        )
        .await
        .expect("directory");
        directory.hold_all().await.expect("hold every shard");
        stop
    }

    /// Starts a history service over the stack's embedded store, with the stack's config.
    pub async fn start_history(&mut self) -> usize {
        self.start_history_with(self.history_config.clone()).await
    }

    pub async fn start_history_with(&mut self, config: history::HistoryConfig) -> usize {
        let nats = plumbing::bus::connect(&self.bus_for(Role::History), Role::History, "history")
            .await
            .expect("connect");
        let path = self.history_file();
        let store = self
            .history_store
            .get_or_insert_with(|| {
                history::EmbeddedStore::open(&path).expect("open embedded store")
            })
            .clone();
        let membership = history::membership::held_elsewhere(&nats, &self.bus)
            .await
            .expect("groups bucket");
        let shutdown = CancellationToken::new();
        let handle =
            history::History::start(config, &self.bus, nats, store, membership, shutdown.clone())
                .await
                .expect("start history");
        self.histories.push(RunningHistory {
            shutdown,
            metrics: handle.metrics.clone(),
            cache: handle.cache.clone(),
            assigned: handle.assigned.clone(),
            handle: Some(handle),
        });
        self.histories.len() - 1
    }

    /// Starts a notifier with a `window_ms` window, delivering to `webhook_url` (the log
    /// provider when empty), retrying quickly.
    pub async fn start_notifier(&mut self, window_ms: u64, webhook_url: &str) -> usize {
        let provider = if webhook_url.is_empty() {
            notifier::ProviderKind::Log
        } else {
            notifier::ProviderKind::Webhook
        };
        self.start_notifier_with(notifier::NotifierConfig {
            window_ms,
            provider,
            webhook_url: webhook_url.into(),
            webhook_timeout_ms: 2_000,
            retry_initial_backoff_ms: 100,
            retry_max_backoff_ms: 500,
            retry_max_age_ms: 30_000,
            ..Default::default()
        })
        .await
    }

    pub async fn start_notifier_with(&mut self, config: notifier::NotifierConfig) -> usize {
        let nats =
            plumbing::bus::connect(&self.bus_for(Role::Notifier), Role::Notifier, "notifier")
                .await
                .expect("connect");
        let shutdown = CancellationToken::new();
        let handle = notifier::Notifier::start(config.clone(), &self.bus, nats, shutdown.clone())
            .await
            .expect("start notifier");
        self.notifiers.push(RunningNotifier {
            shutdown,
            config,
            metrics: handle.metrics.clone(),
            handle: Some(handle),
        });
        self.notifiers.len() - 1
    }

    /// The bus settings with which `role` reaches the stack's NATS (`bus` with the role's
    /// credentials).
    pub fn bus_for(&self, role: Role) -> BusConfig {
        self.nats.auth().bus_config(&self.bus, role)
    }

    /// A valid token for `user`.
    pub fn token(&self, user: &str) -> String {
        gateway::mint_token(SECRET, user, 3600)
    }

    /// Makes `user` a contact of each of `others`: `user` sends each one message, and this
    /// returns once the history service has stored them all. Adding someone to a group
    /// (`chat.group_adds = contacts`, the default) and watching their presence need it.
    /// Their connections, and `user`'s, get those messages like any other.
    pub async fn make_contacts(&self, user: &str, others: &[&str]) {
        let mut conn = self.connect(user, 0).await;
        for other in others {
            let cid = format!("contact-{other}");
            conn.send(other, &cid, "hello").await.expect("send");
            expect_sent(&mut conn, &cid).await;
        }
        let me = protocol::UserId::new(user).expect("valid user id");
        for (i, other) in others.iter().enumerate() {
            let other = protocol::UserId::new(*other).expect("valid user id");
            let conversation = protocol::ConversationId::direct(&me, &other).to_string();
            eventually("history stores the exchange", PATIENCE, async || {
                let qid = format!("contact{i}");
                let ask = protocol::frames::ClientFrame::History {
                    qid: qid.clone(),
                    conversation: conversation.clone(),
                    before: None,
                    after: None,
                    limit: Some(1),
                };
                conn.send_frame(&ask).await.expect("history query");
                expect_history(&mut conn, &qid)
                    .await
                    .is_ok_and(|(messages, _)| !messages.is_empty())
            })
            .await;
        }
        conn.close().await;
    }

    /// Connects `user` to gateway `gw` with JSON and waits for `welcome`.
    pub async fn connect(&self, user: &str, gw: usize) -> Connection {
        self.connect_with(user, gw, Encoding::Json).await
    }

    pub async fn connect_with(&self, user: &str, gw: usize, encoding: Encoding) -> Connection {
        self.connect_welcomed(user, gw, encoding).await.0
    }

    /// Connects and returns the connection with the id its gateway gave it.
    pub async fn connect_welcomed(
        &self,
        user: &str,
        gw: usize,
        encoding: Encoding,
    ) -> (Connection, protocol::ConnId) {
        let url = self.gateways[gw].ws_url();
        let mut conn = Connection::connect(&url, &self.token(user), encoding)
            .await
            .expect("connect");
        let id = expect_welcome(&mut conn).await;
        (conn, id)
    }

    /// Connects `user` to gateway `gw` resuming from `cursor` (see `Connection::resume`) and
    /// waits for `welcome`; the replay follows.
    pub async fn resume(
        &self,
        user: &str,
        gw: usize,
        cursor: Option<protocol::Cursor>,
    ) -> Connection {
        let url = self.gateways[gw].ws_url();
        let mut conn = Connection::resume(&url, &self.token(user), Encoding::Json, cursor)
            .await
            .expect("connect");
        expect_welcome(&mut conn).await;
        conn
    }

    /// Partition `k`'s messages stream, for tests that inspect or trim it.
    pub async fn messages_stream(&self, k: u32) -> async_nats::jetstream::stream::Stream {
        let js = async_nats::jetstream::new(self.nats.client().await);
        js.get_stream(protocol::subjects::messages_stream(k))
            .await
            .expect("stream")
    }

    /// The messages stream holding `conversation`.
    pub async fn stream_of(
        &self,
        conversation: &protocol::ConversationId,
    ) -> async_nats::jetstream::stream::Stream {
        let k = protocol::subjects::partition(conversation, self.bus.partitions);
        self.messages_stream(k).await
    }

    /// Number of conversation messages in the messages streams (session markers aside).
    pub async fn stored_messages(&self) -> u64 {
        use futures::StreamExt;
        let mut n = 0;
        for k in 0..self.bus.partitions {
            let stream = self.messages_stream(k).await;
            let mut subjects = stream
                .info_with_subjects(protocol::subjects::partition_messages(k))
                .await
                .expect("stream info");
            while let Some(entry) = subjects.next().await {
                let (subject, count) = entry.expect("stream subjects");
                if !protocol::subjects::is_session_marker(&subject) {
                    n += count as u64;
                }
            }
        }
        n
    }
}

/// GETs `path` from an HTTP listener at `addr` (a gateway's, a service's metrics); returns
/// the whole response.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}
