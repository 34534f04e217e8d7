//! A device's position in the messages stream, used to resume after a reconnect.
//!
//! Every message a device receives carries the cursor just after it. The device keeps the
//! cursor of the last message it has processed and sends it in `sync` when it (re)connects;
//! the gateway then replays everything for that user after it. The stream's sequence numbers
//! are only meaningful within one incarnation of the stream, so the cursor also names the
//! stream's creation time (`epoch`): a cursor from a deleted and recreated stream is refused
//! explicitly instead of silently skipping messages.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `<epoch>-<seq>`: the stream's creation time in milliseconds since the Unix epoch, and the
/// sequence number of the last message covered. Clients treat it as an opaque string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cursor {
    pub epoch: u64,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a cursor is `<epoch>-<seq>`, two decimal numbers")]
pub struct BadCursor;

impl FromStr for Cursor {
    type Err = BadCursor;
    fn from_str(s: &str) -> Result<Self, BadCursor> {
        let (epoch, seq) = s.split_once('-').ok_or(BadCursor)?;
        let number = |t: &str| {
            if t.is_empty() || t.len() > 20 || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BadCursor);
            }
            t.parse::<u64>().map_err(|_| BadCursor)
        };
        Ok(Self {
            epoch: number(epoch)?,
            seq: number(seq)?,
        })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

impl Serialize for Cursor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a `sync` could not replay a gap-free history (`synced` with `recovered: false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncGap {
    /// The device sent no cursor: a new device, or one that lost its state.
    NoCursor,
    /// The cursor names another incarnation of the messages stream.
    UnknownCursor,
    /// The cursor is beyond the end of the stream (the stream was reset).
    FutureCursor,
    /// Messages after the cursor have been trimmed by the stream's age or size limits.
    Trimmed,
    /// More messages are waiting than one catch-up may replay (`gateway.sync_max_messages`).
    TooMany,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let c: Cursor = "1764300000000-42".parse().unwrap();
        assert_eq!(
            c,
            Cursor {
                epoch: 1_764_300_000_000,
                seq: 42
            }
        );
        assert_eq!(c.to_string(), "1764300000000-42");
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "1-2-3",
            "a-1",
            "1-+2",
            "1 -2",
            "99999999999999999999999-1",
        ] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?} parsed");
        }
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, "\"1764300000000-42\"");
        assert_eq!(serde_json::from_str::<Cursor>(&json).unwrap(), c);
    }
}
