//! NATS is not open: every connection needs an nkey of natter's and TLS, and each identity is
//! allowed only its subjects. These are the attacks of the security review, each refused by
//! nats-server itself: storing a message "from alice", reading other users' traffic, and
//! publishing a forged frame straight into a gateway's delivery subject.

use std::path::{Path, PathBuf};

use async_nats::{Client, ConnectOptions, Event};
use plumbing::nats_auth::{NatsAuth, Role, read_seed};
use protocol::frames::ServerFrame;
use protocol::payloads::{SendRequest, StoredMessage};
use protocol::{ErrorCode, subjects};
use testkit::{Stack, TEST_BOT, TEST_INTEGRATOR, expect_message, expect_sent, within};
use tokio::sync::mpsc;

/// A connection made by hand (not through natter's `bus::connect`), with the server's errors
/// collected, so that refusals are seen and do not count as a natter service's violations.
struct Intruder {
    client: Client,
    errors: mpsc::UnboundedReceiver<String>,
}

impl Intruder {
    async fn connect(stack: &Stack, seed: &Path, inbox: &str) -> Self {
        let (tx, errors) = mpsc::unbounded_channel();
        let client = ConnectOptions::new()
            .nkey(read_seed(seed).unwrap())
            .add_root_certificates(stack.nats.auth().ca_file())
            .require_tls(true)
            .custom_inbox_prefix(inbox)
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let Event::ServerError(e) = event {
                        let _ = tx.send(e.to_string());
                    }
                }
            })
            .connect(stack.nats.url())
            .await
            .expect("the identity's own credentials are accepted");
        Self { client, errors }
    }

    async fn as_integrator(stack: &Stack) -> Self {
        let seed = stack.nats.auth().integrator_seed(TEST_INTEGRATOR);
        Self::connect(stack, &seed, &format!("_INBOX.{TEST_INTEGRATOR}")).await
    }

    async fn as_role(stack: &Stack, role: Role) -> Self {
        let seed = stack.nats.auth().seed_file(role);
        Self::connect(stack, &seed, &role.inbox_prefix()).await
    }

    /// The server's next error names `operation` on `subject` as a permissions violation.
    async fn expect_refused(&mut self, operation: &str, subject: &str) {
        let error = within(self.errors.recv()).await.expect("connection open");
        assert!(
            error.contains(&format!("Permissions Violation for {operation}"))
                && error.contains(subject),
            "expected {operation} to {subject} refused, got {error:?}"
        );
    }
}

fn send_payload(from: &str, to: &str, cid: &str) -> Vec<u8> {
    let request = SendRequest {
        attachment: None,
        change: None,
        from: from.parse().unwrap(),
        to: to.into(),
        group: None,
        cid: cid.into(),
        body: "hi".into(),
        origin: None,
        reply_to: None,
    };
    serde_json::to_vec(&request).unwrap()
}

#[tokio::test]
async fn nats_refuses_a_connection_without_credentials_or_without_tls() {
    let stack = Stack::new().start().await;
    let auth = stack.nats.auth();
    let url = stack.nats.url();

    let anonymous = ConnectOptions::new()
        .add_root_certificates(auth.ca_file())
        .require_tls(true)
        .connect(&url)
        .await;
    assert!(anonymous.is_err(), "a connection without a seed is refused");

    // A seed made for another deployment.
    let elsewhere = std::env::temp_dir().join(format!("natter-elsewhere-{}", ulid::Ulid::new()));
    let other = NatsAuth::ensure(&elsewhere, &[], &[]).unwrap();
    let other_seed = read_seed(&other.seed_file(Role::Gateway)).unwrap();
    std::fs::remove_dir_all(&elsewhere).unwrap();
    let stranger = ConnectOptions::new()
        .nkey(other_seed)
        .add_root_certificates(auth.ca_file())
        .connect(&url)
        .await;
    assert!(stranger.is_err(), "a seed natter did not make is refused");

    // The right seed, but trusting only the system's CAs: the server's certificate is not
    // one of theirs, so no credential is sent over an unverified connection.
    let unverified = ConnectOptions::new()
        .nkey(read_seed(&auth.seed_file(Role::Gateway)).unwrap())
        .connect(&url)
        .await;
    assert!(unverified.is_err(), "the connection needs natter's CA");
}

#[tokio::test]
async fn an_integrator_speaks_only_for_its_own_users() {
    let stack = Stack::new().start().await;
    let mut alice = stack.connect("alice", 0).await;
    let mut helpdesk = Intruder::as_integrator(&stack).await;
    let bot = TEST_BOT.parse().unwrap();

    // As its bot: sent, and alice gets it.
    let reply = helpdesk
        .client
        .request(
            subjects::chat_send(&bot),
            send_payload("bot", "alice", "h1").into(),
        )
        .await
        .unwrap();
    let sent: ServerFrame = serde_json::from_slice(&reply.payload).unwrap();
    assert!(matches!(sent, ServerFrame::Sent { .. }), "{sent:?}");
    assert_eq!(expect_message(&mut alice).await.from.as_str(), "bot");

    // As alice, on alice's subject: NATS refuses the publish itself.
    let alice_id = "alice".parse().unwrap();
    helpdesk
        .client
        .publish(
            subjects::chat_send(&alice_id),
            send_payload("alice", "bob", "h2").into(),
        )
        .await
        .unwrap();
    helpdesk
        .expect_refused("Publish", "natter.chat.send.alice")
        .await;
    helpdesk
        .client
        .publish(subjects::history_query(&alice_id), "{}".into())
        .await
        .unwrap();
    helpdesk
        .expect_refused("Publish", "natter.history.query.alice")
        .await;

    // As alice, on its bot's subject: the chat service refuses the payload.
    let reply = helpdesk
        .client
        .request(
            subjects::chat_send(&bot),
            send_payload("alice", "bob", "h3").into(),
        )
        .await
        .unwrap();
    let refused: ServerFrame = serde_json::from_slice(&reply.payload).unwrap();
    assert!(
        matches!(
            refused,
            ServerFrame::Error {
                code: ErrorCode::Forbidden,
                ..
            }
        ),
        "{refused:?}"
    );

    // It reads nothing but its own replies: not the deliveries, not other identities' inboxes.
    for subject in ["natter.gw.*.deliver", "_INBOX.gateway.>", "natter.msg.>"] {
        let _sub = helpdesk.client.subscribe(subject).await.unwrap();
        helpdesk.expect_refused("Subscription", subject).await;
    }
}

#[tokio::test]
async fn no_identity_but_chat_can_forge_a_stored_message_or_a_delivery() {
    let stack = Stack::new().start().await;
    let mut bob = stack.connect("bob", 0).await;
    let mut alice = stack.connect("alice", 0).await;
    let gateway_inbox = stack.gateways[0].id.parse().unwrap();
    let forged_delivery = r#"{"targets":[],"frame":{"type":"message","id":"01JGGVSAKV7Y2XW9P4CQ8R6T3M","conversation":"dm:alice:bob","from":"alice","to":"bob","cid":"x","body":"forged","ts":1}}"#;
    let forged_message = serde_json::to_vec(&StoredMessage {
        message: serde_json::from_str(
            r#"{"id":"01JGGVSAKV7Y2XW9P4CQ8R6T3M","conversation":"dm:alice:bob","from":"alice","to":"bob","cid":"x","body":"forged","ts":1}"#,
        )
        .unwrap(),
        origin: None,
        groups_revision: None,
    })
    .unwrap();

    for role in [Role::Gateway, Role::History, Role::Notifier] {
        let mut intruder = Intruder::as_role(&stack, role).await;
        let deliver = subjects::gateway_deliver(&gateway_inbox);
        intruder
            .client
            .publish(deliver.clone(), forged_delivery.into())
            .await
            .unwrap();
        intruder.expect_refused("Publish", &deliver).await;
        intruder
            .client
            .publish("natter.msg.0.dm.alice.bob", forged_message.clone().into())
            .await
            .unwrap();
        intruder
            .expect_refused("Publish", "natter.msg.0.dm.alice.bob")
            .await;
        let delete = format!("$JS.API.STREAM.DELETE.{}", subjects::messages_stream(0));
        intruder
            .client
            .publish(delete.clone(), "".into())
            .await
            .unwrap();
        intruder.expect_refused("Publish", &delete).await;
    }

    // Nothing forged arrived or was stored: bob's next message is alice's real one.
    alice.send("bob", "real", "the real one").await.unwrap();
    expect_sent(&mut alice, "real").await;
    let next = expect_message(&mut bob).await;
    assert_eq!(next.body, "the real one");
    assert_eq!(stack.stored_messages().await, 1);
}

#[test]
fn the_shipped_nats_configurations_load_with_generated_credentials() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = std::env::temp_dir().join(format!("natter-confs-{}", ulid::Ulid::new()));
    let nats = root.join("nats");
    std::fs::create_dir_all(nats.join("cluster")).unwrap();
    let mut confs = vec![PathBuf::from("single.conf")];
    confs.extend(["n1", "n2", "n3"].map(|n| PathBuf::from(format!("cluster/{n}.conf"))));
    for conf in &confs {
        std::fs::copy(repo.join("nats").join(conf), nats.join(conf)).unwrap();
    }
    // As docs/security.md says: the credentials in `auth/` beside the configurations.
    let hosts = ["n1", "n2", "n3"].map(String::from);
    NatsAuth::ensure(&nats.join("auth"), &hosts, &[]).unwrap();
    let server = plumbing::nats_server::NatsServer::binary().unwrap();
    for conf in &confs {
        let out = std::process::Command::new(&server)
            .arg("-t")
            .arg("-c")
            .arg(nats.join(conf))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} does not load: {}{}",
            conf.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::remove_dir_all(&root).unwrap();
}
