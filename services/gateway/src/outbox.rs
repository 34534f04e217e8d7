//! A session's bounded outbound queue. Producers (the NATS inbox, the session itself) push
//! encoded frames; the session drains everything queued in one go and flushes once.
//! A full queue (by frames or by bytes) evicts the session (slow consumer) instead of growing
//! memory.
//!
//! While the session replays what the device missed (`sync`), live messages are held back
//! and released after the replay, so the device sees the replay, then `synced`, then live
//! traffic: its cursor only ever moves forward. Held messages the replay already covered are
//! dropped.

use std::collections::VecDeque;
use std::sync::Mutex;

use protocol::encoding::Encoded;
use protocol::{CloseCode, Cursor};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    /// Frames queued or held at most.
    max_frames: usize,
    /// Bytes queued or held at most.
    max_bytes: usize,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Message>,
    /// The size of `frames` and the held frames together.
    bytes: usize,
    /// Set once: the session must close with this code after sending what is queued
    /// (or at once, for a slow consumer).
    close: Option<CloseCode>,
    /// Live messages held during a replay, by stream sequence.
    held: Option<Held>,
    /// Messages after this cursor may have been lost while the gateway was cut off from
    /// NATS: the session replays them (see `reregister`).
    resync: Option<Cursor>,
    /// The resync the running replay serves, to retry it if the replay fails.
    resyncing: Option<Cursor>,
}

struct Held {
    /// The last sequence the replay covers, once known.
    upto: Option<u64>,
    frames: VecDeque<(u64, Message)>,
}

/// What a drain found.
pub enum Drained {
    /// Frames to send (possibly none, on a spurious wake-up).
    Frames,
    /// Close with this code once the drained frames are sent.
    Close(CloseCode),
}

impl Outbox {
    pub fn new(max_frames: usize, max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            max_frames,
            max_bytes,
        }
    }

    /// Queues a frame. Returns `false` when the queue was full: the session is then closed
    /// as a slow consumer and the frame is dropped (the client resyncs on reconnect).
    /// A message frame comes with its stream sequence: it is held back during a replay.
    pub fn push_at(&self, frame: Message, seq: Option<u64>) -> bool {
        let mut state = self.state.lock().unwrap();
        if state.close == Some(CloseCode::SlowConsumer) {
            return false;
        }
        let held = state.held.as_ref().map_or(0, |h| h.frames.len());
        let len = frame.len();
        if state.frames.len() + held >= self.max_frames || state.bytes + len > self.max_bytes {
            state.frames = VecDeque::new();
            state.held = None;
            state.bytes = 0;
            state.close = Some(CloseCode::SlowConsumer);
            drop(state);
            self.notify.notify_one();
            return false;
        }
        match (&mut state.held, seq) {
            (Some(held), Some(seq)) => {
                if held.upto.is_none_or(|upto| seq > upto) {
                    held.frames.push_back((seq, frame));
                    state.bytes += len;
                }
                // Otherwise the replay carries it.
                return true;
            }
            _ => {
                state.frames.push_back(frame);
                state.bytes += len;
            }
        }
        drop(state);
        self.notify.notify_one();
        true
    }

    /// Starts holding live messages back (a replay begins).
    pub fn hold(&self) {
        self.state.lock().unwrap().held.get_or_insert(Held {
            upto: None,
            frames: VecDeque::new(),
        });
    }

    /// The replay covers every message up to `seq`: held ones at or below it are dropped.
    pub fn covered_upto(&self, seq: u64) {
        let mut state = self.state.lock().unwrap();
        let state = &mut *state;
        if let Some(held) = &mut state.held {
            held.upto = Some(seq);
            held.frames.retain(|(s, f)| {
                let keep = *s > seq;
                if !keep {
                    state.bytes -= f.len();
                }
                keep
            });
        }
    }

    /// Ends the hold: held messages are queued after everything the replay wrote.
    pub fn release(&self) {
        let mut state = self.state.lock().unwrap();
        state.resyncing = None;
        if let Some(held) = state.held.take() {
            let upto = held.upto.unwrap_or(0);
            let dropped: usize = held
                .frames
                .iter()
                .filter(|(s, _)| *s <= upto)
                .map(|(_, f)| f.len())
                .sum();
            state.bytes -= dropped;
            state.frames.extend(
                held.frames
                    .into_iter()
                    .filter(|(s, _)| *s > upto)
                    .map(|(_, f)| f),
            );
            drop(state);
            self.notify.notify_one();
        }
    }

    /// Asks the session to replay its user's messages after `after` (the earliest asked for
    /// wins until the session takes it).
    pub fn resync_after(&self, after: Cursor) {
        let mut state = self.state.lock().unwrap();
        state.resync = Some(state.resync.map_or(after, |c| c.min(after)));
        drop(state);
        self.notify.notify_one();
    }

    /// The pending resync request, if any; the replay it starts serves it.
    pub fn take_resync(&self) -> Option<Cursor> {
        let mut state = self.state.lock().unwrap();
        state.resyncing = state.resync.take();
        state.resyncing
    }

    /// The resync the failed replay served, if it was one.
    pub fn resync_failed(&self) -> Option<Cursor> {
        self.state.lock().unwrap().resyncing.take()
    }

    /// Asks the session to close with `code` after sending what is already queued.
    pub fn close(&self, code: CloseCode) {
        self.state.lock().unwrap().close.get_or_insert(code);
        self.notify.notify_one();
    }

    /// Waits until something is queued or a close was requested.
    pub async fn ready(&self) {
        self.notify.notified().await
    }

    /// Moves every queued frame into `out`.
    pub fn drain(&self, out: &mut Vec<Message>) -> Drained {
        let mut state = self.state.lock().unwrap();
        let drained: usize = state.frames.iter().map(Message::len).sum();
        state.bytes -= drained;
        out.extend(state.frames.drain(..));
        if state.frames.capacity() > 64 {
            state.frames.shrink_to(0);
        }
        match state.close {
            Some(code) => Drained::Close(code),
            None => Drained::Frames,
        }
    }
}

/// A frame encoded for the socket.
pub fn to_ws(encoded: Encoded) -> Message {
    match encoded {
        Encoded::Text(s) => Message::text(s),
        Encoded::Binary(b) => Message::binary(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_evicts_as_slow_consumer() {
        let outbox = Outbox::new(2, 1024);
        assert!(outbox.push_at(Message::text("a"), None));
        assert!(outbox.push_at(Message::text("b"), None));
        assert!(!outbox.push_at(Message::text("c"), None));
        let mut out = Vec::new();
        assert!(matches!(
            outbox.drain(&mut out),
            Drained::Close(CloseCode::SlowConsumer)
        ));
        assert!(
            out.is_empty(),
            "a slow consumer's backlog is dropped, not sent"
        );
    }

    #[test]
    fn a_queue_over_its_bytes_evicts_as_slow_consumer_and_drained_bytes_free_room() {
        let outbox = Outbox::new(100, 10);
        assert!(outbox.push_at(Message::text("12345"), None));
        assert!(outbox.push_at(Message::text("12345"), None));
        let mut out = Vec::new();
        outbox.drain(&mut out);
        assert_eq!(out.len(), 2);
        // Drained bytes no longer count; held ones do.
        outbox.hold();
        assert!(outbox.push_at(Message::text("123456"), Some(1)));
        assert!(!outbox.push_at(Message::text("12345"), None), "6 + 5 > 10");
        out.clear();
        assert!(matches!(
            outbox.drain(&mut out),
            Drained::Close(CloseCode::SlowConsumer)
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn a_resync_request_waits_for_the_session_and_the_earliest_wins() {
        let outbox = Outbox::new(8, 1024);
        let at = |seq| Cursor { epoch: 1, seq };
        outbox.resync_after(at(7));
        outbox.resync_after(at(5));
        assert_eq!(outbox.take_resync(), Some(at(5)));
        assert_eq!(outbox.take_resync(), None);
        // A failed replay hands its resync back once, to be retried.
        assert_eq!(outbox.resync_failed(), None);
        outbox.resync_after(at(9));
        outbox.take_resync();
        assert_eq!(outbox.resync_failed(), Some(at(9)));
        assert_eq!(outbox.resync_failed(), None);
    }

    #[test]
    fn a_replay_holds_live_messages_and_drops_what_it_covered() {
        let outbox = Outbox::new(8, 1024);
        outbox.hold();
        assert!(outbox.push_at(Message::text("live 5"), Some(5)));
        assert!(outbox.push_at(Message::text("receipt"), None));
        outbox.covered_upto(6);
        assert!(outbox.push_at(Message::text("live 6"), Some(6)));
        assert!(outbox.push_at(Message::text("live 7"), Some(7)));
        let mut out = Vec::new();
        outbox.drain(&mut out);
        assert_eq!(out, vec![Message::text("receipt")], "live messages wait");
        outbox.release();
        out.clear();
        outbox.drain(&mut out);
        assert_eq!(out, vec![Message::text("live 7")]);
        assert!(outbox.push_at(Message::text("live 8"), Some(8)));
        out.clear();
        outbox.drain(&mut out);
        assert_eq!(out, vec![Message::text("live 8")], "no longer held");
    }

    #[test]
    fn close_keeps_queued_frames() {
        let outbox = Outbox::new(8, 1024);
        outbox.push_at(Message::text("a"), None);
        outbox.close(CloseCode::Reconnect);
        let mut out = Vec::new();
        assert!(matches!(
            outbox.drain(&mut out),
            Drained::Close(CloseCode::Reconnect)
        ));
        assert_eq!(out.len(), 1);
    }
}
