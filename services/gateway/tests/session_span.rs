//! Everything a session logs carries its user and connection id at the default log level
//! (`info`): a session's warning, recorded by a subscriber filtered like a production one,
//! sits inside a `session` span naming the user and the connection from its `welcome`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::Connection;
use plumbing::BusConfig;
use plumbing::nats_auth::{NatsAuth, Role};
use plumbing::nats_server::{NatsServer, NatsServerOptions};
use protocol::frames::ServerFrame;
use protocol::{Encoding, ErrorCode};
use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

const SECRET: &str = "span-secret";

/// The fields of a span or an event, as text.
#[derive(Default, Clone)]
struct Fields(Vec<(String, String)>);

impl Fields {
    fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().into(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().into(), value.into()));
    }
}

/// A warning: its message, and the fields of the `session` span it happened in, if any.
type Warning = (String, Option<Fields>);

#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<Warning>>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Warnings {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if *event.metadata().level() != Level::WARN {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let session = ctx.event_scope(event).and_then(|scope| {
            scope
                .from_root()
                .find(|span| span.name() == "session")
                .and_then(|span| span.extensions().get::<Fields>().cloned())
        });
        let message = fields.get("message").unwrap_or_default();
        self.0.lock().unwrap().push((message, session));
    }
}

#[tokio::test]
async fn a_sessions_warning_names_its_user_and_connection_at_info_level() {
    let warnings = Warnings::default();
    let subscriber =
        tracing_subscriber::registry().with(warnings.clone().with_filter(LevelFilter::INFO));
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber");

    let store = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(NatsServerOptions::scratch(
        store.path().into(),
        NatsAuth::ensure(&store.path().join("auth"), &[], &[]).unwrap(),
    ))
    .unwrap();
    let client = nats.client_as(Role::Gateway).await.unwrap();
    let config = gateway::GatewayConfig {
        listen_addr: ([127, 0, 0, 1], 0).into(),
        jwt_secret: SECRET.into(),
        ..Default::default()
    };
    let stop = CancellationToken::new();
    let liveness = nats.client_as(Role::Gateway).await.unwrap();
    let gw = gateway::Gateway::start(
        config,
        &BusConfig::default(),
        client,
        liveness,
        stop.clone(),
    )
    .await
    .unwrap();
    let url = format!("ws://{}/v1/ws", gw.addr);
    let token = gateway::mint_token(SECRET, "alice", 3600);
    let mut alice = Connection::connect(&url, &token, Encoding::Json)
        .await
        .unwrap();
    let conn = match alice.next_frame().await.unwrap() {
        ServerFrame::Welcome { conn, .. } => conn,
        other => panic!("expected welcome, got {other:?}"),
    };

    // No chat service runs: the send is not answered, which the session logs as a warning
    // before it tells the client.
    alice.send("bob", "c1", "hello").await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let ServerFrame::Error { code, cid, .. } = alice.next_frame().await.unwrap() {
                return (code, cid);
            }
        }
    })
    .await
    .expect("an answer to the send");
    assert_eq!(answer.0, ErrorCode::Unavailable);

    let recorded = warnings.0.lock().unwrap().clone();
    let (_, session) = recorded
        .iter()
        .find(|(message, _)| message == "send not answered")
        .unwrap_or_else(|| {
            panic!(
                "no 'send not answered' warning in {:?}",
                messages(&recorded)
            )
        });
    let session = session
        .as_ref()
        .expect("the warning is inside the session span");
    assert_eq!(session.get("user").as_deref(), Some("alice"));
    assert_eq!(session.get("conn"), Some(conn.to_string()));

    stop.cancel();
    gw.wait().await;
}

fn messages(recorded: &[Warning]) -> Vec<&str> {
    recorded.iter().map(|(m, _)| m.as_str()).collect()
}
