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
