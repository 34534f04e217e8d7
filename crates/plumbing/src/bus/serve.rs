//! Taking messages off the bus until shutdown: the next message of a subscription raced
//! against the stop token (a pull consumer's: `pulled`), queue-group subscriptions, the request/reply
//! loop that answers them with bounded concurrency, and the one way an answer is published
//! (never dropped for its size).

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use protocol::frames::ServerFrame;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::round_trip;

/// The next message of `sub`, or `None` once `stop` is cancelled or the subscription ends.
pub async fn next_or_stop(
    sub: &mut async_nats::Subscriber,
    stop: &CancellationToken,
) -> Option<async_nats::Message> {
    tokio::select! {
        _ = stop.cancelled() => None,
        next = sub.next() => next,
    }
}

/// The next message of `sub` that decodes as JSON `T`, or `None` once `stop` is cancelled or
/// the subscription ends. Undecodable messages are logged (not their content) and skipped.
pub async fn next_json<T: serde::de::DeserializeOwned>(
    sub: &mut async_nats::Subscriber,
    stop: &CancellationToken,
) -> Option<T> {
    loop {
        let msg = next_or_stop(sub, stop).await?;
        match serde_json::from_slice(&msg.payload) {
            Ok(value) => return Some(value),
            Err(e) => tracing::warn!(error = %e, subject = %msg.subject, "undecodable payload"),
        }
    }
}

/// Answers the JSON questions `sub` receives for a shard this instance holds, until `stop`
/// (the shard is given up): each in a task of its own, with `answer`'s JSON on its reply
/// subject. No answer when `answer` gives none or `stop` came meanwhile: the asker then asks
/// again and reaches the shard's new holder. `what` names the questions in the log.
pub async fn answer_shard<Q, A, F, Fut>(
    nats: async_nats::Client,
    what: &'static str,
    mut sub: async_nats::Subscriber,
    stop: CancellationToken,
    answer: F,
) where
    Q: serde::de::DeserializeOwned,
    A: serde::Serialize + Send,
    F: Fn(Q) -> Fut,
    Fut: Future<Output = Option<A>> + Send + 'static,
{
    while let Some(msg) = next_or_stop(&mut sub, &stop).await {
        let Some(reply) = msg.reply else { continue };
        let Ok(question) = serde_json::from_slice::<Q>(&msg.payload) else {
            tracing::warn!(what, "undecodable question");
            continue;
        };
        let answering = answer(question);
        let (nats, stop) = (nats.clone(), stop.clone());
        tokio::spawn(async move {
            let Some(answer) = answering.await else {
                return;
            };
            if stop.is_cancelled() {
                return;
            }
            let payload = serde_json::to_vec(&answer).expect("answer to JSON");
            if let Err(e) = nats.publish(reply, payload.into()).await {
                tracing::debug!(error = %e, what, "answer not sent");
            }
        });
    }
    if let Err(e) = sub.unsubscribe().await {
        tracing::debug!(error = %e, what, "question subscription not closed");
    }
}

/// Joins `queue` on `subject`; the subscription is live on the server when this returns, so
/// requests sent from other connections right after can already reach it.
pub async fn serve_queue(
    nats: &async_nats::Client,
    subject: &'static str,
    queue: &'static str,
) -> anyhow::Result<async_nats::Subscriber> {
    let sub = nats.queue_subscribe(subject, queue.into()).await?;
    round_trip(nats).await;
    Ok(sub)
}

/// Answers requests from `sub` until `stop`: each with `answer`'s frame on its reply subject
/// (see [`reply`]), at most `concurrency` at once (further requests wait in the
/// subscription). Requests in progress when `stop` comes are finished.
pub async fn answer_requests<F, Fut>(
    nats: async_nats::Client,
    mut sub: async_nats::Subscriber,
    concurrency: usize,
    stop: CancellationToken,
    answer: F,
) -> anyhow::Result<()>
where
    F: Fn(async_nats::Subject, bytes::Bytes) -> Fut,
    Fut: Future<Output = ServerFrame> + Send + 'static,
{
    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(concurrency));
    while let Some(msg) = next_or_stop(&mut sub, &stop).await {
        let Some(reply_to) = msg.reply else {
            continue;
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let answering = answer(msg.subject, msg.payload);
        let nats = nats.clone();
        tracker.spawn(async move {
            let _permit = permit;
            reply(&nats, reply_to, &answering.await).await;
        });
    }
    let _ = sub.unsubscribe().await;
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Publishes `frame` as JSON on `reply_to`. A frame larger than the server's `max_payload`
/// cannot be published, and the asker would wait for nothing until its timeout: it is
/// answered with error `1009` (answer too large) for the same `qid` or `cid` instead.
pub async fn reply(nats: &async_nats::Client, reply_to: async_nats::Subject, frame: &ServerFrame) {
    let mut payload = serde_json::to_vec(frame).expect("frame to JSON");
    let max_payload = nats.server_info().max_payload;
    if max_payload > 0 && payload.len() > max_payload {
        tracing::warn!(
            bytes = payload.len(),
            max_payload,
            "answer too large for one NATS message; refused"
        );
        payload = serde_json::to_vec(&frame.too_large(max_payload)).expect("frame to JSON");
    }
    if let Err(e) = nats.publish(reply_to, payload.into()).await {
        tracing::warn!(error = %e, "could not answer a request");
    }
}
