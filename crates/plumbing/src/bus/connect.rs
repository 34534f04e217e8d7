//! Connecting to NATS, and the round trip that proves the server has seen what we sent.

use std::time::Duration;

/// Connects to NATS. `url` may list several servers, comma separated (the nodes of a
/// cluster); the client picks one and fails over to the others. The first connect must
/// succeed (a typo'd URL fails fast); afterwards the client reconnects forever and buffers
/// publishes while disconnected.
pub async fn connect(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(5)))
        .connect(server_urls(url))
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to NATS at {url}: {e}"))?;
    Ok(client)
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
}
