//! The partition count is fixed with the messages stream: every service refuses a stream made
//! with another count, or made before partitions, with an error that says what to do.

use plumbing::BusConfig;
use plumbing::nats_auth::Role;
use testkit::TestNats;

fn with(partitions: u32) -> BusConfig {
    BusConfig {
        partitions,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_stream_keeps_its_partition_count() {
    let nats = TestNats::start();
    let chat = async_nats::jetstream::new(nats.client_as(Role::Chat).await);
    let history = async_nats::jetstream::new(nats.client_as(Role::History).await);
    plumbing::bus::ensure_messages_stream(&chat, &with(3))
        .await
        .expect("created with 3 partitions");
    // The owner may update the stream's settings, not its count.
    plumbing::bus::ensure_messages_stream(&chat, &with(3))
        .await
        .expect("the same count again");
    for (who, refused) in [
        (
            "chat",
            plumbing::bus::ensure_messages_stream(&chat, &with(4)).await,
        ),
        (
            "history",
            plumbing::bus::messages_stream(&history, &with(4)).await,
        ),
    ] {
        let e = refused.expect_err(who).to_string();
        assert!(
            e.contains("made with 3 partitions") && e.contains("docs/operations.md"),
            "{who}: {e}"
        );
    }
    let stream = plumbing::bus::messages_stream(&history, &with(3))
        .await
        .expect("a reader with the stream's count");
    assert_eq!(
        plumbing::bus::stream_partitions(stream.cached_info()),
        Some(3)
    );
    for bad in [0, protocol::subjects::MAX_PARTITIONS + 1] {
        let e = plumbing::bus::messages_stream(&history, &with(bad))
            .await
            .expect_err("out of range");
        assert!(e.to_string().contains("bus.partitions"), "{e}");
    }
}

#[tokio::test]
async fn a_stream_from_before_partitions_is_refused_with_the_upgrade_path() {
    let nats = TestNats::start();
    let operator = async_nats::jetstream::new(nats.client().await);
    operator
        .create_stream(async_nats::jetstream::stream::Config {
            name: protocol::subjects::MESSAGES_STREAM.into(),
            subjects: vec![protocol::subjects::MESSAGES_SUBJECTS.into()],
            ..Default::default()
        })
        .await
        .expect("a stream as natter made it before partitions");
    let chat = async_nats::jetstream::new(nats.client_as(Role::Chat).await);
    let e = plumbing::bus::ensure_messages_stream(&chat, &with(1))
        .await
        .expect_err("refused");
    assert!(
        e.to_string().contains("predates partitions") && e.to_string().contains("Partitions"),
        "{e}"
    );
}
