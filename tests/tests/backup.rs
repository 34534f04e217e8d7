//! Backup and restore, done as docs/operations.md ("Backup and restore") tells an operator,
//! with the standard `nats` command line: the embedded history store copied while the history
//! service is stopped, JetStream's streams backed up online (groups first, then the message
//! streams), then everything lost. Restored, with the store older than the streams: the
//! history writers, their consumers deleted, write again what the streams hold, so history has
//! every message of before the streams' backup once; groups and their members are back; every
//! device is sent to history, which holds everything by then.

use std::path::Path;
use std::time::Duration;

use plumbing::nats_auth::Role;
use protocol::{ConversationId, GroupInfo, SyncGap, UserId, subjects};
use testkit::client::Connection;
use testkit::{
    Stack, create_group, eventually, expect_message, expect_sent, expect_synced, fetch_history,
};

/// How long the history writers may take to write the streams' messages again.
const REWRITE_PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_nats_and_store_come_back_from_their_backups() {
    let mut stack = Stack::new().start().await;
    let backups = tempfile::tempdir().unwrap();
    stack.make_contacts("alice", &["bob", "carol"]).await;
    let dm = ConversationId::direct(&user("alice"), &user("bob"));

    // Before the store's backup.
    let mut alice = stack.connect("alice", 0).await;
    let team = create_group(&mut alice, "team", &["bob", "carol"]).await;
    let team_conversation = ConversationId::group(&team.group);
    send(&mut alice, "bob", "a1").await;
    send_group(&mut alice, &team, "g1").await;
    eventually(
        "history has the first messages",
        REWRITE_PATIENCE,
        async || bodies(&mut alice, &dm).await == ["hello", "a1"],
    )
    .await;
    drop(alice);

    // The store's backup: redb has no online backup, so with the history service stopped.
    stack.stop_services().await;
    std::fs::copy(stack.history_file(), backups.path().join("history.redb")).unwrap();
    stack.start_services(1).await;

    // After it: bob reads live, then goes away with his cursor while more arrives.
    let mut alice = stack.connect("alice", 0).await;
    let mut bob = stack.resume("bob", 0, None).await;
    expect_synced(&mut bob).await;
    send(&mut alice, "bob", "b1").await;
    send_group(&mut alice, &team, "g2").await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(expect_message(&mut bob).await.body);
    }
    seen.sort();
    assert_eq!(seen, ["b1", "g2"]);
    let away_at = bob.cursor().expect("bob has a cursor");
    bob.close().await;
    send(&mut alice, "bob", "c1").await;
    send(&mut alice, "bob", "c2").await;

    // JetStream's backup, online, as the operator: the groups, then every message stream.
    let mut streams = vec!["KV_natter_groups".to_string()];
    streams.extend((0..stack.bus.partitions).map(|k| format!("NATTER_MESSAGES_{k}")));
    for stream in &streams {
        let dir = backups.path().join(stream);
        nats(
            &stack,
            &["backup", "stream", stream, path(&dir), "--no-progress"],
        )
        .await;
    }
    // A message after the last backup is lost with the cluster (and with the store, older
    // still); the device that got it holds a cursor past the restored streams' heads.
    let mut phone = stack.resume("bob", 0, None).await;
    expect_synced(&mut phone).await;
    send(&mut alice, "bob", "d1").await;
    assert_eq!(expect_message(&mut phone).await.body, "d1");
    let past_heads = phone.cursor().expect("a cursor");
    phone.close().await;
    drop(alice);

    // Everything is lost: the services stop, the NATS server's store and the history store go.
    stack.stop_services().await;
    let server = stack.nats.server();
    server.kill();
    std::fs::remove_dir_all(server.store_dir()).unwrap();
    std::fs::remove_file(stack.history_file()).unwrap();

    // Restored: NATS with its configuration and credentials, the streams before any natter
    // service starts, the store's file; then the history writers' consumers deleted, as the
    // store is older than the streams.
    stack.nats.server().restart().unwrap();
    for stream in &streams {
        let dir = backups.path().join(stream);
        nats(
            &stack,
            &["backup", "restore", "stream", path(&dir), "--no-progress"],
        )
        .await;
    }
    std::fs::copy(backups.path().join("history.redb"), stack.history_file()).unwrap();
    for k in 0..stack.bus.partitions {
        let stream = format!("NATTER_MESSAGES_{k}");
        let writer = subjects::history_writer(k);
        nats(&stack, &["consumer", "rm", &stream, &writer, "-f"]).await;
    }
    stack.start_services(1).await;

    // History has every message once: the store's, and what the writers wrote again.
    let mut alice = stack.connect("alice", 0).await;
    let everything = ["hello", "a1", "b1", "c1", "c2"];
    eventually("history has every message", REWRITE_PATIENCE, async || {
        bodies(&mut alice, &dm).await == everything
    })
    .await;
    assert_eq!(bodies(&mut alice, &team_conversation).await.len(), 2 + 1);

    // Devices are sent to history: the restored streams are another incarnation (their
    // sequences after the backup are written again, so no cursor of before can be trusted),
    // and history holds everything up to where they are told to continue.
    for cursor in [away_at, past_heads] {
        let mut device = stack.resume("bob", 0, Some(cursor)).await;
        let (replayed, synced) = expect_synced(&mut device).await;
        assert!(replayed.is_empty(), "{replayed:?}");
        assert_eq!(synced.gap, Some(SyncGap::UnknownCursor), "{synced:?}");
        assert_eq!(bodies(&mut device, &dm).await, everything);
    }
    let mut bob = stack.resume("bob", 0, None).await;
    expect_synced(&mut bob).await;

    // The group and its members are back: carol posts, alice and bob get it.
    let mut carol = stack.connect("carol", 0).await;
    send_group(&mut carol, &team, "after the restore").await;
    assert_eq!(expect_message(&mut alice).await.body, "after the restore");
    assert_eq!(expect_message(&mut bob).await.body, "after the restore");
}

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs the `nats` command line as the operator against the stack's NATS.
async fn nats(stack: &Stack, args: &[&str]) {
    let auth = stack.nats.auth();
    let out = tokio::process::Command::new(testkit::compose::installed("NATTER_NATS_CLI", "nats"))
        .args(args)
        .env("NATS_URL", stack.nats.url())
        .env("NATS_NKEY", auth.seed_file(Role::Operator))
        .env("NATS_CA", auth.ca_file())
        .output()
        .await
        .expect("run the nats command line (scripts/install-deps tests)");
    assert!(
        out.status.success(),
        "nats {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn send(from: &mut Connection, to: &str, body: &str) {
    from.send(to, body, body).await.unwrap();
    expect_sent(from, body).await;
}

async fn send_group(from: &mut Connection, group: &GroupInfo, body: &str) {
    let cid = body.replace(' ', "-");
    from.send_group(group.group.as_str(), &cid, body)
        .await
        .unwrap();
    expect_sent(from, &cid).await;
}

/// The bodies of a conversation's history, oldest first.
async fn bodies(conn: &mut Connection, conversation: &ConversationId) -> Vec<String> {
    let mut messages = fetch_history(conn, "h", conversation)
        .await
        .expect("history");
    messages.sort_by_key(|m| m.id);
    messages.into_iter().map(|m| m.body).collect()
}
