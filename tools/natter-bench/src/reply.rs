//! Sends that name a message: what a reply, an edit and a reaction cost the sender. alice
//! sends bob plain messages, replies to one earlier message, edits of it and reactions to it,
//! one at a time and in turn in the same run, and the time from her frame to its `sent` is
//! measured for each kind. The three others also ask history for the message they name
//! (`chat::target`), so the difference is that question (and, for a change, who may make it).

use std::time::Instant;

use testkit::Stack;

use crate::Latencies;
use crate::report::{Report, Table, ms, ratio};

pub async fn run(sends: usize, out: &crate::report::Output) -> anyhow::Result<()> {
    let report = Report::new(out, 1)?;
    let stack = Stack::new().start().await;
    stack.make_contacts("alice", &["bob"]).await;
    let mut alice = stack.connect("alice", 0).await;
    alice
        .send("bob", "asked", "the message every reply answers")
        .await?;
    let asked = testkit::expect_sent(&mut alice, "asked")
        .await
        .id
        .to_string();

    let asked_id: protocol::MessageId = asked.parse()?;
    let conversation = protocol::ConversationId::direct(&"alice".parse()?, &"bob".parse()?);
    report.step(format!(
        "{sends} each of plain sends, replies, edits and reactions, in turn"
    ));
    let (mut plain, mut replies) = (Vec::with_capacity(sends), Vec::with_capacity(sends));
    let (mut edits, mut reactions) = (Vec::with_capacity(sends), Vec::with_capacity(sends));
    for i in 0..sends {
        let started = Instant::now();
        alice.send("bob", &format!("p{i}"), "plain").await?;
        testkit::expect_sent(&mut alice, &format!("p{i}")).await;
        plain.push(started.elapsed().as_micros() as u64);

        let started = Instant::now();
        alice
            .send_reply("bob", &format!("r{i}"), "a reply", &asked)
            .await?;
        testkit::expect_sent(&mut alice, &format!("r{i}")).await;
        replies.push(started.elapsed().as_micros() as u64);

        let started = Instant::now();
        let text = format!("edited {i}");
        alice
            .edit(&conversation, &format!("e{i}"), asked_id, &text)
            .await?;
        testkit::expect_sent(&mut alice, &format!("e{i}")).await;
        edits.push(started.elapsed().as_micros() as u64);

        let started = Instant::now();
        let emoji = if i % 2 == 0 { "👍" } else { "❤️" };
        alice
            .react(&conversation, &format!("x{i}"), asked_id, emoji)
            .await?;
        testkit::expect_sent(&mut alice, &format!("x{i}")).await;
        reactions.push(started.elapsed().as_micros() as u64);
    }
    let (plain, replies) = (Latencies::new(plain), Latencies::new(replies));
    let (edits, reactions) = (Latencies::new(edits), Latencies::new(reactions));
    report.done();

    let mut table = Table::new(
        "send → sent, one at a time (in-process stack, embedded history)",
        &["send", "p50 ms", "p99 ms", "p50 ÷ plain"],
    );
    let kinds = [
        ("plain", &plain),
        ("reply", &replies),
        ("edit", &edits),
        ("reaction", &reactions),
    ];
    for (kind, l) in kinds {
        let (p50, p99) = (l.percentile_ms(0.5), l.percentile_ms(0.99));
        report.measurement(
            serde_json::json!({"scenario": "reply", "send": kind, "sends": sends,
                "p50_ms": p50, "p99_ms": p99}),
            format!("{kind}: send → sent p50 {p50:.3} ms, p99 {p99:.3} ms ({sends} sends)"),
        );
        table.row(vec![
            kind.into(),
            ms(p50),
            ms(p99),
            ratio(p50, plain.percentile_ms(0.5)),
        ]);
    }
    report.finish(&[table], &[]);
    stack.stop().await;
    Ok(())
}
