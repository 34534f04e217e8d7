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

use crate::subjects::MAX_PARTITIONS;

/// `<epoch>-<s0>.<s1>…`: the stream's creation time in milliseconds since the Unix epoch, and
/// for each partition of the message plane the sequence of the last message of that
/// partition the device has (every earlier one of that partition too). Clients treat it as
/// an opaque string.
///
/// One sequence per partition, because partitions are routed independently: a device can
/// hold a newer message of one partition while an older one of another is still on its way,
/// so no single number says what it has. With one partition this is the cursor of protocol
/// revision 1, `<epoch>-<seq>`, unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor {
    pub epoch: u64,
    /// One per partition, in partition order.
    pub seqs: Vec<u64>,
}

impl Cursor {
    /// Every partition at `seq`: what a replay up to the stream's last sequence covers.
    pub fn head(epoch: u64, seq: u64, partitions: u32) -> Self {
        Self {
            epoch,
            seqs: vec![seq; partitions.max(1) as usize],
        }
    }

    /// The number of partitions it covers.
    pub fn partitions(&self) -> u32 {
        self.seqs.len() as u32
    }

    /// Whether partition `k`'s message at `seq` is at or before this cursor (the device has
    /// it). A partition the cursor does not name is covered by nothing.
    pub fn covers(&self, k: u32, seq: u64) -> bool {
        self.seqs.get(k as usize).is_some_and(|s| seq <= *s)
    }

    /// Moves partition `k` forward to `seq` (never back).
    pub fn advance(&mut self, k: u32, seq: u64) {
        if let Some(s) = self.seqs.get_mut(k as usize) {
            *s = (*s).max(seq);
        }
    }

    /// Moves to partition `k`'s message at `seq`: `false`, and no move, if the cursor already
    /// covers it (a copy of a message the device has).
    pub fn receive(&mut self, k: u32, seq: u64) -> bool {
        if self.covers(k, seq) {
            return false;
        }
        self.advance(k, seq);
        true
    }

    /// Every partition to at least `seq` (the stream was read in order up to there).
    pub fn reach(&mut self, seq: u64) {
        for s in &mut self.seqs {
            *s = (*s).max(seq);
        }
    }

    /// Every partition to at least `floor`'s position there; a floor of another epoch or
    /// partition count changes nothing.
    pub fn raise(&mut self, floor: &Cursor) {
        if floor.epoch == self.epoch && floor.seqs.len() == self.seqs.len() {
            for (s, f) in self.seqs.iter_mut().zip(&floor.seqs) {
                *s = (*s).max(*f);
            }
        }
    }

    /// Sets partition `k` to `seq`, forward or back.
    pub fn set(&mut self, k: u32, seq: u64) {
        if let Some(s) = self.seqs.get_mut(k as usize) {
            *s = seq;
        }
    }

    /// Each partition at the later of the two (same epoch and partitions assumed).
    pub fn max(&self, other: &Cursor) -> Cursor {
        self.zip(other, u64::max)
    }

    /// Each partition at the earlier of the two (same epoch and partitions assumed).
    pub fn min(&self, other: &Cursor) -> Cursor {
        self.zip(other, u64::min)
    }

    fn zip(&self, other: &Cursor, f: impl Fn(u64, u64) -> u64) -> Cursor {
        Cursor {
            epoch: self.epoch,
            seqs: self
                .seqs
                .iter()
                .zip(&other.seqs)
                .map(|(a, b)| f(*a, *b))
                .collect(),
        }
    }

    /// The earliest position over all partitions.
    pub fn earliest(&self) -> u64 {
        self.seqs.iter().copied().min().unwrap_or(0)
    }

    /// The latest position over all partitions.
    pub fn latest(&self) -> u64 {
        self.seqs.iter().copied().max().unwrap_or(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a cursor is `<epoch>-<seq>` or `<epoch>-<seq>.<seq>…`, decimal numbers")]
pub struct BadCursor;

impl FromStr for Cursor {
    type Err = BadCursor;
    fn from_str(s: &str) -> Result<Self, BadCursor> {
        let (epoch, seqs) = s.split_once('-').ok_or(BadCursor)?;
        let number = |t: &str| {
            if t.is_empty() || t.len() > 20 || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BadCursor);
            }
            t.parse::<u64>().map_err(|_| BadCursor)
        };
        let seqs = seqs
            .split('.')
            .map(number)
            .collect::<Result<Vec<u64>, BadCursor>>()?;
        if seqs.len() > MAX_PARTITIONS as usize {
            return Err(BadCursor);
        }
        Ok(Self {
            epoch: number(epoch)?,
            seqs,
        })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-", self.epoch)?;
        for (i, seq) in self.seqs.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{seq}")?;
        }
        Ok(())
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
    /// The cursor names another incarnation of the messages stream, or another partition
    /// count (a cursor of protocol revision 1 on a deployment with several partitions).
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
                seqs: vec![42]
            }
        );
        assert_eq!(c.to_string(), "1764300000000-42");
        let v: Cursor = "1764300000000-42.7.0".parse().unwrap();
        assert_eq!(v.seqs, [42, 7, 0]);
        assert_eq!(v.to_string(), "1764300000000-42.7.0");
        let too_many = format!("1-{}", vec!["1"; MAX_PARTITIONS as usize + 1].join("."));
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "1-2-3",
            "a-1",
            "1-+2",
            "1 -2",
            "1-2.",
            "1-.2",
            "1-2..3",
            "99999999999999999999999-1",
            too_many.as_str(),
        ] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?} parsed");
        }
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, "\"1764300000000-42.7.0\"");
        assert_eq!(serde_json::from_str::<Cursor>(&json).unwrap(), v);
    }

    #[test]
    fn partitions_move_on_their_own() {
        let mut c = Cursor::head(9, 10, 3);
        assert!(c.covers(1, 10) && !c.covers(1, 11) && !c.covers(3, 1));
        c.advance(1, 15);
        c.advance(1, 12);
        assert_eq!(c.seqs, [10, 15, 10]);
        assert!(!c.receive(1, 15), "a copy");
        assert!(c.receive(0, 11));
        assert_eq!(c.seqs, [11, 15, 10]);
        let mut raised = c.clone();
        raised.raise(&Cursor::head(9, 12, 3));
        assert_eq!(raised.seqs, [12, 15, 12]);
        raised.raise(&Cursor::head(8, 99, 3));
        raised.raise(&Cursor::head(9, 99, 2));
        assert_eq!(
            raised.seqs,
            [12, 15, 12],
            "another stream or partition count"
        );
        raised.reach(14);
        assert_eq!(raised.seqs, [14, 15, 14]);
        c.set(2, 4);
        assert_eq!((c.earliest(), c.latest()), (4, 15));
        let other = Cursor::head(9, 11, 3);
        assert_eq!(c.max(&other).seqs, [11, 15, 11]);
        assert_eq!(c.min(&other).seqs, [11, 11, 4]);
    }
}
