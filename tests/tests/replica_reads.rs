//! Replays on replicated streams (a 3-node cluster, every stream R3): a replay asked for right
//! after a write never skips it, whether the device replays on its own or with a crowd that
//! shares one read. A follower a few writes behind would answer a read with what it has; the
//! replays must read what the leader has acknowledged.

use futures::future::join_all;
use protocol::{Cursor, MessageId};
use testkit::{Stack, expect_sent, expect_synced};

/// Devices that reconnect together in each round: enough to share a read.
const CROWD: usize = 12;
const ROUNDS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_right_after_a_write_never_skips_it() {
    let stack = Stack::new().cluster(3).gateways(2).start().await;
    let mut alice = stack.connect("alice", 0).await;
    let users: Vec<String> = (0..CROWD).map(|i| format!("reader{i:02}")).collect();
    let mut cursors: Vec<Cursor> = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let mut device = stack.resume(user, i % 2, None).await;
        cursors.push(expect_synced(&mut device).await.1.cursor);
    }

    for round in 0..ROUNDS {
        // Alone: one device resumes the moment its message is acknowledged.
        let cid = format!("alone-{round}");
        alice.send(&users[0], &cid, "just written").await.unwrap();
        let sent = expect_sent(&mut alice, &cid).await.id;
        let mut device = stack
            .resume(&users[0], round % 2, Some(cursors[0].clone()))
            .await;
        let (replayed, synced) = expect_synced(&mut device).await;
        let ids: Vec<MessageId> = replayed.iter().map(|m| m.id).collect();
        assert_eq!(ids, [sent], "round {round}: the device alone");
        assert!(synced.recovered);
        cursors[0] = synced.cursor;
        drop(device);

        // A crowd: every device resumes at once, right after its message was acknowledged.
        let mut sent = Vec::new();
        for user in &users {
            let cid = format!("{user}-{round}");
            alice.send(user, &cid, "just written").await.unwrap();
            sent.push(expect_sent(&mut alice, &cid).await.id);
        }
        // On one gateway, so that they may share a read.
        let resumes = users.iter().zip(&cursors).map(|(user, cursor)| {
            let stack = &stack;
            let cursor = cursor.clone();
            async move {
                let mut device = stack.resume(user, 1, Some(cursor)).await;
                expect_synced(&mut device).await
            }
        });
        for (i, (replayed, synced)) in join_all(resumes).await.into_iter().enumerate() {
            let ids: Vec<MessageId> = replayed.iter().map(|m| m.id).collect();
            assert_eq!(ids, [sent[i]], "round {round}: {}", users[i]);
            assert!(synced.recovered);
            cursors[i] = synced.cursor;
        }
    }
    let shared = stack.gateways[1]
        .metric("natter_gateway_replays_shared_total")
        .await;
    println!(
        "{shared} of {} crowd replays from shared reads",
        CROWD * ROUNDS
    );
}
