//! Which receipts of one connection go on to the chat service. A receipt goes on only when
//! it moves the connection's marker in its conversation (a later message than the last one
//! sent for that conversation and kind), and at most `receipts_per_sec` go on per second (a
//! burst of as many). Above the rate, the latest receipt of each conversation waits for the
//! next token: receipts are coalesced, never lost, so a flood of `read` frames costs the
//! reader's peer one `seen` per conversation per interval instead of one per frame.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use protocol::payloads::ReceiptKind;
use protocol::{ConversationId, MessageId};

/// Conversations remembered per connection; past it the oldest knowledge is forgotten
/// (a repeated receipt may then go on again, which is harmless).
const REMEMBERED: usize = 256;

type Key = (ConversationId, ReceiptKind);

pub struct ReceiptGate {
    per_sec: u32,
    tokens: f64,
    refilled: Instant,
    /// The last receipt sent on, per conversation and kind.
    sent: HashMap<Key, MessageId>,
    /// The latest receipt waiting for a token, per conversation and kind.
    waiting: HashMap<Key, MessageId>,
}

/// What to do with a receipt.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Publish it now.
    Send,
    /// It waits for a token (`next_token` says when).
    Wait,
    /// It moves nothing: drop it.
    Drop,
}

impl ReceiptGate {
    pub fn new(per_sec: u32, now: Instant) -> Self {
        let per_sec = per_sec.max(1);
        Self {
            per_sec,
            tokens: f64::from(per_sec),
            refilled: now,
            sent: HashMap::new(),
            waiting: HashMap::new(),
        }
    }

    pub fn offer(&mut self, key: Key, id: MessageId, now: Instant) -> Verdict {
        if self.sent.get(&key).is_some_and(|last| id <= *last)
            || self.waiting.get(&key).is_some_and(|last| id <= *last)
        {
            return Verdict::Drop;
        }
        if self.waiting.is_empty() && self.take_token(now) {
            self.remember(key, id);
            return Verdict::Send;
        }
        if self.waiting.len() >= REMEMBERED && !self.waiting.contains_key(&key) {
            return Verdict::Drop;
        }
        self.waiting.insert(key, id);
        Verdict::Wait
    }

    /// Receipts that may go on now, taken from those waiting.
    pub fn release(&mut self, now: Instant) -> Vec<(Key, MessageId)> {
        let mut released = Vec::new();
        let keys: Vec<Key> = self.waiting.keys().cloned().collect();
        for key in keys {
            if !self.take_token(now) {
                break;
            }
            if let Some(id) = self.waiting.remove(&key) {
                self.remember(key.clone(), id);
                released.push((key, id));
            }
        }
        released
    }

    /// When the next waiting receipt may go, if any waits.
    pub fn next_token(&self) -> Option<Duration> {
        (!self.waiting.is_empty()).then(|| Duration::from_secs(1) / self.per_sec)
    }

    fn take_token(&mut self, now: Instant) -> bool {
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        let cap = f64::from(self.per_sec);
        self.tokens = (self.tokens + elapsed * cap).min(cap);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn remember(&mut self, key: Key, id: MessageId) {
        if self.sent.len() >= REMEMBERED && !self.sent.contains_key(&key) {
            self.sent.clear();
        }
        self.sent.insert(key, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> MessageId {
        format!("01JGGVSB00000000000000000{}", (b'A' + n) as char)
            .parse()
            .unwrap()
    }

    fn key() -> Key {
        ("dm:alice:bob".parse().unwrap(), ReceiptKind::Seen)
    }

    #[test]
    fn a_receipt_that_moves_nothing_is_dropped() {
        let now = Instant::now();
        let mut gate = ReceiptGate::new(10, now);
        assert_eq!(gate.offer(key(), id(2), now), Verdict::Send);
        assert_eq!(gate.offer(key(), id(2), now), Verdict::Drop);
        assert_eq!(gate.offer(key(), id(1), now), Verdict::Drop);
        assert_eq!(gate.offer(key(), id(3), now), Verdict::Send);
        let other = ("dm:alice:carol".parse().unwrap(), ReceiptKind::Seen);
        assert_eq!(gate.offer(other, id(1), now), Verdict::Send);
    }

    #[test]
    fn over_the_rate_the_latest_waits_and_goes_when_a_token_comes() {
        let now = Instant::now();
        let mut gate = ReceiptGate::new(2, now);
        assert_eq!(gate.offer(key(), id(1), now), Verdict::Send);
        assert_eq!(gate.offer(key(), id(2), now), Verdict::Send);
        assert_eq!(gate.offer(key(), id(3), now), Verdict::Wait);
        assert_eq!(gate.offer(key(), id(4), now), Verdict::Wait);
        assert_eq!(gate.offer(key(), id(4), now), Verdict::Drop);
        assert_eq!(gate.next_token(), Some(Duration::from_millis(500)));
        assert!(gate.release(now).is_empty(), "no token yet");
        let later = now + Duration::from_millis(500);
        assert_eq!(gate.release(later), vec![(key(), id(4))], "only the latest");
        assert_eq!(gate.next_token(), None);
        assert_eq!(gate.offer(key(), id(3), later), Verdict::Drop);
    }
}
