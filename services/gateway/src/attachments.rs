//! Attachments over HTTP, stored in NATS's own object store (`natter_attachments`), never
//! whole in memory: an upload is streamed from the socket into the store's chunks, a download
//! from the chunks to the socket.
//!
//! * `POST /v1/attachments?conversation=<c>&name=<file name>`, with the user's token
//!   (`Authorization: Bearer`, or `access_token` in the query), `Content-Length` (at most
//!   `max_attachment_bytes`) and `Content-Type`: the user must be in the conversation, and
//!   the size is reserved in the user's quota (`attachment_quota_bytes`) before a byte is
//!   stored. Answered `201` with the attachment (`id`, `name`, `size`, `content_type`), which
//!   a `send` in that conversation then names.
//! * `GET /v1/attachments/<id>`, with the token: streamed to anyone in the conversation the
//!   attachment was uploaded for.
//!
//! The object's metadata says whose it is and for which conversation; the chat service
//! checks both when a message names it, and removes it when its message is deleted.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream::object_store::ObjectMetadata;
use bytes::{Buf, Bytes};
use futures::{Stream, TryStreamExt};
use http::StatusCode;
use protocol::frames::{Attachment, ServerFrame};
use protocol::payloads::GroupRequest;
use protocol::{AttachmentId, ClientMsgId, ConversationId, ErrorCode, GroupOp, UserId, subjects};
use tokio::io::AsyncReadExt;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};

use crate::auth::token_from;
use crate::state::GatewayState;

use protocol::subjects::{
    ATTACHMENT_CONTENT_TYPE as CONTENT_TYPE, ATTACHMENT_CONVERSATION as CONVERSATION,
    ATTACHMENT_NAME as FILE_NAME, ATTACHMENT_OWNER as OWNER,
};

/// The longest file name kept, in bytes.
const NAME_MAX_BYTES: usize = 255;
/// Chunks of a download waiting to be written to the socket.
const DOWNLOAD_CHUNKS_AHEAD: usize = 4;

pub fn routes(state: Arc<GatewayState>) -> BoxedFilter<(Response,)> {
    let with_state = warp::any().map(move || state.clone());
    // Decoded (`conversation` holds `:`, a file name anything).
    let query = warp::query::<Params>();
    let upload =
        warp::post()
            .and(warp::path!("v1" / "attachments"))
            .and(with_state.clone())
            .and(warp::header::optional::<String>("authorization"))
            .and(query)
            .and(warp::header::optional::<u64>("content-length"))
            .and(warp::header::optional::<String>("content-type"))
            .and(warp::body::stream())
            .then(
                |state: Arc<GatewayState>,
                 auth: Option<String>,
                 query: Params,
                 length,
                 kind,
                 body| async move {
                    upload(&state, auth, &query, length, kind, body)
                        .await
                        .unwrap_or_else(|refused| refused.response())
                },
            );
    let download = warp::get()
        .and(warp::path!("v1" / "attachments" / String))
        .and(with_state)
        .and(warp::header::optional::<String>("authorization"))
        .and(query)
        .then(
            |id: String, state: Arc<GatewayState>, auth: Option<String>, query: Params| async move {
                download(&state, &id, auth, &query)
                    .await
                    .unwrap_or_else(|refused| refused.response())
            },
        );
    upload.or(download).unify().boxed()
}

/// Why an attachment request was refused: the status and a fixed text.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("missing or invalid token")]
    Unauthenticated,
    #[error("give conversation=<conversation id> in the query")]
    NoConversation,
    #[error("Content-Length is required")]
    NoLength,
    #[error("the attachment exceeds {0} bytes")]
    TooLarge(u64),
    #[error("not a member of that conversation")]
    Forbidden,
    #[error("no such attachment")]
    NotFound,
    #[error("over your attachment quota of {0} bytes; delete messages with attachments first")]
    OverQuota(u64),
    #[error("the upload ended before Content-Length bytes")]
    Incomplete,
    #[error("attachments unavailable; retry")]
    Unavailable,
}

impl Refused {
    fn response(&self) -> Response {
        let status = match self {
            Refused::Unauthenticated => StatusCode::UNAUTHORIZED,
            Refused::NoConversation | Refused::Incomplete => StatusCode::BAD_REQUEST,
            Refused::NoLength => StatusCode::LENGTH_REQUIRED,
            Refused::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refused::Forbidden => StatusCode::FORBIDDEN,
            Refused::NotFound => StatusCode::NOT_FOUND,
            Refused::OverQuota(_) => StatusCode::INSUFFICIENT_STORAGE,
            Refused::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        warp::reply::with_status(self.to_string(), status).into_response()
    }
}

/// A request's query parameters, decoded.
type Params = HashMap<String, String>;

fn user_of(state: &GatewayState, auth: Option<String>, query: &Params) -> Result<UserId, Refused> {
    let token = match auth {
        Some(header) => token_from(Some(&header), None),
        None => query.get("access_token").cloned(),
    };
    state
        .verifier
        .verify(token.as_deref())
        .map(|identity| identity.user)
        .map_err(|e| {
            tracing::debug!(error = %e.for_log(), "attachment request refused");
            Refused::Unauthenticated
        })
}

async fn upload(
    state: &GatewayState,
    auth: Option<String>,
    query: &Params,
    length: Option<u64>,
    content_type: Option<String>,
    body: impl Stream<Item = Result<impl Buf, warp::Error>> + Send + Unpin + 'static,
) -> Result<Response, Refused> {
    let user = user_of(state, auth, query)?;
    let conversation: ConversationId = query
        .get("conversation")
        .and_then(|c| c.parse().ok())
        .ok_or(Refused::NoConversation)?;
    let max = state.config.max_attachment_bytes;
    let size = length.ok_or(Refused::NoLength)?;
    if size > max {
        return Err(Refused::TooLarge(max));
    }
    if !may_use(state, &user, &conversation).await? {
        return Err(Refused::Forbidden);
    }
    let name = file_name(query.get("name").map(String::as_str));
    let content_type = content_type
        .filter(|t| t.len() <= 255 && !t.chars().any(char::is_control))
        .unwrap_or_else(|| "application/octet-stream".into());
    let attachments = &state.attachments;
    let limit = state.config.attachment_quota_bytes;
    plumbing::bus::attachment_quota::reserve(&attachments.quota, &user, size, limit)
        .await
        .map_err(|e| match e {
            plumbing::bus::attachment_quota::QuotaError::Exceeded { .. } => {
                Refused::OverQuota(limit)
            }
            e => {
                tracing::warn!(error = %e, "attachment quota unavailable");
                Refused::Unavailable
            }
        })?;
    let id = AttachmentId(ulid::Ulid::new());
    let meta = ObjectMetadata {
        name: id.to_string(),
        metadata: [
            (OWNER.to_string(), user.to_string()),
            (CONVERSATION.to_string(), conversation.to_string()),
            (FILE_NAME.to_string(), name.clone()),
            (CONTENT_TYPE.to_string(), content_type.clone()),
        ]
        .into(),
        ..Default::default()
    };
    // Never more than the size reserved, whatever the body holds.
    let reader = tokio_util::io::StreamReader::new(
        body.map_ok(|mut b| b.copy_to_bytes(b.remaining()))
            .map_err(std::io::Error::other),
    );
    let mut reader = reader.take(size);
    let stored = attachments.store.put(meta, &mut reader).await;
    let refused = match stored {
        Ok(info) if info.size as u64 == size => None,
        Ok(_) => Some(Refused::Incomplete),
        Err(e) => {
            tracing::warn!(error = %e, "attachment not stored");
            Some(Refused::Unavailable)
        }
    };
    if let Some(refused) = refused {
        let _ = attachments.store.delete(id.to_string()).await;
        if let Err(e) =
            plumbing::bus::attachment_quota::release(&attachments.quota, &user, size).await
        {
            tracing::warn!(error = %e, "attachment quota not given back");
        }
        return Err(refused);
    }
    state.metrics.attachment_bytes_in.add(size);
    let attachment = Attachment {
        id,
        name,
        size,
        content_type,
    };
    Ok(
        warp::reply::with_status(warp::reply::json(&attachment), StatusCode::CREATED)
            .into_response(),
    )
}

async fn download(
    state: &GatewayState,
    id: &str,
    auth: Option<String>,
    query: &Params,
) -> Result<Response, Refused> {
    let user = user_of(state, auth, query)?;
    let id: AttachmentId = id.parse().map_err(|_| Refused::NotFound)?;
    let store = &state.attachments.store;
    let info = match store.info(id.to_string()).await {
        Ok(info) if !info.deleted => info,
        Ok(_) => return Err(Refused::NotFound),
        Err(e) if e.kind() == async_nats::jetstream::object_store::InfoErrorKind::NotFound => {
            return Err(Refused::NotFound);
        }
        Err(e) => {
            tracing::warn!(error = %e, "attachment info unreadable");
            return Err(Refused::Unavailable);
        }
    };
    let conversation: ConversationId = info
        .metadata
        .get(CONVERSATION)
        .and_then(|c| c.parse().ok())
        .ok_or(Refused::NotFound)?;
    if !may_use(state, &user, &conversation).await? {
        return Err(Refused::Forbidden);
    }
    // Read one chunk at a time (a direct get each) by a task of its own, into a short queue:
    // the socket takes what it can, and the object is never held whole. (The object store's
    // own reader pushes chunks through a consumer faster than a slow client takes them: two
    // downloads of 64 MB at 8 MB/s held 97 MB.)
    let (chunks, mut next) =
        tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(DOWNLOAD_CHUNKS_AHEAD);
    let stream = state.attachments.stream.clone();
    let subject = subjects::attachment_chunks(&info.nuid);
    let size = info.size;
    tokio::spawn(async move {
        let (mut from, mut sent) = (1, 0);
        while sent < size {
            let read = stream.direct_get_next_for_subject(subject.as_str(), Some(from));
            let chunk = match read.await {
                Ok(chunk) => chunk,
                Err(e) => {
                    tracing::warn!(error = %e, "attachment chunk unreadable");
                    let failed = std::io::Error::other("chunk unreadable");
                    let _ = chunks.send(Err(failed)).await;
                    return;
                }
            };
            from = chunk.sequence + 1;
            sent += chunk.payload.len();
            if chunks.send(Ok(chunk.payload)).await.is_err() {
                return; // the client went away
            }
        }
    });
    let body = futures::stream::poll_fn(move |cx| next.poll_recv(cx));
    state.metrics.attachment_bytes_out.add(info.size as u64);
    let name = info.metadata.get(FILE_NAME).cloned().unwrap_or_default();
    let content_type = info
        .metadata
        .get(CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| "application/octet-stream".into());
    let mut response = warp::reply::stream(body).into_response();
    let headers = response.headers_mut();
    let header = |v: String| http::HeaderValue::from_str(&v).ok();
    if let Some(v) = header(content_type) {
        headers.insert(http::header::CONTENT_TYPE, v);
    }
    if let Some(v) = header(info.size.to_string()) {
        headers.insert(http::header::CONTENT_LENGTH, v);
    }
    // Always a download, never rendered in the gateway's origin (an uploaded page could
    // otherwise run script there).
    let disposition = format!(
        "attachment; filename=\"{}\"",
        name.replace(['"', '\\'], "_")
    );
    if let Some(v) = header(disposition) {
        headers.insert(http::header::CONTENT_DISPOSITION, v);
    }
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

/// Whether `user` takes part in `conversation`: a participant of a 1:1, a member of a group
/// (asked of the chat service, which holds the memberships).
async fn may_use(
    state: &GatewayState,
    user: &UserId,
    conversation: &ConversationId,
) -> Result<bool, Refused> {
    let Some(group) = conversation.group_id() else {
        return Ok(conversation.has_participant(user));
    };
    let request = GroupRequest {
        user: user.clone(),
        qid: ClientMsgId::new("attachment").expect("valid id"),
        op: GroupOp::Info {
            group: group.to_string(),
        },
    };
    let payload = serde_json::to_vec(&request).expect("group request to JSON");
    let timeout = std::time::Duration::from_millis(state.config.send_timeout_ms);
    let asked = state
        .nats
        .request(subjects::chat_group(user), payload.into());
    let reply = match tokio::time::timeout(timeout, asked).await {
        Ok(Ok(reply)) => reply,
        _ => return Err(Refused::Unavailable),
    };
    match serde_json::from_slice::<ServerFrame>(&reply.payload) {
        Ok(ServerFrame::Group { .. }) => Ok(true),
        Ok(ServerFrame::Error {
            code: ErrorCode::Forbidden | ErrorCode::NotFound,
            ..
        }) => Ok(false),
        _ => Err(Refused::Unavailable),
    }
}

/// The file name kept: the last path segment of what the client gave, without control
/// characters, at most `NAME_MAX_BYTES` (whole characters); "file" when nothing is left.
fn file_name(given: Option<&str>) -> String {
    let base = given
        .unwrap_or_default()
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default();
    let mut name = String::new();
    for c in base.chars().filter(|c| !c.is_control()) {
        if name.len() + c.len_utf8() > NAME_MAX_BYTES {
            break;
        }
        name.push(c);
    }
    if name.trim().is_empty() || name == "." || name == ".." {
        "file".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_lose_paths_and_control_characters() {
        assert_eq!(file_name(Some("report.pdf")), "report.pdf");
        assert_eq!(file_name(Some("../../etc/passwd")), "passwd");
        assert_eq!(file_name(Some("C:\\Users\\a\\pic.png")), "pic.png");
        assert_eq!(file_name(Some("a\nb\u{0}.txt")), "ab.txt");
        assert_eq!(file_name(Some("..")), "file");
        assert_eq!(file_name(None), "file");
        assert_eq!(file_name(Some(&"é".repeat(200))).len(), 254);
    }
}
