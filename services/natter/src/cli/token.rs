//! `natter token`: a token for a user, signed with the configured (or local dev) secret.

use anyhow::Context;

use crate::config::NatterConfig;

pub fn run(user: &str, ttl_secs: u64, mut config: NatterConfig) -> anyhow::Result<()> {
    protocol::UserId::new(user).context("invalid user id")?;
    config.resolve_secret()?;
    println!(
        "{}",
        gateway::mint_token(&config.gateway.jwt_secret, user, ttl_secs)
    );
    Ok(())
}
