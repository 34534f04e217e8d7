//! Real nats-servers for tests: one on a random port with a temporary store ([`TestNats`]),
//! and the NATS a stack runs on, one server or a cluster ([`StackNats`]). Every server runs
//! with natter's identities, permissions and TLS, as production does: services connect as
//! their roles, tests inspect as the operator. Killed and deleted on drop, and a server
//! dropped after a natter service was refused a subject fails the test.

use plumbing::BusConfig;
use plumbing::nats_auth::{Integrator, NatsAuth, Role};
use plumbing::nats_server::{NatsServer, NatsServerOptions};
use protocol::UserId;

use crate::TestCluster;

/// The integrator every test server knows: it may act as [`TEST_BOT`] only.
pub const TEST_INTEGRATOR: &str = "helpdesk";
/// The user [`TEST_INTEGRATOR`] speaks for.
pub const TEST_BOT: &str = "bot";

/// Credentials for a test server (or cluster), in `dir`.
pub fn test_auth(dir: &std::path::Path) -> NatsAuth {
    let bot = Integrator {
        name: TEST_INTEGRATOR.into(),
        users: vec![UserId::new(TEST_BOT).expect("valid id")],
    };
    NatsAuth::ensure(dir, &[], &[bot]).expect("NATS credentials")
}

/// Fails the test if a natter service was refused a NATS subject (unless it fails anyway).
pub(crate) fn assert_no_violations() {
    if !std::thread::panicking() {
        let violations = plumbing::bus::permission_violations();
        assert_eq!(
            violations, 0,
            "NATS refused {violations} subjects to natter services: a role lacks a permission \
             (see the NATS errors in the log, and plumbing::nats_auth::roles)"
        );
    }
}

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
            sync_interval: sync_interval.into(),
            ..NatsServerOptions::scratch(
                store.path().join("jetstream"),
                test_auth(&store.path().join("auth")),
            )
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

    /// The bus settings with which `role` reaches this server.
    pub fn bus(&self, role: Role) -> BusConfig {
        self.server.bus(role)
    }

    /// A connection as the operator (who may do anything), to inspect or disturb.
    pub async fn client(&self) -> async_nats::Client {
        self.client_as(Role::Operator).await
    }

    /// A connection as `role`.
    pub async fn client_as(&self, role: Role) -> async_nats::Client {
        plumbing::bus::connect(&self.bus(role), role, "test")
            .await
            .expect("connect to test NATS")
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        assert_no_violations();
    }
}

/// The NATS a stack runs on: one server, or the nodes of a cluster.
pub enum StackNats {
    One(Box<TestNats>),
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

    /// The credentials the server (every node) enforces.
    pub fn auth(&self) -> &NatsAuth {
        match self {
            Self::One(nats) => nats.server.auth(),
            Self::Cluster(cluster) => cluster.nodes[0].auth(),
        }
    }

    /// A connection as the operator (who may do anything), to inspect or disturb.
    pub async fn client(&self) -> async_nats::Client {
        let base = BusConfig {
            nats_url: self.url(),
            ..BusConfig::default()
        };
        let bus = self.auth().bus_config(&base, Role::Operator);
        plumbing::bus::connect(&bus, Role::Operator, "test")
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
