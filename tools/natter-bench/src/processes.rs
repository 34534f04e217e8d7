//! natter as separate processes, the way the peers run: a nats-server, `natter-chat`,
//! `natter-history` (embedded store) and several `natter-gateway`s, each its own process
//! configured through the environment, so that the operating system schedules natter's
//! servers apart from the load generator's clients exactly as it does a peer's.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use plumbing::nats_auth::Role;
use protocol::frames::ServerFrame;
use protocol::{ConnId, Encoding};
use testkit::TestNats;
use testkit::client::Connection;

use crate::process::{free_port, wait_listening};

pub struct Processes {
    pub nats: TestNats,
    children: Vec<Server>,
    /// (gateway id, port) of each gateway.
    gateways: Vec<(String, u16)>,
    _dir: tempfile::TempDir,
}

/// One of natter's server processes.
pub struct Server {
    /// `natter-chat`, `natter-history`, `gw-0`, …
    pub name: String,
    child: Child,
    /// Where it serves `/metrics`.
    pub metrics: SocketAddr,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for server in &mut self.children {
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
    }
}

impl Processes {
    pub async fn start(sync: &str, gateways: usize) -> anyhow::Result<Self> {
        let nats = TestNats::start_with_sync(sync);
        let dir = tempfile::tempdir()?;
        let mut natter = Self {
            nats,
            children: Vec::new(),
            gateways: Vec::new(),
            _dir: dir,
        };
        let metrics = free_port()?;
        natter.spawn(
            "natter-chat",
            "natter-chat",
            metrics,
            Role::Chat,
            &[
                ("NATTER_METRICS_ADDR", format!("127.0.0.1:{metrics}")),
                // The group scenario adds 499 members who never messaged the owner.
                ("NATTER_CHAT__GROUP_ADDS", "anyone".to_string()),
            ],
        )?;
        wait_listening(metrics).await?;
        let metrics = free_port()?;
        let store = natter._dir.path().join("history.redb");
        natter.spawn(
            "natter-history",
            "natter-history",
            metrics,
            Role::History,
            &[
                ("NATTER_METRICS_ADDR", format!("127.0.0.1:{metrics}")),
                ("NATTER_HISTORY__EMBEDDED_PATH", store.display().to_string()),
            ],
        )?;
        wait_listening(metrics).await?;
        for i in 0..gateways {
            let port = free_port()?;
            let id = format!("gw-{i}");
            natter.spawn(
                &id,
                "natter-gateway",
                port,
                Role::Gateway,
                &[
                    ("NATTER_GATEWAY__GATEWAY_ID", id.clone()),
                    ("NATTER_GATEWAY__LISTEN_ADDR", format!("127.0.0.1:{port}")),
                    ("NATTER_GATEWAY__JWT_SECRET", testkit::SECRET.to_string()),
                    ("NATTER_GATEWAY__HEARTBEAT_TIMEOUT_MS", "600000".to_string()),
                    // One sender offers up to 100 msg/s: the per-user limits are not measured here.
                    (
                        "NATTER_GATEWAY__SEND_MESSAGES_PER_SEC",
                        "1000000".to_string(),
                    ),
                ],
            )?;
            wait_listening(port).await?;
            natter.gateways.push((id, port));
        }
        Ok(natter)
    }

    /// Starts one of natter's binaries, found next to `natter-bench`, serving `/metrics` on
    /// `metrics_port`.
    fn spawn(
        &mut self,
        name: &str,
        binary: &str,
        metrics_port: u16,
        role: Role,
        env: &[(&str, String)],
    ) -> anyhow::Result<()> {
        let path = std::env::current_exe()?.with_file_name(binary);
        anyhow::ensure!(
            path.exists(),
            "{} not found: build it with cargo build --release -p gateway -p chat -p history",
            path.display()
        );
        let mut command = Command::new(&path);
        command
            .envs(self.nats.bus(role).env())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        self.children.push(Server {
            name: name.to_string(),
            child: command.spawn()?,
            metrics: ([127, 0, 0, 1], metrics_port).into(),
        });
        Ok(())
    }

    /// natter's server processes.
    pub fn servers(&self) -> &[Server] {
        &self.children
    }

    /// Gateway `gw`'s WebSocket URL.
    pub fn ws_url(&self, gw: usize) -> String {
        format!("ws://127.0.0.1:{}/v1/ws", self.gateways[gw].1)
    }

    /// The value of a counter at gateway `gw`'s `/metrics`.
    pub async fn metric(&self, gw: usize, name: &str) -> i64 {
        let addr = ([127, 0, 0, 1], self.gateways[gw].1).into();
        let text = testkit::http_get(addr, "/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    }

    pub fn gateway_id(&self, gw: usize) -> &str {
        &self.gateways[gw].0
    }

    /// Connects `user` to gateway `gw` and waits for `welcome`.
    pub async fn connect_welcomed(
        &self,
        user: &str,
        gw: usize,
    ) -> anyhow::Result<(Connection, ConnId)> {
        let url = self.ws_url(gw);
        let token = gateway::mint_token(testkit::SECRET, user, 3600);
        let mut conn = Connection::connect(&url, &token, Encoding::Json).await?;
        match conn.next_frame().await? {
            ServerFrame::Welcome { conn: id, .. } => Ok((conn, id)),
            other => anyhow::bail!("expected welcome, got {other:?}"),
        }
    }
}
