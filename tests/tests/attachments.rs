//! Attachments against a real nats-server (its object store), gateways and the chat and
//! history services: a file is uploaded over HTTP with the user's token, sent in a message,
//! downloaded by the conversation's members only, and removed with its message; sizes and
//! quotas are bounded, and nobody sends someone else's file.

use protocol::frames::{Attachment, ClientFrame};
use protocol::{ConversationId, ErrorCode};
use reqwest::StatusCode;
use testkit::client::Connection;
use testkit::{
    Stack, create_group, expect_message, expect_sent, expect_sent_or_error, fetch_history,
};

/// The largest upload, and each user's quota, in these tests.
const MAX_BYTES: u64 = 400_000;
const QUOTA_BYTES: u64 = 500_000;

fn stack() -> testkit::StackBuilder {
    Stack::new().gateway_config(|c| {
        c.max_attachment_bytes = MAX_BYTES;
        c.attachment_quota_bytes = QUOTA_BYTES;
    })
}

fn base(stack: &Stack) -> String {
    format!("http://{}/v1/attachments", stack.gateways[0].addr)
}

/// A file of `n` bytes that is not all the same byte.
fn file(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

async fn upload(
    stack: &Stack,
    user: &str,
    conversation: &str,
    bytes: Vec<u8>,
) -> Result<Attachment, StatusCode> {
    let response = reqwest::Client::new()
        .post(format!(
            "{}?conversation={conversation}&name=photo.jpg",
            base(stack)
        ))
        .bearer_auth(stack.token(user))
        .header("content-type", "image/jpeg")
        .body(bytes)
        .send()
        .await
        .expect("the gateway answers");
    match response.status() {
        StatusCode::CREATED => {
            let body = response.bytes().await.expect("an answer");
            Ok(serde_json::from_slice(&body).expect("an attachment"))
        }
        status => Err(status),
    }
}

async fn download(
    stack: &Stack,
    user: Option<&str>,
    id: &str,
) -> Result<(Vec<u8>, String), StatusCode> {
    let mut request = reqwest::Client::new().get(format!("{}/{id}", base(stack)));
    if let Some(user) = user {
        request = request.bearer_auth(stack.token(user));
    }
    let response = request.send().await.expect("the gateway answers");
    if response.status() != StatusCode::OK {
        return Err(response.status());
    }
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    let disposition = response.headers()["content-disposition"].to_str().unwrap();
    assert_eq!(disposition, "attachment; filename=\"photo.jpg\"");
    Ok((response.bytes().await.unwrap().to_vec(), kind))
}

async fn send_with(conn: &mut Connection, to: &str, cid: &str, attachment: &Attachment) {
    conn.send_frame(&ClientFrame::Send {
        to: to.into(),
        group: None,
        cid: cid.into(),
        body: "look".into(),
        reply_to: None,
        attachment: Some(attachment.id.to_string()),
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_file_is_uploaded_sent_downloaded_by_members_and_removed_with_its_message() {
    let stack = stack().start().await;
    stack.make_contacts("alice", &["bob"]).await;
    let mut alice = stack.connect("alice", 0).await;
    let mut bob = stack.connect("bob", 0).await;
    let ab = "dm:alice:bob";
    // Three chunks of the object store, streamed in and out.
    let photo = file(300_000);
    let attachment = upload(&stack, "alice", ab, photo.clone()).await.unwrap();
    assert_eq!(
        (attachment.size, attachment.name.as_str()),
        (300_000, "photo.jpg")
    );
    assert_eq!(attachment.content_type, "image/jpeg");

    send_with(&mut alice, "bob", "m1", &attachment).await;
    let sent = expect_sent(&mut alice, "m1").await;
    let arrived = expect_message(&mut bob).await;
    assert_eq!(arrived.attachment.as_ref(), Some(&attachment));
    let (bytes, kind) = download(&stack, Some("bob"), &attachment.id.to_string())
        .await
        .unwrap();
    assert!(bytes == photo, "bob gets the file as uploaded");
    assert_eq!(kind, "image/jpeg");
    let page = fetch_history(&mut bob, "h1", &sent.conversation)
        .await
        .unwrap();
    let stored = page.iter().find(|m| m.id == sent.id).expect("in history");
    assert_eq!(stored.attachment.as_ref(), Some(&attachment));

    // Only the conversation's members, with a token, and only what exists.
    let id = attachment.id.to_string();
    assert_eq!(
        download(&stack, Some("carol"), &id).await.err(),
        Some(StatusCode::FORBIDDEN)
    );
    assert_eq!(
        download(&stack, None, &id).await.err(),
        Some(StatusCode::UNAUTHORIZED)
    );
    let nothing = protocol::AttachmentId(ulid::Ulid::new()).to_string();
    assert_eq!(
        download(&stack, Some("bob"), &nothing).await.err(),
        Some(StatusCode::NOT_FOUND)
    );

    // The quota holds 500,000 bytes: a second such file does not fit until the first goes
    // with its message.
    assert_eq!(
        upload(&stack, "alice", ab, file(300_000)).await.err(),
        Some(StatusCode::INSUFFICIENT_STORAGE)
    );
    alice
        .delete(&sent.conversation, "d1", sent.id)
        .await
        .unwrap();
    expect_sent(&mut alice, "d1").await;
    assert_eq!(
        download(&stack, Some("bob"), &id).await.err(),
        Some(StatusCode::NOT_FOUND)
    );
    upload(&stack, "alice", ab, file(300_000))
        .await
        .expect("room again");
}

#[tokio::test]
async fn uploads_and_sends_are_bounded_and_checked() {
    let stack = stack().start().await;
    stack.make_contacts("alice", &["bob", "carol"]).await;
    let mut alice = stack.connect("alice", 0).await;
    let mut bob = stack.connect("bob", 0).await;
    let ab = "dm:alice:bob";

    assert_eq!(
        upload(&stack, "alice", ab, file(MAX_BYTES as usize + 1))
            .await
            .err(),
        Some(StatusCode::PAYLOAD_TOO_LARGE)
    );
    assert_eq!(
        upload(&stack, "alice", "dm:bob:carol", file(10))
            .await
            .err(),
        Some(StatusCode::FORBIDDEN),
        "not her conversation"
    );
    let response = reqwest::Client::new()
        .post(format!("{}?conversation={ab}", base(&stack)))
        .body(file(10))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // An attachment goes only with a message of its uploader, in its conversation.
    let mine = upload(&stack, "alice", ab, file(1000)).await.unwrap();
    send_with(&mut bob, "alice", "b1", &mine).await;
    assert_eq!(
        expect_sent_or_error(&mut bob, "b1").await.err(),
        Some(ErrorCode::NotFound)
    );
    send_with(&mut alice, "carol", "a1", &mine).await;
    assert_eq!(
        expect_sent_or_error(&mut alice, "a1").await.err(),
        Some(ErrorCode::NotFound)
    );

    // A group: uploads for members only (asked of the chat service).
    let group = create_group(&mut alice, "Photos", &["bob"]).await;
    let conversation = ConversationId::group(&group.group).to_string();
    let shared = upload(&stack, "bob", &conversation, file(2000))
        .await
        .unwrap();
    assert_eq!(
        upload(&stack, "carol", &conversation, file(10)).await.err(),
        Some(StatusCode::FORBIDDEN)
    );
    assert_eq!(
        download(&stack, Some("carol"), &shared.id.to_string())
            .await
            .err(),
        Some(StatusCode::FORBIDDEN)
    );
    let (bytes, _) = download(&stack, Some("alice"), &shared.id.to_string())
        .await
        .unwrap();
    assert_eq!(bytes.len(), 2000);
}

#[tokio::test]
async fn an_upload_nobody_sends_is_swept_and_its_quota_returned() {
    let stack = stack()
        .chat_config(|c| {
            c.unsent_attachment_ttl_secs = 2;
            c.attachment_sweep_secs = 1;
        })
        .start()
        .await;
    stack.make_contacts("alice", &["bob"]).await;
    let mut alice = stack.connect("alice", 0).await;
    let ab = "dm:alice:bob";
    let sent = upload(&stack, "alice", ab, file(200_000)).await.unwrap();
    send_with(&mut alice, "bob", "m1", &sent).await;
    expect_sent(&mut alice, "m1").await;
    let forgotten = upload(&stack, "alice", ab, file(250_000)).await.unwrap();
    // The quota (500,000) is full until the unsent one goes.
    assert_eq!(
        upload(&stack, "alice", ab, file(250_000)).await.err(),
        Some(StatusCode::INSUFFICIENT_STORAGE)
    );
    let forgotten = forgotten.id.to_string();
    testkit::eventually(
        "the unsent upload is swept",
        std::time::Duration::from_secs(15),
        async || {
            // The status only: a download that starts as the sweep removes the file ends
            // early, as a download racing a delete does.
            let url = format!("{}/{forgotten}", base(&stack));
            let asked = reqwest::Client::new()
                .get(url)
                .bearer_auth(stack.token("alice"));
            asked.send().await.unwrap().status() == StatusCode::NOT_FOUND
        },
    )
    .await;
    // The sent one stays, and the quota has room again.
    let (bytes, _) = download(&stack, Some("bob"), &sent.id.to_string())
        .await
        .unwrap();
    assert_eq!(bytes.len(), 200_000);
    upload(&stack, "alice", ab, file(250_000))
        .await
        .expect("room again");
}
