//! The notifier: push digests for users with no device online. It reads the offline-message
//! events the chat service publishes (made durable by the `NATTER_OFFLINE` stream), batches
//! them per user over a window, drops a user's window when they come online, and hands one
//! digest per user and window to a provider (`log` or `webhook`) with the user's push tokens.

mod batcher;
mod config;
mod delivery;
mod digest;
mod metrics;
mod provider;
mod service;
mod webhook;

pub use config::{NotifierConfig, ProviderKind};
pub use digest::{ConversationDigest, DigestPayload, PushToken};
pub use service::{Notifier, run};
