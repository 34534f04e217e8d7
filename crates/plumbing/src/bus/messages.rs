//! The messages streams: one per partition, `NATTER_MESSAGES_<k>` with the subjects
//! `natter.msg.<k>.>`, each with its own leader, sequence, de-duplication window and limits,
//! so no one server takes every write. The chat service owns them (creates and updates);
//! the readers bind to them as they are.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use protocol::{Cursor, subjects};

use super::BusConfig;
use super::resources::{bind_stream, own_stream};

/// A deployment's messages streams, in partition order.
#[derive(Clone)]
pub struct MessageStreams {
    streams: Vec<stream::Stream>,
}

impl std::fmt::Debug for MessageStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = self.streams.iter().map(|s| &s.cached_info().config.name);
        f.debug_list().entries(names).finish()
    }
}

impl MessageStreams {
    /// Partition `k`'s stream.
    pub fn get(&self, k: u32) -> &stream::Stream {
        &self.streams[k as usize]
    }

    pub fn partitions(&self) -> u32 {
        self.streams.len() as u32
    }

    pub fn iter(&self) -> impl Iterator<Item = &stream::Stream> {
        self.streams.iter()
    }

    /// The epoch of cursors over these streams, as they were when bound.
    pub fn epoch(&self) -> u64 {
        epoch(self.streams.iter().map(|s| s.cached_info()))
    }
}

/// Creates or updates the messages streams (the chat service's: only its NATS identity may
/// change them).
pub async fn ensure_messages_streams(
    js: &jetstream::Context,
    cfg: &BusConfig,
) -> anyhow::Result<MessageStreams> {
    check_partitions(js, cfg).await?;
    let mut streams = Vec::new();
    for k in 0..cfg.partitions {
        // An existing stream keeps its partition count: updating it to another would move
        // conversations between partitions while their messages are in flight.
        if let Ok(mut existing) = js.get_stream(subjects::messages_stream(k)).await {
            same_partitions(existing.info().await?, cfg)?;
        }
        streams.push(own_stream(js, config(k, cfg)).await?);
    }
    Ok(MessageStreams { streams })
}

/// The messages streams as they are, or created if missing; never changed. For the services
/// that read them (gateways, history): their identities may not update them, and a reader's
/// configuration must not reshape what the chat service owns.
pub async fn messages_streams(
    js: &jetstream::Context,
    cfg: &BusConfig,
) -> anyhow::Result<MessageStreams> {
    check_partitions(js, cfg).await?;
    let mut streams = Vec::new();
    for k in 0..cfg.partitions {
        let stream = bind_stream(js, config(k, cfg)).await?;
        same_partitions(stream.cached_info(), cfg)?;
        streams.push(stream);
    }
    Ok(MessageStreams { streams })
}

/// Where every messages stream stands now: the epoch and each partition's last sequence
/// (`None` while any stream is missing).
pub async fn heads(js: &jetstream::Context, partitions: u32) -> Option<Cursor> {
    let infos = futures::future::join_all(
        (0..partitions).map(|k| async move { js.get_stream(subjects::messages_stream(k)).await }),
    )
    .await;
    let streams: Vec<stream::Stream> = infos.into_iter().collect::<Result<_, _>>().ok()?;
    Some(head_of(&streams))
}

/// The first message of `subject` (wildcards allowed) in `stream` at or after sequence
/// `from`, read from the stream's leader (`STREAM.MSG.GET`, which only the leader answers, so
/// it is never behind what was acknowledged); `None` if there is none.
pub async fn first_from(
    stream: &stream::Stream,
    subject: &str,
    from: u64,
) -> anyhow::Result<Option<jetstream::message::StreamMessage>> {
    match stream.get_first_raw_message_by_subject(subject, from).await {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => anyhow::bail!("cannot read {subject} from {from}: {e}"),
    }
}

/// The cursor at the end of `streams` as their infos were read.
pub fn head_of(streams: &[stream::Stream]) -> Cursor {
    Cursor {
        epoch: epoch(streams.iter().map(|s| s.cached_info())),
        seqs: streams
            .iter()
            .map(|s| s.cached_info().state.last_sequence)
            .collect(),
    }
}

/// A cursor's epoch: the newest creation time among the streams, in milliseconds since the
/// Unix epoch. A stream deleted and made again is newer than every cursor given before, so
/// those cursors are refused instead of read against sequences that started again at 1.
pub fn epoch<'a>(infos: impl Iterator<Item = &'a stream::Info>) -> u64 {
    infos.map(stream_epoch).max().unwrap_or(0)
}

/// The creation time of a stream in milliseconds since the Unix epoch.
pub fn stream_epoch(info: &stream::Info) -> u64 {
    (info.created.unix_timestamp_nanos() / 1_000_000) as u64
}

/// The partition count a messages stream was made with.
pub fn stream_partitions(info: &stream::Info) -> Option<u32> {
    info.config
        .metadata
        .get(subjects::PARTITIONS_METADATA)
        .and_then(|p| p.parse().ok())
}

/// Refuses a partition count out of range, and a deployment still holding the one stream of
/// before partitions had streams of their own (its subjects overlap theirs).
async fn check_partitions(js: &jetstream::Context, cfg: &BusConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=subjects::MAX_PARTITIONS).contains(&cfg.partitions),
        "bus.partitions is {}; it must be between 1 and {}",
        cfg.partitions,
        subjects::MAX_PARTITIONS
    );
    if js.get_stream(subjects::MESSAGES_STREAM).await.is_ok() {
        anyhow::bail!(
            "the messages stream {} predates one stream per partition: upgrade as \
             docs/operations.md (\"Partitions\") says",
            subjects::MESSAGES_STREAM
        );
    }
    Ok(())
}

/// Refuses a stream made with another partition count than `cfg`'s.
fn same_partitions(info: &stream::Info, cfg: &BusConfig) -> anyhow::Result<()> {
    match stream_partitions(info) {
        Some(p) if p == cfg.partitions => Ok(()),
        Some(p) => anyhow::bail!(
            "the messages stream {} was made with {p} partitions, and bus.partitions is {}: \
             a deployment keeps its partition count (docs/operations.md, \"Partitions\")",
            info.config.name,
            cfg.partitions
        ),
        None => anyhow::bail!(
            "the messages stream {} does not record its partition count: upgrade as \
             docs/operations.md (\"Partitions\") says",
            info.config.name
        ),
    }
}

/// Partition `k`'s stream. `bus.messages_max_bytes` is shared evenly: JetStream reserves each
/// stream's limit when it is made.
fn config(k: u32, cfg: &BusConfig) -> stream::Config {
    let max_bytes = match cfg.messages_max_bytes {
        b if b > 0 => (b / i64::from(cfg.partitions)).max(1),
        b => b,
    };
    stream::Config {
        name: subjects::messages_stream(k),
        description: Some(format!(
            "partition {k} of every accepted natter message; see subjects.md"
        )),
        subjects: vec![subjects::partition_messages(k)],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: Duration::from_millis(cfg.messages_max_age_ms),
        max_bytes,
        duplicate_window: Duration::from_millis(cfg.dedup_window_ms),
        num_replicas: cfg.replicas,
        allow_direct: true,
        metadata: [(
            subjects::PARTITIONS_METADATA.to_string(),
            cfg.partitions.to_string(),
        )]
        .into(),
        ..Default::default()
    }
}
