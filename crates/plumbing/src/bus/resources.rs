//! The streams and KV buckets natter owns, and the functions that create them. A bucket is
//! one [`BucketSpec`] in the table below, ensured by [`ensure_bucket`].

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use protocol::subjects;

use super::BusConfig;

/// Creates the stream, or updates its settings to `config`.
pub(super) async fn own_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> anyhow::Result<stream::Stream> {
    let name = config.name.clone();
    let max_bytes = config.max_bytes;
    js.create_or_update_stream(config).await.map_err(|e| {
        anyhow::anyhow!("cannot create stream {name}: {e}{}", advice(&e, max_bytes))
    })?;
    Ok(js.get_stream(&name).await?)
}

/// What an operator can do about a refused stream, when the refusal says what it is.
fn advice(error: &jetstream::context::CreateStreamError, max_bytes: i64) -> String {
    use jetstream::ErrorCode;
    use jetstream::context::CreateStreamErrorKind;
    match error.kind() {
        // JetStream reserves a stream's `max_bytes` in its store when the stream is made, and
        // a server told no `max_file_store` offers 75% of the disk that was free when it
        // started.
        CreateStreamErrorKind::JetStream(e)
            if e.error_code() == ErrorCode::STORAGE_RESOURCES_EXCEEDED =>
        {
            format!(
                " (the stream reserves {max_bytes} bytes: free disk under the JetStream store, \
                 give nats-server a larger `max_file_store`, or lower bus.messages_max_bytes; \
                 see docs/configuration.md)"
            )
        }
        _ => String::new(),
    }
}

/// The stream as it is, or created with `config` if it does not exist yet.
pub(super) async fn bind_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> anyhow::Result<stream::Stream> {
    if let Ok(stream) = js.get_stream(&config.name).await {
        return Ok(stream);
    }
    let name = config.name.clone();
    match js.create_stream(config).await {
        Ok(stream) => Ok(stream),
        // Another service created it between our get and create.
        Err(_) => js
            .get_stream(&name)
            .await
            .map_err(|e| anyhow::anyhow!("cannot create stream {name}: {e}")),
    }
}

/// How long the offline-message stream keeps an event nobody acknowledged.
const OFFLINE_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Creates or updates the stream that makes `natter.user.offline_message` durable for the
/// notifier: the chat service's (the publisher and owner), so events published before the
/// notifier first ran are kept. Limits retention: events stay a day whether acknowledged or
/// not, so integrators may read them with consumers of their own.
pub async fn ensure_offline_stream(
    js: &jetstream::Context,
    cfg: &BusConfig,
) -> anyhow::Result<stream::Stream> {
    own_stream(js, offline_stream_config(cfg)).await
}

/// The offline-message stream as it is, or created if it is missing (the notifier's).
pub async fn offline_stream(
    js: &jetstream::Context,
    cfg: &BusConfig,
) -> anyhow::Result<stream::Stream> {
    bind_stream(js, offline_stream_config(cfg)).await
}

fn offline_stream_config(cfg: &BusConfig) -> stream::Config {
    stream::Config {
        name: subjects::OFFLINE_STREAM.into(),
        description: Some("offline-message events for the notifier; see subjects.md".into()),
        subjects: vec![subjects::USER_OFFLINE_MESSAGE.into()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: OFFLINE_MAX_AGE,
        num_replicas: cfg.replicas,
        ..Default::default()
    }
}

/// The shape of one KV bucket. Every bucket is file-backed and keeps the latest value per key
/// only; replicas come from [`BusConfig::replicas`].
#[derive(Debug, Clone, Copy)]
pub struct BucketSpec {
    /// The bucket's name (from `protocol::subjects`).
    pub name: &'static str,
    /// What a key and a value are, for `nats kv ls` readers.
    pub description: &'static str,
    /// How long a value lives without being written again; `None` keeps it for good.
    pub max_age: Option<Duration>,
    /// How long a delete or purge marker is kept before the server removes it, so keys that
    /// come and go leave nothing behind; `None` keeps markers.
    pub marker_ttl: Option<Duration>,
}

/// Sessions: one key per connected session, `<user>.<gateway>.<conn>`.
pub const SESSIONS: BucketSpec = BucketSpec {
    name: subjects::SESSIONS_BUCKET,
    description: "one key per connected session: <user>.<gateway>.<conn>",
    max_age: None,
    marker_ttl: Some(Duration::from_secs(60)),
};

/// Gateway leases: one key per live gateway, refreshed by the gateway.
pub const GATEWAYS: BucketSpec = BucketSpec {
    name: subjects::GATEWAYS_BUCKET,
    description: "one lease per live gateway, refreshed by the gateway",
    max_age: None,
    marker_ttl: Some(Duration::from_secs(60)),
};

/// User presence: per user, online or not and when last seen.
pub const PRESENCE: BucketSpec = BucketSpec {
    name: subjects::PRESENCE_BUCKET,
    description: "per user: online or not, and when last seen",
    max_age: None,
    marker_ttl: None,
};

/// Push tokens: gateways write, the notifier reads. A token not registered again within 60
/// days expires, so dead devices' tokens go away.
pub const PUSH_TOKENS: BucketSpec = BucketSpec {
    name: subjects::PUSH_TOKENS_BUCKET,
    description: "devices' push tokens: <user>.<token hash>",
    max_age: Some(Duration::from_secs(60 * 24 * 3600)),
    marker_ttl: None,
};

/// Groups: group records and memberships.
pub const GROUPS: BucketSpec = BucketSpec {
    name: subjects::GROUPS_BUCKET,
    description: "groups: <group> → metadata, <group>.<user> → membership",
    max_age: None,
    marker_ttl: None,
};

/// Attachment quotas: bytes stored per user.
pub const ATTACHMENT_QUOTA: BucketSpec = BucketSpec {
    name: subjects::ATTACHMENT_QUOTA_BUCKET,
    description: "bytes of attachments each user has stored: <user>",
    max_age: None,
    marker_ttl: None,
};

/// The attachments object store and the per-user byte counts that bound it.
#[derive(Clone)]
pub struct Attachments {
    pub store: jetstream::object_store::ObjectStore,
    /// The store's stream, whose chunks downloads read one at a time (`attachment_chunks`).
    pub stream: stream::Stream,
    pub quota: kv::Store,
}

/// Creates the attachments object store and the quota bucket if they do not exist yet.
pub async fn ensure_attachments(
    js: &jetstream::Context,
    cfg: &BusConfig,
) -> anyhow::Result<Attachments> {
    let quota = ensure_bucket(js, &ATTACHMENT_QUOTA, cfg).await?;
    let name = subjects::ATTACHMENTS_BUCKET;
    let store = match js.get_object_store(name).await {
        Ok(store) => store,
        Err(_) => {
            let config = jetstream::object_store::Config {
                bucket: name.into(),
                description: Some("attachments, one object per upload; see subjects.md".into()),
                max_bytes: cfg.attachments_max_bytes,
                storage: stream::StorageType::File,
                num_replicas: cfg.replicas,
                ..Default::default()
            };
            match js.create_object_store(config).await {
                Ok(store) => store,
                // Another service created it between our get and create.
                Err(_) => js
                    .get_object_store(name)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot create object store {name}: {e}"))?,
            }
        }
    };
    let stream = js.get_stream(subjects::ATTACHMENTS_STREAM).await?;
    Ok(Attachments {
        store,
        stream,
        quota,
    })
}

/// Creates the bucket `spec` describes if it does not exist yet. An existing bucket is taken
/// as it is (its shape is not updated).
pub async fn ensure_bucket(
    js: &jetstream::Context,
    spec: &BucketSpec,
    cfg: &BusConfig,
) -> anyhow::Result<kv::Store> {
    if let Ok(store) = js.get_key_value(spec.name).await {
        return Ok(store);
    }
    let config = kv::Config {
        bucket: spec.name.into(),
        description: spec.description.into(),
        history: 1,
        max_age: spec.max_age.unwrap_or_default(),
        storage: stream::StorageType::File,
        limit_markers: spec.marker_ttl,
        num_replicas: cfg.replicas,
        ..Default::default()
    };
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        // Another service created it between our get and create.
        Err(_) => js
            .get_key_value(spec.name)
            .await
            .map_err(|e| anyhow::anyhow!("cannot create KV bucket {}: {e}", spec.name)),
    }
}

/// Creates the push-token bucket if it does not exist yet (gateways write, the notifier
/// reads).
pub async fn ensure_push_tokens_bucket(
    js: &jetstream::Context,
    cfg: &BusConfig,
) -> anyhow::Result<kv::Store> {
    ensure_bucket(js, &PUSH_TOKENS, cfg).await
}

/// Creates the groups bucket if it does not exist yet: group records and memberships.
pub async fn ensure_groups_bucket(
    js: &jetstream::Context,
    cfg: &BusConfig,
) -> anyhow::Result<kv::Store> {
    ensure_bucket(js, &GROUPS, cfg).await
}

/// The presence buckets: sessions (one key per connection), gateway leases, and each user's
/// online state and last-seen time.
#[derive(Clone)]
pub struct PresenceBuckets {
    pub sessions: kv::Store,
    pub gateways: kv::Store,
    pub users: kv::Store,
}

/// Creates the presence buckets if they do not exist yet.
pub async fn ensure_presence_buckets(
    js: &jetstream::Context,
    cfg: &BusConfig,
) -> anyhow::Result<PresenceBuckets> {
    Ok(PresenceBuckets {
        sessions: ensure_bucket(js, &SESSIONS, cfg).await?,
        gateways: ensure_bucket(js, &GATEWAYS, cfg).await?,
        users: ensure_bucket(js, &PRESENCE, cfg).await?,
    })
}
