//! The store suite against the embedded (redb) store, on a temporary directory.

use history::EmbeddedStore;

async fn fresh() -> (EmbeddedStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("history.redb")).unwrap();
    (store, dir)
}

history::store_suite!(fresh());

#[tokio::test]
async fn the_store_survives_a_restart() {
    use history::{Page, Store};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.redb");
    let c: protocol::ConversationId = "dm:alice:bob".parse().unwrap();
    let m = history::store::suite::message("alice", &c, "bob", 1_750_000_000_000, 1);
    {
        let store = EmbeddedStore::open(&path).unwrap();
        store.append(std::slice::from_ref(&m)).await.unwrap();
    }
    let reopened = EmbeddedStore::open(&path).unwrap();
    assert_eq!(reopened.page(&c, Page::Latest, 10).await.unwrap(), vec![m]);
}

/// Appends made at once (the partitions' writers) are committed in groups: every one of them
/// returns only once its messages are stored, and all of them are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_made_at_once_are_all_stored() {
    use history::{Page, Store};
    let (store, _dir) = fresh().await;
    let conversations: Vec<protocol::ConversationId> = (0..8)
        .map(|i| format!("dm:alice:u{i}").parse().unwrap())
        .collect();
    let mut appends = tokio::task::JoinSet::new();
    for (i, c) in conversations.iter().enumerate() {
        for batch in 0..10u64 {
            let store = store.clone();
            let to = format!("u{i}");
            let messages: Vec<_> = (0..5u64)
                .map(|j| {
                    let n = batch * 5 + j + 1;
                    history::store::suite::message("alice", c, &to, 1_750_000_000_000 + n, n)
                })
                .collect();
            appends.spawn(async move {
                store.append(&messages).await.unwrap();
                let stored = store
                    .page(&messages[0].conversation, Page::Latest, 100)
                    .await;
                // Returned means stored.
                for m in &messages {
                    assert!(stored.as_ref().unwrap().contains(m), "{m:?} not stored");
                }
            });
        }
    }
    while let Some(done) = appends.join_next().await {
        done.unwrap();
    }
    for c in &conversations {
        assert_eq!(store.page(c, Page::Latest, 100).await.unwrap().len(), 50);
    }
}
