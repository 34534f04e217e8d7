//! The moka cache in front of the store: the most recent messages of each conversation
//! (100 per conversation by default), written through on append, bounded by the bytes of the
//! messages it holds (256 MiB by default), so large messages cannot grow it past its budget.
//!
//! It holds only the conversations of the partitions this instance writes. Several history
//! instances share the partitions (see `writer.rs`), and a page is complete only where every
//! write passed through this cache: another instance's cache would miss what this one wrote.
//! So an instance answers its own partitions' pages from memory and the others' from the
//! store, and any instance's answer holds every message any instance has stored. A partition
//! it takes over is served from memory only after the writer's `ack_wait`, by which time the
//! batch a former owner was writing is either stored or redelivered here.
//!
//! Concurrent misses on one conversation are merged into one store read, and a reader never
//! sees a page with a gap: loading a page and writing new messages through to it are
//! serialised per conversation (striped async locks), and the write-through happens only after
//! the store confirmed the write. So a load either sees the new message in the store, or
//! finishes before the write-through, which then adds it to the loaded page.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use plumbing::{Counter, Metrics};
use protocol::frames::Message;
use protocol::{ConversationId, MessageId};
use serde::{Deserialize, Serialize};

use crate::store::{Page, Store, StoreError};

/// Cache sizes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheConfig {
    /// The most bytes of messages kept (bodies plus a fixed overhead per message); the least
    /// recently used conversations leave first.
    pub max_bytes: u64,
    /// Newest messages kept per conversation.
    pub messages_per_conversation: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024 * 1024,
            messages_per_conversation: 100,
        }
    }
}

/// What a message costs the cache: its text and ids, plus the rest of its struct.
fn weight(m: &Message) -> u64 {
    let reactions: usize = m
        .reacted
        .iter()
        .map(|r| r.user.as_str().len() + r.emoji.len() + 56)
        .sum();
    (m.body.len() + m.cid.as_str().len() + m.from.as_str().len() + reactions + 160) as u64
}

/// The newest messages of one conversation, oldest first.
struct Recent {
    messages: VecDeque<Message>,
    /// The page holds the whole conversation (it never overflowed its capacity).
    complete: bool,
    /// The [`weight`] of `messages`.
    bytes: u64,
}

impl Recent {
    fn merge(&mut self, m: &Message, capacity: usize) {
        if let Some(change) = &m.change {
            // Not a message of the page: applied to the one it names, if the page holds it.
            let pos = self.messages.partition_point(|x| x.id < change.target());
            if let Some(target) = self
                .messages
                .get_mut(pos)
                .filter(|x| x.id == change.target())
            {
                let before = weight(target);
                if target.apply(m) {
                    self.bytes = self.bytes - before + weight(target);
                }
            }
            return;
        }
        let pos = self.messages.partition_point(|x| x.id < m.id);
        if self.messages.get(pos).is_some_and(|x| x.id == m.id) {
            return; // a replay
        }
        if pos == 0 && !self.complete {
            return; // older than the page, which is not the whole conversation
        }
        self.messages.insert(pos, m.clone());
        self.bytes += weight(m);
        if self.messages.len() > capacity
            && let Some(oldest) = self.messages.pop_front()
        {
            self.bytes -= weight(&oldest);
            self.complete = false;
        }
    }

    /// Serves `page` from memory, or `None` when the store must answer.
    fn serve(&self, page: Page, limit: usize) -> Option<Vec<Message>> {
        let oldest = self.messages.front().map(|m| m.id);
        match page {
            Page::Latest => (self.complete || self.messages.len() >= limit)
                .then(|| self.messages.iter().rev().take(limit).cloned().collect()),
            Page::Before(id) => {
                let end = self.messages.partition_point(|x| x.id < id);
                (self.complete || end >= limit).then(|| {
                    self.messages
                        .range(..end)
                        .rev()
                        .take(limit)
                        .cloned()
                        .collect()
                })
            }
            Page::After(id) => (self.complete || oldest.is_some_and(|o| o <= id)).then(|| {
                let start = self.messages.partition_point(|x| x.id <= id);
                self.messages.range(start..).take(limit).cloned().collect()
            }),
        }
    }
}

type Slot = Arc<RwLock<Recent>>;

/// Cache counters, exported at `/metrics`.
#[derive(Clone)]
pub struct CacheMetrics {
    pub hits: Counter,
    pub misses: Counter,
    pub store_reads: Counter,
}

/// The store behind a cache of recent messages.
pub struct HistoryCache<S> {
    store: S,
    pages: moka::future::Cache<ConversationId, Slot>,
    stripes: Vec<tokio::sync::Mutex<()>>,
    capacity: usize,
    /// The deployment's partition count (`bus.partitions`).
    partitions: u32,
    /// The partitions this instance writes, and when the cache may start serving each.
    owned: RwLock<HashMap<u32, tokio::time::Instant>>,
    pub metrics: CacheMetrics,
}

impl<S: Store> HistoryCache<S> {
    /// A cache over `store` for a deployment of `partitions` partitions, serving none of them
    /// until [`own`](Self::own) says so.
    pub fn new(store: S, config: &CacheConfig, partitions: u32, metrics: &Metrics) -> Self {
        Self {
            store,
            pages: moka::future::Cache::builder()
                .max_capacity(config.max_bytes)
                .weigher(|_, slot: &Slot| {
                    let bytes = slot.read().unwrap().bytes;
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                .support_invalidation_closures()
                .build(),
            stripes: (0..1024).map(|_| tokio::sync::Mutex::new(())).collect(),
            capacity: config.messages_per_conversation,
            partitions,
            owned: RwLock::new(HashMap::new()),
            metrics: CacheMetrics {
                hits: metrics.counter(
                    "natter_history_cache_hits_total",
                    "reads served from the cache",
                ),
                misses: metrics.counter(
                    "natter_history_cache_misses_total",
                    "reads the cache could not serve",
                ),
                store_reads: metrics.counter(
                    "natter_history_store_reads_total",
                    "message page reads sent to the store",
                ),
            },
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// This instance now writes partition `k`: serve it from memory after `grace`.
    pub fn own(&self, k: u32, grace: Duration) {
        let from = tokio::time::Instant::now() + grace;
        self.owned.write().unwrap().insert(k, from);
    }

    /// This instance no longer writes partition `k`: forget its pages, serve it from the store.
    pub async fn disown(&self, k: u32) {
        self.owned.write().unwrap().remove(&k);
        let partitions = self.partitions;
        let dropped = self.pages.invalidate_entries_if(move |conversation, _| {
            protocol::subjects::partition(conversation, partitions) == k
        });
        if let Err(e) = dropped {
            tracing::warn!(error = %e, "cached pages of a partition not dropped");
        }
    }

    /// Whether the cache may serve `conversation`: its partition is written here, and
    /// every write to it since this instance took it over has passed through the cache.
    pub fn serves(&self, conversation: &ConversationId) -> bool {
        let k = protocol::subjects::partition(conversation, self.partitions);
        self.owned
            .read()
            .unwrap()
            .get(&k)
            .is_some_and(|from| tokio::time::Instant::now() >= *from)
    }

    fn stripe(&self, conversation: &ConversationId) -> &tokio::sync::Mutex<()> {
        // A fixed hasher: one conversation must always map to the same stripe.
        let mut fixed = std::collections::hash_map::DefaultHasher::new();
        conversation.hash(&mut fixed);
        &self.stripes[(fixed.finish() as usize) % self.stripes.len()]
    }

    /// Writes to the store, then through to cached pages.
    pub async fn append(&self, messages: &[Message]) -> Result<(), StoreError> {
        self.store.append(messages).await?;
        let mut by_conversation: Vec<(&ConversationId, Vec<&Message>)> = Vec::new();
        for m in messages {
            match by_conversation
                .iter_mut()
                .find(|(c, _)| *c == &m.conversation)
            {
                Some((_, ms)) => ms.push(m),
                None => by_conversation.push((&m.conversation, vec![m])),
            }
        }
        for (conversation, ms) in by_conversation {
            let _guard = self.stripe(conversation).lock().await;
            if let Some(slot) = self.pages.get(conversation).await {
                {
                    let mut recent = slot.write().unwrap();
                    for m in ms {
                        recent.merge(m, self.capacity);
                    }
                }
                // Inserted again so the cache weighs the grown page.
                self.pages.insert(conversation.clone(), slot).await;
            }
        }
        Ok(())
    }

    /// Up to `limit` messages, in the store's order for `page` (see [`Store::page`]).
    pub async fn page(
        &self,
        conversation: &ConversationId,
        page: Page,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        if limit <= self.capacity && self.serves(conversation) {
            let (slot, loaded) = self.slot(conversation).await?;
            let served = slot.read().unwrap().serve(page, limit);
            if let Some(found) = served {
                if loaded {
                    self.metrics.misses.inc();
                } else {
                    self.metrics.hits.inc();
                }
                return Ok(found);
            }
        }
        self.metrics.misses.inc();
        self.metrics.store_reads.inc();
        self.store.page(conversation, page, limit).await
    }

    /// One message by id: from the cached page when it holds it, else from the store.
    pub async fn message(
        &self,
        conversation: &ConversationId,
        id: MessageId,
    ) -> Result<Option<Message>, StoreError> {
        if self.serves(conversation)
            && let Some(slot) = self.pages.get(conversation).await
        {
            let recent = slot.read().unwrap();
            let pos = recent.messages.partition_point(|x| x.id < id);
            if let Some(m) = recent.messages.get(pos).filter(|m| m.id == id) {
                return Ok(Some(m.clone()));
            }
        }
        self.store.message(conversation, id).await
    }

    /// The bytes the cache holds, once its pending evictions are done.
    pub async fn cached_bytes(&self) -> u64 {
        self.pages.run_pending_tasks().await;
        self.pages.weighted_size()
    }

    /// Drops the cached page of `conversation` (the next read loads it again).
    pub async fn evict(&self, conversation: &ConversationId) {
        let _guard = self.stripe(conversation).lock().await;
        self.pages.invalidate(conversation).await;
    }

    /// The cached page of `conversation`, loaded from the store on a miss. Concurrent misses
    /// wait on the same stripe; the first loads, the others find its page.
    /// `true` with the slot when this call loaded it.
    async fn slot(&self, conversation: &ConversationId) -> Result<(Slot, bool), StoreError> {
        if let Some(slot) = self.pages.get(conversation).await {
            return Ok((slot, false));
        }
        let _guard = self.stripe(conversation).lock().await;
        if let Some(slot) = self.pages.get(conversation).await {
            return Ok((slot, false));
        }
        self.metrics.store_reads.inc();
        let mut newest = self
            .store
            .page(conversation, Page::Latest, self.capacity)
            .await?;
        let complete = newest.len() < self.capacity;
        newest.reverse();
        let bytes = newest.iter().map(weight).sum();
        let slot = Arc::new(RwLock::new(Recent {
            messages: newest.into(),
            complete,
            bytes,
        }));
        self.pages.insert(conversation.clone(), slot.clone()).await;
        Ok((slot, true))
    }
}
