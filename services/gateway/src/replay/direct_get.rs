//! JetStream's batched direct get (ADR-31), which reads stored messages without a consumer:
//! one request, answered by any server holding the stream with the matching messages, then
//! an end-of-batch status. No JetStream API request is made, so a reconnect storm reads
//! without queueing in the JetStream API or going through the meta leader.
//!
//! async-nats asks for one message at a time only, so batches are read here. One wildcard
//! reply subscription per gateway serves every batch, told apart by the reply subject's last
//! token: a subscription per read would add a SUB and an UNSUB per read, which a cluster
//! gossips to every server.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;

/// How long a batch may take from request to its end.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A direct get request (the server's `JSApiMsgGetRequest`).
#[derive(Debug, Default, Serialize)]
pub struct Request<'a> {
    /// From this sequence on (with `next_by_subj`).
    #[serde(skip_serializing_if = "is_zero")]
    pub seq: u64,
    /// Messages on this subject, at or after `seq`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_by_subj: Option<&'a str>,
    /// How many at most.
    #[serde(skip_serializing_if = "is_zero")]
    pub batch: u64,
    /// The last message of each of these subjects, none after `up_to_seq`.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub multi_last: &'a [String],
    #[serde(skip_serializing_if = "is_zero")]
    pub up_to_seq: u64,
    /// Read-after-write (ADR-49): a server whose copy of the stream ends before this
    /// sequence does not answer with data. Sent for servers that know it; nats-server 2.15.1
    /// ignores it, so replays read replicated streams with consumers (see `Replayer`).
    #[serde(skip_serializing_if = "is_zero")]
    pub min_last_seq: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One stored message of a batch.
pub struct Entry {
    pub seq: u64,
    pub subject: String,
    /// Messages matching the request after this one (beyond any batch size).
    pub pending: u64,
    pub payload: Bytes,
}

/// Batched direct gets of one gateway, sharing one reply subscription.
pub struct DirectGets {
    client: async_nats::Client,
    /// Replies go to `<prefix>.<read>`.
    prefix: String,
    reads: Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<async_nats::Message>>>>,
    next: AtomicU64,
}

impl DirectGets {
    /// Subscribes to the replies; the subscription lives as long as the connection.
    pub async fn start(client: async_nats::Client) -> anyhow::Result<Arc<Self>> {
        let prefix = client.new_inbox();
        let mut replies = client.subscribe(format!("{prefix}.*")).await?;
        let reads: Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<_>>>> = Arc::default();
        let routed = Arc::downgrade(&reads);
        tokio::spawn(async move {
            while let Some(msg) = replies.next().await {
                let Some(reads) = routed.upgrade() else {
                    break;
                };
                let read = msg.subject.rsplit('.').next().and_then(|t| t.parse().ok());
                let reads = reads.lock().expect("direct get readers");
                if let Some(reader) = read.and_then(|r: u64| reads.get(&r)) {
                    let _ = reader.send(msg);
                }
            }
        });
        Ok(Arc::new(Self {
            client,
            prefix,
            reads,
            next: AtomicU64::new(0),
        }))
    }

    /// Sends `request` to `stream`'s direct get and collects every message of the answer;
    /// a subject with nothing to send answers an empty batch.
    pub async fn batch(&self, stream: &str, request: &Request<'_>) -> anyhow::Result<Vec<Entry>> {
        let read = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, mut replies) = mpsc::unbounded_channel();
        self.reads
            .lock()
            .expect("direct get readers")
            .insert(read, tx);
        let _registered = Registered(self, read);
        let body = serde_json::to_vec(request).expect("direct get request to JSON");
        self.client
            .publish_with_reply(
                format!("$JS.API.DIRECT.GET.{stream}"),
                format!("{}.{read}", self.prefix),
                body.into(),
            )
            .await?;
        let mut entries = Vec::new();
        let collect = async {
            while let Some(msg) = replies.recv().await {
                match msg.status.map(|s| s.as_u16()) {
                    None => entries.push(entry(msg)?),
                    // The end of the batch, or nothing matched.
                    Some(204 | 404) => return Ok(()),
                    Some(code) => anyhow::bail!(
                        "direct get answered {code} {}",
                        msg.description.unwrap_or_default()
                    ),
                }
            }
            anyhow::bail!("direct get: the reply subscription ended")
        };
        tokio::time::timeout(TIMEOUT, collect)
            .await
            .map_err(|_| anyhow::anyhow!("direct get timed out"))??;
        Ok(entries)
    }
}

/// Removes a read's reply channel however the read ends.
struct Registered<'a>(&'a DirectGets, u64);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0
            .reads
            .lock()
            .expect("direct get readers")
            .remove(&self.1);
    }
}

fn entry(msg: async_nats::Message) -> anyhow::Result<Entry> {
    let headers = msg
        .headers
        .ok_or_else(|| anyhow::anyhow!("direct get reply without headers"))?;
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.as_str().to_string())
            .ok_or_else(|| anyhow::anyhow!("direct get reply without {name}"))
    };
    let number = |name: &str| -> anyhow::Result<u64> {
        header(name)?
            .parse()
            .map_err(|_| anyhow::anyhow!("direct get reply: {name} is not a number"))
    };
    Ok(Entry {
        seq: number("Nats-Sequence")?,
        subject: header("Nats-Subject")?,
        pending: number("Nats-Num-Pending").unwrap_or(0),
        payload: msg.payload,
    })
}
