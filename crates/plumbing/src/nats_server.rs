//! A nats-server child process with JetStream: started by the all-in-one binary when no NATS
//! URL is configured, and by tests on a random port with a temporary store, alone or as a node
//! of a cluster. Always with natter's authentication, permissions and TLS (`nats_auth`), and
//! monitoring (for clustered nodes) on loopback only. Killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::nats_auth::NatsAuth;

/// Where the project's install script puts the pinned nats-server.
const PROJECT_INSTALL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.tools/bin/nats-server");

/// Options for a managed nats-server.
#[derive(Debug, Clone)]
pub struct NatsServerOptions {
    /// JetStream store directory.
    pub store_dir: PathBuf,
    /// Client port; `None` picks a free one.
    pub port: Option<u16>,
    /// JetStream `sync_interval`: `"always"` fsyncs every write; a duration such as `"2m"`
    /// fsyncs periodically. See docs/operations.md for why natter defaults to `always`.
    pub sync_interval: String,
    /// The identities, permissions and certificates the server enforces.
    pub auth: NatsAuth,
    /// JetStream's `max_file_store` in bytes; `None` lets nats-server offer 75% of the disk
    /// that is free when it starts. Streams reserve their `max_bytes` from it when they are
    /// made, so a throwaway server sets it: its streams then do not depend on how full the
    /// machine's disk happens to be (CI machines have been seen with 287 MB free).
    pub max_file_store: Option<u64>,
}

impl NatsServerOptions {
    /// A throwaway server for a test or a benchmark: a random port, fsync every two minutes,
    /// and a fixed 8 GiB store limit (nothing it holds comes near it).
    pub fn scratch(store_dir: PathBuf, auth: NatsAuth) -> Self {
        Self {
            store_dir,
            port: None,
            sync_interval: "2m".into(),
            auth,
            max_file_store: Some(8 << 30),
        }
    }
}

/// Membership of a managed nats-server in a cluster. A clustered node also serves monitoring
/// (`/healthz` says whether its JetStream is current) on a loopback port.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Cluster name, the same on every node.
    pub name: String,
    /// This node's `server_name`: unique, and the same across restarts, because JetStream's
    /// replication groups know the node by it.
    pub server_name: String,
    /// Route port; `None` picks a free one. Kept across restarts.
    pub port: Option<u16>,
    /// The other nodes' route URLs (`nats-route://127.0.0.1:PORT`).
    pub routes: Vec<String>,
}

/// The ports a running server listens on.
#[derive(Debug, Clone, Copy, Default)]
struct Ports {
    client: u16,
    cluster: Option<u16>,
    monitor: Option<u16>,
}

/// A running nats-server. Dropping it kills the process (the store is left in place).
pub struct NatsServer {
    child: Option<Child>,
    options: NatsServerOptions,
    cluster: Option<ClusterOptions>,
    port: u16,
    ports: Ports,
    _run_dir: tempfile::TempDir,
}

impl NatsServer {
    /// The nats-server binary: `$NATTER_NATS_SERVER`, the project's pinned install, or `PATH`.
    pub fn binary() -> anyhow::Result<PathBuf> {
        if let Ok(p) = std::env::var("NATTER_NATS_SERVER") {
            return Ok(PathBuf::from(p));
        }
        let project = Path::new(PROJECT_INSTALL);
        if project.exists() {
            return Ok(project.to_path_buf());
        }
        std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("nats-server"))
                    .find(|p| p.exists())
            })
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "nats-server not found: run scripts/install-deps (installs the pinned \
                     version into .tools/bin) or set NATTER_NATS_SERVER"
                )
            })
    }

    /// Starts a server and waits until it accepts clients.
    pub fn start(options: NatsServerOptions) -> anyhow::Result<Self> {
        Self::start_node(options, None)
    }

    /// Starts a node of a cluster and waits until it accepts clients (its JetStream may still
    /// be electing leaders: see `monitor_port`).
    pub fn start_clustered(
        options: NatsServerOptions,
        cluster: ClusterOptions,
    ) -> anyhow::Result<Self> {
        Self::start_node(options, Some(cluster))
    }

    fn start_node(
        options: NatsServerOptions,
        cluster: Option<ClusterOptions>,
    ) -> anyhow::Result<Self> {
        let run_dir = tempfile::tempdir()?;
        let (child, ports) = spawn(&options, cluster.as_ref(), None, run_dir.path())?;
        Ok(Self {
            child: Some(child),
            options,
            cluster,
            port: ports.client,
            ports,
            _run_dir: run_dir,
        })
    }

    /// This node's route URL, for the other nodes of its cluster.
    pub fn route_url(&self) -> Option<String> {
        let port = self.ports.cluster?;
        Some(format!("nats-route://127.0.0.1:{port}"))
    }

    /// The monitoring port of a clustered node (`GET /healthz`).
    pub fn monitor_port(&self) -> Option<u16> {
        self.ports.monitor
    }

    /// Replaces the routes to the other nodes; used at the next restart.
    pub fn set_routes(&mut self, routes: Vec<String>) {
        if let Some(cluster) = &mut self.cluster {
            cluster.routes = routes;
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running (not killed or stopped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The credentials the server enforces.
    pub fn auth(&self) -> &NatsAuth {
        &self.options.auth
    }

    /// The bus settings with which `role` reaches this server (default stream settings).
    pub fn bus(&self, role: crate::nats_auth::Role) -> crate::BusConfig {
        let base = crate::BusConfig {
            nats_url: self.url(),
            ..Default::default()
        };
        self.options.auth.bus_config(&base, role)
    }

    /// A connection to this server as `role`.
    pub async fn client_as(
        &self,
        role: crate::nats_auth::Role,
    ) -> anyhow::Result<async_nats::Client> {
        crate::bus::connect(&self.bus(role), role, role.name()).await
    }

    /// Where its JetStream keeps its data.
    pub fn store_dir(&self) -> &std::path::Path {
        &self.options.store_dir
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops gracefully (SIGTERM) and waits up to `grace` before killing.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(mut child) = self.child.take() {
            // SAFETY-free: sending a signal to our own child by pid.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Puts the server in lame-duck mode, as `nats-server --signal ldm` does: it stops
    /// leading its streams, moves its clients to the other nodes over its
    /// `lame_duck_duration`, then exits. Waits at most `patience` for the exit.
    pub fn lame_duck(&mut self, patience: Duration) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            anyhow::bail!("not running");
        };
        let status = Command::new("kill")
            .arg("-USR2")
            .arg(child.id().to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -USR2 failed");
        let deadline = Instant::now() + patience;
        while child.try_wait()?.is_none() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "not out of lame-duck mode in {patience:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = None;
        Ok(())
    }

    /// Restarts on the same ports with the same store, as an operator's restart would.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let mut options = self.options.clone();
        options.port = Some(self.port);
        let mut cluster = self.cluster.clone();
        if let Some(cluster) = &mut cluster {
            cluster.port = self.ports.cluster;
        }
        let (child, ports) = spawn(
            &options,
            cluster.as_ref(),
            self.ports.monitor,
            self._run_dir.path(),
        )?;
        self.child = Some(child);
        self.port = ports.client;
        self.ports = ports;
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fixed port, or -1: nats-server picks a free one.
fn port_or_random(port: Option<u16>) -> i32 {
    port.map(i32::from).unwrap_or(-1)
}

fn spawn(
    options: &NatsServerOptions,
    cluster: Option<&ClusterOptions>,
    monitor_port: Option<u16>,
    run_dir: &Path,
) -> anyhow::Result<(Child, Ports)> {
    std::fs::create_dir_all(&options.store_dir)?;
    let conf = run_dir.join("nats.conf");
    let mut text = format!(
        "host: 127.0.0.1\nport: {port}\nmax_payload: 1MB\n\
         jetstream {{\n  store_dir: {store:?}\n  sync_interval: {sync}\n{limit}}}\n",
        port = port_or_random(options.port),
        store = options.store_dir,
        sync = options.sync_interval,
        limit = options
            .max_file_store
            .map(|bytes| format!("  max_file_store: {bytes}\n"))
            .unwrap_or_default(),
    );
    // The generated files are inlined rather than included: nats-server resolves an include
    // relative to the including file.
    text.push_str(&std::fs::read_to_string(options.auth.server_conf())?);
    if let Some(cluster) = cluster {
        let routes: Vec<String> = cluster.routes.iter().map(|r| format!("{r:?}")).collect();
        text.push_str(&format!(
            "server_name: {server:?}\nhttp_port: {monitor}\n\
             lame_duck_duration: \"30s\"\nlame_duck_grace_period: \"1s\"\n\
             cluster {{\n  name: {name:?}\n  host: 127.0.0.1\n  port: {port}\n  \
             routes: [{routes}]\n{tls}}}\n",
            server = cluster.server_name,
            monitor = port_or_random(monitor_port),
            name = cluster.name,
            port = port_or_random(cluster.port),
            routes = routes.join(", "),
            tls = std::fs::read_to_string(options.auth.cluster_tls_conf())?,
        ));
    }
    std::fs::write(&conf, text)?;
    let ports_dir = run_dir.join(format!("ports-{}", ulid_like()));
    std::fs::create_dir_all(&ports_dir)?;
    let binary = NatsServer::binary()?;
    let mut child = Command::new(&binary)
        .arg("-c")
        .arg(&conf)
        .arg("--ports_file_dir")
        .arg(&ports_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("NATTER_NATS_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", binary.display()))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("nats-server exited at startup with {status}");
        }
        if let Some(ports) = read_ports_file(&ports_dir)
            && std::net::TcpStream::connect(("127.0.0.1", ports.client)).is_ok()
        {
            return Ok((child, ports));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("nats-server did not start within 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// nats-server writes `{"nats":["nats://127.0.0.1:PORT"],"cluster":[...],"monitoring":[...]}`
/// once it listens.
fn read_ports_file(dir: &Path) -> Option<Ports> {
    let entry = std::fs::read_dir(dir).ok()?.flatten().next()?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let port = |kind: &str| -> Option<u16> {
        let url = v.get(kind)?.get(0)?.as_str()?;
        url.rsplit(':').next()?.parse().ok()
    };
    Some(Ports {
        client: port("nats")?,
        cluster: port("cluster"),
        monitor: port("monitoring"),
    })
}

fn ulid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}
