//! Files over the gateway's HTTP attachment endpoints (`docs/protocol.md`, Attachments):
//! upload one for a conversation, download one to a file. Both stream from and to disk, never
//! holding a file whole in memory.

use std::path::Path;

use futures::StreamExt;
use protocol::ConversationId;
use protocol::frames::Attachment;
use tokio::io::AsyncWriteExt;

/// Why an upload or a download failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    #[error("{0} is not a ws:// or wss:// URL")]
    NotAWebSocketUrl(String),
    /// The gateway answered with this status and text (see the status table of the protocol).
    #[error("refused with HTTP {status}: {text}")]
    Refused { status: u16, text: String },
    #[error("file: {0}")]
    File(#[from] std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    #[error("unexpected answer: {0}")]
    Answer(#[from] serde_json::Error),
}

/// `<http base>/v1/attachments` of the gateway whose WebSocket URL is `ws_url`.
pub fn endpoint(ws_url: &str) -> Result<String, AttachmentError> {
    let http = if let Some(rest) = ws_url.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = ws_url.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        return Err(AttachmentError::NotAWebSocketUrl(ws_url.into()));
    };
    let base = http.trim_end_matches('/').trim_end_matches("/v1/ws");
    Ok(format!("{base}/v1/attachments"))
}

/// Uploads the file at `path` for `conversation`, as the user of `token`; the attachment a
/// `send` then names.
pub async fn upload(
    ws_url: &str,
    token: &str,
    conversation: &ConversationId,
    path: &Path,
) -> Result<Attachment, AttachmentError> {
    let file = tokio::fs::File::open(path).await?;
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
        .await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    if status != 201 {
        return Err(AttachmentError::Refused { status, text });
    }
    Ok(serde_json::from_str(&text)?)
}

/// Downloads attachment `id` into a new file at `path`, as the user of `token`.
pub async fn download(
    ws_url: &str,
    token: &str,
    id: &str,
    path: &Path,
) -> Result<(), AttachmentError> {
    let response = reqwest::Client::new()
        .get(format!("{}/{id}", endpoint(ws_url)?))
        .bearer_auth(token)
        .send()
        .await?;
    let status = response.status().as_u16();
    if status != 200 {
        let text = response.text().await?;
        return Err(AttachmentError::Refused { status, text });
    }
    let mut out = tokio::fs::File::create(path).await?;
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
