//! The store suite against a real CQL server: Apache Cassandra 5 started by `scripts/test`
//! (see docs/cassandra-tests.md), or a real ScyllaDB named by `NATTER_SCYLLA_URI`.
//! Each test gets its own keyspace.

use history::{ScyllaConfig, ScyllaStore};

fn uri() -> String {
    std::env::var("NATTER_SCYLLA_URI").expect(
        "NATTER_SCYLLA_URI is not set: run scripts/test, which starts a local Cassandra node, \
         or point it at a ScyllaDB/Cassandra node (host:port)",
    )
}

async fn fresh() -> (ScyllaStore, ()) {
    let keyspace = format!("natter_t_{}", ulid::Ulid::new().to_string().to_lowercase());
    let config = ScyllaConfig {
        uri: uri(),
        keyspace,
        replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".into(),
        consistency: "one".into(),
        local_dc: None,
    };
    (
        ScyllaStore::connect(&config)
            .await
            .expect("connect to the CQL server"),
        (),
    )
}

history::store_suite!(fresh());

#[tokio::test]
async fn migrations_are_idempotent() {
    let config = ScyllaConfig {
        uri: uri(),
        keyspace: format!("natter_m_{}", ulid::Ulid::new().to_string().to_lowercase()),
        replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".into(),
        consistency: "one".into(),
        local_dc: None,
    };
    ScyllaStore::connect(&config).await.unwrap();
    // A second service starting against the same keyspace applies them again, harmlessly.
    ScyllaStore::connect(&config).await.unwrap();
}

#[tokio::test]
async fn a_migration_run_twice_is_harmless() {
    use scylla::client::session_builder::SessionBuilder;
    let keyspace = format!("natter_m_{}", ulid::Ulid::new().to_string().to_lowercase());
    let replication = "{'class': 'SimpleStrategy', 'replication_factor': 1}";
    let session = SessionBuilder::new()
        .known_nodes([uri()])
        .build()
        .await
        .unwrap();
    history::store::scylla::migrate(&session, &keyspace, replication)
        .await
        .unwrap();
    // Two instances starting at once both apply version 2: its ALTER finds the column there.
    session
        .query_unpaged(
            format!("DELETE FROM {keyspace}.schema_migrations WHERE version = 2"),
            &[],
        )
        .await
        .unwrap();
    history::store::scylla::migrate(&session, &keyspace, replication)
        .await
        .expect("re-applying 002 succeeds");
}
