//! The history service: a durable consumer that writes every message to the history store,
//! and history queries (request/reply, and read markers from receipts) answered from a moka
//! cache in front of the store.

pub mod cache;
mod config;
mod queries;
mod service;
pub mod store;
mod writer;

pub use cache::{CacheConfig, HistoryCache};
pub use config::{HistoryConfig, StoreKind};
pub use service::History;
pub use store::embedded::EmbeddedStore;
pub use store::scylla::{ScyllaConfig, ScyllaStore};
pub use store::{Page, Role, Store, StoreError};
