//! Which web pages may talk to the gateway. A browser sends the page's origin with a
//! WebSocket upgrade and with a `fetch`; other clients send none. Without a check, any page
//! the user visits could open a socket with a token it holds, and, by DNS rebinding, any page
//! could reach an all-in-one on the user's own machine. So upgrades carrying an `Origin` are
//! refused unless it is allowed (`gateway.allowed_origins`, plus the gateway's own origin
//! when it serves the web client), and dev tokens go only to loopback pages.

use std::net::SocketAddr;

/// The origins allowed to open a WebSocket.
pub struct Origins {
    allowed: Vec<String>,
}

impl Origins {
    /// `configured` (exact origins such as `https://chat.example.com`), and, when the
    /// gateway serves the web client at `own`, that address's origins (for a loopback
    /// address also `localhost`). A gateway listening on all interfaces cannot know the name
    /// it is reached by: its operator lists it.
    pub fn new(configured: &[String], own: Option<SocketAddr>) -> Self {
        let mut allowed: Vec<String> = configured.iter().map(|o| normalise(o)).collect();
        if let Some(addr) = own.filter(|a| !a.ip().is_unspecified()) {
            allowed.push(format!("http://{addr}"));
            if addr.ip().is_loopback() {
                allowed.push(format!("http://localhost:{}", addr.port()));
            }
        }
        Self { allowed }
    }

    pub fn allows(&self, origin: &str) -> bool {
        let origin = normalise(origin);
        self.allowed.contains(&origin)
    }
}

/// Whether a `Host` header names this machine's loopback interface (with or without a port).
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host
            .rsplit_once(':')
            .map_or(host.as_str(), |(name, _)| name),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether an `Origin` is a page served from this machine's loopback interface.
pub fn is_loopback_origin(origin: &str) -> bool {
    let origin = origin.trim().to_ascii_lowercase();
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|host| !host.contains('/') && is_loopback_host(host))
}

fn normalise(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_origins_and_the_web_clients_own_are_allowed() {
        let none = Origins::new(&[], None);
        assert!(!none.allows("http://127.0.0.1:8080"));
        let own = Origins::new(
            &["https://Chat.Example.com/".into()],
            Some(([127, 0, 0, 1], 8080).into()),
        );
        assert!(own.allows("https://chat.example.com"));
        assert!(own.allows("http://127.0.0.1:8080"));
        assert!(own.allows("http://localhost:8080"));
        assert!(!own.allows("http://localhost:8081"));
        assert!(!own.allows("http://evil.example"));
        assert!(!own.allows("null"));
        let everywhere = Origins::new(&[], Some(([0, 0, 0, 0], 8080).into()));
        assert!(!everywhere.allows("http://0.0.0.0:8080"));
    }

    #[test]
    fn loopback_hosts_and_origins() {
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "127.9.9.9",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1:8080",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
        assert!(is_loopback_origin("http://127.0.0.1:8080"));
        assert!(is_loopback_origin("http://localhost:8080"));
        assert!(!is_loopback_origin("http://evil.example:8080"));
        assert!(!is_loopback_origin("null"));
        assert!(!is_loopback_origin("http://localhost:8080/x"));
    }
}
