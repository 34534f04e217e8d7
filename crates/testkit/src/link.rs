//! A TCP relay between one service and nats-server that a test can cut and restore: it cuts
//! that service off from NATS while every other service stays connected, as a network
//! partition would.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running relay; stopped on drop.
pub struct Link {
    addr: SocketAddr,
    /// Cancelled to cut: ends every relayed connection. `None` while cut.
    up: Arc<Mutex<Option<CancellationToken>>>,
    task: JoinHandle<()>,
}

impl Link {
    /// Relays to `nats_url` (`nats://127.0.0.1:PORT`).
    pub async fn start(nats_url: &str) -> Self {
        let target = nats_url
            .strip_prefix("nats://")
            .expect("a nats:// URL")
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let up = Arc::new(Mutex::new(Some(CancellationToken::new())));
        let task = tokio::spawn(relay(listener, target, up.clone()));
        Self { addr, up, task }
    }

    /// The URL to give the service instead of the server's.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Closes every relayed connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        if let Some(up) = self.up.lock().unwrap().take() {
            up.cancel();
        }
    }

    /// Relays new connections again.
    pub fn restore(&self) {
        self.up
            .lock()
            .unwrap()
            .get_or_insert_with(CancellationToken::new);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

async fn relay(listener: TcpListener, target: String, up: Arc<Mutex<Option<CancellationToken>>>) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        // While cut, an accepted connection is dropped at once: the client sees it fail.
        let Some(up) = up.lock().unwrap().clone() else {
            continue;
        };
        let target = target.clone();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(&target).await else {
                return;
            };
            tokio::select! {
                _ = up.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
            }
        });
    }
}
