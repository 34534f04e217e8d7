//! The messages streams' state for replays: each partition's last sequence (a replay's
//! head), first sequence (what was trimmed) and epoch. A replay needs a read that began after
//! it asked (its session's registration must be in the head), but not one of its own:
//! replays that ask while a read is under way share the next one, and its failure too (a
//! stream in a leader election answers nothing until the request times out, and replays
//! queued behind each other's timeouts would wait one timeout each). A reconnect storm then
//! makes a few stream-info requests of the JetStream API per round trip instead of one per
//! device.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_nats::jetstream;
use plumbing::Counter;
use protocol::subjects;

/// Every partition's messages stream, in partition order; shared, since every replay of a
/// storm holds the same ones (a stream's info is a few KiB of strings and maps to copy).
pub type Streams = Arc<[jetstream::stream::Stream]>;

type Read = Result<Streams, String>;

pub struct StreamHead {
    js: jetstream::Context,
    partitions: u32,
    /// Reads started so far.
    started: AtomicU64,
    /// One read at a time.
    reading: tokio::sync::Mutex<()>,
    /// The newest read: the number it started as, and what it returned.
    last: Mutex<Option<(u64, Read)>>,
    /// Counts the stream-info requests.
    api: Counter,
}

impl StreamHead {
    pub fn new(js: jetstream::Context, partitions: u32, api: Counter) -> Self {
        Self {
            api,
            js,
            partitions,
            started: AtomicU64::new(0),
            reading: tokio::sync::Mutex::new(()),
            last: Mutex::new(None),
        }
    }

    /// Every partition's messages stream, with its info read after this call began.
    pub async fn read(&self) -> anyhow::Result<Streams> {
        let asked = self.started.load(Ordering::SeqCst);
        let _one = self.reading.lock().await;
        if let Some((n, read)) = self.last.lock().expect("stream head").as_ref()
            && *n > asked
        {
            // Began after this call did.
            return read.clone().map_err(|e| anyhow::anyhow!(e));
        }
        let n = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        self.api.add(self.partitions as u64);
        let reads = (0..self.partitions).map(|k| self.js.get_stream(subjects::messages_stream(k)));
        let read: Read = futures::future::try_join_all(reads)
            .await
            .map(Streams::from)
            .map_err(|e| format!("messages streams unreadable: {e}"));
        *self.last.lock().expect("stream head") = Some((n, read.clone()));
        read.map_err(|e| anyhow::anyhow!(e))
    }
}
