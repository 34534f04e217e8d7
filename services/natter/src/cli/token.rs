//! `natter token`: a token for a user, signed with the configured (or local dev) secret.
//! Prints the bare token, or with `--json` `{"token", "user", "expires_at"}` (seconds since
//! the Unix epoch).

use anyhow::Context;

use crate::config::NatterConfig;

pub fn run(user: &str, ttl_secs: u64, mut config: NatterConfig, json: bool) -> anyhow::Result<()> {
    protocol::UserId::new(user).context("invalid user id")?;
    config.resolve_secret()?;
    let (token, exp) = gateway::mint_token_expiring(&config.gateway.jwt_secret, user, ttl_secs);
    if json {
        let out = serde_json::json!({"token": token, "user": user, "expires_at": exp});
        println!("{out}");
    } else {
        println!("{token}");
    }
    Ok(())
}
