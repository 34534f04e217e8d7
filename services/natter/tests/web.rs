//! The web client in a real browser: each scenario starts `natter up` (this crate's binary,
//! so the page under test is the one just built) on a free port with its own nats-server,
//! and runs `node tests/web/<scenario>.mjs`, which drives Debian's Chromium through
//! playwright-core with one browser context per user. The script asks this harness to kill
//! and restart natter with `@@kill` / `@@restart` lines; it saves screenshots on failure.
//! Needs `/usr/bin/chromium` and `tests/web/node_modules` (`scripts/install-deps`).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use plumbing::nats_auth::NatsAuth;
use plumbing::nats_server::{NatsServer, NatsServerOptions};

/// Chromium is heavy on a 2-core machine: one scenario at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// How long `natter up` may take to print that it is up.
const STARTUP_PATIENCE: Duration = Duration::from_secs(60);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A `natter up` process; killed when dropped.
struct Natter {
    child: Option<Child>,
    port: u16,
    data_dir: PathBuf,
    nats_url: String,
    log: PathBuf,
}

impl Natter {
    fn start(data_dir: &Path, nats_url: &str, log: PathBuf) -> Self {
        let mut natter = Self {
            child: None,
            port: free_port(),
            data_dir: data_dir.to_path_buf(),
            nats_url: nats_url.to_string(),
            log,
        };
        natter.restart();
        natter
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Starts natter (again, on the same port and data) and waits for "natter is up".
    fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("natter log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_natter"))
            .arg("up")
            .env_remove("NATTER_CONFIG")
            .env_remove("NATTER_GATEWAY__JWT_SECRET")
            .env("NATTER_DATA_DIR", &self.data_dir)
            .env("NATTER_BUS__NATS_URL", &self.nats_url)
            .env(
                "NATTER_GATEWAY__LISTEN_ADDR",
                format!("127.0.0.1:{}", self.port),
            )
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn natter");
        let stdout = child.stdout.take().expect("natter stdout");
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .expect("natter log");
        let (tx, rx) = mpsc::channel();
        // natter logs to stdout too: keep it all in the log file.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if line.contains("natter is up") {
                    let _ = tx.send(());
                }
            }
        });
        self.child = Some(child);
        if rx.recv_timeout(STARTUP_PATIENCE).is_err() {
            panic!(
                "natter did not come up within {STARTUP_PATIENCE:?}; log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    /// SIGKILL: no close frames, no goodbye, as in a crash.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Natter {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs one scenario script against a fresh natter and fails the test if the script fails.
fn run_scenario(name: &str) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let web_tests = repo_root().join("tests/web");
    assert!(
        Path::new("/usr/bin/chromium").exists() && web_tests.join("node_modules").exists(),
        "the browser tests need /usr/bin/chromium and tests/web/node_modules: run scripts/install-deps"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    // Credentials where `natter up` looks for its roles' (`data_dir/nats-auth`).
    let auth =
        NatsAuth::ensure(&tmp.path().join("natter/nats-auth"), &[], &[]).expect("NATS credentials");
    let nats = NatsServer::start(NatsServerOptions {
        sync_interval: "always".into(),
        ..NatsServerOptions::scratch(tmp.path().join("nats"), auth)
    })
    .expect("nats-server (scripts/install-deps, or set NATTER_NATS_SERVER)");
    let mut natter = Natter::start(
        &tmp.path().join("natter"),
        &nats.url(),
        tmp.path().join("natter.log"),
    );
    let screenshots = tmp.path().join("screenshots");

    let mut node = Command::new("node")
        .arg(web_tests.join(format!("{name}.mjs")))
        .current_dir(&web_tests)
        .env("NATTER_WEB_URL", natter.url())
        .env("NATTER_WEB_SCREENSHOTS", &screenshots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (is Node.js installed?)");
    let mut to_script = node.stdin.take().expect("node stdin");
    let stderr = node.stderr.take().expect("node stderr");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let mut output = String::new();
    for line in BufReader::new(node.stdout.take().expect("node stdout"))
        .lines()
        .map_while(Result::ok)
    {
        println!("{line}");
        output.push_str(&line);
        output.push('\n');
        match line.as_str() {
            "@@kill" => natter.kill(),
            "@@restart" => natter.restart(),
            _ => continue,
        }
        writeln!(to_script, "ok").expect("answer the script");
    }
    let status = node.wait().expect("node exit");
    let errors = errors.join().unwrap_or_default();
    eprint!("{errors}");
    if !status.success() {
        // Keep the screenshots and the server's log for whoever reads the failure.
        let kept = tmp.keep();
        panic!(
            "browser scenario {name} failed ({status}); screenshots in {}, natter's log in {}\n{errors}",
            kept.join("screenshots").display(),
            kept.join("natter.log").display(),
        );
    }
}

#[test]
fn bob_sees_alices_message_and_alice_sees_it_seen() {
    run_scenario("one_to_one");
}

#[test]
fn a_group_of_three_sees_each_others_messages() {
    run_scenario("group");
}

#[test]
fn a_reload_keeps_the_history() {
    run_scenario("reload");
}

#[test]
fn the_page_reconnects_by_itself_after_a_server_restart() {
    run_scenario("restart");
}

#[test]
fn scrolling_back_loads_older_history() {
    run_scenario("scroll_back");
}
