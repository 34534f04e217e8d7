//! `/healthz` and `/metrics` answer plain HTTP next to the WebSocket endpoint.

use testkit::Stack;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn health_and_metrics_are_served() {
    let stack = Stack::new().start().await;
    stack.gateways[0].export_metrics(stack.chats[0].metrics.clone());
    let addr = stack.gateways[0].addr;
    let _alice = stack.connect("alice", 0).await;

    let health = get(addr, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    let metrics = get(addr, "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("\nnatter_gateway_connections 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("# TYPE natter_gateway_send_seconds histogram"));
    assert!(
        metrics.contains("\nnatter_chat_sends_total 0\n"),
        "exported chat metrics: {metrics}"
    );

    let plain = get(addr, "/v1/ws").await;
    assert!(
        plain.starts_with("HTTP/1.1 400"),
        "a plain GET is not an upgrade: {plain}"
    );
    assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
}
