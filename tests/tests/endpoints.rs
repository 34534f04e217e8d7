//! `/healthz` and `/metrics` answer plain HTTP next to the WebSocket endpoint.

use testkit::Stack;

#[tokio::test]
async fn health_and_metrics_are_served() {
    let stack = Stack::new().start().await;
    stack.gateways[0].export_metrics(stack.chats[0].metrics.clone());
    let gw = &stack.gateways[0];
    let _alice = stack.connect("alice", 0).await;

    let health = gw.http_get("/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    let metrics = gw.http_get("/metrics").await;
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

    let plain = gw.http_get("/v1/ws").await;
    assert!(
        plain.starts_with("HTTP/1.1 400"),
        "a plain GET is not an upgrade: {plain}"
    );
    assert!(gw.http_get("/nope").await.starts_with("HTTP/1.1 404"));
}
