//! The all-in-one configuration: each service's own section plus what the binary adds.

use std::path::PathBuf;

use anyhow::Context;
use chat::ChatConfig;
use gateway::GatewayConfig;
use history::HistoryConfig;
use notifier::NotifierConfig;
use plumbing::BusConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct NatterConfig {
    pub bus: BusConfig,
    pub gateway: GatewayConfig,
    pub chat: ChatConfig,
    /// The history service; its embedded store lives in `data_dir` unless
    /// `history.embedded_path` is set to another place.
    pub history: HistoryConfig,
    /// The notifier; the `log` provider unless configured otherwise.
    pub notifier: NotifierConfig,
    /// Where the local nats-server keeps its data, and the dev secret is kept.
    pub data_dir: PathBuf,
    /// JetStream `sync_interval` of the local nats-server: `always` (fsync before every ack,
    /// the default) or a duration such as `2m`. See docs/operations.md.
    pub nats_sync_interval: String,
}

impl Default for NatterConfig {
    fn default() -> Self {
        Self {
            bus: BusConfig::default(),
            // The all-in-one is how people try natter: it serves the web client at `/`.
            gateway: GatewayConfig {
                web_client: true,
                ..GatewayConfig::default()
            },
            chat: ChatConfig::default(),
            history: HistoryConfig::default(),
            notifier: NotifierConfig::default(),
            data_dir: PathBuf::from(".data"),
            nats_sync_interval: "always".into(),
        }
    }
}

impl NatterConfig {
    /// The embedded history store's file.
    pub fn history_path(&self) -> PathBuf {
        if self.history.embedded_path == HistoryConfig::default().embedded_path {
            self.data_dir.join("history.redb")
        } else {
            self.history.embedded_path.clone()
        }
    }

    /// The configured secret, or the dev secret `natter up` keeps in `data_dir`; never creates
    /// one (a client minting with a new secret would only be refused).
    pub fn existing_secret(&self) -> Option<String> {
        if !self.gateway.jwt_secret.is_empty() {
            return Some(self.gateway.jwt_secret.clone());
        }
        let secret = std::fs::read_to_string(self.data_dir.join("dev-secret")).ok()?;
        Some(secret.trim().to_string()).filter(|s| !s.is_empty())
    }

    /// Uses the configured secret, or on a local install a random dev secret kept in
    /// `data_dir/dev-secret` so that `natter token` and `natter up` agree.
    pub fn resolve_secret(&mut self) -> anyhow::Result<SecretSource> {
        if !self.gateway.jwt_secret.is_empty() {
            return Ok(SecretSource::Configured);
        }
        let path = self.data_dir.join("dev-secret");
        if let Ok(secret) = std::fs::read_to_string(&path) {
            self.gateway.jwt_secret = secret.trim().to_string();
            return Ok(SecretSource::LocalDev);
        }
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating {}", self.data_dir.display()))?;
        let secret = format!("{}{}", ulid::Ulid::new(), ulid::Ulid::new());
        std::fs::write(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
        self.gateway.jwt_secret = secret;
        Ok(SecretSource::LocalDev)
    }
}

/// Where the token secret came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource {
    /// An operator set `gateway.jwt_secret`: tokens come from their issuer only.
    Configured,
    /// natter generated it for a local install (`data_dir/dev-secret`).
    LocalDev,
}
