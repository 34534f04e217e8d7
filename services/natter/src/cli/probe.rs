//! `natter probe URL`: exits 0 when `GET URL` answers 200 within the timeout, 1 otherwise.
//! It is the health check of natter's container image (compose.yaml), which has no curl or
//! wget: `natter probe http://127.0.0.1:9090/healthz`. Plain HTTP only, as the `/healthz`
//! endpoints of natter's services are.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Args)]
pub struct ProbeArgs {
    /// What to ask: `http://HOST:PORT/PATH`.
    url: String,
    /// How long connecting and answering may take, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
}

/// `Ok(())` when the URL answered 200; otherwise what it answered, or why nothing did.
pub async fn run(args: ProbeArgs) -> anyhow::Result<()> {
    let (authority, path) = split_url(&args.url)?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let status = tokio::time::timeout(timeout, get(authority, path))
        .await
        .map_err(|_| anyhow!("{} did not answer within {timeout:?}", args.url))?
        .with_context(|| format!("GET {}", args.url))?;
    if status != 200 {
        bail!("{} answered {status}", args.url);
    }
    Ok(())
}

/// `http://host:port/path` as (`host:port`, `/path`).
fn split_url(url: &str) -> anyhow::Result<(&str, &str)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("{url:?}: expected http://HOST:PORT/PATH"))?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
    if !authority.contains(':') {
        bail!("{url:?}: name the port (http://HOST:PORT/PATH)");
    }
    Ok((authority, path))
}

/// The status code of `GET path` on `authority`.
async fn get(authority: &str, path: &str) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect(authority).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(64);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") && head.len() < 256 {
        if stream.read(&mut byte).await? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP answer: {:?}", line.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:9090/healthz").unwrap(),
            ("127.0.0.1:9090", "/healthz")
        );
        assert_eq!(split_url("http://nats:8222").unwrap(), ("nats:8222", "/"));
        assert!(split_url("https://x:1/").is_err());
        assert!(split_url("http://x/healthz").is_err());
    }
}
