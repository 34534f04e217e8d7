//! The history writer against a real nats-server: a writer that dies in the middle of a batch
//! loses nothing, and the replay after restart leaves every message in the store once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use history::store::suite::message;
use history::{
    EmbeddedStore, History, HistoryConfig, Page, ReceiptMarkers, StaticMembership, Store,
    StoreError,
};
use plumbing::BusConfig;
use plumbing::nats_auth::{NatsAuth, Role};
use plumbing::nats_server::{NatsServer, NatsServerOptions};
use protocol::frames::{ConversationSummary, Message};
use protocol::payloads::StoredMessage;
use protocol::{ConversationId, GroupId, MessageId, UserId, subjects};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Writes the first half of the first batch of several messages it gets, then hangs: a
/// process dying mid-write. (A batch of one, which a writer may pull first when the consumer
/// has only one message ready, is written whole: it has no middle.)
struct DiesMidBatch {
    inner: EmbeddedStore,
    dying: Arc<Notify>,
}

impl Store for DiesMidBatch {
    async fn append(&self, m: &[Message]) -> Result<(), StoreError> {
        if m.len() < 2 {
            return self.inner.append(m).await;
        }
        self.inner.append(&m[..m.len() / 2]).await?;
        self.dying.notify_one();
        std::future::pending().await
    }
    async fn page(
        &self,
        c: &ConversationId,
        p: Page,
        l: usize,
    ) -> Result<Vec<Message>, StoreError> {
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

#[tokio::test]
async fn a_writer_killed_mid_batch_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(NatsServerOptions::scratch(
        dir.path().join("nats"),
        NatsAuth::ensure(&dir.path().join("auth"), &[], &[]).unwrap(),
    ))
    .unwrap();
    // The test stores messages as the chat service would; the writers run as history.
    let client = nats.client_as(Role::Chat).await.unwrap();
    let service_nats = nats.client_as(Role::History).await.unwrap();
    let bus = BusConfig::default();
    let js = async_nats::jetstream::new(client.clone());
    plumbing::bus::ensure_messages_streams(&js, &bus)
        .await
        .unwrap();

    // 300 messages answered SENT: in the stream before the writer runs.
    let c: ConversationId = "dm:alice:bob".parse().unwrap();
    let all: Vec<Message> = (0..300)
        .map(|i| message("alice", &c, "bob", 1_750_000_000_000 + i, i))
        .collect();
    for m in &all {
        let stored = StoredMessage {
            message: m.clone(),
            origin: None,
            groups_revision: None,
        };
        js.publish(
            subjects::message(&c, bus.partitions),
            serde_json::to_vec(&stored).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }

    let store = EmbeddedStore::open(&dir.path().join("history.redb")).unwrap();
    let dying = Arc::new(Notify::new());
    let config = HistoryConfig {
        writer_ack_wait_ms: 1_000,
        ..Default::default()
    };
    let doomed = DiesMidBatch {
        inner: store.clone(),
        dying: dying.clone(),
    };
    let first = History::start(
        config.clone(),
        &bus,
        service_nats.clone(),
        doomed,
        Arc::new(StaticMembership::default()),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(30), dying.notified())
        .await
        .expect("the writer took a batch of several messages");
    first.abort();
    let half = store.page(&c, Page::Latest, 1000).await.unwrap().len();
    assert!(
        half > 0 && half < 300,
        "the batch was cut in the middle ({half} written)"
    );

    let _second = History::start(
        config,
        &bus,
        service_nats,
        store.clone(),
        Arc::new(StaticMembership::default()),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    // Redelivery waits for the ack deadline of the dead writer's messages.
    let started = Instant::now();
    loop {
        let stored = store.page(&c, Page::Latest, 1000).await.unwrap();
        if stored.len() == 300 {
            let mut ids: Vec<MessageId> = stored.iter().map(|m| m.id).collect();
            ids.reverse();
            let expected: Vec<MessageId> = all.iter().map(|m| m.id).collect();
            assert_eq!(ids, expected, "every message exactly once, in order");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "only {} stored",
            stored.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let list = store
        .conversations(&UserId::new("bob").unwrap(), &[], 10)
        .await
        .unwrap();
    assert_eq!(
        list[0].unread, 300,
        "replayed messages are not counted twice"
    );
}
