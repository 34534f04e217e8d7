//! A Rust client for natter's WebSocket protocol (`docs/protocol.md`), used by the CLI, the
//! benchmark and the tests; and for its attachment endpoints over HTTP (`attachments`).

pub mod attachments;

use futures::{SinkExt, StreamExt};
use protocol::encoding::Encoded;
use protocol::frames::{ClientFrame, ServerFrame};
use protocol::{ConversationId, Cursor, Encoding, MessageId};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use protocol;
pub use protocol::Backoff;

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server refused the handshake with this HTTP status (401: bad token).
    #[error("handshake refused with HTTP {0}")]
    Refused(u16),
    /// 503 with `Retry-After`: the gateway is catching other devices up; come back then.
    #[error("gateway busy; retry in {0:?}")]
    Busy(std::time::Duration),
    #[error("connection failed: {0}")]
    Transport(#[from] tungstenite::Error),
}

/// What the server sent next.
// Almost every event is a frame, taken and matched at once: boxing it would allocate once
// per frame to shrink the one `Closed` of a connection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Frame(ServerFrame),
    /// The server closed the connection with this close code (None: no close frame).
    Closed(Option<u16>),
}

/// Errors while talking on an open connection.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("transport: {0}")]
    Transport(#[from] tungstenite::Error),
    #[error("undecodable server frame: {0}")]
    Decode(#[from] protocol::DecodeError),
}

/// One open connection (one device).
///
/// It keeps the device's cursor: the position after the last message (or `synced`) that
/// [`Connection::next_event`] returned. Keep it when the connection ends and pass it to
/// [`Connection::sync`] on the next one to receive exactly what was missed.
pub struct Connection {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    encoding: Encoding,
    cursor: Option<Cursor>,
}

impl Connection {
    /// Connects to `url` (`ws://host:port/v1/ws`) with a bearer token.
    pub async fn connect(url: &str, token: &str, encoding: Encoding) -> Result<Self, ConnectError> {
        Self::connect_from(url, token, encoding, None).await
    }

    /// [`Connection::connect`] from the local address `local` (a load generator spreading
    /// its connections over several source addresses), or any when `None`. Plain `ws://`
    /// only when `local` is set.
    pub async fn connect_from(
        url: &str,
        token: &str,
        encoding: Encoding,
        local: Option<std::net::IpAddr>,
    ) -> Result<Self, ConnectError> {
        let mut request = url.into_client_request()?;
        let h = request.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
            h.insert("authorization", v);
        }
        h.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(encoding.protocol()),
        );
        match local {
            None => Self::open(request, encoding).await,
            Some(local) => Self::open_from(request, encoding, local).await,
        }
    }

    /// Connects and resumes from `cursor` (the last connection's [`Connection::cursor`];
    /// `None` for a new device): the gateway first replays everything for this user after
    /// the cursor, then sends `synced`, then live traffic. This is how a device reconnects.
    pub async fn resume(
        url: &str,
        token: &str,
        encoding: Encoding,
        cursor: Option<Cursor>,
    ) -> Result<Self, ConnectError> {
        Self::resume_from(url, token, encoding, cursor, None).await
    }

    /// [`Connection::resume`] from the local address `local` (see
    /// [`Connection::connect_from`]).
    pub async fn resume_from(
        url: &str,
        token: &str,
        encoding: Encoding,
        cursor: Option<Cursor>,
        local: Option<std::net::IpAddr>,
    ) -> Result<Self, ConnectError> {
        let sep = if url.contains('?') { '&' } else { '?' };
        let cursor_param = cursor.as_ref().map(|c| c.to_string()).unwrap_or_default();
        let url = format!("{url}{sep}cursor={cursor_param}");
        let mut conn = Self::connect_from(&url, token, encoding, local).await?;
        conn.cursor = cursor;
        Ok(conn)
    }

    /// Reconnects after a lost connection: [`Connection::resume`] from `cursor`, retried with
    /// `backoff` (1 s doubling to 60 s, jittered) while the gateway is unreachable or answers
    /// 503, and reset once connected. A refusal that retrying cannot fix (401: get a new
    /// token; other 4xx) is returned at once.
    pub async fn reconnect(
        url: &str,
        token: &str,
        encoding: Encoding,
        cursor: Option<Cursor>,
        backoff: &mut Backoff,
    ) -> Result<Self, ConnectError> {
        loop {
            match Self::resume(url, token, encoding, cursor.clone()).await {
                Ok(conn) => {
                    backoff.reset();
                    return Ok(conn);
                }
                Err(ConnectError::Refused(status)) if (400..500).contains(&status) => {
                    return Err(ConnectError::Refused(status));
                }
                // The gateway said when: the backoff goes on from where it was.
                Err(ConnectError::Busy(retry_after)) => tokio::time::sleep(retry_after).await,
                Err(_) => {
                    let delay = backoff.next_delay(&mut rand::rng());
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Connects with a prepared request (custom headers, query token, no token...).
    pub async fn open(
        request: tungstenite::handshake::client::Request,
        encoding: Encoding,
    ) -> Result<Self, ConnectError> {
        Self::opened(tokio_tungstenite::connect_async(request).await, encoding)
    }

    /// [`Connection::open`] over a TCP connection made from the local address `local` (plain
    /// `ws://` only).
    async fn open_from(
        request: tungstenite::handshake::client::Request,
        encoding: Encoding,
        local: std::net::IpAddr,
    ) -> Result<Self, ConnectError> {
        let uri = request.uri();
        let host = uri.host().unwrap_or("127.0.0.1").to_string();
        let port = uri.port_u16().unwrap_or(80);
        let remote = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(tungstenite::Error::Io)?
            .find(|a| a.is_ipv4() == local.is_ipv4())
            .ok_or_else(|| {
                tungstenite::Error::Url(tungstenite::error::UrlError::UnableToConnect(host.clone()))
            })?;
        let socket = match local {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .map_err(tungstenite::Error::Io)?;
        socket
            .bind((local, 0).into())
            .map_err(tungstenite::Error::Io)?;
        let stream = socket
            .connect(remote)
            .await
            .map_err(tungstenite::Error::Io)?;
        let _ = stream.set_nodelay(true);
        let opened = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await;
        Self::opened(opened, encoding)
    }

    /// A connection from the outcome of a WebSocket handshake.
    fn opened(
        handshake: Result<
            (
                WebSocketStream<MaybeTlsStream<TcpStream>>,
                tungstenite::handshake::client::Response,
            ),
            tungstenite::Error,
        >,
        encoding: Encoding,
    ) -> Result<Self, ConnectError> {
        match handshake {
            Ok((ws, _)) => Ok(Self {
                ws,
                encoding,
                cursor: None,
            }),
            Err(tungstenite::Error::Http(resp)) => {
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
                match (resp.status().as_u16(), retry_after) {
                    (503, Some(secs)) => {
                        Err(ConnectError::Busy(std::time::Duration::from_secs(secs)))
                    }
                    (status, _) => Err(ConnectError::Refused(status)),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The device's position: pass it to `sync` after reconnecting.
    pub fn cursor(&self) -> Option<Cursor> {
        self.cursor.clone()
    }

    /// Asks, on an open connection, for everything after `cursor`. Live messages that
    /// arrived before the gateway read this frame are not ordered with the replay, so prefer
    /// [`Connection::resume`], which asks while connecting. On `synced` with
    /// `recovered: false`, refetch from history.
    pub async fn sync(&mut self, cursor: Option<Cursor>) -> Result<(), ClientError> {
        self.cursor = cursor.clone();
        self.send_frame(&ClientFrame::Sync {
            cursor: cursor.as_ref().map(|c| c.to_string()),
        })
        .await
    }

    pub async fn send_frame(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        let msg = match self.encoding.encode_client(frame) {
            Encoded::Text(t) => Message::text(t),
            Encoded::Binary(b) => Message::binary(b),
        };
        self.ws.send(msg).await?;
        Ok(())
    }

    /// Sends a raw WebSocket message (tests of malformed input).
    pub async fn send_raw(&mut self, msg: Message) -> Result<(), ClientError> {
        self.ws.send(msg).await?;
        Ok(())
    }

    /// Sends a 1:1 message; `cid` is reused on retries.
    pub async fn send(&mut self, to: &str, cid: &str, body: &str) -> Result<(), ClientError> {
        self.send_message(to, None, cid, body, None).await
    }

    /// Sends a message to a group; `cid` is reused on retries.
    pub async fn send_group(
        &mut self,
        group: &str,
        cid: &str,
        body: &str,
    ) -> Result<(), ClientError> {
        self.send_message("", Some(group), cid, body, None).await
    }

    /// Sends a 1:1 message answering message `reply_to` of the same conversation (the
    /// delivered message carries its quote).
    pub async fn send_reply(
        &mut self,
        to: &str,
        cid: &str,
        body: &str,
        reply_to: &str,
    ) -> Result<(), ClientError> {
        self.send_message(to, None, cid, body, Some(reply_to)).await
    }

    /// Sends a group message answering message `reply_to` of the group.
    pub async fn send_group_reply(
        &mut self,
        group: &str,
        cid: &str,
        body: &str,
        reply_to: &str,
    ) -> Result<(), ClientError> {
        self.send_message("", Some(group), cid, body, Some(reply_to))
            .await
    }

    async fn send_message(
        &mut self,
        to: &str,
        group: Option<&str>,
        cid: &str,
        body: &str,
        reply_to: Option<&str>,
    ) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::Send {
            attachment: None,
            to: to.into(),
            group: group.map(Into::into),
            cid: cid.into(),
            body: body.into(),
            reply_to: reply_to.map(Into::into),
        })
        .await
    }

    /// Replaces the text of your message `id` of `conversation`; answered like a send
    /// (`sent` with the edit's own id, or an `error`), both carrying `cid`.
    pub async fn edit(
        &mut self,
        conversation: &ConversationId,
        cid: &str,
        id: MessageId,
        body: &str,
    ) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::Edit {
            conversation: conversation.to_string(),
            cid: cid.into(),
            id: id.to_string(),
            body: body.into(),
        })
        .await
    }

    /// Reacts to message `id` of `conversation` with `emoji`, replacing this user's earlier
    /// reaction (an empty `emoji` removes it); answered like a send.
    pub async fn react(
        &mut self,
        conversation: &ConversationId,
        cid: &str,
        id: MessageId,
        emoji: &str,
    ) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::React {
            conversation: conversation.to_string(),
            cid: cid.into(),
            id: id.to_string(),
            emoji: emoji.into(),
        })
        .await
    }

    /// Deletes message `id` of `conversation` for everyone; answered like a send.
    pub async fn delete(
        &mut self,
        conversation: &ConversationId,
        cid: &str,
        id: MessageId,
    ) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::Delete {
            conversation: conversation.to_string(),
            cid: cid.into(),
            id: id.to_string(),
        })
        .await
    }

    /// Asks for a group operation; the answer carries `qid`.
    pub async fn group(&mut self, qid: &str, op: protocol::GroupOp) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::Group {
            qid: qid.into(),
            op,
        })
        .await
    }

    /// Tells the sender this device received `id`.
    pub async fn ack(
        &mut self,
        conversation: &ConversationId,
        id: MessageId,
    ) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::Ack {
            conversation: conversation.to_string(),
            id: id.to_string(),
        })
        .await
    }

    /// Marks `conversation` read up to `up_to`.
    pub async fn read(
        &mut self,
        conversation: &ConversationId,
        up_to: MessageId,
    ) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::Read {
            conversation: conversation.to_string(),
            up_to: up_to.to_string(),
        })
        .await
    }

    pub async fn ping(&mut self, ts: Option<u64>) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::Ping { ts }).await
    }

    /// The next server frame or the close. WebSocket-level pings are answered internally.
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        loop {
            let msg = match self.ws.next().await {
                None => return Ok(Event::Closed(None)),
                Some(Err(tungstenite::Error::ConnectionClosed)) => return Ok(Event::Closed(None)),
                Some(Err(tungstenite::Error::Protocol(_))) => return Ok(Event::Closed(None)),
                Some(Err(tungstenite::Error::Io(_))) => return Ok(Event::Closed(None)),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(msg)) => msg,
            };
            let frame = match msg {
                Message::Text(t) => self.encoding.decode_server(t.as_bytes(), true)?,
                Message::Binary(b) => self.encoding.decode_server(&b, false)?,
                Message::Close(frame) => {
                    return Ok(Event::Closed(frame.map(|f| u16::from(f.code))));
                }
                _ => continue,
            };
            match &frame {
                ServerFrame::Message(m) if m.cursor.is_some() => self.cursor = m.cursor.clone(),
                ServerFrame::Synced { cursor, .. } => self.cursor = Some(cursor.clone()),
                _ => {}
            }
            return Ok(Event::Frame(frame));
        }
    }

    /// The next frame; a close is an error here.
    pub async fn next_frame(&mut self) -> Result<ServerFrame, ClientError> {
        match self.next_event().await? {
            Event::Frame(f) => Ok(f),
            Event::Closed(_) => Err(ClientError::Transport(tungstenite::Error::ConnectionClosed)),
        }
    }

    /// The next raw WebSocket message, undecoded (wire-format tests).
    pub async fn next_raw(&mut self) -> Option<Message> {
        loop {
            match self.ws.next().await? {
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
                Ok(m) => return Some(m),
                Err(_) => return None,
            }
        }
    }

    /// Closes politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Registers this device's push token (or, with `remove`, forgets it); answered by a
    /// `push_token` frame with the same `qid`, or an `error` with it.
    pub async fn push_token(
        &mut self,
        qid: &str,
        platform: &str,
        token: &str,
        remove: bool,
    ) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::PushToken {
            qid: qid.into(),
            platform: platform.into(),
            token: token.into(),
            remove,
        })
        .await
    }
}
