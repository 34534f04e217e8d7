//! The `natter` command line, run as a process against a real stack: send then history, tail
//! following live traffic, groups, `check` passing on the stack and failing clearly without
//! NATS, and the advice printed for a bad token or an unreachable gateway.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use plumbing::nats_auth::Role;
use serde_json::Value;
use testkit::Stack;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// How long one CLI command may take.
const COMMAND_PATIENCE: Duration = Duration::from_secs(30);

/// The `natter` binary.
fn natter_bin() -> PathBuf {
    testkit::built(&["natter"]).join("natter")
}

/// A `natter` command with the stack's gateway and secret in its environment.
fn natter(stack: &Stack, args: &[&str]) -> Command {
    let mut cmd = Command::new(natter_bin());
    cmd.args(args)
        .current_dir(std::env::temp_dir())
        .env("NATTER_URL", stack.gateways[0].ws_url())
        .env("NATTER_GATEWAY__JWT_SECRET", testkit::SECRET)
        // `natter check` reads NATS as the operator.
        .envs(stack.bus_for(Role::Operator).env())
        .env_remove("NATTER_TOKEN")
        .env_remove("NATTER_CONFIG")
        .kill_on_drop(true);
    cmd
}

async fn run(mut cmd: Command) -> Output {
    tokio::time::timeout(COMMAND_PATIENCE, cmd.output())
        .await
        .expect("natter finished in time")
        .expect("run natter")
}

/// Runs and expects success; returns stdout.
async fn ok(stack: &Stack, args: &[&str]) -> String {
    let out = run(natter(stack, args)).await;
    assert!(
        out.status.success(),
        "natter {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn json(line: &str) -> Value {
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[tokio::test]
async fn send_then_history_shows_the_message() {
    let stack = Stack::new().start().await;
    let sent = json(
        &ok(
            &stack,
            &["send", "--as", "alice", "--to", "bob", "hi bob", "--json"],
        )
        .await,
    );
    let id = sent["id"].as_str().expect("id").to_string();
    assert_eq!(sent["conversation"], "dm:alice:bob");

    // The plain form prints just the id.
    let plain = ok(&stack, &["send", "--as", "alice", "--to", "bob", "again"]).await;
    assert_eq!(plain.trim().len(), 26, "a ULID: {plain}");

    // History is written asynchronously, shortly after `sent`.
    testkit::eventually("history has both", Duration::from_secs(10), async || {
        let page = json(&ok(&stack, &["history", "--as", "bob", "alice", "--json"]).await);
        let messages = page["messages"].as_array().expect("messages");
        messages.len() == 2 && messages[0]["id"] == id.as_str() && messages[0]["body"] == "hi bob"
    })
    .await;

    let conversations = json(&ok(&stack, &["conversations", "--as", "bob", "--json"]).await);
    assert_eq!(conversations[0]["conversation"], "dm:alice:bob");
    assert_eq!(conversations[0]["unread"], 2);

    // The sender's page says how far her messages got (nobody acknowledged them); bob's
    // page, where they are not his, says nothing.
    let mine = ok(&stack, &["history", "--as", "alice", "bob"]).await;
    assert!(
        mine.lines().all(|l| l.ends_with(" [sent]")) && mine.lines().count() == 2,
        "{mine}"
    );
    let theirs = json(&ok(&stack, &["history", "--as", "bob", "alice", "--json"]).await);
    assert!(theirs["messages"][0].get("state").is_none(), "{theirs}");

    // bob answers the first message: his history line quotes it.
    ok(
        &stack,
        &[
            "send",
            "--as",
            "bob",
            "--to",
            "alice",
            "sure",
            "--reply-to",
            &id,
        ],
    )
    .await;
    testkit::eventually(
        "the reply in history",
        Duration::from_secs(10),
        async || {
            let page = ok(&stack, &["history", "--as", "bob", "alice"]).await;
            page.lines()
                .any(|l| l.contains(&format!("bob: (re {id} alice: hi bob) sure [sent]")))
        },
    )
    .await;

    // alice edits her first message, then deletes the second; history shows both.
    let second = plain.trim();
    ok(&stack, &["edit", "--as", "alice", "bob", &id, "hi bob!"]).await;
    ok(&stack, &["delete", "--as", "alice", "dm:alice:bob", second]).await;
    testkit::eventually(
        "the edit and the delete in history",
        Duration::from_secs(10),
        async || {
            let page = ok(&stack, &["history", "--as", "bob", "alice"]).await;
            page.contains(&format!("{id} alice: hi bob! (edited)"))
                && page.contains(&format!("{second} alice: (deleted)"))
        },
    )
    .await;
    // bob reacts to it: history counts it.
    ok(&stack, &["react", "--as", "bob", "alice", &id, "👍"]).await;
    testkit::eventually(
        "the reaction in history",
        Duration::from_secs(10),
        async || {
            let page = ok(&stack, &["history", "--as", "alice", "bob"]).await;
            page.lines()
                .any(|l| l.starts_with(&id) && l.ends_with(" 👍1"))
        },
    )
    .await;
    // alice sends a file; bob downloads it to disk.
    let dir = tempfile::tempdir().unwrap();
    let (sent_file, got_file) = (dir.path().join("notes.txt"), dir.path().join("got.txt"));
    let content = "natter file ".repeat(30_000);
    std::fs::write(&sent_file, &content).unwrap();
    let path = sent_file.to_str().unwrap();
    ok(
        &stack,
        &[
            "send", "--as", "alice", "--to", "bob", "a file", "--attach", path,
        ],
    )
    .await;
    let mut file_id = String::new();
    testkit::eventually("the file in history", Duration::from_secs(10), async || {
        let page = json(&ok(&stack, &["history", "--as", "bob", "alice", "--json"]).await);
        let last = &page["messages"].as_array().unwrap().last().unwrap().clone();
        file_id = last["attachment"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        !file_id.is_empty()
    })
    .await;
    let out = got_file.to_str().unwrap();
    ok(&stack, &["download", "--as", "bob", &file_id, "-o", out]).await;
    assert!(
        std::fs::read_to_string(&got_file).unwrap() == content,
        "the file as sent"
    );
    // bob may change neither: the refusal says why.
    let out = run(natter(&stack, &["delete", "--as", "bob", "alice", &id])).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error 1004 forbidden"), "{stderr}");

    let throughput = ok(
        &stack,
        &["send", "--as", "alice", "--to", "bob", "n", "--count", "20"],
    )
    .await;
    assert!(
        throughput.starts_with("sent 20 messages in "),
        "{throughput}"
    );
}

#[tokio::test]
async fn tail_prints_a_message_from_another_user_acks_it_and_stops_after_count() {
    let stack = Stack::new().start().await;
    let mut alice = stack.connect("alice", 0).await;
    let mut tail = natter(&stack, &["tail", "--as", "bob", "--json", "--count", "1"]);
    let mut tail = tail
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tail");
    // It says on stderr when it is following: from then on nothing is missed.
    let mut stderr = BufReader::new(tail.stderr.take().expect("stderr")).lines();
    let ready = tokio::time::timeout(COMMAND_PATIENCE, stderr.next_line())
        .await
        .expect("tail ready in time")
        .expect("read stderr")
        .expect("a line");
    assert!(
        ready.starts_with("following all conversations as bob"),
        "{ready}"
    );

    alice.send("bob", "c-1", "hi bob").await.unwrap();
    let out = tokio::time::timeout(COMMAND_PATIENCE, tail.wait_with_output())
        .await
        .expect("tail exits after one message")
        .expect("tail output");
    assert!(out.status.success());
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let m = json(lines[0]);
    assert_eq!(
        (m["from"].as_str(), m["body"].as_str()),
        (Some("alice"), Some("hi bob"))
    );

    // tail acknowledged it, so alice sees `delivered` by bob.
    let (_, by) = testkit::expect_delivered(&mut alice).await;
    assert_eq!(by.as_str(), "bob");
}

#[tokio::test]
async fn group_create_send_and_list() {
    let stack = Stack::new().start().await;
    let create = [
        "group",
        "create",
        "Team",
        "--as",
        "alice",
        "--members",
        "bob,carol",
        "--json",
    ];
    // Strangers cannot be added: the error names them, with its code and advice.
    let out = run(natter(&stack, &create)).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error 1010 not_a_contact"), "{err}");
    assert!(err.contains("bob and carol"), "{err}");

    stack.make_contacts("alice", &["bob", "carol"]).await;
    let group = json(&ok(&stack, &create).await);
    let id = group["group"].as_str().expect("group id").to_string();
    assert_eq!(group["members"], 3);
    assert_eq!(group["role"], "owner");

    let sent = json(
        &ok(
            &stack,
            &["send", "--as", "alice", "--group", &id, "hi team", "--json"],
        )
        .await,
    );
    assert_eq!(sent["conversation"], format!("g:{id}"));

    let groups = json(&ok(&stack, &["groups", "--as", "bob", "--json"]).await);
    assert_eq!(groups[0]["group"], id.as_str());
    assert_eq!(groups[0]["role"], "member");

    let members = ok(&stack, &["group", "members", &id, "--as", "bob"]).await;
    assert_eq!(
        members.lines().collect::<Vec<_>>(),
        ["alice owner", "bob member", "carol member"]
    );

    // Someone outside the group gets the error's code name and advice.
    let out = run(natter(&stack, &["group", "info", &id, "--as", "mallory"])).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error 1004 forbidden"), "{err}");
}

#[tokio::test]
async fn check_passes_on_a_running_stack_and_fails_clearly_without_nats() {
    let mut stack = Stack::new().start().await;
    stack.start_notifier(60_000, "").await;
    let nats_url = stack.nats.url();
    let ws_url = stack.gateways[0].ws_url();
    let report = json(
        &ok(
            &stack,
            &["check", "--nats-url", &nats_url, "--url", &ws_url, "--json"],
        )
        .await,
    );
    assert_eq!(report["ok"], true, "{report}");
    let items = report["items"].as_array().unwrap();
    let names: Vec<&str> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
    for needed in [
        &protocol::subjects::messages_stream(2),
        &protocol::subjects::router(2),
        &protocol::subjects::history_writer(0),
        protocol::subjects::NOTIFIER_CONSUMER,
        protocol::subjects::GATEWAYS_BUCKET,
    ] {
        assert!(names.contains(&needed), "{needed} not checked: {names:?}");
    }
    let gateways = items.iter().find(|i| i["kind"] == "gateways").unwrap();
    assert!(
        gateways["detail"].as_str().unwrap().contains("gw-0"),
        "{gateways}"
    );
    let ws = items.iter().find(|i| i["kind"] == "websocket").unwrap();
    assert!(ws["detail"].as_str().unwrap().contains("pong in"), "{ws}");

    // Nothing listening there.
    let nowhere = testkit::reserve_port().await;
    let out = run(natter(
        &stack,
        &["check", "--nats-url", &format!("nats://{nowhere}")],
    ))
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot connect to NATS at nats://{nowhere}")),
        "{err}"
    );
    assert!(err.contains("is nats-server running"), "{err}");
}

#[tokio::test]
async fn check_names_what_is_missing() {
    // No notifier in this stack: its consumer is missing, and the check fails saying so.
    let stack = Stack::new().start().await;
    let out = run(natter(&stack, &["check", "--nats-url", &stack.nats.url()])).await;
    assert!(!out.status.success());
    let report = String::from_utf8_lossy(&out.stdout);
    let line = report
        .lines()
        .find(|l| l.contains(protocol::subjects::NOTIFIER_CONSUMER))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        line.starts_with("FAIL") && line.contains("notifier"),
        "{line}"
    );

    // Told the deployment runs no notifier, the check does not look for its consumer.
    let out = run(natter(
        &stack,
        &[
            "check",
            "--nats-url",
            &stack.nats.url(),
            "--components",
            "gateway,chat,history",
        ],
    ))
    .await;
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(
        !report.contains(protocol::subjects::NOTIFIER_CONSUMER),
        "{report}"
    );
    assert!(
        report.contains("components: gateway, chat, history"),
        "{report}"
    );
}

#[tokio::test]
async fn connection_problems_come_with_advice() {
    let stack = Stack::new().start().await;
    let out = run(natter(
        &stack,
        &["send", "--token", "not-a-token", "--to", "bob", "hi"],
    ))
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token rejected (401)"), "{err}");
    assert!(err.contains("natter token"), "{err}");

    let nowhere = testkit::reserve_port().await;
    let url = format!("ws://{nowhere}/v1/ws");
    let out = run(natter(
        &stack,
        &["history", "--as", "bob", "alice", "--url", &url],
    ))
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot connect to {url}: connection refused")),
        "{err}"
    );
    assert!(err.contains("natter up"), "{err}");
}

#[tokio::test]
async fn token_prints_a_bare_token_or_json_and_either_opens_a_connection() {
    let stack = Stack::new().start().await;
    let bare = ok(&stack, &["token", "bob", "--ttl-secs", "600"]).await;
    let answer = json(&ok(&stack, &["--json", "token", "bob", "--ttl-secs", "600"]).await);
    assert_eq!(answer["user"], "bob");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expires_at = answer["expires_at"].as_u64().expect("expires_at");
    assert!(
        (now + 590..=now + 610).contains(&expires_at),
        "{expires_at}"
    );
    let url = stack.gateways[0].ws_url();
    for token in [bare.trim(), answer["token"].as_str().expect("token")] {
        let mut conn = testkit::client::Connection::connect(&url, token, protocol::Encoding::Json)
            .await
            .expect("the token opens a connection");
        let welcome = conn.next_frame().await.unwrap();
        assert!(
            matches!(&welcome, protocol::frames::ServerFrame::Welcome { user, .. } if user.as_str() == "bob"),
            "{welcome:?}"
        );
    }
}
