//! Group receipts through a running history service and a real nats-server: members' receipts
//! move their markers and tell the senders on `natter.chat.notify`, `receipts` queries count
//! and name who received and read a message, and only current members are heard or answered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use history::store::suite::message;
use history::{EmbeddedStore, History, HistoryConfig, StaticMembership, Store};
use plumbing::BusConfig;
use plumbing::nats_auth::{NatsAuth, Role};
use plumbing::nats_server::{NatsServer, NatsServerOptions};
use protocol::frames::{Message, MessageState, ServerFrame};
use protocol::payloads::{HistoryQuery, HistoryRequest, Notify, Receipt, ReceiptKind};
use protocol::{ClientMsgId, ConversationId, ErrorCode, GroupId, MessageId, UserId, subjects};
use tokio_util::sync::CancellationToken;

/// How long a notification or a metric may take to show up.
const PATIENCE: Duration = Duration::from_secs(5);
const T0: u64 = 1_750_000_000_000;

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

/// A history service over an embedded store, with group `crew` = alice, bob, carol, holding
/// alice's m1, bob's m2 and carol's m3.
struct Crew {
    client: async_nats::Client,
    notifications: async_nats::Subscriber,
    membership: Arc<StaticMembership>,
    store: EmbeddedStore,
    service: History<EmbeddedStore>,
    group: GroupId,
    conversation: ConversationId,
    said: Vec<Message>,
    _nats: NatsServer,
    _dir: tempfile::TempDir,
}

impl Crew {
    async fn start(receipt_lists_max: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let nats = NatsServer::start(NatsServerOptions::scratch(
            dir.path().join("nats"),
            NatsAuth::ensure(&dir.path().join("auth"), &[], &[]).unwrap(),
        ))
        .unwrap();
        // The test plays the gateways and the chat service, as the operator; the service
        // runs as itself.
        let client = nats.client_as(Role::Operator).await.unwrap();
        let service_nats = nats.client_as(Role::History).await.unwrap();
        let notifications = client.subscribe(subjects::CHAT_NOTIFY).await.unwrap();
        let group = GroupId::new("crew").unwrap();
        let conversation = ConversationId::group(&group);
        let membership = Arc::new(StaticMembership::default());
        membership.set(
            group.clone(),
            vec![user("alice"), user("bob"), user("carol")],
        );
        let store = EmbeddedStore::open(&dir.path().join("history.redb")).unwrap();
        let said: Vec<Message> = [("alice", 1), ("bob", 2), ("carol", 3)]
            .into_iter()
            .map(|(from, i)| message(from, &conversation, "crew", T0 + i, i))
            .collect();
        store.append(&said).await.unwrap();
        let config = HistoryConfig {
            receipt_lists_max,
            ..Default::default()
        };
        let service = History::start(
            config,
            &BusConfig::default(),
            service_nats,
            store.clone(),
            membership.clone(),
            CancellationToken::new(),
        )
        .await
        .unwrap();
        Self {
            client,
            notifications,
            membership,
            store,
            service,
            group,
            conversation,
            said,
            _nats: nats,
            _dir: dir,
        }
    }

    async fn receipt(&self, kind: ReceiptKind, by: &str, id: MessageId) {
        let receipt = Receipt {
            kind,
            by: user(by),
            conversation: self.conversation.clone(),
            id,
        };
        self.client
            .publish(
                subjects::CHAT_RECEIPT,
                serde_json::to_vec(&receipt).unwrap().into(),
            )
            .await
            .unwrap();
    }

    async fn next_notification(&mut self) -> Notify {
        let msg = tokio::time::timeout(PATIENCE, self.notifications.next())
            .await
            .expect("a notification")
            .unwrap();
        serde_json::from_slice(&msg.payload).unwrap()
    }

    async fn ask(&self, who: &str, query: HistoryQuery) -> ServerFrame {
        let request = HistoryRequest {
            user: user(who),
            qid: ClientMsgId::new("q1").unwrap(),
            query,
        };
        let reply = self
            .client
            .request(
                subjects::history_query(&user(who)),
                serde_json::to_vec(&request).unwrap().into(),
            )
            .await
            .unwrap();
        serde_json::from_slice(&reply.payload).unwrap()
    }

    async fn receipts_of(&self, who: &str, id: MessageId) -> ServerFrame {
        let query = HistoryQuery::Receipts {
            conversation: self.conversation.clone(),
            id,
        };
        self.ask(who, query).await
    }
}

fn error_code(frame: &ServerFrame) -> Option<ErrorCode> {
    match frame {
        ServerFrame::Error { code, .. } => Some(*code),
        _ => None,
    }
}

#[tokio::test]
async fn senders_hear_who_received_and_read_and_can_ask() {
    let mut crew = Crew::start(256).await;
    let (m1, m2, m3) = (crew.said[0].id, crew.said[1].id, crew.said[2].id);

    crew.receipt(ReceiptKind::Delivered, "bob", m1).await;
    let told = crew.next_notification().await;
    assert_eq!(told.users, vec![user("alice")]);
    assert_eq!(
        told.frame,
        ServerFrame::Delivered {
            conversation: crew.conversation.clone(),
            id: m1,
            by: user("bob"),
        }
    );

    // Carol read up to her own m3: alice and bob hear it, carol does not.
    crew.receipt(ReceiptKind::Seen, "carol", m3).await;
    let mut told = crew.next_notification().await;
    told.users.sort();
    assert_eq!(told.users, vec![user("alice"), user("bob")]);
    assert_eq!(
        told.frame,
        ServerFrame::Seen {
            conversation: crew.conversation.clone(),
            up_to: m3,
            by: user("carol"),
        }
    );

    // Someone outside the group is not heard; the next receipt shows the queue moved on.
    crew.receipt(ReceiptKind::Seen, "mallory", m3).await;
    crew.receipt(ReceiptKind::Delivered, "alice", m2).await;
    let told = crew.next_notification().await;
    assert_eq!(
        (told.users, told.frame),
        (
            vec![user("bob")],
            ServerFrame::Delivered {
                conversation: crew.conversation.clone(),
                id: m2,
                by: user("alice"),
            }
        )
    );
    let markers = crew.store.group_markers(&crew.group).await.unwrap();
    assert!(markers.iter().all(|m| m.user != user("mallory")));

    let answer = crew.receipts_of("alice", m1).await;
    assert_eq!(
        answer,
        ServerFrame::Receipts {
            qid: ClientMsgId::new("q1").unwrap(),
            conversation: crew.conversation.clone(),
            id: m1,
            recipients: 2,
            delivered: 2,
            seen: 1,
            delivered_by: Some(vec![user("bob"), user("carol")]),
            seen_by: Some(vec![user("carol")]),
        }
    );

    // Errors: not a member, a 1:1 conversation, an unknown message.
    assert_eq!(
        error_code(&crew.receipts_of("mallory", m1).await),
        Some(ErrorCode::Forbidden)
    );
    let direct = HistoryQuery::Receipts {
        conversation: ConversationId::direct(&user("alice"), &user("bob")),
        id: m1,
    };
    assert_eq!(
        error_code(&crew.ask("alice", direct).await),
        Some(ErrorCode::NotFound)
    );
    let unknown = MessageId(ulid::Ulid::from_parts(T0 + 99, 99));
    assert_eq!(
        error_code(&crew.receipts_of("alice", unknown).await),
        Some(ErrorCode::NotFound)
    );

    // Removed: bob reads nothing of the group any more, and is no longer counted.
    crew.membership
        .set(crew.group.clone(), vec![user("alice"), user("carol")]);
    assert_eq!(
        error_code(&crew.receipts_of("bob", m1).await),
        Some(ErrorCode::Forbidden)
    );
    let page = HistoryQuery::Messages {
        conversation: crew.conversation.clone(),
        before: None,
        after: None,
        limit: 10,
    };
    assert_eq!(
        error_code(&crew.ask("bob", page.clone()).await),
        Some(ErrorCode::Forbidden)
    );
    assert!(matches!(
        crew.ask("carol", page).await,
        ServerFrame::History { ref messages, .. } if messages.len() == 3
    ));
    let ServerFrame::Receipts {
        recipients,
        delivered_by,
        ..
    } = crew.receipts_of("alice", m1).await
    else {
        panic!("receipts expected");
    };
    assert_eq!((recipients, delivered_by), (1, Some(vec![user("carol")])));
    let ServerFrame::Conversations { conversations, .. } = crew
        .ask("bob", HistoryQuery::Conversations { limit: 10 })
        .await
    else {
        panic!("conversations expected");
    };
    assert!(conversations.is_empty(), "the group left bob's list");
}

#[tokio::test]
async fn large_groups_get_counts_only() {
    let mut crew = Crew::start(2).await;
    let (m1, m2) = (crew.said[0].id, crew.said[1].id);
    crew.receipt(ReceiptKind::Seen, "bob", m2).await;
    crew.receipt(ReceiptKind::Delivered, "carol", m1).await;
    // No notification above the limit: wait for the markers instead.
    let started = Instant::now();
    let answer = loop {
        let answer = crew.receipts_of("alice", m1).await;
        if matches!(answer, ServerFrame::Receipts { delivered: 2, .. }) {
            break answer;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "markers not stored: {answer:?}"
        );
        tokio::task::yield_now().await;
    };
    assert_eq!(
        answer,
        ServerFrame::Receipts {
            qid: ClientMsgId::new("q1").unwrap(),
            conversation: crew.conversation.clone(),
            id: m1,
            recipients: 2,
            delivered: 2,
            seen: 1,
            delivered_by: None,
            seen_by: None,
        }
    );
    assert!(
        tokio::time::timeout(Duration::ZERO, crew.notifications.next())
            .await
            .is_err(),
        "nothing was published"
    );
}

#[tokio::test]
async fn a_receipt_for_a_message_never_stored_is_counted_as_a_miss() {
    let crew = Crew::start(256).await;
    let ghost = MessageId(ulid::Ulid::from_parts(T0 + 50, 50));
    crew.receipt(ReceiptKind::Delivered, "bob", ghost).await;
    let started = Instant::now();
    while !crew
        .service
        .metrics
        .render()
        .contains("natter_history_receipt_misses_total 1")
    {
        assert!(started.elapsed() < PATIENCE, "no miss counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn changed_lists_the_1to1_conversations_active_since_a_time_without_previews() {
    let crew = Crew::start(10).await;
    let dm = |a: &str, b: &str| ConversationId::direct(&user(a), &user(b));
    crew.store
        .append(&[
            message("bob", &dm("alice", "bob"), "alice", T0 + 10, 10),
            message("carol", &dm("alice", "carol"), "alice", T0 + 20, 11),
            message("alice", &dm("alice", "dave"), "dave", T0 + 30, 12),
        ])
        .await
        .unwrap();
    let changed = |since| HistoryQuery::Changed { since, limit: 1000 };
    let ServerFrame::Conversations { conversations, .. } =
        crew.ask("alice", changed(T0 + 20)).await
    else {
        panic!("conversations expected");
    };
    let listed: Vec<_> = conversations
        .iter()
        .map(|c| c.conversation.clone())
        .collect();
    // Newest first, from `since` on, no group (groups come from the membership).
    assert_eq!(listed, vec![dm("alice", "dave"), dm("alice", "carol")]);
    assert!(
        conversations
            .iter()
            .all(|c| c.preview.is_empty() && c.unread == 0)
    );
    let ServerFrame::Conversations { conversations, .. } = crew
        .ask("alice", HistoryQuery::Changed { since: 0, limit: 2 })
        .await
    else {
        panic!("conversations expected");
    };
    assert_eq!(conversations.len(), 2, "the limit holds");
    // Only the user's own list: the subject names who asks.
    let ServerFrame::Conversations { conversations, .. } = crew.ask("bob", changed(0)).await else {
        panic!("conversations expected");
    };
    assert_eq!(conversations.len(), 1);
}

impl Crew {
    /// `who`'s latest page of `conversation`: each message's id and state.
    async fn states(
        &self,
        who: &str,
        conversation: &ConversationId,
    ) -> Vec<(MessageId, Option<MessageState>)> {
        let query = HistoryQuery::Messages {
            conversation: conversation.clone(),
            before: None,
            after: None,
            limit: 50,
        };
        let ServerFrame::History { messages, .. } = self.ask(who, query).await else {
            panic!("a page expected");
        };
        messages.iter().map(|m| (m.id, m.state)).collect()
    }

    /// Asks until `who`'s page of `conversation` says `want` (markers are stored a moment
    /// after their receipt is published).
    async fn until_states(
        &self,
        who: &str,
        conversation: &ConversationId,
        want: &[(MessageId, Option<MessageState>)],
    ) {
        let started = Instant::now();
        loop {
            let states = self.states(who, conversation).await;
            if states == want {
                return;
            }
            assert!(started.elapsed() < PATIENCE, "{states:?}, want {want:?}");
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test]
async fn a_1to1_page_says_how_far_each_of_your_messages_got() {
    use MessageState::{Delivered, Seen, Sent};
    let crew = Crew::start(256).await;
    let ab = ConversationId::direct(&user("alice"), &user("bob"));
    let said: Vec<Message> = (0..3)
        .map(|i| message("alice", &ab, "bob", T0 + 100 + i, 100 + i))
        .chain([message("bob", &ab, "alice", T0 + 200, 200)])
        .collect();
    crew.store.append(&said).await.unwrap();
    let (d1, d2, d3, reply) = (said[0].id, said[1].id, said[2].id, said[3].id);
    crew.until_states(
        "alice",
        &ab,
        &[
            (d1, Some(Sent)),
            (d2, Some(Sent)),
            (d3, Some(Sent)),
            (reply, None),
        ],
    )
    .await;

    // bob's phone received up to d2, and he read up to d1.
    let receipt = |kind, id| Receipt {
        kind,
        by: user("bob"),
        conversation: ab.clone(),
        id,
    };
    for r in [
        receipt(ReceiptKind::Delivered, d2),
        receipt(ReceiptKind::Seen, d1),
    ] {
        crew.client
            .publish(
                subjects::CHAT_RECEIPT,
                serde_json::to_vec(&r).unwrap().into(),
            )
            .await
            .unwrap();
    }
    crew.until_states(
        "alice",
        &ab,
        &[
            (d1, Some(Seen)),
            (d2, Some(Delivered)),
            (d3, Some(Sent)),
            (reply, None),
        ],
    )
    .await;
    // bob's own message: alice has neither received nor read it; her messages carry no
    // state on his page.
    crew.until_states(
        "bob",
        &ab,
        &[(d1, None), (d2, None), (d3, None), (reply, Some(Sent))],
    )
    .await;
}

#[tokio::test]
async fn a_small_groups_page_follows_the_furthest_current_member() {
    use MessageState::{Delivered, Seen, Sent};
    let mut crew = Crew::start(256).await;
    let (m1, m2, m3) = (crew.said[0].id, crew.said[1].id, crew.said[2].id);
    let crew_conversation = crew.conversation.clone();
    crew.receipt(ReceiptKind::Delivered, "bob", m1).await;
    crew.next_notification().await;
    assert_eq!(
        crew.states("alice", &crew_conversation).await,
        [(m1, Some(Delivered)), (m2, None), (m3, None)]
    );
    crew.receipt(ReceiptKind::Seen, "carol", m2).await;
    crew.next_notification().await;
    assert_eq!(
        crew.states("alice", &crew_conversation).await,
        [(m1, Some(Seen)), (m2, None), (m3, None)]
    );
    // Only current members count: without carol, alice's m1 is back to what bob did.
    crew.membership
        .set(crew.group.clone(), vec![user("alice"), user("bob")]);
    assert_eq!(
        crew.states("alice", &crew_conversation).await,
        [(m1, Some(Delivered)), (m2, None), (m3, None)]
    );
    // bob's m2: carol read it but has left; nobody else has it.
    assert_eq!(
        crew.states("bob", &crew_conversation).await,
        [(m1, None), (m2, Some(Sent)), (m3, None)]
    );
}

#[tokio::test]
async fn a_large_groups_page_has_no_states() {
    let crew = Crew::start(2).await;
    let conversation = crew.conversation.clone();
    assert!(
        crew.states("alice", &conversation)
            .await
            .iter()
            .all(|(_, state)| state.is_none())
    );
}
