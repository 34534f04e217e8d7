//! A lean XMPP client for load: plain TCP, in-band registration (XEP-0077), SASL PLAIN, resource
//! binding and presence, with a depth-tracking scanner that cuts the stream into top-level
//! stanzas and looks only at what the workloads need (the stanza's name, a few attributes of
//! its opening tag, and substrings). It trusts the server's XML: ejabberd escapes `<` in text
//! and attribute values, so a `<` always starts markup.

use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The XMPP domain of the bench's virtual host.
pub const DOMAIN: &str = "localhost";
/// Every bench user's password.
pub const PASSWORD: &str = "bench-pw";
/// How long one login (connect to bound session) may take.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);

const STREAM_HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' \
     xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

/// One top-level element of the stream.
#[derive(Debug)]
pub struct Stanza(pub String);

impl Stanza {
    /// The element's qualified name (`message`, `iq`, `stream:features`, ...).
    pub fn name(&self) -> &str {
        let s = &self.0[1..];
        let end = s
            .find(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')
            .unwrap_or(s.len());
        &s[..end]
    }

    /// An attribute of the opening tag.
    pub fn attr(&self, name: &str) -> Option<&str> {
        let tag = &self.0[..tag_end(self.0.as_bytes(), 0).unwrap_or(self.0.len())];
        for quote in ['\'', '"'] {
            let pat = format!(" {name}={quote}");
            if let Some(at) = tag.find(&pat) {
                let rest = &tag[at + pat.len()..];
                return rest.find(quote).map(|end| &rest[..end]);
            }
        }
        None
    }

    pub fn contains(&self, needle: &str) -> bool {
        self.0.contains(needle)
    }

    /// The text of the first `<tag>` child (at any depth) without attributes.
    pub fn text(&self, tag: &str) -> Option<&str> {
        let open = format!("<{tag}>");
        let at = self.0.find(&open)? + open.len();
        let end = self.0[at..].find("</")?;
        Some(&self.0[at..at + end])
    }
}

enum Event {
    StreamStart,
    StreamEnd,
    Stanza(Stanza),
}

/// The reading half: buffers bytes and yields whole stanzas.
pub struct Reader {
    rd: OwnedReadHalf,
    buf: Vec<u8>,
}

impl Reader {
    /// The next stanza; stream headers in between (after a restart) are skipped.
    pub async fn next(&mut self) -> anyhow::Result<Stanza> {
        loop {
            match self.event().await? {
                Event::Stanza(s) => return Ok(s),
                Event::StreamStart => continue,
                Event::StreamEnd => anyhow::bail!("the server closed the stream"),
            }
        }
    }

    /// The next stanza satisfying `pred`, skipping others.
    pub async fn next_where(&mut self, pred: impl Fn(&Stanza) -> bool) -> anyhow::Result<Stanza> {
        loop {
            let s = self.next().await?;
            if pred(&s) {
                return Ok(s);
            }
        }
    }

    async fn event(&mut self) -> anyhow::Result<Event> {
        loop {
            if let Some((event, used)) = scan(&self.buf)? {
                self.buf.drain(..used);
                return Ok(event);
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(8192);
            }
            let n = self.rd.read_buf(&mut self.buf).await?;
            if n == 0 {
                anyhow::bail!("the server closed the connection");
            }
        }
    }

    /// Reads and discards everything until the connection ends.
    pub async fn drain(mut self) {
        let mut buf = vec![0u8; 16384];
        while matches!(self.rd.read(&mut buf).await, Ok(n) if n > 0) {}
    }

    /// Gives back the socket half, dropping the buffer (for connections kept idle).
    pub fn into_inner(self) -> OwnedReadHalf {
        self.rd
    }
}

/// Finds the first complete event in `buf`: (event, bytes consumed), or None if more bytes are
/// needed.
fn scan(buf: &[u8]) -> anyhow::Result<Option<(Event, usize)>> {
    let mut i = 0;
    loop {
        // Whitespace (keepalives) and prologs between stanzas.
        while i < buf.len() && buf[i] != b'<' {
            i += 1;
        }
        if i + 1 >= buf.len() {
            return Ok(None);
        }
        if buf[i + 1] == b'?' {
            match find(buf, i, b"?>") {
                Some(end) => {
                    i = end + 2;
                    continue;
                }
                None => return Ok(None),
            }
        }
        break;
    }
    let start = i;
    if buf[start..].starts_with(b"</") {
        // Only the stream itself closes at the top level.
        return Ok(find(buf, start, b">").map(|end| (Event::StreamEnd, end + 1)));
    }
    let mut depth = 0usize;
    while i < buf.len() {
        if buf[i] != b'<' {
            i += 1;
            continue;
        }
        let Some(&next) = buf.get(i + 1) else {
            return Ok(None);
        };
        match next {
            b'/' => {
                let Some(end) = find(buf, i, b">") else {
                    return Ok(None);
                };
                depth = depth
                    .checked_sub(1)
                    .context("unbalanced XML from the server")?;
                i = end + 1;
            }
            b'!' => {
                let close: &[u8] = if buf[i..].starts_with(b"<![CDATA[") {
                    b"]]>"
                } else {
                    b"-->"
                };
                let Some(end) = find(buf, i, close) else {
                    return Ok(None);
                };
                i = end + close.len();
                continue;
            }
            b'?' => {
                let Some(end) = find(buf, i, b"?>") else {
                    return Ok(None);
                };
                i = end + 2;
                continue;
            }
            _ => {
                let Some(j) = tag_end(buf, i) else {
                    return Ok(None);
                };
                if buf[i..].starts_with(b"<stream:stream") {
                    return Ok(Some((Event::StreamStart, j + 1)));
                }
                if buf[j - 1] != b'/' {
                    depth += 1;
                }
                i = j + 1;
            }
        }
        if depth == 0 {
            let text = std::str::from_utf8(&buf[start..i])
                .context("non-UTF-8 stanza")?
                .to_string();
            return Ok(Some((Event::Stanza(Stanza(text)), i)));
        }
    }
    Ok(None)
}

/// The '>' ending the start tag at `from`, outside quoted attribute values.
fn tag_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut quote = 0u8;
    for (j, &c) in buf.iter().enumerate().skip(from + 1) {
        if quote != 0 {
            if c == quote {
                quote = 0;
            }
        } else if c == b'\'' || c == b'"' {
            quote = c;
        } else if c == b'>' {
            return Some(j);
        }
    }
    None
}

fn find(buf: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    buf[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// An authenticated, bound XMPP session.
pub struct Conn {
    pub reader: Reader,
    pub writer: OwnedWriteHalf,
    /// The bare JID.
    pub jid: String,
}

impl Conn {
    /// Connects as `user`, registering it first when `register` (in-band registration on the
    /// same stream, pipelined with the SASL PLAIN auth), and binds a resource. Presence is not
    /// sent.
    pub async fn login(port: u16, user: &str, register: bool) -> anyhow::Result<Conn> {
        tokio::time::timeout(LOGIN_TIMEOUT, Self::login_inner(port, user, register))
            .await
            .with_context(|| format!("{user}: login took over {LOGIN_TIMEOUT:?}"))?
            .with_context(|| format!("{user}: login"))
    }

    async fn login_inner(port: u16, user: &str, register: bool) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let (rd, writer) = stream.into_split();
        let mut c = Conn {
            reader: Reader {
                rd,
                buf: Vec::with_capacity(4096),
            },
            writer,
            jid: format!("{user}@{DOMAIN}"),
        };
        c.send(STREAM_HEADER).await?;
        c.reader
            .next_where(|s| s.name() == "stream:features")
            .await?;
        let mut out = String::new();
        if register {
            out.push_str(&format!(
                "<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>{user}</username>\
                 <password>{PASSWORD}</password></query></iq>"
            ));
        }
        out.push_str(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            base64(format!("\0{user}\0{PASSWORD}").as_bytes())
        ));
        c.send(&out).await?;
        if register {
            let s = c.reader.next_where(|s| s.attr("id") == Some("reg")).await?;
            anyhow::ensure!(
                s.attr("type") == Some("result"),
                "registration refused: {}",
                s.0
            );
        }
        let s = c
            .reader
            .next_where(|s| matches!(s.name(), "success" | "failure"))
            .await?;
        anyhow::ensure!(s.name() == "success", "authentication failed: {}", s.0);
        c.send(STREAM_HEADER).await?;
        c.reader
            .next_where(|s| s.name() == "stream:features")
            .await?;
        c.send(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>bench</resource></bind></iq>",
        )
        .await?;
        let s = c
            .reader
            .next_where(|s| s.attr("id") == Some("bind"))
            .await?;
        anyhow::ensure!(s.attr("type") == Some("result"), "bind failed: {}", s.0);
        Ok(c)
    }

    /// Sends initial presence and waits for the server to echo it back (so the session is
    /// fully available when this returns). Other stanzas that arrive first are handed to `seen`.
    pub async fn available(&mut self, mut seen: impl FnMut(Stanza)) -> anyhow::Result<()> {
        self.send("<presence/>").await?;
        let me = format!("{}/bench", self.jid);
        tokio::time::timeout(LOGIN_TIMEOUT, async {
            loop {
                let s = self.reader.next().await?;
                if s.name() == "presence" && s.attr("from") == Some(me.as_str()) {
                    return Ok(());
                }
                seen(s);
            }
        })
        .await
        .context("no echo of the initial presence")?
    }

    pub async fn send(&mut self, xml: &str) -> anyhow::Result<()> {
        self.writer.write_all(xml.as_bytes()).await?;
        Ok(())
    }

    /// A round trip through the user's own session (XEP-0199 ping to the server): everything
    /// sent before has been processed by the session when this returns.
    pub async fn sync(&mut self, id: &str) -> anyhow::Result<()> {
        self.send(&format!(
            "<iq type='get' id='{id}' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await?;
        let s = self
            .reader
            .next_where(|s| s.name() == "iq" && s.attr("id") == Some(id))
            .await?;
        anyhow::ensure!(s.attr("type") == Some("result"), "ping failed: {}", s.0);
        Ok(())
    }
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(T[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &str) -> Vec<String> {
        let mut buf = input.as_bytes().to_vec();
        let mut out = Vec::new();
        while let Some((ev, used)) = scan(&buf).unwrap() {
            out.push(match ev {
                Event::StreamStart => "START".to_string(),
                Event::StreamEnd => "END".to_string(),
                Event::Stanza(s) => s.0,
            });
            buf.drain(..used);
        }
        out
    }

    #[test]
    fn ejabberd_scanner_cuts_stanzas() {
        let got = all(
            "<?xml version='1.0'?><stream:stream id='1' a='>'><stream:features><x/></stream:features> \
             <message a='/>' type='chat'><body>1 &lt; 2</body></message><presence/></stream:stream><iq",
        );
        assert_eq!(
            got,
            [
                "START",
                "<stream:features><x/></stream:features>",
                "<message a='/>' type='chat'><body>1 &lt; 2</body></message>",
                "<presence/>",
                "END"
            ]
        );
        let s = Stanza("<message a='/>' type='chat'><body>12</body></message>".into());
        assert_eq!(s.name(), "message");
        assert_eq!(s.attr("type"), Some("chat"));
        assert_eq!(s.text("body"), Some("12"));
    }

    #[test]
    fn ejabberd_base64() {
        assert_eq!(base64(b"\0u1\0pw"), "AHUxAHB3");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }
}
