//! Files over the gateway's HTTP attachment endpoints, for `natter send --attach` and
//! `natter download`: streamed from and to disk, never whole in memory.

use std::path::Path;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use futures::StreamExt;
use protocol::frames::Attachment;
use tokio::io::AsyncWriteExt;

use super::Login;
use crate::config::NatterConfig;

/// `<http base>/v1/attachments` of the gateway whose WebSocket URL is `ws_url`.
fn endpoint(ws_url: &str) -> anyhow::Result<String> {
    let http = if let Some(rest) = ws_url.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = ws_url.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        bail!("{ws_url} is not a ws:// or wss:// URL");
    };
    let base = http.trim_end_matches('/').trim_end_matches("/v1/ws");
    Ok(format!("{base}/v1/attachments"))
}

/// Uploads `path` for `conversation`; the attachment a `send` then names.
pub async fn upload(
    ws_url: &str,
    token: &str,
    conversation: &protocol::ConversationId,
    path: &Path,
) -> anyhow::Result<Attachment> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot read {}", path.display()))?;
    let size = file.metadata().await?.len();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    let response = reqwest::Client::new()
        .post(endpoint(ws_url)?)
        .query(&[("conversation", conversation.as_str()), ("name", &name)])
        .bearer_auth(token)
        .header("content-length", size)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot upload to {ws_url}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if status != reqwest::StatusCode::CREATED {
        bail!("upload refused ({status}): {text}");
    }
    serde_json::from_str(&text).map_err(|e| anyhow!("unexpected answer to an upload: {e}"))
}

#[derive(Args, Debug)]
pub struct DownloadArgs {
    #[command(flatten)]
    pub login: Login,
    /// The attachment id (from `natter history` or `natter tail --json`).
    pub id: String,
    /// Where to write it.
    #[arg(long, short)]
    pub output: std::path::PathBuf,
}

/// `natter download`: writes an attachment of one of your conversations to a file.
pub async fn download(args: DownloadArgs, config: &NatterConfig) -> anyhow::Result<()> {
    let token = args.login.token(config)?;
    let url = format!("{}/{}", endpoint(&args.login.url)?, args.id);
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach {}", args.login.url))?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        bail!(
            "download refused ({status}): {}",
            response.text().await.unwrap_or_default()
        );
    }
    let mut out = tokio::fs::File::create(&args.output)
        .await
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        out.write_all(&chunk?).await?;
    }
    out.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http_endpoint_is_the_websockets_host() {
        assert_eq!(
            endpoint("ws://127.0.0.1:8080/v1/ws").unwrap(),
            "http://127.0.0.1:8080/v1/attachments"
        );
        assert_eq!(
            endpoint("wss://chat.example.com/v1/ws").unwrap(),
            "https://chat.example.com/v1/attachments"
        );
        assert!(endpoint("http://x").is_err());
    }
}
