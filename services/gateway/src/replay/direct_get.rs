//! JetStream's batched direct get (ADR-31), which reads stored messages without a consumer:
//! one request, answered by any server holding the stream with the matching messages, then
//! an end-of-batch status. No JetStream API request is made, so a reconnect storm reads
//! without queueing in the JetStream API or going through the meta leader.
//!
//! async-nats asks for one message at a time only, so the batch is read here from a reply
//! subscription.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;

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
    /// A server whose copy of the stream ends before this sequence does not answer (412):
    /// a replica a few writes behind must not answer "nothing more" for what it lacks.
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

/// Sends `request` to `stream`'s direct get and collects every message of the answer; a
/// subject with nothing to send answers an empty batch.
pub async fn batch(
    client: &async_nats::Client,
    stream: &str,
    request: &Request<'_>,
) -> anyhow::Result<Vec<Entry>> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await?;
    let body = serde_json::to_vec(request).expect("direct get request to JSON");
    client
        .publish_with_reply(format!("$JS.API.DIRECT.GET.{stream}"), inbox, body.into())
        .await?;
    let mut entries = Vec::new();
    let read = async {
        while let Some(msg) = replies.next().await {
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
    tokio::time::timeout(TIMEOUT, read)
        .await
        .map_err(|_| anyhow::anyhow!("direct get timed out"))??;
    Ok(entries)
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
