//! Driving a replay from the session loop: a `sync` frame (or the handshake's `cursor`, or the
//! gateway after a NATS outage) starts one; live messages are held in the outbox meanwhile.
//! Each turn's frames are written before the next turn starts, so a large backlog goes at the
//! pace of the socket. The reading itself is `crate::replay`'s.

use std::future::Future;
use std::pin::Pin;

use protocol::Cursor;
use protocol::frames::ServerFrame;

use super::Session;
use crate::refusal::Refusal;
use crate::replay::{Replay, Turn};

/// The replay's next step.
pub(super) type ReplayTurn = Pin<Box<dyn Future<Output = anyhow::Result<Turn>> + Send>>;

impl Session {
    pub(super) fn on_sync(&mut self, cursor: Option<Cursor>) {
        if self.replay.is_some() {
            return self.refuse(Refusal::SyncRunning);
        }
        self.start_replay(cursor, None);
    }

    /// Replays the user's messages after `cursor`, holding live ones back meanwhile: for a
    /// `sync`, and unasked after the gateway was cut off from NATS (`reregister`; `shared`:
    /// since when every session was asked for the same, see `replay::gap_read`).
    pub(super) fn start_replay(
        &mut self,
        cursor: Option<Cursor>,
        shared: Option<std::time::Instant>,
    ) {
        self.state.metrics.replays.inc();
        self.handle.outbox.hold();
        self.start_replay_turn(Replay::Start {
            user: self.user.clone(),
            cursor,
            shared,
            marker: None,
        });
    }

    pub(super) fn start_replay_turn(&mut self, replay: Replay) {
        if let Replay::Start { cursor, .. } = &replay {
            self.replayed_to = cursor.clone();
        }
        let state = self.state.clone();
        self.replay = Some(Box::pin(async move { state.replayer.turn(replay).await }));
    }

    /// Sends what a replay step read; the next step starts after this turn's write.
    pub(super) fn on_replay_turn(&mut self, turn: anyhow::Result<Turn>) {
        self.replay = None;
        let turn = match turn {
            Ok(turn) => turn,
            Err(e) => {
                // Live messages stay held: released now, they would carry cursors past the
                // messages the replay has not sent yet. The gateway tries again from the
                // last message it sent; a device that leaves meanwhile resumes from there.
                match self.replayed_to.take() {
                    Some(at) => {
                        plumbing::jetstream_error("read");
                        tracing::warn!(error = %e, "replay failed; trying again");
                        return crate::reregister::resync_later(self.handle.clone(), at);
                    }
                    // No cursor: nothing was to be replayed, and the device learns where
                    // live traffic starts from `synced` when it asks again.
                    None => {
                        plumbing::jetstream_error("read");
                        tracing::warn!(error = %e, "sync failed");
                        self.handle.outbox.release();
                        return self.refuse(Refusal::SyncFailed);
                    }
                }
            }
        };
        if let Some(head) = turn.head {
            self.handle.outbox.covered_upto(head);
        }
        for frame in &turn.frames {
            match frame {
                ServerFrame::Message(m) => {
                    self.state.metrics.replayed.inc();
                    if m.cursor.is_some() {
                        self.replayed_to = m.cursor.clone();
                    }
                }
                ServerFrame::Synced {
                    recovered: false, ..
                } => self.state.metrics.replay_gaps.inc(),
                _ => {}
            }
            self.queue(frame);
        }
        match turn.next {
            Some(next) => self.start_replay_turn(next),
            None => {
                self.replayed_to = None;
                self.handle.outbox.release();
            }
        }
    }
}

pub(super) async fn poll_replay(replay: &mut Option<ReplayTurn>) -> anyhow::Result<Turn> {
    match replay {
        Some(fut) => fut.as_mut().await,
        None => std::future::pending().await,
    }
}
