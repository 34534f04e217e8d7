//! One messages stream per partition, whose count is fixed when they are made: every service
//! refuses streams made with another count, or the one stream of before, with an error that
//! says what to do.

use plumbing::BusConfig;
use plumbing::nats_auth::Role;
use plumbing::nats_server::{NatsServer, NatsServerOptions};
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
    plumbing::bus::ensure_messages_streams(&chat, &with(3))
        .await
        .expect("created with 3 partitions");
    // The owner may update the stream's settings, not its count.
    plumbing::bus::ensure_messages_streams(&chat, &with(3))
        .await
        .expect("the same count again");
    for (who, refused) in [
        (
            "chat",
            plumbing::bus::ensure_messages_streams(&chat, &with(4)).await,
        ),
        (
            "history",
            plumbing::bus::messages_streams(&history, &with(4)).await,
        ),
    ] {
        let e = refused.expect_err(who).to_string();
        assert!(
            e.contains("made with 3 partitions") && e.contains("docs/operations.md"),
            "{who}: {e}"
        );
    }
    let streams = plumbing::bus::messages_streams(&history, &with(3))
        .await
        .expect("a reader with the streams' count");
    assert_eq!(streams.partitions(), 3);
    for (k, stream) in streams.iter().enumerate() {
        let info = stream.cached_info();
        assert_eq!(info.config.name, format!("NATTER_MESSAGES_{k}"));
        assert_eq!(info.config.subjects, [format!("natter.msg.{k}.>")]);
        assert_eq!(plumbing::bus::stream_partitions(info), Some(3));
        // The byte limit is the deployment's, shared evenly.
        assert_eq!(info.config.max_bytes, with(3).messages_max_bytes / 3);
    }
    for bad in [0, protocol::subjects::MAX_PARTITIONS + 1] {
        let e = plumbing::bus::messages_streams(&history, &with(bad))
            .await
            .expect_err("out of range");
        assert!(e.to_string().contains("bus.partitions"), "{e}");
    }
}

#[tokio::test]
async fn the_one_stream_of_before_is_refused_with_the_upgrade_path() {
    let nats = TestNats::start();
    let operator = async_nats::jetstream::new(nats.client().await);
    operator
        .create_stream(async_nats::jetstream::stream::Config {
            name: protocol::subjects::MESSAGES_STREAM.into(),
            subjects: vec![protocol::subjects::MESSAGES_SUBJECTS.into()],
            ..Default::default()
        })
        .await
        .expect("the one stream natter made before a stream per partition");
    let chat = async_nats::jetstream::new(nats.client_as(Role::Chat).await);
    let e = plumbing::bus::ensure_messages_streams(&chat, &with(1))
        .await
        .expect_err("refused");
    assert!(
        e.to_string().contains("predates one stream per partition")
            && e.to_string().contains("Partitions"),
        "{e}"
    );
}

#[tokio::test]
async fn a_store_too_small_for_the_streams_is_named_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(NatsServerOptions {
        max_file_store: Some(1 << 20),
        ..NatsServerOptions::scratch(
            dir.path().join("nats"),
            testkit::test_auth(&dir.path().join("auth")),
        )
    })
    .expect("nats-server");
    let chat = async_nats::jetstream::new(nats.client_as(Role::Chat).await.unwrap());
    // The default limit (1 GiB over the partitions) does not fit a 1 MiB store.
    let e = plumbing::bus::ensure_messages_streams(&chat, &with(2))
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("insufficient storage") && e.contains("bus.messages_max_bytes"),
        "{e}"
    );
    // What the advice says works: a limit the store has room for.
    let fits = BusConfig {
        messages_max_bytes: 512 * 1024,
        ..with(2)
    };
    plumbing::bus::ensure_messages_streams(&chat, &fits)
        .await
        .expect("streams that fit the store");
}
