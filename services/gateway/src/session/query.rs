//! Requests answered by another service with a frame for the client: history pages, the
//! conversation list and group receipts (the history service, which authorises them: it knows
//! group membership), and group operations (the chat service). At most `MAX_QUERIES` wait at
//! once per session; each answer, or an error carrying the request's `qid`, is queued when it
//! arrives.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use protocol::frames::ServerFrame;
use protocol::payloads::{GroupRequest, HistoryQuery, HistoryRequest};
use protocol::{ClientMsgId, GroupOp, subjects};

use super::Session;
use crate::refusal::Refusal;

/// Queries one session may have waiting at once.
const MAX_QUERIES: usize = 8;

/// The frames answering one query.
pub(super) type Query = Pin<Box<dyn Future<Output = Vec<ServerFrame>> + Send>>;

impl Session {
    /// Asks the history service.
    pub(super) fn start_query(&mut self, qid: ClientMsgId, query: HistoryQuery) {
        let request = HistoryRequest {
            user: self.user.clone(),
            qid: qid.clone(),
            query,
        };
        let payload = serde_json::to_vec(&request).expect("history request to JSON");
        self.start_request(qid, subjects::history_query(&self.user), payload);
    }

    /// Group operations are the chat service's; it authorises them.
    pub(super) fn on_group(&mut self, qid: ClientMsgId, op: GroupOp) {
        let request = GroupRequest {
            user: self.user.clone(),
            qid: qid.clone(),
            op,
        };
        let payload = serde_json::to_vec(&request).expect("group request to JSON");
        self.start_request(qid, subjects::chat_group(&self.user), payload);
    }

    fn start_request(&mut self, qid: ClientMsgId, subject: String, payload: Vec<u8>) {
        if self.queries_full() {
            return self.refuse(Refusal::QueriesWaiting { qid: Some(qid) });
        }
        let nats = self.state.nats.clone();
        let timeout = Duration::from_millis(self.state.config.send_timeout_ms);
        self.push_query(Box::pin(async move {
            let answer = ask(nats, subject, payload, timeout, qid).await;
            vec![answer.unwrap_or_else(|refusal| refusal.frame())]
        }));
    }

    pub(super) fn push_query(&mut self, query: Query) {
        self.queries
            .get_or_insert_with(FuturesUnordered::new)
            .push(query);
    }

    pub(super) fn queries_full(&self) -> bool {
        self.queries
            .as_ref()
            .is_some_and(|q| q.len() >= MAX_QUERIES)
    }

    pub(super) fn has_queries(&self) -> bool {
        self.queries.as_ref().is_some_and(|q| !q.is_empty())
    }
}

pub(super) async fn next_answer(
    queries: &mut Option<FuturesUnordered<Query>>,
) -> Option<Vec<ServerFrame>> {
    match queries {
        Some(q) => q.next().await,
        None => std::future::pending().await,
    }
}

/// One request to a service whose answer is a frame for the client.
pub(super) async fn ask(
    nats: async_nats::Client,
    subject: String,
    payload: Vec<u8>,
    timeout: Duration,
    qid: ClientMsgId,
) -> Result<ServerFrame, Refusal> {
    match tokio::time::timeout(timeout, nats.request(subject.clone(), payload.into())).await {
        Ok(Ok(reply)) => serde_json::from_slice::<ServerFrame>(&reply.payload).map_err(|e| {
            tracing::warn!(error = %e, %subject, "undecodable answer");
            Refusal::ServiceFailed { qid }
        }),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, %subject, "request failed");
            Err(Refusal::ServiceUnavailable { qid })
        }
        Err(_) => Err(Refusal::ServiceUnavailable { qid }),
    }
}
