//! Pins the wire format with literal frames, so a silent serde rename breaks a test, and keeps
//! `subjects.md` and `protocol::subjects` in step.

use serde_json::Value;
use testkit::client::Connection;
use testkit::{Stack, within};
use tokio_tungstenite::tungstenite::Message;

async fn next_json(conn: &mut Connection) -> Value {
    let msg = within(conn.next_raw()).await.expect("a frame");
    let Message::Text(text) = msg else {
        panic!("JSON sessions get text frames, got {msg:?}")
    };
    serde_json::from_str(&text).expect("valid JSON")
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

#[tokio::test]
async fn json_frames_have_the_documented_shape() {
    let stack = Stack::new().start().await;
    let mut alice = stack.connect("alice", 0).await;
    let mut bob = stack.connect("bob", 0).await;

    alice
        .send_raw(Message::text(
            r#"{"type":"send","to":"bob","cid":"w1","body":"hi"}"#,
        ))
        .await
        .unwrap();
    let accepted = next_json(&mut alice).await;
    assert_eq!(
        accepted,
        serde_json::json!({"type": "accepted", "cid": "w1"})
    );
    let sent = next_json(&mut alice).await;
    assert_eq!(sent["type"], "sent");
    assert_eq!(sent["cid"], "w1");
    assert_eq!(sent["conversation"], "dm:alice:bob");
    assert_eq!(sent["id"].as_str().unwrap().len(), 26, "a ULID");
    assert!(
        sent["ts"].as_u64().unwrap() > 1_700_000_000_000,
        "milliseconds"
    );

    let message = next_json(&mut bob).await;
    let mut k = keys(&message);
    k.sort();
    assert_eq!(
        k,
        [
            "body",
            "cid",
            "conversation",
            "cursor",
            "from",
            "id",
            "to",
            "ts",
            "type"
        ]
    );
    assert_eq!(message["type"], "message");
    assert_eq!(message["id"], sent["id"]);
    assert_eq!(
        (&message["from"], &message["to"], &message["body"]),
        (&"alice".into(), &"bob".into(), &"hi".into())
    );

    let ack = format!(
        r#"{{"type":"ack","conversation":"dm:alice:bob","id":{}}}"#,
        sent["id"]
    );
    bob.send_raw(Message::text(ack)).await.unwrap();
    let delivered = next_json(&mut alice).await;
    assert_eq!(
        delivered,
        serde_json::json!({"type": "delivered", "conversation": "dm:alice:bob", "id": sent["id"], "by": "bob"})
    );
    let read = format!(
        r#"{{"type":"read","conversation":"dm:alice:bob","up_to":{}}}"#,
        sent["id"]
    );
    bob.send_raw(Message::text(read)).await.unwrap();
    let seen = next_json(&mut alice).await;
    assert_eq!(
        seen,
        serde_json::json!({"type": "seen", "conversation": "dm:alice:bob", "up_to": sent["id"], "by": "bob"})
    );

    bob.send_raw(Message::text(r#"{"type":"ping","ts":42}"#))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut bob).await,
        serde_json::json!({"type": "pong", "ts": 42})
    );
    bob.send_raw(Message::text(
        r#"{"type":"send","to":"a b","cid":"w2","body":""}"#,
    ))
    .await
    .unwrap();
    let error = next_json(&mut bob).await;
    assert_eq!(
        (&error["type"], &error["code"], &error["cid"]),
        (&"error".into(), &1002.into(), &"w2".into())
    );
}

fn subjects_md() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../subjects.md"))
        .expect("subjects.md at the repository root")
}

/// The names quoted in a piece of Markdown.
fn quoted(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

#[test]
fn subjects_md_and_the_subjects_module_agree() {
    let whole = subjects_md();
    // The permissions section lists NATS wildcards; it is checked against the roles below.
    let doc = whole
        .split("## Identities and permissions")
        .next()
        .expect("text before the permissions");
    let quoted = quoted(doc);
    let catalogue = protocol::subjects::catalogue();
    for name in &catalogue {
        assert!(
            quoted.contains(&name.as_str()),
            "subjects.md does not document `{name}`"
        );
    }
    for q in quoted {
        if q.starts_with("natter.") || q.starts_with("NATTER_") {
            assert!(
                catalogue.iter().any(|c| c == q),
                "subjects.md documents `{q}`, which protocol::subjects does not build"
            );
        }
    }
}

#[test]
fn subjects_md_gives_each_identity_exactly_its_permissions() {
    use plumbing::nats_auth::{Integrator, Role};
    use std::collections::BTreeSet;
    let doc = subjects_md();
    let section = doc
        .split("## Identities and permissions")
        .nth(1)
        .expect("subjects.md has an \"Identities and permissions\" section");
    // natter's own subjects of a row's publish and subscribe columns.
    let row = |identity: &str| -> (BTreeSet<String>, BTreeSet<String>) {
        let line = section
            .lines()
            .find(|l| l.starts_with(&format!("| {identity} ")))
            .unwrap_or_else(|| panic!("no row for {identity}"));
        let cells: Vec<&str> = line.split('|').collect();
        let natter = |cell: &str| -> BTreeSet<String> {
            quoted(cell)
                .into_iter()
                .filter(|q| q.starts_with("natter.") || *q == ">")
                .map(String::from)
                .collect()
        };
        (natter(cells[2]), natter(cells[3]))
    };
    let natter_only = |subjects: &[String]| -> BTreeSet<String> {
        subjects
            .iter()
            .filter(|q| q.starts_with("natter.") || q.as_str() == ">")
            .cloned()
            .collect()
    };
    for role in Role::ALL {
        let p = role.permissions();
        assert_eq!(
            row(role.name()),
            (natter_only(&p.publish), natter_only(&p.subscribe)),
            "subjects.md's row for {} and plumbing::nats_auth::roles differ",
            role.name()
        );
    }
    let integrator = Integrator {
        name: "name".into(),
        users: vec![protocol::UserId::new("u").unwrap()],
    };
    let p = integrator.permissions();
    let as_placeholder: Vec<String> = p
        .publish
        .iter()
        .map(|s| match s.strip_suffix(".u") {
            Some(prefix) => format!("{prefix}.<u>"),
            None => s.clone(),
        })
        .collect();
    assert_eq!(
        row("integrator"),
        (natter_only(&as_placeholder), natter_only(&p.subscribe)),
        "subjects.md's integrator row (with <u> for a user) and the code differ"
    );
}
