//! The versioned CQL migrations in `schema/`, applied at startup.

use std::collections::HashSet;

use scylla::client::session::Session;

use super::err;
use crate::store::StoreError;

/// The migrations, in order: (version, name, CQL with `{keyspace}` and `{replication}`).
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "001_init",
        include_str!("../../../../../schema/001_init.cql"),
    ),
    (
        2,
        "002_groups",
        include_str!("../../../../../schema/002_groups.cql"),
    ),
    (
        3,
        "003_direct_delivered",
        include_str!("../../../../../schema/003_direct_delivered.cql"),
    ),
    (
        4,
        "004_replies",
        include_str!("../../../../../schema/004_replies.cql"),
    ),
    (
        5,
        "005_edits",
        include_str!("../../../../../schema/005_edits.cql"),
    ),
    (
        6,
        "006_reactions",
        include_str!("../../../../../schema/006_reactions.cql"),
    ),
    (
        7,
        "007_attachments",
        include_str!("../../../../../schema/007_attachments.cql"),
    ),
];

/// Applies every migration not yet recorded in `schema_migrations`, in order, and records it.
/// Statements are safe to run twice (two instances starting at once both apply a version).
pub async fn migrate(
    session: &Session,
    keyspace: &str,
    replication: &str,
) -> Result<(), StoreError> {
    let applied = applied(session, keyspace).await;
    for (version, name, text) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        let text = text
            .replace("{keyspace}", keyspace)
            .replace("{replication}", replication);
        let without_comments: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        for statement in without_comments
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            if let Err(e) = session.query_unpaged(statement, &[]).await
                && !adds_an_existing_column(statement, &e.to_string())
            {
                return Err(err(format!("migration {name}: {e}")));
            }
        }
        session.await_schema_agreement().await.map_err(err)?;
        session
            .query_unpaged(
                format!("INSERT INTO {keyspace}.schema_migrations (version, name, applied_at) VALUES (?, ?, toTimestamp(now()))"),
                (*version, *name),
            )
            .await
            .map_err(err)?;
    }
    Ok(())
}

/// The versions already applied; none when the keyspace or the table does not exist yet
/// (then version 1, all `IF NOT EXISTS`, runs again harmlessly).
async fn applied(session: &Session, keyspace: &str) -> HashSet<i32> {
    let query = format!("SELECT version FROM {keyspace}.schema_migrations");
    let Ok(result) = session.query_unpaged(query, &[]).await else {
        return HashSet::new();
    };
    let Ok(rows) = result.into_rows_result() else {
        return HashSet::new();
    };
    let Ok(versions) = rows.rows::<(i32,)>() else {
        return HashSet::new();
    };
    versions.filter_map(Result::ok).map(|(v,)| v).collect()
}

/// CQL has no portable `ADD IF NOT EXISTS` (Cassandra has it, ScyllaDB does not): an
/// `ALTER TABLE … ADD` that fails because the column exists has done its job.
fn adds_an_existing_column(statement: &str, error: &str) -> bool {
    let statement = statement.to_ascii_uppercase();
    statement.starts_with("ALTER TABLE")
        && statement.contains(" ADD ")
        && (error.contains("already exist") || error.contains("conflicts with an existing column"))
}
