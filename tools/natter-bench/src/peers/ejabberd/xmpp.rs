//! A lean XMPP client for load: plain TCP, in-band registration (XEP-0077) over a few streams, SASL SCRAM-SHA-1, resource
//! binding and presence, with a depth-tracking scanner that cuts the stream into top-level
//! stanzas and looks only at what the workloads need (the stanza's name, a few attributes of
//! its opening tag, and substrings). It trusts the server's XML: ejabberd escapes `<` in text
//! and attribute values, so a `<` always starts markup.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha1::{Digest, Sha1};
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
    /// Connects as a registered `user`, authenticates and binds a resource. Presence is not
    /// sent.
    pub async fn login(port: u16, user: &str) -> anyhow::Result<Conn> {
        tokio::time::timeout(LOGIN_TIMEOUT, Self::login_inner(port, user))
            .await
            .with_context(|| format!("{user}: login took over {LOGIN_TIMEOUT:?}"))?
            .with_context(|| format!("{user}: login"))
    }

    /// Registers users in band over one unauthenticated stream, 50 requests in flight.
    pub async fn register(port: u16, users: &[String]) -> anyhow::Result<()> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let (rd, mut writer) = stream.into_split();
        let mut reader = Reader {
            rd,
            buf: Vec::with_capacity(4096),
        };
        writer.write_all(STREAM_HEADER.as_bytes()).await?;
        reader.next_where(|s| s.name() == "stream:features").await?;
        for batch in users.chunks(50) {
            let mut out = String::new();
            for user in batch {
                out.push_str(&format!(
                    "<iq type='set' id='reg-{user}'><query xmlns='jabber:iq:register'>\
                     <username>{user}</username><password>{PASSWORD}</password></query></iq>"
                ));
            }
            writer.write_all(out.as_bytes()).await?;
            for user in batch {
                let id = format!("reg-{user}");
                let s = tokio::time::timeout(
                    LOGIN_TIMEOUT,
                    reader.next_where(|s| s.attr("id") == Some(id.as_str())),
                )
                .await
                .with_context(|| format!("registering {user} took over {LOGIN_TIMEOUT:?}"))??;
                anyhow::ensure!(
                    s.attr("type") == Some("result"),
                    "registration of {user} refused: {}",
                    s.0
                );
            }
        }
        // Wait for the server to end its stream too: the registering session is gone then.
        writer.write_all(b"</stream:stream>").await?;
        Conn {
            reader,
            writer,
            jid: String::new(),
        }
        .close_wait()
        .await
    }

    async fn login_inner(port: u16, user: &str) -> anyhow::Result<Conn> {
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
        // SCRAM-SHA-1 (RFC 5802), as real clients log in: the server keeps SCRAM credentials
        // (the packaged auth_password_format: scram) and only checks a proof, while the
        // PBKDF2 is the client's. (SASL PLAIN would make the server run PBKDF2, 4096 HMACs in
        // Erlang, at every login.)
        let nonce = ulid::Ulid::new().to_string();
        let first_bare = format!("n={user},r={nonce}");
        c.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>{}</auth>",
            B64.encode(format!("n,,{first_bare}"))
        ))
        .await?;
        let s = c
            .reader
            .next_where(|s| matches!(s.name(), "challenge" | "failure"))
            .await?;
        anyhow::ensure!(s.name() == "challenge", "authentication failed: {}", s.0);
        let server_first = sasl_payload(&s)?;
        let response = scram_response(&first_bare, &server_first, &nonce)?;
        c.send(&format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            B64.encode(response)
        ))
        .await?;
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

    /// Ends the stream and waits for the server to end its own (the session is gone then).
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.send("</stream:stream>").await?;
        self.close_wait().await
    }

    async fn close_wait(mut self) -> anyhow::Result<()> {
        loop {
            match tokio::time::timeout(LOGIN_TIMEOUT, self.reader.event()).await {
                Ok(Ok(Event::StreamEnd)) | Ok(Err(_)) => return Ok(()),
                Ok(Ok(_)) => continue,
                Err(_) => anyhow::bail!("the server did not close the stream"),
            }
        }
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

type SaltedCache = HashMap<(String, String), [u8; 20]>;

/// Salted passwords by (salt, iterations): every bench user has the same password.
static SALTED: LazyLock<Mutex<SaltedCache>> = LazyLock::new(Default::default);

/// The decoded text of a SASL element.
fn sasl_payload(s: &Stanza) -> anyhow::Result<String> {
    let start = tag_end(s.0.as_bytes(), 0).context("bad SASL element")? + 1;
    let end = s.0.rfind("</").unwrap_or(start).max(start);
    Ok(String::from_utf8(B64.decode(s.0[start..end].trim())?)?)
}

/// The SCRAM-SHA-1 client-final message for the server-first message.
fn scram_response(first_bare: &str, server_first: &str, nonce: &str) -> anyhow::Result<String> {
    let field = |k: &str| {
        server_first
            .split(',')
            .find_map(|kv| kv.strip_prefix(k))
            .with_context(|| format!("no {k} in {server_first}"))
    };
    let (r, salt, iterations) = (field("r=")?, field("s=")?, field("i=")?);
    anyhow::ensure!(r.starts_with(nonce), "the server changed the nonce");
    // Like real clients (RFC 5802 section 5.1), the salted password is cached per salt and
    // iteration count, so a client logging in again does not redo the PBKDF2.
    let cached = SALTED
        .lock()
        .unwrap()
        .get(&(salt.to_string(), iterations.to_string()))
        .copied();
    let salted = match cached {
        Some(salted) => salted,
        None => {
            let salted = pbkdf2_sha1(PASSWORD.as_bytes(), &B64.decode(salt)?, iterations.parse()?);
            SALTED
                .lock()
                .unwrap()
                .insert((salt.to_string(), iterations.to_string()), salted);
            salted
        }
    };
    let client_key = hmac_sha1(&salted, b"Client Key");
    let stored_key = Sha1::digest(client_key);
    let without_proof = format!("c=biws,r={r}");
    let auth_message = format!("{first_bare},{server_first},{without_proof}");
    let signature = hmac_sha1(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(signature)
        .map(|(k, s)| k ^ s)
        .collect();
    Ok(format!("{without_proof},p={}", B64.encode(proof)))
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn pbkdf2_sha1(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 20] {
    let keyed = <Hmac<Sha1> as Mac>::new_from_slice(password).expect("HMAC takes any key");
    let mut mac = keyed.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: [u8; 20] = mac.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..iterations {
        let mut mac = keyed.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes().into();
        for (o, x) in out.iter_mut().zip(u) {
            *o ^= x;
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
    fn ejabberd_scram_matches_rfc5802() {
        // RFC 5802 section 5's example, with its user's password.
        let first_bare = "n=user,r=fyko+d2lbbFgONRv9qkxdawL";
        let server_first = "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096";
        let salted = pbkdf2_sha1(b"pencil", &B64.decode("QSXCR+Q6sek8bf92").unwrap(), 4096);
        let client_key = hmac_sha1(&salted, b"Client Key");
        let stored_key = Sha1::digest(client_key);
        let without_proof = "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j";
        let auth = format!("{first_bare},{server_first},{without_proof}");
        let sig = hmac_sha1(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(sig).map(|(k, s)| k ^ s).collect();
        assert_eq!(B64.encode(proof), "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=");
        assert!(scram_response(first_bare, server_first, "fyko+d2lbbFgONRv9qkxdawL").is_ok());
    }
}
