//! compose.yaml, run without a container engine (testkit's `compose`): what the file promises
//! an operator, and the whole stack started as processes, chatting, scraped by Prometheus, and
//! alerting when a consumer stops.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use plumbing::BusConfig;
use plumbing::nats_auth::Role;
use protocol::{Encoding, subjects};
use testkit::client::Connection;
use testkit::compose::{ComposeRun, ROOT, built_binaries, dockerfile_binaries, read_compose};
use testkit::{expect_delivered, expect_history, expect_message, expect_sent, expect_welcome};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// What compose.yaml promises an operator, read from the file: long-running services restart
/// and have a health check, dependants wait for health, and the build context leaves out
/// what must not be sent to the engine.
#[test]
fn compose_restarts_gates_and_builds_what_it_runs() {
    let file = read_compose();
    for (name, s) in &file.services {
        let one_shot = s.command.iter().any(|a| a == "migrate" || a == "nats-auth");
        if !one_shot {
            assert_eq!(
                s.restart.as_deref(),
                Some("unless-stopped"),
                "{name} restarts when it fails"
            );
            assert!(s.healthcheck.is_some(), "{name} has a health check");
        }
        for (dependency, condition) in s.depends_on.conditions() {
            let d = &file.services[&dependency];
            let expected = if d.command.iter().any(|a| a == "migrate" || a == "nats-auth") {
                "service_completed_successfully"
            } else {
                "service_healthy"
            };
            assert_eq!(condition, expected, "{name} waits for {dependency}");
        }
        if s.build.is_some() {
            assert!(
                dockerfile_binaries().contains(&s.command[0]),
                "{name} runs {}, which the image does not hold",
                s.command[0]
            );
        }
    }
    let ignored = std::fs::read_to_string(format!("{ROOT}/.dockerignore")).expect(".dockerignore");
    for path in ["target/", ".tools/", ".data/", ".git/"] {
        assert!(
            ignored.lines().any(|l| l.trim() == path),
            ".dockerignore leaves out {path}"
        );
    }
}

/// compose.yaml up on 127.`block`.0.N, with a fresh gateway secret (returned).
async fn compose_up(block: u8) -> (ComposeRun, String) {
    built_binaries();
    let secret = format!("{}{}", ulid::Ulid::new(), ulid::Ulid::new());
    let variables = HashMap::from([("NATTER_JWT_SECRET".to_string(), secret.clone())]);
    let mut run = ComposeRun::new(read_compose(), variables, block);
    run.up().await;
    (run, secret)
}

/// A user connected to a gateway of `run`, welcomed.
async fn connect(run: &ComposeRun, secret: &str, gateway: &str, user: &str) -> Connection {
    let url = format!("ws://{}/v1/ws", run.published(gateway));
    let token = gateway::mint_token(secret, user, 600);
    let mut conn = Connection::connect(&url, &token, Encoding::Json)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e:?}"));
    expect_welcome(&mut conn).await;
    conn
}

/// Two users of this run (the CQL store outlives it).
fn two_users() -> (String, String) {
    let run_id = ulid::Ulid::new().to_string().to_lowercase();
    (format!("alice{run_id}"), format!("bob{run_id}"))
}

/// Every service of compose.yaml as a process: the stack comes up health-gated, two users on
/// the two gateways chat, history answers from the CQL store, every metrics endpoint answers
/// on the compose network and Prometheus scrapes them all, with no alert firing.
#[tokio::test(flavor = "multi_thread")]
async fn compose_yaml_starts_and_chats() {
    let (mut run, secret) = compose_up(77).await;
    let (alice, bob) = two_users();
    let mut a = connect(&run, &secret, "gateway-a", &alice).await;
    let mut b = connect(&run, &secret, "gateway-b", &bob).await;
    a.send(&bob, "c1", "hello through compose").await.unwrap();
    let sent = expect_sent(&mut a, "c1").await;
    let got = expect_message(&mut b).await;
    assert_eq!(got.id, sent.id);
    assert_eq!(got.body, "hello through compose");
    b.ack(&got.conversation, got.id).await.unwrap();
    let (delivered, by) = expect_delivered(&mut a).await;
    assert_eq!((delivered, by.as_str()), (sent.id, bob.as_str()));

    // History comes from the history service and the CQL store; the writer is asynchronous.
    let conversation = protocol::ConversationId::direct(
        &protocol::UserId::new(&alice).unwrap(),
        &protocol::UserId::new(&bob).unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0.. {
        let qid = format!("h{i}");
        let frame = serde_json::json!({
            "type": "history", "qid": qid, "conversation": conversation.to_string(), "limit": 10
        });
        b.send_raw(WsMessage::text(frame.to_string()))
            .await
            .unwrap();
        let (page, _) = expect_history(&mut b, &qid)
            .await
            .expect("history answered");
        if page.iter().any(|m| m.id == sent.id) {
            break;
        }
        assert!(Instant::now() < deadline, "history never held the message");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Metrics, where a Prometheus on the compose network scrapes them.
    let mut exposed = String::new();
    for (service, port, metric) in [
        ("chat", 9090, "natter_chat_sends_total 1"),
        ("history", 9091, "natter_history_store_reads_total"),
        ("notifier", 9092, "natter_notifier_events_total"),
        ("gateway-a", 8080, "natter_gateway_connections 1"),
        ("gateway-b", 8080, "natter_gateway_connections 1"),
    ] {
        let text = testkit::http_get(run.addr(service, port), "/metrics").await;
        assert!(
            text.contains(metric),
            "{service}:{port}/metrics lacks {metric:?}:\n{text}"
        );
        exposed.push_str(&text);
    }
    assert_rules_and_dashboard_use(&exposed);
    // Prometheus scrapes every natter process, and a healthy stack fires nothing.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let targets = run.prometheus("/api/v1/targets").await;
        let targets = targets["data"]["activeTargets"].as_array().unwrap().clone();
        let jobs: Vec<&str> = targets
            .iter()
            .filter_map(|t| t["labels"]["job"].as_str())
            .collect();
        let all_up = targets.iter().all(|t| t["health"] == "up");
        if all_up && targets.len() == 5 {
            for job in [
                "natter-gateway",
                "natter-chat",
                "natter-history",
                "natter-notifier",
            ] {
                assert!(jobs.contains(&job), "Prometheus scrapes {job}: {jobs:?}");
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "targets not all up: {targets:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let firing: Vec<_> = run.alerts().await;
    assert!(firing.is_empty(), "alerts on a healthy stack: {firing:?}");
    run.assert_all_well();
}

/// Every `natter_…` metric the alert rules and the dashboard name is one the running stack
/// exposes (a histogram by its `_bucket`, `_sum` and `_count` series too).
fn assert_rules_and_dashboard_use(exposition: &str) {
    let mut exposed = std::collections::BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (name, kind) = (words.next().unwrap(), words.next().unwrap_or(""));
        exposed.insert(name.to_string());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                exposed.insert(format!("{name}{suffix}"));
            }
        }
    }
    for file in [
        "deploy/prometheus/natter-rules.yml",
        "deploy/grafana/natter-dashboard.json",
    ] {
        let text = std::fs::read_to_string(Path::new(ROOT).join(file)).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("natter_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            assert!(
                exposed.contains(&name),
                "{file} uses {name}, which no natter process exposes"
            );
        }
    }
}

/// A stopped consumer fires its alert. The history writer's consumer is paused (NATS's own
/// consumer pause, as the operator identity may do); messages keep coming, and Prometheus,
/// with natter's rules, raises `NatterConsumerLagGrowing` for that consumer and nothing else.
/// Resumed, the writer catches up and the alert goes away.
#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_consumer_fires_its_alert() {
    let (mut run, secret) = compose_up(79).await;
    let (alice, bob) = two_users();
    let mut a = connect(&run, &secret, "gateway-a", &alice).await;

    let auth = run.volume("nats-auth");
    let bus = BusConfig {
        nats_url: format!("nats://{}", run.addr("nats", 4222)),
        nkey_file: Some(auth.join("operator.nk")),
        tls_ca_file: Some(auth.join("ca.pem")),
        ..BusConfig::default()
    };
    let nats = plumbing::bus::connect(&bus, Role::Operator, "compose-test")
        .await
        .expect("the operator connects");
    let (stream, consumer) = (subjects::messages_stream(0), subjects::history_writer(0));
    let pause = |until: Option<&str>| {
        let (nats, subject) = (
            nats.clone(),
            format!("$JS.API.CONSUMER.PAUSE.{stream}.{consumer}"),
        );
        let body = match until {
            Some(until) => serde_json::json!({ "pause_until": until }).to_string(),
            None => String::new(),
        };
        async move {
            let answer = nats.request(subject, body.into()).await.expect("pause");
            serde_json::from_slice::<serde_json::Value>(&answer.payload).unwrap()
        }
    };
    let paused = pause(Some("2999-01-01T00:00:00Z")).await;
    assert_eq!(paused["paused"], true, "{paused}");

    let is_lag_alert = |(name, state, labels): &(String, String, serde_json::Value)| {
        name == "NatterConsumerLagGrowing" && state == "firing" && labels["consumer"] == *consumer
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    for n in 0.. {
        let cid = format!("c{n}");
        a.send(&bob, &cid, "while the writer is stopped")
            .await
            .unwrap();
        expect_sent(&mut a, &cid).await;
        let alerts = run.alerts().await;
        if alerts.iter().any(is_lag_alert) {
            let others: Vec<_> = alerts.iter().filter(|a| !is_lag_alert(a)).collect();
            assert!(others.is_empty(), "only the lag alert: {others:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no alert for the stopped consumer {consumer}: {alerts:?}"
        );
        // One message about every quarter second: the lag grows at a steady pace.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let resumed = pause(None).await;
    assert_eq!(resumed["paused"], false, "{resumed}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while run.alerts().await.iter().any(is_lag_alert) {
        assert!(
            Instant::now() < deadline,
            "the alert stayed after the resume"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    run.assert_all_well();
}
