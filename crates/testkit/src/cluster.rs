//! A nats-server cluster on loopback for tests: every node with JetStream and its own
//! temporary store, random client and monitoring ports, route ports picked free at start and
//! kept across restarts; a node can be killed with SIGKILL and restarted on the same store.

use std::time::{Duration, Instant};

use plumbing::nats_server::{ClusterOptions, NatsServer, NatsServerOptions};

/// How long a node may take to start, or to have its JetStream current again.
const NODE_PATIENCE: Duration = Duration::from_secs(60);

/// A running cluster; every node is killed on drop and the stores are deleted. Routes use
/// mutual TLS with the test credentials.
pub struct TestCluster {
    pub nodes: Vec<NatsServer>,
    _stores: tempfile::TempDir,
}

impl TestCluster {
    /// Starts `size` nodes and waits until JetStream is current on all of them.
    pub async fn start(size: usize, sync_interval: &str) -> Self {
        let stores = tempfile::tempdir().expect("temp dir");
        let auth = crate::harness::test_auth(&stores.path().join("auth"));
        let route_ports = free_ports(size);
        let routes: Vec<String> = route_ports
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect();
        let mut nodes = Vec::with_capacity(size);
        for (i, port) in route_ports.iter().enumerate() {
            let options = NatsServerOptions {
                sync_interval: sync_interval.into(),
                ..NatsServerOptions::scratch(
                    stores.path().join(format!("n{}", i + 1)),
                    auth.clone(),
                )
            };
            let cluster = ClusterOptions {
                name: "natter".into(),
                server_name: format!("n{}", i + 1),
                port: Some(*port),
                routes: routes.clone(),
            };
            let node = blocking(|| NatsServer::start_clustered(options, cluster))
                .expect("start nats-server node (run scripts/install-deps)");
            nodes.push(node);
        }
        let cluster = Self {
            nodes,
            _stores: stores,
        };
        for i in 0..size {
            cluster.wait_current(i).await;
        }
        cluster
    }

    /// Every node's client URL, comma separated (what services are configured with).
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(|n| n.url()).collect();
        urls.join(",")
    }

    /// Kills node `i` with SIGKILL, as a crash would.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Puts node `i` in lame-duck mode and waits until it has exited (a clustered node's
    /// `lame_duck_duration` is 30 s, the least nats-server allows).
    pub async fn lame_duck(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        blocking(|| node.lame_duck(Duration::from_secs(60))).expect("lame-duck mode");
    }

    /// Restarts node `i` on its ports and store, and waits until its JetStream is current.
    pub async fn restart(&mut self, i: usize) {
        let routes = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .filter_map(|(_, n)| n.route_url())
            .collect();
        let node = &mut self.nodes[i];
        node.set_routes(routes);
        blocking(|| node.restart()).expect("restart nats-server node");
        self.wait_current(i).await;
    }

    /// Waits until node `i` reports healthy: JetStream enabled, in contact with the meta
    /// leader, and every stream and consumer replica on it current.
    pub async fn wait_current(&self, i: usize) {
        let port = self.nodes[i].monitor_port().expect("clustered node");
        let deadline = Instant::now() + NODE_PATIENCE;
        loop {
            if healthz_ok(port).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node n{} not current within {NODE_PATIENCE:?}",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        crate::harness::assert_no_violations();
    }
}

/// Whether `GET /healthz` on the monitoring port answers 200.
async fn healthz_ok(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let req = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out.starts_with("HTTP/1.1 200")
}

/// `n` distinct free ports on loopback. The listeners are closed before the nodes bind, so
/// another process could take one in between; the node would then fail to start, loudly.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// Runs blocking process management without stalling the other tasks of a multi-threaded
/// test runtime (a current-thread runtime just blocks, as `TestNats::start` does).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
