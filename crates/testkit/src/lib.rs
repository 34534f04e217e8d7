//! Test kit: a real nats-server on a random port with a temporary store, and natter's own
//! services on `127.0.0.1:0`, assembled by a builder that reads like the scenario:
//!
//! ```text
//! let stack = Stack::new().gateways(2).start().await;
//! let mut alice = stack.connect("alice", 0).await;
//! alice.send("bob", "c1", "hello").await?;
//! let sent = expect_sent(&mut alice, "c1").await;
//! ```
//!
//! | module | owns |
//! |---|---|
//! | `binaries` | the workspace's binaries, built for tests that run them as processes |
//! | `harness` | `TestNats` and `StackNats`: real nats-server processes |
//! | `cluster` | `TestCluster`: three clustered nats-servers, a node killed and restarted |
//! | `stack` | the `Stack` builder and the `Running*` handles on its services |
//! | `compose` | compose.yaml run as processes: commands, environment, mounts, health checks, names mapped to loopback |
//! | `expect` | waiting with a named patience: `within`, `eventually`, and the typed `expect_*` helpers that read the frames a test expects from a connection |
//! | `link` | `Link`: a relay that cuts one service off NATS |
//! | `rolling` | a rolling restart under load: users that reconnect elsewhere, every component restarted in turn, the pauses they saw |
//! | `traffic` | `Traffic`: retrying senders and recipients with a report |
//! | `webhook` | `WebhookReceiver`: the notifier's webhook, received |

mod binaries;
mod cluster;
pub mod compose;
mod expect;
mod harness;
mod link;
pub mod rolling;
mod stack;
mod traffic;
mod webhook;

pub use binaries::built;
pub use client;
pub use cluster::TestCluster;
/// The old name of [`expect_answer`], kept for `tools/natter-bench`.
pub use expect::expect_answer as answer;
pub use expect::{
    PATIENCE, Sent, Synced, create_group, eventually, expect_accepted, expect_answer,
    expect_closed, expect_conversations, expect_delivered, expect_error, expect_frame,
    expect_history, expect_message, expect_pong, expect_post, expect_presence, expect_push_token,
    expect_seen, expect_sent, expect_sent_or_error, expect_synced, expect_typing, expect_welcome,
    fetch_history, within,
};
pub use harness::{StackNats, TEST_BOT, TEST_INTEGRATOR, TestNats, test_auth};
pub use link::Link;
pub use stack::{
    RunningChat, RunningGateway, RunningHistory, RunningNotifier, SECRET, Stack, StackBuilder,
    http_get, metric_value,
};
pub use traffic::{Traffic, TrafficPlan, TrafficReport};
pub use webhook::{WebhookReceiver, reserve_port};
