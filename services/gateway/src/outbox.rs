//! A session's bounded outbound queue. Producers (the NATS inbox, the session itself) push
//! encoded frames; the session drains everything queued in one go and flushes once.
//! A full queue evicts the session (slow consumer) instead of growing memory.

use std::collections::VecDeque;
use std::sync::Mutex;

use protocol::CloseCode;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    capacity: usize,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Message>,
    /// Set once: the session must close with this code after sending what is queued
    /// (or at once, for a slow consumer).
    close: Option<CloseCode>,
}

/// What a drain found.
pub enum Drained {
    /// Frames to send (possibly none, on a spurious wake-up).
    Frames,
    /// Close with this code once the drained frames are sent.
    Close(CloseCode),
}

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            capacity,
        }
    }

    /// Queues a frame. Returns `false` when the queue was full: the session is then closed
    /// as a slow consumer and the frame is dropped (the client resyncs on reconnect).
    pub fn push(&self, frame: Message) -> bool {
        let mut state = self.state.lock().unwrap();
        if state.close == Some(CloseCode::SlowConsumer) {
            return false;
        }
        if state.frames.len() >= self.capacity {
            state.frames.clear();
            state.close = Some(CloseCode::SlowConsumer);
            drop(state);
            self.notify.notify_one();
            return false;
        }
        state.frames.push_back(frame);
        drop(state);
        self.notify.notify_one();
        true
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_evicts_as_slow_consumer() {
        let outbox = Outbox::new(2);
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
    fn close_keeps_queued_frames() {
        let outbox = Outbox::new(8);
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
