//! The worked example of `subjects.md`, "Sending as a bot", run exactly as written: the
//! standard `nats` command line (natscli) against a real stack, with the stack's `NATS_URL`
//! and the test integrator's seed and CA (`NATS_NKEY`, `NATS_CA`).

use std::path::PathBuf;

use protocol::frames::ServerFrame;
use protocol::{ConversationId, MessageId};
use testkit::{Stack, TEST_INTEGRATOR, expect_message};

/// The example's shell lines, as they appear in the section (without the `export` lines,
/// whose values the test supplies).
fn example() -> Vec<String> {
    let doc = include_str!("../../subjects.md");
    let section = doc
        .split("## Sending as a bot")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("subjects.md has a \"Sending as a bot\" section");
    let lines: Vec<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .filter(|l| l.starts_with("nats ") || l.starts_with("export NATS_"))
        .collect();
    for variable in ["NATS_URL", "NATS_NKEY", "NATS_CA"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("export {variable}="))),
            "the example sets {variable}"
        );
    }
    lines
        .into_iter()
        .filter(|l| l.starts_with("nats "))
        .map(String::from)
        .collect()
}

/// The `nats` binary: `$NATTER_NATS_CLI`, or the project's pinned install.
fn nats_cli() -> PathBuf {
    let path = std::env::var_os("NATTER_NATS_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/nats"));
    assert!(
        path.exists(),
        "no nats CLI at {}: run `scripts/install-deps tests` (or scripts/test), or set NATTER_NATS_CLI",
        path.display()
    );
    path
}

/// Runs the example's commands in a shell with `nats` on the PATH, as the test integrator;
/// returns the reply.
async fn run_example(stack: &Stack) -> ServerFrame {
    let auth = stack.nats.auth();
    let cli = nats_cli();
    let path = format!(
        "{}:{}",
        cli.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(example().join("\n"))
        .env("PATH", path)
        .env("NATS_URL", stack.nats.url())
        .env("NATS_NKEY", auth.integrator_seed(TEST_INTEGRATOR))
        .env("NATS_CA", auth.ca_file())
        .output()
        .await
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the example failed: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not a frame ({e}): {stdout}"))
}

#[tokio::test]
async fn the_bot_example_sends_alice_one_message_however_often_it_runs() {
    let stack = Stack::new().start().await;
    let mut alice = stack.connect("alice", 0).await;

    let ServerFrame::Sent {
        cid,
        id,
        conversation,
        ..
    } = run_example(&stack).await
    else {
        panic!("the example's reply is not `sent`")
    };
    assert_eq!(cid.as_str(), "hello-1");
    assert_eq!(
        conversation,
        "dm:alice:bot".parse::<ConversationId>().unwrap()
    );
    let got = expect_message(&mut alice).await;
    assert_eq!(
        (got.id, got.from.as_str(), got.body.as_str()),
        (id, "bot", "hi")
    );

    // Run again: the same id, and alice gets nothing new (the next message she gets is bob's).
    let ServerFrame::Sent { id: again, .. } = run_example(&stack).await else {
        panic!("the second reply is not `sent`")
    };
    assert_eq!(again, id);
    let mut bob = stack.connect("bob", 0).await;
    bob.send("alice", "b1", "after the bot").await.unwrap();
    let next: MessageId = expect_message(&mut alice).await.id;
    assert_ne!(next, id, "the bot's message came once");
}
