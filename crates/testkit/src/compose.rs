//! compose.yaml, run without a container engine (tests/tests/compose.rs): every service
//! started as a process with exactly its command, environment and health check, in the order
//! its `depends_on` conditions say.
//!
//! What stands for a container (`ComposeRun`):
//! - **Addresses.** Each service gets its own loopback address (127.77.0.N). A service name
//!   in a URL, `name:port` or after `--host` becomes that address; `0.0.0.0` in its own
//!   values becomes its address and `127.0.0.1` a loopback address of its own (127.78.0.N),
//!   so a server bound to 127.0.0.1 is out of the other services' reach, as in a container.
//!   A health check runs inside the container: its `127.0.0.1` reaches both.
//! - **Files.** Each service gets a root directory. A bind mount is copied there (its text
//!   mapped like a value), a named volume is a directory shared by every service mounting it,
//!   and an absolute path under a mount point is prefixed with the root.
//! - **Images.** `build: .` runs the binaries the Dockerfile builds (built here from the same
//!   packages); `nats:*` runs the pinned nats-server, `prom/prometheus:*` the Prometheus of
//!   scripts/install-deps; `scylladb/*` is the test's Cassandra (`NATTER_SCYLLA_URI`, as for
//!   the CQL store's suite). A health check's `wget URL` is asked with `natter probe URL`.
//! - **Time.** Prometheus runs 60 times faster: scrapes and evaluations every second, and
//!   every duration of the alert rules in seconds instead of minutes (`fast_prometheus`).
//!
//! Anything else in compose.yaml fails with what this does not understand, so the file cannot
//! drift into something the tests no longer run.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::process::{Child, Command};

/// The repository's root.
pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// How long the whole stack may take to become healthy.
const START_PATIENCE: Duration = Duration::from_secs(90);

#[derive(Deserialize)]
pub struct ComposeFile {
    pub services: BTreeMap<String, ServiceDef>,
    #[serde(default)]
    pub volumes: BTreeMap<String, Option<serde_yaml_ng::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDef {
    pub image: Option<String>,
    pub build: Option<String>,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub depends_on: DependsOn,
    pub healthcheck: Option<HealthCheck>,
    pub restart: Option<String>,
    #[serde(default)]
    pub ports: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
pub enum DependsOn {
    #[default]
    None,
    Started(Vec<String>),
    Conditions(BTreeMap<String, Condition>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub condition: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
/// A health check; its timings are the engine's (the runner polls until its own deadline).
pub struct HealthCheck {
    pub test: Vec<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<u32>,
    pub start_period: Option<String>,
}

impl DependsOn {
    /// (service, condition) pairs; a bare list means `service_started`.
    pub fn conditions(&self) -> Vec<(String, String)> {
        match self {
            DependsOn::None => Vec::new(),
            DependsOn::Started(names) => names
                .iter()
                .map(|n| (n.clone(), "service_started".to_string()))
                .collect(),
            DependsOn::Conditions(map) => map
                .iter()
                .map(|(n, c)| (n.clone(), c.condition.clone()))
                .collect(),
        }
    }
}

pub fn read_compose() -> ComposeFile {
    let text = std::fs::read_to_string(format!("{ROOT}/compose.yaml")).expect("read compose.yaml");
    let mut value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("compose.yaml");
    value.apply_merge().expect("merge keys");
    serde_yaml_ng::from_value(value).unwrap_or_else(|e| panic!("compose.yaml: {e}"))
}

/// The binaries the Dockerfile's image holds (its `COPY --from=build` of target/release).
pub fn dockerfile_binaries() -> Vec<String> {
    let text = std::fs::read_to_string(format!("{ROOT}/Dockerfile")).expect("read Dockerfile");
    text.split_whitespace()
        .filter_map(|w| w.strip_prefix("/src/target/release/"))
        .map(str::to_string)
        .collect()
}

/// The packages the Dockerfile builds (`cargo build … -p a -p b`).
fn dockerfile_packages() -> Vec<String> {
    let text = std::fs::read_to_string(format!("{ROOT}/Dockerfile")).expect("read Dockerfile");
    let build = text
        .lines()
        .find(|l| l.contains("cargo build"))
        .expect("the Dockerfile runs cargo build");
    let words: Vec<&str> = build.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "-p")
        .map(|w| w[1].to_string())
        .collect()
}

/// The directory holding the binaries of the Dockerfile's packages, built here.
pub fn built_binaries() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let packages = dockerfile_packages();
        crate::built(&packages.iter().map(String::as_str).collect::<Vec<_>>())
    })
}

/// What runs a service here.
enum Runs {
    /// A binary of the image `build: .` makes.
    Natter,
    /// A program standing for the image (nats-server, Prometheus), given the service's
    /// command as its arguments, as the images' entry points are.
    Program(PathBuf),
    /// The CQL database: the test's own Cassandra, at this address.
    External(String),
}

/// A program of scripts/install-deps: `$var`, or `.tools/bin/name`.
pub fn installed(var: &str, name: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(ROOT).join(".tools/bin").join(name))
}

/// One service as this machine runs it.
struct Placed {
    name: String,
    def: ServiceDef,
    runs: Runs,
    /// Its address on the compose network.
    addr: Ipv4Addr,
    /// What it reaches as 127.0.0.1.
    loopback: Ipv4Addr,
    root: PathBuf,
}

/// compose.yaml placed on this machine, and its processes.
pub struct ComposeRun {
    services: Vec<Placed>,
    dir: tempfile::TempDir,
    variables: HashMap<String, String>,
    children: HashMap<String, Child>,
    healthy: Vec<String>,
}

impl ComposeRun {
    /// `file` placed on this machine, its services on 127.`block`.0.N (each test its own).
    pub fn new(file: ComposeFile, variables: HashMap<String, String>, block: u8) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let cql = std::env::var("NATTER_SCYLLA_URI").expect(
            "NATTER_SCYLLA_URI is not set: run scripts/test, which starts a local Cassandra \
             node (compose.yaml's scylla service runs as that node here)",
        );
        for volume in file.volumes.keys() {
            std::fs::create_dir_all(dir.path().join("volumes").join(volume)).unwrap();
        }
        let services = file
            .services
            .into_iter()
            .enumerate()
            .map(|(i, (name, def))| {
                let runs = match (&def.build, def.image.as_deref()) {
                    (Some(context), _) => {
                        assert_eq!(context, ".", "{name}: build context");
                        Runs::Natter
                    }
                    (None, Some(image)) if image.starts_with("nats:") => {
                        Runs::Program(installed("NATTER_NATS_SERVER", "nats-server"))
                    }
                    (None, Some(image)) if image.starts_with("prom/prometheus:") => {
                        Runs::Program(installed("NATTER_PROMETHEUS", "prometheus"))
                    }
                    (None, Some(image)) if image.starts_with("scylladb/") => {
                        Runs::External(cql.clone())
                    }
                    (None, image) => panic!("{name}: this test cannot run image {image:?}"),
                };
                let root = dir.path().join("roots").join(&name);
                std::fs::create_dir_all(&root).unwrap();
                Placed {
                    addr: Ipv4Addr::new(127, block, 0, i as u8 + 1),
                    loopback: Ipv4Addr::new(127, block + 1, 0, i as u8 + 1),
                    name,
                    def,
                    runs,
                    root,
                }
            })
            .collect();
        let run = Self {
            services,
            dir,
            variables,
            children: HashMap::new(),
            healthy: Vec::new(),
        };
        run.mount_all();
        run
    }

    fn service(&self, name: &str) -> &Placed {
        self.services
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no service {name} in compose.yaml"))
    }

    /// The address a client outside reaches `service`'s container `port` at.
    pub fn addr(&self, service: &str, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.service(service).addr), port)
    }

    /// The container port `service` publishes first (`HOST:CONTAINER`), as a client reaches it.
    pub fn published(&self, service: &str) -> SocketAddr {
        let ports = &self.service(service).def.ports;
        let port = ports
            .first()
            .and_then(|p| p.rsplit(':').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{service} publishes no port: {ports:?}"));
        self.addr(service, port)
    }

    /// Bind mounts copied (their text mapped), named volumes linked, under each root.
    fn mount_all(&self) {
        for s in &self.services {
            for mount in &s.def.volumes {
                let mut parts = mount.split(':');
                let (source, target) = (parts.next().unwrap(), parts.next().unwrap());
                let at = s.root.join(target.trim_start_matches('/'));
                std::fs::create_dir_all(at.parent().unwrap()).unwrap();
                if let Some(path) = source.strip_prefix("./") {
                    let path = Path::new(ROOT).join(path);
                    if path.is_dir() {
                        std::fs::create_dir_all(&at).unwrap();
                        for entry in std::fs::read_dir(&path).unwrap() {
                            let file = entry.unwrap().path();
                            self.copy_mapped(s, &file, &at.join(file.file_name().unwrap()));
                        }
                    } else {
                        self.copy_mapped(s, &path, &at);
                    }
                } else {
                    let volume = self.dir.path().join("volumes").join(source);
                    assert!(volume.is_dir(), "{}: undeclared volume {source}", s.name);
                    std::os::unix::fs::symlink(&volume, &at).unwrap();
                }
            }
        }
    }

    /// A bind-mounted file, its text mapped (and sped up, for Prometheus's).
    fn copy_mapped(&self, s: &Placed, from: &Path, to: &Path) {
        let text = std::fs::read_to_string(from)
            .unwrap_or_else(|e| panic!("{}: bind mount {}: {e}", s.name, from.display()));
        let text = fast_prometheus(from, self.map_text(s, &text, s.loopback));
        std::fs::write(to, text).unwrap();
    }

    /// A value of compose.yaml as `s` sees it: interpolated, then mapped.
    fn map(&self, s: &Placed, value: &str, loopback: Ipv4Addr) -> String {
        self.map_text(s, &self.interpolate(value), loopback)
    }

    /// Text as `s` sees it, mapped to this machine (see the module's doc).
    fn map_text(&self, s: &Placed, text: &str, loopback: Ipv4Addr) -> String {
        let mut text = text
            .replace("0.0.0.0", &s.addr.to_string())
            .replace("127.0.0.1", &loopback.to_string());
        for other in &self.services {
            text = match &other.runs {
                // `name:port` is the external server whatever the port.
                Runs::External(addr) => replace_host(&text, &other.name, |_| addr.clone()),
                _ => replace_host(&text, &other.name, |port| format!("{}:{port}", other.addr)),
            };
        }
        self.prefix_paths(s, &text)
    }

    /// A service's name as its address here.
    fn host(&self, name: &str) -> String {
        self.service(name).addr.to_string()
    }

    /// Absolute paths under one of `s`'s mount points, moved under its root.
    fn prefix_paths(&self, s: &Placed, value: &str) -> String {
        let root = s.root.to_str().unwrap();
        let mut out = value.to_string();
        for mount in &s.def.volumes {
            let target = mount.split(':').nth(1).unwrap();
            out = replace_path(&out, target, root);
        }
        out
    }

    /// `${VAR}`, `${VAR:-default}` and `${VAR:?message}` from the test's variables.
    fn interpolate(&self, value: &str) -> String {
        let mut out = String::new();
        let mut rest = value;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("unclosed ${") + start;
            let expr = &rest[start + 2..end];
            let (name, fallback) = match expr.find([':', '-', '?']) {
                Some(i) => (&expr[..i], Some(&expr[i..])),
                None => (expr, None),
            };
            let value = match (self.variables.get(name), fallback) {
                (Some(v), _) => v.clone(),
                (None, Some(f)) if f.starts_with(":-") => f[2..].to_string(),
                (None, f) => panic!("compose.yaml needs ${{{name}}} ({f:?})"),
            };
            out.push_str(&value);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// The program and arguments of `argv` (a command or a health check) as run here.
    fn command(&self, s: &Placed, argv: &[String], loopback: Ipv4Addr) -> Command {
        let argv: Vec<String> = argv
            .iter()
            .enumerate()
            .map(|(i, a)| match i.checked_sub(1).map(|p| argv[p].as_str()) {
                // A host name argument (`natter nats-auth --host nats`).
                Some("--host") => self.host(a),
                _ => self.map(s, a, loopback),
            })
            .collect();
        let bin = built_binaries();
        let mut cmd = match (&s.runs, argv[0].as_str()) {
            (_, "wget") => {
                let mut cmd = Command::new(bin.join("natter"));
                cmd.args(["probe", argv.last().unwrap()]);
                cmd
            }
            (Runs::Program(program), _) => {
                let mut cmd = Command::new(program);
                cmd.args(&argv);
                cmd
            }
            (_, program) => {
                assert!(
                    dockerfile_binaries().iter().any(|b| b == program),
                    "{}: {program} is not a binary the Dockerfile's image holds",
                    s.name
                );
                let mut cmd = Command::new(bin.join(program));
                cmd.args(&argv[1..]);
                cmd
            }
        };
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(&s.root)
            .kill_on_drop(true);
        for (key, value) in &s.def.environment {
            cmd.env(key, self.map(s, value, loopback));
        }
        cmd
    }

    /// Starts `s`'s process, its output in a log file beside its root.
    fn start(&mut self, name: &str) {
        let s = self.service(name);
        let mut cmd = match &s.runs {
            Runs::External(_) => {
                self.healthy.push(name.to_string());
                return;
            }
            Runs::Natter | Runs::Program(_) => self.command(s, &s.def.command, s.loopback),
        };
        let log = std::fs::File::create(self.log_path(name)).unwrap();
        cmd.stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{name}: start: {e}"));
        self.children.insert(name.to_string(), child);
    }

    /// Where a named volume's files are.
    pub fn volume(&self, name: &str) -> PathBuf {
        self.dir.path().join("volumes").join(name)
    }

    /// No service stopped (one-shot services excepted, when they succeeded), and none was
    /// refused a subject by NATS's permissions.
    pub fn assert_all_well(&mut self) {
        for (name, child) in self.children.iter_mut() {
            if let Some(status) = child.try_wait().unwrap() {
                let one_shot = ["nats-auth", "history-migrate"].contains(&name.as_str());
                assert!(one_shot && status.success(), "{name} stopped: {status}");
            }
        }
        for name in self.children.keys() {
            let log = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
            assert!(
                !log.contains("NATS refused a subject"),
                "{name} was refused a subject:\n{}",
                self.log_tail(name)
            );
        }
    }

    /// `GET path` of the compose stack's Prometheus API, as JSON.
    pub async fn prometheus(&self, path: &str) -> serde_json::Value {
        let url = format!("http://{}{path}", self.addr("prometheus", 9090));
        let body = reqwest::get(&url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .text()
            .await
            .unwrap();
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"))
    }

    /// The alerts Prometheus holds now: (name, state, labels).
    pub async fn alerts(&self) -> Vec<(String, String, serde_json::Value)> {
        let answer = self.prometheus("/api/v1/alerts").await;
        answer["data"]["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .map(|a| {
                let name = a["labels"]["alertname"].as_str().unwrap_or("").to_string();
                let state = a["state"].as_str().unwrap_or("").to_string();
                (name, state, a["labels"].clone())
            })
            .collect()
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// The end of a service's log, for failure messages.
    fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Whether `name` meets `condition` now.
    async fn meets(&mut self, name: &str, condition: &str) -> bool {
        if self.healthy.iter().any(|h| h == name) {
            return true;
        }
        match condition {
            "service_started" => self.children.contains_key(name),
            "service_completed_successfully" => {
                let Some(child) = self.children.get_mut(name) else {
                    return false;
                };
                match child.try_wait().unwrap() {
                    None => false,
                    Some(status) if status.success() => true,
                    Some(status) => panic!("{name} exited with {status}:\n{}", self.log_tail(name)),
                }
            }
            "service_healthy" => {
                if !self.children.contains_key(name) {
                    return false;
                }
                let s = self.service(name);
                let check = s.def.healthcheck.as_ref().unwrap_or_else(|| {
                    panic!("{name} is waited for as healthy but has no healthcheck")
                });
                assert_eq!(check.test[0], "CMD", "{name}: health check form");
                // Inside a container 127.0.0.1 reaches what listens on 127.0.0.1 and what
                // listens on 0.0.0.0: here two addresses, so the check may try both.
                let mut ok = false;
                for loopback in [s.loopback, s.addr] {
                    let mut cmd = self.command(s, &check.test[1..], loopback);
                    cmd.stdout(Stdio::null()).stderr(Stdio::null());
                    if cmd.status().await.unwrap().success() {
                        ok = true;
                        break;
                    }
                }
                if ok {
                    self.healthy.push(name.to_string());
                }
                ok
            }
            other => panic!("unknown depends_on condition {other}"),
        }
    }

    /// Starts every service once its dependencies meet their conditions, and waits until
    /// every service with a health check is healthy.
    pub async fn up(&mut self) {
        let deadline = Instant::now() + START_PATIENCE;
        let names: Vec<String> = self.services.iter().map(|s| s.name.clone()).collect();
        loop {
            let mut waiting = Vec::new();
            for name in &names {
                if self.children.contains_key(name) || self.healthy.contains(name) {
                    continue;
                }
                let mut ready = true;
                for (dependency, condition) in self.service(name).def.depends_on.conditions() {
                    if !self.meets(&dependency, &condition).await {
                        ready = false;
                        waiting.push(format!("{name} for {dependency} ({condition})"));
                    }
                }
                if ready {
                    self.start(name);
                }
            }
            for name in &names {
                if self.service(name).def.healthcheck.is_some()
                    && !self.meets(name, "service_healthy").await
                {
                    waiting.push(format!("{name} healthy"));
                }
            }
            if waiting.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = names
                    .iter()
                    .map(|n| format!("--- {n}\n{}", self.log_tail(n)))
                    .collect();
                panic!(
                    "compose did not come up: waiting {waiting:?}\n{}",
                    logs.join("\n")
                );
            }
            // Compose's own engine polls health checks on an interval too.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The path `target` where it stands as a whole path or a path's first part (after `=`, a
/// quote, a space or the start; followed by `/` or the path's end), prefixed by `root`.
fn replace_path(text: &str, target: &str, root: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(target) {
        let before = rest[..at].chars().last().or(out.chars().last());
        let after = rest[at + target.len()..].chars().next();
        let starts = before.is_none_or(|c| "= \"'[,:".contains(c));
        let ends = after.is_none_or(|c| "/ \"',]\n".contains(c));
        out.push_str(&rest[..at]);
        if starts && ends && !out.ends_with(root) {
            out.push_str(root);
        }
        out.push_str(target);
        rest = &rest[at + target.len()..];
    }
    out.push_str(rest);
    out
}

/// `name:PORT` where it stands as a host (not inside a longer name), replaced by `to(PORT)`.
fn replace_host(text: &str, name: &str, to: impl Fn(&str) -> String) -> String {
    let pattern = format!("{name}:");
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(&pattern) {
        let before = rest[..at].chars().last().or(out.chars().last());
        let after = &rest[at + pattern.len()..];
        let digits = after.chars().take_while(char::is_ascii_digit).count();
        let in_name = before.is_some_and(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if digits > 0 && !in_name {
            out.push_str(&rest[..at]);
            out.push_str(&to(&after[..digits]));
            rest = &after[digits..];
        } else {
            out.push_str(&rest[..at + pattern.len()]);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Prometheus's files, 60 times faster: every interval 1 s, and in the alert rules every
/// duration of minutes (`for: 5m`, `[5m]`) the same number of seconds. The expressions are
/// the shipped ones.
fn fast_prometheus(file: &Path, text: String) -> String {
    let name = file.file_name().unwrap().to_str().unwrap();
    if name == "prometheus.yml" {
        return text
            .lines()
            .map(|l| match l.split_once("_interval:") {
                Some((key, _)) => format!("{key}_interval: 1s"),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
    }
    if !name.ends_with("-rules.yml") {
        return text;
    }
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    let mut digits = String::new();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let minutes = c == 'm'
            && !digits.is_empty()
            && !chars.peek().is_some_and(|n| n.is_ascii_alphanumeric());
        out.push_str(&digits);
        digits.clear();
        out.push(if minutes { 's' } else { c });
    }
    out.push_str(&digits);
    out
}
