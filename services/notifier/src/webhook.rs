//! The webhook provider: POSTs each digest as JSON to a configured URL.
//!
//! The client is `reqwest` (rustls, the system's root certificates): a widely used,
//! maintained client that pools connections and speaks HTTPS, which push gateways require,
//! without the TLS plumbing a bare hyper client would need here.

use std::time::Duration;

use crate::digest::DigestPayload;
use crate::metrics::NotifierMetrics;
use crate::provider::{DeliverError, Delivering, Provider};

pub struct WebhookProvider {
    client: reqwest::Client,
    url: String,
    metrics: NotifierMetrics,
}

impl WebhookProvider {
    pub fn new(url: &str, timeout: Duration, metrics: NotifierMetrics) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("natter-notifier/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            url: url.into(),
            metrics,
        })
    }

    async fn post(&self, digest: &DigestPayload) -> Result<(), DeliverError> {
        self.metrics.webhook_attempts.inc();
        let body = serde_json::to_vec(digest).expect("digest to JSON");
        let sent = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("idempotency-key", &digest.id)
            .body(body)
            .send()
            .await;
        let result = match sent {
            // The error's text names the URL and the cause, never the body.
            Err(e) => Err(DeliverError::Temporary(e.without_url().to_string())),
            Ok(response) => classify(response.status().as_u16()),
        };
        if result.is_err() {
            self.metrics.webhook_failures.inc();
        }
        result
    }
}

impl Provider for WebhookProvider {
    fn deliver<'a>(&'a self, digest: &'a DigestPayload) -> Delivering<'a> {
        Box::pin(self.post(digest))
    }
}

/// What an HTTP status means for the digest: 2xx delivered; 408, 429 and 5xx worth another
/// attempt; any other status refused for good.
fn classify(status: u16) -> Result<(), DeliverError> {
    match status {
        200..=299 => Ok(()),
        408 | 429 | 500..=599 => Err(DeliverError::Temporary(format!("HTTP {status}"))),
        _ => Err(DeliverError::Rejected(format!("HTTP {status}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert!(classify(200).is_ok());
        assert!(classify(204).is_ok());
        for temporary in [408, 429, 500, 502, 503] {
            assert!(
                matches!(classify(temporary), Err(DeliverError::Temporary(_))),
                "{temporary}"
            );
        }
        for rejected in [301, 400, 401, 404, 413] {
            assert!(
                matches!(classify(rejected), Err(DeliverError::Rejected(_))),
                "{rejected}"
            );
        }
    }
}
