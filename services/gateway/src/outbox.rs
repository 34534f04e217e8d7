//! A session's bounded outbound queue. Producers (the NATS inbox, the session itself) push
//! encoded frames; the session drains everything queued in one go and flushes once.
//! A full queue (by frames or by bytes) evicts the session (slow consumer) instead of growing
//! memory.
//!
//! While the session replays what the device missed (`sync`), live messages are held back
//! and released after the replay, so the device sees the replay, then `synced`, then live
//! traffic: its cursor only ever moves forward. Held messages the replay already covered are
//! dropped.
//!
//! The outbox also keeps the device's cursor (one sequence per partition, see
//! `protocol::Cursor`). A routed message arrives encoded once for every device, without a
//! cursor, and with its position in the stream; the outbox moves this device's cursor to it,
//! raises it to where the gateway's deliveries stand (`local::RoutedUpto`: the device has
//! every message of its own up to there), and writes the cursor into the frame. A message the
//! cursor already covers is a copy of one the device has (a replay sent it, or a router that
//! took over sent it again) and is dropped.
//!
//! A resync request (a lost delivery, the gateway cut off from NATS, a replay that failed)
//! holds live messages at once, before the session starts the replay, and a replay that ends
//! while another is asked for keeps holding: a live message released before the missing ones
//! are replayed would carry a cursor past them.
//!
//! Held messages count against the queue's bounds, but a hold that fills them (a replay that
//! keeps failing while a stream elects its leader, say) does not evict the session: the held
//! messages are dropped, since the stream keeps every one of them, and the hold ends with one
//! more replay, from where the current one ends, instead of a release.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::encoding::Encoded;
use protocol::payloads::Position;
use protocol::{CloseCode, Cursor, Encoding};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use crate::local::RoutedUpto;

pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    /// Frames queued or held at most.
    max_frames: usize,
    /// Bytes queued or held at most.
    max_bytes: usize,
    /// The session's encoding, to write cursors into routed frames.
    encoding: Encoding,
    /// The deployment's partition count: the length of a cursor.
    partitions: u32,
    /// Where the gateway's deliveries stand: a floor for the cursor.
    routed: Arc<RoutedUpto>,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Message>,
    /// The size of `frames` and the held frames together.
    bytes: usize,
    /// Set once: the session must close with this code after sending what is queued
    /// (or at once, for a slow consumer).
    close: Option<CloseCode>,
    /// The device's cursor after the last routed message queued (or the replay's end).
    cursor: Option<Cursor>,
    /// Live messages held during a replay.
    held: Option<Held>,
    /// Messages after this cursor may have been lost while the gateway was cut off from
    /// NATS: the session replays them (see `reregister`).
    resync: Option<Cursor>,
    /// The resync waits until then (it retries a replay that failed).
    resync_not_before: Option<Instant>,
    /// Every session of the gateway was asked for a resync at once (after a NATS outage or a
    /// lost delivery): it may be served from one read shared by all (`replay::gap_read`)
    /// that began after this time (when the gateway asked).
    resync_shared: Option<Instant>,
}

#[derive(Default)]
struct Held {
    /// What the replay covers, once known.
    upto: Option<Cursor>,
    /// Routed messages without their cursor, and where they are in the stream.
    frames: VecDeque<(Position, Message)>,
    /// Held messages were dropped for room: another replay must send them.
    dropped: bool,
}

/// What a drain found.
pub enum Drained {
    /// Frames to send (possibly none, on a spurious wake-up).
    Frames,
    /// Close with this code once the drained frames are sent.
    Close(CloseCode),
}

impl Outbox {
    /// An outbox whose device starts where the gateway's deliveries stand when the session
    /// registers (nothing for it can be routed before).
    pub fn new(
        max_frames: usize,
        max_bytes: usize,
        encoding: Encoding,
        routed: Arc<RoutedUpto>,
    ) -> Self {
        Self {
            state: Mutex::new(State {
                cursor: routed.get(),
                ..State::default()
            }),
            notify: Notify::new(),
            max_frames,
            max_bytes,
            encoding,
            partitions: routed.partitions(),
            routed,
        }
    }

    /// Queues a frame that is not a routed message. Returns `false` when the queue was full:
    /// the session is then closed as a slow consumer and the frame is dropped (the client
    /// resyncs on reconnect).
    pub fn push(&self, frame: Message) -> bool {
        let mut state = self.state.lock().unwrap();
        if !self.room(&mut state, frame.len()) {
            drop(state);
            self.notify.notify_one();
            return false;
        }
        state.bytes += frame.len();
        state.frames.push_back(frame);
        drop(state);
        self.notify.notify_one();
        true
    }

    /// Queues a routed message, encoded without a cursor, at `at` in the stream: held back
    /// during a replay, dropped if the device has it, otherwise queued with the device's
    /// cursor moved to it. `false` as for [`push`](Self::push).
    pub fn push_routed(&self, frame: &Message, at: Position) -> bool {
        let mut state = self.state.lock().unwrap();
        if state.held.is_some() {
            return self.hold_routed(&mut state, frame, at);
        }
        if !self.room(&mut state, frame.len()) {
            drop(state);
            self.notify.notify_one();
            return false;
        }
        let queued = self.queue_routed(&mut state, frame, at, true);
        drop(state);
        if queued {
            self.notify.notify_one();
        }
        true
    }

    /// Holds a routed message back during a replay, unless the replay carries it. With no
    /// room left, every held message is dropped instead (the stream has them all) and the
    /// hold ends with another replay.
    fn hold_routed(&self, state: &mut State, frame: &Message, at: Position) -> bool {
        if state.close == Some(CloseCode::SlowConsumer) {
            return false;
        }
        let held = state.held.as_mut().expect("holding");
        if held
            .upto
            .as_ref()
            .is_some_and(|upto| covers(upto, at, self.partitions))
        {
            return true;
        }
        let full = state.frames.len() + held.frames.len() >= self.max_frames
            || state.bytes + frame.len() > self.max_bytes;
        if full {
            state.bytes -= held.frames.iter().map(|(_, f)| f.len()).sum::<usize>();
            held.frames = VecDeque::new();
            held.dropped = true;
        } else {
            held.frames.push_back((at, frame.clone()));
            state.bytes += frame.len();
        }
        true
    }

    /// Whether `len` more bytes fit; if not, the session becomes a slow consumer.
    fn room(&self, state: &mut State, len: usize) -> bool {
        if state.close == Some(CloseCode::SlowConsumer) {
            return false;
        }
        let held = state.held.as_ref().map_or(0, |h| h.frames.len());
        if state.frames.len() + held >= self.max_frames || state.bytes + len > self.max_bytes {
            state.frames = VecDeque::new();
            state.held = None;
            state.bytes = 0;
            state.close = Some(CloseCode::SlowConsumer);
            return false;
        }
        true
    }

    /// Moves the cursor to `at` and queues the frame with it; `false` if the device has it.
    /// `raise`: to where the gateway's deliveries stand.
    fn queue_routed(&self, state: &mut State, frame: &Message, at: Position, raise: bool) -> bool {
        let cursor = match &mut state.cursor {
            Some(c) if c.epoch == at.epoch && c.partitions() == self.partitions => c,
            // No position yet, or the stream was made again.
            slot => slot.insert(Cursor::head(at.epoch, 0, self.partitions)),
        };
        if !cursor.receive(at.partition, at.seq) {
            return false;
        }
        if raise {
            self.routed.raise(cursor);
        }
        let with_cursor = to_ws(self.encoding.add_cursor(bytes_of(frame), cursor));
        state.bytes += with_cursor.len();
        state.frames.push_back(with_cursor);
        true
    }

    /// Starts holding live messages back (a replay begins).
    pub fn hold(&self) {
        self.state
            .lock()
            .unwrap()
            .held
            .get_or_insert_with(Held::default);
    }

    /// The replay covers every message up to `head`: held ones it covers are dropped.
    pub fn covered_upto(&self, head: Cursor) {
        let mut state = self.state.lock().unwrap();
        let state = &mut *state;
        if let Some(held) = &mut state.held {
            held.frames.retain(|(at, f)| {
                let keep = !covers(&head, *at, self.partitions);
                if !keep {
                    state.bytes -= f.len();
                }
                keep
            });
            held.upto = Some(head);
        }
    }

    /// Ends the hold: the device's cursor moves to what the replay covered, and the held
    /// messages it did not cover are queued after everything the replay wrote.
    pub fn release(&self) {
        let mut state = self.state.lock().unwrap();
        if state.resync.is_some() {
            // Another replay is asked for: the hold goes on until it ends.
            drop(state);
            self.notify.notify_one();
            return;
        }
        if let Some(held) = state.held.take() {
            if let Some(upto) = held.upto {
                state.cursor = Some(match state.cursor.take() {
                    Some(c) if c.epoch == upto.epoch && c.seqs.len() == upto.seqs.len() => {
                        c.max(&upto)
                    }
                    _ => upto,
                });
            }
            if held.dropped {
                // What was dropped lies after the replay's head: one more replay, from
                // there, sends it. Without a position to replay from, the device must
                // reconnect and sync (a live message would carry its cursor past the gap).
                match state.cursor.clone() {
                    Some(after) => {
                        state.held = Some(Held::default());
                        state.resync = Some(after);
                        state.resync_shared = None;
                    }
                    None => {
                        state.frames = VecDeque::new();
                        state.bytes = 0;
                        state.close = Some(CloseCode::SlowConsumer);
                    }
                }
                drop(state);
                self.notify.notify_one();
                return;
            }
            for (at, frame) in held.frames {
                state.bytes -= frame.len();
                // Not raised to the gateway's position: it counts the held messages after
                // this one, which would then look like copies.
                self.queue_routed(&mut state, &frame, at, false);
            }
            drop(state);
            self.notify.notify_one();
        }
    }

    /// Asks the session to replay its user's messages after `after` (the earliest asked for
    /// wins until the session takes it).
    pub fn resync_after(&self, after: Cursor) {
        self.ask_resync(after, false);
    }

    /// Asks, like [`resync_after`](Self::resync_after), for the replay every session of the
    /// gateway is asked for at once: it may share one read.
    ///
    /// `after` is where the gateway's deliveries stood (`reregister`), and a session holding
    /// live messages for a replay has not had those: the replay from `after` would cover them
    /// without carrying them, and they would be dropped as covered. So the request starts no
    /// later than the device's own cursor, which a hold never moves past a held message.
    pub fn resync_with_all_after(&self, after: Cursor) {
        let after = match &self.state.lock().unwrap().cursor {
            Some(c) if c.epoch == after.epoch && c.seqs.len() == after.seqs.len() => c.min(&after),
            _ => after,
        };
        self.ask_resync(after, true);
    }

    fn ask_resync(&self, after: Cursor, shared: bool) {
        let mut state = self.state.lock().unwrap();
        state.held.get_or_insert_with(Held::default);
        let now = shared.then(Instant::now);
        let (resync, shared) = match state.resync.take() {
            // Two requests of every session: from the earlier position, read after the later
            // request. One of this session alone makes it a replay of its own.
            Some(c) if c.epoch == after.epoch && c.seqs.len() == after.seqs.len() => {
                (c.min(&after), state.resync_shared.and(now))
            }
            _ => (after, now),
        };
        state.resync = Some(resync);
        state.resync_shared = shared;
        drop(state);
        self.notify.notify_one();
    }

    /// Asks for a replay of partition `k` after `seq`, the rest from where the device is
    /// (or `fallback`, before it has a position): a lost delivery, for which every session
    /// of the gateway is asked at once, so it may share one read.
    pub fn resync_partition(&self, k: u32, seq: u64, fallback: &Cursor) {
        let mut after = match &self.state.lock().unwrap().cursor {
            Some(c) if c.epoch == fallback.epoch && c.seqs.len() == fallback.seqs.len() => {
                c.clone()
            }
            _ => fallback.clone(),
        };
        if let Some(s) = after.seqs.get_mut(k as usize) {
            *s = (*s).min(seq);
        }
        self.ask_resync(after, true);
    }

    /// Asks, like [`resync_after`](Self::resync_after), for a replay after `after`, but not
    /// before `pause` has passed: a replay that failed, tried again. Until then no other
    /// replay starts from the pending request (one asked meanwhile joins it, the earliest
    /// cursor winning), so nothing claims to cover what the failed one had not sent.
    pub fn resync_after_pause(&self, after: Cursor, pause: Duration) {
        self.state.lock().unwrap().resync_not_before = Some(Instant::now() + pause);
        self.resync_after(after);
    }

    /// Wakes the session to look for a resync whose pause is over.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// The pending resync request, if any and not paused, and, when every session of the
    /// gateway was asked for it (see [`resync_with_all_after`](Self::resync_with_all_after)),
    /// since when.
    pub fn take_resync(&self) -> Option<(Cursor, Option<Instant>)> {
        let mut state = self.state.lock().unwrap();
        if state.resync_not_before.is_some_and(|t| Instant::now() < t) {
            return None;
        }
        state.resync_not_before = None;
        let shared = std::mem::take(&mut state.resync_shared);
        state.resync.take().map(|c| (c, shared))
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

/// Whether a replay up to `upto` carried the message at `at`.
fn covers(upto: &Cursor, at: Position, partitions: u32) -> bool {
    upto.epoch == at.epoch && upto.partitions() == partitions && upto.covers(at.partition, at.seq)
}

fn bytes_of(frame: &Message) -> &[u8] {
    match frame {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) => b,
        _ => &[],
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

    fn outbox(max_frames: usize, max_bytes: usize) -> Outbox {
        Outbox::new(
            max_frames,
            max_bytes,
            Encoding::Json,
            Arc::new(RoutedUpto::new(None, 2)),
        )
    }

    /// A two-partition cursor of epoch 1.
    fn cursor(a: u64, b: u64) -> Cursor {
        Cursor {
            epoch: 1,
            seqs: vec![a, b],
        }
    }

    /// A routed message of partition `partition` at `seq`.
    fn at(partition: u32, seq: u64) -> Position {
        Position {
            epoch: 1,
            partition,
            seq,
        }
    }

    fn routed(body: &str) -> Message {
        Message::text(format!(r#"{{"body":"{body}"}}"#))
    }

    /// The bodies and cursors of what the outbox would send.
    fn drained(outbox: &Outbox) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        outbox.drain(&mut out);
        out.iter()
            .map(|m| {
                let v: serde_json::Value = serde_json::from_slice(bytes_of(m)).unwrap();
                let text = |k: &str| v.get(k).and_then(|b| b.as_str()).map(String::from);
                (text("body").unwrap_or_default(), text("cursor"))
            })
            .collect()
    }

    #[test]
    fn a_full_queue_evicts_as_slow_consumer() {
        let outbox = outbox(2, 1024);
        assert!(outbox.push(Message::text("a")));
        assert!(outbox.push(Message::text("b")));
        assert!(!outbox.push(Message::text("c")));
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
        let outbox = outbox(100, 10);
        assert!(outbox.push(Message::text("12345")));
        assert!(outbox.push(Message::text("12345")));
        let mut out = Vec::new();
        outbox.drain(&mut out);
        assert_eq!(out.len(), 2);
        // Drained bytes no longer count; held ones do.
        outbox.hold();
        assert!(outbox.push_routed(&Message::text("123456"), at(0, 1)));
        assert!(!outbox.push(Message::text("12345")), "6 + 5 > 10");
        out.clear();
        assert!(matches!(
            outbox.drain(&mut out),
            Drained::Close(CloseCode::SlowConsumer)
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn a_resync_request_waits_for_the_session_and_the_earliest_wins() {
        let outbox = outbox(8, 1024);
        outbox.resync_after(cursor(7, 3));
        outbox.resync_after(cursor(5, 4));
        assert_eq!(
            outbox.take_resync(),
            Some((cursor(5, 3), None)),
            "per partition"
        );
        assert_eq!(outbox.take_resync(), None);
        // A failed replay's retry waits out its pause; requests meanwhile join it.
        outbox.resync_after_pause(cursor(4, 4), Duration::from_secs(3600));
        outbox.resync_after(cursor(2, 6));
        assert_eq!(outbox.take_resync(), None, "paused");
        let outbox = self::outbox(8, 1024);
        outbox.resync_after_pause(cursor(4, 4), Duration::ZERO);
        assert_eq!(outbox.take_resync(), Some((cursor(4, 4), None)));
    }

    #[test]
    fn a_resync_asked_of_every_session_is_shared_unless_another_joins_it() {
        let outbox = outbox(8, 1024);
        let asked = Instant::now();
        outbox.resync_with_all_after(cursor(3, 3));
        let later = Instant::now();
        outbox.resync_with_all_after(cursor(3, 3));
        let (after, shared) = outbox.take_resync().expect("a resync");
        assert_eq!(after, cursor(3, 3));
        assert!(
            shared.is_some_and(|since| since >= asked),
            "after the later request"
        );
        // A lost delivery after an outage: from the earlier position, after the later one.
        outbox.resync_with_all_after(cursor(3, 3));
        outbox.resync_partition(0, 2, &cursor(3, 3));
        let (after, shared) = outbox.take_resync().expect("a resync");
        assert_eq!(after, cursor(2, 3));
        assert!(shared.is_some_and(|since| since >= later));
        // A request of this session's own, from elsewhere, makes the replay its own.
        outbox.resync_with_all_after(cursor(3, 3));
        outbox.resync_after(cursor(2, 5));
        assert_eq!(outbox.take_resync(), Some((cursor(2, 3), None)));
        outbox.resync_after(cursor(2, 5));
        outbox.resync_with_all_after(cursor(3, 3));
        assert_eq!(outbox.take_resync(), Some((cursor(2, 3), None)));
    }

    #[test]
    fn routed_messages_carry_the_devices_cursor_and_copies_are_dropped() {
        let gateway = Arc::new(RoutedUpto::new(Some(Cursor::head(1, 4, 2)), 2));
        let outbox = Outbox::new(8, 1024, Encoding::Json, gateway.clone());
        assert!(outbox.push_routed(&routed("a"), at(1, 5)));
        // Another router's copy of it, then an older message of the other partition.
        assert!(outbox.push_routed(&routed("a again"), at(1, 5)));
        assert!(outbox.push_routed(&routed("old"), at(0, 3)));
        assert!(outbox.push_routed(&routed("b"), at(0, 6)));
        // The gateway has delivered partition 1 up to 9 to all its sessions meanwhile (none
        // of it for this one): the device's cursor moves through it too.
        gateway.observe(at(1, 9));
        assert!(outbox.push_routed(&routed("c"), at(0, 7)));
        assert_eq!(
            drained(&outbox),
            [
                ("a".into(), Some("1-4.5".into())),
                ("b".into(), Some("1-6.5".into())),
                ("c".into(), Some("1-7.9".into())),
            ],
            "the copy and what the device had are dropped"
        );
    }

    #[test]
    fn a_replay_holds_live_messages_and_drops_what_it_covered() {
        let outbox = outbox(8, 1024);
        outbox.hold();
        assert!(outbox.push_routed(&routed("live 5"), at(0, 5)));
        assert!(outbox.push(Message::text(r#"{"body":"receipt"}"#)));
        outbox.covered_upto(Cursor::head(1, 6, 2));
        assert!(outbox.push_routed(&routed("live 6"), at(1, 6)));
        assert!(outbox.push_routed(&routed("live 7"), at(1, 7)));
        assert_eq!(
            drained(&outbox),
            [("receipt".into(), None)],
            "live messages wait"
        );
        outbox.release();
        assert_eq!(drained(&outbox), [("live 7".into(), Some("1-6.7".into()))]);
        assert!(outbox.push_routed(&routed("live 8"), at(0, 8)));
        assert_eq!(
            drained(&outbox),
            [("live 8".into(), Some("1-8.7".into()))],
            "no longer held"
        );
    }

    #[test]
    fn held_messages_are_all_released_whatever_the_gateway_received_meanwhile() {
        let gateway = Arc::new(RoutedUpto::new(Some(Cursor::head(1, 4, 2)), 2));
        let outbox = Outbox::new(8, 1024, Encoding::Json, gateway.clone());
        outbox.hold();
        // Partition 1's router is ahead of partition 0's; both reach this session held.
        for at in [at(1, 9), at(0, 6)] {
            assert!(outbox.push_routed(&routed(&at.seq.to_string()), at));
            gateway.observe(at);
        }
        outbox.covered_upto(Cursor::head(1, 5, 2));
        outbox.release();
        assert_eq!(
            drained(&outbox),
            [
                ("9".into(), Some("1-5.9".into())),
                ("6".into(), Some("1-6.9".into()))
            ]
        );
    }

    /// The gateway was cut off from NATS while this session replayed: the gateway's position
    /// before the cut counts messages held for the device, which it has not had yet. The
    /// resync must carry them, not cover them.
    #[test]
    fn a_resync_of_every_session_does_not_skip_what_a_replaying_session_holds() {
        let gateway = Arc::new(RoutedUpto::new(Some(Cursor::head(1, 4, 2)), 2));
        let outbox = Outbox::new(8, 1024, Encoding::Json, gateway.clone());
        outbox.hold();
        for seq in 5..=7 {
            assert!(outbox.push_routed(&routed(&seq.to_string()), at(0, seq)));
            gateway.observe(at(0, seq));
        }
        outbox.resync_with_all_after(gateway.get().unwrap());
        // The replay under way ends before the resync's replay starts.
        outbox.covered_upto(Cursor::head(1, 4, 2));
        outbox.release();
        let (from, shared) = outbox.take_resync().expect("a resync is asked for");
        assert!(shared.is_some());
        assert_eq!(from, Cursor::head(1, 4, 2), "from before the held messages");
        assert_eq!(drained(&outbox), [], "held until the resync's replay ends");
    }

    #[test]
    fn a_hold_out_of_room_drops_held_messages_and_ends_with_another_replay() {
        let gateway = Arc::new(RoutedUpto::new(Some(Cursor::head(1, 4, 2)), 2));
        let outbox = Outbox::new(3, 1024, Encoding::Json, gateway);
        outbox.hold();
        for seq in 5..=9 {
            assert!(
                outbox.push_routed(&routed(&seq.to_string()), at(0, seq)),
                "a full hold does not evict"
            );
        }
        assert!(outbox.push(Message::text(r#"{"body":"receipt"}"#)));
        assert_eq!(drained(&outbox), [("receipt".into(), None)]);
        // The replay (its head read before 7 was routed) ends: what was dropped after its
        // head is replayed by another, and live messages stay held meanwhile.
        outbox.covered_upto(Cursor::head(1, 6, 2));
        outbox.release();
        assert_eq!(outbox.take_resync(), Some((Cursor::head(1, 6, 2), None)));
        assert!(outbox.push_routed(&routed("10"), at(0, 10)));
        assert_eq!(drained(&outbox), [], "held for the next replay");
        outbox.covered_upto(Cursor::head(1, 9, 2));
        outbox.release();
        assert_eq!(drained(&outbox), [("10".into(), Some("1-10.9".into()))]);
        assert_eq!(outbox.take_resync(), None);
    }

    #[test]
    fn a_full_queue_still_evicts_while_holding() {
        let outbox = outbox(2, 1024);
        outbox.hold();
        assert!(outbox.push(Message::text("a")));
        assert!(outbox.push(Message::text("b")));
        assert!(
            !outbox.push(Message::text("c")),
            "frames the session must send"
        );
        assert!(!outbox.push_routed(&routed("d"), at(0, 1)));
    }

    #[test]
    fn a_resync_holds_at_once_and_a_replay_ending_meanwhile_keeps_holding() {
        let gateway = Arc::new(RoutedUpto::new(Some(Cursor::head(1, 4, 2)), 2));
        let outbox = Outbox::new(8, 1024, Encoding::Json, gateway.clone());
        assert!(outbox.push_routed(&routed("a"), at(0, 5)));
        drained(&outbox);
        // Partition 1 lost a delivery after 4: replay it from there, partition 0 from where
        // the device is.
        outbox.resync_partition(1, 4, &Cursor::head(1, 4, 2));
        assert!(outbox.push_routed(&routed("b"), at(1, 7)));
        assert_eq!(drained(&outbox), [], "held before the replay starts");
        // A replay the client asked for ends first: the asked-for one is still to come.
        outbox.covered_upto(Cursor::head(1, 6, 2));
        outbox.release();
        assert_eq!(drained(&outbox), []);
        let (after, _) = outbox.take_resync().expect("the partition's replay");
        assert_eq!(after.seqs, [5, 4]);
        outbox.covered_upto(Cursor::head(1, 6, 2));
        outbox.release();
        assert_eq!(drained(&outbox), [("b".into(), Some("1-6.7".into()))]);
    }

    #[test]
    fn close_keeps_queued_frames() {
        let outbox = outbox(8, 1024);
        outbox.push(Message::text("a"));
        outbox.close(CloseCode::Reconnect);
        let mut out = Vec::new();
        assert!(matches!(
            outbox.drain(&mut out),
            Drained::Close(CloseCode::Reconnect)
        ));
        assert_eq!(out.len(), 1);
    }
}
