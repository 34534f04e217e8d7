//! A webhook receiver for notifier tests: a small warp server on `127.0.0.1` that records
//! the JSON bodies POSTed to it, and can be told to answer 503 to the next requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use warp::Filter;

use crate::within;

/// Records the digests it accepted, in arrival order; stopped on drop.
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    /// Every request, refused ones included.
    requests: Arc<AtomicU32>,
    refuse: Arc<AtomicU32>,
    accepted: mpsc::UnboundedReceiver<serde_json::Value>,
    shutdown: CancellationToken,
}

impl WebhookReceiver {
    pub async fn start() -> Self {
        Self::start_on(([127, 0, 0, 1], 0).into()).await
    }

    /// Starts on `addr` (a port reserved with [`reserve_port`], to come up late).
    pub async fn start_on(addr: SocketAddr) -> Self {
        // Unbounded: a test's collector, holding the few digests a test makes.
        let (tx, accepted) = mpsc::unbounded_channel();
        let requests = Arc::new(AtomicU32::new(0));
        let refuse = Arc::new(AtomicU32::new(0));
        let (count, refusing) = (requests.clone(), refuse.clone());
        let route = warp::post()
            .and(warp::path!("push"))
            .and(warp::body::bytes())
            .map(move |body: bytes::Bytes| {
                count.fetch_add(1, Ordering::SeqCst);
                let refused = refusing
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if refused {
                    return warp::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                match serde_json::from_slice(&body) {
                    Ok(json) => {
                        let _ = tx.send(json);
                        warp::http::StatusCode::OK
                    }
                    Err(_) => warp::http::StatusCode::BAD_REQUEST,
                }
            });
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let server = warp::serve(route)
            .incoming(listener)
            .graceful(async move { stop.cancelled().await });
        tokio::spawn(server.run());
        Self {
            addr,
            requests,
            refuse,
            accepted,
            shutdown,
        }
    }

    /// The URL to configure as `webhook_url`.
    pub fn url(&self) -> String {
        format!("http://{}/push", self.addr)
    }

    /// Answers the next `n` requests with 503.
    pub fn refuse_next(&self, n: u32) {
        self.refuse.store(n, Ordering::SeqCst);
    }

    /// Requests received so far, refused ones included.
    pub fn requests(&self) -> u32 {
        self.requests.load(Ordering::SeqCst)
    }

    /// The next accepted digest, failing after [`crate::PATIENCE`].
    pub async fn next_digest(&mut self) -> serde_json::Value {
        within(self.accepted.recv()).await.expect("receiver open")
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A local address nothing listens on (yet): a webhook receiver that is down.
pub async fn reserve_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    listener.local_addr().expect("local addr")
}
