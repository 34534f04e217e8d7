//! A lean client of Centrifugo's bidirectional JSON protocol over WebSocket
//! (`/connection/websocket`, protocol v2): commands `{"id":N,"connect":{..}}`,
//! `subscribe`, `publish`, `history`; replies carry the command's `id`; pushes have no `id`;
//! several replies and pushes can share one WebSocket frame, one JSON object per line; an
//! empty object `{}` from the server is a ping, answered with an empty command `{}`.
//!
//! The load client shares the cores with the server, so the hot path does not decode JSON:
//! a line is classified by its first bytes, a reply's id is read as digits, and a
//! publication's `data` is cut out as a string. Only setup replies are decoded.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a setup step (connect, subscribe, a call) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// One line of what the server sent, classified without decoding it.
#[derive(Debug)]
pub enum Line {
    /// A reply to command `id`; `error` when it carries an error instead of a result.
    Reply { id: u32, error: bool, text: String },
    /// A publication pushed on a subscribed channel, with its `data` when that is a JSON
    /// string (without escapes), else empty.
    Publication(String),
    /// Any other push (join, leave, unsubscribe, disconnect...).
    Other,
}

/// One authenticated connection.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The frame being read, and where its next line starts.
    frame: Utf8Bytes,
    pos: usize,
    next_id: u32,
}

impl Client {
    /// Opens a WebSocket to `url` and sends `connect` with the JWT `token`.
    pub async fn connect(url: &str, token: &str) -> anyhow::Result<Self> {
        let (ws, _) = tokio::time::timeout(SETUP_TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .map_err(|_| anyhow::anyhow!("WebSocket handshake with {url} timed out"))??;
        let mut client = Client {
            ws,
            frame: Utf8Bytes::default(),
            pos: 0,
            next_id: 1,
        };
        client
            .call(&format!(
                r#""connect":{{"token":"{token}","name":"natter-bench"}}"#
            ))
            .await?;
        Ok(client)
    }

    /// Subscribes to `channel`, recovering from (offset, epoch) when given; returns the
    /// decoded `subscribe` result.
    pub async fn subscribe(
        &mut self,
        channel: &str,
        recover: Option<(u64, &str)>,
    ) -> anyhow::Result<serde_json::Value> {
        let body = match recover {
            None => format!(r#""subscribe":{{"channel":"{channel}"}}"#),
            Some((offset, epoch)) => format!(
                r#""subscribe":{{"channel":"{channel}","recover":true,"offset":{offset},"epoch":"{epoch}"}}"#
            ),
        };
        let reply = self.call(&body).await?;
        let mut value: serde_json::Value = serde_json::from_str(&reply)?;
        Ok(value["subscribe"].take())
    }

    /// Sends one command (`body` is what follows the id in the JSON object) without waiting
    /// for its reply; returns its id.
    pub async fn send(&mut self, body: &str) -> anyhow::Result<u32> {
        let id = self.next_id;
        self.next_id += 1;
        self.ws
            .send(Message::text(format!(r#"{{"id":{id},{body}}}"#)))
            .await?;
        Ok(id)
    }

    /// Sends one command and waits for its reply line, failing on an error reply. Pushes
    /// arriving meanwhile are dropped (use it for setup, not while publications flow).
    pub async fn call(&mut self, body: &str) -> anyhow::Result<String> {
        let id = self.send(body).await?;
        let wait = async {
            loop {
                match self.next_line().await? {
                    Some(Line::Reply {
                        id: got,
                        error,
                        text,
                    }) if got == id => {
                        anyhow::ensure!(!error, "Centrifugo refused {body}: {text}");
                        return Ok(text);
                    }
                    Some(_) => {}
                    None => anyhow::bail!("Centrifugo closed the connection during {body}"),
                }
            }
        };
        tokio::time::timeout(SETUP_TIMEOUT, wait)
            .await
            .map_err(|_| anyhow::anyhow!("no reply from Centrifugo to {body} in 30 s"))?
    }

    /// Publishes `data` (a JSON string without quotes or escapes) into `channel` without
    /// waiting for the reply; returns the command id.
    pub async fn publish(&mut self, channel: &str, data: &str) -> anyhow::Result<u32> {
        self.send(&format!(
            r#""publish":{{"channel":"{channel}","data":"{data}"}}"#
        ))
        .await
    }

    /// The next line from the server, answering pings on the way; `None` once the
    /// connection is closed.
    pub async fn next_line(&mut self) -> anyhow::Result<Option<Line>> {
        loop {
            if self.pos < self.frame.len() {
                let rest = &self.frame.as_str()[self.pos..];
                let (line, advance) = match rest.find('\n') {
                    Some(i) => (&rest[..i], i + 1),
                    None => (rest, rest.len()),
                };
                self.pos += advance;
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                if line == "{}" {
                    self.ws.send(Message::text("{}")).await?;
                    continue;
                }
                return Ok(Some(classify(line)));
            }
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    self.frame = text;
                    self.pos = 0;
                }
                Some(Ok(Message::Close(_))) | None => return Ok(None),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

fn classify(line: &str) -> Line {
    if let Some(rest) = line.strip_prefix(r#"{"id":"#) {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let id = rest[..digits].parse().unwrap_or(0);
        let error = rest[digits..].starts_with(r#","error""#);
        return Line::Reply {
            id,
            error,
            text: line.to_string(),
        };
    }
    if line.starts_with(r#"{"push":"#)
        && let Some((_, after)) = line.split_once(r#""pub":{"#)
    {
        let data = after
            .split_once(r#""data":""#)
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(data, _)| data.to_string())
            .unwrap_or_default();
        return Line::Publication(data);
    }
    Line::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_lines() {
        match classify(r#"{"id":12,"publish":{}}"#) {
            Line::Reply { id, error, .. } => assert_eq!((id, error), (12, false)),
            other => panic!("{other:?}"),
        }
        match classify(r#"{"id":3,"error":{"code":103,"message":"permission denied"}}"#) {
            Line::Reply { id, error, .. } => assert_eq!((id, error), (3, true)),
            other => panic!("{other:?}"),
        }
        match classify(
            r#"{"push":{"channel":"chat:a","pub":{"data":"7:123","info":{"user":"b","client":"x"},"offset":4}}}"#,
        ) {
            Line::Publication(data) => assert_eq!(data, "7:123"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(r#"{"push":{"channel":"c","join":{}}}"#),
            Line::Other
        ));
    }
}
