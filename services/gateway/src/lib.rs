//! The WebSocket gateway: authenticates connections at the handshake, holds one `Session` per
//! device, registers presence, forwards client frames to the chat service and pushes the
//! deliveries addressed to it (`natter.gw.<id>.deliver`) to its local sessions.
//! It knows no routing logic.

mod attachments;
mod auth;
mod config;
mod dev_token;
mod handshake;
mod inbox;
mod local;
mod metrics;
mod origins;
mod outbox;
mod presence;
mod push_tokens;
mod quota;
mod refusal;
mod registry;
mod replay;
mod reregister;
mod server;
mod session;
mod state;
mod watchers;
mod web_client;

pub use auth::{Claims, encode_claims, mint_token, mint_token_expiring};
pub use config::GatewayConfig;
pub use server::{Gateway, run};
