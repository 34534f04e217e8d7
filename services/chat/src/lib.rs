//! The chat service: accepts sends (validation, de-duplication, ULID ids, persistence in the
//! messages stream, the SENT answer), routes persisted messages to the recipients' gateways
//! from a durable consumer, and routes delivered/seen receipts back to senders.
//! Instances share the work through a NATS queue group and a shared durable consumer.

mod attachments;
mod changes;
mod config;
mod group_ops;
mod history_page;
mod ids;
mod ingest;
mod metrics;
mod notify;
mod presence;
mod receipts;
mod refusal;
mod router;
mod routers;
mod service;
mod stream_order;
mod target;
mod typing;
mod undelivered;

pub use config::{ChatConfig, GroupAdds};
pub use metrics::ChatMetrics;
pub use presence::{Directory, Found, Route};
pub use service::{Chat, run};
