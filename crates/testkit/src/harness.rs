//! Real nats-servers for tests: one on a random port with a temporary store ([`TestNats`]),
//! and the NATS a stack runs on, one server or a cluster ([`StackNats`]). Killed and deleted
//! on drop.

use plumbing::nats_server::{NatsServer, NatsServerOptions};

use crate::TestCluster;

/// A nats-server for one test: JetStream on, random port, store in a temp dir; killed and
/// deleted on drop.
pub struct TestNats {
    pub server: NatsServer,
    _store: tempfile::TempDir,
}

impl TestNats {
    pub fn start() -> Self {
        Self::start_with_sync("2m")
    }

    pub fn start_with_sync(sync_interval: &str) -> Self {
        let store = tempfile::tempdir().expect("temp dir");
        let server = NatsServer::start(NatsServerOptions {
            store_dir: store.path().join("jetstream"),
            port: None,
            sync_interval: sync_interval.into(),
        })
        .expect("start nats-server (run scripts/install-deps)");
        Self {
            server,
            _store: store,
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub async fn client(&self) -> async_nats::Client {
        plumbing::bus::connect(&self.url(), "test")
            .await
            .expect("connect to test NATS")
    }
}

/// The NATS a stack runs on: one server, or the nodes of a cluster.
pub enum StackNats {
    One(TestNats),
    Cluster(TestCluster),
}

impl StackNats {
    /// What services connect to: the server's URL, or every node's, comma separated.
    pub fn url(&self) -> String {
        match self {
            Self::One(nats) => nats.url(),
            Self::Cluster(cluster) => cluster.urls(),
        }
    }

    pub async fn client(&self) -> async_nats::Client {
        plumbing::bus::connect(&self.url(), "test")
            .await
            .expect("connect to test NATS")
    }

    /// The single server (to kill or restart it). Panics for a cluster.
    pub fn server(&mut self) -> &mut NatsServer {
        match self {
            Self::One(nats) => &mut nats.server,
            Self::Cluster(_) => panic!("this stack runs on a cluster"),
        }
    }

    /// The cluster. Panics for a single server.
    pub fn cluster(&mut self) -> &mut TestCluster {
        match self {
            Self::Cluster(cluster) => cluster,
            Self::One(_) => panic!("this stack runs on a single server"),
        }
    }
}
