//! Starting, serving and stopping a gateway: the accept loop (hyper HTTP/1 with upgrades,
//! routed by warp), the presence lease, the NATS inbox, and the shutdown order.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use plumbing::BusConfig;
use plumbing::nats_auth::Role;
use protocol::{CloseCode, ConnId, GatewayId};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use warp::Filter;

use crate::auth::Verifier;
use crate::config::GatewayConfig;
use crate::handshake::{self, UpgradeSlot};
use crate::inbox;
use crate::local::Local;
use crate::metrics::GatewayMetrics;
use crate::origins::Origins;
use crate::presence::Presence;
use crate::replay::Replayer;
use crate::reregister;
use crate::state::GatewayState;
use plumbing::bus::HistoryFloor;

/// A running gateway.
pub struct Gateway {
    /// Where it listens (useful with port 0).
    pub addr: SocketAddr,
    pub id: GatewayId,
    task: JoinHandle<()>,
    state: Arc<GatewayState>,
}

impl Gateway {
    /// Connects the gateway's NATS resources, binds, and serves until `shutdown` is cancelled.
    /// `liveness` is a second connection to the same NATS, as the same identity, used only
    /// for the gateway's lease (see `presence`).
    pub async fn start(
        config: GatewayConfig,
        bus: &BusConfig,
        nats: async_nats::Client,
        liveness: async_nats::Client,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !config.jwt_secret.is_empty(),
            "gateway.jwt_secret is empty: set it in the config file or NATTER_GATEWAY__JWT_SECRET"
        );
        let gateway = if config.gateway_id.is_empty() {
            GatewayId::new(format!(
                "gw-{}",
                ulid::Ulid::new().to_string().to_lowercase()
            ))?
        } else {
            GatewayId::new(&config.gateway_id)
                .map_err(|e| anyhow::anyhow!("gateway.gateway_id: {e}"))?
        };
        let js = async_nats::jetstream::new(nats.clone());
        let buckets = plumbing::bus::ensure_presence_buckets(&js, bus).await?;
        // The lease is written over a connection of its own: behind a reconnect storm's
        // replays on the shared one it would wait its turn, and a lapsed lease takes every
        // user of the gateway offline.
        let buckets = plumbing::bus::PresenceBuckets {
            gateways: async_nats::jetstream::new(liveness)
                .get_key_value(protocol::subjects::GATEWAYS_BUCKET)
                .await?,
            ..buckets
        };
        let push_tokens = plumbing::bus::ensure_push_tokens_bucket(&js, bus).await?;
        let attachments = plumbing::bus::ensure_attachments(&js, bus).await?;
        // Session markers go to the messages streams, whoever starts first.
        let streams = plumbing::bus::messages_streams(&js, bus).await?;
        let mut conn_ids = ulid::Generator::new();
        let boot = ConnId(conn_ids.generate()?);
        let metrics = GatewayMetrics::new();
        let presence = Presence::new(
            buckets,
            js.clone(),
            gateway.clone(),
            boot,
            Duration::from_millis(config.lease_ttl_ms),
            bus.partitions,
            &metrics,
        );
        // The lease goes first: sessions registered before it would look stale.
        presence.put_lease().await?;

        let listener = listen(config.listen_addr)?;
        let addr = listener.local_addr()?;
        let routed_from = plumbing::bus::heads(&js, bus.partitions).await;
        let replayer = Replayer {
            history_floor: HistoryFloor::new(streams),
            partitions: bus.partitions,
            js: js.clone(),
            groups_timeout: Duration::from_millis(config.send_timeout_ms),
            max_messages: config.sync_max_messages,
            page: config.sync_page.max(1),
            permits: tokio::sync::Semaphore::new(config.sync_concurrency.max(1)),
            admission: crate::replay::Admission::new(
                Duration::from_millis(config.sync_wait_max_ms),
                metrics.replays_waiting.clone(),
            ),
            metrics: metrics.clone(),
            direct_gets: crate::replay::DirectGets::start(nats.clone()).await?,
            gap_reads: crate::replay::GapReads::new(
                config.sync_gap_read_max_messages,
                metrics.gap_reads.clone(),
                metrics.jetstream_api_requests.clone(),
            ),
            stream_head: crate::replay::StreamHead::new(
                js.clone(),
                bus.partitions,
                metrics.jetstream_api_requests.clone(),
            ),
        };
        let local = Arc::new(Local::new(
            gateway.clone(),
            nats.clone(),
            routed_from,
            bus.partitions,
            metrics.clone(),
        ));
        let state = Arc::new(GatewayState {
            verifier: Verifier::new(&config.jwt_secret, config.token_rules()),
            origins: Origins::new(&config.allowed_origins, config.web_client.then_some(addr)),
            config,
            replayer,
            watchers: Arc::default(),
            local,
            gateway: gateway.clone(),
            nats,
            presence,
            push_tokens,
            attachments,
            metrics,
            shutdown,
            sessions: TaskTracker::new(),
            conn_ids: Mutex::new(conn_ids),
            extra_metrics: Mutex::new(Vec::new()),
            reconnected: tokio::sync::watch::Sender::new(0),
        });
        let inbox = inbox::subscribe(state.local.clone()).await?;
        tracing::info!(gateway = %gateway, %addr, "gateway listening");
        let task = tokio::spawn(serve(state.clone(), listener, inbox));
        Ok(Self {
            addr,
            id: gateway,
            task,
            state,
        })
    }

    /// Also renders `metrics` at this gateway's `/metrics`.
    pub fn export_metrics(&self, metrics: plumbing::Metrics) {
        self.state.extra_metrics.lock().unwrap().push(metrics);
    }

    /// Waits until the gateway has shut down.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Runs a gateway until `shutdown`, then stops it in this order:
/// 1. stop accepting connections;
/// 2. stop refreshing and release the presence lease, so the chat service counts every
///    session here as offline at once instead of after the lease TTL;
/// 3. send every session a close frame with code 4000 (reconnect elsewhere);
/// 4. wait for the sessions to finish, at most `shutdown_grace_ms`;
/// 5. flush what is still buffered for NATS.
pub async fn run(
    config: GatewayConfig,
    bus: &BusConfig,
    nats: async_nats::Client,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let liveness = plumbing::bus::connect(bus, Role::Gateway, "natter-gateway-liveness").await?;
    Gateway::start(config, bus, nats, liveness.clone(), shutdown)
        .await?
        .wait()
        .await;
    let _ = liveness.drain().await;
    Ok(())
}

/// Connections the kernel queues for `accept`. tokio's `bind` asks for 1,024: in a reconnect
/// storm thousands of clients connect within a round trip, the queue overflows, and the
/// client's kernel sends each dropped SYN again only a second later (a 5,000-client storm
/// lost 3,064 SYNs and took 1.8 s with no message to replay). Linux caps the value at
/// `net.core.somaxconn` (4,096 by default), the limit Go's listeners take too.
const ACCEPT_QUEUE: u32 = 65_535;

fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_QUEUE)
}

async fn serve(state: Arc<GatewayState>, listener: TcpListener, inbox: JoinHandle<()>) {
    let lease_stop = CancellationToken::new();
    let lease = tokio::spawn(reregister::keep_registered(
        state.clone(),
        lease_stop.clone(),
    ));
    let routes = routes(state.clone());

    loop {
        let (stream, _peer) = tokio::select! {
            _ = state.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let routes = routes.clone();
        let shutdown = state.shutdown.clone();
        tokio::spawn(serve_http(stream, routes, shutdown));
    }

    drop(listener);
    lease_stop.cancel();
    let _ = lease.await;
    if let Err(e) = state.presence.release_lease().await {
        tracing::warn!(error = %e, "could not release presence lease");
    }
    for (_, handle) in state.local.registry.all() {
        handle.outbox.close(CloseCode::Reconnect);
    }
    state.sessions.close();
    let grace = Duration::from_millis(state.config.shutdown_grace_ms);
    if tokio::time::timeout(grace, state.sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = state.local.registry.len(),
            "sessions still open after grace period"
        );
    }
    inbox.abort();
    let _ = state.nats.flush().await;
    tracing::info!(gateway = %state.gateway, "gateway stopped");
}

/// Serves one TCP connection: HTTP/1 requests until it upgrades to a WebSocket or closes.
async fn serve_http(stream: tokio::net::TcpStream, routes: Routes, shutdown: CancellationToken) {
    let warp_service = warp::service(routes);
    let service =
        hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            // Make hyper's upgrade handle reachable from a warp filter.
            if let Some(on_upgrade) = req.extensions_mut().remove::<OnUpgrade>() {
                req.extensions_mut().insert(UpgradeSlot::new(on_upgrade));
            }
            let mut warp_service = warp_service.clone();
            async move { warp_service.call(req).await }
        });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        // Slow-loris guard: a client gets 10 s to send its request headers.
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

type Routes = warp::filters::BoxedFilter<(warp::reply::Response,)>;

fn routes(state: Arc<GatewayState>) -> Routes {
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let ws = warp::path!("v1" / "ws")
        .and(with_state.clone())
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::ext::optional::<UpgradeSlot>())
        .map(
            |state: Arc<GatewayState>, method, headers, query: String, slot| {
                let query = (!query.is_empty()).then_some(query.as_str());
                handshake::respond(&state, &method, &headers, query, slot)
            },
        );
    let healthz = warp::path!("healthz")
        .and(with_state.clone())
        .map(|state: Arc<GatewayState>| {
            use warp::Reply;
            match state.nats.connection_state() {
                async_nats::connection::State::Connected => {
                    warp::reply::with_status("ok", http::StatusCode::OK).into_response()
                }
                _ => warp::reply::with_status(
                    "nats disconnected",
                    http::StatusCode::SERVICE_UNAVAILABLE,
                )
                .into_response(),
            }
        });
    let metrics = warp::path!("metrics")
        .and(with_state)
        .map(|state: Arc<GatewayState>| {
            use warp::Reply;
            state
                .metrics
                .connections
                .set(state.local.registry.len() as i64);
            state
                .metrics
                .users_online
                .set(state.local.registry.users_online() as i64);
            let mut text = state.metrics.registry.render();
            for extra in state.extra_metrics.lock().unwrap().iter() {
                text.push_str(&extra.render());
            }
            text.push_str(&plumbing::metrics::process().render());
            warp::reply::with_header(text, "content-type", "text/plain; version=0.0.4")
                .into_response()
        });
    let not_found = warp::any().map(|| {
        use warp::Reply;
        warp::reply::with_status("not found", http::StatusCode::NOT_FOUND).into_response()
    });
    let web_client = crate::web_client::routes(state.config.web_client);
    let dev_token =
        crate::dev_token::routes(state.config.dev_tokens, state.config.jwt_secret.clone());
    let attachments = crate::attachments::routes(state.clone());
    ws.or(healthz)
        .unify()
        .or(attachments)
        .unify()
        .or(metrics)
        .unify()
        .or(web_client)
        .unify()
        .or(dev_token)
        .unify()
        .or(not_found)
        .unify()
        .boxed()
}
