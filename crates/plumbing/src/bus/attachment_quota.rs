//! Each user's attachment bytes, in the `natter_attachment_quota` bucket (`<user>` → the
//! decimal count): a gateway reserves an upload's size before it stores a byte, and gives it
//! back if the upload fails; the chat service gives it back when a message's attachment is
//! deleted. Every change is a compare-and-set on the key's revision, so gateways taking
//! uploads of one user at once never both fit in the room one of them had.

use async_nats::jetstream::kv;
use protocol::UserId;

/// How often a change is tried again when another writer got there first.
const ATTEMPTS: usize = 16;

/// Why bytes could not be reserved.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error("over the quota: {used} bytes stored, {limit} allowed")]
    Exceeded { used: u64, limit: u64 },
    #[error("quota unavailable: {0}")]
    Unavailable(String),
}

/// Adds `bytes` to `user`'s count if it stays within `limit`.
pub async fn reserve(
    quota: &kv::Store,
    user: &UserId,
    bytes: u64,
    limit: u64,
) -> Result<(), QuotaError> {
    change(quota, user, |used| {
        let after = used.saturating_add(bytes);
        if after > limit {
            Err(QuotaError::Exceeded { used, limit })
        } else {
            Ok(after)
        }
    })
    .await
}

/// Takes `bytes` off `user`'s count (not below zero).
pub async fn release(quota: &kv::Store, user: &UserId, bytes: u64) -> Result<(), QuotaError> {
    change(quota, user, |used| Ok(used.saturating_sub(bytes))).await
}

/// `user`'s count now (0 when none).
pub async fn used(quota: &kv::Store, user: &UserId) -> Result<u64, QuotaError> {
    let entry = quota
        .entry(user.as_str())
        .await
        .map_err(|e| QuotaError::Unavailable(e.to_string()))?;
    Ok(entry.map_or(0, |e| parse(&e.value)))
}

async fn change(
    quota: &kv::Store,
    user: &UserId,
    next: impl Fn(u64) -> Result<u64, QuotaError>,
) -> Result<(), QuotaError> {
    let unavailable = |e: &dyn std::fmt::Display| QuotaError::Unavailable(e.to_string());
    for _ in 0..ATTEMPTS {
        let entry = quota
            .entry(user.as_str())
            .await
            .map_err(|e| unavailable(&e))?;
        let (used, revision) = match &entry {
            Some(e) if e.operation == kv::Operation::Put => (parse(&e.value), Some(e.revision)),
            Some(e) => (0, Some(e.revision)),
            None => (0, None),
        };
        let value = next(used)?.to_string().into_bytes().into();
        let written = match revision {
            Some(revision) => quota
                .update(user.as_str(), value, revision)
                .await
                .map(|_| ()),
            None => quota
                .create(user.as_str(), value)
                .await
                .map(|_| ())
                .map_err(|e| {
                    kv::UpdateError::with_source(kv::UpdateErrorKind::WrongLastRevision, e)
                }),
        };
        match written {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(unavailable(&e)),
        }
    }
    Err(QuotaError::Unavailable(
        "the count kept changing under us".into(),
    ))
}

fn parse(value: &[u8]) -> u64 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
