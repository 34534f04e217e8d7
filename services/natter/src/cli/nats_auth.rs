//! `natter nats-auth`: makes (or completes) the NATS credentials of a deployment: a CA and
//! a server certificate, one nkey seed per natter role and per integrator, and the
//! `auth.conf` / `cluster-tls.conf` that nats-server includes. See docs/security.md.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use plumbing::nats_auth::{Integrator, NatsAuth, Role};
use protocol::UserId;

use crate::config::NatterConfig;

#[derive(Args)]
pub struct NatsAuthArgs {
    /// Where to write (default: `data_dir/nats-auth`, the all-in-one's). Existing keys,
    /// seeds and certificates are kept; the two `.conf` files are rewritten.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// A host name or address the servers are reached at, besides localhost (repeatable:
    /// every node of a cluster). Only used when the server certificate is first made.
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// An integrator that may act as the listed users only: `NAME=USER[,USER…]`
    /// (repeatable). Writes `integrator-NAME.nk`.
    #[arg(long = "integrator", value_parser = parse_integrator)]
    integrators: Vec<Integrator>,
}

fn parse_integrator(arg: &str) -> Result<Integrator, String> {
    let (name, users) = arg.split_once('=').ok_or("expected NAME=USER[,USER…]")?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!("{name:?}: a name is letters, digits, - and _"));
    }
    let users = users
        .split(',')
        .map(|u| UserId::new(u.trim()).map_err(|e| format!("{u:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Integrator {
        name: name.into(),
        users,
    })
}

pub fn run(args: NatsAuthArgs, config: &NatterConfig) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(|| config.nats_auth_dir());
    let auth = NatsAuth::ensure(&dir, &args.hosts, &args.integrators)
        .with_context(|| format!("writing NATS credentials to {}", dir.display()))?;
    let dir = auth.dir();
    println!("NATS credentials in {}", dir.display());
    println!("  nats-server: include {}", auth.server_conf().display());
    println!(
        "               and, in a cluster {{}} block, {}",
        auth.cluster_tls_conf().display()
    );
    for role in Role::ALL {
        println!(
            "  {:<9} bus.nkey_file = {}",
            role.name(),
            auth.seed_file(role).display()
        );
    }
    for integrator in auth.integrators()? {
        println!(
            "  integrator {} (as {}): {}",
            integrator.name,
            integrator
                .users
                .iter()
                .map(UserId::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            auth.integrator_seed(&integrator.name).display()
        );
    }
    println!(
        "  every service: bus.tls_ca_file = {}",
        auth.ca_file().display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrators_are_parsed_and_checked() {
        let i = parse_integrator("helpdesk=bot,support-1").unwrap();
        assert_eq!(i.name, "helpdesk");
        assert_eq!(i.users.len(), 2);
        assert!(parse_integrator("helpdesk").is_err());
        assert!(parse_integrator("help desk=bot").is_err());
        assert!(parse_integrator("helpdesk=bot.*").is_err());
        assert!(parse_integrator("=bot").is_err());
    }
}
