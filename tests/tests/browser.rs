//! What web pages can do to a gateway. An upgrade carrying an `Origin` is refused with 403
//! unless that origin is in `gateway.allowed_origins` (clients that are not browsers send none);
//! `POST /dev/token` answers only requests whose `Host` and `Origin` are loopback, so a page
//! of another site that rebinds its name to 127.0.0.1 cannot mint tokens.

use protocol::Encoding;
use testkit::Stack;
use testkit::client::{ConnectError, Connection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

async fn connect_from(stack: &Stack, origin: Option<&str>) -> Result<Connection, ConnectError> {
    let url = format!(
        "{}?access_token={}",
        stack.gateways[0].ws_url(),
        stack.token("alice")
    );
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(Encoding::JSON_PROTOCOL),
    );
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", HeaderValue::from_str(origin).unwrap());
    }
    Connection::open(request, Encoding::Json).await
}

#[tokio::test]
async fn only_allowed_origins_open_a_websocket() {
    let stack = Stack::new()
        .gateway_config(|c| c.allowed_origins = vec!["https://chat.example.com".into()])
        .start()
        .await;
    assert!(
        connect_from(&stack, None).await.is_ok(),
        "no Origin: not a browser"
    );
    assert!(
        connect_from(&stack, Some("https://chat.example.com"))
            .await
            .is_ok()
    );
    for origin in [
        "http://evil.example",
        "https://chat.example.com.evil.example",
        "null",
    ] {
        let refused = connect_from(&stack, Some(origin)).await;
        assert!(
            matches!(refused, Err(ConnectError::Refused(403))),
            "{origin}: {:?}",
            refused.err()
        );
    }

    // The default allows no browser page at all.
    let closed = Stack::new().start().await;
    let refused = connect_from(&closed, Some("http://127.0.0.1:8080")).await;
    assert!(matches!(refused, Err(ConnectError::Refused(403))));
}

/// POSTs `{"user":"mallory"}` to `/dev/token` with these headers; the status code.
async fn dev_token(stack: &Stack, host: &str, origin: Option<&str>) -> u16 {
    let mut s = tokio::net::TcpStream::connect(stack.gateways[0].addr)
        .await
        .unwrap();
    let body = r#"{"user":"mallory"}"#;
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    let request = format!(
        "POST /dev/token HTTP/1.1\r\nHost: {host}\r\n{origin}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

#[tokio::test]
async fn dev_tokens_go_only_to_pages_on_this_machine() {
    let stack = Stack::new()
        .gateway_config(|c| c.dev_tokens = true)
        .start()
        .await;
    let port = stack.gateways[0].addr.port();
    let local = format!("127.0.0.1:{port}");
    assert_eq!(dev_token(&stack, &local, None).await, 200);
    assert_eq!(
        dev_token(
            &stack,
            &format!("localhost:{port}"),
            Some(&format!("http://localhost:{port}"))
        )
        .await,
        200
    );
    // A rebinding page: its own name in Host and Origin, though it resolves to loopback.
    let rebound = format!("evil.example:{port}");
    assert_eq!(dev_token(&stack, &rebound, None).await, 403);
    assert_eq!(
        dev_token(&stack, &rebound, Some(&format!("http://{rebound}"))).await,
        403
    );
    // A page of another site asking the right host.
    assert_eq!(
        dev_token(&stack, &local, Some("http://evil.example")).await,
        403
    );
}
