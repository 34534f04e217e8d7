//! The all-in-one configuration: each service's own section plus what the binary adds.

use std::path::PathBuf;

use anyhow::Context;
use chat::ChatConfig;
use gateway::GatewayConfig;
use history::HistoryConfig;
use notifier::NotifierConfig;
use plumbing::BusConfig;
use plumbing::nats_auth::{NatsAuth, Role};
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
    /// Where `natter up` keeps the NATS credentials of its local nats-server (and where
    /// `natter nats-auth` writes by default): `data_dir/nats-auth`.
    pub fn nats_auth_dir(&self) -> PathBuf {
        self.data_dir.join("nats-auth")
    }

    /// The bus settings with which `role` connects: `bus` as configured when it names a seed
    /// file (`bus.nkey_file`), else `role`'s seed and the CA from the local credentials
    /// directory when there is one, else `bus` as it is.
    pub fn bus_as(&self, role: Role) -> anyhow::Result<BusConfig> {
        let dir = self.nats_auth_dir();
        if self.bus.nkey_file.is_some() || !dir.join(format!("{}.nk", role.name())).exists() {
            return Ok(self.bus.clone());
        }
        Ok(NatsAuth::open(&dir).bus_config(&self.bus, role))
    }

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
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let path = self.data_dir.join("dev-secret");
        // Only this user may read the secret (anyone who can, can be anyone) or the data.
        let private = |path: &std::path::Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("restricting {}", path.display()))
        };
        if let Ok(secret) = std::fs::read_to_string(&path) {
            private(&self.data_dir, 0o700)?;
            private(&path, 0o600)?;
            self.gateway.jwt_secret = secret.trim().to_string();
            return Ok(SecretSource::LocalDev);
        }
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating {}", self.data_dir.display()))?;
        private(&self.data_dir, 0o700)?;
        let secret = format!("{}{}", ulid::Ulid::new(), ulid::Ulid::new());
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        std::io::Write::write_all(&mut file, secret.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// Every configuration key, `section.key`, with its default as docs/configuration.md
    /// writes it: each service's own defaults, and the all-in-one's top-level keys.
    fn defaults() -> BTreeMap<String, String> {
        fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
            match value {
                serde_json::Value::Object(fields) => {
                    for (key, value) in fields {
                        flatten(&format!("{prefix}.{key}"), value, out);
                    }
                }
                leaf => {
                    let shown = match leaf {
                        serde_json::Value::String(s) if s.is_empty() => "\"\"".to_string(),
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Null => "none".to_string(),
                        other => other.to_string(),
                    };
                    out.insert(prefix.trim_start_matches('.').to_string(), shown);
                }
            }
        }
        let mut out = BTreeMap::new();
        let sections = [
            ("bus", serde_json::to_value(BusConfig::default())),
            ("gateway", serde_json::to_value(GatewayConfig::default())),
            ("chat", serde_json::to_value(ChatConfig::default())),
            ("history", serde_json::to_value(HistoryConfig::default())),
            ("notifier", serde_json::to_value(NotifierConfig::default())),
        ];
        for (section, value) in sections {
            flatten(section, &value.unwrap(), &mut out);
        }
        let all_in_one = NatterConfig::default();
        out.insert("data_dir".into(), all_in_one.data_dir.display().to_string());
        out.insert("nats_sync_interval".into(), all_in_one.nats_sync_interval);
        out
    }

    #[test]
    fn the_configuration_reference_lists_every_key_with_its_default() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
        let doc = std::fs::read_to_string(path).expect("docs/configuration.md");
        // Rows: | `key` | `default` | meaning |
        let mut documented = BTreeMap::new();
        for line in doc.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if let [_, key, default, ..] = cells.as_slice()
                && let (Some(key), Some(default)) = (
                    key.strip_prefix('`').and_then(|k| k.strip_suffix('`')),
                    default.strip_prefix('`').and_then(|d| d.strip_suffix('`')),
                )
            {
                documented.insert(key.to_string(), default.to_string());
            }
        }
        // Where the service binaries serve /metrics; not part of any section.
        documented.remove("metrics_addr");
        let expected = defaults();
        for (key, default) in &expected {
            assert_eq!(
                documented.get(key),
                Some(default),
                "docs/configuration.md: `{key}` (default `{default}`)"
            );
        }
        for key in documented.keys() {
            assert!(
                expected.contains_key(key),
                "docs/configuration.md names no key `{key}`"
            );
        }
    }

    #[test]
    fn the_dev_secret_and_the_data_dir_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let mut config = NatterConfig {
            data_dir: dir.path().join("data"),
            ..Default::default()
        };
        assert_eq!(config.resolve_secret().unwrap(), SecretSource::LocalDev);
        assert_eq!(mode(&config.data_dir), 0o700);
        assert_eq!(mode(&config.data_dir.join("dev-secret")), 0o600);

        // A secret left readable by an older natter is made private again.
        let secret = config.data_dir.join("dev-secret");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut again = NatterConfig {
            data_dir: config.data_dir.clone(),
            ..Default::default()
        };
        again.resolve_secret().unwrap();
        assert_eq!(again.gateway.jwt_secret, config.gateway.jwt_secret);
        assert_eq!(mode(&secret), 0o600);
    }
}
