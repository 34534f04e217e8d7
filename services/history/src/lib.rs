//! The history service: a durable consumer that writes every message to the history store,
//! history queries (request/reply) answered from a moka cache in front of the store, and
//! receipts (markers, and telling group senders who received and read their messages).

pub mod cache;
mod config;
pub mod membership;
mod queries;
mod receipts;
mod refusal;
mod service;
mod states;
pub mod store;
mod writer;

pub use cache::{CacheConfig, HistoryCache};
pub use config::{HistoryConfig, StoreKind};
pub use membership::{Membership, StaticMembership};
pub use service::{History, run, start};
pub use store::embedded::EmbeddedStore;
pub use store::scylla::{ScyllaConfig, ScyllaStore};
pub use store::{Page, ReceiptMarkers, Store, StoreError};
