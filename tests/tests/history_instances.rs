//! Several history instances over one store: they share the partitions' writers, and a page
//! is never stale, whichever instance answers, after a write any instance has stored. Killing
//! an instance moves its partitions to the others and loses nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use history::{Page, Store};
use protocol::frames::Message;
use protocol::{ConversationId, MessageId, UserId, subjects};
use testkit::client::Connection;
use testkit::{PATIENCE, Stack, eventually, expect_history, expect_sent, metric_value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Peers of alice whose conversations with her fall in every partition.
fn peers_in_every_partition(partitions: u32) -> Vec<String> {
    let alice = UserId::new("alice").unwrap();
    let mut peers = Vec::new();
    let mut covered = BTreeSet::new();
    for i in 0.. {
        let peer = format!("peer{i}");
        let c = ConversationId::direct(&alice, &UserId::new(&peer).unwrap());
        if covered.insert(subjects::partition(&c, partitions)) {
            peers.push(peer);
        }
        if covered.len() == partitions as usize {
            return peers;
        }
    }
    unreachable!()
}

async fn latest(conn: &mut Connection, qid: &str, conversation: &ConversationId) -> Vec<Message> {
    let frame = serde_json::json!({
        "type": "history", "qid": qid, "conversation": conversation.as_str(), "limit": 50
    });
    conn.send_raw(WsMessage::text(frame.to_string()))
        .await
        .unwrap();
    match expect_history(conn, qid).await {
        Ok((messages, _)) => messages,
        Err(code) => panic!("history {qid} refused: {code:?}"),
    }
}

/// Waits until the instances hold every partition between them, each one once, and each
/// serves its own from its cache.
async fn shared(stack: &Stack, instances: usize) {
    let partitions = stack.bus.partitions;
    eventually("the partitions are shared", PATIENCE, async || {
        let held: Vec<BTreeSet<u32>> = stack
            .histories
            .iter()
            .map(|h| h.assigned.borrow().clone())
            .collect();
        let total: usize = held.iter().map(BTreeSet::len).sum();
        let all: BTreeSet<u32> = held.iter().flatten().copied().collect();
        held.len() == instances
            && held.iter().all(|h| !h.is_empty())
            && total == partitions as usize
            && all.len() == partitions as usize
    })
    .await;
}

async fn pages_are_never_stale_with(instances: usize) {
    let mut stack = Stack::new().start().await;
    for _ in 1..instances {
        stack.start_history().await;
    }
    shared(&stack, instances).await;
    let peers = peers_in_every_partition(stack.bus.partitions);
    let alice_id = UserId::new("alice").unwrap();
    let conversations: Vec<ConversationId> = peers
        .iter()
        .map(|p| ConversationId::direct(&alice_id, &UserId::new(p).unwrap()))
        .collect();
    // Past the new owners' grace, every instance serves its partitions from memory.
    eventually("the caches serve their partitions", PATIENCE, async || {
        conversations
            .iter()
            .all(|c| stack.histories.iter().any(|h| h.cache.serves(c)))
    })
    .await;
    let mut alice = stack.connect("alice", 0).await;
    let store = stack.histories[0].cache.store().clone();
    let mut written: Vec<Vec<MessageId>> = vec![Vec::new(); conversations.len()];
    for round in 0..30 {
        let i = round % conversations.len();
        let cid = format!("r{round}");
        alice
            .send(&peers[i], &cid, &format!("round {round}"))
            .await
            .unwrap();
        let id = expect_sent(&mut alice, &cid).await.id;
        written[i].push(id);
        // Stored by whichever instance writes the partition.
        eventually("the message is stored", PATIENCE, async || {
            store
                .page(&conversations[i], Page::Latest, 1)
                .await
                .unwrap()
                .first()
                .is_some_and(|m| m.id == id)
        })
        .await;
        // Queries go to any instance of the queue group: ask often enough to meet them all.
        for ask in 0..4 * instances {
            for (j, conversation) in conversations.iter().enumerate() {
                let page = latest(&mut alice, &format!("q{round}-{ask}-{j}"), conversation).await;
                let ids: Vec<MessageId> = page.iter().map(|m| m.id).collect();
                assert_eq!(
                    ids, written[j],
                    "round {round}: a stale page of {conversation} ({instances} instances)"
                );
            }
        }
    }
    let hits: i64 = stack
        .histories
        .iter()
        .map(|h| metric_value(&h.metrics, "natter_history_cache_hits_total"))
        .sum();
    assert!(
        hits > 0,
        "the caches served nothing: the test proved nothing"
    );

    // An instance dies: its partitions move to the others, and what is sent meanwhile is
    // stored and served.
    stack.histories[0].kill();
    let survivors = instances - 1;
    let partitions = stack.bus.partitions as usize;
    eventually(
        "the survivors take the dead instance's partitions",
        Duration::from_secs(30),
        async || {
            stack.histories[1..]
                .iter()
                .map(|h| h.assigned.borrow().len())
                .sum::<usize>()
                == partitions
        },
    )
    .await;
    assert!(survivors >= 1);
    for (i, peer) in peers.iter().enumerate() {
        let cid = format!("after-{i}");
        alice.send(peer, &cid, "after the crash").await.unwrap();
        let id = expect_sent(&mut alice, &cid).await.id;
        written[i].push(id);
    }
    for (j, conversation) in conversations.iter().enumerate() {
        let expected = written[j].clone();
        eventually(
            "written after the crash",
            Duration::from_secs(30),
            async || {
                let page = latest(&mut alice, &format!("after-{j}"), conversation).await;
                page.iter().map(|m| m.id).collect::<Vec<_>>() == expected
            },
        )
        .await;
    }
}

#[tokio::test]
async fn two_history_instances_never_serve_a_stale_page() {
    pages_are_never_stale_with(2).await;
}

#[tokio::test]
async fn three_history_instances_never_serve_a_stale_page() {
    pages_are_never_stale_with(3).await;
}

#[tokio::test]
async fn a_deleted_writer_consumer_is_made_again_and_history_catches_up() {
    let stack = Stack::new().start().await;
    let mut alice = stack.connect("alice", 0).await;
    alice.send("bob", "before", "before").await.unwrap();
    expect_sent(&mut alice, "before").await;
    let conversation: ConversationId = "dm:alice:bob".parse().unwrap();
    let k = subjects::partition(&conversation, stack.bus.partitions);
    let store = stack.histories[0].cache.store().clone();
    let stored = async |n: usize| {
        store
            .page(&conversation, Page::Latest, 10)
            .await
            .unwrap()
            .len()
            == n
    };
    eventually("the first message is stored", PATIENCE, async || {
        stored(1).await
    })
    .await;

    // An operator deletes the partition's writer consumer under the running service.
    let operator = async_nats::jetstream::new(stack.nats.client().await);
    operator
        .get_stream(subjects::messages_stream(k))
        .await
        .unwrap()
        .delete_consumer(&subjects::history_writer(k))
        .await
        .unwrap();
    alice.send("bob", "after", "after").await.unwrap();
    expect_sent(&mut alice, "after").await;
    eventually(
        "the writer comes back and stores what was sent meanwhile",
        Duration::from_secs(30),
        async || stored(2).await,
    )
    .await;
}
