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
