//! A nats-server child process with JetStream: started by the all-in-one binary when no NATS
//! URL is configured, and by tests on a random port with a temporary store. Killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
}

/// A running nats-server. Dropping it kills the process (the store is left in place).
pub struct NatsServer {
    child: Option<Child>,
    options: NatsServerOptions,
    port: u16,
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
        let run_dir = tempfile::tempdir()?;
        let (child, port) = spawn(&options, run_dir.path())?;
        Ok(Self {
            child: Some(child),
            options,
            port,
            _run_dir: run_dir,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
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

    /// Restarts on the same port with the same store, as an operator's restart would.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let mut options = self.options.clone();
        options.port = Some(self.port);
        let (child, port) = spawn(&options, self._run_dir.path())?;
        self.child = Some(child);
        self.port = port;
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(options: &NatsServerOptions, run_dir: &Path) -> anyhow::Result<(Child, u16)> {
    std::fs::create_dir_all(&options.store_dir)?;
    let conf = run_dir.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "host: 127.0.0.1\nport: {port}\nmax_payload: 1MB\n\
             jetstream {{\n  store_dir: {store:?}\n  sync_interval: {sync}\n}}\n",
            port = options.port.map(i32::from).unwrap_or(-1),
            store = options.store_dir,
            sync = options.sync_interval,
        ),
    )?;
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
        if let Some(port) = read_ports_file(&ports_dir)
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        {
            return Ok((child, port));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("nats-server did not start within 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// nats-server writes `{"nats":["nats://127.0.0.1:PORT"],...}` once it listens.
fn read_ports_file(dir: &Path) -> Option<u16> {
    let entry = std::fs::read_dir(dir).ok()?.flatten().next()?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = v.get("nats")?.get(0)?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
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
