//! The messages stream's state for replays: its last sequence (a replay's head), first
//! sequence (what was trimmed) and epoch. A replay needs a read that began after it asked
//! (its session's registration must be in the head), but not one of its own: replays that
//! ask while a read is under way share the next one. A reconnect storm then makes a few
//! stream-info requests of the JetStream API per round trip instead of one per device.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::jetstream;
use protocol::subjects;

pub struct StreamHead {
    js: jetstream::Context,
    /// Reads started so far.
    started: AtomicU64,
    /// One read at a time.
    reading: tokio::sync::Mutex<()>,
    /// The newest read: the number it started as, and the stream it returned.
    last: Mutex<Option<(u64, jetstream::stream::Stream)>>,
}

impl StreamHead {
    pub fn new(js: jetstream::Context) -> Self {
        Self {
            js,
            started: AtomicU64::new(0),
            reading: tokio::sync::Mutex::new(()),
            last: Mutex::new(None),
        }
    }

    /// The messages stream, with its info read after this call began.
    pub async fn read(&self) -> anyhow::Result<jetstream::stream::Stream> {
        let asked = self.started.load(Ordering::SeqCst);
        let _one = self.reading.lock().await;
        if let Some((n, stream)) = self.last.lock().expect("stream head").as_ref()
            && *n > asked
        {
            return Ok(stream.clone()); // began after this call did
        }
        let n = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let stream = self.js.get_stream(subjects::MESSAGES_STREAM).await?;
        *self.last.lock().expect("stream head") = Some((n, stream.clone()));
        Ok(stream)
    }
}
