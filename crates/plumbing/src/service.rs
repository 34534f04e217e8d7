//! The skeleton every service binary runs, so that a `main.rs` holds only its service's own
//! lines: configuration, the NATS connection, the service, its `/metrics` and `/healthz`
//! endpoint, the signal that stops it and the drain, always in that order.
//!
//! ```text
//! Service::new("natter-chat", Role::Chat, "chat")
//!     .metrics_addr(([127, 0, 0, 1], 9090))
//!     .start(|config: ChatConfig, bus, nats, shutdown| async move {
//!         let chat = Chat::start(config, &bus, nats, shutdown).await?;
//!         Ok(Started::new(chat.metrics.clone(), chat.wait()))
//!     })
//!     .await
//! ```

use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context;
use figment::Figment;
use figment::providers::Serialized;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::nats_auth::Role;
use crate::{BusConfig, Metrics, bus, config, metrics, shutdown, telemetry};

/// How long the NATS connection may take to drain (flush what is buffered) on the way out.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// One service binary. `T` is the service's own configuration section.
pub struct Service<T> {
    name: &'static str,
    role: Role,
    section: &'static str,
    file: Option<PathBuf>,
    metrics_addr: SocketAddr,
    config: PhantomData<fn() -> T>,
}

/// What a service binary reads from its configuration file and the environment.
#[derive(Debug)]
pub struct Loaded<T> {
    /// The service's own section (`[chat]`, `[history]`...).
    pub config: T,
    /// `[bus]`: how to reach NATS and how the shared resources are shaped.
    pub bus: BusConfig,
    /// `metrics_addr`: where `/metrics` and `/healthz` are served, when the file sets it.
    pub metrics_addr: Option<SocketAddr>,
}

/// A service that has started, as [`Service::start`] needs it: the registry to serve at
/// `/metrics`, and the future that completes once the service has stopped.
pub struct Started {
    metrics: Metrics,
    stopped: Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>,
}

impl Started {
    /// `stopped` completes once the service has stopped after shutdown, with its first error.
    pub fn new(
        metrics: Metrics,
        stopped: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) -> Self {
        Self {
            metrics,
            stopped: Box::pin(stopped),
        }
    }

    /// The service's metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Waits until the service has stopped, returning its first error.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.stopped.await
    }
}

impl<T: Serialize + DeserializeOwned + Default> Service<T> {
    /// The binary `name` (also its NATS client name), connecting to NATS as `role`, whose own
    /// configuration is the `section` table of the file named by the first argument.
    /// `/metrics` goes to a free port on the loopback address unless
    /// [`Service::metrics_addr`] or the file say where.
    pub fn new(name: &'static str, role: Role, section: &'static str) -> Self {
        Self {
            name,
            role,
            section,
            file: std::env::args().nth(1).map(PathBuf::from),
            metrics_addr: ([127, 0, 0, 1], 0).into(),
            config: PhantomData,
        }
    }

    /// Reads this file instead of the one the first argument names (`None`: no file).
    pub fn config_file(mut self, file: Option<PathBuf>) -> Self {
        self.file = file;
        self
    }

    /// Where `/metrics` and `/healthz` are served when the file sets no `metrics_addr`.
    pub fn metrics_addr(mut self, addr: impl Into<SocketAddr>) -> Self {
        self.metrics_addr = addr.into();
        self
    }

    /// Sets up logging and loads the configuration: each section's defaults, then the file,
    /// then `NATTER_*` variables. Errors name the key and the source that was wrong.
    pub fn load(&self) -> anyhow::Result<Loaded<T>> {
        telemetry::init();
        let defaults = Figment::from(Serialized::default("bus", BusConfig::default()))
            .merge(Serialized::default(self.section, T::default()));
        let figment = config::layered(defaults, self.file.as_deref());
        let metrics_addr = if figment.contains("metrics_addr") {
            Some(section(&figment, "metrics_addr")?)
        } else {
            None
        };
        Ok(Loaded {
            config: section(&figment, self.section)?,
            bus: section(&figment, "bus")?,
            metrics_addr,
        })
    }

    /// Runs a service that serves its own `/metrics` and `/healthz` (the gateway, on its
    /// WebSocket listener). `run` gets the service's section, the bus configuration, the NATS
    /// connection and the shutdown token, and returns once the service has stopped.
    ///
    /// Order: load the configuration, install the signal handler, connect to NATS, run the
    /// service until a signal stops it, drain NATS (at most [`DRAIN_GRACE`]).
    pub async fn run<F, Fut>(self, run: F) -> anyhow::Result<()>
    where
        F: FnOnce(T, BusConfig, async_nats::Client, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        self.run_loaded(|loaded, nats, shutdown| run(loaded.config, loaded.bus, nats, shutdown))
            .await
    }

    /// Runs a service whose `/metrics` and `/healthz` the skeleton serves. `start` gets what
    /// [`Service::run`]'s closure gets and returns once the service has started.
    ///
    /// Order: load the configuration, install the signal handler, connect to NATS, start the
    /// service, serve `/metrics` and `/healthz` (healthy while NATS is connected), wait until a
    /// signal has stopped the service, drain NATS (at most [`DRAIN_GRACE`]).
    pub async fn start<F, Fut>(self, start: F) -> anyhow::Result<()>
    where
        F: FnOnce(T, BusConfig, async_nats::Client, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<Started>>,
    {
        let (name, default_addr) = (self.name, self.metrics_addr);
        self.run_loaded(|loaded, nats, shutdown| async move {
            let started = start(loaded.config, loaded.bus, nats.clone(), shutdown.clone()).await?;
            let addr = loaded.metrics_addr.unwrap_or(default_addr);
            let healthy =
                move || nats.connection_state() == async_nats::connection::State::Connected;
            let bound = metrics::serve(addr, started.metrics.clone(), healthy, shutdown).await?;
            tracing::info!(%bound, service = name, "metrics listening");
            started.wait().await
        })
        .await
    }

    /// The order both [`Service::run`] and [`Service::start`] follow around their service.
    async fn run_loaded<F, Fut>(self, serve: F) -> anyhow::Result<()>
    where
        F: FnOnce(Loaded<T>, async_nats::Client, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let loaded = self.load()?;
        let shutdown = shutdown::on_signal();
        let nats = bus::connect(&loaded.bus, self.role, self.name).await?;
        let result = serve(loaded, nats.clone(), shutdown).await;
        if tokio::time::timeout(DRAIN_GRACE, nats.drain())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?DRAIN_GRACE, "NATS did not drain in time");
        }
        result
    }
}

/// The value at the top-level key `key`. Errors name the key in full (figment's own
/// `extract_inner` puts the section last: `window_ms.chat`).
fn section<V: DeserializeOwned>(figment: &Figment, key: &str) -> anyhow::Result<V> {
    let invalid = || format!("invalid configuration in `{key}`");
    if figment.find_value(key).is_ok_and(|v| v.as_dict().is_some()) {
        figment.focus(key).extract().with_context(invalid)
    } else {
        figment.extract_inner(key).with_context(invalid)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Section {
        window_ms: u64,
        name: String,
    }

    fn service(file: &std::path::Path) -> Service<Section> {
        Service::new("natter-test", Role::Operator, "test").config_file(Some(file.into()))
    }

    #[test]
    fn sections_come_from_the_file_over_their_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("natter.toml");
        std::fs::write(
            &file,
            "metrics_addr = \"127.0.0.1:9999\"\n\
             [bus]\nreplicas = 3\n\
             [test]\nwindow_ms = 250\n\
             [other]\nignored = true\n",
        )
        .unwrap();
        let loaded = service(&file).load().unwrap();
        assert_eq!(loaded.config.window_ms, 250);
        assert_eq!(loaded.config.name, "");
        assert_eq!(loaded.bus.replicas, 3);
        assert_eq!(
            loaded.bus.dedup_window_ms,
            BusConfig::default().dedup_window_ms
        );
        assert_eq!(loaded.metrics_addr, Some(([127, 0, 0, 1], 9999).into()));
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("natter.toml");
        std::fs::write(&file, "[test]\nwindow_ms = \"soon\"\n").unwrap();
        let error = service(&file).load().unwrap_err();
        let message = format!("{error:#}");
        assert!(
            message.contains("`test`") && message.contains("window_ms"),
            "{message}"
        );
        assert!(service(&dir.path().join("missing.toml")).load().is_err());
    }
}
