//! The cache in front of the store: write-through hits, coalesced cold reads, and no gaps
//! under concurrent appends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use history::store::suite::message;
use history::{CacheConfig, EmbeddedStore, HistoryCache, Page, ReceiptMarkers, Store, StoreError};
use protocol::frames::{ConversationSummary, Message};
use protocol::{ConversationId, GroupId, MessageId, UserId};
use tokio::sync::Notify;

/// Counts page reads and can hold them at a gate until the test opens it.
struct Gated {
    inner: EmbeddedStore,
    page_reads: AtomicU64,
    entered: Notify,
    gate: Option<Arc<Notify>>,
}

impl Store for Gated {
    async fn append(&self, m: &[Message]) -> Result<(), StoreError> {
        self.inner.append(m).await
    }
    async fn page(
        &self,
        c: &ConversationId,
        p: Page,
        l: usize,
    ) -> Result<Vec<Message>, StoreError> {
        self.page_reads.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            self.entered.notify_one();
            gate.notified().await;
        }
        self.inner.page(c, p, l).await
    }
    async fn conversations(
        &self,
        u: &UserId,
        g: &[GroupId],
        l: usize,
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        self.inner.conversations(u, g, l).await
    }
    async fn direct_conversations(
        &self,
        u: &UserId,
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        self.inner.direct_conversations(u).await
    }
    async fn mark_read(
        &self,
        u: &UserId,
        c: &ConversationId,
        id: MessageId,
    ) -> Result<(), StoreError> {
        self.inner.mark_read(u, c, id).await
    }
    async fn mark_delivered(
        &self,
        u: &UserId,
        c: &ConversationId,
        id: MessageId,
    ) -> Result<(), StoreError> {
        self.inner.mark_delivered(u, c, id).await
    }
    async fn read_marker(
        &self,
        u: &UserId,
        c: &ConversationId,
    ) -> Result<Option<MessageId>, StoreError> {
        self.inner.read_marker(u, c).await
    }
    async fn receipt_markers(
        &self,
        u: &UserId,
        c: &ConversationId,
    ) -> Result<ReceiptMarkers, StoreError> {
        self.inner.receipt_markers(u, c).await
    }
    async fn group_markers(&self, g: &GroupId) -> Result<Vec<ReceiptMarkers>, StoreError> {
        self.inner.group_markers(g).await
    }
    async fn message(
        &self,
        c: &ConversationId,
        id: MessageId,
    ) -> Result<Option<Message>, StoreError> {
        self.inner.message(c, id).await
    }
}

fn setup(
    gate: Option<Arc<Notify>>,
    capacity: usize,
) -> (Arc<HistoryCache<Gated>>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let inner = EmbeddedStore::open(&dir.path().join("h.redb")).unwrap();
    let store = Gated {
        inner,
        page_reads: AtomicU64::new(0),
        entered: Notify::new(),
        gate,
    };
    let config = CacheConfig {
        max_bytes: 16 * 1024 * 1024,
        messages_per_conversation: capacity,
    };
    let cache = HistoryCache::new(store, &config, 1, &plumbing::Metrics::default());
    cache.own(0, std::time::Duration::ZERO);
    (Arc::new(cache), dir)
}

fn dm() -> ConversationId {
    "dm:alice:bob".parse().unwrap()
}

const T0: u64 = 1_750_000_000_000;

#[tokio::test]
async fn a_written_message_is_served_from_the_cache() {
    let (cache, _dir) = setup(None, 100);
    assert!(
        cache
            .page(&dm(), Page::Latest, 50)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        cache.store().page_reads.load(Ordering::SeqCst),
        1,
        "the cold load"
    );

    let m = message("alice", &dm(), "bob", T0, 1);
    cache.append(std::slice::from_ref(&m)).await.unwrap();
    let page = cache.page(&dm(), Page::Latest, 50).await.unwrap();
    assert_eq!(page, vec![m]);
    assert_eq!(
        cache.store().page_reads.load(Ordering::SeqCst),
        1,
        "written through, not re-read"
    );
    assert_eq!(
        (cache.metrics.hits.get(), cache.metrics.misses.get()),
        (1, 1)
    );
}

#[tokio::test]
async fn edits_and_deletes_change_the_cached_page_as_the_store() {
    use protocol::frames::Change;
    let (cache, _dir) = setup(None, 100);
    let m = message("alice", &dm(), "bob", T0, 1);
    cache.append(std::slice::from_ref(&m)).await.unwrap();
    cache.page(&dm(), Page::Latest, 50).await.unwrap();
    let mut edit = message("alice", &dm(), "bob", T0 + 5, 2);
    edit.change = Some(Change::Edit { id: m.id });
    edit.body = "better".into();
    cache.append(std::slice::from_ref(&edit)).await.unwrap();
    let page = cache.page(&dm(), Page::Latest, 50).await.unwrap();
    assert_eq!(
        page.len(),
        1,
        "the event is no message of the page: {page:?}"
    );
    assert_eq!(
        (page[0].body.as_str(), page[0].edited),
        ("better", Some(T0 + 5))
    );
    let mut delete = message("alice", &dm(), "bob", T0 + 9, 3);
    delete.change = Some(Change::Delete { id: m.id });
    cache.append(std::slice::from_ref(&delete)).await.unwrap();
    let page = cache.page(&dm(), Page::Latest, 50).await.unwrap();
    assert!(page[0].deleted && page[0].body.is_empty(), "{page:?}");
    assert_eq!(
        page,
        cache
            .store()
            .inner
            .page(&dm(), Page::Latest, 50)
            .await
            .unwrap(),
        "the cache serves what the store holds"
    );
    assert_eq!(
        cache.store().page_reads.load(Ordering::SeqCst),
        1,
        "served from memory"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn concurrent_cold_reads_cost_one_store_read() {
    let gate = Arc::new(Notify::new());
    let (cache, _dir) = setup(Some(gate.clone()), 100);
    let batch: Vec<Message> = (0..10)
        .map(|i| message("alice", &dm(), "bob", T0 + i, i))
        .collect();
    cache.store().inner.append(&batch).await.unwrap();

    let readers: Vec<_> = (0..20)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.page(&dm(), Page::Latest, 50).await.unwrap() })
        })
        .collect();
    // On this single-threaded runtime every reader runs until it blocks before this wakes:
    // one inside the store, the other 19 queued behind it.
    cache.store().entered.notified().await;
    gate.notify_one();
    for r in readers {
        assert_eq!(r.await.unwrap().len(), 10);
    }
    assert_eq!(cache.store().page_reads.load(Ordering::SeqCst), 1);
    assert_eq!(cache.metrics.store_reads.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_never_have_gaps_under_concurrent_appends() {
    let (cache, _dir) = setup(None, 20);
    let all: Vec<Message> = (0..400)
        .map(|i| message("alice", &dm(), "bob", T0 + i, i))
        .collect();
    let index = |id: MessageId| all.iter().position(|m| m.id == id).unwrap();

    let writer = {
        let (cache, all) = (cache.clone(), all.clone());
        tokio::spawn(async move {
            for (i, m) in all.iter().enumerate() {
                cache.append(std::slice::from_ref(m)).await.unwrap();
                if i % 7 == 0 {
                    cache.evict(&dm()).await; // force reloads racing with writes
                }
            }
        })
    };
    let mut checked = 0;
    while !writer.is_finished() {
        for page in [Page::Latest, Page::Before(all[200].id)] {
            let got = cache.page(&dm(), page, 10).await.unwrap();
            let idx: Vec<usize> = got.iter().map(|m| index(m.id)).collect();
            assert!(
                idx.windows(2).all(|w| w[0] == w[1] + 1),
                "gap or disorder: {idx:?}"
            );
            checked += 1;
        }
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    let newest = cache.page(&dm(), Page::Latest, 10).await.unwrap();
    assert_eq!(newest[0].id, all[399].id);
    assert!(checked > 10, "the readers ran alongside the writer");
}

#[tokio::test]
async fn group_pages_from_the_cache_match_the_store_events_included() {
    let (cache, _dir) = setup(None, 100);
    let g = GroupId::new("club").unwrap();
    let c = ConversationId::group(&g);
    let mut created = message("alice", &c, "club", T0, 1);
    created.event = Some(protocol::GroupEvent::Created {
        name: "club".into(),
        members: vec![UserId::new("alice").unwrap()],
    });
    cache.append(std::slice::from_ref(&created)).await.unwrap();
    assert_eq!(
        cache.page(&c, Page::Latest, 10).await.unwrap(),
        vec![created.clone()]
    );
    let said = message("bob", &c, "club", T0 + 1, 2);
    cache.append(std::slice::from_ref(&said)).await.unwrap();

    let cached = cache.page(&c, Page::Latest, 10).await.unwrap();
    let stored = cache
        .store()
        .inner
        .page(&c, Page::Latest, 10)
        .await
        .unwrap();
    assert_eq!(cached, stored);
    assert_eq!(cached, vec![said, created.clone()]);
    assert_eq!(cache.message(&c, created.id).await.unwrap(), Some(created));
    assert_eq!(
        cache.store().page_reads.load(Ordering::SeqCst),
        1,
        "served from the cache after the cold load"
    );
}

#[tokio::test]
async fn large_messages_cannot_grow_the_cache_past_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("h.redb")).unwrap();
    let config = CacheConfig {
        max_bytes: 256 * 1024,
        messages_per_conversation: 100,
    };
    let cache = HistoryCache::new(store, &config, 1, &plumbing::Metrics::default());
    cache.own(0, std::time::Duration::ZERO);
    // 100 conversations of 20 KB each: about 2 MB, eight times the budget.
    let mut conversations = Vec::new();
    for i in 0..100u64 {
        let peer = format!("peer{i}");
        let conversation: ConversationId = format!("dm:alice:{peer}").parse().unwrap();
        let mut m = message("alice", &conversation, &peer, T0 + i, i);
        m.body = "z".repeat(20_000);
        cache.append(std::slice::from_ref(&m)).await.unwrap();
        let page = cache.page(&conversation, Page::Latest, 50).await.unwrap();
        assert_eq!(page, vec![m.clone()]);
        conversations.push((conversation, m));
    }
    let held = cache.cached_bytes().await;
    assert!(held > 0 && held <= 256 * 1024, "{held} bytes cached");
    // Evicted pages are read from the store again, whole.
    for (conversation, m) in &conversations {
        let page = cache.page(conversation, Page::Latest, 50).await.unwrap();
        assert_eq!(page, vec![m.clone()]);
    }
}
