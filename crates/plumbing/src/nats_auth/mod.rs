//! natter's NATS credentials: one nkey identity per role (`roles`), a certificate authority
//! and a server certificate for TLS, and the nats-server configuration that ties them
//! together. `natter nats-auth` writes them for operators; the all-in-one and the tests make
//! theirs the same way, so every run of natter has authentication, permissions and TLS on.
//!
//! A directory holds:
//!
//! | file | what |
//! |---|---|
//! | `ca.pem`, `ca-key.pem` | the CA that signs the server certificate; clients trust `ca.pem` |
//! | `server.pem`, `server-key.pem` | the servers' certificate (clients and cluster routes) |
//! | `<role>.nk` | the nkey seed of a role (`gateway`, `chat`, `history`, `notifier`, `operator`) |
//! | `integrator-<name>.nk`, `integrator-<name>.users` | an integrator's seed and its users |
//! | `auth.conf` | `include` it in nats-server's configuration: TLS, the account, the users |
//! | `cluster-tls.conf` | `include` it inside a `cluster {}` block: mutual TLS between routes |
//!
//! Secrets (keys and seeds) are written 0600 in a 0700 directory. Existing keys are kept, so
//! running the generator again only adds what is missing and rewrites the two `.conf` files.

mod roles;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use protocol::UserId;
pub use roles::{Integrator, Permissions, Role};

/// The account every natter identity belongs to (streams and buckets live in it).
pub const ACCOUNT: &str = "NATTER";

/// A directory of generated credentials.
#[derive(Debug, Clone)]
pub struct NatsAuth {
    dir: PathBuf,
}

impl NatsAuth {
    /// Makes whatever is missing in `dir`: the CA, a server certificate valid for `hosts`
    /// (besides `localhost`, `127.0.0.1` and `::1`), a seed per role and per integrator, and
    /// the configuration files. `integrators` are added to those already in `dir`.
    pub fn ensure(
        dir: &Path,
        hosts: &[String],
        integrators: &[Integrator],
    ) -> anyhow::Result<Self> {
        create_private_dir(dir)?;
        let auth = Self {
            dir: dir.canonicalize()?,
        };
        auth.ensure_certificates(hosts)?;
        for role in Role::ALL {
            ensure_seed(&auth.dir.join(format!("{}.nk", role.name())))?;
        }
        for integrator in integrators {
            ensure_seed(&auth.integrator_seed(&integrator.name))?;
            let users: Vec<&str> = integrator.users.iter().map(UserId::as_str).collect();
            write_private(
                &auth
                    .dir
                    .join(format!("integrator-{}.users", integrator.name)),
                users.join("\n").as_bytes(),
            )?;
        }
        auth.write_server_conf()?;
        Ok(auth)
    }

    /// Credentials made earlier in `dir`, without writing anything.
    pub fn open(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The seed file of `role`.
    pub fn seed_file(&self, role: Role) -> PathBuf {
        self.dir.join(format!("{}.nk", role.name()))
    }

    /// The seed file of an integrator.
    pub fn integrator_seed(&self, name: &str) -> PathBuf {
        self.dir.join(format!("integrator-{name}.nk"))
    }

    /// The CA certificate clients verify servers with.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The file to `include` at the top level of nats-server's configuration.
    pub fn server_conf(&self) -> PathBuf {
        self.dir.join("auth.conf")
    }

    /// The file to `include` inside the `cluster {}` block.
    pub fn cluster_tls_conf(&self) -> PathBuf {
        self.dir.join("cluster-tls.conf")
    }

    /// The bus settings for a service of `role` (URL and stream settings from `base`).
    pub fn bus_config(&self, base: &crate::bus::BusConfig, role: Role) -> crate::bus::BusConfig {
        crate::bus::BusConfig {
            nkey_file: Some(self.seed_file(role)),
            tls_ca_file: Some(self.ca_file()),
            ..base.clone()
        }
    }

    /// The integrators recorded in the directory.
    pub fn integrators(&self) -> anyhow::Result<Vec<Integrator>> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let Some(name) = name
                .strip_prefix("integrator-")
                .and_then(|n| n.strip_suffix(".users"))
            else {
                continue;
            };
            let users = std::fs::read_to_string(&path)?
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| UserId::new(l.trim()).map_err(|e| anyhow::anyhow!("{path:?}: {e}")))
                .collect::<anyhow::Result<_>>()?;
            found.push(Integrator {
                name: name.to_string(),
                users,
            });
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    fn ensure_certificates(&self, hosts: &[String]) -> anyhow::Result<()> {
        let (ca_key_file, cert_file) = (self.dir.join("ca-key.pem"), self.dir.join("server.pem"));
        if ca_key_file.exists() && cert_file.exists() {
            return Ok(());
        }
        let ca_key = match std::fs::read_to_string(&ca_key_file) {
            Ok(pem) => rcgen::KeyPair::from_pem(&pem)?,
            Err(_) => rcgen::KeyPair::generate()?,
        };
        let ca_params = ca_params()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        write_private(&ca_key_file, ca_key.serialize_pem().as_bytes())?;
        std::fs::write(self.ca_file(), ca_cert.pem())?;

        let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .iter()
            .map(|h| h.to_string())
            .collect();
        names.extend(hosts.iter().cloned());
        names.sort();
        names.dedup();
        let mut params = rcgen::CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "natter NATS server");
        // Routes are TLS clients of each other, so the one certificate serves both ends.
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = ca_params.not_before;
        params.not_after = ca_params.not_after;
        let key = rcgen::KeyPair::generate()?;
        let issuer = rcgen::Issuer::new(ca_params, &ca_key);
        let cert = params.signed_by(&key, &issuer)?;
        write_private(
            &self.dir.join("server-key.pem"),
            key.serialize_pem().as_bytes(),
        )?;
        std::fs::write(&cert_file, cert.pem())?;
        Ok(())
    }

    /// Writes `auth.conf` and `cluster-tls.conf` from the roles' permissions and the seeds.
    fn write_server_conf(&self) -> anyhow::Result<()> {
        let mut users = String::new();
        for role in Role::ALL {
            let key = public_key(&self.seed_file(role))?;
            user_entry(&mut users, role.name(), &key, role.permissions());
        }
        for integrator in self.integrators()? {
            let key = public_key(&self.integrator_seed(&integrator.name))?;
            let label = format!("integrator {}", integrator.name);
            user_entry(&mut users, &label, &key, integrator.permissions());
        }
        let tls = |extra: &str| {
            format!(
                "  cert_file: {cert:?}\n  key_file: {key:?}\n  ca_file: {ca:?}\n  timeout: 5\n{extra}",
                cert = self.dir.join("server.pem"),
                key = self.dir.join("server-key.pem"),
                ca = self.ca_file(),
            )
        };
        let conf = format!(
            "# Generated by natter (plumbing::nats_auth); run `natter nats-auth` to regenerate.\n\
             # TLS for clients, and one nkey user per natter role with the permissions of\n\
             # subjects.md. Everything not allowed is denied.\n\
             tls {{\n{tls}}}\n\n\
             accounts {{\n  {ACCOUNT}: {{\n    jetstream: enabled\n    users: [\n{users}    ]\n  }}\n}}\n",
            tls = tls(""),
        );
        std::fs::write(self.server_conf(), conf)?;
        let cluster = format!(
            "# Generated by natter: mutual TLS between cluster routes (include inside cluster {{}}).\n\
             tls {{\n{tls}}}\n",
            tls = tls("  verify: true\n"),
        );
        std::fs::write(self.cluster_tls_conf(), cluster)?;
        Ok(())
    }
}

/// The CA's parameters. They are the same every time, so a CA key kept from an earlier run
/// signs certificates its `ca.pem` verifies.
fn ca_params() -> anyhow::Result<rcgen::CertificateParams> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "natter NATS CA");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(10 * 365);
    Ok(params)
}

fn user_entry(out: &mut String, label: &str, nkey: &str, permissions: Permissions) {
    let p = permissions.normalised();
    let list = |subjects: &[String]| {
        subjects
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = write!(
        out,
        "      # {label}\n      {{ nkey: {nkey:?}, permissions: {{\n        \
         publish: {{ allow: [{publish}] }}\n        \
         subscribe: {{ allow: [{subscribe}] }}\n{responses}      }} }}\n",
        publish = list(&p.publish),
        subscribe = list(&p.subscribe),
        responses = if p.allow_responses {
            "        allow_responses: true\n"
        } else {
            ""
        },
    );
}

fn ensure_seed(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let seed = nkeys::KeyPair::new_user()
        .seed()
        .map_err(|e| anyhow::anyhow!("nkey seed: {e}"))?;
    write_private(path, seed.as_bytes())
}

/// The public key (`U…`) of the seed in `path`.
pub fn public_key(path: &Path) -> anyhow::Result<String> {
    let seed = read_seed(path)?;
    let pair =
        nkeys::KeyPair::from_seed(&seed).map_err(|e| anyhow::anyhow!("{path:?}: bad seed: {e}"))?;
    Ok(pair.public_key())
}

/// The seed in a `.nk` file (the file holds the seed alone, as `nsc` and natter write it).
pub fn read_seed(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the NATS seed file {}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("SU"))
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("{} holds no user seed (SU…)", path.display()))
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes a secret readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_private_and_kept_across_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth");
        let bot = Integrator {
            name: "helpdesk".into(),
            users: vec![UserId::new("bot").unwrap()],
        };
        let auth = NatsAuth::ensure(&path, &[], std::slice::from_ref(&bot)).unwrap();
        let chat_key = public_key(&auth.seed_file(Role::Chat)).unwrap();
        let ca = std::fs::read_to_string(auth.ca_file()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o700);
            for file in ["chat.nk", "operator.nk", "ca-key.pem", "server-key.pem"] {
                assert_eq!(mode(&path.join(file)), 0o600, "{file}");
            }
        }
        let again = NatsAuth::ensure(&path, &[], &[]).unwrap();
        assert_eq!(public_key(&again.seed_file(Role::Chat)).unwrap(), chat_key);
        assert_eq!(std::fs::read_to_string(again.ca_file()).unwrap(), ca);
        assert_eq!(again.integrators().unwrap(), [bot]);
        let conf = std::fs::read_to_string(again.server_conf()).unwrap();
        assert!(conf.contains(&chat_key));
        assert!(conf.contains("\"natter.chat.send.bot\""));
        let seed = read_seed(&again.seed_file(Role::Chat)).unwrap();
        assert!(
            !conf.contains(&seed),
            "no seed in the server's configuration"
        );
    }
}
