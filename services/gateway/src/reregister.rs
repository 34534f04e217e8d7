//! Keeping this gateway registered, and whole again after it was cut off from NATS.
//!
//! While the gateway is cut off, its sessions stay open, but two things can go wrong:
//! * its lease can lapse in the chat services' presence views, which then purge its session
//!   keys, so nothing would be routed to its users any more;
//! * deliveries published to it meanwhile are lost: `natter.gw.<id>.deliver` is plain NATS,
//!   and its subscription exists again only once the client has reconnected. This includes
//!   messages routed in the moment between the chat service's reconnect and its own.
//!
//! So after every reconnect the gateway writes its lease and every live session's key again
//! (unless its lease held throughout, refreshed without a failure within half its TTL: then
//! no chat service purged anything, as when the connection merely moved to another server),
//! then has every session replay its user's messages after the last one routed to this
//! gateway before the cut (the `sync` replay, ending with an unasked `synced`). The router
//! routes in stream order, so nothing before that point can be missing. A replay that fails
//! is retried by the gateway, not left to the client, whose cursor may already be past the
//! messages that were lost.
//!
//! Reconnects are noticed through the client's connect counter (`Statistics::connects`),
//! checked every `CHECK_EVERY`. The counter only grows, so a disconnection shorter than the
//! check interval is not missed, and the gateway needs no callback installed when its NATS
//! connection was made (it is handed a connected client).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use protocol::Cursor;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::registry::SessionHandle;
use crate::state::GatewayState;

/// How often the connect counter is checked.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// Session keys written at once during a re-registration.
const CONCURRENT_PUTS: usize = 1024;
/// Pause after a failed re-registration, doubling up to `RETRY_MAX` (JetStream may still be
/// recovering its streams when the connection is back).
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Pause before a session retries a replay of its own that failed.
const RESYNC_RETRY: Duration = Duration::from_secs(1);

/// Refreshes the lease and re-registers after every reconnect, until `stop`. When it returns
/// it has handed every write to the NATS client, so a lease release issued afterwards is
/// applied after them.
pub async fn keep_registered(state: Arc<GatewayState>, stop: CancellationToken) {
    tokio::join!(
        state
            .presence
            .clone()
            .keep_lease(state.nats.clone(), stop.clone()),
        reregister_on_reconnect(&state, &stop),
    );
}

async fn reregister_on_reconnect(state: &GatewayState, stop: &CancellationToken) {
    let statistics = state.nats.statistics();
    let mut seen = statistics.connects.load(Ordering::Relaxed);
    // Taken while the connection was known to be up, so it precedes any delivery lost since.
    let mut routed_before = state.local.routed.get();
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = check.tick() => {}
        }
        // Read before the counter: if the counter has not moved, no delivery of the new
        // connection can be in it.
        let routed_now = state.local.routed.get();
        let connects = statistics.connects.load(Ordering::Relaxed);
        if connects == seen {
            routed_before = routed_now;
            continue;
        }
        seen = connects;
        state.reconnected.send_replace(connects);
        if state.presence.lease_unbroken() {
            // Moved to another server (a node in lame-duck mode, a blip) while the lease
            // held: no chat service purged a session. Writing every key again would only make
            // each router wait at each session's marker for its presence view, which is itself
            // catching up after such a move.
            tracing::info!(
                "nats connection re-established; lease unbroken, sessions still registered"
            );
        } else {
            tracing::info!("nats connection re-established; re-registering presence");
            reregister_until_done(state, stop).await;
        }
        if stop.is_cancelled() {
            return;
        }
        // Registered, so new messages reach the sessions live (held while they replay).
        match routed_before.clone() {
            Some(after) => {
                state.local.resync_all(after);
            }
            None => tracing::warn!("no stream position known; sessions cannot replay"),
        }
        // A reconnect during the attempt moved the counter again: the next check repeats it.
    }
}

/// Writes the lease and every session's key again, retrying with backoff until it succeeds
/// or `stop`.
async fn reregister_until_done(state: &GatewayState, stop: &CancellationToken) {
    let mut pause = RETRY_FIRST;
    loop {
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            attempt = reregister(state) => attempt,
        };
        match attempt {
            Ok(sessions) => {
                state.metrics.reregistrations.inc();
                tracing::info!(sessions, "presence re-registered");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "re-registration failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Asks `session` again, after `RESYNC_RETRY`, for the replay after `after` that failed.
/// A session closed meanwhile ignores it.
pub fn resync_later(session: Arc<SessionHandle>, after: Cursor) {
    session.outbox.resync_after_pause(after, RESYNC_RETRY);
    tokio::spawn(async move {
        tokio::time::sleep(RESYNC_RETRY).await;
        session.outbox.wake();
    });
}

/// Writes the lease, then every live session's key; returns the number of sessions. The
/// lease goes first, because the chat services sweep the sessions of a lapsed lease.
async fn reregister(state: &GatewayState) -> anyhow::Result<usize> {
    state.presence.put_lease().await?;
    let sessions = state.local.registry.all();
    let count = sessions.len();
    let mut puts = futures::stream::iter(sessions)
        .map(|(conn, handle)| async move {
            state.presence.register(&handle.user, conn).await?;
            // A session that ended meanwhile may have purged its key before this put landed.
            // If it is still registered now, its purge comes after this put.
            if !state.local.registry.contains(conn) {
                state.presence.unregister(&handle.user, conn).await?;
            }
            anyhow::Ok(())
        })
        .buffer_unordered(CONCURRENT_PUTS);
    while let Some(put) = puts.next().await {
        put?;
    }
    Ok(count)
}
