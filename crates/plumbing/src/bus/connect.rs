//! Connecting to NATS as one of natter's identities, and the round trip that proves the
//! server has seen what we sent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::BusConfig;
use crate::nats_auth::{self, Role};

/// Connects to NATS as `role`, with the credentials and TLS settings of `bus`. `nats_url`
/// may list several servers, comma separated (the nodes of a cluster); the client picks one
/// and fails over to the others. The first connect must succeed (a typo'd URL or a refused
/// credential fails fast); afterwards the client reconnects forever and buffers publishes
/// while disconnected. `name` is how the server lists the connection.
pub async fn connect(
    bus: &BusConfig,
    role: Role,
    name: &str,
) -> anyhow::Result<async_nats::Client> {
    let url = &bus.nats_url;
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .custom_inbox_prefix(role.inbox_prefix())
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(5)))
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(move |event| async move { on_event(role, event) });
    if let Some(seed_file) = &bus.nkey_file {
        options = options.nkey(nats_auth::read_seed(seed_file)?);
    }
    if let Some(ca) = &bus.tls_ca_file {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let client = options
        .connect(server_urls(url))
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to NATS at {url} as {}: {e}", role.name()))?;
    let process = crate::metrics::process();
    process.nats_connected.with(role.name()).set(1);
    process.count_nats_messages(role.name(), &client);
    Ok(client)
}

/// The longest pause between two attempts to reconnect.
const RECONNECT_DELAY_MAX: Duration = Duration::from_millis(500);

/// The pause before reconnect attempt `attempts`: none for the first (another server of the
/// cluster may be up), then doubling from 2 ms to `RECONNECT_DELAY_MAX`, spread ±25 % so
/// natter's connections do not arrive at a restarted server together. async-nats's default
/// doubles up to 4 s: a gateway cut off for 3 s came back on average 2 s after the server
/// did, and every device on it waited that long for what it missed.
fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let doubled = Duration::from_millis(1 << (attempts - 1).min(20));
    doubled
        .min(RECONNECT_DELAY_MAX)
        .mul_f64(rand::random_range(0.75..1.25))
}

/// Permission violations the server reported to natter's services (not to the operator),
/// since the process started. A service that needs a subject it was not given shows up here;
/// the test kit fails a test when it is not zero.
static VIOLATIONS: AtomicU64 = AtomicU64::new(0);

/// See [`VIOLATIONS`].
pub fn permission_violations() -> u64 {
    VIOLATIONS.load(Ordering::Relaxed)
}

fn on_event(role: Role, event: async_nats::Event) {
    let process = crate::metrics::process();
    match event {
        async_nats::Event::Connected => process.nats_connected.with(role.name()).set(1),
        async_nats::Event::Disconnected => {
            process.nats_connected.with(role.name()).set(0);
            process.nats_disconnects.with(role.name()).inc();
        }
        async_nats::Event::SlowConsumer(_) => {
            process.nats_slow_consumers.with(role.name()).inc();
            tracing::warn!(
                role = role.name(),
                "NATS client dropped messages: read too slowly"
            );
        }
        // An answer to a request that came in over an earlier connection: the permission to
        // reply lives as long as the connection that received the request, so after a
        // reconnect the answer is refused. The requester has timed out by then and retries.
        async_nats::Event::ServerError(async_nats::ServerError::Other(text))
            if text.contains("Permissions Violation for Publish to \"_INBOX.") =>
        {
            tracing::warn!(
                role = role.name(),
                "a late answer was refused after a reconnect"
            );
        }
        async_nats::Event::ServerError(async_nats::ServerError::Other(text))
            if text.to_ascii_lowercase().contains("permissions violation") =>
        {
            if role != Role::Operator {
                VIOLATIONS.fetch_add(1, Ordering::Relaxed);
            }
            tracing::error!(role = role.name(), error = %text, "NATS refused a subject");
        }
        async_nats::Event::ServerError(e) => {
            tracing::warn!(role = role.name(), error = %e, "NATS server error");
        }
        _ => {}
    }
}

/// The servers of a comma-separated list. async-nats parses a single string as one URL, so a
/// list must be split before it is handed over.
fn server_urls(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// Returns once the server has processed everything this client sent before the call (for
/// example a SUB), so that other connections' messages can already reach it. `flush` alone
/// only empties our write buffer. A request to a subject nobody serves comes back as "no
/// responders" from the server itself: one round trip.
pub async fn round_trip(client: &async_nats::Client) {
    let subject = format!("_NATTER.sync.{}", client.new_inbox().replace('.', "_"));
    let _ = client.request(subject, bytes::Bytes::new()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comma_separated_url_lists_every_server() {
        assert_eq!(
            server_urls("nats://a:4222, nats://b:4222,nats://c:4222,"),
            ["nats://a:4222", "nats://b:4222", "nats://c:4222"]
        );
        assert_eq!(server_urls("nats://a:4222"), ["nats://a:4222"]);
    }

    #[test]
    fn reconnects_are_tried_at_once_then_at_most_about_half_a_second_apart() {
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        let second = reconnect_delay(2);
        assert!(second >= Duration::from_micros(1500) && second <= Duration::from_micros(2500));
        for attempts in [10, 11, 64, usize::MAX] {
            let d = reconnect_delay(attempts);
            assert!(d >= RECONNECT_DELAY_MAX.mul_f64(0.75), "{attempts}: {d:?}");
            assert!(d <= RECONNECT_DELAY_MAX.mul_f64(1.25), "{attempts}: {d:?}");
        }
    }
}
