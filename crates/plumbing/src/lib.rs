//! Service plumbing shared by natter's services: configuration loading, telemetry, metrics,
//! the NATS connection and JetStream resources, the roles of a service and the skeleton every
//! service binary runs, shutdown signals, a managed nats-server and the credentials and
//! permissions of natter's NATS identities.

pub mod bus;
pub mod config;
pub mod kv_follow;
pub mod metrics;
pub mod nats_auth;
pub mod nats_server;
pub mod roles;
pub mod service;
pub mod shutdown;
pub mod telemetry;

pub use bus::BusConfig;
pub use metrics::{Counter, CounterVec, Gauge, GaugeVec, Histogram, Metrics, jetstream_error};
pub use nats_server::NatsServer;
